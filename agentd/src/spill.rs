//! Spill files: where a session's oldest unacknowledged output goes once it
//! no longer fits in memory, under one disk cap shared by the whole sandbox.
//!
//! A session's spilled bytes form one append-only log, cut into segment
//! files of a bounded size (`session-<id>-<n>.spill` in the state
//! directory). Acknowledged bytes are reclaimed a whole file at a time: a
//! file whose every byte is acknowledged is removed, or truncated to nothing
//! and reused if it is the one being appended to. Cutting the log into
//! segments keeps a session whose acknowledgements always lag behind from
//! growing one file forever.
//!
//! The disk cap counts the files' real lengths (acknowledged bytes included
//! until their file goes), so it bounds what the sandbox's disk holds.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use paddock_protocol::SessionId;
use tracing::{debug, warn};

/// File names agentd spills to, removed wholesale at startup.
const SPILL_PREFIX: &str = "session-";
const SPILL_SUFFIX: &str = ".spill";

/// The largest segment file. Small enough that acknowledged bytes are
/// reclaimed soon; large enough that a big backlog needs few files.
const MAX_SEGMENT: u64 = 4 * 1024 * 1024;
/// The smallest segment file.
const MIN_SEGMENT: u64 = 64 * 1024;

/// The state directory and the sandbox-wide disk budget; shared by every
/// session's [`Spill`].
#[derive(Debug)]
pub(crate) struct SpillDir {
    dir: PathBuf,
    cap: u64,
    /// Bytes in spill files (or reserved for a write in progress).
    used: AtomicU64,
    /// Numbers spill files so no two are ever named alike, even for two
    /// sessions that reuse an id.
    serial: AtomicU64,
    segment: u64,
}

impl SpillDir {
    /// Creates `dir` (mode 0700) if missing and removes spill files left by
    /// an earlier agentd: sessions never survive a restart of agentd.
    pub(crate) fn open(dir: &Path, cap: u64) -> io::Result<Arc<SpillDir>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(SPILL_PREFIX) && name.ends_with(SPILL_SUFFIX) {
                debug!(path = %entry.path().display(), "removing a stale spill file");
                std::fs::remove_file(entry.path())?;
            }
        }
        // A segment is an eighth of the cap, so reclaiming whole files can
        // never leave most of the cap to bytes already acknowledged.
        let segment = (cap / 8).clamp(MIN_SEGMENT, MAX_SEGMENT);
        Ok(Arc::new(SpillDir::with_segment(dir, cap, segment)))
    }

    pub(crate) fn with_segment(dir: &Path, cap: u64, segment: u64) -> SpillDir {
        SpillDir {
            dir: dir.to_path_buf(),
            cap,
            used: AtomicU64::new(0),
            serial: AtomicU64::new(0),
            segment: segment.max(1),
        }
    }

    /// The sandbox-wide cap on spilled bytes.
    pub(crate) fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes spilled across every session.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Bytes that can still be spilled under the cap.
    pub(crate) fn available(&self) -> u64 {
        self.cap.saturating_sub(self.used())
    }

    #[cfg(test)]
    pub(crate) fn has_room(&self) -> bool {
        self.available() > 0
    }

    /// Reserves up to `want` bytes of the cap; returns how many it got.
    fn reserve(&self, want: u64) -> u64 {
        let mut granted = 0;
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                granted = want.min(self.cap.saturating_sub(used));
                Some(used + granted)
            });
        granted
    }

    fn release(&self, bytes: u64) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    fn new_path(&self, id: SessionId) -> PathBuf {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{SPILL_PREFIX}{}-{n}{SPILL_SUFFIX}", id.0))
    }
}

/// One segment file: the log bytes `[start, start + len)`.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    start: u64,
    len: u64,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// A spill write failed after `written` bytes of it had been appended.
#[derive(Debug)]
pub(crate) struct PartialWrite {
    pub written: u64,
    pub err: io::Error,
}

