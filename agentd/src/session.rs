//! One session's task: numbers the PTY's output by offset, retains every
//! byte until the control plane acknowledges it as stored, sends it to
//! whichever connection is current within a flow-control window, and
//! reports the exit until the control plane has recorded it.
//!
//! The task alone owns the retained output and decides what goes on the
//! wire for its session, so the seam between a replay after a reconnect and
//! live output needs no locking: a connection has one cursor (`sent`), the
//! next frame always starts there, and newly read output is only ever
//! appended behind it.
//!
//! Flow control: while connected, at most `window` bytes may be sent and
//! unacknowledged, and the task takes chunks from the PTY reader only while
//! less than `window` bytes are unacknowledged at all (and memory or disk
//! has room). Otherwise the reader thread blocks, and so does the program
//! writing to the terminal, until acks arrive. While disconnected the task
//! keeps reading and retaining; see `retention.rs`.

use std::time::Duration;

use paddock_protocol::{AgentToControl, DataFrame, ExitStatus, SessionId, MAX_DATA_PAYLOAD};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::mpsc::{self, OwnedPermit};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Outbound, TxOut};
use crate::pty::PtyOutput;
use crate::retention::{Outgoing, Retention, WhenFull};

/// How long to wait for the PTY's EOF once the process has been reaped; a
/// background job may hold the terminal open forever.
const EOF_GRACE: Duration = Duration::from_secs(2);

/// What the control plane has durably stored of a session, from its acks.
/// Acks only move forward; the registry keeps the highest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Every output byte below this offset.
    pub offset: u64,
    /// The session's exit.
    pub exit: bool,
}

/// Where a session's stream stands, read for the hello after a reconnect
/// (and by tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub next_offset: u64,
    /// The lowest offset still held: the latest ack.
    pub retained_from: u64,
    /// Retained bytes in memory.
    pub memory: usize,
    /// Retained bytes in this session's spill files.
    pub spilled: u64,
    /// The process exited and all its output was read.
    pub exited: bool,
}

/// Commands for a session task.
pub(crate) enum SessionCmd {
    /// A connection was welcomed: send from `from` on `tx_out` (replay,
    /// then live output). With `stored`, the control plane said it holds
    /// everything below `from`, which counts as an ack.
    Attach {
        tx_out: TxOut,
        from: u64,
        stored: bool,
    },
}

/// Commands queued for one session task. Only attaches travel here, one
/// per connection, so it is never near full; a sender waits if it were.
const CMD_QUEUE: usize = 4;

/// The registry's side of a session task. Dropping it ends the task
/// without a report.
pub(crate) struct SessionHandle {
    pub tx_cmd: mpsc::Sender<SessionCmd>,
    /// What the control plane has stored; acks only move it forward.
    pub tx_stored: watch::Sender<Stored>,
    pub rx_progress: watch::Receiver<Progress>,
}

/// How a session task ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The control plane recorded its exit: forget it.
    Recorded,
    /// Dropped by the control plane or by shutdown: nothing more to do.
    Abandoned,
}

/// The current connection, as this session sees it.
struct Link {
    tx_out: TxOut,
    /// Everything below was sent on this connection.
    sent: u64,
    /// Whether `session_exited` was sent on this connection.
    exit_sent: bool,
}

/// The state of one session's task.
pub(crate) struct SessionTask {
    id: SessionId,
    output: PtyOutput,
    /// Attach commands from the registry. Closed when the registry forgets
    /// the session (drop_session), which ends the task silently.
    rx_cmd: mpsc::Receiver<SessionCmd>,
    /// What the control plane has stored, updated by the registry.
    rx_stored: watch::Receiver<Stored>,
    /// Where the stream stands, for hellos (and tests) to read.
    tx_progress: watch::Sender<Progress>,
    queue: Retention,
    window: u64,
    link: Option<Link>,
    shutdown: CancellationToken,
}

/// Never completes when `deadline` is `None`.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Waits for room in `tx_out`'s queue; never completes for `None`.
async fn reserve(tx_out: Option<TxOut>) -> Result<OwnedPermit<Outbound>, ()> {
    match tx_out {
        Some(tx_out) => tx_out.reserve_owned().await.map_err(drop),
        None => std::future::pending().await,
    }
}

/// Completes when `tx_out`'s connection is gone; never for `None`.
async fn closed(tx_out: Option<TxOut>) {
    match tx_out {
        Some(tx_out) => tx_out.closed().await,
        None => std::future::pending().await,
    }
}

