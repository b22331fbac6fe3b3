//! HTTP handlers for agents and tasks, and the governance hooks the
//! scheduler calls before dispatch and after each outcome.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use paddock_protocol::admin::Role;
use paddock_protocol::tasks::{
    AgentInfo, AgentList, CreateAgent, SubmitTask, TaskDecision, TaskEvents, TaskInfo, TaskList,
    TaskState,
};
use paddock_protocol::{ControlToAgent, ErrorCode, RequestId};
use serde::Deserialize;
use serde_json::json;

use crate::admin::record;
use crate::api::validate_name;
use crate::error::ApiError;
use crate::events::About;
use crate::store::{Principal, TaskRow};
use crate::AppState;

type ApiResult<T> = Result<T, ApiError>;
type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Most steps a task may have.
const MAX_STEPS: usize = 64;

pub async fn list_agents(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<AgentList>> {
    Ok(Json(AgentList {
        agents: state.store.list_agents(&principal.tenant_id).await?,
    }))
}

pub async fn create_agent(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<CreateAgent>,
) -> ApiResult<(StatusCode, Json<AgentInfo>)> {
    let Json(body) = body?;
    validate_name(&body.name)?;
    let agent = state
        .store
        .create_agent(&principal.tenant_id, &body.name)
        .await?;
    record(
        &state,
        &principal,
        "agent.created",
        &format!("agent/{}", agent.id),
        json!({ "name": agent.name }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(agent)))
}

/// The agent a request may act for: an `agent` token only for its own.
async fn agent_for(state: &AppState, principal: &Principal, name: &str) -> ApiResult<AgentInfo> {
    let agent = state
        .store
        .find_agent(&principal.tenant_id, name)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no agent `{name}`; `paddock agents list` lists them"
            ))
        })?;
    if principal.role == Role::Agent && principal.agent_id.as_deref() != Some(agent.id.as_str()) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("this agent token acts for another agent, not `{name}`"),
        ));
    }
    Ok(agent)
}

pub async fn submit_task(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<SubmitTask>,
) -> ApiResult<(StatusCode, Json<TaskInfo>)> {
    let Json(spec) = body?;
    if spec.steps.is_empty() || spec.steps.len() > MAX_STEPS {
        return Err(ApiError::bad_request(format!(
            "a task has 1 to {MAX_STEPS} steps"
        )));
    }
    if spec.retry.attempts == 0 || spec.retry.attempts > 20 {
        return Err(ApiError::bad_request("retry.attempts must be 1 to 20"));
    }
    for step in &spec.steps {
        if let paddock_protocol::tasks::Step::Tool { call } = step {
            let probe = ControlToAgent::ToolCall {
                request_id: RequestId(0),
                timeout_ms: None,
                call: call.clone(),
            };
            probe
                .preflight()
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    let agent = agent_for(&state, &principal, &spec.agent).await?;
    let (initial, reason) = match restricted(&state, &principal.tenant_id, &agent.id).await {
        Some(why) => (TaskState::AwaitingApproval, Some(why)),
        None => (TaskState::Pending, None),
    };
    let (task, created) = state
        .store
        .create_task(
            &principal.tenant_id,
            &agent,
            &spec,
            initial,
            reason.as_deref(),
        )
        .await?;
    if created {
        let kind = match initial {
            TaskState::AwaitingApproval => "task.awaiting_approval",
            _ => "task.submitted",
        };
        task_event(
            &state,
            &task,
            kind,
            json!({ "by": principal.token_id, "reason": reason }),
        )
        .await;
        record(
            &state,
            &principal,
            "task.submitted",
            &format!("task/{}", task.info.id),
            json!({ "agent": agent.name }),
        )
        .await;
        state.scheduler.wake();
    }
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(task.info)))
}

