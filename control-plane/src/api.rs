//! HTTP API handlers under `/v1`: sandboxes and their sessions. Bodies are
//! the types of `paddock_protocol::api`; errors are [`ApiError`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Json;
use bytes::Bytes;
use paddock_protocol::api::{
    Health, OpenSessionRequest, OutputFormat, OutputQuery, RegisterSandbox, ResizeRequest,
    SandboxInfo, SandboxList, SandboxRegistered, SessionInfo, SessionList, SessionState,
    SignalRequest, GAPS_HEADER,
};
use paddock_protocol::{ControlToAgent, ErrorCode, SessionId, TermSize, MAX_NAME_LEN};
use tracing::info;

use crate::asciicast::Encoder;
use crate::error::ApiError;
use crate::fanout::{info_from_row, Ending, SessionLog};
use crate::hub::{AgentReply, HubError};
use crate::store::{Piece, Principal, SandboxRow, SessionRow};
use crate::{clock, AppState};
use futures_util::StreamExt;

/// How long agentd may take to start a process or answer a request.
const AGENT_TIMEOUT: Duration = Duration::from_secs(15);

type ApiResult<T> = Result<T, ApiError>;

pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// `GET /readyz`: ready only when the database answers (migrations ran at
/// start, before the listener served anything). `/healthz` stays liveness.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(Json(Health {
            status: "ready".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })),
        Err(err) => {
            tracing::warn!(error = %err, "not ready: the database does not answer");
            Err(ApiError::new(
                ErrorCode::Unavailable,
                "the database does not answer; see the control plane's log",
            ))
        }
    }
}

fn sandbox_info(state: &AppState, row: &SandboxRow) -> SandboxInfo {
    let link = state.hub.link(&row.id);
    row.to_info(link.is_some(), link.map(|l| clock::rfc3339(l.last_seen())))
}

pub async fn resolve_sandbox(
    state: &AppState,
    principal: &Principal,
    sandbox: &str,
) -> ApiResult<SandboxRow> {
    state
        .store
        .find_sandbox(&principal.tenant_id, sandbox)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no sandbox `{sandbox}`; `paddock sandboxes` lists them"
            ))
        })
}

pub async fn resolve_session(
    state: &AppState,
    principal: &Principal,
    sandbox: &str,
    id: SessionId,
) -> ApiResult<(SandboxRow, SessionRow)> {
    let sandbox = resolve_sandbox(state, principal, sandbox).await?;
    let row = state
        .store
        .get_session(&principal.tenant_id, &sandbox.id, id)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no session {id} in sandbox {}; `paddock sessions {}` lists them",
                sandbox.name, sandbox.name
            ))
        })?;
    Ok((sandbox, row))
}

/// The live log of a session, or one rebuilt from its stored row (after a
/// restart): its ring starts empty at the stored end of the stream.
pub fn load_log(state: &AppState, row: &SessionRow) -> Arc<SessionLog> {
    state.hub.log_or_insert(row.id, || {
        let log = SessionLog::new(row, state.config.live_buffer_bytes);
        match (row.state, row.exit) {
            (SessionState::Exited, Some(status)) => log.finish(Ending::Exited(status)),
            (SessionState::Lost, _) | (SessionState::Exited, None) => {
                log.finish(Ending::Lost("the session was lost".into()))
            }
            _ => {}
        }
        log
    })
}

fn session_info(state: &AppState, row: &SessionRow) -> SessionInfo {
    match state.hub.log(row.id) {
        Some(log) => log.info(row),
        None => info_from_row(row),
    }
}

