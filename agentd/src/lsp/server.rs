//! One language server process and JSON-RPC over its stdio.
//!
//! Three named threads per process: a writer draining a bounded queue of
//! encoded messages into stdin, a reader parsing `Content-Length` framed
//! messages from stdout (completing pending requests, answering the
//! server's own requests, handing notifications to a callback), and one
//! forwarding stderr lines to agentd's log. The async side only sends into
//! the queue and awaits oneshot replies. When stdout ends the process is
//! reaped, every pending request fails with [`RpcError::Exited`], and
//! `rx_alive` turns false.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use super::framing::{encode, read_message};

/// Messages queued for the writer thread. When full, senders wait; the
/// reader thread's answers to server requests are dropped instead (with a
/// log) so it never blocks on the writer.
const WRITE_QUEUE: usize = 64;

/// Why a request got no result.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RpcError {
    #[error("the language server exited")]
    Exited,
    #[error("the language server answered with error {code}: {message}")]
    Server { code: i64, message: String },
}

/// A notification from the server the manager cares about.
pub(crate) type OnNotification = Arc<dyn Fn(&str, Value) + Send + Sync>;

type Pending = Arc<Mutex<HashMap<i64, oneshot::Sender<Result<Value, RpcError>>>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running language server.
pub(crate) struct Server {
    pid: u32,
    child: Arc<Mutex<Option<Child>>>,
    tx_write: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicI64,
    rx_alive: watch::Receiver<bool>,
}

impl Server {
    /// Starts `command` in `root`; `label` names it in thread names and logs.
    pub(crate) fn spawn(
        command: &str,
        args: &[String],
        root: &Path,
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        user: Option<(u32, u32)>,
        label: &str,
        on_notification: OnNotification,
    ) -> io::Result<Server> {
        let mut command = Command::new(command);
        command
            .args(args)
            .current_dir(root)
            .env_clear()
            .envs(env.iter().cloned())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = user {
            // As the session user, like the sessions whose code it reads.
            command.uid(uid).gid(gid);
        }
        let mut child = command.spawn()?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("language server pipes missing"));
        };
        let child = Arc::new(Mutex::new(Some(child)));
        let (tx_write, rx_write) = mpsc::channel(WRITE_QUEUE);
        let pending: Pending = Arc::default();
        let (tx_alive, rx_alive) = watch::channel(true);

        let name = |what: &str| format!("lsp-{what}-{label}");
        thread::Builder::new()
            .name(name("write"))
            .spawn(move || write_loop(stdin, rx_write))?;
        let reader = ReadLoop {
            pending: pending.clone(),
            tx_write: tx_write.clone(),
            child: child.clone(),
            on_notification,
            label: label.to_owned(),
        };
        thread::Builder::new()
            .name(name("read"))
            .spawn(move || reader.run(stdout, tx_alive))?;
        let label_owned = label.to_owned();
        thread::Builder::new().name(name("stderr")).spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                info!(server = %label_owned, pid, stderr = %line, "language server stderr");
            }
        })?;
        Ok(Server {
            pid,
            child,
            tx_write,
            pending,
            next_id: AtomicI64::new(1),
            rx_alive,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    pub(crate) fn is_alive(&self) -> bool {
        *self.rx_alive.borrow()
    }

    /// Resolves once the process has exited and been reaped.
    pub(crate) async fn exited(&self) {
        let mut rx_alive = self.rx_alive.clone();
        let _ = rx_alive.wait_for(|alive| !*alive).await;
    }

    pub(crate) async fn notify(&self, method: &str, params: Value) -> Result<(), RpcError> {
        let message = json!({"jsonrpc": "2.0", "method": method, "params": params});
        self.tx_write
            .send(encode(&message))
            .await
            .map_err(|_| RpcError::Exited)
    }

    /// Sends a request and waits for its result. Dropping the future
    /// forgets the request and tells the server with `$/cancelRequest`.
    pub(crate) async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut guard = CancelGuard {
            server: self,
            id,
            armed: true,
        };
        if !self.is_alive() {
            return Err(RpcError::Exited);
        }
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.tx_write
            .send(encode(&message))
            .await
            .map_err(|_| RpcError::Exited)?;
        let result = rx.await.unwrap_or(Err(RpcError::Exited));
        guard.armed = false;
        result
    }

    /// `shutdown`, then `exit`; kills the process if it has not exited
    /// within `grace` of that.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        if self.is_alive() {
            let polite = async {
                let _ = self.request("shutdown", Value::Null).await;
                let _ = self.notify("exit", Value::Null).await;
                self.exited().await;
            };
            if tokio::time::timeout(grace, polite).await.is_err() {
                warn!(pid = self.pid, "language server did not exit; killing it");
                self.kill();
            }
        }
    }

    pub(crate) fn kill(&self) {
        if let Some(child) = lock(&self.child).as_mut() {
            let _ = child.kill();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The reader thread reaps it once stdout closes.
        self.kill();
    }
}

