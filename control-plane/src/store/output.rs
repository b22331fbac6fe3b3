//! Durable terminal output: chunks and gap records per session, written in
//! batches (one transaction per batch, whatever the number of sessions) and
//! read back by offset range.

use std::borrow::Cow;

use bytes::Bytes;
use paddock_protocol::{ExitStatus, SessionId};
use sqlx::any::AnyRow;
use sqlx::Row;
use tokio::runtime::{Handle, RuntimeFlavor};

use super::Backend;
use super::QueryTimer;

use super::{now_rfc3339, Result, Store, StoreError};

/// Largest chunk stored in one row; consecutive output of a session within a
/// batch is coalesced up to this size.
pub const MAX_CHUNK: usize = 256 * 1024;

/// Output that arrived within this many milliseconds may share a chunk.
pub const TIME_GRAIN_MS: i64 = 10;

/// zstd's level for stored output: its fastest, which still shrinks
/// typical terminal output several times over.
const ZSTD_LEVEL: i32 = 1;

/// Chunks shorter than this are stored as they are.
const COMPRESS_MIN: usize = 512;

/// A chunk as stored, and its length as written (`raw_len`) when compressed.
type Encoded<'a> = (Cow<'a, [u8]>, Option<i64>);

/// A chunk as stored: compressed when that saves at least an eighth, with
/// its length as written (`raw_len`); else as it is, with `None`.
fn encode_chunk(data: &[u8]) -> Encoded<'_> {
    if data.len() >= COMPRESS_MIN {
        if let Ok(packed) = zstd::bulk::compress(data, ZSTD_LEVEL) {
            if packed.len() <= data.len() - data.len() / 8 {
                return (Cow::Owned(packed), Some(data.len() as i64));
            }
        }
    }
    (Cow::Borrowed(data), None)
}

/// The output a stored row holds: `data` as it is, or decompressed to
/// exactly `raw_len` bytes.
fn decode_chunk(data: Vec<u8>, raw_len: Option<i64>) -> Result<Vec<u8>> {
    let Some(raw_len) = raw_len else {
        return Ok(data);
    };
    let want = usize::try_from(raw_len)
        .map_err(|_| StoreError::Corrupt(format!("output chunk raw_len = {raw_len}")))?;
    let raw = zstd::bulk::decompress(&data, want)
        .map_err(|e| StoreError::Corrupt(format!("output chunk does not decompress: {e}")))?;
    if raw.len() != want {
        return Err(StoreError::Corrupt(format!(
            "output chunk decompresses to {} bytes, not {want}",
            raw.len()
        )));
    }
    Ok(raw)
}

/// The output of a fetched `output_chunks` row (columns `data`, `raw_len`).
fn row_output(row: &AnyRow) -> Result<Vec<u8>> {
    decode_chunk(row.try_get("data")?, row.try_get("raw_len")?)
}

/// Runs compression or decompression of a batch: on a multi-threaded
/// runtime (the control plane's) the worker hands its other tasks over
/// meanwhile; elsewhere (tests) it just runs.
fn cpu_bound<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A stretch of stored output, or a hole in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Bytes starting at `offset`; `frame` is the encoded output frame when
    /// the bytes came whole from the live ring (forwarded without re-encoding).
    Data {
        offset: u64,
        data: Bytes,
        frame: Option<Bytes>,
    },
    Gap {
        from: u64,
        to: u64,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub from: u64,
    pub to: u64,
    pub reason: String,
}

/// Everything one batch writes for one session.
#[derive(Debug, Default)]
pub struct SessionWrite {
    pub tenant_id: String,
    pub session_id: Option<SessionId>,
    /// `(start, bytes, received at ms since the epoch)`.
    pub chunks: Vec<(u64, Vec<u8>, Option<i64>)>,
    pub gaps: Vec<GapRow>,
    /// The durable end of the stream once this write commits.
    pub stored_offset: u64,
    /// The session's exit, recorded after its output.
    pub exit: Option<ExitStatus>,
}

impl SessionWrite {
    pub fn push_data(&mut self, offset: u64, data: &[u8]) {
        self.push_data_at(offset, data, None)
    }

    /// Like [`SessionWrite::push_data`], with the time the bytes arrived.
    /// Bytes that arrived more than [`TIME_GRAIN_MS`] apart stay in separate
    /// chunks, so replays (asciicast) keep their rhythm.
    pub fn push_data_at(&mut self, offset: u64, data: &[u8], at_ms: Option<i64>) {
        match self.chunks.last_mut() {
            Some((start, bytes, first_at))
                if *start + bytes.len() as u64 == offset
                    && bytes.len() + data.len() <= MAX_CHUNK
                    && match (*first_at, at_ms) {
                        (Some(a), Some(b)) => b - a <= TIME_GRAIN_MS,
                        _ => true,
                    } =>
            {
                bytes.extend_from_slice(data)
            }
            _ => self.chunks.push((offset, data.to_vec(), at_ms)),
        }
        self.stored_offset = self.stored_offset.max(offset + data.len() as u64);
    }

