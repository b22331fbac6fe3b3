//! `paddock tasks`: submit, list, show, decide on and read the logs of the
//! tasks the control plane schedules — their flags, the API calls behind
//! them, and what they print. Also the request helper `agents` shares, which
//! names the task or agent a refusal is about.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use paddock_protocol::api::{ErrorBody, OutputQuery};
use paddock_protocol::tasks::{
    Step, StepResult, SubmitTask, TaskDecision, TaskEvent, TaskEvents, TaskInfo, TaskList,
    TaskState,
};
use paddock_protocol::ErrorCode;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{describe_failure, display_base, unreachable_message, Client, Target};
use crate::output::{self, Table};
use crate::term;

/// Longest reason shown in the tasks table before it is cut with `…`.
const MAX_REASON_WIDTH: usize = 48;
/// Longest tool output or event detail shown in `tasks show`.
const MAX_DETAIL_WIDTH: usize = 80;
/// How often `tasks logs --follow` asks for the task's progress.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Submit a task: a SubmitTask as JSON (or TOML, for a `.toml` file or
    /// text that does not start with `{`); FILE `-` reads stdin.
    Submit {
        /// The task's file, or `-` for stdin.
        file: String,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's tasks, newest first (an agent token: its own only).
    List {
        /// Only tasks in this state (pending, awaiting_approval, running,
        /// retrying, succeeded, failed, timed_out, cancelled, rejected).
        #[arg(long, value_parser = parse_state)]
        state: Option<TaskState>,
        /// How many tasks at most (1 to 1000; default 200).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a task: its steps, their results and its events.
    Show {
        id: String,
        /// Print the task and its events as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task that has not ended; a running step is closed.
    Cancel {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Let a restricted agent's task run.
    Approve {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Refuse a restricted agent's task; it never runs.
    Reject {
        id: String,
        #[arg(long)]
        reason: Option<String>,
        /// Print the task as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the output of the task's `run` steps, in order.
    Logs {
        id: String,
        /// Follow the running step live and wait for the next ones until the
        /// task ends; exits 0 if it succeeded, else 1.
        #[arg(long)]
        follow: bool,
    },
}

/// Parses `--state` by name, e.g. `awaiting_approval`.
pub fn parse_state(text: &str) -> Result<TaskState, String> {
    TaskState::parse(&text.trim().to_ascii_lowercase()).ok_or_else(|| {
        let names: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        format!("unknown state `{text}`: use one of {}", names.join(", "))
    })
}

/// What a request is about, so that a refusal can name it and the command
/// that lists or shows it.
#[derive(Debug, Clone, Copy)]
pub enum About<'a> {
    Tenant,
    Task(&'a str),
    Agent(&'a str),
}

/// Sends `req` and decodes a successful answer, with its status (a submit
/// says by 200 or 201 whether the task is new).
pub async fn call<T: DeserializeOwned>(
    client: &Client,
    req: RequestBuilder,
    about: About<'_>,
) -> Result<(StatusCode, T)> {
    let response = req
        .send()
        .await
        .map_err(|err| transport_error(client, err))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|err| transport_error(client, err))?;
    if !status.is_success() {
        bail!(describe(status, &body, about));
    }
    let value = serde_json::from_slice(&body).map_err(|err| {
        anyhow!(
            "could not understand the control plane's answer ({err}): are paddock and the control plane the same version?"
        )
    })?;
    Ok((status, value))
}

/// A failed answer about a task or an agent as a message saying what to do;
/// anything not particular to them is described as for any request.
pub fn describe(status: StatusCode, body: &[u8], about: About<'_>) -> String {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    if let Some(ErrorBody { error }) = parsed {
        let message = error.message;
        match (error.code, about) {
            (ErrorCode::NotFound, About::Task(id)) if message.starts_with("no task") => {
                return format!("no task `{id}`: run `paddock tasks list` to list them");
            }
            (ErrorCode::NotFound, About::Agent(name)) if message.starts_with("no agent") => {
                return format!(
                    "no agent `{name}`: run `paddock agents list` to list them, or create it with `paddock agents create {name}`"
                );
            }
            (ErrorCode::Conflict, About::Task(id)) => {
                return format!("{message}: `paddock tasks show {id}` shows where it stands");
            }
            _ => {}
        }
    }
    describe_failure(status, body, &Target::ControlPlane)
}

fn transport_error(client: &Client, err: reqwest::Error) -> anyhow::Error {
    let base = display_base(client.base());
    if let Some(message) = crate::tls::rejected_certificate(&err) {
        anyhow!(message)
    } else if err.is_connect() {
        anyhow!(unreachable_message(client.base()))
    } else if err.is_timeout() {
        anyhow!("the control plane at {base} did not answer in time: is it overloaded or stuck? try again")
    } else {
        anyhow!("the request to the control plane at {base} failed ({err}): check the URL and try again")
    }
}

/// The three decisions on a task, by their path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Cancel,
    Approve,
    Reject,
}

impl Decision {
    fn segment(self) -> &'static str {
        match self {
            Decision::Cancel => "cancel",
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }

    fn past(self) -> &'static str {
        match self {
            Decision::Cancel => "cancelled",
            Decision::Approve => "approved",
            Decision::Reject => "rejected",
        }
    }
}

impl Client {
    /// `POST /v1/tasks`: the task, and whether it is new (201) rather than
    /// the one an earlier submit with the same idempotency key made (200).
    pub async fn submit_task(&self, task: &SubmitTask) -> Result<(TaskInfo, bool)> {
        let req = self.request(Method::POST, &["v1", "tasks"])?.json(task);
        let (status, info) = call(self, req, About::Agent(&task.agent)).await?;
        Ok((info, status == StatusCode::CREATED))
    }

    pub async fn list_tasks(
        &self,
        state: Option<TaskState>,
        limit: Option<u32>,
    ) -> Result<TaskList> {
        let mut req = self.request(Method::GET, &["v1", "tasks"])?;
        if let Some(state) = state {
            req = req.query(&[("state", state.as_str())]);
        }
        if let Some(limit) = limit {
            req = req.query(&[("limit", limit)]);
        }
        Ok(call(self, req, About::Tenant).await?.1)
    }

    pub async fn get_task(&self, id: &str) -> Result<TaskInfo> {
        let req = self.request(Method::GET, &["v1", "tasks", id])?;
        Ok(call(self, req, About::Task(id)).await?.1)
    }

    pub async fn task_events(&self, id: &str) -> Result<TaskEvents> {
        let req = self.request(Method::GET, &["v1", "tasks", id, "events"])?;
        Ok(call(self, req, About::Task(id)).await?.1)
    }

    pub async fn decide_task(
        &self,
        id: &str,
        decision: Decision,
        body: &TaskDecision,
    ) -> Result<TaskInfo> {
        let req = self
            .request(Method::POST, &["v1", "tasks", id, decision.segment()])?
            .json(body);
        Ok(call(self, req, About::Task(id)).await?.1)
    }
}

/// `paddock tasks …`.
pub async fn tasks(client: &Client, cmd: TasksCmd) -> Result<i32> {
    match cmd {
        TasksCmd::Submit { file, json } => {
            let task = read_submit(&file)?;
            let (info, created) = client.submit_task(&task).await?;
            if json {
                if !created {
                    term::note(&existing_note(&info));
                }
                output::print_json(&info)?;
            } else {
                print!("{}", submitted_text(&info, created));
            }
        }
        TasksCmd::List { state, limit, json } => {
            let list = client.list_tasks(state, limit).await?;
            if json {
                output::print_json(&list)?;
            } else if list.tasks.is_empty() {
                match state {
                    Some(state) => eprintln!("no {} tasks", state.as_str()),
                    None => eprintln!("no tasks: submit one with `paddock tasks submit FILE`"),
                }
            } else {
                print!("{}", tasks_table(&list.tasks, SystemTime::now()));
            }
        }
        TasksCmd::Show { id, json } => {
            let task = client.get_task(&id).await?;
            let events = client.task_events(&id).await?.events;
            if json {
                output::print_json(&TaskWithEvents {
                    task: &task,
                    events: &events,
                })?;
            } else {
                print!("{}", task_text(&task, &events, SystemTime::now()));
            }
        }
        TasksCmd::Cancel { id, reason, json } => {
            return decide(client, &id, Decision::Cancel, reason, json).await
        }
        TasksCmd::Approve { id, reason, json } => {
            return decide(client, &id, Decision::Approve, reason, json).await
        }
        TasksCmd::Reject { id, reason, json } => {
            return decide(client, &id, Decision::Reject, reason, json).await
        }
        TasksCmd::Logs { id, follow } => return logs(client, &id, follow).await,
    }
    Ok(0)
}

/// What `tasks show --json` prints: the task and its stored events.
#[derive(Debug, Serialize)]
struct TaskWithEvents<'a> {
    task: &'a TaskInfo,
    events: &'a [TaskEvent],
}

async fn decide(
    client: &Client,
    id: &str,
    decision: Decision,
    reason: Option<String>,
    json: bool,
) -> Result<i32> {
    let task = client
        .decide_task(id, decision, &TaskDecision { reason })
        .await?;
    if json {
        output::print_json(&task)?;
    } else {
        println!(
            "{} task {}: now {}",
            decision.past(),
            task.id,
            task.state.as_str()
        );
    }
    Ok(0)
}

/// Reads the task to submit from `file` (`-`: stdin).
fn read_submit(file: &str) -> Result<SubmitTask> {
    let (text, source) = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("could not read the task from stdin")?;
        (text, "stdin".to_owned())
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("could not read the task file `{file}`"))?;
        (text, format!("`{file}`"))
    };
    let toml = Path::new(file)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
    parse_submit(&text, &source, toml).map_err(|err| anyhow!(err))
}

