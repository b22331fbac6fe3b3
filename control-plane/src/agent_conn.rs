//! One agentd connection: authenticate, handshake, reconcile sessions, then a
//! reader task (this one) and a writer task, torn down together.

use std::collections::HashSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::api::{SandboxStatus, SessionState};
use paddock_protocol::{
    is_supported, unsupported_version_reason, AgentToControl, ControlToAgent, DataFrame, FrameKind,
    Hello, LiveSession, ResumeFrom, SessionId, CLOSE_MALFORMED, CLOSE_REPLACED,
    CLOSE_UNSUPPORTED_VERSION, FRAME_HEADER_LEN, MAX_CONTROL_FRAME, MAX_DATA_PAYLOAD,
    PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tracing::{debug, info, warn, Instrument};

use crate::admission::{admit_message, ClientIp};
use crate::error::ApiError;
use crate::fanout::{Ending, SessionLog};
use crate::hub::{AckSlot, AgentLink, AgentReply, HubError, Outgoing};
use crate::persist::PersistMsg;
use crate::store::{SandboxRow, Transition};
use crate::telemetry::{self, ConnectionGauge};
use crate::{clock, AppState};

/// How long a fresh connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from an agent's socket at once.
const AGENT_READ_BUFFER: usize = 16 * 1024;
/// Outgoing messages queued for one agent; senders wait when it is full.
const OUTGOING_QUEUE: usize = 256;

/// `GET /v1/agent/connect`: the sandbox token is checked before the upgrade.
pub async fn connect(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    let sandbox = match state.auth.sandbox_token(token).await {
        Ok(Some(sandbox)) => sandbox,
        Ok(None) => {
            return ApiError::unauthorized(
                "invalid sandbox token: start agentd with the token `paddock sandboxes register` printed",
            )
            .into_response()
        }
        Err(err) => return ApiError::from(err).into_response(),
    };
    // The token is checked first: a caller without one learns nothing more.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::bad_request(format!(
                "{}: this endpoint takes a WebSocket upgrade",
                rejection.body_text()
            ))
            .into_response()
        }
    };
    let permit = match state
        .admission
        .admit_websocket(&format!("sandbox:{}", sandbox.id), ip)
    {
        Ok(permit) => permit,
        Err(refused) => return refused.into_response(),
    };
    let span = tracing::info_span!("agent", sandbox.id = %sandbox.id, sandbox.name = %sandbox.name);
    ws.max_message_size(MAX_CONTROL_FRAME + FRAME_HEADER_LEN + MAX_DATA_PAYLOAD)
        .max_frame_size(MAX_CONTROL_FRAME + FRAME_HEADER_LEN + MAX_DATA_PAYLOAD)
        // Thousands of mostly idle agents: small buffers, grown by the
        // library only while a large frame is in flight.
        .read_buffer_size(AGENT_READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            async move {
                let _permit = permit;
                run(state, sandbox, socket).await
            }
            .instrument(span)
        })
}