pub async fn list_sandboxes(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<SandboxList>> {
    let rows = state.store.list_sandboxes(&principal.tenant_id).await?;
    let sandboxes = rows.iter().map(|row| sandbox_info(&state, row)).collect();
    Ok(Json(SandboxList { sandboxes }))
}

pub async fn register_sandbox(
    State(state): State<AppState>,
    principal: Principal,
    body: Result<Json<RegisterSandbox>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<SandboxRegistered>)> {
    let Json(body) = body?;
    validate_name(&body.name)?;
    let (row, token) = if body.provider.is_some() || body.size.is_some() {
        let row = crate::lifecycle::provision(
            &state,
            &principal.tenant_id,
            &body.name,
            &body.labels,
            body.provider.as_deref(),
            body.size.as_deref(),
        )
        .await?;
        // The provider handed agentd its token: it is never shown.
        (row, String::new())
    } else {
        state
            .store
            .create_sandbox(&principal.tenant_id, &body.name, &body.labels, None)
            .await?
    };
    info!(sandbox.id = %row.id, sandbox.name = %row.name, provider = ?row.provider, "sandbox registered");
    crate::admin::record(
        &state,
        &principal,
        "sandbox.registered",
        &format!("sandbox/{}", row.id),
        serde_json::json!({ "name": row.name, "provider": row.provider, "size": row.size }),
    )
    .await;
    let sandbox = sandbox_info(&state, &row);
    Ok((
        StatusCode::CREATED,
        Json(SandboxRegistered { sandbox, token }),
    ))
}

/// Sandbox names are short, start with a letter or digit, and use only
/// letters, digits, `-`, `_` and `.` (they appear in URLs and shell commands).
pub fn validate_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN.min(63)
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with("sbx_");
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid sandbox name `{name}`: use 1-63 letters, digits, '-', '_' or '.', starting with a letter or digit (not `sbx_`)"
        )))
    }
}

pub async fn get_sandbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    let row = resolve_sandbox(&state, &principal, &sandbox).await?;
    Ok(Json(sandbox_info(&state, &row)))
}

/// `POST /v1/sandboxes/{sandbox}/stop`, `.../start` and `DELETE
/// /v1/sandboxes/{sandbox}`: lifecycle operations, audited; each answers
/// the sandbox as it is afterwards (`stopped`, `starting` or `connected`,
/// `destroyed`).
async fn lifecycle_op(
    state: AppState,
    principal: Principal,
    sandbox: String,
    action: &'static str,
) -> ApiResult<Json<SandboxInfo>> {
    let row = resolve_sandbox(&state, &principal, &sandbox).await?;
    let after = match action {
        "stopped" => crate::lifecycle::stop(&state, &row).await?,
        "started" => crate::lifecycle::start(&state, &row).await?,
        _ => crate::lifecycle::destroy(&state, &row).await?,
    };
    crate::admin::record(
        &state,
        &principal,
        &format!("sandbox.{action}"),
        &format!("sandbox/{}", row.id),
        serde_json::json!({ "name": row.name }),
    )
    .await;
    Ok(Json(sandbox_info(&state, &after)))
}

pub async fn stop_sandbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    lifecycle_op(state, principal, sandbox, "stopped").await
}

pub async fn start_sandbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    lifecycle_op(state, principal, sandbox, "started").await
}

pub async fn destroy_sandbox(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    lifecycle_op(state, principal, sandbox, "destroyed").await
}

/// `POST /v1/sandboxes/{sandbox}/token`: a new agentd token; the old one
/// stops working at once (a connected agentd stays connected until it
/// reconnects).
pub async fn rotate_sandbox_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
) -> ApiResult<Json<SandboxRegistered>> {
    let row = resolve_sandbox(&state, &principal, &sandbox).await?;
    let token = state
        .store
        .rotate_sandbox_token(&principal.tenant_id, &row.id)
        .await?;
    crate::admin::record(
        &state,
        &principal,
        "sandbox.token.rotated",
        &format!("sandbox/{}", row.id),
        serde_json::json!({ "name": row.name }),
    )
    .await;
    Ok(Json(SandboxRegistered {
        sandbox: sandbox_info(&state, &row),
        token,
    }))
}

