//! The scheduler: takes runnable tasks from the durable queue, picks an
//! idle connected sandbox of the tenant whose labels match, claims the task
//! (a conditional update: with several control planes on one database,
//! exactly one wins), and runs its steps — PTY sessions that anyone may
//! watch, or tool calls — under the task's timeout, with retries per its
//! policy. Every transition is a stored task event and a live event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paddock_protocol::api::OpenSessionRequest;
use paddock_protocol::tasks::{Step, StepResult, TaskState};
use paddock_protocol::{ControlToAgent, SandboxId, SessionId};
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::events::About;
use crate::fanout::Ending;
use crate::hub::AgentReply;
use crate::store::{SandboxRow, SystemStore, TaskRow};
use crate::{clock, telemetry, AppState};

/// How often the queue is scanned when nothing wakes the scheduler.
const SCAN_INTERVAL: Duration = Duration::from_millis(500);

/// What request handlers may ask of the scheduler.
#[derive(Debug, Default)]
pub struct SchedulerHandle {
    wake: Notify,
    /// Tasks running here, by id: cancelling the token stops the task.
    running: Mutex<HashMap<String, CancellationToken>>,
    /// Sandboxes busy with a task, by id.
    busy: Mutex<HashMap<SandboxId, String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SchedulerHandle {
    /// Something changed (a task submitted, a sandbox connected): look again.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The task running on `sandbox` here, if any.
    pub fn task_on(&self, sandbox: &SandboxId) -> Option<String> {
        lock(&self.busy).get(sandbox).cloned()
    }

    /// Stops a task running here; `false` if it does not run here.
    pub fn cancel(&self, task: &str) -> bool {
        match lock(&self.running).get(task) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Why an attempt ended.
enum Ended {
    Succeeded,
    Failed(String),
    TimedOut,
    Cancelled,
    /// A hard budget limit was crossed while it ran.
    OverBudget(String),
}

/// How often a running task's budget is checked.
const BUDGET_CHECK: Duration = Duration::from_secs(1);

/// Returns (with the reason) once the agent's spending — what is recorded
/// plus this attempt's sandbox time so far — crosses a hard limit; never
/// returns while it stays within them.
async fn watch_budget(state: &AppState, tenant: &str, agent: &str) -> String {
    let started = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(BUDGET_CHECK).await;
        let now = clock::now_ms();
        let (Ok(limits), Ok(spent)) = (
            state.governance.limits(tenant, agent).await,
            state.governance.spent(tenant, agent, now).await,
        ) else {
            continue; // Storage trouble: keep running, check again.
        };
        let running = crate::governance::sandbox_time_micros(
            started.elapsed().as_secs(),
            state.config.sandbox_micros_per_hour,
        )
        .unwrap_or(0);
        for (window, spent, limit) in [
            ("hourly", spent.hourly_micros, limits.budget_hourly_micros),
            ("daily", spent.daily_micros, limits.budget_daily_micros),
        ] {
            if spent + running > limit {
                return format!(
                    "budget_exceeded: the agent's {window} budget of {} micro-dollars is used up ({} spent, {} by this run)",
                    limit, spent + running, running
                );
            }
        }
    }
}

pub fn spawn_scheduler(
    state: AppState,
    system: SystemStore,
    owner: String,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        recover(&state, &system, &owner).await;
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                _ = state.scheduler.wake.notified() => {}
                _ = tokio::time::sleep(SCAN_INTERVAL) => {}
            }
            if let Err(err) = dispatch(&state, &system, &owner).await {
                warn!(error = %err, "task dispatch failed; will retry");
            }
        }
        // Running tasks stop with the control plane; the next start retries them.
        for token in lock(&state.scheduler.running).values() {
            token.cancel();
        }
    })
}

/// After a restart, attempts this control plane had running have no runner
/// any more: each counts as a lost attempt, retried per the task's policy.
async fn recover(state: &AppState, system: &SystemStore, owner: &str) {
    let orphans = match system.running_tasks_of(owner).await {
        Ok(orphans) => orphans,
        Err(err) => {
            warn!(error = %err, "could not look for interrupted tasks");
            return;
        }
    };
    for task in orphans {
        info!(task.id = %task.info.id, "task interrupted by a restart");
        finish_attempt(
            state,
            &task,
            Ended::Failed("the control plane restarted during the attempt".into()),
        )
        .await;
    }
}

