//! Client session streams (`/v1/sandboxes/{sandbox}/sessions/{id}/stream`):
//! watch or attach, replay from an offset, live output, driver hand-over.
//!
//! Each client connection is two tasks: this writer loop, which follows the
//! session log at the client's own pace, and a reader task for the client's
//! input and resizes. Either ending tears the other down.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::api::StreamQuery;
use paddock_protocol::screen::Render;
use paddock_protocol::{
    is_supported, unsupported_version_reason, ClientToControl, ControlToAgent, ControlToClient,
    DataFrame, ErrorCode, FrameKind, Hello, SessionId, StreamMode, CLOSE_MALFORMED, CLOSE_REFUSED,
    CLOSE_UNSUPPORTED_VERSION, FRAME_HEADER_LEN, MAX_CONTROL_FRAME, MAX_DATA_PAYLOAD,
    PROTOCOL_VERSION,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, Instrument};

use crate::admission::{admit_message, ClientIp};
use crate::agent_conn::{close, Violation};
use crate::api::{load_log, resolve_session};
use crate::error::ApiError;
use crate::fanout::{Ending, ReadAt, SessionLog};
use crate::routes::Permission;
use crate::store::Piece;
use crate::store::{Principal, SessionRow};
use crate::AppState;
use bytes::Bytes;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes sent to one client before it re-checks driver, size and shutdown.
const BURST: usize = 256 * 1024;
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) type Sink = SplitSink<WebSocket, Message>;

pub async fn stream(
    State(state): State<AppState>,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if query.mode == StreamMode::Attach && !Permission::Attach.allows(principal.role) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the `{}` role lacks the `attach` permission; watch instead, or ask an admin for a developer token",
                principal.role.as_str()
            ),
        ));
    }
    if query.render == Render::Screen && query.from.is_some() {
        return Err(ApiError::bad_request(
            "render=screen joins live: leave out `from` (replay needs render=bytes)",
        ));
    }
    let (_sandbox, row) = resolve_session(&state, &principal, &sandbox, SessionId(session)).await?;
    let log = load_log(&state, &row);
    let permit = state.admission.admit_websocket(&principal.token_id, ip)?;
    let seat = state.admission.admit_watcher(row.id.0)?;
    let span = tracing::info_span!("client", sandbox.id = %row.sandbox_id, session.id = %row.id, tenant.id = %row.tenant_id);
    Ok(ws
        .max_message_size(MAX_CONTROL_FRAME + FRAME_HEADER_LEN + MAX_DATA_PAYLOAD)
        .on_upgrade(move |socket| {
            async move {
                let _held = (permit, seat);
                run(state, principal, row, log, query, socket).await
            }
            .instrument(span)
        })
        .into_response())
}

pub(crate) async fn send(sink: &mut Sink, msg: &ControlToClient) -> bool {
    sink.send(Message::Text(msg.encode().into())).await.is_ok()
}

