//! The events stream: what happens in a tenant (tasks, sandboxes,
//! sessions), pushed to `GET /v1/events` WebSocket subscribers.
//!
//! One broadcast channel for all tenants; each subscriber filters its own.
//! A subscriber that falls more than [`EVENT_BUFFER`] events behind is told
//! how many it missed (a `events.lagged` event) and carries on: events are
//! notifications, the durable record is the task events and the audit log.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use paddock_protocol::tasks::Event;
use paddock_protocol::{SandboxId, SessionId};
use tokio::sync::broadcast;

use crate::admission::ClientIp;
use crate::clock::now_rfc3339;
use crate::store::Principal;
use crate::AppState;

/// Events buffered for slow subscribers before they are told they lagged.
pub const EVENT_BUFFER: usize = 1024;

#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<(String, Event)>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(EVENT_BUFFER);
        EventBus { tx }
    }
}

/// What an event is about.
#[derive(Debug, Default, Clone)]
pub struct About {
    pub task_id: Option<String>,
    pub sandbox_id: Option<SandboxId>,
    pub session_id: Option<SessionId>,
}

impl EventBus {
    pub fn publish(&self, tenant: &str, kind: &str, about: About, detail: serde_json::Value) {
        let event = Event {
            kind: kind.to_owned(),
            at: now_rfc3339(),
            task_id: about.task_id,
            sandbox_id: about.sandbox_id,
            session_id: about.session_id,
            detail,
        };
        // No subscriber is fine: nobody is listening.
        let _ = self.tx.send((tenant.to_owned(), event));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<(String, Event)> {
        self.tx.subscribe()
    }
}

/// `GET /v1/events`: the caller's tenant's events as JSON text frames.
pub async fn stream(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    principal: Principal,
    ws: WebSocketUpgrade,
) -> Response {
    let permit = match state.admission.admit_websocket(&principal.token_id, ip) {
        Ok(permit) => permit,
        Err(refused) => return refused.into_response(),
    };
    // Clients only listen: nothing they send needs to be large.
    ws.max_message_size(state.admission.limits.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            let _permit = permit;
            follow(state, principal, socket).await
        })
}

async fn follow(state: AppState, principal: Principal, mut socket: WebSocket) {
    let _open = crate::telemetry::ConnectionGauge::open("events");
    let mut rx = state.events.subscribe();
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            incoming = socket.recv() => match incoming {
                // Clients only listen; anything but a close is ignored.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            next = rx.recv() => next,
        };
        let event = match next {
            Ok((tenant, event)) if tenant == principal.tenant_id => event,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(missed)) => Event {
                kind: "events.lagged".into(),
                at: now_rfc3339(),
                task_id: None,
                sandbox_id: None,
                session_id: None,
                detail: serde_json::json!({ "missed": missed }),
            },
            Err(broadcast::error::RecvError::Closed) => break,
        };
        let Ok(text) = serde_json::to_string(&event) else {
            continue;
        };
        if socket.send(Message::Text(text.into())).await.is_err() {
            break;
        }
    }
}