/// Runs spill-file I/O, telling a multi-threaded runtime to move its other
/// tasks off this worker meanwhile. (Current-thread runtimes, in tests,
/// just run it.)
fn disk_io<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl SessionTask {
    /// A task for session `id` reading `output`, and the registry's handle on it.
    pub(crate) fn new(
        id: SessionId,
        output: PtyOutput,
        queue: Retention,
        window: u64,
        shutdown: CancellationToken,
    ) -> (SessionTask, SessionHandle) {
        let (tx_cmd, rx_cmd) = mpsc::channel(CMD_QUEUE);
        let (tx_stored, rx_stored) = watch::channel(Stored::default());
        let (tx_progress, rx_progress) = watch::channel(Progress::default());
        let task = SessionTask {
            id,
            output,
            rx_cmd,
            rx_stored,
            tx_progress,
            queue,
            window: window.max(1),
            link: None,
            shutdown,
        };
        let handle = SessionHandle {
            tx_cmd,
            tx_stored,
            rx_progress,
        };
        (task, handle)
    }

    pub(crate) async fn run(mut self) -> Ended {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            ended = self.lifecycle() => ended,
            () = shutdown.cancelled() => Ended::Abandoned,
        }
    }

    async fn lifecycle(&mut self) -> Ended {
        let mut eof = false;
        let mut status: Option<ExitStatus> = None;
        let mut eof_deadline: Option<Instant> = None;
        let mut exit_logged = false;
        loop {
            let exited = if eof { status } else { None };
            if let Some(status) = exited {
                if !exit_logged {
                    exit_logged = true;
                    info!(session.id = %self.id, status = %status, end_offset = self.queue.next(), "session exited");
                    self.publish_progress(true);
                }
                // Trusted like acks: the control plane knows what it stored.
                if self.rx_stored.borrow().exit {
                    debug!(session.id = %self.id, "exit recorded by the control plane");
                    return Ended::Recorded;
                }
            }
            let sending = match &self.link {
                Some(link) if self.wants_to_send(link, exited.is_some()) => {
                    Some(link.tx_out.clone())
                }
                _ => None,
            };
            let idle_link = match (&self.link, &sending) {
                (Some(link), None) => Some(link.tx_out.clone()),
                _ => None,
            };
            let reading = !eof && self.may_read();
            tokio::select! {
                biased;
                cmd = self.rx_cmd.recv() => match cmd {
                    Some(SessionCmd::Attach { tx_out, from, stored }) => self.attach(tx_out, from, stored, exited.is_some()),
                    None => return Ended::Abandoned,
                },
                changed = self.rx_stored.changed() => {
                    // The registry dropped the session.
                    if changed.is_err() {
                        return Ended::Abandoned;
                    }
                    self.apply_acks(exited.is_some());
                }
                exit = &mut self.output.rx_exit, if status.is_none() => {
                    // A dropped sender means the reaper failed; report an unknown status.
                    status = Some(exit.unwrap_or(ExitStatus { code: None, signal: None }));
                    eof_deadline = Some(Instant::now() + EOF_GRACE);
                }
                permit = reserve(sending.clone()), if sending.is_some() => match permit {
                    Ok(permit) => self.send_next(permit, exited),
                    Err(()) => self.lose_link(),
                },
                () = closed(idle_link.clone()), if idle_link.is_some() => self.lose_link(),
                chunk = self.output.rx_output.recv(), if reading => match chunk {
                    Some(chunk) => {
                        self.retain(&chunk);
                        // Take what queued meanwhile too (the reader gathers
                        // a flood itself; this merges chunks that queued while
                        // this task was busy), so frames go out full.
                        let mut taken = chunk.len();
                        while taken < MAX_DATA_PAYLOAD && self.may_read() {
                            match self.output.rx_output.try_recv() {
                                Ok(more) => {
                                    taken += more.len();
                                    self.retain(&more);
                                }
                                Err(mpsc::error::TryRecvError::Empty) => break,
                                Err(mpsc::error::TryRecvError::Disconnected) => {
                                    eof = true;
                                    break;
                                }
                            }
                        }
                    }
                    None => eof = true,
                },
                () = sleep_until(eof_deadline), if !eof => {
                    debug!(session.id = %self.id, "pty still open after the process exited; reporting the exit anyway");
                    eof = true;
                }
            }
        }
    }

    /// Whether the next frame may go out on `link` now.
    fn wants_to_send(&self, link: &Link, exited: bool) -> bool {
        if link.sent < self.queue.next() {
            self.queue.in_flight(link.sent) < self.window
        } else {
            exited && !link.exit_sent
        }
    }

    /// Whether to take the next chunk from the PTY. Disconnected: always
    /// (what does not fit is dropped as a gap). Connected: only while less
    /// than a window is unacknowledged (sent or not: a slow socket holds
    /// reading back as much as slow acks do) and memory or disk has room.
    fn may_read(&self) -> bool {
        match &self.link {
            None => true,
            Some(_) => self.queue.retained() < self.window && self.queue.has_room(),
        }
    }

    fn retain(&mut self, chunk: &[u8]) {
        let when_full = if self.link.is_some() {
            WhenFull::Keep
        } else {
            WhenFull::Drop
        };
        let queue = &mut self.queue;
        let pushed = if queue.push_touches_disk(chunk.len()) {
            disk_io(|| queue.push(chunk, when_full))
        } else {
            queue.push(chunk, when_full)
        };
        if pushed.new_gap {
            warn!(
                session.id = %self.id,
                from = self.queue.next() - pushed.dropped,
                disk_cap = self.queue.disk_cap(),
                "the disk cap is reached while the control plane is unreachable; dropping output"
            );
        }
        self.publish_progress(false);
    }

    /// Sends the next frame: output from the cursor, a gap record, or the exit.
    fn send_next(&mut self, permit: OwnedPermit<Outbound>, exited: Option<ExitStatus>) {
        let Some(link) = &mut self.link else {
            return;
        };
        let next = self.queue.next();
        if link.sent < next {
            let room = self.window - self.queue.in_flight(link.sent);
            let max = (room as usize).min(MAX_DATA_PAYLOAD);
            let queue = &self.queue;
            let outgoing = if queue.read_touches_disk(link.sent) {
                disk_io(|| queue.read(link.sent, max))
            } else {
                queue.read(link.sent, max)
            };
            match outgoing {
                Outgoing::Data { offset, bytes } => {
                    link.sent += bytes.len() as u64;
                    let frame = DataFrame::output(self.id, offset, &bytes).encode();
                    permit.send(Outbound::data(frame));
                }
                Outgoing::Gap { from, to, cause } => {
                    warn!(session.id = %self.id, from, to, ?cause, "sending a gap in the output");
                    link.sent = to;
                    permit.send(Outbound::control(AgentToControl::Gap {
                        session_id: self.id,
                        from,
                        to,
                        reason: cause.reason(self.queue.disk_cap()),
                    }));
                }
            }
        } else if let Some(status) = exited {
            link.exit_sent = true;
            permit.send(Outbound::control(AgentToControl::SessionExited {
                session_id: self.id,
                status,
                end_offset: next,
            }));
        }
    }

    fn lose_link(&mut self) {
        if let Some(link) = self.link.take() {
            debug!(session.id = %self.id, sent = link.sent, "connection gone; retaining output for the next one");
        }
    }

    /// Applies the latest acknowledgement.
    fn apply_acks(&mut self, exited: bool) {
        let offset = self.rx_stored.borrow_and_update().offset;
        if offset > self.queue.next() {
            warn!(session.id = %self.id, ack = offset, next_offset = self.queue.next(), "the control plane acknowledged output never sent");
        }
        self.ack(offset);
        self.publish_progress(exited);
    }

    fn ack(&mut self, offset: u64) {
        let queue = &mut self.queue;
        if queue.ack_touches_disk() {
            disk_io(|| queue.ack(offset));
        } else {
            queue.ack(offset);
        }
        // What is stored need not be sent again on this connection.
        if let Some(link) = &mut self.link {
            link.sent = link.sent.max(self.queue.acked());
        }
    }

    /// Makes `tx_out` the session's connection, sending from `from`.
    fn attach(&mut self, tx_out: TxOut, from: u64, stored: bool, exited: bool) {
        let next = self.queue.next();
        let from = if from > next {
            warn!(session.id = %self.id, requested = from, next_offset = next, "asked to resume past the end of the output");
            next
        } else {
            from
        };
        if stored {
            self.ack(from);
        }
        if from < self.queue.acked() {
            warn!(session.id = %self.id, requested = from, acked = self.queue.acked(), "asked to resume below the acknowledged offset");
        }
        debug!(session.id = %self.id, from, next_offset = next, retained_from = self.queue.acked(), "attached to a connection");
        self.link = Some(Link {
            tx_out,
            sent: from,
            exit_sent: false,
        });
        self.publish_progress(exited);
    }

    fn publish_progress(&self, exited: bool) {
        self.tx_progress.send_replace(Progress {
            next_offset: self.queue.next(),
            retained_from: self.queue.acked(),
            memory: self.queue.memory_len(),
            spilled: self.queue.spilled(),
            exited,
        });
    }
}
