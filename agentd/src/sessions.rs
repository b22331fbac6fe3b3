//! The registry of live sessions and the handling of the control plane's
//! session requests (open, resize, signal, close, drop, input) and
//! acknowledgements (ack, exit_recorded).
//!
//! Sessions outlive connections: the registry is shared by every connection
//! in turn, and each session's task keeps reading and retaining output while
//! no connection is attached (see `session.rs`). A session is held until the
//! control plane has recorded its exit, or drops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use paddock_protocol::{
    AgentToControl, ControlToAgent, ErrorCode, LiveSession, RequestId, SessionId, Signal, TermSize,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::connection::{Outbound, TxOut};
use crate::pty::{Pty, SignalError, SpawnContext, SpawnSpec};
use crate::retention::Retention;
use crate::session::{Ended, SessionCmd, SessionHandle, SessionTask};
use crate::spill::{Spill, SpillDir};

/// How long `close_session` waits after SIGHUP before it sends SIGKILL.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How much output each session may hold, and have in flight while connected.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Retained bytes per session kept in memory; older ones spill.
    pub memory_bound: usize,
    /// Sent but unacknowledged bytes per session.
    pub window: u64,
    /// Where spills go, under the sandbox-wide disk cap.
    pub spill_dir: Arc<SpillDir>,
}

/// A request that failed, as sent back in `request_failed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestError {
    pub code: ErrorCode,
    pub message: String,
}

impl RequestError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RequestError {
            code,
            message: message.into(),
        }
    }

    fn not_found(id: SessionId) -> Self {
        RequestError::new(
            ErrorCode::NotFound,
            format!("no session {id} in this sandbox"),
        )
    }
}

/// The outbound queue is closed: the connection is gone.
#[derive(Debug)]
pub(crate) struct LinkClosed;

/// What the registry holds per session.
struct Entry {
    /// Distinguishes this session from a later one reusing its id.
    serial: u64,
    pty: Arc<Pty>,
    task: SessionHandle,
    size: TermSize,
}

struct Inner {
    ctx: Arc<SpawnContext>,
    entries: Mutex<HashMap<SessionId, Entry>>,
    /// The number of sessions held, for waiting until all have ended.
    tx_count: watch::Sender<usize>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    serial: AtomicU64,
    limits: Limits,
}

/// Every session this agentd runs; cheap to clone.
#[derive(Clone)]
pub(crate) struct Sessions {
    inner: Arc<Inner>,
}