pub(crate) async fn refuse(sink: &mut Sink, code: ErrorCode, close_code: u16, message: String) {
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
    let _open = crate::telemetry::ConnectionGauge::open("client");
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
    let resource = format!("session/{}", row.id);
    let action = match query.mode {
        StreamMode::Watch => "session.watch",
        StreamMode::Attach => "session.attach",
    };
    let detail = serde_json::json!({ "peer": hello.peer, "from": query.from });
    crate::admin::record(
        &state,
        &principal,
        &format!("{action}.started"),
        &resource,
        detail,
    )
    .await;
    let input_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));

    let end = log.end();
    let (pace, from) = match query.from {
        Some(from) => (Pace::Replay, from.min(end)),
        None => (Pace::Live, end),
    };
    // A live joiner's stream starts where its snapshot stands; a screen
    // viewer gets rendered frames instead.
    let snapshot = match pace {
        Pace::Live if query.render == Render::Screen => None,
        Pace::Live => match log.screen_snapshot(&state.store).await {
            Ok(snapshot) => Some(snapshot),
            Err(err) => {
                tracing::error!(error = %err, "could not rebuild the screen");
                close(&mut sink, 1011, "could not rebuild the screen").await;
                log.leave(client_id);
                return;
            }
        },
        Pace::Replay => None,
    };
    let from = snapshot.as_ref().map_or(from, |s| s.0);
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
    let mut ok = send(&mut sink, &welcome).await;
    if let (true, Some((offset, size, screen))) = (ok, snapshot) {
        ok = send(
            &mut sink,
            &ControlToClient::Snapshot {
                offset,
                size,
                screen,
            },
        )
        .await;
    }
    if ok {
        let done = CancellationToken::new();
        let reader = state.tracker.spawn(read_loop(
            state.clone(),
            log.clone(),
            client_id,
            stream,
            done.clone(),
            InputAudit {
                principal: principal.clone(),
                bytes: input_bytes.clone(),
            },
        ));
        match query.render {
            Render::Screen => {
                crate::screen::write_screens(&state, &log, client_id, query.mode, &mut sink, &done)
                    .await;
            }
            Render::Bytes => {
                write_loop(
                    &state, &log, client_id, from, pace, query.mode, &mut sink, &done,
                )
                .await
            }
        }
        done.cancel();
        match reader.await {
            Ok(Some(Violation { code, reason })) => close(&mut sink, code, &reason).await,
            // The client closed (or the writer already did): answer its close
            // frame, so it sees a clean 1000 rather than a dropped socket.
            _ => close(&mut sink, 1000, "goodbye").await,
        }
        // Flushes a close reply the WebSocket queued itself, if it did.
        let _ = sink.close().await;
    }
    log.leave(client_id);
    debug!("client left");
    let input = input_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let detail = serde_json::json!({ "input_bytes": input });
    crate::admin::record(
        &state,
        &principal,
        &format!("{action}.ended"),
        &resource,
        detail,
    )
    .await;
}

/// How a client reads the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// Asked for `from=`: never skipped; served from the store when behind.
    Replay,
    /// Joined live: skipped ahead (gap + snapshot) when it falls behind the ring.
    Live,
}

/// Follows the log from `cursor`, sending output, events, and the ending.
#[allow(clippy::too_many_arguments)]
async fn write_loop(
    state: &AppState,
    log: &SessionLog,
    client_id: u64,
    mut cursor: u64,
    pace: Pace,
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
            let end = log.end();
            let pieces = match (pace, log.read(cursor)) {
                (_, ReadAt::CaughtUp) => break,
                (Pace::Live, ReadAt::Behind) => {
                    match skip_ahead(state, log, cursor, sink).await {
                        Some(next) => cursor = next,
                        None => return,
                    }
                    continue;
                }
                _ => match log.read_pieces(&state.store, cursor, end).await {
                    Ok(pieces) if !pieces.is_empty() => pieces,
                    Ok(_) => break,
                    Err(err) => {
                        tracing::error!(error = %err, "could not read stored output");
                        close(sink, 1011, "could not read stored output").await;
                        return;
                    }
                },
            };
            for piece in pieces {
                match piece {
                    Piece::Data {
                        offset,
                        data,
                        frame,
                    } => {
                        // Frames from the ring go out as received: one encode for all clients.
                        let frames = match frame {
                            Some(frame) => vec![frame],
                            None => DataFrame::chunks(log.id, offset, &data)
                                .map(|f| Bytes::from(f.encode()))
                                .collect(),
                        };
                        for frame in frames {
                            if sink.send(Message::Binary(frame)).await.is_err() {
                                return;
                            }
                        }
                        metrics::counter!(crate::telemetry::OUTPUT_BYTES, "direction" => "out")
                            .increment(data.len() as u64);
                        cursor = offset + data.len() as u64;
                        sent += data.len();
                    }
                    Piece::Gap { from, to, reason } => {
                        if !send(sink, &ControlToClient::Gap { from, to, reason }).await {
                            return;
                        }
                        cursor = to;
                    }
                }
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

/// A live client fell behind the ring: tell it what it skips, redraw its
/// screen, and continue from there.
async fn skip_ahead(
    state: &AppState,
    log: &SessionLog,
    cursor: u64,
    sink: &mut Sink,
) -> Option<u64> {
    let (offset, size, screen) = match log.screen_snapshot(&state.store).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            tracing::error!(error = %err, "could not rebuild the screen");
            close(sink, 1011, "could not rebuild the screen").await;
            return None;
        }
    };
    debug!(
        from = cursor,
        to = offset,
        "live client fell behind; skipping ahead"
    );
    metrics::counter!(crate::telemetry::WATCHER_SKIPS).increment(1);
    let gap = ControlToClient::Gap {
        from: cursor,
        to: offset,
        reason: "skipped ahead: this client fell behind live output".into(),
    };
    let snapshot = ControlToClient::Snapshot {
        offset,
        size,
        screen,
    };
    (send(sink, &gap).await && send(sink, &snapshot).await).then_some(offset)
}