/// One session's spilled bytes, addressed by log position (a count of the
/// session's retained bytes, see `retention.rs`). Positions are contiguous
/// from the first segment to the last. Dropping it removes its files.
#[derive(Debug)]
pub(crate) struct Spill {
    id: SessionId,
    dir: Arc<SpillDir>,
    segments: VecDeque<Segment>,
}

impl Spill {
    pub(crate) fn new(id: SessionId, dir: Arc<SpillDir>) -> Self {
        Spill {
            id,
            dir,
            segments: VecDeque::new(),
        }
    }

    pub(crate) fn dir(&self) -> &SpillDir {
        &self.dir
    }

    /// Whether no byte is spilled (though an empty file may be kept for reuse).
    pub(crate) fn is_empty(&self) -> bool {
        self.segments.iter().all(|s| s.len == 0)
    }

    /// The bytes this session's files hold on disk.
    pub(crate) fn disk_len(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Reserves room for up to `want` more bytes under the shared cap.
    pub(crate) fn reserve(&self, want: u64) -> u64 {
        self.dir.reserve(want)
    }

    /// Gives back a reservation that was not written.
    pub(crate) fn unreserve(&self, bytes: u64) {
        self.dir.release(bytes)
    }

    /// Appends `parts` (already reserved) as the log bytes from `pos`, which
    /// must be where the spilled log ends (anything if nothing is spilled),
    /// starting a new segment file whenever the last one is full. On error
    /// the bytes before the failed write stay appended: `written` says how many.
    pub(crate) fn append(&mut self, mut pos: u64, parts: [&[u8]; 2]) -> Result<(), PartialWrite> {
        let mut written = 0;
        for mut part in parts {
            while !part.is_empty() {
                let n = self
                    .write_tail(pos, part)
                    .map_err(|err| PartialWrite { written, err })?;
                part = &part[n..];
                pos += n as u64;
                written += n as u64;
            }
        }
        Ok(())
    }

    /// Writes as much of `bytes` as fits in the last segment (a new one if
    /// it is full) at log position `pos`; returns how much it wrote.
    fn write_tail(&mut self, pos: u64, bytes: &[u8]) -> io::Result<usize> {
        match self.segments.back_mut() {
            Some(last) if last.len == 0 => last.start = pos,
            Some(last) if last.len < self.dir.segment => {
                debug_assert_eq!(last.end(), pos, "the spilled log stays contiguous");
            }
            _ => {
                let path = self.dir.new_path(self.id);
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                self.segments.push_back(Segment {
                    path,
                    file,
                    start: pos,
                    len: 0,
                });
            }
        }
        let Some(last) = self.segments.back_mut() else {
            return Err(io::Error::other("no spill segment to write"));
        };
        let n = ((self.dir.segment - last.len) as usize).min(bytes.len());
        if let Err(err) = last.file.write_all_at(&bytes[..n], last.len) {
            // Take back whatever part of it did land.
            let _ = last.file.set_len(last.len);
            return Err(err);
        }
        last.len += n as u64;
        Ok(n)
    }

    /// Reads the log bytes from `pos` into `buf` (which must lie within
    /// what is spilled), across segment files as needed.
    pub(crate) fn read_exact_at(&self, mut pos: u64, mut buf: &mut [u8]) -> io::Result<()> {
        let first = self.segments.partition_point(|s| s.end() <= pos);
        for segment in self.segments.range(first..) {
            if buf.is_empty() {
                break;
            }
            if pos < segment.start || pos >= segment.end() {
                break;
            }
            let n = ((segment.end() - pos) as usize).min(buf.len());
            let (head, rest) = buf.split_at_mut(n);
            segment.file.read_exact_at(head, pos - segment.start)?;
            pos += n as u64;
            buf = rest;
        }
        if buf.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("spilled log position {pos} is not on disk"),
            ))
        }
    }

    /// Reclaims every file whose bytes all lie below `pos`: the last one is
    /// truncated and kept for reuse, the others are removed.
    pub(crate) fn discard_below(&mut self, pos: u64) {
        while let Some(first) = self.segments.front() {
            if first.len == 0 || first.end() > pos {
                break;
            }
            if self.segments.len() == 1 {
                let last = &mut self.segments[0];
                match last.file.set_len(0) {
                    Ok(()) => {
                        self.dir.release(last.len);
                        last.len = 0;
                    }
                    Err(err) => {
                        warn!(path = %last.path.display(), error = %err, "could not truncate a spill file");
                        if let Some(segment) = self.segments.pop_front() {
                            self.remove(segment);
                        }
                    }
                }
                break;
            }
            if let Some(segment) = self.segments.pop_front() {
                self.remove(segment);
            }
        }
    }

    fn remove(&self, segment: Segment) {
        drop(segment.file);
        if let Err(err) = std::fs::remove_file(&segment.path) {
            warn!(path = %segment.path.display(), error = %err, "could not remove a spill file");
        }
        self.dir.release(segment.len);
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        while let Some(segment) = self.segments.pop_front() {
            self.remove(segment);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spill(dir: &Path, cap: u64, segment: u64) -> Spill {
        Spill::new(
            SessionId(1),
            Arc::new(SpillDir::with_segment(dir, cap, segment)),
        )
    }

    fn files(dir: &Path) -> Vec<(String, u64)> {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn segments_rotate_read_across_and_are_reclaimed_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spill = spill(tmp.path(), 100, 4);
        assert_eq!(spill.reserve(10), 10);
        // Files: 50..54, 54..58, 58..60.
        spill.append(50, [b"abc", b"def"]).unwrap();
        spill.append(56, [b"gh", b""]).unwrap();
        spill.append(58, [b"ij", b""]).unwrap();
        assert_eq!(files(tmp.path()).len(), 3);
        assert_eq!(spill.disk_len(), 10);
        let mut buf = [0u8; 8];
        spill.read_exact_at(51, &mut buf).unwrap();
        assert_eq!(&buf, b"bcdefghi");
        assert!(spill.read_exact_at(59, &mut [0u8; 2]).is_err());

        // 54..58 is not yet wholly below 57.
        spill.discard_below(57);
        assert_eq!(spill.disk_len(), 6);
        spill.discard_below(58);
        assert_eq!(spill.disk_len(), 2);
        assert_eq!(spill.dir().used(), 2);
        assert_eq!(files(tmp.path()).len(), 1);
        // The last file is truncated and reused, not removed.
        spill.discard_below(60);
        assert!(spill.is_empty());
        assert_eq!(spill.dir().used(), 0);
        let left = files(tmp.path());
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].1, 0);
        assert_eq!(spill.reserve(2), 2);
        spill.append(70, [b"xy", b""]).unwrap();
        assert_eq!(files(tmp.path()), [(left[0].0.clone(), 2)]);
        let mut buf = [0u8; 2];
        spill.read_exact_at(70, &mut buf).unwrap();
        assert_eq!(&buf, b"xy");

        drop(spill);
        assert!(files(tmp.path()).is_empty());
    }

    #[test]
    fn the_cap_is_shared_and_reservations_are_partial() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Arc::new(SpillDir::with_segment(tmp.path(), 10, 64));
        let a = Spill::new(SessionId(1), dir.clone());
        let b = Spill::new(SessionId(2), dir.clone());
        assert_eq!(a.reserve(6), 6);
        assert_eq!(b.reserve(6), 4);
        assert_eq!(b.reserve(1), 0);
        assert!(!dir.has_room());
        a.unreserve(6);
        assert_eq!(dir.used(), 4);
        assert!(dir.has_room());
    }

    #[test]
    fn opening_creates_the_directory_and_removes_stale_spill_files() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::write(state.join("session-3-0.spill"), b"old").unwrap();
        std::fs::write(state.join("keep.txt"), b"mine").unwrap();
        SpillDir::open(&state, 1024).unwrap();
        assert_eq!(files(&state), [("keep.txt".to_owned(), 4)]);
        let fresh = tmp.path().join("a/b");
        SpillDir::open(&fresh, 1024).unwrap();
        assert!(fresh.is_dir());
    }
}