impl Sessions {
    /// A registry spawning with `ctx`, retaining output within `limits`;
    /// its tasks end when `shutdown` fires.
    pub(crate) fn new(ctx: SpawnContext, limits: Limits, shutdown: CancellationToken) -> Self {
        Sessions {
            inner: Arc::new(Inner {
                ctx: Arc::new(ctx),
                entries: Mutex::new(HashMap::new()),
                tx_count: watch::Sender::new(0),
                tracker: TaskTracker::new(),
                shutdown,
                serial: AtomicU64::new(0),
                limits,
            }),
        }
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<SessionId, Entry>> {
        // The map stays consistent even if a holder panicked.
        self.inner.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn publish_count(&self, entries: &HashMap<SessionId, Entry>) {
        self.inner.tx_count.send_replace(entries.len());
    }

    fn pty(&self, id: SessionId) -> Option<Arc<Pty>> {
        self.entries().get(&id).map(|entry| entry.pty.clone())
    }

    /// Every session still held (running, or exited but not yet recorded),
    /// as reported in a hello.
    pub(crate) fn live(&self) -> Vec<LiveSession> {
        let entries = self.entries();
        let mut live: Vec<LiveSession> = entries
            .iter()
            .filter_map(|(id, entry)| {
                let progress = *entry.task.rx_progress.borrow();
                // The newest acks, even if the task has yet to apply them.
                let stored = *entry.task.tx_stored.borrow();
                if progress.exited && stored.exit {
                    // Recorded; its task is winding down.
                    return None;
                }
                Some(LiveSession {
                    session_id: *id,
                    next_offset: progress.next_offset,
                    retained_from: progress
                        .retained_from
                        .max(stored.offset.min(progress.next_offset)),
                    size: entry.size,
                })
            })
            .collect();
        live.sort_by_key(|s| s.session_id);
        live
    }

    /// Starts a session. The spawn runs in a tracked task, so the session is
    /// registered even if the caller is cancelled halfway.
    pub(crate) async fn open(&self, id: SessionId, spec: SpawnSpec) -> Result<u32, RequestError> {
        if self.entries().contains_key(&id) {
            return Err(RequestError::new(
                ErrorCode::Conflict,
                format!("session {id} already exists"),
            ));
        }
        let this = self.clone();
        let opened = self.inner.tracker.spawn(async move {
            let ctx = this.inner.ctx.clone();
            let size = spec.size;
            let spawned = tokio::task::spawn_blocking(move || Pty::spawn(id, &spec, &ctx)).await;
            match spawned {
                Ok(Ok((pty, output))) => this.register(id, pty, output, size),
                Ok(Err(err)) => Err(RequestError::new(
                    ErrorCode::SpawnFailed,
                    format!("{err:#}"),
                )),
                Err(err) => Err(RequestError::new(
                    ErrorCode::Internal,
                    format!("spawn task failed: {err}"),
                )),
            }
        });
        opened.await.unwrap_or_else(|err| {
            Err(RequestError::new(
                ErrorCode::Internal,
                format!("open task failed: {err}"),
            ))
        })
    }

    fn register(
        &self,
        id: SessionId,
        pty: Pty,
        output: crate::pty::PtyOutput,
        size: TermSize,
    ) -> Result<u32, RequestError> {
        let pid = pty.pid();
        let pty = Arc::new(pty);
        let serial = self.inner.serial.fetch_add(1, Ordering::Relaxed);
        let limits = &self.inner.limits;
        let queue = Retention::new(
            limits.memory_bound,
            Spill::new(id, limits.spill_dir.clone()),
        );
        let (task, handle) = SessionTask::new(
            id,
            output,
            queue,
            limits.window,
            self.inner.shutdown.clone(),
        );
        {
            let mut entries = self.entries();
            if entries.contains_key(&id) {
                // Opened twice concurrently; the first one wins.
                let _ = pty.signal(Signal::Kill);
                return Err(RequestError::new(
                    ErrorCode::Conflict,
                    format!("session {id} already exists"),
                ));
            }
            entries.insert(
                id,
                Entry {
                    serial,
                    pty,
                    task: handle,
                    size,
                },
            );
            self.publish_count(&entries);
        }
        info!(session.id = %id, pid, "session started");
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            if task.run().await == Ended::Recorded {
                this.forget(id, serial);
            }
        });
        Ok(pid)
    }

    /// Removes session `id` if it is still the one numbered `serial`.
    fn forget(&self, id: SessionId, serial: u64) {
        let mut entries = self.entries();
        if entries.get(&id).is_some_and(|entry| entry.serial == serial) {
            entries.remove(&id);
            self.publish_count(&entries);
        }
    }

    /// Where session `id`'s output stands, to wait on.
    #[cfg(test)]
    pub(crate) fn progress(
        &self,
        id: SessionId,
    ) -> Option<watch::Receiver<crate::session::Progress>> {
        self.entries()
            .get(&id)
            .map(|entry| entry.task.rx_progress.clone())
    }

    /// Makes `tx_out` the session's connection, sending from `from`
    /// (replay, then live output). With `stored`, the control plane holds
    /// everything below `from`: that counts as an ack.
    pub(crate) async fn attach(&self, id: SessionId, tx_out: TxOut, from: u64, stored: bool) {
        let tx_cmd = self
            .entries()
            .get(&id)
            .map(|entry| entry.task.tx_cmd.clone());
        let attach = SessionCmd::Attach {
            tx_out,
            from,
            stored,
        };
        match tx_cmd {
            // A closed queue means the task ended; its entry is going away.
            Some(tx_cmd) => drop(tx_cmd.send(attach).await),
            None => debug!(session.id = %id, "attach for a session that is gone"),
        }
    }