    pub fn push_gap(&mut self, from: u64, to: u64, reason: String) {
        self.gaps.push(GapRow { from, to, reason });
        self.stored_offset = self.stored_offset.max(to);
    }
}

impl Store {
    /// Writes a batch in one transaction. Nothing is durable (and nothing
    /// may be acked) until this returns `Ok`.
    pub async fn write_output(&self, writes: &[SessionWrite]) -> Result<()> {
        let _timed = QueryTimer::start("write_output");
        let encoded: Vec<Vec<Encoded<'_>>> = cpu_bound(|| {
            writes
                .iter()
                .map(|w| {
                    w.chunks
                        .iter()
                        .map(|(_, data, _)| encode_chunk(data))
                        .collect()
                })
                .collect()
        });
        let mut tx = self.pool.begin().await?;
        for (write, encoded) in writes.iter().zip(&encoded) {
            let Some(id) = write.session_id else { continue };
            let id = id.0 as i64;
            // One transaction for the whole batch; row-level security follows
            // each session's tenant as the batch moves through them.
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
                    .bind(&write.tenant_id)
                    .execute(&mut *tx)
                    .await?;
            }
            for ((start, _, at_ms), (stored, raw_len)) in write.chunks.iter().zip(encoded) {
                sqlx::query(
                    "INSERT INTO output_chunks (tenant_id, session_id, start, data, raw_len, at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                )
                .bind(&write.tenant_id)
                .bind(id)
                .bind(*start as i64)
                .bind(stored.as_ref())
                .bind(*raw_len)
                .bind(*at_ms)
                .execute(&mut *tx)
                .await?;
            }
            for gap in &write.gaps {
                sqlx::query(
                    "INSERT INTO output_gaps (tenant_id, session_id, start, stop, reason)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                )
                .bind(&write.tenant_id)
                .bind(id)
                .bind(gap.from as i64)
                .bind(gap.to as i64)
                .bind(&gap.reason)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(
                "UPDATE sessions SET stored_offset = CASE WHEN stored_offset < $1 THEN $1 ELSE stored_offset END
                 WHERE id = $2 AND tenant_id = $3",
            )
            .bind(write.stored_offset as i64)
            .bind(id)
            .bind(&write.tenant_id)
            .execute(&mut *tx)
            .await?;
            if let Some(status) = write.exit {
                sqlx::query(
                    "UPDATE sessions SET state = 'exited', ended_at = COALESCE(ended_at, $1),
                     exit_code = $2, exit_signal = $3, end_offset = $4 WHERE id = $5 AND tenant_id = $6",
                )
                .bind(now_rfc3339())
                .bind(status.code.map(i64::from))
                .bind(status.signal.map(i64::from))
                .bind(write.stored_offset as i64)
                .bind(id)
                .bind(&write.tenant_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Stored output of a session in `[from, to)`, at most about `max_bytes`
    /// of it, as data and gap pieces in order starting exactly at `from`. A
    /// hole with no gap record (which should not happen) is reported as one.
    pub async fn read_output(
        &self,
        tenant_id: &str,
        session: SessionId,
        from: u64,
        to: u64,
        max_bytes: usize,
    ) -> Result<Vec<Piece>> {
        let _timed = QueryTimer::start("read_output");
        if from >= to {
            return Ok(Vec::new());
        }
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            // The range on `start` keeps to the primary key; the length test
            // drops chunks that end before `from` before LIMIT counts them.
            "SELECT start, data, raw_len FROM output_chunks
             WHERE tenant_id = $1 AND session_id = $2 AND start > $3 AND start < $4
             AND start + COALESCE(raw_len, length(data)) > $5 ORDER BY start LIMIT $6",
        )
        .bind(tenant_id)
        .bind(session.0 as i64)
        .bind(from as i64 - MAX_CHUNK as i64)
        .bind(to as i64)
        .bind(from as i64)
        .bind((max_bytes / MAX_CHUNK).max(1) as i64 + 1)
        .fetch_all(&mut *tx)
        .await?;
        let gaps = gaps_in(&mut tx, tenant_id, session, from, to).await?;
        let chunks = cpu_bound(|| {
            rows.iter()
                .map(|row| Ok((row.try_get::<i64, _>("start")? as u64, row_output(row)?)))
                .collect::<Result<Vec<_>>>()
        })?;

        let mut pieces = Vec::new();
        let mut cursor = from;
        let mut total = 0;
        for (start, data) in chunks {
            let stop = start + data.len() as u64;
            if stop <= cursor {
                continue;
            }
            if start > cursor {
                push_holes(&mut pieces, &gaps, cursor, start);
                cursor = start;
            }
            let lo = (cursor - start) as usize;
            let hi = (to.min(stop) - start) as usize;
            let data = Bytes::from(data).slice(lo..hi);
            total += data.len();
            cursor += data.len() as u64;
            pieces.push(Piece::Data {
                offset: cursor - data.len() as u64,
                data,
                frame: None,
            });
            if cursor >= to || total >= max_bytes {
                return Ok(pieces);
            }
        }
        // Past the last chunk read: holes up to the next chunk, if gaps explain them.
        if pieces.is_empty() || total < max_bytes {
            let row = sqlx::query(
                "SELECT MIN(start) AS start FROM output_chunks
                 WHERE tenant_id = $1 AND session_id = $2 AND start >= $3 AND start < $4",
            )
            .bind(tenant_id)
            .bind(session.0 as i64)
            .bind(cursor as i64)
            .bind(to as i64)
            .fetch_one(&mut *tx)
            .await?;
            let next_chunk = row
                .try_get::<Option<i64>, _>("start")?
                .map_or(to, |s| s as u64);
            if next_chunk > cursor {
                push_holes(&mut pieces, &gaps, cursor, next_chunk);
            }
        }
        tx.commit().await?;
        Ok(pieces)
    }

    /// Gap records of a session overlapping `[from, to)`.
    pub async fn output_gaps(
        &self,
        tenant_id: &str,
        session: SessionId,
        from: u64,
        to: u64,
    ) -> Result<Vec<GapRow>> {
        let _timed = QueryTimer::start("output_gaps");
        let mut tx = self.begin(tenant_id).await?;
        let gaps = gaps_in(&mut tx, tenant_id, session, from, to).await?;
        tx.commit().await?;
        Ok(gaps)
    }
}

async fn gaps_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant_id: &str,
    session: SessionId,
    from: u64,
    to: u64,
) -> Result<Vec<GapRow>> {
    let rows = sqlx::query(
        "SELECT start, stop, reason FROM output_gaps
         WHERE tenant_id = $1 AND session_id = $2 AND stop > $3 AND start < $4 ORDER BY start",
    )
    .bind(tenant_id)
    .bind(session.0 as i64)
    .bind(from as i64)
    .bind(to as i64)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(GapRow {
                from: row.try_get::<i64, _>("start")? as u64,
                to: row.try_get::<i64, _>("stop")? as u64,
                reason: row.try_get("reason")?,
            })
        })
        .collect()
}

