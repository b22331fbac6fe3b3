//! A session's unacknowledged output: the stream offsets `[acked, next)`,
//! held until the control plane says it has stored them.
//!
//! The retained bytes form a log: the oldest in spill files (`spill.rs`),
//! the newest in memory, never more in memory than the memory bound (plus
//! one read chunk while connected). Only when the sandbox's disk cap is
//! reached while the control plane is unreachable are new bytes dropped;
//! the loss is kept as a gap piece in the stream, sent in order like the
//! bytes around it, until it too is acknowledged.
//!
//! Two coordinates: a stream *offset* numbers every byte the PTY produced,
//! dropped ones included; a log *position* numbers retained bytes only, so
//! the spill files and memory never hold a hole.

use std::collections::VecDeque;
use std::io;

use tracing::warn;

use crate::spill::Spill;

/// Memory kept allocated for a quiet session's queue.
const MIN_CAPACITY: usize = 64 * 1024;

/// What to do with output that fits neither in memory nor on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Drop the newest bytes and record a gap (no connection: nobody can
    /// acknowledge anything, so waiting would only stall the program).
    Drop,
    /// Keep them in memory beyond the bound; the caller stops reading until
    /// acknowledgements make room (connected: flow control).
    Keep,
}

/// Why output was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GapCause {
    /// The sandbox-wide disk cap was reached while disconnected.
    DiskCap,
    /// Writing a spill file failed while disconnected.
    SpillWrite,
    /// Reading a spill file back failed.
    SpillRead,
    /// The control plane asked for bytes it had already acknowledged.
    Acknowledged,
}

impl GapCause {
    /// The gap's reason on the wire; `cap` is the sandbox's disk cap.
    pub(crate) fn reason(self, cap: u64) -> String {
        match self {
            GapCause::DiskCap => format!(
                "agentd disk cap of {cap} bytes exceeded while the control plane was unreachable"
            ),
            GapCause::SpillWrite => {
                "agentd could not write its spill file while the control plane was unreachable"
                    .to_owned()
            }
            GapCause::SpillRead => "agentd could not read back its spill file".to_owned(),
            GapCause::Acknowledged => {
                "already acknowledged as stored; agentd no longer holds it".to_owned()
            }
        }
    }
}

/// A stretch of the retained stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    /// Retained bytes: offsets `[offset, offset + len)` at log positions from `pos`.
    Data { offset: u64, pos: u64, len: u64 },
    /// Lost bytes `[from, to)`.
    Gap { from: u64, to: u64, cause: GapCause },
}

impl Piece {
    fn start(&self) -> u64 {
        match *self {
            Piece::Data { offset, .. } => offset,
            Piece::Gap { from, .. } => from,
        }
    }

    fn end(&self) -> u64 {
        match *self {
            Piece::Data { offset, len, .. } => offset + len,
            Piece::Gap { to, .. } => to,
        }
    }
}

/// What lies at an offset, ready to send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outgoing {
    Data { offset: u64, bytes: Vec<u8> },
    Gap { from: u64, to: u64, cause: GapCause },
}

/// What a push did.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Newest bytes dropped.
    pub dropped: u64,
    /// Whether those opened a new gap (rather than growing the last one).
    pub new_gap: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Retention {
    /// Everything below was acknowledged and discarded.
    acked: u64,
    /// The offset of the next byte the PTY produces.
    next: u64,
    /// Cover `[acked, next)` exactly, in order; no two data pieces touch.
    pieces: VecDeque<Piece>,
    /// The newest retained bytes: log positions `[mem_start, log_end)`.
    memory: VecDeque<u8>,
    mem_start: u64,
    log_end: u64,
    memory_bound: usize,
    /// The older retained bytes, ending at `mem_start`; its first file may
    /// still hold acknowledged bytes until the whole file is.
    spill: Spill,
    /// Set when a spill write failed: this session spills no more.
    spill_failed: bool,
}

impl Retention {
    pub(crate) fn new(memory_bound: usize, spill: Spill) -> Self {
        Retention {
            acked: 0,
            next: 0,
            pieces: VecDeque::new(),
            memory: VecDeque::new(),
            mem_start: 0,
            log_end: 0,
            memory_bound: memory_bound.max(1),
            spill,
            spill_failed: false,
        }
    }