    /// The control plane stored session `id`'s output below `offset`.
    pub(crate) fn ack(&self, id: SessionId, offset: u64) {
        let entries = self.entries();
        let Some(entry) = entries.get(&id) else {
            debug!(session.id = %id, offset, "ack for an unknown session");
            return;
        };
        entry.task.tx_stored.send_if_modified(|stored| {
            let forward = offset > stored.offset;
            if forward {
                stored.offset = offset;
            }
            forward
        });
    }

    /// The control plane stored session `id`'s exit.
    pub(crate) fn exit_recorded(&self, id: SessionId) {
        let entries = self.entries();
        let Some(entry) = entries.get(&id) else {
            debug!(session.id = %id, "exit_recorded for an unknown session");
            return;
        };
        entry
            .task
            .tx_stored
            .send_if_modified(|stored| !std::mem::replace(&mut stored.exit, true));
    }

    pub(crate) fn resize(&self, id: SessionId, size: TermSize) -> Result<(), RequestError> {
        let pty = {
            let mut entries = self.entries();
            let entry = entries
                .get_mut(&id)
                .ok_or_else(|| RequestError::not_found(id))?;
            entry.size = size;
            entry.pty.clone()
        };
        pty.resize(size).map_err(|err| {
            RequestError::new(ErrorCode::Internal, format!("could not resize: {err:#}"))
        })
    }

    pub(crate) fn signal(&self, id: SessionId, signal: Signal) -> Result<(), RequestError> {
        let pty = self.pty(id).ok_or_else(|| RequestError::not_found(id))?;
        pty.signal(signal).map_err(|err| match err {
            SignalError::Exited => RequestError::new(
                ErrorCode::SessionEnded,
                format!("session {id} has already ended"),
            ),
            SignalError::Os(errno) => RequestError::new(
                ErrorCode::Internal,
                format!("could not send SIG{}: {errno}", signal.name()),
            ),
        })
    }