/// What a task file holds, for the messages that say how to fix one.
const SUBMIT_SHAPE: &str = r#"a task is {"agent": "NAME", "steps": [{"kind": "run", "command": "cargo", "args": ["test"]}]}, with optional labels, timeout_secs, retry {"attempts", "backoff_secs"}, idempotency_key and priority"#;

/// Parses a task: TOML when `toml` or when the text does not start with
/// `{`, else JSON. The error names `source`, where and what is wrong.
pub fn parse_submit(text: &str, source: &str, toml: bool) -> Result<SubmitTask, String> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(format!("{source} is empty: {SUBMIT_SHAPE}"));
    }
    let task: SubmitTask = if toml || !trimmed.starts_with('{') {
        toml::from_str(text).map_err(|err| {
            let why = err.message();
            let at = match err.span() {
                Some(span) => format!(" at line {}", line_of(text, span.start)),
                None => String::new(),
            };
            format!("{source} is not a task as TOML ({why}{at}): {SUBMIT_SHAPE}")
        })?
    } else {
        serde_json::from_str(text)
            .map_err(|err| format!("{source} is not a task as JSON ({err}): {SUBMIT_SHAPE}"))?
    };
    if task.agent.trim().is_empty() {
        return Err(format!(
            "{source} names no agent: set \"agent\" to one of `paddock agents list`"
        ));
    }
    if task.steps.is_empty() {
        return Err(format!(
            "{source} has no steps: add at least one, e.g. {{\"kind\": \"run\", \"command\": \"make\"}}"
        ));
    }
    Ok(task)
}