/// Forgets a request whose caller went away, and tells the server.
struct CancelGuard<'a> {
    server: &'a Server,
    id: i64,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed && lock(&self.server.pending).remove(&self.id).is_some() {
            let cancel =
                json!({"jsonrpc": "2.0", "method": "$/cancelRequest", "params": {"id": self.id}});
            let _ = self.server.tx_write.try_send(encode(&cancel));
        }
    }
}

fn write_loop(mut stdin: ChildStdin, mut rx_write: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = rx_write.blocking_recv() {
        if stdin
            .write_all(&bytes)
            .and_then(|()| stdin.flush())
            .is_err()
        {
            break;
        }
    }
}

struct ReadLoop {
    pending: Pending,
    tx_write: mpsc::Sender<Vec<u8>>,
    child: Arc<Mutex<Option<Child>>>,
    on_notification: OnNotification,
    label: String,
}

impl ReadLoop {
    fn run(self, stdout: std::process::ChildStdout, tx_alive: watch::Sender<bool>) {
        let mut reader = BufReader::new(stdout);
        loop {
            match read_message(&mut reader) {
                Ok(Some(message)) => self.dispatch(message),
                Ok(None) => break,
                Err(err) => {
                    warn!(server = %self.label, error = %err, "unreadable message from the language server");
                    break;
                }
            }
        }
        // Gone (or broken): reap it, fail what waits, and say so.
        let status = lock(&self.child).take().map(|mut child| {
            let _ = child.kill();
            child.wait()
        });
        debug!(server = %self.label, ?status, "language server ended");
        // Dead first, then drain: a request registered after the drain
        // sees the server dead, so none waits forever.
        tx_alive.send_replace(false);
        for (_, tx) in lock(&self.pending).drain() {
            let _ = tx.send(Err(RpcError::Exited));
        }
    }

    fn dispatch(&self, mut message: Value) {
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let id = message.get("id").cloned();
        match (method, id) {
            // A response to one of ours.
            (None, Some(id)) => {
                let Some(id) = id.as_i64() else { return };
                let Some(tx) = lock(&self.pending).remove(&id) else {
                    return;
                };
                let result = match message.get_mut("error") {
                    Some(error) => Err(RpcError::Server {
                        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
                        message: error
                            .get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    }),
                    None => Ok(message
                        .get_mut("result")
                        .map(Value::take)
                        .unwrap_or(Value::Null)),
                };
                let _ = tx.send(result);
            }
            // A request from the server: answer what a plain client can.
            (Some(method), Some(id)) => {
                let params = message.get("params").cloned().unwrap_or(Value::Null);
                let result = match method.as_str() {
                    "workspace/configuration" => {
                        let items = params["items"].as_array().map_or(0, Vec::len);
                        Value::Array(vec![Value::Null; items])
                    }
                    "workspace/applyEdit" => json!({"applied": false}),
                    _ => Value::Null,
                };
                let reply = json!({"jsonrpc": "2.0", "id": id, "result": result});
                if self.tx_write.try_send(encode(&reply)).is_err() {
                    warn!(server = %self.label, %method, "could not answer a language server request");
                }
            }
            (Some(method), None) => {
                let params = message
                    .get_mut("params")
                    .map(Value::take)
                    .unwrap_or(Value::Null);
                (self.on_notification)(&method, params);
            }
            (None, None) => {}
        }
    }
}