async fn dispatch(state: &AppState, system: &SystemStore, owner: &str) -> crate::store::Result<()> {
    let now = clock::now_ms();
    for task in system.runnable_tasks(now, 64).await? {
        let tenant = task.tenant_id.clone();
        let running_in_tenant = {
            let busy = lock(&state.scheduler.busy);
            let running = lock(&state.scheduler.running);
            running
                .keys()
                .filter(|id| busy.values().any(|t| t == *id))
                .count()
        };
        if running_in_tenant >= state.config.max_tasks_per_tenant {
            continue;
        }
        let Some(sandbox) = pick_sandbox(state, &task).await? else {
            // A pool serving these labels starts or creates one; its
            // connection wakes the scheduler.
            crate::pools::on_demand(state, &tenant, &task.info.labels).await;
            continue;
        };
        if let Some(refusal) = crate::tasks_api::dispatch_refusal(state, &task, now).await {
            // Stays queued; the reason tells why (once per change).
            if task.info.reason.as_deref() != Some(refusal.as_str()) {
                // Counted once per change of reason, like the audit below.
                let code = refusal.split(':').next().unwrap_or_default().to_owned();
                metrics::counter!(telemetry::GOVERNANCE_REFUSALS, "reason" => code).increment(1);
                let _ = state
                    .store
                    .transition_task(
                        &tenant,
                        &task.info.id,
                        &[task.info.state],
                        task.info.state,
                        Some(&refusal),
                    )
                    .await;
                event(state, &task, "task.held", json!({ "reason": refusal })).await;
                // Governance refusals are audited, with the system as the actor.
                let _ = state
                    .store
                    .audit(
                        &tenant,
                        "system",
                        "system",
                        "governance.refused",
                        &format!("task/{}", task.info.id),
                        &json!({ "action": "task_execution", "agent": task.agent_id, "reason": refusal }),
                    )
                    .await;
            }
            continue;
        }
        if !system.claim_task(&task.info.id, &sandbox.id, owner).await? {
            continue; // Another control plane took it.
        }
        let token = CancellationToken::new();
        lock(&state.scheduler.busy).insert(sandbox.id.clone(), task.info.id.clone());
        lock(&state.scheduler.running).insert(task.info.id.clone(), token.clone());
        let attempt = task.info.attempt + 1;
        let span = tracing::info_span!("task", task.id = %task.info.id, tenant.id = %tenant, sandbox.id = %sandbox.id);
        let state = state.clone();
        tokio::spawn(
            async move {
                let mut task = task;
                task.info.attempt = attempt;
                task.info.sandbox_id = Some(sandbox.id.clone());
                event(
                    &state,
                    &task,
                    "task.started",
                    json!({ "attempt": attempt, "sandbox": sandbox.id }),
                )
                .await;
                let started = std::time::Instant::now();
                let ended = run(&state, &mut task, &sandbox, &token).await;
                let outcome = match &ended {
                    Ended::Succeeded => Some(true),
                    Ended::Failed(_) if attempt >= task.info.retry.attempts => Some(false),
                    Ended::TimedOut | Ended::OverBudget(_) => Some(false),
                    _ => None,
                };
                crate::tasks_api::on_attempt(
                    &state,
                    &task,
                    started.elapsed().as_secs().max(1),
                    outcome,
                )
                .await;
                finish_attempt(&state, &task, ended).await;
                lock(&state.scheduler.busy).remove(&sandbox.id);
                lock(&state.scheduler.running).remove(&task.info.id);
                state.scheduler.wake();
            }
            .instrument(span),
        );
    }
    Ok(())
}

/// An idle connected sandbox of the task's tenant carrying all its labels.
async fn pick_sandbox(
    state: &AppState,
    task: &TaskRow,
) -> crate::store::Result<Option<SandboxRow>> {
    let sandboxes = state.store.list_sandboxes(&task.tenant_id).await?;
    let busy = lock(&state.scheduler.busy);
    Ok(sandboxes.into_iter().find(|sb| {
        state.hub.link(&sb.id).is_some()
            && !busy.contains_key(&sb.id)
            && task
                .info
                .labels
                .iter()
                .all(|(k, v)| sb.labels.get(k) == Some(v))
    }))
}

async fn event(state: &AppState, task: &TaskRow, kind: &str, detail: serde_json::Value) {
    if let Err(err) = state
        .store
        .add_task_event(&task.tenant_id, &task.info.id, kind, &detail)
        .await
    {
        warn!(error = %err, kind, "could not store a task event");
    }
    let about = About {
        task_id: Some(task.info.id.clone()),
        sandbox_id: task.info.sandbox_id.clone(),
        session_id: None,
    };
    state.events.publish(&task.tenant_id, kind, about, detail);
}

