//! One session's task: numbers the PTY's output by offset, retains the most
//! recent part for replay, and forwards it to whichever connection is
//! current, ending with the session's exit report.
//!
//! The task alone owns the retained output and decides what goes on the
//! wire for its session, so the boundary between a replay after a reconnect
//! and live output needs no locking: while it replays, it reads no new
//! output, and afterwards it forwards from exactly where the replay ended.

use std::collections::VecDeque;
use std::time::Duration;

use paddock_protocol::{AgentToControl, DataFrame, ExitStatus, SessionId, MAX_DATA_PAYLOAD};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::connection::{Outbound, TxOut};
use crate::pty::PtyOutput;

/// Output retained per session for replay after a reconnect.
pub(crate) const RETAIN_CAP: usize = 8 * 1024 * 1024;

/// How long to wait for the PTY's EOF once the process has been reaped; a
/// background job may hold the terminal open forever.
const EOF_GRACE: Duration = Duration::from_secs(2);

/// The reason sent with a gap caused by retention overflow.
pub(crate) const OVERFLOW_REASON: &str = "agentd retention buffer overflowed while disconnected";

/// The most recent output of a session, addressed by stream offset.
#[derive(Debug)]
pub(crate) struct Retained {
    bytes: VecDeque<u8>,
    /// The offset of `bytes[0]`: everything before it was dropped.
    from: u64,
    cap: usize,
}

impl Retained {
    pub(crate) fn new(cap: usize) -> Self {
        Retained {
            bytes: VecDeque::new(),
            from: 0,
            cap,
        }
    }

    /// The lowest offset that can still be replayed.
    pub(crate) fn retained_from(&self) -> u64 {
        self.from
    }

    /// The offset the next output byte will have.
    pub(crate) fn next_offset(&self) -> u64 {
        self.from + self.bytes.len() as u64
    }

    /// Appends output, dropping the oldest bytes beyond the cap.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let excess = self.bytes.len().saturating_sub(self.cap);
        if excess > 0 {
            self.bytes.drain(..excess);
            self.from += excess as u64;
        }
    }

    /// Up to `max` retained bytes starting at `offset`.
    pub(crate) fn read(&self, offset: u64, max: usize) -> Vec<u8> {
        let start = offset.saturating_sub(self.from) as usize;
        let end = self.bytes.len().min(start.saturating_add(max));
        if start >= end {
            return Vec::new();
        }
        self.bytes.range(start..end).copied().collect()
    }
}

/// What a replay from a requested offset consists of.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Replay {
    /// Output in `[from, to)` that is no longer retained.
    pub gap: Option<(u64, u64)>,
    /// Where the replayed bytes start.
    pub from: u64,
}

/// Plans a replay from `requested`. An offset past the end (the control
/// plane claims bytes never produced) replays nothing.
pub(crate) fn plan_replay(requested: u64, log: &Retained) -> Replay {
    let requested = requested.min(log.next_offset());
    if requested < log.retained_from() {
        Replay {
            gap: Some((requested, log.retained_from())),
            from: log.retained_from(),
        }
    } else {
        Replay {
            gap: None,
            from: requested,
        }
    }
}

/// Where a session's stream stands, read for the hello after a reconnect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    pub next_offset: u64,
    pub retained_from: u64,
}

/// Commands for a session task.
pub(crate) enum SessionCmd {
    /// A connection was welcomed: replay from `from`, then go live on `tx_out`.
    Attach { tx_out: TxOut, from: u64 },
}

/// How a session task ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Its `session_exited` was written to a connection: forget it.
    Reported,
    /// Dropped by the control plane or by shutdown: nothing more to do.
    Abandoned,
}

/// The state of one session's task.
pub(crate) struct SessionTask {
    pub id: SessionId,
    pub output: PtyOutput,
    /// Attach commands from the registry. Closed when the registry forgets
    /// the session (drop_session), which ends the task silently.
    pub rx_cmd: mpsc::Receiver<SessionCmd>,
    /// Where the stream stands, for hellos (and tests) to read.
    pub tx_progress: watch::Sender<Progress>,
    pub log: Retained,
    /// The current connection's outbound queue, when attached.
    pub link: Option<TxOut>,
    pub shutdown: CancellationToken,
}

/// Never completes when `deadline` is `None`.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

impl SessionTask {
    pub(crate) async fn run(mut self) -> Ended {
        let shutdown = self.shutdown.clone();
        tokio::select! {
            ended = self.lifecycle() => ended,
            () = shutdown.cancelled() => Ended::Abandoned,
        }
    }

    async fn lifecycle(&mut self) -> Ended {
        let Some(status) = self.pump().await else {
            return Ended::Abandoned;
        };
        info!(session.id = %self.id, status = %status, end_offset = self.log.next_offset(), "session exited");
        self.report_exit(status).await
    }