    /// The lowest offset still held (as data or as a gap record).
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The offset the next byte will have.
    pub(crate) fn next(&self) -> u64 {
        self.next
    }

    /// Bytes held in memory.
    pub(crate) fn memory_len(&self) -> usize {
        self.memory.len()
    }

    /// Bytes this session's spill files hold on disk.
    pub(crate) fn spilled(&self) -> u64 {
        self.spill.disk_len()
    }

    /// The sandbox-wide disk cap, for gap reasons.
    pub(crate) fn disk_cap(&self) -> u64 {
        self.spill.dir().cap()
    }

    /// Whether another chunk can be retained without dropping it: memory
    /// is below the bound, or the disk can take what is above it and more.
    /// Pulling a chunk only then keeps memory within the bound plus one
    /// chunk while connected (a race with another session for the last of
    /// the disk cap may add one more, once).
    pub(crate) fn has_room(&self) -> bool {
        let excess = self.memory.len().saturating_sub(self.memory_bound) as u64;
        self.memory.len() < self.memory_bound
            || (!self.spill_failed && self.spill.dir().available() > excess)
    }

    /// Whether pushing `len` bytes may touch the disk.
    pub(crate) fn push_touches_disk(&self, len: usize) -> bool {
        self.memory.len() + len > self.memory_bound
    }

    /// Whether acknowledging may touch the disk.
    pub(crate) fn ack_touches_disk(&self) -> bool {
        !self.spill.is_empty()
    }

    /// Whether reading at `offset` may touch the disk.
    pub(crate) fn read_touches_disk(&self, offset: u64) -> bool {
        !self.spill.is_empty() && self.pos_at(offset) < self.mem_start
    }

    /// The log position of the first retained byte.
    fn first_pos(&self) -> u64 {
        self.pieces
            .iter()
            .find_map(|p| match *p {
                Piece::Data { pos, .. } => Some(pos),
                Piece::Gap { .. } => None,
            })
            .unwrap_or(self.log_end)
    }

    /// The index of the piece holding `offset`, if any.
    fn piece_at(&self, offset: u64) -> Option<usize> {
        let i = self.pieces.partition_point(|p| p.end() <= offset);
        (i < self.pieces.len() && self.pieces[i].start() <= offset).then_some(i)
    }

    /// The log position of the first retained byte at or after `offset`.
    fn pos_at(&self, offset: u64) -> u64 {
        let Some(i) = self.piece_at(offset) else {
            return if offset < self.acked {
                self.first_pos()
            } else {
                self.log_end
            };
        };
        match self.pieces[i] {
            Piece::Data {
                offset: start, pos, ..
            } => pos + (offset - start),
            Piece::Gap { .. } => self
                .pieces
                .range(i..)
                .find_map(|p| match *p {
                    Piece::Data { pos, .. } => Some(pos),
                    Piece::Gap { .. } => None,
                })
                .unwrap_or(self.log_end),
        }
    }

    /// Retained bytes (gaps take none): memory and spill, acknowledged
    /// bytes left in a spill file not counted.
    pub(crate) fn retained(&self) -> u64 {
        self.log_end - self.first_pos()
    }

    /// Retained bytes (gaps take none) in `[acked, sent)`: what is in flight
    /// when everything below `sent` was sent.
    pub(crate) fn in_flight(&self, sent: u64) -> u64 {
        self.pos_at(sent) - self.first_pos()
    }