/// Runs every step of one attempt under the task's timeout.
async fn run(
    state: &AppState,
    task: &mut TaskRow,
    sandbox: &SandboxRow,
    cancel: &CancellationToken,
) -> Ended {
    let current: Arc<Mutex<Option<SessionId>>> = Arc::default();
    let timeout = task.info.timeout_secs;
    let (tenant, agent) = (task.tenant_id.clone(), task.agent_id.clone());
    let steps = run_steps(state, task, sandbox, cancel, current.clone());
    let limited = async {
        match timeout {
            Some(secs) => match tokio::time::timeout(Duration::from_secs(secs), steps).await {
                Ok(ended) => ended,
                Err(_) => Ended::TimedOut,
            },
            None => steps.await,
        }
    };
    let outcome = tokio::select! {
        ended = limited => ended,
        why = watch_budget(state, &tenant, &agent) => Ended::OverBudget(why),
    };
    if matches!(
        outcome,
        Ended::TimedOut | Ended::Cancelled | Ended::OverBudget(_)
    ) {
        // Whatever step was under way ends with the task.
        let session = *lock(&current);
        if let Some(session) = session {
            let _ = state
                .hub
                .request(&sandbox.id, Duration::from_secs(5), |request_id| {
                    ControlToAgent::CloseSession {
                        request_id,
                        session_id: session,
                    }
                })
                .await;
        }
    }
    outcome
}

async fn run_steps(
    state: &AppState,
    task: &mut TaskRow,
    sandbox: &SandboxRow,
    cancel: &CancellationToken,
    current: Arc<Mutex<Option<SessionId>>>,
) -> Ended {
    let attempt = task.info.attempt;
    for (index, step) in task.info.steps.clone().into_iter().enumerate() {
        let step_no = index as u32 + 1;
        event(
            state,
            task,
            "task.step.started",
            json!({ "attempt": attempt, "step": step_no }),
        )
        .await;
        let mut result = StepResult {
            attempt,
            step: step_no,
            session_id: None,
            exit: None,
            output: None,
            error: None,
        };
        let failure = match step {
            Step::Run {
                command,
                args,
                cwd,
                env,
            } => {
                let req = OpenSessionRequest {
                    command: Some(command),
                    args,
                    cwd,
                    env,
                    size: None,
                };
                match crate::api::start_session(state, sandbox, req).await {
                    Err(err) => Some(err.message),
                    Ok((row, log)) => {
                        result.session_id = Some(row.id);
                        *lock(&current) = Some(row.id);
                        // Watchers can find the session while it runs.
                        task.info.results.push(result.clone());
                        let _ = state
                            .store
                            .set_task_results(&task.tenant_id, &task.info.id, &task.info.results)
                            .await;
                        task.info.results.pop();
                        match wait_session(state, &log, sandbox, cancel).await {
                            Err(ended) => return ended,
                            Ok(Ending::Exited(status)) => {
                                result.exit = Some(status);
                                (!status.success())
                                    .then(|| format!("step {step_no} ended with {status}"))
                            }
                            Ok(Ending::Lost(reason)) => {
                                Some(format!("step {step_no} was lost: {reason}"))
                            }
                        }
                    }
                }
            }
            Step::Tool { call } => {
                if matches!(call, paddock_protocol::ToolCall::GitPush(_)) {
                    let now = clock::now_ms();
                    if let Err(err) = state
                        .governance
                        .try_action(
                            &task.tenant_id,
                            &task.agent_id,
                            crate::governance::Action::Push,
                            now,
                        )
                        .await
                    {
                        let code = err.refusal().map_or("unavailable", |r| r.code());
                        metrics::counter!(telemetry::GOVERNANCE_REFUSALS, "reason" => code)
                            .increment(1);
                        let why = format!("step {step_no}: push refused: {err}");
                        result.error = Some(why.clone());
                        task.info.results.push(result);
                        let _ = state
                            .store
                            .set_task_results(&task.tenant_id, &task.info.id, &task.info.results)
                            .await;
                        event(
                            state,
                            task,
                            "governance.refused",
                            json!({ "action": "push", "reason": err.to_string() }),
                        )
                        .await;
                        return Ended::Failed(why);
                    }
                }
                let timeout =
                    Duration::from_millis(call.default_timeout_ms()) + Duration::from_secs(5);
                let request = state.hub.request(&sandbox.id, timeout, |request_id| {
                    ControlToAgent::ToolCall {
                        request_id,
                        timeout_ms: None,
                        call: call.clone(),
                    }
                });
                let reply = tokio::select! {
                    reply = request => reply,
                    _ = cancel.cancelled() => return Ended::Cancelled,
                };
                match reply {
                    Ok(AgentReply::Tool(output)) => {
                        result.output = serde_json::to_value(&*output).ok();
                        tool_failure(&output).map(|why| format!("step {step_no}: {why}"))
                    }
                    Ok(_) => Some(format!("step {step_no}: agentd answered something else")),
                    Err(err) => Some(format!("step {step_no}: {err}")),
                }
            }
        };
        *lock(&current) = None;
        result.error = failure.clone();
        task.info.results.push(result);
        let _ = state
            .store
            .set_task_results(&task.tenant_id, &task.info.id, &task.info.results)
            .await;
        event(
            state,
            task,
            "task.step.finished",
            json!({ "attempt": attempt, "step": step_no, "error": failure }),
        )
        .await;
        if let Some(why) = failure {
            return Ended::Failed(why);
        }
    }
    Ended::Succeeded
}