#[derive(Debug, Deserialize)]
pub struct TaskQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn list_tasks(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<TaskQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<TaskList>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = match query.state.as_deref() {
        None | Some("") => None,
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::bad_request(format!("unknown state `{s}`; one of pending, awaiting_approval, running, retrying, succeeded, failed, timed_out, cancelled, rejected"))
        })?),
    };
    // An agent sees its own tasks only.
    let agent = if principal.role == Role::Agent {
        Some(principal.agent_id.clone().unwrap_or_default())
    } else {
        None
    };
    let rows = state
        .store
        .list_tasks(
            &principal.tenant_id,
            filter,
            agent.as_deref(),
            query.limit.unwrap_or(200).clamp(1, 1000),
        )
        .await?;
    Ok(Json(TaskList {
        tasks: rows.into_iter().map(|r| r.info).collect(),
    }))
}

async fn load_task(state: &AppState, principal: &Principal, id: &str) -> ApiResult<TaskRow> {
    let task = state
        .store
        .get_task(&principal.tenant_id, id)
        .await?
        .filter(|t| {
            principal.role != Role::Agent
                || principal.agent_id.as_deref() == Some(t.agent_id.as_str())
        })
        .ok_or_else(|| {
            ApiError::not_found(format!("no task `{id}`; `paddock tasks list` lists them"))
        })?;
    Ok(task)
}

pub async fn get_task(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskInfo>> {
    Ok(Json(load_task(&state, &principal, &id).await?.info))
}

pub async fn task_events(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<TaskEvents>> {
    let task = load_task(&state, &principal, &id).await?;
    Ok(Json(TaskEvents {
        events: state
            .store
            .task_events(&task.tenant_id, &task.info.id)
            .await?,
    }))
}

pub async fn cancel_task(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Option<Json<TaskDecision>>,
) -> ApiResult<Json<TaskInfo>> {
    let task = load_task(&state, &principal, &id).await?;
    let reason = body
        .and_then(|Json(b)| b.reason)
        .unwrap_or_else(|| "cancelled".into());
    let from = [
        TaskState::Pending,
        TaskState::AwaitingApproval,
        TaskState::Running,
        TaskState::Retrying,
    ];
    if !state
        .store
        .transition_task(
            &task.tenant_id,
            &task.info.id,
            &from,
            TaskState::Cancelled,
            Some(&reason),
        )
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("task {id} has already ended ({})", task.info.state.as_str()),
        ));
    }
    state.scheduler.cancel(&task.info.id);
    task_event(
        &state,
        &task,
        "task.cancelled",
        json!({ "by": principal.token_id, "reason": reason }),
    )
    .await;
    record(
        &state,
        &principal,
        "task.cancelled",
        &format!("task/{id}"),
        json!({ "reason": reason }),
    )
    .await;
    Ok(Json(load_task(&state, &principal, &id).await?.info))
}

pub async fn approve_task(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Option<Json<TaskDecision>>,
) -> ApiResult<Json<TaskInfo>> {
    decide(state, principal, id, body, true).await
}

pub async fn reject_task(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Option<Json<TaskDecision>>,
) -> ApiResult<Json<TaskInfo>> {
    decide(state, principal, id, body, false).await
}

async fn decide(
    state: AppState,
    principal: Principal,
    id: String,
    body: Option<Json<TaskDecision>>,
    approve: bool,
) -> ApiResult<Json<TaskInfo>> {
    let task = load_task(&state, &principal, &id).await?;
    let reason = body.and_then(|Json(b)| b.reason);
    let (to, kind) = if approve {
        (TaskState::Pending, "task.approved")
    } else {
        (TaskState::Rejected, "task.rejected")
    };
    if !state
        .store
        .transition_task(
            &task.tenant_id,
            &task.info.id,
            &[TaskState::AwaitingApproval],
            to,
            reason.as_deref(),
        )
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "task {id} is not awaiting approval ({})",
                task.info.state.as_str()
            ),
        ));
    }
    task_event(
        &state,
        &task,
        kind,
        json!({ "by": principal.token_id, "reason": reason }),
    )
    .await;
    record(
        &state,
        &principal,
        kind,
        &format!("task/{id}"),
        json!({ "reason": reason }),
    )
    .await;
    state.scheduler.wake();
    Ok(Json(load_task(&state, &principal, &id).await?.info))
}