/// The 1-based line of byte `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn existing_note(info: &TaskInfo) -> String {
    let key = info.idempotency_key.as_deref().unwrap_or("");
    format!(
        "task {} already exists for idempotency key `{key}`: not submitted again",
        info.id
    )
}

/// What `tasks submit` prints for a person.
fn submitted_text(info: &TaskInfo, created: bool) -> String {
    let mut text = if created {
        format!(
            "submitted task {} for agent {}: {}\n",
            info.id,
            info.agent,
            info.state.as_str()
        )
    } else {
        format!("{}; it is {}\n", existing_note(info), info.state.as_str())
    };
    if info.state == TaskState::AwaitingApproval {
        let why = info.reason.as_deref().unwrap_or("the agent is restricted");
        text.push_str(&format!(
            "It waits for approval ({why}): `paddock tasks approve {}` or `paddock tasks reject {}`.\n",
            info.id, info.id
        ));
    } else if !info.state.is_final() {
        text.push_str(&format!(
            "Follow it with `paddock tasks logs {} --follow`.\n",
            info.id
        ));
    }
    text
}

/// `attempt/attempts`, e.g. `1/3`; `-` before the first attempt.
fn attempt_text(task: &TaskInfo) -> String {
    if task.attempt == 0 {
        "-".to_owned()
    } else {
        format!("{}/{}", task.attempt, task.retry.attempts)
    }
}