pub async fn list_sessions(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
) -> ApiResult<Json<SessionList>> {
    let sandbox = resolve_sandbox(&state, &principal, &sandbox).await?;
    let rows = state
        .store
        .list_sessions(&principal.tenant_id, &sandbox.id)
        .await?;
    let sessions = rows.iter().map(|row| session_info(&state, row)).collect();
    Ok(Json(SessionList { sessions }))
}

pub async fn open_session(
    State(state): State<AppState>,
    principal: Principal,
    Path(sandbox): Path<String>,
    body: Result<Json<OpenSessionRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<SessionInfo>)> {
    let Json(req) = body?;
    let sandbox = resolve_sandbox(&state, &principal, &sandbox).await?;
    let (row, log) = start_session(&state, &sandbox, req).await?;
    crate::admin::record(
        &state,
        &principal,
        "session.opened",
        &format!("session/{}", row.id),
        serde_json::json!({ "sandbox": sandbox.id, "command": row.command, "args": row.args }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(log.info(&row))))
}

/// Opens a PTY session in `sandbox` (used by the API and by task steps):
/// checks the request as agentd would, stores the session, creates its log
/// before agentd is asked (so no early output is lost), and waits for agentd
/// to start the process.
pub async fn start_session(
    state: &AppState,
    sandbox: &SandboxRow,
    req: OpenSessionRequest,
) -> ApiResult<(SessionRow, Arc<SessionLog>)> {
    let size = req.size.unwrap_or(TermSize::DEFAULT);
    let probe = ControlToAgent::OpenSession {
        request_id: paddock_protocol::RequestId(0),
        session_id: SessionId(0),
        command: req.command.clone(),
        args: req.args.clone(),
        cwd: req.cwd.clone(),
        env: req.env.clone(),
        size,
    };
    probe
        .preflight()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state.hub.link(&sandbox.id).is_none() {
        return Err(HubError::Disconnected(sandbox.id.clone()).into());
    }
    // Held until the session's log is in the hub, where it counts as open.
    let _opening = state
        .admission
        .reserve_session(sandbox.id.as_str(), || state.hub.open_sessions(&sandbox.id))?;
    let row = state
        .store
        .create_session(sandbox, req.command.as_deref(), &req.args, size)
        .await?;
    let log = state.hub.log_or_insert(row.id, || {
        SessionLog::new(&row, state.config.live_buffer_bytes)
    });
    let id = row.id;
    let reply = state
        .hub
        .request(&sandbox.id, AGENT_TIMEOUT, |request_id| {
            ControlToAgent::OpenSession {
                request_id,
                session_id: id,
                command: req.command,
                args: req.args,
                cwd: req.cwd,
                env: req.env,
                size,
            }
        })
        .await;
    match reply {
        Ok(AgentReply::Opened { pid }) => {
            let initial = crate::store::SessionEvent {
                offset: 0,
                at_ms: clock::now_ms(),
                kind: "r".into(),
                data: format!("{}x{}", size.cols, size.rows),
            };
            if let Err(err) = state
                .store
                .record_event(&sandbox.tenant_id, id, &initial)
                .await
            {
                tracing::warn!(session.id = %id, error = %err, "could not record the initial size");
            }
            state
                .store
                .set_session_state(&sandbox.tenant_id, id, SessionState::Running)
                .await?;
            log.set_running();
            info!(sandbox.id = %sandbox.id, session.id = %id, pid = ?pid, "session opened");
            state.events.publish(
                &sandbox.tenant_id,
                "session.opened",
                crate::events::About {
                    sandbox_id: Some(sandbox.id.clone()),
                    session_id: Some(id),
                    ..Default::default()
                },
                serde_json::json!({ "command": row.command, "args": row.args }),
            );
            Ok((row, log))
        }
        Ok(AgentReply::Done | AgentReply::Tool(_)) => Err(ApiError::internal()),
        Err(err) => {
            state
                .store
                .finish_session(&sandbox.tenant_id, id, None, 0)
                .await?;
            log.finish(Ending::Lost("the session could not be started".into()));
            state.hub.remove_log(id);
            Err(err.into())
        }
    }
}