    /// Hangs the session up now and kills it after [`CLOSE_GRACE`] if it is
    /// still running. Its exit is reported as usual.
    pub(crate) fn close(&self, id: SessionId) -> Result<(), RequestError> {
        let pty = self.pty(id).ok_or_else(|| RequestError::not_found(id))?;
        if pty.signal(Signal::Hup).is_err() {
            // Already ended, or it cannot be signalled: nothing to escalate.
            return Ok(());
        }
        let shutdown = self.inner.shutdown.clone();
        self.inner.tracker.spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(CLOSE_GRACE) => {
                    if !pty.has_exited() {
                        debug!(session.id = %id, "session ignored SIGHUP; killing it");
                        let _ = pty.signal(Signal::Kill);
                    }
                }
                () = shutdown.cancelled() => {}
            }
        });
        Ok(())
    }

    /// Kills a session and forgets it without reporting its exit.
    pub(crate) fn drop_session(&self, id: SessionId) {
        let removed = {
            let mut entries = self.entries();
            let removed = entries.remove(&id);
            self.publish_count(&entries);
            removed
        };
        match removed {
            Some(Entry { pty, task, .. }) => {
                info!(session.id = %id, "session dropped at the control plane's request");
                // Closing the task's queues before the kill keeps it from reporting the exit.
                drop(task);
                let _ = pty.signal(Signal::Kill);
            }
            None => debug!(session.id = %id, "drop for an unknown session"),
        }
    }

    /// Passes keyboard input to a session; unknown sessions are ignored.
    pub(crate) fn input(&self, id: SessionId, bytes: &[u8]) {
        let Some(pty) = self.pty(id) else {
            debug!(session.id = %id, "input for an unknown session");
            return;
        };
        match pty.input(bytes.to_vec()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(session.id = %id, len = bytes.len(), "session input dropped: the program is not reading its terminal")
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                debug!(session.id = %id, "input for a session whose terminal is closed")
            }
        }
    }

    /// Sends SIGHUP to every session's process group (at shutdown).
    pub(crate) fn hangup_all(&self) {
        let ptys: Vec<Arc<Pty>> = self.entries().values().map(|e| e.pty.clone()).collect();
        for pty in ptys {
            let _ = pty.signal(Signal::Hup);
        }
    }

    /// Resolves once no session is held.
    pub(crate) async fn wait_empty(&self) {
        let mut rx_count = self.inner.tx_count.subscribe();
        // The sender lives in `self`, so this cannot fail.
        let _ = rx_count.wait_for(|count| *count == 0).await;
    }

    /// Waits (at most `limit`) for every session task after shutdown fired.
    pub(crate) async fn wait_tasks(&self, limit: Duration) {
        self.inner.tracker.close();
        if tokio::time::timeout(limit, self.inner.tracker.wait())
            .await
            .is_err()
        {
            debug!("session tasks still running at exit");
        }
    }

    /// Handles one request from the control plane, sending its reply (and,
    /// for a new session, attaching the session after `session_opened`).
    pub(crate) async fn handle(
        &self,
        msg: ControlToAgent,
        tx_out: &TxOut,
    ) -> Result<(), LinkClosed> {
        let (request_id, result) = match msg {
            ControlToAgent::Welcome { .. } => {
                warn!("ignoring a second welcome");
                return Ok(());
            }
            ControlToAgent::OpenSession {
                request_id,
                session_id,
                command,
                args,
                cwd,
                env,
                size,
            } => {
                let spec = SpawnSpec {
                    command,
                    args,
                    cwd,
                    env,
                    size,
                };
                match self.open(session_id, spec).await {
                    Ok(pid) => {
                        let opened = AgentToControl::SessionOpened {
                            request_id,
                            session_id,
                            pid: Some(pid),
                        };
                        send(tx_out, opened).await?;
                        // Output so far waited in the session's queue; it follows the reply.
                        self.attach(session_id, tx_out.clone(), 0, false).await;
                        return Ok(());
                    }
                    Err(err) => {
                        info!(session.id = %session_id, error = %err.message, "session could not be started");
                        (request_id, Err(err))
                    }
                }
            }
            ControlToAgent::ResizeSession {
                request_id,
                session_id,
                size,
            } => (request_id, self.resize(session_id, size)),
            ControlToAgent::SignalSession {
                request_id,
                session_id,
                signal,
            } => (request_id, self.signal(session_id, signal)),
            ControlToAgent::CloseSession {
                request_id,
                session_id,
            } => (request_id, self.close(session_id)),
            ControlToAgent::DropSession { session_id } => {
                self.drop_session(session_id);
                return Ok(());
            }
            ControlToAgent::Ack { session_id, offset } => {
                self.ack(session_id, offset);
                return Ok(());
            }
            ControlToAgent::ExitRecorded { session_id } => {
                self.exit_recorded(session_id);
                return Ok(());
            }
            // The connection routes these to the tool layer.
            ControlToAgent::ToolCall { .. } | ControlToAgent::CancelRequest { .. } => {
                warn!("a tool message reached the session registry");
                return Ok(());
            }
        };
        send(tx_out, reply(request_id, result)).await
    }
}

fn reply(request_id: RequestId, result: Result<(), RequestError>) -> AgentToControl {
    match result {
        Ok(()) => AgentToControl::RequestDone { request_id },
        Err(err) => AgentToControl::RequestFailed {
            request_id,
            code: err.code,
            message: err.message,
        },
    }
}

async fn send(tx_out: &TxOut, msg: AgentToControl) -> Result<(), LinkClosed> {
    tx_out
        .send(Outbound::control(msg))
        .await
        .map_err(|_| LinkClosed)
}

#[cfg(test)]
mod tests;
