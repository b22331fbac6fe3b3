//! `POST /v1/sandboxes/{sandbox}/tools/{tool}`: typed tool calls (git, LSP,
//! files, exec) forwarded to the sandbox's agentd with a correlation id and
//! a deadline, cancelled in agentd when the caller goes away, and audited.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::Json;
use paddock_protocol::api::tool_call_from_body;
use paddock_protocol::{ControlToAgent, ErrorCode, RequestId, ToolCall, ToolOutput};
use serde_json::{json, Value};

use crate::api::resolve_sandbox;
use crate::error::ApiError;
use crate::hub::{AgentReply, HubError, Outgoing};
use crate::store::Principal;
use crate::AppState;

/// Slack over the call's own deadline: agentd answers `timeout` itself first.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// Sends `CancelRequest` for a call whose caller went away before the answer.
struct CancelOnDrop {
    tx_out: Option<tokio::sync::mpsc::Sender<Outgoing>>,
    request_id: RequestId,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(tx_out) = self.tx_out.take() {
            let cancel = ControlToAgent::CancelRequest {
                request_id: self.request_id,
            };
            // Best effort: a full queue or a gone link means nothing runs anyway.
            let _ = tx_out.try_send(Outgoing::Text(cancel.encode()));
        }
    }
}

pub async fn call_tool(
    State(state): State<AppState>,
    principal: Principal,
    Path((sandbox, tool)): Path<(String, String)>,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<ToolOutput>, ApiError> {
    let Json(body) = body?;
    let sandbox = resolve_sandbox(&state, &principal, &sandbox).await?;
    if principal.role == paddock_protocol::admin::Role::Agent {
        agent_may_use(&state, &principal, &sandbox).await?;
    }
    // The same checks agentd applies, before anything is sent.
    let (call, timeout_ms) =
        tool_call_from_body(&tool, body).map_err(|e| ApiError::bad_request(e.to_string()))?;

    // A push is a governed action: an agent's pushes count against its quota.
    if matches!(call, ToolCall::GitPush(_)) {
        if let Some(agent) = &principal.agent_id {
            crate::tasks_api::govern_push(&state, &principal, &principal.tenant_id, agent).await?;
        }
    }
    let link = state
        .hub
        .link(&sandbox.id)
        .ok_or_else(|| HubError::Disconnected(sandbox.id.clone()))?;
    let deadline = Duration::from_millis(timeout_ms.unwrap_or_else(|| call.default_timeout_ms()))
        + DEADLINE_SLACK;
    let mut guard = CancelOnDrop {
        tx_out: None,
        request_id: RequestId(0),
    };
    let reply = state
        .hub
        .request(&sandbox.id, deadline, |request_id| {
            guard.tx_out = Some(link.tx_out.clone());
            guard.request_id = request_id;
            ControlToAgent::ToolCall {
                request_id,
                timeout_ms,
                call: call.clone(),
            }
        })
        .await;
    // Answered (or failed) while the caller waited: nothing to cancel.
    guard.tx_out = None;
    let resource = format!("sandbox/{}", sandbox.id);
    let outcome = match &reply {
        Ok(_) => "ok".to_owned(),
        Err(err) => err.to_string(),
    };
    crate::admin::record(
        &state,
        &principal,
        &format!("tool.{}", call.name()),
        &resource,
        json!({ "outcome": outcome }),
    )
    .await;
    match reply? {
        AgentReply::Tool(output) => Ok(Json(*output)),
        AgentReply::Opened { .. } | AgentReply::Done => Err(ApiError::new(
            ErrorCode::Internal,
            "agentd answered a tool call with something else",
        )),
    }
}

/// An `agent` token may call tools only on a sandbox that is running one of
/// its own agent's tasks right now.
async fn agent_may_use(
    state: &AppState,
    principal: &Principal,
    sandbox: &crate::store::SandboxRow,
) -> Result<(), ApiError> {
    let refuse = || {
        ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "sandbox {} is not running a task of this agent; agents call tools only where their tasks run",
                sandbox.name
            ),
        )
    };
    let Some(agent) = &principal.agent_id else {
        return Err(refuse());
    };
    let Some(task) = state.scheduler.task_on(&sandbox.id) else {
        return Err(refuse());
    };
    match state.store.get_task(&principal.tenant_id, &task).await? {
        Some(task) if &task.agent_id == agent => Ok(()),
        _ => Err(refuse()),
    }
}
