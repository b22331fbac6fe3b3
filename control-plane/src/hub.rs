//! The agent hub: which sandboxes are connected, how to reach each one, the
//! requests waiting for an agent's answer, and the live session logs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use paddock_protocol::{ControlToAgent, ErrorCode, RequestId, SandboxId, SessionId};
use tokio::sync::{mpsc, oneshot};

use crate::fanout::SessionLog;

/// What the hub hands an agent connection's writer task.
#[derive(Debug)]
pub enum Outgoing {
    Text(String),
    Binary(Vec<u8>),
    Close(u16, String),
}

/// An agent's answer to a request.
#[derive(Debug)]
pub enum AgentReply {
    Opened { pid: Option<u32> },
    Done,
    Tool(Box<paddock_protocol::ToolOutput>),
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("sandbox {0} is not connected")]
    Disconnected(SandboxId),
    #[error("sandbox {0} did not answer in time")]
    Timeout(SandboxId),
    #[error("{message}")]
    Refused { code: ErrorCode, message: String },
}

type Pending = Arc<Mutex<HashMap<RequestId, oneshot::Sender<Result<AgentReply, HubError>>>>>;

/// Acks waiting to be sent to one agent, coalesced: however far the writer
/// falls behind, this holds at most one offset per session.
#[derive(Debug, Default)]
pub struct AckSlot {
    pending: Mutex<PendingAcks>,
    notify: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct PendingAcks {
    offsets: HashMap<SessionId, u64>,
    exits: Vec<SessionId>,
}

impl AckSlot {
    pub fn ack(&self, session: SessionId, offset: u64) {
        let mut pending = lock(&self.pending);
        let slot = pending.offsets.entry(session).or_insert(offset);
        *slot = (*slot).max(offset);
        drop(pending);
        self.notify.notify_one();
    }

    pub fn exit_recorded(&self, session: SessionId) {
        lock(&self.pending).exits.push(session);
        self.notify.notify_one();
    }

    pub async fn wait(&self) {
        self.notify.notified().await
    }

    /// The messages to send now: acks first, then exits (an exit's final ack
    /// must reach agentd before it forgets the session).
    pub fn take(&self) -> Vec<ControlToAgent> {
        let mut pending = lock(&self.pending);
        let mut out: Vec<ControlToAgent> = pending
            .offsets
            .drain()
            .map(|(session_id, offset)| ControlToAgent::Ack { session_id, offset })
            .collect();
        out.extend(
            pending
                .exits
                .drain(..)
                .map(|session_id| ControlToAgent::ExitRecorded { session_id }),
        );
        out
    }
}

/// One live agent connection as the rest of the control plane sees it.
#[derive(Debug, Clone)]
pub struct AgentLink {
    pub conn_id: u64,
    /// Bounded: when an agent cannot keep up, senders wait (input and requests
    /// are small; output flows the other way).
    pub tx_out: mpsc::Sender<Outgoing>,
    pub pending: Pending,
    pub acks: Arc<AckSlot>,
    last_seen_ms: Arc<AtomicU64>,
}

impl AgentLink {
    pub fn new(conn_id: u64, tx_out: mpsc::Sender<Outgoing>) -> Self {
        let link = AgentLink {
            conn_id,
            tx_out,
            pending: Arc::default(),
            acks: Arc::default(),
            last_seen_ms: Arc::default(),
        };
        link.seen();
        link
    }

