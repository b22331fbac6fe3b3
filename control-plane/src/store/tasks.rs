//! Agents and tasks: the durable task queue. Request handlers use the
//! tenant-scoped methods on [`Store`]; the scheduler's cross-tenant queue
//! scan and claim are on [`SystemStore`] ("dispatch claims"). A claim is a
//! conditional update (`… WHERE state IN ('pending','retrying')`), so of
//! several control planes on one database exactly one wins each task.

use paddock_protocol::tasks::{
    AgentInfo, RetryPolicy, Step, StepResult, TaskEvent, TaskInfo, TaskState,
};
use paddock_protocol::SandboxId;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::QueryTimer;
use super::{new_id, now_rfc3339, Result, Store, StoreError, SystemStore};

/// A task as stored, with the agent's name resolved.
#[derive(Debug, Clone)]
pub struct TaskRow {
    pub tenant_id: String,
    pub agent_id: String,
    pub info: TaskInfo,
}

const TASK_COLUMNS: &str =
    "SELECT t.id, t.tenant_id, t.agent_id, a.name AS agent_name, t.state, t.priority,
    t.labels, t.steps, t.timeout_secs, t.retry, t.attempt, t.sandbox_id, t.results, t.reason,
    t.idempotency_key, t.created_at, t.updated_at
    FROM tasks t JOIN agents a ON a.id = t.agent_id";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn task_from_row(row: &AnyRow) -> Result<TaskRow> {
    let state: String = row.try_get("state")?;
    let labels: String = row.try_get("labels")?;
    let steps: String = row.try_get("steps")?;
    let retry: String = row.try_get("retry")?;
    let results: String = row.try_get("results")?;
    let timeout: Option<i64> = row.try_get("timeout_secs")?;
    let sandbox: Option<String> = row.try_get("sandbox_id")?;
    Ok(TaskRow {
        tenant_id: row.try_get("tenant_id")?,
        agent_id: row.try_get("agent_id")?,
        info: TaskInfo {
            id: row.try_get("id")?,
            agent: row.try_get("agent_name")?,
            state: TaskState::parse(&state).ok_or_else(|| corrupt(format!("state {state}")))?,
            priority: row.try_get::<i64, _>("priority")? as i32,
            labels: serde_json::from_str(&labels).map_err(corrupt)?,
            steps: serde_json::from_str::<Vec<Step>>(&steps).map_err(corrupt)?,
            timeout_secs: timeout.map(|t| t as u64),
            retry: serde_json::from_str::<RetryPolicy>(&retry).map_err(corrupt)?,
            attempt: row.try_get::<i64, _>("attempt")? as u32,
            sandbox_id: sandbox.map(SandboxId),
            results: serde_json::from_str::<Vec<StepResult>>(&results).map_err(corrupt)?,
            reason: row.try_get("reason")?,
            idempotency_key: row.try_get("idempotency_key")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        },
    })
}