    /// Appends PTY output. Beyond the memory bound the oldest bytes spill to
    /// disk; what fits nowhere is dropped (newest first) or kept, as `when_full` says.
    pub(crate) fn push(&mut self, data: &[u8], when_full: WhenFull) -> Pushed {
        if data.is_empty() {
            return Pushed::default();
        }
        let len = data.len() as u64;
        let (offset, pos) = (self.next, self.log_end);
        self.next += len;
        self.log_end += len;
        let need = self.memory.len() + data.len();
        if need > self.memory.capacity() {
            // Grow by doubling, but never allocate beyond what the bound
            // (plus this chunk) can require.
            let ceiling = (self.memory_bound + data.len()).max(need);
            let target = (self.memory.capacity() * 2).clamp(need, ceiling);
            self.memory.reserve_exact(target - self.memory.len());
        }
        self.memory.extend(data);
        match self.pieces.back_mut() {
            Some(Piece::Data {
                offset: o,
                pos: p,
                len: l,
            }) if *o + *l == offset && *p + *l == pos => *l += len,
            _ => self.pieces.push_back(Piece::Data { offset, pos, len }),
        }

        let over = self.memory.len().saturating_sub(self.memory_bound);
        if over > 0 {
            self.spill_oldest(over as u64);
        }
        let still_over = self.memory.len().saturating_sub(self.memory_bound);
        if still_over == 0 || when_full == WhenFull::Keep {
            return Pushed::default();
        }
        // Memory held at most the bound before this push, or one chunk more
        // (kept while connected); the excess is dropped from the new bytes.
        let dropped = still_over.min(data.len());
        self.memory.truncate(self.memory.len() - dropped);
        let dropped = dropped as u64;
        self.log_end -= dropped;
        if let Some(Piece::Data { len, .. }) = self.pieces.back_mut() {
            *len -= dropped;
            if *len == 0 {
                self.pieces.pop_back();
            }
        }
        let cause = if self.spill_failed {
            GapCause::SpillWrite
        } else {
            GapCause::DiskCap
        };
        let from = self.next - dropped;
        let new_gap = match self.pieces.back_mut() {
            Some(Piece::Gap { to, cause: c, .. }) if *to == from && *c == cause => {
                *to = self.next;
                false
            }
            _ => {
                self.pieces.push_back(Piece::Gap {
                    from,
                    to: self.next,
                    cause,
                });
                true
            }
        };
        Pushed { dropped, new_gap }
    }

    /// Moves up to `want` of the oldest memory bytes to the spill files.
    fn spill_oldest(&mut self, want: u64) {
        if self.spill_failed {
            return;
        }
        let granted = self.spill.reserve(want);
        if granted == 0 {
            return;
        }
        let n = granted as usize;
        let (a, b) = self.memory.as_slices();
        let head = &a[..n.min(a.len())];
        let tail = &b[..n - head.len()];
        let written = match self.spill.append(self.mem_start, [head, tail]) {
            Ok(()) => granted,
            Err(partial) => {
                self.spill.unreserve(granted - partial.written);
                self.spill_failed = true;
                warn!(error = %partial.err, "could not write a spill file; keeping output in memory only");
                partial.written
            }
        };
        self.memory.drain(..written as usize);
        self.mem_start += written;
    }

    /// The control plane stored everything below `offset`: discard it.
    /// Returns whether anything moved. An offset past the end counts as the end.
    pub(crate) fn ack(&mut self, offset: u64) -> bool {
        let offset = offset.min(self.next);
        if offset <= self.acked {
            return false;
        }
        self.acked = offset;
        while let Some(front) = self.pieces.front_mut() {
            if front.end() <= offset {
                self.pieces.pop_front();
                continue;
            }
            match front {
                Piece::Data {
                    offset: start,
                    pos,
                    len,
                } if *start < offset => {
                    let cut = offset - *start;
                    *start += cut;
                    *pos += cut;
                    *len -= cut;
                }
                Piece::Gap { from, .. } if *from < offset => *from = offset,
                _ => {}
            }
            break;
        }
        let keep = self.first_pos();
        if keep > self.mem_start {
            let n = (keep - self.mem_start) as usize;
            self.memory.drain(..n);
            self.mem_start = keep;
            let quiet = self.memory.len().max(MIN_CAPACITY);
            if self.memory.capacity() > 2 * quiet {
                self.memory.shrink_to(quiet);
            }
        }
        self.spill.discard_below(keep);
        true
    }

