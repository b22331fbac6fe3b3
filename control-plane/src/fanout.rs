//! Per-session live output and fan-out: one writer (the agent connection),
//! any number of readers (client streams), at most one driver.
//!
//! There is no queue per watcher. The log keeps a bounded ring of the most
//! recent output *as encoded frames* and a `watch` channel that ticks on
//! every change; each client task keeps its own cursor and forwards the very
//! frame bytes it finds there, so fan-out costs one encode per frame, not
//! one per watcher. The ring only ever drops bytes that are durably stored:
//! a reader that asked for `from=` and fell behind reads the store instead
//! (never skipped); a live reader that fell behind is skipped ahead with a
//! gap notice and a fresh screen snapshot. A slow client therefore costs
//! nobody else anything, and memory stays bounded by the ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use paddock_protocol::api::{SessionInfo, SessionState};
use paddock_protocol::{DataFrame, ExitStatus, SandboxId, SessionId, TermSize, FRAME_HEADER_LEN};
use tokio::sync::watch;

use crate::modes::ModeScan;
use crate::screen::Rendered;
use crate::store::{GapRow, Piece, SessionRow, Store, StoreError};
use paddock_protocol::screen::{Scrollback, MAX_SCROLLBACK};

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

/// One entry of the ring: a received output frame, or a hole.
#[derive(Debug, Clone)]
enum Entry {
    /// An encoded output frame (header included) whose payload starts at `offset`.
    Frame { offset: u64, frame: Bytes },
    Gap {
        from: u64,
        to: u64,
        reason: Arc<str>,
    },
}

impl Entry {
    fn end(&self) -> u64 {
        match self {
            Entry::Frame { offset, frame } => offset + (frame.len() - FRAME_HEADER_LEN) as u64,
            Entry::Gap { to, .. } => *to,
        }
    }

    fn weight(&self) -> usize {
        match self {
            Entry::Frame { frame, .. } => frame.len(),
            Entry::Gap { .. } => 64,
        }
    }
}

/// What [`SessionLog::append`] added: an unexplained hole before the data, if
/// any, and the new bytes with their offset.
#[derive(Debug)]
pub struct Appended {
    pub hole: Option<(u64, u64, String)>,
    pub offset: u64,
    pub data: Bytes,
}

/// What a reader finds at its cursor in the ring.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadAt {
    /// An encoded output frame whose payload starts exactly at the cursor.
    Frame { frame: Bytes },
    /// Nothing will ever exist in `[from, to)`; continue at `to`.
    Gap { from: u64, to: u64, reason: String },
    /// The cursor lies before the ring: read the store (or skip ahead).
    Behind,
    /// The cursor is at the end of the stream.
    CaughtUp,
}

/// Terminal sizes are validated to be at least 1 on the wire.
fn nz(v: u16) -> std::num::NonZeroU16 {
    std::num::NonZeroU16::new(v).unwrap_or(std::num::NonZeroU16::MIN)
}

/// The payload of an encoded output frame.
pub fn payload(frame: &Bytes) -> Bytes {
    frame.slice(FRAME_HEADER_LEN..)
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
    ring: VecDeque<Entry>,
    ring_weight: usize,
    /// The lowest offset the ring holds; everything below is in the store.
    ring_start: u64,
    end: u64,
    /// Everything below this is durably stored.
    durable: u64,
    driver: Option<Driver>,
    size: TermSize,
    ending: Option<Ending>,
    viewers: u32,
    running: bool,
}

impl Inner {
    /// Drops the oldest durable entries while the ring is over `cap`; an
    /// ended session keeps nothing in memory once all of it is stored.
    fn evict(&mut self, cap: usize) {
        let cap = if self.ending.is_some() { 0 } else { cap };
        while self.ring_weight > cap {
            match self.ring.front() {
                Some(front) if front.end() <= self.durable => {
                    self.ring_weight -= front.weight();
                    self.ring_start = front.end();
                    self.ring.pop_front();
                }
                _ => break,
            }
        }
        if self.ring.is_empty() {
            self.ring_start = self.end.min(self.durable);
        }
    }
}