/// Closes a WebSocket with `code` and a reason cut to what a close frame holds.
pub(crate) async fn close(sink: &mut SplitSink<WebSocket, Message>, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate(reason, 120).into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

/// Cuts `s` to at most `max` bytes on a character boundary (close reasons are limited).
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

async fn run(state: AppState, sandbox: SandboxRow, socket: WebSocket) {
    let _open = ConnectionGauge::open("agent");
    let (mut sink, mut stream) = socket.split();

    // Handshake: the first frame must be a hello in a version we speak.
    let first = tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await;
    let (hello, live) = match first {
        Ok(Some(Ok(Message::Text(text)))) => match AgentToControl::decode(&text) {
            Ok(AgentToControl::Hello { hello, sessions }) => (hello, sessions),
            Ok(_) => {
                close(
                    &mut sink,
                    CLOSE_MALFORMED,
                    "expected hello as the first message",
                )
                .await;
                return;
            }
            Err(err) => {
                close(&mut sink, CLOSE_MALFORMED, &err.to_string()).await;
                return;
            }
        },
        _ => {
            close(
                &mut sink,
                CLOSE_MALFORMED,
                "expected hello as the first message",
            )
            .await;
            return;
        }
    };
    if !is_supported(hello.protocol_version) {
        info!(version = hello.protocol_version, peer = %hello.peer, "refused agent protocol version");
        close(
            &mut sink,
            CLOSE_UNSUPPORTED_VERSION,
            &unsupported_version_reason(hello.protocol_version),
        )
        .await;
        return;
    }

    let reconciled = match reconcile(&state, &sandbox, &live).await {
        Ok(reconciled) => reconciled,
        Err(err) => {
            warn!(error = %err, "could not reconcile the agent's sessions");
            close(&mut sink, 1011, "internal error").await;
            return;
        }
    };

    let conn_id = state.hub.next_id();
    let (tx_out, rx_out) = mpsc::channel(OUTGOING_QUEUE);
    let link = AgentLink::new(conn_id, tx_out.clone());
    if let Some(old) = state.hub.register(sandbox.id.clone(), link.clone()) {
        info!("a newer connection replaces the sandbox's previous one");
        let _ = old.tx_out.try_send(Outgoing::Close(
            CLOSE_REPLACED,
            "replaced by a newer connection".into(),
        ));
    }
    let now = clock::now_rfc3339();
    if let Err(err) = state
        .store
        .touch_sandbox(&sandbox.tenant_id, &sandbox.id, &now, Some(&hello.peer))
        .await
    {
        warn!(error = %err, "could not record the agent's connection");
    }
    let up = Transition::to(SandboxStatus::Connected);
    if let Err(err) = state
        .store
        .transition(&sandbox.tenant_id, &sandbox.id, up)
        .await
    {
        warn!(error = %err, "could not record the sandbox as connected");
    }

    let welcome = ControlToAgent::Welcome {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            peer: format!("control-plane/{}", env!("CARGO_PKG_VERSION")),
            capabilities: vec!["pty".into()],
        },
        sandbox_id: sandbox.id.clone(),
        heartbeat_ms: state.config.heartbeat_ms,
        resume: reconciled.resume.clone(),
    };
    for dropped in live
        .iter()
        .filter(|l| state.hub.log(l.session_id).is_none())
    {
        let drop = ControlToAgent::DropSession {
            session_id: dropped.session_id,
        };
        let _ = tx_out.send(Outgoing::Text(drop.encode())).await;
    }
    if sink
        .send(Message::Text(welcome.encode().into()))
        .await
        .is_err()
    {
        state.hub.unregister(&sandbox.id, conn_id);
        return;
    }
    info!(peer = %hello.peer, sessions = live.len(), "agent connected");
    let about = crate::events::About {
        sandbox_id: Some(sandbox.id.clone()),
        ..Default::default()
    };
    state.events.publish(
        &sandbox.tenant_id,
        "sandbox.connected",
        about.clone(),
        serde_json::json!({ "peer": hello.peer, "sessions": live.len() }),
    );
    // A newly connected sandbox may take queued tasks.
    state.scheduler.wake();

    let writer = state
        .tracker
        .spawn(write_loop(sink, rx_out, link.acks.clone()));
    let reason = read_loop(&state, &sandbox, &link, &mut stream).await;
    if state.shutdown.is_cancelled() {
        // Tell agentd why, so it reconnects to the next instance at once.
        let _ = tx_out.try_send(Outgoing::Close(1001, "control plane shutting down".into()));
    }
    match &reason {
        Ok(()) => info!("agent disconnected"),
        Err(Violation { code, reason }) => {
            warn!(reason = %reason, "agent connection closed");
            let _ = tx_out.try_send(Outgoing::Close(*code, reason.clone()));
        }
    }
    drop(tx_out);

    if state.hub.unregister(&sandbox.id, conn_id) {
        // Only a connected sandbox becomes disconnected: one being stopped
        // or destroyed keeps the state its provider call gives it.
        let down = Transition::to(SandboxStatus::Disconnected).from(&[SandboxStatus::Connected]);
        if let Err(err) = state
            .store
            .transition(&sandbox.tenant_id, &sandbox.id, down)
            .await
        {
            warn!(error = %err, "could not record the sandbox as disconnected");
        }
        // A reconnection may have recorded itself in between: it wins.
        if state.hub.link(&sandbox.id).is_some() {
            let up = Transition::to(SandboxStatus::Connected);
            let _ = state
                .store
                .transition(&sandbox.tenant_id, &sandbox.id, up)
                .await;
        }
        let reason = match &reason {
            Ok(()) => "disconnected".to_owned(),
            Err(violation) => violation.reason.clone(),
        };
        state.events.publish(
            &sandbox.tenant_id,
            "sandbox.lost",
            about,
            serde_json::json!({ "reason": reason }),
        );
    }
    // Every request still waiting on this connection fails now.
    link.pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let last_seen = clock::rfc3339(link.last_seen());
    if let Err(err) = state
        .store
        .touch_sandbox(&sandbox.tenant_id, &sandbox.id, &last_seen, None)
        .await
    {
        warn!(error = %err, "could not record the agent's last-seen time");
    }
    drop(link);
    // The writer ends once every sender is gone or the close is sent.
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
}