fn agent_from_row(row: &AnyRow) -> Result<AgentInfo> {
    Ok(AgentInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    pub async fn create_agent(&self, tenant_id: &str, name: &str) -> Result<AgentInfo> {
        let _timed = QueryTimer::start("create_agent");
        let agent = AgentInfo {
            id: new_id("agt"),
            name: name.to_owned(),
            created_at: now_rfc3339(),
        };
        let mut tx = self.begin(tenant_id).await?;
        let result = sqlx::query(
            "INSERT INTO agents (id, tenant_id, name, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&agent.id)
        .bind(tenant_id)
        .bind(name)
        .bind(&agent.created_at)
        .execute(&mut *tx)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(format!(
                    "an agent named `{name}` already exists"
                )))
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(agent)
    }

    pub async fn list_agents(&self, tenant_id: &str) -> Result<Vec<AgentInfo>> {
        let _timed = QueryTimer::start("list_agents");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM agents WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(agent_from_row).collect()
    }

    /// An agent of the tenant by id or name.
    pub async fn find_agent(&self, tenant_id: &str, id_or_name: &str) -> Result<Option<AgentInfo>> {
        let _timed = QueryTimer::start("find_agent");
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(
            "SELECT id, name, created_at FROM agents WHERE tenant_id = $1 AND (id = $2 OR name = $2)",
        )
        .bind(tenant_id)
        .bind(id_or_name)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| agent_from_row(&r)).transpose()
    }

    /// Binds an `agent` token to the agent it acts for.
    pub async fn bind_token_agent(
        &self,
        tenant_id: &str,
        token_id: &str,
        agent_id: &str,
    ) -> Result<()> {
        let _timed = QueryTimer::start("bind_token_agent");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query("UPDATE api_tokens SET agent_id = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(agent_id)
            .bind(tenant_id)
            .bind(token_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Stores a new task, or returns the one already stored under the same
    /// idempotency key (`false` as the second value).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_task(
        &self,
        tenant_id: &str,
        agent: &AgentInfo,
        spec: &paddock_protocol::tasks::SubmitTask,
        state: TaskState,
        reason: Option<&str>,
    ) -> Result<(TaskRow, bool)> {
        let _timed = QueryTimer::start("create_task");
        if let Some(key) = &spec.idempotency_key {
            if let Some(existing) = self.task_by_key(tenant_id, &agent.id, key).await? {
                return Ok((existing, false));
            }
        }
        let id = new_id("tsk");
        let now = now_rfc3339();
        let mut tx = self.begin(tenant_id).await?;
        let result = sqlx::query(
            "INSERT INTO tasks (id, tenant_id, agent_id, state, priority, seq, labels, steps, timeout_secs,
                                retry, reason, idempotency_key, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, (SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks), $6, $7, $8, $9, $10, $11, $12, $12)",
        )
        .bind(&id)
        .bind(tenant_id)
        .bind(&agent.id)
        .bind(state.as_str())
        .bind(i64::from(spec.priority))
        .bind(serde_json::to_string(&spec.labels).map_err(corrupt)?)
        .bind(serde_json::to_string(&spec.steps).map_err(corrupt)?)
        .bind(spec.timeout_secs.map(|t| t as i64))
        .bind(serde_json::to_string(&spec.retry).map_err(corrupt)?)
        .bind(reason)
        .bind(spec.idempotency_key.as_deref())
        .bind(&now)
        .execute(&mut *tx)
        .await;
        match result {
            // A concurrent submit with the same key won: return its task.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                drop(tx);
                if let Some(key) = &spec.idempotency_key {
                    if let Some(existing) = self.task_by_key(tenant_id, &agent.id, key).await? {
                        return Ok((existing, false));
                    }
                }
                return Err(StoreError::Duplicate(
                    "a task with this id already exists".into(),
                ));
            }
            other => other?,
        };
        tx.commit().await?;
        let task = self
            .get_task(tenant_id, &id)
            .await?
            .ok_or_else(|| corrupt("a stored task vanished"))?;
        Ok((task, true))
    }

    async fn task_by_key(
        &self,
        tenant_id: &str,
        agent_id: &str,
        key: &str,
    ) -> Result<Option<TaskRow>> {
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(&format!(
            "{TASK_COLUMNS} WHERE t.tenant_id = $1 AND t.agent_id = $2 AND t.idempotency_key = $3"
        ))
        .bind(tenant_id)
        .bind(agent_id)
        .bind(key)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| task_from_row(&r)).transpose()
    }

    pub async fn get_task(&self, tenant_id: &str, id: &str) -> Result<Option<TaskRow>> {
        let _timed = QueryTimer::start("get_task");
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query(&format!(
            "{TASK_COLUMNS} WHERE t.tenant_id = $1 AND t.id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.map(|r| task_from_row(&r)).transpose()
    }

    pub async fn list_tasks(
        &self,
        tenant_id: &str,
        state: Option<TaskState>,
        agent_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TaskRow>> {
        let _timed = QueryTimer::start("list_tasks");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(&format!(
            "{TASK_COLUMNS} WHERE t.tenant_id = $1 AND ($2 = '' OR t.state = $2) AND ($3 = '' OR t.agent_id = $3)
             ORDER BY t.seq DESC LIMIT $4"
        ))
        .bind(tenant_id)
        .bind(state.map_or("", TaskState::as_str))
        .bind(agent_id.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Moves a task from one of `from` to `to`; `false` if it was in none of them.
    pub async fn transition_task(
        &self,
        tenant_id: &str,
        id: &str,
        from: &[TaskState],
        to: TaskState,
        reason: Option<&str>,
    ) -> Result<bool> {
        let _timed = QueryTimer::start("transition_task");
        let from: Vec<&str> = from.iter().map(|s| s.as_str()).collect();
        let mut tx = self.begin(tenant_id).await?;
        let done = sqlx::query(
            "UPDATE tasks SET state = $1, reason = COALESCE($2, reason), updated_at = $3
             WHERE tenant_id = $4 AND id = $5 AND ($6 LIKE '%,' || state || ',%')",
        )
        .bind(to.as_str())
        .bind(reason)
        .bind(now_rfc3339())
        .bind(tenant_id)
        .bind(id)
        .bind(format!(",{},", from.join(",")))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// After a failed attempt: wait `backoff` before the next claim.
    pub async fn retry_task(
        &self,
        tenant_id: &str,
        id: &str,
        not_before_ms: i64,
        reason: &str,
    ) -> Result<bool> {
        let _timed = QueryTimer::start("retry_task");
        let mut tx = self.begin(tenant_id).await?;
        let done = sqlx::query(
            "UPDATE tasks SET state = 'retrying', not_before_ms = $1, reason = $2, sandbox_id = NULL,
             owner = NULL, updated_at = $3 WHERE tenant_id = $4 AND id = $5 AND state = 'running'",
        )
        .bind(not_before_ms)
        .bind(reason)
        .bind(now_rfc3339())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn set_task_results(
        &self,
        tenant_id: &str,
        id: &str,
        results: &[StepResult],
    ) -> Result<()> {
        let _timed = QueryTimer::start("set_task_results");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "UPDATE tasks SET results = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(serde_json::to_string(results).map_err(corrupt)?)
        .bind(now_rfc3339())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn add_task_event(
        &self,
        tenant_id: &str,
        task_id: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let _timed = QueryTimer::start("add_task_event");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query("INSERT INTO task_events (tenant_id, task_id, at, kind, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant_id)
            .bind(task_id)
            .bind(now_rfc3339())
            .bind(kind)
            .bind(detail.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn task_events(&self, tenant_id: &str, task_id: &str) -> Result<Vec<TaskEvent>> {
        let _timed = QueryTimer::start("task_events");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT at, kind, detail FROM task_events WHERE tenant_id = $1 AND task_id = $2 ORDER BY id",
        )
        .bind(tenant_id)
        .bind(task_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(TaskEvent {
                    at: row.try_get("at")?,
                    kind: row.try_get("kind")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}

impl SystemStore {
    /// Tasks ready to run, across tenants, highest priority first, FIFO within one.
    pub async fn runnable_tasks(&self, now_ms: i64, limit: u32) -> Result<Vec<TaskRow>> {
        let _timed = QueryTimer::start("runnable_tasks");
        let rows = sqlx::query(&format!(
            "{TASK_COLUMNS} WHERE t.state IN ('pending', 'retrying') AND t.not_before_ms <= $1
             ORDER BY t.priority DESC, t.seq LIMIT $2"
        ))
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Claims a runnable task for `sandbox`: `true` if this caller won it.
    pub async fn claim_task(&self, id: &str, sandbox: &SandboxId, owner: &str) -> Result<bool> {
        let _timed = QueryTimer::start("claim_task");
        let done = sqlx::query(
            "UPDATE tasks SET state = 'running', sandbox_id = $1, owner = $2, attempt = attempt + 1,
             updated_at = $3 WHERE id = $4 AND state IN ('pending', 'retrying')",
        )
        .bind(sandbox.as_str())
        .bind(owner)
        .bind(now_rfc3339())
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many tasks are in each state, across tenants (for `/metrics`).
    pub async fn task_counts(&self) -> Result<Vec<(String, i64)>> {
        let _timed = QueryTimer::start("task_counts");
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM tasks GROUP BY state")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("state")?, row.try_get("n")?)))
            .collect()
    }

    /// Tasks marked running by `owner` — after a restart, attempts nobody runs.
    pub async fn running_tasks_of(&self, owner: &str) -> Result<Vec<TaskRow>> {
        let _timed = QueryTimer::start("running_tasks_of");
        let rows = sqlx::query(&format!(
            "{TASK_COLUMNS} WHERE t.state = 'running' AND t.owner = $1"
        ))
        .bind(owner)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(task_from_row).collect()
    }
}