    /// Notes that the agent just sent something.
    pub fn seen(&self) {
        let ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    pub fn last_seen(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(self.last_seen_ms.load(Ordering::Relaxed))
    }

    /// Completes the request `id` with `reply`; unknown ids are ignored.
    pub fn complete(&self, id: RequestId, reply: Result<AgentReply, HubError>) {
        let waiter = lock(&self.pending).remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.send(reply);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
pub struct Hub {
    agents: Mutex<HashMap<SandboxId, AgentLink>>,
    logs: Mutex<HashMap<SessionId, Arc<SessionLog>>>,
    next_id: AtomicU64,
}

impl Hub {
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a connection, returning the one it replaces, if any.
    pub fn register(&self, sandbox: SandboxId, link: AgentLink) -> Option<AgentLink> {
        lock(&self.agents).insert(sandbox, link)
    }

    /// Removes the connection `conn_id` of `sandbox` if it is still the current one.
    pub fn unregister(&self, sandbox: &SandboxId, conn_id: u64) -> bool {
        let mut agents = lock(&self.agents);
        if agents.get(sandbox).is_some_and(|l| l.conn_id == conn_id) {
            agents.remove(sandbox);
            return true;
        }
        false
    }

    pub fn link(&self, sandbox: &SandboxId) -> Option<AgentLink> {
        lock(&self.agents).get(sandbox).cloned()
    }

    pub fn connected(&self) -> Vec<SandboxId> {
        lock(&self.agents).keys().cloned().collect()
    }

    /// Sends a request built around a fresh request id and waits for the answer.
    pub async fn request(
        &self,
        sandbox: &SandboxId,
        timeout: Duration,
        make: impl FnOnce(RequestId) -> ControlToAgent,
    ) -> Result<AgentReply, HubError> {
        let link = self
            .link(sandbox)
            .ok_or_else(|| HubError::Disconnected(sandbox.clone()))?;
        let id = RequestId(self.next_id());
        let (tx_reply, rx_reply) = oneshot::channel();
        lock(&link.pending).insert(id, tx_reply);
        let sent = link.tx_out.send(Outgoing::Text(make(id).encode())).await;
        if sent.is_err() {
            lock(&link.pending).remove(&id);
            return Err(HubError::Disconnected(sandbox.clone()));
        }
        match tokio::time::timeout(timeout, rx_reply).await {
            Ok(Ok(reply)) => reply,
            // The connection ended and dropped every waiter.
            Ok(Err(_)) => Err(HubError::Disconnected(sandbox.clone())),
            Err(_) => {
                lock(&link.pending).remove(&id);
                Err(HubError::Timeout(sandbox.clone()))
            }
        }
    }

    /// Forwards an encoded input frame to the sandbox's agent.
    pub async fn send_input(&self, sandbox: &SandboxId, frame: Vec<u8>) -> Result<(), HubError> {
        let link = self
            .link(sandbox)
            .ok_or_else(|| HubError::Disconnected(sandbox.clone()))?;
        link.tx_out
            .send(Outgoing::Binary(frame))
            .await
            .map_err(|_| HubError::Disconnected(sandbox.clone()))
    }

    pub fn log(&self, id: SessionId) -> Option<Arc<SessionLog>> {
        lock(&self.logs).get(&id).cloned()
    }

    /// The log of `id`, created by `make` if there is none yet.
    pub fn log_or_insert(
        &self,
        id: SessionId,
        make: impl FnOnce() -> SessionLog,
    ) -> Arc<SessionLog> {
        lock(&self.logs)
            .entry(id)
            .or_insert_with(|| Arc::new(make()))
            .clone()
    }

    /// Sessions whose log has not ended yet.
    pub fn live_sessions(&self) -> usize {
        lock(&self.logs)
            .values()
            .filter(|log| log.snapshot().ending.is_none())
            .count()
    }

    /// Bytes received but not yet stored (so not yet acked), over every log.
    pub fn ack_lag(&self) -> u64 {
        lock(&self.logs)
            .values()
            .map(|log| log.end().saturating_sub(log.durable()))
            .sum()
    }

    /// Sessions of `sandbox` whose log has not ended yet.
    pub fn open_sessions(&self, sandbox: &SandboxId) -> usize {
        lock(&self.logs)
            .values()
            .filter(|log| &log.sandbox_id == sandbox && log.snapshot().ending.is_none())
            .count()
    }

    pub fn remove_log(&self, id: SessionId) {
        lock(&self.logs).remove(&id);
    }
}