/// What a (re)connecting agent must be told about the sessions it holds.
#[derive(Debug, Default)]
struct Reconciled {
    /// Live sessions to resume, from the offset the control plane has.
    resume: Vec<ResumeFrom>,
    /// Sessions whose exit is already stored: agentd may forget them.
    recorded: Vec<SessionId>,
    /// Sessions the control plane does not know (or gave up on): to be dropped.
    dropped: Vec<SessionId>,
}

/// Matches the sessions agentd still has against the database: resumes the
/// live ones where the stored stream ends, and marks the ones agentd no
/// longer has as lost.
async fn reconcile(
    state: &AppState,
    sandbox: &SandboxRow,
    live: &[LiveSession],
) -> Result<Reconciled, crate::store::StoreError> {
    let mut out = Reconciled::default();
    let live_ids: HashSet<SessionId> = live.iter().map(|l| l.session_id).collect();
    for l in live {
        let row = state
            .store
            .get_session(&sandbox.tenant_id, &sandbox.id, l.session_id)
            .await?;
        match row {
            Some(row) if matches!(row.state, SessionState::Starting | SessionState::Running) => {
                let log = crate::api::load_log(state, &row);
                log.set_running();
                log.set_size(l.size);
                if row.state == SessionState::Starting {
                    state
                        .store
                        .set_session_state(&sandbox.tenant_id, row.id, SessionState::Running)
                        .await?;
                }
                // Everything below the log's end is stored or queued for the store.
                out.resume.push(ResumeFrom {
                    session_id: row.id,
                    offset: log.end(),
                });
            }
            Some(row) if row.state == SessionState::Exited => out.recorded.push(row.id),
            _ => out.dropped.push(l.session_id),
        }
    }
    for row in state
        .store
        .unfinished_sessions(&sandbox.tenant_id, &sandbox.id)
        .await?
    {
        if live_ids.contains(&row.id) {
            continue;
        }
        let end = state.hub.log(row.id).map_or(row.end_offset, |l| l.end());
        state
            .store
            .finish_session(&sandbox.tenant_id, row.id, None, end)
            .await?;
        if let Some(log) = state.hub.log(row.id) {
            log.finish(Ending::Lost(
                "the sandbox no longer has this session (agentd restarted)".into(),
            ));
        }
    }
    Ok(out)
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx_out: mpsc::Receiver<Outgoing>,
    acks: std::sync::Arc<AckSlot>,
) {
    loop {
        let out = tokio::select! {
            out = rx_out.recv() => match out {
                Some(out) => out,
                None => break,
            },
            _ = acks.wait() => {
                let mut failed = false;
                for msg in acks.take() {
                    if sink.send(Message::Text(msg.encode().into())).await.is_err() {
                        failed = true;
                        break;
                    }
                }
                if failed {
                    break;
                }
                continue;
            }
        };
        let result = match out {
            Outgoing::Text(text) => sink.send(Message::Text(text.into())).await,
            Outgoing::Binary(bytes) => sink.send(Message::Binary(bytes.into())).await,
            Outgoing::Close(code, reason) => {
                close(&mut sink, code, &reason).await;
                break;
            }
        };
        if result.is_err() {
            break;
        }
    }
    let _ = sink.close().await;
}

/// Why a connection is closed on the peer: the close code and its reason.
#[derive(Debug)]
pub(crate) struct Violation {
    pub code: u16,
    pub reason: String,
}

/// A protocol violation: a malformed frame or a message out of place.
impl From<String> for Violation {
    fn from(reason: String) -> Self {
        Violation {
            code: CLOSE_MALFORMED,
            reason,
        }
    }
}

/// Reads until the agent goes away (`Ok`) or breaks the protocol or a limit
/// (`Err` with the close code and reason).
async fn read_loop(
    state: &AppState,
    sandbox: &SandboxRow,
    link: &AgentLink,
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
) -> Result<(), Violation> {
    let silence = Duration::from_millis(state.config.heartbeat_ms.saturating_mul(3));
    let rate = state.admission.message_rate(true);
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(()),
            next = tokio::time::timeout(silence, stream.next()) => next,
        };
        let msg = match next {
            Err(_) => {
                warn!("agent silent for three heartbeat intervals; dropping the link");
                return Ok(());
            }
            Ok(None) | Ok(Some(Err(_))) => return Ok(()),
            Ok(Some(Ok(msg))) => msg,
        };
        link.seen();
        admit_message(&state.admission, &rate, &msg)?;
        match msg {
            Message::Binary(bytes) => {
                let frame = DataFrame::decode(&bytes).map_err(|e| e.to_string())?;
                if frame.kind != FrameKind::Output {
                    return Err(String::from("agents may only send output frames").into());
                }
                let log = own_log(state, sandbox, frame.session_id)?;
                let offset = frame.offset;
                // The received frame is kept as is and forwarded to every watcher.
                if let Some(appended) = log.append(offset, bytes) {
                    metrics::counter!(telemetry::OUTPUT_BYTES, "direction" => "in")
                        .increment(appended.data.len() as u64);
                    if let Some((from, to, reason)) = appended.hole {
                        persist(
                            state,
                            PersistMsg::Gap {
                                log: log.clone(),
                                from,
                                to,
                                reason,
                            },
                        )
                        .await?;
                    }
                    let msg = PersistMsg::Output {
                        log,
                        offset: appended.offset,
                        data: appended.data,
                        at_ms: crate::clock::now_ms(),
                    };
                    persist(state, msg).await?;
                }
            }
            Message::Text(text) => {
                let msg = AgentToControl::decode(&text).map_err(|e| e.to_string())?;
                handle_message(state, sandbox, link, msg).await?;
            }
            Message::Close(_) => return Ok(()),
            Message::Ping(_) | Message::Pong(_) => {}
        }
    }
}