/// `text` on one line, cut to `width` characters with `…`.
fn cut(text: &str, width: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > width {
        let cut: String = line.chars().take(width - 1).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// The `paddock tasks list` table.
pub fn tasks_table(tasks: &[TaskInfo], now: SystemTime) -> String {
    let mut table = Table::new(vec![
        "ID", "AGENT", "STATE", "ATTEMPT", "SANDBOX", "UPDATED", "REASON",
    ]);
    for t in tasks {
        table.push(vec![
            t.id.clone(),
            t.agent.clone(),
            t.state.as_str().to_owned(),
            attempt_text(t),
            t.sandbox_id
                .as_ref()
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            output::ago(&t.updated_at, now),
            t.reason
                .as_deref()
                .map_or_else(|| "-".to_owned(), |r| cut(r, MAX_REASON_WIDTH)),
        ]);
    }
    table.render()
}

/// A step as one short line: the command line, or the tool's name.
fn step_line(step: &Step) -> (&'static str, String) {
    match step {
        Step::Run { command, args, .. } => ("run", output::command_line(Some(command), args)),
        Step::Tool { call } => ("tool", call.name().to_owned()),
    }
}

/// What `tasks show` prints for a person.
pub fn task_text(task: &TaskInfo, events: &[TaskEvent], now: SystemTime) -> String {
    let mut head = Table::new(vec!["", ""]).without_headers();
    head.push(vec!["id".into(), task.id.clone()]);
    head.push(vec!["agent".into(), task.agent.clone()]);
    head.push(vec!["state".into(), task.state.as_str().into()]);
    if let Some(reason) = &task.reason {
        head.push(vec!["reason".into(), cut(reason, 200)]);
    }
    head.push(vec!["attempt".into(), attempt_text(task)]);
    let sandbox = task
        .sandbox_id
        .as_ref()
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    head.push(vec!["sandbox".into(), sandbox]);
    head.push(vec!["priority".into(), task.priority.to_string()]);
    if !task.labels.is_empty() {
        let labels: Vec<String> = task
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        head.push(vec!["labels".into(), labels.join(",")]);
    }
    let timeout = task
        .timeout_secs
        .map_or_else(|| "none".to_owned(), |s| format!("{s}s"));
    head.push(vec!["timeout".into(), timeout]);
    head.push(vec![
        "retry".into(),
        format!(
            "{} attempts, {}s apart",
            task.retry.attempts, task.retry.backoff_secs
        ),
    ]);
    if let Some(key) = &task.idempotency_key {
        head.push(vec!["key".into(), key.clone()]);
    }
    head.push(vec![
        "created".into(),
        format!(
            "{} ({})",
            output::whole_seconds(&task.created_at),
            output::ago(&task.created_at, now)
        ),
    ]);
    head.push(vec![
        "updated".into(),
        format!(
            "{} ({})",
            output::whole_seconds(&task.updated_at),
            output::ago(&task.updated_at, now)
        ),
    ]);
    let mut text = head.render();

    text.push_str("\nSteps:\n");
    let mut steps = Table::new(vec!["STEP", "KIND", "WHAT"]);
    for (i, step) in task.steps.iter().enumerate() {
        let (kind, what) = step_line(step);
        steps.push(vec![(i + 1).to_string(), kind.to_owned(), what]);
    }
    text.push_str(&steps.render());

    text.push_str("\nResults:\n");
    if task.results.is_empty() {
        text.push_str("(none yet)\n");
    } else {
        text.push_str(&results_table(&task.results));
    }

    text.push_str("\nEvents:\n");
    if events.is_empty() {
        text.push_str("(none)\n");
    } else {
        let mut table = Table::new(vec!["TIME", "KIND", "DETAIL"]);
        for e in events {
            table.push(vec![
                output::whole_seconds(&e.at),
                e.kind.clone(),
                detail_text(&e.detail),
            ]);
        }
        text.push_str(&table.render());
    }
    text
}

fn results_table(results: &[StepResult]) -> String {
    let mut table = Table::new(vec!["ATTEMPT", "STEP", "SESSION", "EXIT", "RESULT"]);
    for r in results {
        let outcome = match (&r.error, &r.output) {
            (Some(error), _) => format!("error: {}", cut(error, MAX_DETAIL_WIDTH)),
            (None, Some(output)) => detail_text(output),
            (None, None) => "-".to_owned(),
        };
        table.push(vec![
            r.attempt.to_string(),
            r.step.to_string(),
            r.session_id
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            r.exit.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            outcome,
        ]);
    }
    table.render()
}

/// A JSON value as one short line; `-` for nothing.
fn detail_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::Object(map) if map.is_empty() => "-".to_owned(),
        serde_json::Value::String(s) => cut(s, MAX_DETAIL_WIDTH),
        other => cut(&other.to_string(), MAX_DETAIL_WIDTH),
    }
}

