//! Storage for governance: governed actions, costs, reputation and limit
//! overrides, per tenant and agent. It reads and writes; what is allowed is
//! decided in [`crate::governance`].
//!
//! A decision and the write it permits must happen in one transaction, or
//! two replicas could both take the last slot of a quota. A
//! [`GovernanceTx`] opened with [`Store::governance_write`] therefore holds
//! the agent's lock until it commits: on PostgreSQL a transaction-scoped
//! advisory lock, on SQLite the database's write lock, taken by the first
//! statement (an upsert), so that the later reads and the write cannot be
//! interleaved with another writer's.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::QueryTimer;
use super::{Backend, Result, Store, StoreError};
use crate::governance::{Action, CostKind, LimitOverrides, Outcome, ReputationEvent};

/// First key of the two-key advisory locks on PostgreSQL: agents and whole
/// tenants get different classes, so their keys never collide. ("PDGA",
/// "PDGT" in ASCII.)
const AGENT_LOCK_CLASS: i32 = 0x5044_4741;
const TENANT_LOCK_CLASS: i32 = 0x5044_4754;

/// A transaction over one tenant's governance tables.
pub struct GovernanceTx {
    tx: Transaction<'static, Any>,
    backend: Backend,
    tenant_id: String,
}

/// `agent_id = $N` for one agent, or nothing for the tenant's total.
fn agent_filter(agent_id: Option<&str>, n: usize) -> String {
    match agent_id {
        Some(_) => format!(" AND agent_id = ${n}"),
        None => String::new(),
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Binds the agent for [`agent_filter`]'s placeholder, if there is one.
fn bind_agent<'q>(query: AnyQuery<'q>, agent_id: Option<&'q str>) -> AnyQuery<'q> {
    match agent_id {
        Some(agent) => query.bind(agent),
        None => query,
    }
}

impl Store {
    /// A transaction for governance reads (no lock).
    pub async fn governance_read(&self, tenant_id: &str) -> Result<GovernanceTx> {
        let _timed = QueryTimer::start("governance_read");
        Ok(GovernanceTx {
            tx: self.begin(tenant_id).await?,
            backend: self.backend(),
            tenant_id: tenant_id.to_owned(),
        })
    }

    /// A transaction that holds `agent_id`'s governance lock until it ends,
    /// and has made sure the agent has a reputation row (`start_score` if new).
    pub async fn governance_write(
        &self,
        tenant_id: &str,
        agent_id: &str,
        start_score: i64,
    ) -> Result<GovernanceTx> {
        let _timed = QueryTimer::start("governance_write");
        let mut gtx = self.governance_read(tenant_id).await?;
        if gtx.backend == Backend::Postgres {
            gtx.advisory_lock(AGENT_LOCK_CLASS, &format!("{tenant_id}/{agent_id}"))
                .await?;
        }
        // On SQLite this first statement takes the write lock (waiting up to
        // busy_timeout), before anything is read.
        sqlx::query(
            "INSERT INTO agent_reputation (tenant_id, agent_id, score, restricted)
             VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(start_score)
        .execute(&mut *gtx.tx)
        .await?;
        Ok(gtx)
    }

    /// Replaces the limit overrides of a tenant (`agent_id` `None`) or of one
    /// agent; empty overrides remove the row.
    pub async fn set_governance_limits(
        &self,
        tenant_id: &str,
        agent_id: Option<&str>,
        overrides: &LimitOverrides,
    ) -> Result<()> {
        let _timed = QueryTimer::start("set_governance_limits");
        let json =
            serde_json::to_string(overrides).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut gtx = self.governance_read(tenant_id).await?;
        // Delete-then-insert under the tenant's lock: NULL is not a conflict
        // target, and the unique index catches anything that slips by.
        gtx.lock_tenant().await?;
        let sql = format!(
            "DELETE FROM governance_limits WHERE tenant_id = $1 AND {}",
            if agent_id.is_some() {
                "agent_id = $2"
            } else {
                "agent_id IS NULL"
            }
        );
        bind_agent(sqlx::query(&sql).bind(tenant_id), agent_id)
            .execute(&mut *gtx.tx)
            .await?;
        if !overrides.is_empty() {
            sqlx::query(
                "INSERT INTO governance_limits (tenant_id, agent_id, overrides) VALUES ($1, $2, $3)",
            )
            .bind(tenant_id)
            .bind(agent_id)
            .bind(&json)
            .execute(&mut *gtx.tx)
            .await?;
        }
        gtx.commit().await
    }

    /// An agent's reputation events, newest first.
    pub async fn reputation_events(
        &self,
        tenant_id: &str,
        agent_id: &str,
        limit: u32,
    ) -> Result<Vec<ReputationEvent>> {
        let _timed = QueryTimer::start("reputation_events");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT at_ms, outcome, delta, reason, score_after FROM reputation_events
             WHERE tenant_id = $1 AND agent_id = $2 ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(event_from_row).collect()
    }
}

fn event_from_row(row: &AnyRow) -> Result<ReputationEvent> {
    let outcome: String = row.try_get("outcome")?;
    Ok(ReputationEvent {
        at_ms: row.try_get("at_ms")?,
        outcome: Outcome::parse(&outcome)
            .ok_or_else(|| StoreError::Corrupt(format!("outcome {outcome}")))?,
        delta: row.try_get("delta")?,
        reason: row.try_get("reason")?,
        score_after: row.try_get("score_after")?,
    })
}

fn parse_overrides(json: &str) -> Result<LimitOverrides> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("limit overrides: {e}")))
}

