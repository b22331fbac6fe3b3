//! Client session streams (`/v1/sandboxes/{sandbox}/sessions/{id}/stream`):
//! watch or attach, replay from an offset, live output, driver hand-over.
//!
//! Each client connection is two tasks: this writer loop, which follows the
//! session log at the client's own pace, and a reader task for the client's
//! input and resizes. Either ending tears the other down.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::api::StreamQuery;
use paddock_protocol::{
    is_supported, unsupported_version_reason, ClientToControl, ControlToAgent, ControlToClient,
    DataFrame, ErrorCode, FrameKind, Hello, SessionId, StreamMode, CLOSE_MALFORMED, CLOSE_REFUSED,
    CLOSE_UNSUPPORTED_VERSION, FRAME_HEADER_LEN, MAX_CONTROL_FRAME, MAX_DATA_PAYLOAD,
    PROTOCOL_VERSION,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::agent_conn::truncate;
use crate::api::{load_log, resolve_session};
use crate::error::ApiError;
use crate::fanout::{Ending, ReadAt, SessionLog};
use crate::store::{Principal, SessionRow};
use crate::AppState;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes sent to one client before it re-checks driver, size and shutdown.
const BURST: usize = 256 * 1024;
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

type Sink = SplitSink<WebSocket, Message>;

pub async fn stream(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (_sandbox, row) = resolve_session(&state, &principal, &sandbox, SessionId(session)).await?;
    let log = load_log(&state, &row);
    let span = tracing::info_span!("client", sandbox.id = %row.sandbox_id, session.id = %row.id, tenant.id = %row.tenant_id);
    Ok(ws
        .max_message_size(MAX_CONTROL_FRAME + FRAME_HEADER_LEN + MAX_DATA_PAYLOAD)
        .on_upgrade(move |socket| run(state, principal, row, log, query, socket).instrument(span))
        .into_response())
}

async fn close(sink: &mut Sink, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: truncate(reason, 120).into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
}

async fn send(sink: &mut Sink, msg: &ControlToClient) -> bool {
    sink.send(Message::Text(msg.encode().into())).await.is_ok()
}

async fn refuse(sink: &mut Sink, code: ErrorCode, close_code: u16, message: String) {
    let _ = send(
        sink,
        &ControlToClient::Error {
            code,
            message: message.clone(),
        },
    )
    .await;
    close(sink, close_code, &message).await;
}

async fn run(
    state: AppState,
    principal: Principal,
    row: SessionRow,
    log: Arc<SessionLog>,
    query: StreamQuery,
    socket: WebSocket,
) {
    let (mut sink, mut stream) = socket.split();
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => match ClientToControl::decode(&text) {
            Ok(ClientToControl::Hello { hello }) => hello,
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
        let reason = unsupported_version_reason(hello.protocol_version);
        refuse(
            &mut sink,
            ErrorCode::UnsupportedVersion,
            CLOSE_UNSUPPORTED_VERSION,
            reason,
        )
        .await;
        return;
    }

    let client_id = state.hub.next_id();
    let label = format!("{} ({})", principal.token_name, hello.peer);
    if query.mode == StreamMode::Attach {
        if let Err(driver) = log.drive(client_id, label.clone(), query.take) {
            let message = format!(
                "session {} is driven by {driver}; attach with --take (take=true) to take over",
                row.id
            );
            refuse(&mut sink, ErrorCode::DriverExists, CLOSE_REFUSED, message).await;
            return;
        }
    }
    log.join();
    debug!(mode = ?query.mode, peer = %hello.peer, "client joined");

    let end = log.end();
    let from = query.from.unwrap_or(end).min(end);
    let welcome = ControlToClient::Welcome {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            peer: format!("control-plane/{}", env!("CARGO_PKG_VERSION")),
            capabilities: vec!["pty".into()],
        },
        session: Box::new(log.info(&row)),
        mode: query.mode,
        from,
    };
    if send(&mut sink, &welcome).await {
        let done = CancellationToken::new();
        let reader = state.tracker.spawn(read_loop(
            state.clone(),
            log.clone(),
            client_id,
            stream,
            done.clone(),
        ));
        write_loop(&state, &log, client_id, from, query.mode, &mut sink, &done).await;
        done.cancel();
        if let Ok(Some(reason)) = reader.await {
            close(&mut sink, CLOSE_MALFORMED, &reason).await;
        }
    }
    log.leave(client_id);
    debug!("client left");
}