    /// What to send at `offset` (in `[acked, next)`, or below `acked` for a
    /// notice that it is gone): up to `max` bytes, or a gap.
    pub(crate) fn read(&self, offset: u64, max: usize) -> Outgoing {
        if offset < self.acked {
            return Outgoing::Gap {
                from: offset,
                to: self.acked,
                cause: GapCause::Acknowledged,
            };
        }
        let Some(i) = self.piece_at(offset) else {
            return Outgoing::Data {
                offset,
                bytes: Vec::new(),
            };
        };
        let (start, pos, len) = match self.pieces[i] {
            Piece::Gap { to, cause, .. } => {
                return Outgoing::Gap {
                    from: offset,
                    to,
                    cause,
                }
            }
            Piece::Data { offset, pos, len } => (offset, pos, len),
        };
        let skip = offset - start;
        let pos = pos + skip;
        let n = ((len - skip) as usize).min(max);
        let mut bytes = vec![0u8; n];
        let on_disk = (self.mem_start.saturating_sub(pos) as usize).min(n);
        if on_disk > 0 {
            if let Err(err) = self.read_spill(pos, &mut bytes[..on_disk]) {
                warn!(error = %err, offset, "could not read a spill file");
                return Outgoing::Gap {
                    from: offset,
                    to: offset + on_disk as u64,
                    cause: GapCause::SpillRead,
                };
            }
        }
        if on_disk < n {
            // The rest is in memory, from `pos` or from where the spill ends.
            let from_mem = (pos + on_disk as u64 - self.mem_start) as usize;
            for (dst, src) in bytes[on_disk..]
                .iter_mut()
                .zip(self.memory.range(from_mem..))
            {
                *dst = *src;
            }
        }
        Outgoing::Data { offset, bytes }
    }

    fn read_spill(&self, pos: u64, buf: &mut [u8]) -> io::Result<()> {
        self.spill.read_exact_at(pos, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use paddock_protocol::SessionId;

    use super::*;
    use crate::spill::SpillDir;

    fn queue(dir: &Path, memory: usize, disk: u64) -> Retention {
        let spill_dir = Arc::new(SpillDir::with_segment(dir, disk, 10));
        Retention::new(memory, Spill::new(SessionId(1), spill_dir))
    }

    /// Deterministic bytes: byte `i` of the stream is `i % 251`.
    fn stream(from: u64, len: usize) -> Vec<u8> {
        (from..from + len as u64).map(|i| (i % 251) as u8).collect()
    }

    fn disk_bytes(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    }

    /// Reads everything from `offset` as a sender would, frame by frame.
    fn read_all(q: &Retention, mut offset: u64, max: usize) -> (Vec<u8>, Vec<(u64, u64)>) {
        let (mut bytes, mut gaps) = (Vec::new(), Vec::new());
        while offset < q.next() {
            match q.read(offset, max) {
                Outgoing::Data {
                    offset: at,
                    bytes: b,
                } => {
                    assert_eq!(at, offset);
                    assert!(!b.is_empty() && b.len() <= max);
                    offset += b.len() as u64;
                    bytes.extend(b);
                }
                Outgoing::Gap { from, to, .. } => {
                    assert_eq!(from, offset);
                    gaps.push((from, to));
                    offset = to;
                }
            }
        }
        (bytes, gaps)
    }

    #[test]
    fn pushes_beyond_the_memory_bound_spill_and_read_back_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let mut q = queue(tmp.path(), 16, 1000);
        for chunk in stream(0, 100).chunks(7) {
            assert_eq!(q.push(chunk, WhenFull::Drop), Pushed::default());
            assert!(q.memory_len() <= 16);
        }
        assert_eq!((q.acked(), q.next()), (0, 100));
        assert_eq!(q.memory_len(), 16);
        assert_eq!(q.spilled(), 84);
        assert_eq!(disk_bytes(tmp.path()), 84);
        // From every offset, in every frame size: byte-exact across the seam.
        for from in 0..100 {
            for max in [1, 3, 16, 200] {
                let (bytes, gaps) = read_all(&q, from, max);
                assert!(gaps.is_empty());
                assert_eq!(
                    bytes,
                    stream(from, (100 - from) as usize),
                    "from {from} max {max}"
                );
            }
        }
        assert_eq!(
            q.read(80, 8),
            Outgoing::Data {
                offset: 80,
                bytes: stream(80, 8)
            }
        );
    }

    #[test]
    fn acks_free_memory_and_reclaim_spill_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut q = queue(tmp.path(), 16, 1000);
        q.push(&stream(0, 100), WhenFull::Drop);
        assert_eq!(q.in_flight(100), 100);
        assert!(q.ack(25));
        assert!(!q.ack(20), "acks only move forward");
        assert_eq!(q.acked(), 25);
        assert_eq!(q.in_flight(60), 35);
        // Segments of 10: the files holding 0..20 are gone, 20..30 stays.
        assert_eq!(q.spilled(), 64);
        assert_eq!(read_all(&q, 25, 9).0, stream(25, 75));
        assert!(q.ack(90));
        assert_eq!(q.spilled(), 0);
        assert_eq!(disk_bytes(tmp.path()), 0, "the last file is truncated");
        assert_eq!(q.memory_len(), 10);
        assert_eq!(read_all(&q, 90, 4).0, stream(90, 10));
        // The truncated file is reused by the next spill.
        q.push(&stream(100, 20), WhenFull::Drop);
        assert_eq!(q.spilled(), 14);
        assert_eq!(read_all(&q, 90, 64).0, stream(90, 30));
        assert!(q.ack(500), "an ack past the end counts as the end");
        assert_eq!((q.acked(), q.next(), q.memory_len()), (120, 120, 0));
        assert_eq!(disk_bytes(tmp.path()), 0);
        assert_eq!(q.in_flight(120), 0);
    }