/// How much unseen output the emulator parses at most to catch up. When a
/// session ran further than this since the emulator last looked, the
/// emulator starts afresh this far before the end: a late joiner waits for
/// a few MiB of parsing (about a tenth of a second), not for the whole
/// history (seconds per hundred MiB). The screen a terminal shows is, in
/// practice, a function of its recent output (scrolling output scrolls, a
/// full-screen program redraws). The modes the skipped output left set
/// (alternate screen, cursor visibility, keys, mouse, paste) are found by a
/// scan for escape sequences (`modes.rs`, an escape-byte search rather than
/// a parse) and replayed first; what the restart forgets is scrollback
/// older than the tail and the rare state outside modes set long before
/// and never restated (a scroll region, a character set).
pub const CATCH_UP_TAIL: u64 = 4 * 1024 * 1024;

/// The server-side terminal emulator behind screen snapshots. It is fed
/// lazily, when a snapshot is asked for, so sessions nobody joins late
/// cost no parsing at all; see [`CATCH_UP_TAIL`] for how far it reads back.
struct Emulator {
    parser: vt100::Parser,
    offset: u64,
    /// The last rendering for screen viewers, valid while `offset` and the size stay.
    rendered: Option<Arc<Rendered>>,
}

pub struct SessionLog {
    pub id: SessionId,
    pub sandbox_id: SandboxId,
    pub tenant_id: String,
    inner: Mutex<Inner>,
    /// Ticks on every change; readers re-check the log when it does.
    tx_changed: watch::Sender<u64>,
    ring_cap: usize,
    emulator: tokio::sync::Mutex<Emulator>,
}

impl std::fmt::Debug for SessionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLog")
            .field("id", &self.id)
            .field("sandbox_id", &self.sandbox_id)
            .finish_non_exhaustive()
    }
}

impl SessionLog {
    /// A log for a session whose first `row.end_offset` bytes are already stored.
    pub fn new(row: &SessionRow, ring_cap: usize) -> Self {
        let (tx_changed, _) = watch::channel(0);
        let stored = row.end_offset;
        SessionLog {
            id: row.id,
            sandbox_id: row.sandbox_id.clone(),
            tenant_id: row.tenant_id.clone(),
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_weight: 0,
                ring_start: stored,
                end: stored,
                durable: stored,
                driver: None,
                size: row.size,
                ending: None,
                viewers: 0,
                running: row.state == SessionState::Running,
            }),
            tx_changed,
            ring_cap,
            emulator: tokio::sync::Mutex::new(Emulator {
                parser: vt100::Parser::new(
                    nz(row.size.rows),
                    nz(row.size.cols),
                    MAX_SCROLLBACK as usize,
                ),
                offset: 0,
                rendered: None,
            }),
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

    pub fn durable(&self) -> u64 {
        self.lock().durable
    }

    /// Appends an output frame received from agentd. Bytes already held are
    /// skipped (a replay after reconnect overlaps); a jump forward becomes a
    /// gap. Returns what is new — its offset and payload — for the store, or
    /// `None` when all of it was already held.
    pub fn append(&self, offset: u64, frame: Bytes) -> Option<Appended> {
        let len = (frame.len() - FRAME_HEADER_LEN) as u64;
        let appended = {
            let mut inner = self.lock();
            let end = inner.end;
            if offset + len <= end {
                return None;
            }
            let mut hole = None;
            let (start, frame) = if offset < end {
                let skip = (end - offset) as usize;
                let rest = &frame[FRAME_HEADER_LEN + skip..];
                (
                    end,
                    Bytes::from(DataFrame::output(self.id, end, rest).encode()),
                )
            } else {
                if offset > end {
                    let reason: Arc<str> =
                        "agentd sent output past a hole it did not explain".into();
                    hole = Some((end, offset, reason.to_string()));
                    inner.ring_weight += 64;
                    inner.ring.push_back(Entry::Gap {
                        from: end,
                        to: offset,
                        reason,
                    });
                }
                (offset, frame)
            };
            let data = payload(&frame);
            inner.ring_weight += frame.len();
            inner.ring.push_back(Entry::Frame {
                offset: start,
                frame,
            });
            inner.end = start + data.len() as u64;
            Appended {
                hole,
                offset: start,
                data,
            }
        };
        self.changed();
        Some(appended)
    }