/// A stored chunk with the time it arrived, for replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedChunk {
    pub start: u64,
    pub data: Vec<u8>,
    pub at_ms: Option<i64>,
}

/// A recorded session event (a resize) at a stream offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub offset: u64,
    pub at_ms: i64,
    pub kind: String,
    pub data: String,
}

impl Store {
    /// Stored chunks with their times, from the one starting at or after `from`.
    pub async fn timed_chunks(
        &self,
        tenant_id: &str,
        session: SessionId,
        from: u64,
        limit: u32,
    ) -> Result<Vec<TimedChunk>> {
        let _timed = QueryTimer::start("timed_chunks");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT start, data, raw_len, at_ms FROM output_chunks
             WHERE tenant_id = $1 AND session_id = $2 AND start >= $3 ORDER BY start LIMIT $4",
        )
        .bind(tenant_id)
        .bind(session.0 as i64)
        .bind(from as i64)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        cpu_bound(|| {
            rows.iter()
                .map(|row| {
                    Ok(TimedChunk {
                        start: row.try_get::<i64, _>("start")? as u64,
                        data: row_output(row)?,
                        at_ms: row.try_get("at_ms")?,
                    })
                })
                .collect()
        })
    }

    pub async fn record_event(
        &self,
        tenant_id: &str,
        session: SessionId,
        event: &SessionEvent,
    ) -> Result<()> {
        let _timed = QueryTimer::start("record_event");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "INSERT INTO session_events (tenant_id, session_id, at_ms, stream_offset, kind, data)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(session.0 as i64)
        .bind(event.at_ms)
        .bind(event.offset as i64)
        .bind(&event.kind)
        .bind(&event.data)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn session_events(
        &self,
        tenant_id: &str,
        session: SessionId,
    ) -> Result<Vec<SessionEvent>> {
        let _timed = QueryTimer::start("session_events");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT stream_offset, at_ms, kind, data FROM session_events
             WHERE tenant_id = $1 AND session_id = $2 ORDER BY seq",
        )
        .bind(tenant_id)
        .bind(session.0 as i64)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(SessionEvent {
                    offset: row.try_get::<i64, _>("stream_offset")? as u64,
                    at_ms: row.try_get("at_ms")?,
                    kind: row.try_get("kind")?,
                    data: row.try_get("data")?,
                })
            })
            .collect()
    }
}

/// Gap pieces covering `[from, to)`, with the recorded reasons where known.
fn push_holes(pieces: &mut Vec<Piece>, gaps: &[GapRow], from: u64, to: u64) {
    let mut cursor = from;
    while cursor < to {
        let (stop, reason) = match gaps.iter().find(|g| g.from <= cursor && cursor < g.to) {
            Some(g) => (g.to.min(to), g.reason.clone()),
            None => {
                let next = gaps
                    .iter()
                    .filter(|g| g.from > cursor)
                    .map(|g| g.from)
                    .min()
                    .unwrap_or(to)
                    .min(to);
                (next, "output not stored".to_owned())
            }
        };
        pieces.push(Piece::Gap {
            from: cursor,
            to: stop,
            reason,
        });
        cursor = stop;
    }
}