pub async fn get_session(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
) -> ApiResult<Json<SessionInfo>> {
    let (_, row) = resolve_session(&state, &principal, &sandbox, SessionId(session)).await?;
    Ok(Json(session_info(&state, &row)))
}

/// A live session's log, or `session_ended` for one that is over.
async fn live_log(
    state: &AppState,
    principal: &Principal,
    sandbox: &str,
    session: u64,
) -> ApiResult<Arc<SessionLog>> {
    let (_, row) = resolve_session(state, principal, sandbox, SessionId(session)).await?;
    match state.hub.log(row.id) {
        Some(log) if log.snapshot().ending.is_none() => Ok(log),
        _ => Err(ApiError::new(
            ErrorCode::SessionEnded,
            format!("session {session} has already ended"),
        )),
    }
}

pub async fn signal_session(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
    body: Result<Json<SignalRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    let log = live_log(&state, &principal, &sandbox, session).await?;
    state
        .hub
        .request(&log.sandbox_id, AGENT_TIMEOUT, |request_id| {
            ControlToAgent::SignalSession {
                request_id,
                session_id: log.id,
                signal: req.signal,
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn resize_session(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
    body: Result<Json<ResizeRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<StatusCode> {
    let Json(req) = body?;
    let probe = paddock_protocol::ClientToControl::Resize { size: req.size };
    paddock_protocol::ClientToControl::decode(&probe.encode())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let log = live_log(&state, &principal, &sandbox, session).await?;
    crate::stream::resize(&state, &log, req.size).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn close_session(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
) -> ApiResult<StatusCode> {
    let log = live_log(&state, &principal, &sandbox, session).await?;
    state
        .hub
        .request(&log.sandbox_id, AGENT_TIMEOUT, |request_id| {
            ControlToAgent::CloseSession {
                request_id,
                session_id: log.id,
            }
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/output?from=&to=`: the stored stream as raw bytes, streamed;
/// holes listed up front in the `x-paddock-gaps` header.
pub async fn session_output(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, session)): Path<(String, u64)>,
    query: Result<Query<OutputQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (_, row) = resolve_session(&state, &principal, &sandbox, SessionId(session)).await?;
    if query.format == Some(OutputFormat::Asciicast) {
        return asciicast_export(state, row).await;
    }
    let log = load_log(&state, &row);
    let end = log.end();
    let to = query.to.unwrap_or(end).min(end);
    let from = query.from.unwrap_or(0).min(to);

    // Holes are known before the body: stored gap records plus the live ring's.
    let mut holes = state
        .store
        .output_gaps(&row.tenant_id, row.id, from, to)
        .await?;
    holes.extend(log.ring_gaps(from, to));
    holes.sort_by_key(|g| g.from);
    holes.dedup_by_key(|g| g.from);
    let gaps: Vec<String> = holes
        .iter()
        .map(|g| format!("{}-{}", g.from.max(from), g.to.min(to)))
        .collect();

    let body = futures_util::stream::unfold(Some(from), move |cursor| {
        let state = state.clone();
        let log = log.clone();
        async move {
            let mut cursor = cursor?;
            loop {
                if cursor >= to {
                    return None;
                }
                let pieces = match log.read_pieces(&state.store, cursor, to).await {
                    Ok(pieces) if !pieces.is_empty() => pieces,
                    Ok(_) => return None,
                    Err(err) => {
                        tracing::error!(error = %err, "could not read stored output");
                        let err = std::io::Error::other("could not read stored output");
                        return Some((Err(err), None));
                    }
                };
                let mut chunk = Vec::new();
                for piece in pieces {
                    match piece {
                        Piece::Data { offset, data, .. } => {
                            chunk.extend_from_slice(&data);
                            cursor = offset + data.len() as u64;
                        }
                        Piece::Gap { to, .. } => cursor = to,
                    }
                }
                if !chunk.is_empty() {
                    return Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), Some(cursor)));
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&gaps.join(",")) {
        headers.insert(GAPS_HEADER, value);
    }
    Ok(response)
}

/// The whole stored session as asciicast v2, streamed page by page.
async fn asciicast_export(state: AppState, row: SessionRow) -> ApiResult<Response> {
    let events = state.store.session_events(&row.tenant_id, row.id).await?;
    let start_ms = clock::parse_ms(&row.created_at).unwrap_or(0);
    let (cols, rows) = match events.first() {
        Some(first) if first.offset == 0 && first.kind == "r" => {
            parse_size(&first.data).unwrap_or((row.size.cols, row.size.rows))
        }
        _ => (row.size.cols, row.size.rows),
    };
    let command = row.command.as_ref().map(|c| {
        std::iter::once(c.as_str())
            .chain(row.args.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let header = Encoder::header(
        cols,
        rows,
        start_ms,
        command.as_deref(),
        &format!("paddock session {}", row.id),
    );
    // Resizes after the initial size, in stream order.
    let resizes: std::collections::VecDeque<_> = events
        .into_iter()
        .filter(|e| e.kind == "r")
        .skip_while(|e| e.offset == 0)
        .collect();
    struct Cursor {
        next: u64,
        done: bool,
        encoder: Encoder,
        resizes: std::collections::VecDeque<crate::store::SessionEvent>,
    }
    let cursor = Cursor {
        next: 0,
        done: false,
        encoder: Encoder::new(start_ms),
        resizes,
    };
    let body = futures_util::stream::unfold(cursor, move |mut cursor| {
        let state = state.clone();
        let row = row.clone();
        async move {
            if cursor.done {
                return None;
            }
            let chunks = match state
                .store
                .timed_chunks(&row.tenant_id, row.id, cursor.next, 64)
                .await
            {
                Ok(chunks) => chunks,
                Err(err) => {
                    tracing::error!(error = %err, "could not read stored output");
                    return Some((
                        Err(std::io::Error::other("could not read stored output")),
                        cursor,
                    ));
                }
            };
            let mut out = String::new();
            for chunk in &chunks {
                while cursor
                    .resizes
                    .front()
                    .is_some_and(|r| r.offset <= chunk.start)
                {
                    if let Some(r) = cursor.resizes.pop_front() {
                        if let Some((c, h)) = parse_size(&r.data) {
                            out.push_str(&cursor.encoder.resize(Some(r.at_ms), c, h));
                        }
                    }
                }
                if let Some(line) = cursor.encoder.output(chunk.at_ms, &chunk.data) {
                    out.push_str(&line);
                }
                cursor.next = chunk.start + 1;
            }
            if chunks.len() < 64 {
                while let Some(r) = cursor.resizes.pop_front() {
                    if let Some((c, h)) = parse_size(&r.data) {
                        out.push_str(&cursor.encoder.resize(Some(r.at_ms), c, h));
                    }
                }
                if let Some(line) = cursor.encoder.finish() {
                    out.push_str(&line);
                }
                cursor.done = true;
            }
            Some((Ok::<_, std::io::Error>(Bytes::from(out)), cursor))
        }
    });
    let stream =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(header)) })
            .chain(body);
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-asciicast"),
    );
    Ok(response)
}

fn parse_size(s: &str) -> Option<(u16, u16)> {
    let (cols, rows) = s.split_once('x')?;
    Some((cols.parse().ok()?, rows.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_names_are_url_and_shell_safe() {
        assert!(validate_name("local-1").is_ok());
        assert!(validate_name("a.b_c").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("sbx_abc").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
    }
}