    /// Records that `[from, to)` will never arrive; returns the part that is new.
    pub fn gap(&self, from: u64, to: u64, reason: String) -> Option<(u64, u64)> {
        let recorded = {
            let mut inner = self.lock();
            if to <= inner.end {
                return None;
            }
            let from = from.max(inner.end);
            inner.ring_weight += 64;
            inner.ring.push_back(Entry::Gap {
                from,
                to,
                reason: reason.into(),
            });
            inner.end = to;
            (from, to)
        };
        self.changed();
        Some(recorded)
    }

    /// Everything below `offset` is now durably stored.
    pub fn set_durable(&self, offset: u64) {
        let mut inner = self.lock();
        if offset > inner.durable {
            inner.durable = offset;
            inner.evict(self.ring_cap);
        }
    }

    /// What the ring holds at `cursor`.
    pub fn read(&self, cursor: u64) -> ReadAt {
        let inner = self.lock();
        if cursor >= inner.end {
            return ReadAt::CaughtUp;
        }
        if cursor < inner.ring_start {
            return ReadAt::Behind;
        }
        let idx = inner.ring.partition_point(|e| e.end() <= cursor);
        match inner.ring.get(idx) {
            Some(Entry::Frame { offset, frame }) if *offset == cursor => ReadAt::Frame {
                frame: frame.clone(),
            },
            Some(Entry::Frame { offset, frame }) if *offset < cursor => {
                let skip = (cursor - offset) as usize;
                let rest = &frame[FRAME_HEADER_LEN + skip..];
                ReadAt::Frame {
                    frame: Bytes::from(DataFrame::output(self.id, cursor, rest).encode()),
                }
            }
            Some(Entry::Gap { from, to, reason }) if *from <= cursor => ReadAt::Gap {
                from: cursor,
                to: *to,
                reason: reason.to_string(),
            },
            // Holes between ring entries cannot happen: entries are contiguous.
            _ => ReadAt::Behind,
        }
    }