/// `paddock tasks logs`: the output of each `run` step in order; with
/// `follow`, the running step live and then the next ones until the task ends.
async fn logs(client: &Client, id: &str, follow: bool) -> Result<i32> {
    let mut printed: BTreeSet<(u32, u32)> = BTreeSet::new();
    let mut last_state = None;
    loop {
        let task = client.get_task(id).await?;
        if follow && last_state != Some(task.state) {
            // The final state is noted after the last output instead.
            let noted = last_state.is_some() || task.results.is_empty();
            if noted && !task.state.is_final() {
                term::note(&format!("[task {}: {}]", task.id, task.state.as_str()));
            }
            last_state = Some(task.state);
        }
        let mut results: Vec<&StepResult> = task
            .results
            .iter()
            .filter(|r| r.session_id.is_some())
            .collect();
        results.sort_by_key(|r| (r.attempt, r.step));
        let latest = results.last().map(|r| (r.attempt, r.step));
        for result in results {
            let key = (result.attempt, result.step);
            if printed.contains(&key) {
                continue;
            }
            let (Some(session), Some(sandbox)) = (result.session_id, task.sandbox_id.as_ref())
            else {
                continue;
            };
            let sandbox = sandbox.to_string();
            term::note(&format!(
                "[task {}: attempt {}, step {}{}: session {session} in {sandbox}]",
                task.id,
                result.attempt,
                result.step,
                step_of(&task, result.step)
                    .map(|s| format!(" ({})", step_line(s).1))
                    .unwrap_or_default(),
            ));
            // Only the newest step of a running task can still be running:
            // a lost session never gets an exit, but its task moves on.
            let live = follow
                && task.state == TaskState::Running
                && Some(key) == latest
                && result.exit.is_none()
                && result.error.is_none();
            if live {
                // From offset 0 the stream replays the stored output and
                // carries on live, so no byte falls between a download and
                // the stream, or is printed twice.
                let mut stdout = tokio::io::stdout();
                crate::follow::follow(client, &sandbox, session, Some(0), true, &mut stdout)
                    .await?;
            } else {
                crate::logs::logs(client, &sandbox, session, OutputQuery::default()).await?;
            }
            printed.insert(key);
        }
        if !follow {
            if task.sandbox_id.is_none() || printed.is_empty() {
                eprintln!(
                    "task {} has no output yet ({}): `paddock tasks logs {} --follow` waits for it",
                    task.id,
                    task.state.as_str(),
                    task.id
                );
            }
            return Ok(0);
        }
        if task.state.is_final() {
            let reason = task
                .reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            term::note(&format!(
                "[task {} {}{reason}]",
                task.id,
                task.state.as_str()
            ));
            return Ok(if task.state == TaskState::Succeeded {
                0
            } else {
                1
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The step numbered `step` (1-based).
fn step_of(task: &TaskInfo, step: u32) -> Option<&Step> {
    task.steps.get((step as usize).checked_sub(1)?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use paddock_protocol::tasks::RetryPolicy;
    use paddock_protocol::{ExitStatus, SandboxId, SessionId};

    use super::*;
    use crate::fake::FakeControlPlane;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339_weak(rfc3339).unwrap()
    }

    fn task(id: &str, state: TaskState) -> TaskInfo {
        TaskInfo {
            id: id.to_owned(),
            agent: "dev".to_owned(),
            state,
            priority: 0,
            labels: BTreeMap::new(),
            steps: vec![Step::Run {
                command: "cargo".to_owned(),
                args: vec!["test".to_owned()],
                cwd: None,
                env: BTreeMap::new(),
            }],
            timeout_secs: None,
            retry: RetryPolicy {
                attempts: 3,
                backoff_secs: 2,
            },
            attempt: 0,
            sandbox_id: None,
            results: vec![],
            reason: None,
            idempotency_key: None,
            created_at: "2026-11-26T02:00:00Z".to_owned(),
            updated_at: "2026-11-26T02:59:00Z".to_owned(),
        }
    }

    #[test]
    fn states_parse_by_name_and_list_the_choices() {
        assert_eq!(parse_state("running"), Ok(TaskState::Running));
        assert_eq!(parse_state("Timed_Out"), Ok(TaskState::TimedOut));
        let err = parse_state("done").unwrap_err();
        assert!(err.contains("pending, awaiting_approval, running"), "{err}");
    }

    #[test]
    fn tasks_table_shows_attempts_sandboxes_and_cut_reasons() {
        let now = at("2026-11-26T03:00:00Z");
        let running = TaskInfo {
            attempt: 2,
            sandbox_id: Some(SandboxId::from("sbx_1")),
            ..task("tsk_1", TaskState::Running)
        };
        let waiting = TaskInfo {
            reason: Some(format!("agent_restricted: {}", "x".repeat(60))),
            ..task("tsk_22", TaskState::AwaitingApproval)
        };
        let table = tasks_table(&[running, waiting], now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "ID      AGENT  STATE              ATTEMPT  SANDBOX  UPDATED  REASON"
        );
        assert_eq!(
            lines[1],
            "tsk_1   dev    running            2/3      sbx_1    1m ago   -"
        );
        assert!(
            lines[2].starts_with("tsk_22  dev    awaiting_approval  -        -        1m ago   agent_restricted: xxx"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with('…'), "{}", lines[2]);
        assert_eq!(
            lines[2].split("   ").last().unwrap().chars().count(),
            MAX_REASON_WIDTH
        );
    }

    #[test]
    fn show_lists_steps_results_and_events() {
        let now = at("2026-11-26T03:00:00Z");
        let info = TaskInfo {
            attempt: 1,
            sandbox_id: Some(SandboxId::from("sbx_1")),
            results: vec![StepResult {
                attempt: 1,
                step: 1,
                session_id: Some(SessionId(4)),
                exit: Some(ExitStatus::code(0)),
                output: None,
                error: None,
            }],
            ..task("tsk_1", TaskState::Succeeded)
        };
        let events = vec![TaskEvent {
            at: "2026-11-26T02:00:01.5Z".to_owned(),
            kind: "task.step.started".to_owned(),
            detail: serde_json::json!({"attempt": 1, "step": 1}),
        }];
        let text = task_text(&info, &events, now);
        assert!(
            text.starts_with("id        tsk_1\nagent     dev\nstate     succeeded\n"),
            "{text}"
        );
        assert!(text.contains("retry     3 attempts, 2s apart\n"), "{text}");
        assert!(
            text.contains("Steps:\nSTEP  KIND  WHAT\n1     run   cargo test\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "ATTEMPT  STEP  SESSION  EXIT    RESULT\n1        1     4        exit 0  -\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("2026-11-26T02:00:01Z  task.step.started  {\"attempt\":1,\"step\":1}\n"),
            "{text}"
        );
    }

    #[test]
    fn submit_text_says_whether_the_task_is_new_and_what_comes_next() {
        let info = task("tsk_1", TaskState::Pending);
        let text = submitted_text(&info, true);
        assert!(
            text.starts_with("submitted task tsk_1 for agent dev: pending\n"),
            "{text}"
        );
        assert!(text.contains("paddock tasks logs tsk_1 --follow"), "{text}");
        let again = TaskInfo {
            idempotency_key: Some("k1".to_owned()),
            ..task("tsk_1", TaskState::Succeeded)
        };
        let text = submitted_text(&again, false);
        assert_eq!(
            text,
            "task tsk_1 already exists for idempotency key `k1`: not submitted again; it is succeeded\n"
        );
        let waiting = TaskInfo {
            reason: Some("agent_restricted: score 10".to_owned()),
            ..task("tsk_2", TaskState::AwaitingApproval)
        };
        let text = submitted_text(&waiting, true);
        assert!(
            text.contains("approval (agent_restricted: score 10)"),
            "{text}"
        );
        assert!(text.contains("paddock tasks approve tsk_2"), "{text}");
    }

    #[test]
    fn task_files_parse_as_json_or_toml() {
        let json = r#"{"agent":"dev","steps":[{"kind":"run","command":"make"}]}"#;
        let task = parse_submit(json, "`t.json`", false).unwrap();
        assert_eq!(task.agent, "dev");
        let toml = "agent = \"dev\"\npriority = 5\n[[steps]]\nkind = \"run\"\ncommand = \"make\"\nargs = [\"test\"]\n";
        let task = parse_submit(toml, "stdin", false).unwrap();
        assert_eq!(task.priority, 5);
        assert!(matches!(&task.steps[0], Step::Run { args, .. } if args == &["test"]));
        // A .toml file is TOML even if it looks like JSON.
        assert!(parse_submit(json, "`t.toml`", true)
            .unwrap_err()
            .contains("as TOML"));
    }

    #[test]
    fn bad_task_files_say_where_and_how_to_fix_them() {
        let err = parse_submit("  \n", "stdin", false).unwrap_err();
        assert!(err.starts_with("stdin is empty: a task is {"), "{err}");
        let err =
            parse_submit("{\"agent\": \"dev\",\n \"steps\": [}", "`t.json`", false).unwrap_err();
        assert!(err.starts_with("`t.json` is not a task as JSON ("), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("\"kind\": \"run\""), "{err}");
        let err = parse_submit(r#"{"steps": []}"#, "`t.json`", false).unwrap_err();
        assert!(err.contains("missing field `agent`"), "{err}");
        let err = parse_submit(
            r#"{"agent":"dev","steps":[{"kind":"jump"}]}"#,
            "`t.json`",
            false,
        )
        .unwrap_err();
        assert!(err.contains("unknown variant `jump`"), "{err}");
        let err = parse_submit(r#"{"agent":"dev","steps":[]}"#, "`t.json`", false).unwrap_err();
        assert!(
            err.starts_with("`t.json` has no steps: add at least one"),
            "{err}"
        );
        let err = parse_submit(r#"{"agent":" ","steps":[]}"#, "`t.json`", false).unwrap_err();
        assert!(err.contains("names no agent"), "{err}");
        let err = parse_submit("agent = \"dev\"\nsteps = 3\n", "`t.toml`", true).unwrap_err();
        assert!(err.starts_with("`t.toml` is not a task as TOML ("), "{err}");
        assert!(err.contains("at line 2"), "{err}");
    }

    #[test]
    fn refusals_name_the_task_or_agent_and_the_command_to_run() {
        let body = |code: &str, message: &str| {
            format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#).into_bytes()
        };
        let msg = describe(
            StatusCode::NOT_FOUND,
            &body(
                "not_found",
                "no task `tsk_9`; `paddock tasks list` lists them",
            ),
            About::Task("tsk_9"),
        );
        assert_eq!(
            msg,
            "no task `tsk_9`: run `paddock tasks list` to list them"
        );
        let msg = describe(
            StatusCode::NOT_FOUND,
            &body(
                "not_found",
                "no agent `bot`; `paddock agents list` lists them",
            ),
            About::Agent("bot"),
        );
        assert!(msg.contains("paddock agents create bot"), "{msg}");
        let msg = describe(
            StatusCode::CONFLICT,
            &body("conflict", "task tsk_1 has already ended (failed)"),
            About::Task("tsk_1"),
        );
        assert_eq!(
            msg,
            "task tsk_1 has already ended (failed): `paddock tasks show tsk_1` shows where it stands"
        );
        // A missing tenant is still the tenant's problem.
        let msg = describe(
            StatusCode::NOT_FOUND,
            &body("not_found", "no tenant `x`"),
            About::Task("tsk_1"),
        );
        assert!(msg.contains("--tenant"), "{msg}");
    }

    #[tokio::test]
    async fn submit_tells_a_new_task_from_an_existing_one() {
        let fake = FakeControlPlane::start().await;
        let spec = parse_submit(
            r#"{"agent":"dev","steps":[{"kind":"run","command":"make"}],"idempotency_key":"k1"}"#,
            "stdin",
            false,
        )
        .unwrap();
        let answer = serde_json::to_string(&task("tsk_1", TaskState::Pending)).unwrap();
        let (new, req) = tokio::join!(
            fake.client().submit_task(&spec),
            fake.answer(201, "application/json", &answer)
        );
        assert!(new.unwrap().1);
        assert_eq!(
            (req.method.as_str(), req.path.as_str()),
            ("POST", "/v1/tasks")
        );
        assert_eq!(
            serde_json::from_slice::<SubmitTask>(&req.body).unwrap(),
            spec
        );
        let (old, _) = tokio::join!(
            fake.client().submit_task(&spec),
            fake.answer(200, "application/json", &answer)
        );
        assert!(!old.unwrap().1);
    }

    #[tokio::test]
    async fn list_and_decisions_use_their_paths() {
        let fake = FakeControlPlane::start().await;
        let (list, req) = tokio::join!(
            fake.client()
                .list_tasks(Some(TaskState::AwaitingApproval), Some(5)),
            fake.answer(200, "application/json", r#"{"tasks":[]}"#)
        );
        assert!(list.unwrap().tasks.is_empty());
        assert_eq!(req.path, "/v1/tasks?state=awaiting_approval&limit=5");
        let answer = serde_json::to_string(&task("tsk_1", TaskState::Rejected)).unwrap();
        let body = TaskDecision {
            reason: Some("too risky".to_owned()),
        };
        let (info, req) = tokio::join!(
            fake.client().decide_task("tsk_1", Decision::Reject, &body),
            fake.answer(200, "application/json", &answer)
        );
        assert_eq!(info.unwrap().state, TaskState::Rejected);
        assert_eq!(req.path, "/v1/tasks/tsk_1/reject");
        assert_eq!(
            serde_json::from_slice::<TaskDecision>(&req.body).unwrap(),
            body
        );
    }
}
