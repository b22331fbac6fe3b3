//! Per-session output log and fan-out: one writer (the agent connection),
//! any number of readers (client streams), at most one driver.
//!
//! There is no queue per watcher. The log holds the session's whole output
//! stream (until durable storage lands) and a `watch` channel that ticks on
//! every change; each client task keeps its own cursor and copies what lies
//! between its cursor and the end at its own pace. A slow client therefore
//! costs nobody else anything and never misses a byte; it only falls behind.

use std::sync::Mutex;

use paddock_protocol::api::{SessionInfo, SessionState};
use paddock_protocol::{ExitStatus, SandboxId, SessionId, TermSize, MAX_DATA_PAYLOAD};
use tokio::sync::watch;

use crate::store::SessionRow;

/// Who drives a session: the client connection and how it is shown to others.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Driver {
    pub client_id: u64,
    pub label: String,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Exited(ExitStatus),
    /// The sandbox no longer has the session and its exit status is unknown.
    Lost(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRecord {
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// What a reader finds at its cursor.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// Bytes starting at `offset` (the cursor).
    Data { offset: u64, bytes: Vec<u8> },
    /// Nothing will ever exist in `[from, to)`; continue at `to`.
    Gap { from: u64, to: u64, reason: String },
    /// The cursor is at the end of the log.
    CaughtUp,
}

/// The session's shared state as one reader sees it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub end: u64,
    pub driver: Option<Driver>,
    pub size: TermSize,
    pub ending: Option<Ending>,
    pub viewers: u32,
    pub running: bool,
}

#[derive(Debug)]
struct Inner {
    /// Contiguous runs of output as `(offset, bytes)`, ordered; holes are gaps.
    chunks: Vec<(u64, Vec<u8>)>,
    end: u64,
    gaps: Vec<GapRecord>,
    driver: Option<Driver>,
    size: TermSize,
    ending: Option<Ending>,
    viewers: u32,
    running: bool,
}

#[derive(Debug)]
pub struct SessionLog {
    pub id: SessionId,
    pub sandbox_id: SandboxId,
    inner: Mutex<Inner>,
    /// Ticks on every change; readers re-check the log when it does.
    tx_changed: watch::Sender<u64>,
}