/// A tool step fails when the tool ran but reports failure (an exec's
/// non-zero exit); errors of the call itself come back as `Err`.
fn tool_failure(output: &paddock_protocol::ToolOutput) -> Option<String> {
    let value = serde_json::to_value(output).ok()?;
    if value.get("tool")?.as_str()? != "exec" {
        return None;
    }
    if value.get("timed_out").and_then(|v| v.as_bool()) == Some(true) {
        return Some("the command timed out".into());
    }
    let status: paddock_protocol::ExitStatus =
        serde_json::from_value(value.get("status")?.clone()).ok()?;
    (!status.success()).then(|| format!("the command ended with {status}"))
}

/// Waits for a step's session to end; a sandbox gone for three heartbeats
/// loses the step, and cancellation ends the attempt.
async fn wait_session(
    state: &AppState,
    log: &crate::fanout::SessionLog,
    sandbox: &SandboxRow,
    cancel: &CancellationToken,
) -> Result<Ending, Ended> {
    let mut rx = log.subscribe();
    let grace = Duration::from_millis(state.config.heartbeat_ms.saturating_mul(3));
    let mut gone_since: Option<tokio::time::Instant> = None;
    loop {
        rx.borrow_and_update();
        if let Some(ending) = log.snapshot().ending {
            return Ok(ending);
        }
        if state.hub.link(&sandbox.id).is_none() {
            let since = *gone_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= grace {
                return Ok(Ending::Lost("the sandbox disconnected".into()));
            }
        } else {
            gone_since = None;
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = cancel.cancelled() => return Err(Ended::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Records how an attempt ended: the final state, or a retry per policy.
async fn finish_attempt(state: &AppState, task: &TaskRow, ended: Ended) {
    let tenant = &task.tenant_id;
    let id = &task.info.id;
    let from = [TaskState::Running];
    let (kind, detail) = match ended {
        Ended::Succeeded => {
            let _ = state
                .store
                .transition_task(tenant, id, &from, TaskState::Succeeded, None)
                .await;
            ("task.succeeded", json!({ "attempt": task.info.attempt }))
        }
        Ended::TimedOut => {
            let reason = format!(
                "the task ran over its timeout of {}s",
                task.info.timeout_secs.unwrap_or(0)
            );
            let _ = state
                .store
                .transition_task(tenant, id, &from, TaskState::TimedOut, Some(&reason))
                .await;
            ("task.timed_out", json!({ "reason": reason }))
        }
        Ended::OverBudget(why) => {
            let _ = state
                .store
                .transition_task(tenant, id, &from, TaskState::Failed, Some(&why))
                .await;
            (
                "task.failed",
                json!({ "attempt": task.info.attempt, "reason": why }),
            )
        }
        Ended::Cancelled if state.shutdown.is_cancelled() => {
            // Stopped by a shutdown: left `running`, so the next start
            // retries it (see `recover`).
            return;
        }
        Ended::Cancelled => {
            // The API already stored `cancelled`; this makes sure of it.
            let _ = state
                .store
                .transition_task(tenant, id, &from, TaskState::Cancelled, Some("cancelled"))
                .await;
            ("task.cancelled", json!({ "attempt": task.info.attempt }))
        }
        Ended::Failed(why) => {
            if task.info.attempt < task.info.retry.attempts {
                let not_before = clock::now_ms() + (task.info.retry.backoff_secs as i64) * 1000;
                let _ = state.store.retry_task(tenant, id, not_before, &why).await;
                (
                    "task.retrying",
                    json!({ "attempt": task.info.attempt, "reason": why, "backoff_secs": task.info.retry.backoff_secs }),
                )
            } else {
                let _ = state
                    .store
                    .transition_task(tenant, id, &from, TaskState::Failed, Some(&why))
                    .await;
                (
                    "task.failed",
                    json!({ "attempt": task.info.attempt, "reason": why }),
                )
            }
        }
    };
    let final_state = match kind {
        "task.succeeded" => Some("succeeded"),
        "task.timed_out" => Some("timed_out"),
        "task.failed" => Some("failed"),
        "task.cancelled" => Some("cancelled"),
        _ => None,
    };
    if let Some(final_state) = final_state {
        metrics::counter!(telemetry::TASKS, "state" => final_state).increment(1);
    }
    info!(task.id = %id, kind, "task attempt ended");
    event(state, task, kind, detail).await;
}