    #[test]
    fn past_the_disk_cap_the_newest_bytes_become_one_growing_gap() {
        let tmp = tempfile::tempdir().unwrap();
        let mut q = queue(tmp.path(), 16, 30);
        assert_eq!(q.push(&stream(0, 40), WhenFull::Drop), Pushed::default());
        assert!(q.has_room());
        let first = q.push(&stream(40, 10), WhenFull::Drop);
        assert_eq!(
            first,
            Pushed {
                dropped: 4,
                new_gap: true
            }
        );
        assert!(!q.has_room());
        assert_eq!(
            q.push(&stream(50, 25), WhenFull::Drop),
            Pushed {
                dropped: 25,
                new_gap: false
            }
        );
        assert_eq!((q.next(), q.memory_len(), q.spilled()), (75, 16, 30));
        let (bytes, gaps) = read_all(&q, 0, 8);
        assert_eq!(gaps, [(46, 75)]);
        assert_eq!(bytes, stream(0, 46));
        match q.read(50, 8) {
            Outgoing::Gap { from, to, cause } => {
                assert_eq!((from, to, cause), (50, 75, GapCause::DiskCap));
                assert!(cause.reason(30).contains("disk cap of 30 bytes"));
            }
            other => panic!("expected a gap, got {other:?}"),
        }
        // Gaps hold no bytes: in flight counts retained bytes only.
        assert_eq!(q.in_flight(75), 46);

        // Connected again: acknowledgements make room; the stream goes on after the gap.
        assert!(q.ack(40));
        assert!(q.has_room());
        assert_eq!(q.push(&stream(75, 5), WhenFull::Keep), Pushed::default());
        let (bytes, gaps) = read_all(&q, 40, 100);
        assert_eq!(gaps, [(46, 75)]);
        assert_eq!(bytes, [stream(40, 6), stream(75, 5)].concat());
        // An ack inside the gap leaves its rest to send.
        assert!(q.ack(60));
        assert_eq!(read_all(&q, 60, 100), (stream(75, 5), vec![(60, 75)]));
        assert!(q.ack(80));
        assert_eq!(q.memory_len(), 0);
        assert_eq!(q.spilled(), 0);
    }

    #[test]
    fn keeping_when_full_exceeds_the_bound_instead_of_dropping() {
        let tmp = tempfile::tempdir().unwrap();
        let mut q = queue(tmp.path(), 8, 4);
        assert_eq!(q.push(&stream(0, 20), WhenFull::Keep), Pushed::default());
        assert_eq!((q.memory_len(), q.spilled()), (16, 4));
        assert!(!q.has_room());
        assert_eq!(read_all(&q, 0, 5).0, stream(0, 20));
        // Disconnected, the excess beyond one chunk is not made worse.
        let pushed = q.push(&stream(20, 3), WhenFull::Drop);
        assert_eq!(pushed.dropped, 3);
        assert_eq!(q.memory_len(), 16);
    }

    #[test]
    fn reading_below_the_ack_is_a_gap_notice() {
        let tmp = tempfile::tempdir().unwrap();
        let mut q = queue(tmp.path(), 8, 100);
        q.push(&stream(0, 20), WhenFull::Drop);
        q.ack(12);
        assert_eq!(
            q.read(5, 100),
            Outgoing::Gap {
                from: 5,
                to: 12,
                cause: GapCause::Acknowledged
            }
        );
        assert_eq!(q.in_flight(5), 0);
    }
}