async fn task_event(state: &AppState, task: &TaskRow, kind: &str, detail: serde_json::Value) {
    if let Err(err) = state
        .store
        .add_task_event(&task.tenant_id, &task.info.id, kind, &detail)
        .await
    {
        tracing::warn!(error = %err, kind, "could not store a task event");
    }
    let about = About {
        task_id: Some(task.info.id.clone()),
        ..Default::default()
    };
    state.events.publish(&task.tenant_id, kind, about, detail);
}

/// Whether the agent's new tasks must wait for approval, and why.
async fn restricted(state: &AppState, tenant: &str, agent_id: &str) -> Option<String> {
    match state.governance.check_restricted(tenant, agent_id).await {
        Ok(()) => None,
        Err(err) => match err.refusal() {
            Some(refusal) => Some(format!("{}: {refusal}", refusal.code())),
            None => {
                // Unknown is not allowed: a storage failure sends it to a person.
                tracing::error!(error = %err, "could not read the agent's reputation");
                Some("agent_restricted: reputation unavailable; a person must approve".into())
            }
        },
    }
}

/// Why a runnable task may not be dispatched now, if it may not: budgets and
/// the execution quota, checked and counted in one transaction. Restriction
/// was decided at submission (approval, if needed, already happened).
pub async fn dispatch_refusal(state: &AppState, task: &TaskRow, now_ms: i64) -> Option<String> {
    match state
        .governance
        .admit_task(&task.tenant_id, &task.agent_id, true, now_ms)
        .await
    {
        Ok(()) => None,
        Err(err) => match err.refusal() {
            Some(refusal) => Some(format!("{}: {refusal}", refusal.code())),
            None => Some(format!("governance unavailable: {err}")),
        },
    }
}

/// Governance bookkeeping after each attempt: sandbox time is a cost; a
/// final outcome moves the agent's reputation.
pub async fn on_attempt(state: &AppState, task: &TaskRow, seconds: u64, outcome: Option<bool>) {
    let now = crate::clock::now_ms();
    let rate = state.config.sandbox_micros_per_hour;
    if let Err(err) = state
        .governance
        .record_sandbox_time(&task.tenant_id, &task.agent_id, seconds, rate, now)
        .await
    {
        tracing::warn!(error = %err, "could not record sandbox time");
    }
    if let Some(succeeded) = outcome {
        let (result, reason) = if succeeded {
            (
                crate::governance::Outcome::Success,
                format!("task {} succeeded", task.info.id),
            )
        } else {
            (
                crate::governance::Outcome::Failure,
                format!("task {} failed", task.info.id),
            )
        };
        if let Err(err) = state
            .governance
            .apply_outcome(&task.tenant_id, &task.agent_id, result, &reason, now)
            .await
        {
            tracing::warn!(error = %err, "could not update the agent's reputation");
        }
    }
}

/// `GET /v1/agents/{agent}`: the agent with its governance state — score,
/// restriction, budgets used and limits left, recent reputation events.
pub async fn agent_status(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let agent = agent_for(&state, &principal, &name).await?;
    let now = crate::clock::now_ms();
    let status = state
        .governance
        .status(&principal.tenant_id, &agent.id, now)
        .await?;
    let events = state
        .governance
        .reputation_events(&principal.tenant_id, &agent.id, 20)
        .await?;
    let l = status.limits;
    Ok(Json(json!({
        "agent": agent,
        "reputation": status.reputation,
        "restricted": status.restricted,
        "limits": {
            "pushes_per_hour": l.pushes_per_hour,
            "executions_per_day": l.executions_per_day,
            "budget_hourly_micros": l.budget_hourly_micros,
            "budget_daily_micros": l.budget_daily_micros,
        },
        "used": {
            "pushes_in_hour": status.pushes_in_window,
            "executions_in_day": status.executions_in_window,
            "spent_hourly_micros": status.spent.hourly_micros,
            "spent_daily_micros": status.spent.daily_micros,
        },
        "left": {
            "pushes": u64::from(l.pushes_per_hour).saturating_sub(status.pushes_in_window),
            "executions": u64::from(l.executions_per_day).saturating_sub(status.executions_in_window),
            "budget_hourly_micros": (l.budget_hourly_micros - status.spent.hourly_micros).max(0),
            "budget_daily_micros": (l.budget_daily_micros - status.spent.daily_micros).max(0),
        },
        "reputation_events": events.iter().map(|e| json!({
            "at_ms": e.at_ms,
            "outcome": e.outcome.as_str(),
            "delta": e.delta,
            "reason": e.reason,
            "score_after": e.score_after,
        })).collect::<Vec<_>>(),
    })))
}