impl SessionLog {
    /// A log for a session, starting at `start` (0 unless output before it was lost).
    pub fn new(row: &SessionRow, start: u64) -> Self {
        let (tx_changed, _) = watch::channel(0);
        let mut gaps = Vec::new();
        if start > 0 {
            gaps.push(GapRecord {
                from: 0,
                to: start,
                reason: "output before the control plane restarted was not retained".into(),
            });
        }
        SessionLog {
            id: row.id,
            sandbox_id: row.sandbox_id.clone(),
            inner: Mutex::new(Inner {
                chunks: Vec::new(),
                end: start,
                gaps,
                driver: None,
                size: row.size,
                ending: None,
                viewers: 0,
                running: row.state == SessionState::Running,
            }),
            tx_changed,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx_changed.subscribe()
    }

    fn changed(&self) {
        self.tx_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn end(&self) -> u64 {
        self.lock().end
    }

    /// Appends output that starts at `offset`. Bytes already held are skipped
    /// (a replay after reconnect may overlap); a jump forward is recorded as a gap.
    pub fn append(&self, offset: u64, data: &[u8]) {
        {
            let mut inner = self.lock();
            let end = inner.end;
            let data_end = offset + data.len() as u64;
            if data_end <= end {
                return;
            }
            let data = if offset < end {
                &data[(end - offset) as usize..]
            } else {
                if offset > end {
                    inner.gaps.push(GapRecord {
                        from: end,
                        to: offset,
                        reason: "agentd sent output past a hole it did not explain".into(),
                    });
                }
                data
            };
            let start = data_end - data.len() as u64;
            match inner.chunks.last_mut() {
                Some((chunk_offset, bytes))
                    if *chunk_offset + bytes.len() as u64 == start
                        && bytes.len() + data.len() <= MAX_DATA_PAYLOAD =>
                {
                    bytes.extend_from_slice(data)
                }
                _ => inner.chunks.push((start, data.to_vec())),
            }
            inner.end = data_end;
        }
        self.changed();
    }

    /// Records that `[from, to)` will never arrive.
    pub fn gap(&self, from: u64, to: u64, reason: String) {
        {
            let mut inner = self.lock();
            if to <= inner.end {
                return;
            }
            let from = from.max(inner.end);
            inner.gaps.push(GapRecord { from, to, reason });
            inner.end = to;
        }
        self.changed();
    }

    /// What lies at `cursor`: at most `max` bytes, a gap, or nothing yet.
    pub fn read(&self, cursor: u64, max: usize) -> ReadAt {
        let inner = self.lock();
        if cursor >= inner.end {
            return ReadAt::CaughtUp;
        }
        let idx = inner
            .chunks
            .partition_point(|(off, bytes)| off + bytes.len() as u64 <= cursor);
        match inner.chunks.get(idx) {
            Some((off, bytes)) if *off <= cursor => {
                let start = (cursor - off) as usize;
                let stop = bytes.len().min(start + max);
                ReadAt::Data {
                    offset: cursor,
                    bytes: bytes[start..stop].to_vec(),
                }
            }
            next => {
                let hole_end = next.map_or(inner.end, |(off, _)| *off);
                let (to, reason) = match inner
                    .gaps
                    .iter()
                    .find(|g| g.from <= cursor && cursor < g.to)
                {
                    Some(g) => (g.to.min(hole_end), g.reason.clone()),
                    None => (hole_end, "output not retained".to_owned()),
                };
                ReadAt::Gap {
                    from: cursor,
                    to,
                    reason,
                }
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            end: inner.end,
            driver: inner.driver.clone(),
            size: inner.size,
            ending: inner.ending.clone(),
            viewers: inner.viewers,
            running: inner.running,
        }
    }

    pub fn set_running(&self) {
        self.lock().running = true;
        self.changed();
    }

    pub fn finish(&self, ending: Ending) {
        {
            let mut inner = self.lock();
            if inner.ending.is_some() {
                return;
            }
            inner.ending = Some(ending);
            inner.running = false;
        }
        self.changed();
    }

    pub fn set_size(&self, size: TermSize) {
        {
            let mut inner = self.lock();
            if inner.size == size {
                return;
            }
            inner.size = size;
        }
        self.changed();
    }

    pub fn join(&self) {
        self.lock().viewers += 1;
        self.changed();
    }

    /// A client leaves; a driver leaving frees the driver's seat.
    pub fn leave(&self, client_id: u64) {
        {
            let mut inner = self.lock();
            inner.viewers = inner.viewers.saturating_sub(1);
            if inner
                .driver
                .as_ref()
                .is_some_and(|d| d.client_id == client_id)
            {
                inner.driver = None;
            }
        }
        self.changed();
    }

    /// Takes the driver's seat. Refused with the current driver's label if it
    /// is taken and `take` is false; with `take`, the current driver is demoted.
    pub fn drive(&self, client_id: u64, label: String, take: bool) -> Result<(), String> {
        {
            let mut inner = self.lock();
            if let Some(current) = &inner.driver {
                if current.client_id != client_id && !take {
                    return Err(current.label.clone());
                }
            }
            inner.driver = Some(Driver { client_id, label });
        }
        self.changed();
        Ok(())
    }

    pub fn is_driver(&self, client_id: u64) -> bool {
        self.lock()
            .driver
            .as_ref()
            .is_some_and(|d| d.client_id == client_id)
    }

    /// The API view of the session: stored facts merged with live ones.
    pub fn info(&self, row: &SessionRow) -> SessionInfo {
        let snap = self.snapshot();
        let (state, exit) = match &snap.ending {
            Some(Ending::Exited(status)) => (SessionState::Exited, Some(*status)),
            Some(Ending::Lost(_)) => (SessionState::Lost, None),
            None if snap.running => (SessionState::Running, None),
            None => (SessionState::Starting, None),
        };
        SessionInfo {
            id: row.id,
            sandbox_id: row.sandbox_id.clone(),
            command: row.command.clone(),
            args: row.args.clone(),
            state,
            size: snap.size,
            created_at: row.created_at.clone(),
            ended_at: row.ended_at.clone(),
            exit: exit.or(row.exit),
            end_offset: snap.end,
            driver: snap.driver.map(|d| d.label),
            viewers: snap.viewers,
        }
    }
}

/// The API view of a session with no live log (e.g. after a restart).
pub fn info_from_row(row: &SessionRow) -> SessionInfo {
    SessionInfo {
        id: row.id,
        sandbox_id: row.sandbox_id.clone(),
        command: row.command.clone(),
        args: row.args.clone(),
        state: row.state,
        size: row.size,
        created_at: row.created_at.clone(),
        ended_at: row.ended_at.clone(),
        exit: row.exit,
        end_offset: row.end_offset,
        driver: None,
        viewers: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> SessionRow {
        SessionRow {
            id: SessionId(1),
            tenant_id: "default".into(),
            sandbox_id: SandboxId::from("sbx_1"),
            command: None,
            args: vec![],
            size: TermSize::DEFAULT,
            state: SessionState::Running,
            created_at: "now".into(),
            ended_at: None,
            exit: None,
            end_offset: 0,
        }
    }

    fn read_all(log: &SessionLog, mut cursor: u64) -> (Vec<u8>, Vec<(u64, u64)>) {
        let mut out = Vec::new();
        let mut gaps = Vec::new();
        loop {
            match log.read(cursor, 3) {
                ReadAt::Data { offset, bytes } => {
                    assert_eq!(offset, cursor);
                    cursor += bytes.len() as u64;
                    out.extend(bytes);
                }
                ReadAt::Gap { from, to, .. } => {
                    gaps.push((from, to));
                    cursor = to;
                }
                ReadAt::CaughtUp => return (out, gaps),
            }
        }
    }

    #[test]
    fn overlapping_replay_is_deduplicated() {
        let log = SessionLog::new(&row(), 0);
        log.append(0, b"hello ");
        log.append(3, b"lo world");
        log.append(0, b"hel");
        assert_eq!(log.end(), 11);
        assert_eq!(read_all(&log, 0), (b"hello world".to_vec(), vec![]));
        assert_eq!(read_all(&log, 6).0, b"world".to_vec());
    }

    #[test]
    fn holes_are_reported_as_gaps_never_skipped_silently() {
        let log = SessionLog::new(&row(), 4);
        log.append(4, b"ab");
        log.gap(6, 10, "lost".into());
        log.append(12, b"cd");
        let (bytes, gaps) = read_all(&log, 0);
        assert_eq!(bytes, b"abcd".to_vec());
        assert_eq!(gaps, vec![(0, 4), (6, 10), (10, 12)]);
        match log.read(7, 10) {
            ReadAt::Gap { reason, .. } => assert_eq!(reason, "lost"),
            other => panic!("expected a gap, got {other:?}"),
        }
    }

    #[test]
    fn one_driver_at_a_time_unless_taken_over() {
        let log = SessionLog::new(&row(), 0);
        log.drive(1, "alice".into(), false).unwrap();
        assert_eq!(log.drive(2, "bob".into(), false), Err("alice".to_owned()));
        log.drive(2, "bob".into(), true).unwrap();
        assert!(log.is_driver(2) && !log.is_driver(1));
        log.leave(1);
        assert!(log.is_driver(2));
        log.leave(2);
        assert_eq!(log.snapshot().driver, None);
    }

    #[test]
    fn readers_are_woken_by_changes() {
        let log = SessionLog::new(&row(), 0);
        let mut rx = log.subscribe();
        rx.borrow_and_update();
        log.append(0, b"x");
        assert!(rx.has_changed().unwrap());
    }
}
