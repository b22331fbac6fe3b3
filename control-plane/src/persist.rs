//! The persister: one task that writes every session's output to the store
//! in batches and acks agentd only once a batch is committed.
//!
//! Agent connections hand it what they receive through one bounded channel;
//! when storage cannot keep up the channel fills, agent connections stop
//! reading their sockets, and agentd — whose unacked window fills too —
//! stops reading its PTYs. Watchers are never part of that loop (they read
//! the live ring, not the store). Batching is group commit: whatever arrived
//! while the previous batch was committing goes into the next one, and a
//! batch holding output waits up to [`LINGER`] for more (until
//! [`LINGER_BYTES`]): a flood arriving in 64 KiB frames would otherwise
//! commit, and fsync, once per frame. Only acks wait for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use paddock_protocol::{ExitStatus, SessionId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::fanout::SessionLog;
use crate::hub::Hub;
use crate::store::{SessionWrite, Store};

/// Messages queued for the store, per session in stream order.
#[derive(Debug)]
pub enum PersistMsg {
    Output {
        log: Arc<SessionLog>,
        offset: u64,
        data: Bytes,
        /// When the control plane received it, ms since the epoch.
        at_ms: i64,
    },
    Gap {
        log: Arc<SessionLog>,
        from: u64,
        to: u64,
        reason: String,
    },
    Exit {
        log: Arc<SessionLog>,
        status: ExitStatus,
    },
}

/// Messages waiting for the persister. Full: agent connections wait, which is
/// the flow control that eventually pauses agentd's PTY reads.
pub const PERSIST_QUEUE: usize = 512;
/// Bytes gathered into one transaction at most.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How long a batch holding output waits for more before committing, and
/// how much output ends the wait early.
pub const LINGER: Duration = Duration::from_millis(10);
const LINGER_BYTES: usize = 1024 * 1024;

pub fn spawn_persister(
    store: Store,
    hub: Arc<Hub>,
    mut rx_persist: mpsc::Receiver<PersistMsg>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let first = tokio::select! {
                msg = rx_persist.recv() => msg,
                // On shutdown, store what is already queued, then stop.
                _ = shutdown.cancelled() => rx_persist.try_recv().ok(),
            };
            let Some(first) = first else { break };
            let mut batch = Batch::default();
            batch.add(first);
            let linger_until = tokio::time::Instant::now() + LINGER;
            while batch.bytes < MAX_BATCH_BYTES {
                match rx_persist.try_recv() {
                    Ok(msg) => batch.add(msg),
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if batch.bytes == 0
                            || batch.bytes >= LINGER_BYTES
                            || shutdown.is_cancelled()
                        {
                            break;
                        }
                        match tokio::time::timeout_at(linger_until, rx_persist.recv()).await {
                            Ok(Some(msg)) => batch.add(msg),
                            Ok(None) | Err(_) => break,
                        }
                    }
                }
            }
            batch.commit(&store, &hub, &shutdown).await;
        }
        info!("persister stopped");
    })
}

#[derive(Default)]
struct Batch {
    writes: Vec<SessionWrite>,
    logs: Vec<Arc<SessionLog>>,
    index: HashMap<SessionId, usize>,
    bytes: usize,
}

impl Batch {
    fn entry(&mut self, log: &Arc<SessionLog>) -> &mut SessionWrite {
        let idx = *self.index.entry(log.id).or_insert_with(|| {
            self.writes.push(SessionWrite {
                tenant_id: log.tenant_id.clone(),
                session_id: Some(log.id),
                stored_offset: log.durable(),
                ..SessionWrite::default()
            });
            self.logs.push(log.clone());
            self.writes.len() - 1
        });
        &mut self.writes[idx]
    }

    fn add(&mut self, msg: PersistMsg) {
        match msg {
            PersistMsg::Output {
                log,
                offset,
                data,
                at_ms,
            } => {
                self.bytes += data.len();
                self.entry(&log).push_data_at(offset, &data, Some(at_ms));
            }
            PersistMsg::Gap {
                log,
                from,
                to,
                reason,
            } => self.entry(&log).push_gap(from, to, reason),
            PersistMsg::Exit { log, status } => self.entry(&log).exit = Some(status),
        }
    }

    /// Commits, retrying until it succeeds (nothing is acked meanwhile, so
    /// agentd keeps the data), then acks every session in the batch.
    async fn commit(self, store: &Store, hub: &Hub, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(50);
        while let Err(err) = store.write_output(&self.writes).await {
            error!(error = %err, bytes = self.bytes, "could not store terminal output; retrying");
            if shutdown.is_cancelled() {
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        metrics::counter!(crate::telemetry::STORED_BYTES).increment(self.bytes as u64);
        for (write, log) in self.writes.iter().zip(&self.logs) {
            log.set_durable(write.stored_offset);
            if let Some(link) = hub.link(&log.sandbox_id) {
                link.acks.ack(log.id, write.stored_offset);
                if write.exit.is_some() {
                    link.acks.exit_recorded(log.id);
                }
            }
        }
    }
}