/// `PUT /v1/agents/{agent}/limits`: an agent's overrides of the tenant's limits.
pub async fn set_agent_limits(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody<crate::governance::LimitOverrides>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(overrides) = body?;
    let agent = agent_for(&state, &principal, &name).await?;
    state
        .governance
        .set_limits(&principal.tenant_id, Some(&agent.id), &overrides)
        .await?;
    record(
        &state,
        &principal,
        "agent.limits.set",
        &format!("agent/{}", agent.id),
        serde_json::to_value(&overrides).unwrap_or_default(),
    )
    .await;
    agent_status(State(state), principal, Path(name)).await
}

/// `PUT /v1/limits`: the tenant's limits (per-agent defaults and tenant totals).
pub async fn set_tenant_limits(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<crate::governance::LimitOverrides>,
) -> ApiResult<StatusCode> {
    let Json(overrides) = body?;
    state
        .governance
        .set_limits(&principal.tenant_id, None, &overrides)
        .await?;
    record(
        &state,
        &principal,
        "tenant.limits.set",
        &format!("tenant/{}", principal.tenant_id),
        serde_json::to_value(&overrides).unwrap_or_default(),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct ReportCost {
    /// `llm_tokens`, `api_call`, `storage` or `sandbox_time`.
    kind: String,
    /// Micro-dollars (1 $ = 1,000,000).
    micros: i64,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /v1/agents/{agent}/costs`: a cost the agent incurred outside the sandbox.
pub async fn report_cost(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody<ReportCost>,
) -> ApiResult<Json<serde_json::Value>> {
    let Json(cost) = body?;
    let agent = agent_for(&state, &principal, &name).await?;
    let kind = crate::governance::CostKind::parse(&cost.kind).ok_or_else(|| {
        ApiError::bad_request("kind must be one of llm_tokens, api_call, storage, sandbox_time")
    })?;
    let recorded = state
        .governance
        .record_cost(
            &principal.tenant_id,
            &agent.id,
            kind,
            cost.micros,
            cost.note.as_deref(),
            crate::clock::now_ms(),
        )
        .await?;
    Ok(Json(json!({
        "spent_hourly_micros": recorded.spent.hourly_micros,
        "spent_daily_micros": recorded.spent.daily_micros,
        "overrun": recorded.overrun.map(|r| json!({ "before": r.before, "after": r.after, "restricted": r.restricted })),
    })))
}

/// Governance for a push by `agent_id`: one slot of the rolling quota, or
/// the refusal (audited).
pub async fn govern_push(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    agent_id: &str,
) -> ApiResult<()> {
    match state
        .governance
        .try_action(
            tenant,
            agent_id,
            crate::governance::Action::Push,
            crate::clock::now_ms(),
        )
        .await
    {
        Ok(()) => Ok(()),
        Err(err) => {
            let code = err.refusal().map_or("unavailable", |r| r.code());
            metrics::counter!(crate::telemetry::GOVERNANCE_REFUSALS, "reason" => code).increment(1);
            if let Some(refusal) = err.refusal() {
                record(state, principal, "governance.refused", &format!("agent/{agent_id}"), json!({ "action": "push", "reason": refusal.code(), "message": refusal.to_string() })).await;
            }
            Err(err.into())
        }
    }
}
