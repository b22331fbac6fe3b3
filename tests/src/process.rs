//! Child processes under test: their output captured into shared buffers
//! that tests can wait on, and their teardown on `Drop`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::tail;

/// A growing byte buffer filled by a reader thread, which async code can
/// wait on without polling: every push wakes the waiters.
#[derive(Debug, Default)]
pub struct Capture {
    buf: Mutex<Vec<u8>>,
    closed: AtomicBool,
    notify: Notify,
}

impl Capture {
    pub fn new() -> Arc<Capture> {
        Arc::new(Capture::default())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A reader thread that panicked leaves the bytes it pushed intact.
        self.buf
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn push(&self, bytes: &[u8]) {
        self.lock().extend_from_slice(bytes);
        self.notify.notify_waiters();
    }

    /// Marks the end of the stream (the writer closed its side).
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// How many bytes arrived so far.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least `min` bytes arrived; returns how many did.
    /// Cheap on large streams: it never copies the bytes.
    pub async fn wait_len(&self, min: usize, limit: Duration) -> Result<usize> {
        let deadline = Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let len = self.len();
            if len >= min {
                return Ok(len);
            }
            if self.is_closed() {
                bail!("stream ended after {len} bytes, before {min}");
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("timed out after {limit:?} waiting for {min} bytes; {len} arrived");
            }
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.lock().clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }

    /// Waits until `pred` finds what it looks for in the text so far.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        deadline: Instant,
        mut pred: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a push between the look and the
            // wait still wakes us.
            notified.as_mut().enable();
            if let Some(found) = pred(&self.text()) {
                return Ok(found);
            }
            if self.is_closed() {
                bail!(
                    "stream ended before {what}; it held:\n{}",
                    tail(&self.text(), 4000)
                );
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "timed out waiting for {what}; the stream held:\n{}",
                    tail(&self.text(), 4000)
                );
            }
        }
    }

    /// Waits until the text contains `needle`.
    pub async fn wait_contains(&self, needle: &str, limit: Duration) -> Result<()> {
        self.wait_for(&format!("{needle:?}"), Instant::now() + limit, |text| {
            text.contains(needle).then_some(())
        })
        .await
    }

    /// Waits for a complete line starting with `prefix` and returns the rest
    /// of it, trimmed.
    pub async fn wait_line_value(&self, prefix: &str, deadline: Instant) -> Result<String> {
        self.wait_for(
            &format!("a line starting with {prefix:?}"),
            deadline,
            |text| {
                complete_lines(text)
                    .find_map(|line| line.strip_prefix(prefix))
                    .map(|value| value.trim().to_owned())
            },
        )
        .await
    }

    /// Like [`Capture::wait_line_value`] for `NAME=`, but also accepts the
    /// shell-pasteable form `export NAME=value`.
    pub async fn wait_assignment(&self, name: &str, deadline: Instant) -> Result<String> {
        let prefix = format!("{name}=");
        self.wait_for(&format!("a line assigning {name}"), deadline, |text| {
            complete_lines(text)
                .find_map(|line| {
                    line.strip_prefix("export ")
                        .unwrap_or(line)
                        .strip_prefix(prefix.as_str())
                })
                .map(|value| value.trim().trim_matches(['"', '\'']).to_owned())
        })
        .await
    }
}

/// The newline-terminated lines of `text`, without a trailing partial line.
fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete.lines().map(|line| line.trim_end_matches('\r'))
}

/// Copies everything `reader` yields into `capture` on a named thread, so a
/// child's pipe never fills up and blocks it.
pub(crate) fn spawn_drain(
    name: String,
    mut reader: impl Read + Send + 'static,
    capture: Arc<Capture>,
) {
    let spawned = std::thread::Builder::new().name(name).spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => capture.push(&buf[..n]),
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                // A PTY master reports EIO once the child side is gone.
                Err(_) => break,
            }
        }
        capture.close();
    });
    if let Err(err) = spawned {
        panic!("could not spawn an output drain thread: {err}");
    }
}

/// A `Command` for `program` with every inherited `PADDOCK_*` variable
/// removed, so the developer's own settings never leak into a test.
pub fn base_command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PADDOCK_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A child process with captured stdout and stderr, in its own process
/// group, killed (with its whole group) on `Drop`.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
    pub stdout: Arc<Capture>,
    pub stderr: Arc<Capture>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("could not start {name} ({cmd:?})"))?;
        let stdout = Capture::new();
        let stderr = Capture::new();
        let out = child.stdout.take().context("child stdout is piped")?;
        let err = child.stderr.take().context("child stderr is piped")?;
        spawn_drain(format!("{name}-stdout"), out, stdout.clone());
        spawn_drain(format!("{name}-stderr"), err, stderr.clone());
        Ok(Proc {
            name: name.to_owned(),
            child,
            status: None,
            stdout,
            stderr,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The exit status if the process has ended (reaping it).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("could not poll child")?;
        }
        Ok(self.status)
    }

    /// Sends `signal` to the process itself (not its group).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(self.nix_pid(), signal)
            .with_context(|| format!("could not send {signal} to {}", self.name))
    }

    /// Waits for the process to end, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "{} still running after {limit:?}\n{}",
                    self.name,
                    self.logs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs the process and its group and reaps it.
    pub fn kill(&mut self) {
        let _ = killpg(self.nix_pid(), Signal::SIGKILL);
        if self.status.is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }

    /// The tails of stdout and stderr, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {name} stdout ---\n{}\n--- {name} stderr ---\n{}\n--- end of {name} ---",
            tail(&self.stdout.text(), 8000),
            tail(&self.stderr.text(), 16000),
            name = self.name
        )
    }
}

/// When set, dropped processes no longer print their logs (the benchmark
/// harness sets it; tests keep the logs, shown only when they fail).
static QUIET_TEARDOWN: AtomicBool = AtomicBool::new(false);

/// Stops [`Proc`] from printing its logs on `Drop`, for the whole process.
pub fn quiet_teardown() {
    QUIET_TEARDOWN.store(true, Ordering::SeqCst);
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        // Shown by the test runner only when the test fails.
        if !QUIET_TEARDOWN.load(Ordering::SeqCst) {
            eprintln!("{}", self.logs());
        }
    }
}