    /// Forwards output until the PTY hit EOF and the process was reaped.
    /// Returns `None` if the registry forgot the session meanwhile.
    async fn pump(&mut self) -> Option<ExitStatus> {
        let mut eof = false;
        let mut status: Option<ExitStatus> = None;
        let mut eof_deadline: Option<Instant> = None;
        loop {
            if eof {
                if let Some(status) = status {
                    return Some(status);
                }
            }
            tokio::select! {
                chunk = self.output.rx_output.recv(), if !eof => match chunk {
                    Some(chunk) => self.forward(&chunk).await,
                    None => eof = true,
                },
                exit = &mut self.output.rx_exit, if status.is_none() => {
                    // A dropped sender means the reaper failed; report an unknown status.
                    status = Some(exit.unwrap_or(ExitStatus { code: None, signal: None }));
                    eof_deadline = Some(Instant::now() + EOF_GRACE);
                }
                () = sleep_until(eof_deadline), if !eof => {
                    debug!(session.id = %self.id, "pty still open after the process exited; reporting the exit anyway");
                    eof = true;
                }
                cmd = self.rx_cmd.recv() => match cmd {
                    Some(SessionCmd::Attach { tx_out, from }) => self.attach(tx_out, from).await,
                    None => return None,
                },
            }
        }
    }

    /// Retains a chunk and sends it live if a connection is attached.
    async fn forward(&mut self, chunk: &[u8]) {
        let offset = self.log.next_offset();
        self.log.push(chunk);
        self.publish_progress();
        let Some(tx_out) = &self.link else {
            return;
        };
        for frame in DataFrame::chunks(self.id, offset, chunk) {
            // Awaiting a full queue is flow control; an error means the
            // connection is gone and the bytes stay retained for the next one.
            if tx_out.send(Outbound::data(frame.encode())).await.is_err() {
                self.link = None;
                return;
            }
        }
    }

    fn publish_progress(&self) {
        self.tx_progress.send_replace(Progress {
            next_offset: self.log.next_offset(),
            retained_from: self.log.retained_from(),
        });
    }

    /// Replays retained output from `from` (after a gap notice if part of it
    /// is gone), then makes `tx_out` the live link.
    async fn attach(&mut self, tx_out: TxOut, from: u64) {
        self.link = None;
        if from > self.log.next_offset() {
            warn!(session.id = %self.id, requested = from, next_offset = self.log.next_offset(), "control plane asked to resume past the end of the output");
        }
        let plan = plan_replay(from, &self.log);
        if let Some((gap_from, gap_to)) = plan.gap {
            warn!(session.id = %self.id, from = gap_from, to = gap_to, "output lost to retention overflow");
            let gap = AgentToControl::Gap {
                session_id: self.id,
                from: gap_from,
                to: gap_to,
                reason: OVERFLOW_REASON.to_owned(),
            };
            if tx_out.send(Outbound::control(gap)).await.is_err() {
                return;
            }
        }
        let mut at = plan.from;
        while at < self.log.next_offset() {
            let bytes = self.log.read(at, MAX_DATA_PAYLOAD);
            let frame = DataFrame::output(self.id, at, &bytes).encode();
            if tx_out.send(Outbound::data(frame)).await.is_err() {
                return;
            }
            at += bytes.len() as u64;
        }
        debug!(session.id = %self.id, from = plan.from, to = at, "replayed retained output");
        self.link = Some(tx_out);
    }

    /// Sends `session_exited` until a connection has written it, attaching
    /// to each new connection (and replaying) in between.
    async fn report_exit(&mut self, status: ExitStatus) -> Ended {
        loop {
            // A session dropped meanwhile is not reported; its drop sent the kill
            // only after closing this queue, so an exit it caused finds it closed.
            match self.rx_cmd.try_recv() {
                Ok(SessionCmd::Attach { tx_out, from }) => {
                    self.attach(tx_out, from).await;
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return Ended::Abandoned,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            if let Some(tx_out) = self.link.take() {
                let exited = AgentToControl::SessionExited {
                    session_id: self.id,
                    status,
                    end_offset: self.log.next_offset(),
                };
                let (outbound, rx_written) = Outbound::acked(exited);
                if tx_out.send(outbound).await.is_ok() && rx_written.await.is_ok() {
                    return Ended::Reported;
                }
                debug!(session.id = %self.id, "connection lost before the exit was reported");
            }
            match self.rx_cmd.recv().await {
                Some(SessionCmd::Attach { tx_out, from }) => self.attach(tx_out, from).await,
                None => return Ended::Abandoned,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_overflow_advances_retained_from() {
        let mut log = Retained::new(10);
        log.push(b"0123456");
        assert_eq!((log.retained_from(), log.next_offset()), (0, 7));
        log.push(b"789abcdef");
        assert_eq!((log.retained_from(), log.next_offset()), (6, 16));
        assert_eq!(log.read(6, 100), b"6789abcdef");
        assert_eq!(log.read(14, 100), b"ef");
        assert_eq!(log.read(8, 3), b"89a");
        assert_eq!(log.read(16, 100), b"");
    }

    #[test]
    fn replay_below_retention_starts_with_a_gap() {
        let mut log = Retained::new(4);
        log.push(b"abcdefgh");
        assert_eq!(
            plan_replay(1, &log),
            Replay {
                gap: Some((1, 4)),
                from: 4
            }
        );
        assert_eq!(plan_replay(5, &log), Replay { gap: None, from: 5 });
        assert_eq!(plan_replay(8, &log), Replay { gap: None, from: 8 });
        assert_eq!(plan_replay(99, &log), Replay { gap: None, from: 8 });
    }
}
