//! Tasks and agents on the HTTP API: what orchestrators submit, what the
//! scheduler reports, and the events stream (`/v1/events`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{SandboxId, SessionId};
use crate::terminal::ExitStatus;
use crate::tools::ToolCall;

/// One step of a task.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Step {
    /// A command in a PTY session: watchable live, output stored like any session.
    Run {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// A tool call of agentd (git, LSP, files, exec).
    Tool { call: ToolCall },
}

/// How often a failed task is tried again, and how long to wait between tries.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    #[serde(default = "one")]
    pub attempts: u32,
    #[serde(default)]
    pub backoff_secs: u64,
}

fn one() -> u32 {
    1
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            backoff_secs: 0,
        }
    }
}

/// `POST /v1/tasks`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitTask {
    /// The agent the task runs for (its name). An `agent` token may only name its own.
    pub agent: String,
    /// A sandbox must carry every one of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    /// The whole task's time limit, across steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// A repeated submit with the same key returns the same task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Higher runs first; FIFO within a priority.
    #[serde(default)]
    pub priority: i32,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    /// The agent is restricted: an admin, operator or developer must approve.
    AwaitingApproval,
    Running,
    /// A try failed; the next one waits for its backoff.
    Retrying,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Rejected,
}

impl TaskState {
    pub const ALL: [TaskState; 9] = [
        TaskState::Pending,
        TaskState::AwaitingApproval,
        TaskState::Running,
        TaskState::Retrying,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::TimedOut,
        TaskState::Cancelled,
        TaskState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::AwaitingApproval => "awaiting_approval",
            TaskState::Running => "running",
            TaskState::Retrying => "retrying",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::TimedOut => "timed_out",
            TaskState::Cancelled => "cancelled",
            TaskState::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// No further transition is possible.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::TimedOut
                | TaskState::Cancelled
                | TaskState::Rejected
        )
    }
}

/// What one step of one attempt did.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepResult {
    pub attempt: u32,
    pub step: u32,
    /// The PTY session of a `run` step (watch it, or read its logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// The result of a `tool` step, as the tool returned it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: String,
    pub agent: String,
    pub state: TaskState,
    pub priority: i32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    pub retry: RetryPolicy,
    /// The attempt under way or last made (1-based; 0 before the first).
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<SandboxId>,
    #[serde(default)]
    pub results: Vec<StepResult>,
    /// Why the task is in its state (refusals, failures), for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskList {
    pub tasks: Vec<TaskInfo>,
}

/// One stored transition or step of a task.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub at: String,
    /// e.g. `task.submitted`, `task.started`, `task.step.started`, `task.failed`.
    pub kind: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvents {
    pub events: Vec<TaskEvent>,
}

/// `POST /v1/tasks/{id}/approve|reject|cancel`
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDecision {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /v1/agents`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAgent {
    pub name: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub id: String,
    pub name: String,
    pub created_at: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentList {
    pub agents: Vec<AgentInfo>,
}

/// One message of `GET /v1/events` (WebSocket, text frames): what happened
/// in the caller's tenant.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// `task.submitted`, `task.started`, `task.step.started`, `task.step.finished`,
    /// `task.retrying`, `task.succeeded`, `task.failed`, `task.timed_out`,
    /// `task.cancelled`, `task.awaiting_approval`, `task.rejected`,
    /// `sandbox.connected`, `sandbox.lost`, `session.opened`, `session.closed`.
    pub kind: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<SandboxId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    #[serde(default)]
    pub detail: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submitted_task_reads_as_documented() {
        let json = r#"{"agent":"dev-agent","labels":{"lang":"rust"},
            "steps":[{"kind":"run","command":"cargo","args":["test"]}],
            "retry":{"attempts":3,"backoff_secs":2},"idempotency_key":"k1"}"#;
        let task: SubmitTask = serde_json::from_str(json).unwrap();
        assert_eq!(task.retry.attempts, 3);
        assert_eq!(task.priority, 0);
        assert!(matches!(&task.steps[0], Step::Run { command, .. } if command == "cargo"));
        let defaults: RetryPolicy = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, RetryPolicy::default());
    }

    #[test]
    fn states_round_trip_and_know_they_are_final() {
        for state in TaskState::ALL {
            assert_eq!(TaskState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{}\"", state.as_str())
            );
        }
        assert!(TaskState::TimedOut.is_final() && !TaskState::Retrying.is_final());
    }
}