    /// Gap entries of the ring overlapping `[from, to)`.
    pub fn ring_gaps(&self, from: u64, to: u64) -> Vec<GapRow> {
        self.lock()
            .ring
            .iter()
            .filter_map(|e| match e {
                Entry::Gap {
                    from: f,
                    to: t,
                    reason,
                } if *t > from && *f < to => Some(GapRow {
                    from: *f,
                    to: *t,
                    reason: reason.to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The pieces of output at `cursor`, below `to`: from the ring when it
    /// holds them, else from the store.
    pub async fn read_pieces(
        &self,
        store: &Store,
        cursor: u64,
        to: u64,
    ) -> Result<Vec<Piece>, StoreError> {
        if cursor >= to {
            return Ok(Vec::new());
        }
        match self.read(cursor) {
            ReadAt::Frame { frame } => {
                let mut data = payload(&frame);
                let whole = data.len() as u64 <= to - cursor;
                if !whole {
                    data.truncate((to - cursor) as usize);
                }
                Ok(vec![Piece::Data {
                    offset: cursor,
                    frame: whole.then_some(frame),
                    data,
                }])
            }
            ReadAt::Gap {
                from,
                to: gap_to,
                reason,
            } => Ok(vec![Piece::Gap {
                from,
                to: gap_to.min(to),
                reason,
            }]),
            ReadAt::Behind => {
                let limit = to.min(self.lock().ring_start.max(cursor + 1));
                store
                    .read_output(&self.tenant_id, self.id, cursor, limit, 4 * 1024 * 1024)
                    .await
            }
            ReadAt::CaughtUp => Ok(Vec::new()),
        }
    }

    /// Hands `feed` the output from `*cursor` to `to` in order, from the
    /// ring or the store, skipping gaps, moving `*cursor` past what it fed
    /// (so an error leaves it where feeding stopped).
    async fn each_piece(
        &self,
        store: &Store,
        cursor: &mut u64,
        to: u64,
        mut feed: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        while *cursor < to {
            let pieces = self.read_pieces(store, *cursor, to).await?;
            if pieces.is_empty() {
                break;
            }
            for piece in pieces {
                match piece {
                    Piece::Data { offset, data, .. } => {
                        if offset + data.len() as u64 <= *cursor {
                            continue;
                        }
                        feed(&data[cursor.saturating_sub(offset) as usize..]);
                        *cursor = offset + data.len() as u64;
                    }
                    Piece::Gap { to, .. } => *cursor = (*cursor).max(to),
                }
            }
        }
        Ok(())
    }

    /// Feeds the emulator everything up to the log's end (from the ring,
    /// else the store) at the log's current size.
    async fn catch_up(&self, emulator: &mut Emulator, store: &Store) -> Result<(), StoreError> {
        let (target, size) = {
            let inner = self.lock();
            (inner.end, inner.size)
        };
        if target.saturating_sub(emulator.offset) > CATCH_UP_TAIL {
            let tail = target - CATCH_UP_TAIL;
            let mut scan = ModeScan::default();
            scan.feed(emulator.parser.screen().state_formatted().as_bytes());
            let mut cursor = emulator.offset;
            self.each_piece(store, &mut cursor, tail, |data| scan.feed(data))
                .await?;
            emulator.parser =
                vt100::Parser::new(nz(size.rows), nz(size.cols), MAX_SCROLLBACK as usize);
            emulator.parser.process(&scan.replay());
            emulator.offset = tail;
            emulator.rendered = None;
        }
        let (rows, cols) = emulator.parser.screen().size();
        if (rows, cols) != (nz(size.rows), nz(size.cols)) {
            emulator
                .parser
                .screen_mut()
                .set_size(nz(size.rows), nz(size.cols));
        }
        let Emulator { parser, offset, .. } = emulator;
        self.each_piece(store, offset, target, |data| parser.process(data))
            .await
    }

    /// The current screen, rebuilt by the server-side emulator: the stream
    /// offset it stands at, the terminal size, and escape sequences that redraw it.
    pub async fn screen_snapshot(
        &self,
        store: &Store,
    ) -> Result<(u64, TermSize, String), StoreError> {
        let mut emulator = self.emulator.lock().await;
        self.catch_up(&mut emulator, store).await?;
        let (rows, cols) = emulator.parser.screen().size();
        let size = TermSize {
            cols: cols.get(),
            rows: rows.get(),
        };
        let screen = emulator.parser.screen().state_formatted();
        Ok((emulator.offset, size, screen))
    }

    /// The current screen as styled rows, rendered once per change and
    /// shared by every screen viewer.
    pub async fn screen_render(&self, store: &Store) -> Result<Arc<Rendered>, StoreError> {
        let mut emulator = self.emulator.lock().await;
        self.catch_up(&mut emulator, store).await?;
        let offset = emulator.offset;
        let size = emulator.parser.screen().size();
        if let Some(cached) = &emulator.rendered {
            if cached.offset == offset && (nz(cached.size.rows), nz(cached.size.cols)) == size {
                return Ok(cached.clone());
            }
        }
        let rendered = Arc::new(crate::screen::render(emulator.parser.screen(), offset));
        emulator.rendered = Some(rendered.clone());
        Ok(rendered)
    }

    /// Up to `lines` lines that scrolled off the top, and the screen.
    pub async fn scrollback(&self, store: &Store, lines: usize) -> Result<Scrollback, StoreError> {
        let mut emulator = self.emulator.lock().await;
        self.catch_up(&mut emulator, store).await?;
        let offset = emulator.offset;
        Ok(crate::screen::scrollback_of(
            &mut emulator.parser,
            offset,
            lines,
        ))
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
            inner.evict(self.ring_cap);
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

    fn frame(offset: u64, data: &[u8]) -> Bytes {
        Bytes::from(DataFrame::output(SessionId(1), offset, data).encode())
    }

    /// Reads the ring from `cursor` on; `Behind` ends the walk.
    fn read_all(log: &SessionLog, mut cursor: u64) -> (Vec<u8>, Vec<(u64, u64)>, bool) {
        let mut out = Vec::new();
        let mut gaps = Vec::new();
        loop {
            match log.read(cursor) {
                ReadAt::Frame { frame } => {
                    let decoded = DataFrame::decode(&frame).unwrap();
                    assert_eq!(decoded.offset, cursor);
                    cursor += decoded.payload.len() as u64;
                    out.extend_from_slice(decoded.payload);
                }
                ReadAt::Gap { from, to, .. } => {
                    gaps.push((from, to));
                    cursor = to;
                }
                ReadAt::Behind => return (out, gaps, true),
                ReadAt::CaughtUp => return (out, gaps, false),
            }
        }
    }

    #[test]
    fn overlapping_replay_is_deduplicated_and_frames_are_shared() {
        let log = SessionLog::new(&row(), 1 << 20);
        let first = frame(0, b"hello ");
        let added = log.append(0, first.clone()).unwrap();
        assert_eq!((added.offset, &added.data[..]), (0, &b"hello "[..]));
        let added = log.append(3, frame(3, b"lo world")).unwrap();
        assert_eq!((added.offset, &added.data[..]), (6, &b"world"[..]));
        assert!(log.append(0, frame(0, b"hel")).is_none());
        assert_eq!(log.end(), 11);
        assert_eq!(read_all(&log, 0).0, b"hello world".to_vec());
        assert_eq!(read_all(&log, 8).0, b"rld".to_vec());
        // A reader at a frame boundary gets the very bytes that arrived.
        assert_eq!(log.read(0), ReadAt::Frame { frame: first });
    }

    #[test]
    fn holes_are_reported_as_gaps_never_skipped_silently() {
        let log = SessionLog::new(&row(), 1 << 20);
        log.append(0, frame(0, b"ab"));
        assert_eq!(log.gap(2, 6, "lost".into()), Some((2, 6)));
        let added = log.append(8, frame(8, b"cd")).unwrap();
        assert_eq!(added.hole.map(|h| (h.0, h.1)), Some((6, 8)));
        let (bytes, gaps, behind) = read_all(&log, 0);
        assert_eq!(bytes, b"abcd".to_vec());
        assert_eq!(gaps, vec![(2, 6), (6, 8)]);
        assert!(!behind);
        match log.read(3) {
            ReadAt::Gap { reason, from, to } => {
                assert_eq!((reason.as_str(), from, to), ("lost", 3, 6))
            }
            other => panic!("expected a gap, got {other:?}"),
        }
    }

    #[test]
    fn the_ring_drops_only_durable_bytes() {
        let log = SessionLog::new(&row(), 64);
        for i in 0..10u64 {
            log.append(i * 10, frame(i * 10, &[b'x'; 10]));
        }
        // Nothing is durable yet: everything stays, over the cap or not.
        assert_eq!(read_all(&log, 0).0.len(), 100);
        log.set_durable(50);
        assert_eq!(log.read(0), ReadAt::Behind);
        let (bytes, _, behind) = read_all(&log, 50);
        assert_eq!((bytes.len(), behind), (50, false));
        log.set_durable(100);
        log.finish(Ending::Exited(ExitStatus::code(0)));
        assert_eq!(log.read(99), ReadAt::Behind);
        assert_eq!(log.read(100), ReadAt::CaughtUp);
    }

    #[test]
    fn one_driver_at_a_time_unless_taken_over() {
        let log = SessionLog::new(&row(), 1024);
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
        let log = SessionLog::new(&row(), 1024);
        let mut rx = log.subscribe();
        rx.borrow_and_update();
        log.append(0, frame(0, b"x"));
        assert!(rx.has_changed().unwrap());
    }
}