/// Who types on a stream, for the audit log: input is recorded as an event
/// (first input, then a byte count when the stream ends), never the keys.
struct InputAudit {
    principal: Principal,
    bytes: Arc<std::sync::atomic::AtomicU64>,
}

/// Takes input and resizes from the client; only the driver's are applied.
/// Returns the close code and reason when the client broke the protocol or
/// a limit.
async fn read_loop(
    state: AppState,
    log: Arc<SessionLog>,
    client_id: u64,
    mut stream: SplitStream<WebSocket>,
    done: CancellationToken,
    audit: InputAudit,
) -> Option<Violation> {
    let rate = state.admission.message_rate(false);
    let violation: Option<Violation> = loop {
        let msg = tokio::select! {
            _ = done.cancelled() => return None,
            msg = stream.next() => msg,
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            _ => break None,
        };
        if let Err(violation) = admit_message(&state.admission, &rate, &msg) {
            break Some(violation);
        }
        match msg {
            Message::Binary(bytes) => {
                let frame = match DataFrame::decode(&bytes) {
                    Ok(frame) if frame.kind == FrameKind::Input && frame.session_id == log.id => {
                        frame
                    }
                    Ok(_) => {
                        break Some(
                            String::from("clients may only send input frames for this session")
                                .into(),
                        )
                    }
                    Err(err) => break Some(err.to_string().into()),
                };
                if log.is_driver(client_id) && !frame.payload.is_empty() {
                    let before = audit.bytes.fetch_add(
                        frame.payload.len() as u64,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    if before == 0 {
                        let resource = format!("session/{}", log.id);
                        let detail = serde_json::json!({});
                        crate::admin::record_for(
                            &state,
                            &log.tenant_id,
                            &audit.principal,
                            "session.input",
                            &resource,
                            detail,
                        )
                        .await;
                    }
                    metrics::counter!(crate::telemetry::INPUT_BYTES)
                        .increment(frame.payload.len() as u64);
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
                Ok(ClientToControl::Hello { .. }) => {
                    break Some(String::from("hello sent twice").into())
                }
                Err(err) => break Some(err.to_string().into()),
            },
            Message::Close(_) => break None,
            Message::Ping(_) | Message::Pong(_) => {}
        }
    };
    if let Some(violation) = &violation {
        debug!(code = violation.code, reason = %violation.reason, "client broke the protocol or a limit");
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
    if let Err(err) = state.store.set_session_size(&log.tenant_id, id, size).await {
        tracing::warn!(session.id = %id, error = %err, "could not record a resize");
    }
    let event = crate::store::SessionEvent {
        offset: log.end(),
        at_ms: crate::clock::now_ms(),
        kind: "r".into(),
        data: format!("{}x{}", size.cols, size.rows),
    };
    if let Err(err) = state.store.record_event(&log.tenant_id, id, &event).await {
        tracing::warn!(session.id = %id, error = %err, "could not record a resize event");
    }
    Ok(())
}