impl GovernanceTx {
    pub async fn commit(self) -> Result<()> {
        let _timed = QueryTimer::start("commit");
        self.tx.commit().await?;
        Ok(())
    }

    /// Blocks until no other transaction holds the lock `(class, hash(key))`.
    /// The function returns `void`, which the `Any` driver cannot decode, so
    /// the call is wrapped in a count.
    async fn advisory_lock(&mut self, class: i32, key: &str) -> Result<()> {
        sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM (SELECT pg_advisory_xact_lock({class}, hashtext($1))) AS l"
        ))
        .bind(key)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Serializes this transaction with every other that locks the whole
    /// tenant (tenant-wide quotas, limit changes). Take it after the agent's
    /// lock, never before, so that locks are always taken in one order. On
    /// SQLite the write lock already covers the database.
    pub async fn lock_tenant(&mut self) -> Result<()> {
        let _timed = QueryTimer::start("lock_tenant");
        if self.backend == Backend::Postgres {
            let tenant = self.tenant_id.clone();
            self.advisory_lock(TENANT_LOCK_CLASS, &tenant).await?;
        }
        Ok(())
    }

    /// The tenant-level overrides and the agent's own (none for `None`),
    /// each empty if unset.
    pub async fn limit_overrides(
        &mut self,
        agent_id: Option<&str>,
    ) -> Result<(LimitOverrides, LimitOverrides)> {
        let _timed = QueryTimer::start("limit_overrides");
        let rows = sqlx::query(
            "SELECT agent_id, overrides FROM governance_limits
             WHERE tenant_id = $1 AND (agent_id IS NULL OR agent_id = $2)",
        )
        .bind(&self.tenant_id)
        .bind(agent_id)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut tenant = LimitOverrides::default();
        let mut agent = LimitOverrides::default();
        for row in rows {
            let who: Option<String> = row.try_get("agent_id")?;
            let overrides = parse_overrides(&row.try_get::<String, _>("overrides")?)?;
            match who {
                None => tenant = overrides,
                Some(_) => agent = overrides,
            }
        }
        Ok((tenant, agent))
    }

    /// How many `action`s one agent (or, with `None`, the whole tenant) took
    /// in `(since_ms, until_ms]`.
    pub async fn count_actions(
        &mut self,
        agent_id: Option<&str>,
        action: Action,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<u64> {
        let _timed = QueryTimer::start("count_actions");
        let sql = format!(
            "SELECT COUNT(*) AS n FROM agent_actions
             WHERE tenant_id = $1 AND action = $2 AND at_ms > $3 AND at_ms <= $4{}",
            agent_filter(agent_id, 5)
        );
        let query = sqlx::query(&sql);
        let row = bind_agent(
            query
                .bind(&self.tenant_id)
                .bind(action.as_str())
                .bind(since_ms)
                .bind(until_ms),
            agent_id,
        )
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get::<i64, _>("n")?.max(0) as u64)
    }

    /// The time of the `nth` (from 0, oldest first) action in `(since_ms, until_ms]`.
    pub async fn action_at(
        &mut self,
        agent_id: Option<&str>,
        action: Action,
        since_ms: i64,
        until_ms: i64,
        nth: u64,
    ) -> Result<Option<i64>> {
        let _timed = QueryTimer::start("action_at");
        let sql = format!(
            "SELECT at_ms FROM agent_actions
             WHERE tenant_id = $1 AND action = $2 AND at_ms > $3 AND at_ms <= $4{}
             ORDER BY at_ms LIMIT 1 OFFSET $5",
            agent_filter(agent_id, 6)
        );
        let query = sqlx::query(&sql)
            .bind(&self.tenant_id)
            .bind(action.as_str())
            .bind(since_ms)
            .bind(until_ms)
            .bind(i64::try_from(nth).unwrap_or(i64::MAX));
        let row = bind_agent(query, agent_id)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.map(|r| r.try_get("at_ms").map_err(StoreError::from))
            .transpose()
    }

    pub async fn insert_action(
        &mut self,
        agent_id: &str,
        action: Action,
        at_ms: i64,
    ) -> Result<()> {
        let _timed = QueryTimer::start("insert_action");
        sqlx::query(
            "INSERT INTO agent_actions (tenant_id, agent_id, action, at_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(&self.tenant_id)
        .bind(agent_id)
        .bind(action.as_str())
        .bind(at_ms)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Micro-dollars spent by one agent (or the whole tenant) in `(since_ms, until_ms]`.
    pub async fn sum_costs(
        &mut self,
        agent_id: Option<&str>,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<i64> {
        let _timed = QueryTimer::start("sum_costs");
        // PostgreSQL sums BIGINTs as NUMERIC, which `Any` cannot decode.
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(micros), 0) AS BIGINT) AS spent FROM agent_costs
             WHERE tenant_id = $1 AND at_ms > $2 AND at_ms <= $3{}",
            agent_filter(agent_id, 4)
        );
        let query = sqlx::query(&sql)
            .bind(&self.tenant_id)
            .bind(since_ms)
            .bind(until_ms);
        let row = bind_agent(query, agent_id).fetch_one(&mut *self.tx).await?;
        Ok(row.try_get("spent")?)
    }

    /// The costs in `(since_ms, until_ms]` as `(at_ms, micros)`, oldest first.
    pub async fn costs(
        &mut self,
        agent_id: Option<&str>,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let _timed = QueryTimer::start("costs");
        let sql = format!(
            "SELECT at_ms, micros FROM agent_costs
             WHERE tenant_id = $1 AND at_ms > $2 AND at_ms <= $3{} ORDER BY at_ms, id",
            agent_filter(agent_id, 4)
        );
        let query = sqlx::query(&sql)
            .bind(&self.tenant_id)
            .bind(since_ms)
            .bind(until_ms);
        let rows = bind_agent(query, agent_id).fetch_all(&mut *self.tx).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("at_ms")?, r.try_get("micros")?)))
            .collect()
    }

    pub async fn insert_cost(
        &mut self,
        agent_id: &str,
        at_ms: i64,
        kind: CostKind,
        micros: i64,
        note: Option<&str>,
    ) -> Result<()> {
        let _timed = QueryTimer::start("insert_cost");
        sqlx::query(
            "INSERT INTO agent_costs (tenant_id, agent_id, at_ms, kind, micros, note)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&self.tenant_id)
        .bind(agent_id)
        .bind(at_ms)
        .bind(kind.as_str())
        .bind(micros)
        .bind(note)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// The agent's stored score, if it has one.
    pub async fn reputation(&mut self, agent_id: &str) -> Result<Option<i64>> {
        let _timed = QueryTimer::start("reputation");
        let row = sqlx::query(
            "SELECT score FROM agent_reputation WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(&self.tenant_id)
        .bind(agent_id)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| r.try_get("score").map_err(StoreError::from))
            .transpose()
    }

    /// Stores the agent's new score and appends the event that explains it.
    pub async fn record_reputation(
        &mut self,
        agent_id: &str,
        event: &ReputationEvent,
        restricted: bool,
    ) -> Result<()> {
        let _timed = QueryTimer::start("record_reputation");
        sqlx::query(
            "UPDATE agent_reputation SET score = $1, restricted = $2
             WHERE tenant_id = $3 AND agent_id = $4",
        )
        .bind(event.score_after)
        .bind(i64::from(restricted))
        .bind(&self.tenant_id)
        .bind(agent_id)
        .execute(&mut *self.tx)
        .await?;
        sqlx::query(
            "INSERT INTO reputation_events (tenant_id, agent_id, at_ms, outcome, delta, reason, score_after)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&self.tenant_id)
        .bind(agent_id)
        .bind(event.at_ms)
        .bind(event.outcome.as_str())
        .bind(event.delta)
        .bind(&event.reason)
        .bind(event.score_after)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }
}