/// Follows the log from `cursor`, sending output, events, and the ending.
async fn write_loop(
    state: &AppState,
    log: &SessionLog,
    client_id: u64,
    mut cursor: u64,
    mut mode: StreamMode,
    sink: &mut Sink,
    done: &CancellationToken,
) {
    let mut rx_changed = log.subscribe();
    let first = log.snapshot();
    let mut driver = first.driver.clone();
    let mut size = first.size;
    loop {
        rx_changed.borrow_and_update();
        let mut sent = 0;
        while sent < BURST {
            match log.read(cursor, MAX_DATA_PAYLOAD) {
                ReadAt::Data { offset, bytes } => {
                    let frame = DataFrame::output(log.id, offset, &bytes).encode();
                    if sink.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                    cursor += bytes.len() as u64;
                    sent += bytes.len();
                }
                ReadAt::Gap { from, to, reason } => {
                    if !send(sink, &ControlToClient::Gap { from, to, reason }).await {
                        return;
                    }
                    cursor = to;
                }
                ReadAt::CaughtUp => break,
            }
        }

        let snap = log.snapshot();
        if snap.driver != driver {
            let was_me = mode == StreamMode::Attach;
            let still_me = snap
                .driver
                .as_ref()
                .is_some_and(|d| d.client_id == client_id);
            if was_me && !still_me {
                mode = StreamMode::Watch;
                let by = snap.driver.as_ref().map_or("nobody", |d| d.label.as_str());
                let reason = format!("taken over by {by}; you are watching now");
                if !send(sink, &ControlToClient::ModeChanged { mode, reason }).await {
                    return;
                }
            }
            driver = snap.driver.clone();
            let label = driver.as_ref().map(|d| d.label.clone());
            if !send(sink, &ControlToClient::DriverChanged { driver: label }).await {
                return;
            }
        }
        if snap.size != size {
            size = snap.size;
            if !send(sink, &ControlToClient::Resized { size }).await {
                return;
            }
        }
        if cursor >= snap.end {
            match snap.ending {
                Some(Ending::Exited(status)) => {
                    let exited = ControlToClient::Exited {
                        status,
                        end_offset: snap.end,
                    };
                    if send(sink, &exited).await {
                        close(sink, 1000, "session ended").await;
                    }
                    return;
                }
                Some(Ending::Lost(reason)) => {
                    refuse(sink, ErrorCode::SessionEnded, 1000, reason).await;
                    return;
                }
                None => {}
            }
        }
        if sent >= BURST {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            changed = rx_changed.changed() => if changed.is_err() { return },
            _ = done.cancelled() => return,
            _ = state.shutdown.cancelled() => {
                close(sink, 1001, "control plane shutting down").await;
                return;
            }
        }
    }
}

/// Takes input and resizes from the client; only the driver's are applied.
/// Returns the reason when the client broke the protocol.
async fn read_loop(
    state: AppState,
    log: Arc<SessionLog>,
    client_id: u64,
    mut stream: SplitStream<WebSocket>,
    done: CancellationToken,
) -> Option<String> {
    let violation = loop {
        let msg = tokio::select! {
            _ = done.cancelled() => return None,
            msg = stream.next() => msg,
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            _ => break None,
        };
        match msg {
            Message::Binary(bytes) => {
                let frame = match DataFrame::decode(&bytes) {
                    Ok(frame) if frame.kind == FrameKind::Input && frame.session_id == log.id => {
                        frame
                    }
                    Ok(_) => {
                        break Some("clients may only send input frames for this session".into())
                    }
                    Err(err) => break Some(err.to_string()),
                };
                if log.is_driver(client_id) && !frame.payload.is_empty() {
                    let forwarded = DataFrame::input(log.id, frame.payload).encode();
                    if let Err(err) = state.hub.send_input(&log.sandbox_id, forwarded).await {
                        debug!(error = %err, "input dropped: sandbox not connected");
                    }
                }
            }
            Message::Text(text) => match ClientToControl::decode(&text) {
                Ok(ClientToControl::Resize { size }) => {
                    if log.is_driver(client_id) {
                        if let Err(err) = resize(&state, &log, size).await {
                            debug!(error = %err, "resize failed");
                        }
                    }
                }
                Ok(ClientToControl::Hello { .. }) => break Some("hello sent twice".into()),
                Err(err) => break Some(err.to_string()),
            },
            Message::Close(_) => break None,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    };
    if let Some(reason) = &violation {
        debug!(reason = %reason, "client broke the protocol");
    }
    // A protocol violation or a closed socket ends the writer too.
    done.cancel();
    violation
}

/// Resizes the PTY and records the size; the PTY follows the driver.
pub async fn resize(
    state: &AppState,
    log: &SessionLog,
    size: paddock_protocol::TermSize,
) -> Result<(), crate::hub::HubError> {
    let id = log.id;
    state
        .hub
        .request(&log.sandbox_id, AGENT_TIMEOUT, |request_id| {
            ControlToAgent::ResizeSession {
                request_id,
                session_id: id,
                size,
            }
        })
        .await?;
    log.set_size(size);
    if let Err(err) = state.store.set_session_size(id, size).await {
        tracing::warn!(session.id = %id, error = %err, "could not record a resize");
    }
    Ok(())
}