/// Queues a write for the persister, waiting while it is full (flow control).
async fn persist(state: &AppState, msg: PersistMsg) -> Result<(), String> {
    state
        .tx_persist
        .send(msg)
        .await
        .map_err(|_| "the control plane is shutting down".to_owned())
}

/// The log of a session of this sandbox; another sandbox's session id is a protocol violation.
fn own_log(
    state: &AppState,
    sandbox: &SandboxRow,
    id: paddock_protocol::SessionId,
) -> Result<std::sync::Arc<SessionLog>, String> {
    match state.hub.log(id) {
        Some(log) if log.sandbox_id == sandbox.id => Ok(log),
        _ => Err(format!("unknown session {id}")),
    }
}

async fn handle_message(
    state: &AppState,
    sandbox: &SandboxRow,
    link: &AgentLink,
    msg: AgentToControl,
) -> Result<(), String> {
    match msg {
        AgentToControl::Hello { .. } => return Err("hello sent twice".into()),
        AgentToControl::SessionOpened {
            request_id, pid, ..
        } => link.complete(request_id, Ok(AgentReply::Opened { pid })),
        AgentToControl::ToolResult { request_id, result } => {
            link.complete(request_id, Ok(AgentReply::Tool(Box::new(result))))
        }
        AgentToControl::LspDiagnostics {
            workspace,
            language,
            uri,
            version,
            diagnostics,
        } => {
            // Pushed to the tenant's `/v1/events` subscribers as they come.
            debug!(uri = %uri, count = diagnostics.len(), "language server diagnostics");
            state.events.publish(
                &sandbox.tenant_id,
                "lsp.diagnostics",
                crate::events::About {
                    sandbox_id: Some(sandbox.id.clone()),
                    ..Default::default()
                },
                serde_json::json!({
                    "workspace": workspace,
                    "language": language,
                    "uri": uri,
                    "version": version,
                    "diagnostics": diagnostics,
                }),
            );
        }
        AgentToControl::RequestDone { request_id } => {
            link.complete(request_id, Ok(AgentReply::Done))
        }
        AgentToControl::RequestFailed {
            request_id,
            code,
            message,
        } => link.complete(request_id, Err(HubError::Refused { code, message })),
        AgentToControl::Gap {
            session_id,
            from,
            to,
            reason,
        } => {
            let log = own_log(state, sandbox, session_id)?;
            if let Some((from, to)) = log.gap(from, to, reason.clone()) {
                persist(
                    state,
                    PersistMsg::Gap {
                        log,
                        from,
                        to,
                        reason,
                    },
                )
                .await?;
            }
        }
        AgentToControl::SessionExited {
            session_id,
            status,
            end_offset,
        } => {
            let log = own_log(state, sandbox, session_id)?;
            if log.end() < end_offset {
                let reason = "output lost before the session ended".to_owned();
                if let Some((from, to)) = log.gap(log.end(), end_offset, reason.clone()) {
                    persist(
                        state,
                        PersistMsg::Gap {
                            log: log.clone(),
                            from,
                            to,
                            reason,
                        },
                    )
                    .await?;
                }
            }
            debug!(session.id = %session_id, status = %status, "session exited");
            log.finish(Ending::Exited(status));
            state.events.publish(
                &sandbox.tenant_id,
                "session.closed",
                crate::events::About {
                    sandbox_id: Some(sandbox.id.clone()),
                    session_id: Some(session_id),
                    ..Default::default()
                },
                serde_json::json!({ "status": status, "end_offset": end_offset }),
            );
            // Stored after the session's output; agentd forgets the session
            // only once this is committed (`exit_recorded`).
            persist(state, PersistMsg::Exit { log, status }).await?;
        }
    }
    Ok(())
}
