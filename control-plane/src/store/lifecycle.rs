//! Sandbox lifecycle in the database: creating rows for a provider to run,
//! moving them between states with conditional updates (so a late
//! disconnect never turns `stopped` back into `disconnected`), destroying
//! them, and the deployment's owner id, shared by every replica of one
//! database.

use std::collections::BTreeMap;

use paddock_protocol::api::SandboxStatus;
use paddock_protocol::SandboxId;
use sqlx::Row;

use super::{
    new_id, now_rfc3339, sandbox_from_row, QueryTimer, Result, SandboxRow, Store, StoreError,
    SystemStore, SANDBOX_COLUMNS,
};
use crate::auth::{hash_token, new_token, TokenKind};

/// A state change, applied only if the row is in one of `from` (any state
/// but `destroyed` when `from` is empty).
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    pub to: SandboxStatus,
    pub from: &'a [SandboxStatus],
    /// Stored with `failed`; cleared otherwise.
    pub reason: Option<&'a str>,
}

impl<'a> Transition<'a> {
    pub fn to(to: SandboxStatus) -> Self {
        Transition {
            to,
            from: &[],
            reason: None,
        }
    }

    pub fn from(mut self, from: &'a [SandboxStatus]) -> Self {
        self.from = from;
        self
    }

    pub fn failed(reason: &'a str) -> Self {
        Transition {
            to: SandboxStatus::Failed,
            from: &[],
            reason: Some(reason),
        }
    }

    /// The SQL condition on `state` and its bound values, placeholders from `$first`.
    fn condition(&self, first: usize) -> (String, Vec<&'static str>) {
        if self.from.is_empty() {
            return (format!("state <> ${first}"), vec!["destroyed"]);
        }
        let marks: Vec<String> = (0..self.from.len())
            .map(|i| format!("${}", first + i))
            .collect();
        (
            format!("state IN ({})", marks.join(", ")),
            self.from.iter().map(|s| s.as_str()).collect(),
        )
    }
}

impl Store {
    pub(super) async fn insert_sandbox(
        &self,
        tenant_id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        provider: Option<&str>,
        size: Option<&str>,
    ) -> Result<(SandboxRow, String)> {
        let token = new_token(TokenKind::Sandbox);
        let id = SandboxId(new_id("sbx"));
        let created_at = now_rfc3339();
        let state = if provider.is_some() {
            SandboxStatus::Provisioning
        } else {
            SandboxStatus::Disconnected
        };
        let labels_json =
            serde_json::to_string(labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.begin(tenant_id).await?;
        let result = sqlx::query(
            "INSERT INTO sandboxes (id, tenant_id, name, labels, token_hash, provider, created_at,
                 state, state_changed_at, size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $7, $9)",
        )
        .bind(id.as_str())
        .bind(tenant_id)
        .bind(name)
        .bind(&labels_json)
        .bind(hash_token(&token))
        .bind(provider)
        .bind(&created_at)
        .bind(state.as_str())
        .bind(size)
        .execute(&mut *tx)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::DuplicateName(name.to_owned()))
            }
            other => other?,
        };
        tx.commit().await?;
        let row = SandboxRow {
            id,
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            labels: labels.clone(),
            created_at,
            last_seen_at: None,
            agent_version: None,
            state,
            state_reason: None,
            provider: provider.map(str::to_owned),
            resource_id: None,
            size: size.map(str::to_owned),
        };
        Ok((row, token))
    }

    /// A sandbox for a provider to run: state `provisioning`.
    pub async fn create_provisioned(
        &self,
        tenant_id: &str,
        name: &str,
        labels: &BTreeMap<String, String>,
        provider: &str,
        size: &str,
    ) -> Result<(SandboxRow, String)> {
        let _timed = QueryTimer::start("create_provisioned");
        self.insert_sandbox(tenant_id, name, labels, Some(provider), Some(size))
            .await
    }

    /// Applies `t` if the sandbox is in one of its source states; whether it did.
    pub async fn transition(
        &self,
        tenant_id: &str,
        id: &SandboxId,
        t: Transition<'_>,
    ) -> Result<bool> {
        let _timed = QueryTimer::start("transition");
        let (condition, values) = t.condition(6);
        let mut tx = self.begin(tenant_id).await?;
        let sql = format!(
            "UPDATE sandboxes SET state = $1, state_reason = $2, state_changed_at = $3
             WHERE tenant_id = $4 AND id = $5 AND {condition}"
        );
        let mut query = sqlx::query(&sql)
            .bind(t.to.as_str())
            .bind(t.reason)
            .bind(now_rfc3339())
            .bind(tenant_id)
            .bind(id.as_str());
        for value in values {
            query = query.bind(value);
        }
        let done = query.execute(&mut *tx).await?.rows_affected() > 0;
        tx.commit().await?;
        Ok(done)
    }

    pub async fn set_resource_id(
        &self,
        tenant_id: &str,
        id: &SandboxId,
        resource_id: &str,
    ) -> Result<()> {
        let _timed = QueryTimer::start("set_resource_id");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query("UPDATE sandboxes SET resource_id = $1 WHERE tenant_id = $2 AND id = $3")
            .bind(resource_id)
            .bind(tenant_id)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks the sandbox `destroyed`: its token stops working and its name
    /// is freed (renamed `<name>~<id>`), the row stays for its sessions' sake.
    pub async fn destroy_sandbox(&self, tenant_id: &str, id: &SandboxId) -> Result<()> {
        let _timed = QueryTimer::start("destroy_sandbox");
        let unusable = hash_token(&new_token(TokenKind::Sandbox));
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "UPDATE sandboxes SET state = 'destroyed', state_reason = NULL, state_changed_at = $1,
                 token_hash = $2, name = name || '~' || id
             WHERE tenant_id = $3 AND id = $4 AND state <> 'destroyed'",
        )
        .bind(now_rfc3339())
        .bind(unusable)
        .bind(tenant_id)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

impl SystemStore {
    /// This deployment's owner id: made by the first control plane to ask,
    /// then the same for every replica on this database.
    pub async fn owner_id(&self) -> Result<String> {
        let _timed = QueryTimer::start("owner_id");
        sqlx::query(
            "INSERT INTO deployment (key, value) VALUES ('owner', $1) ON CONFLICT DO NOTHING",
        )
        .bind(new_id("own"))
        .execute(self.pool())
        .await?;
        let row = sqlx::query("SELECT value FROM deployment WHERE key = 'owner'")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("value")?)
    }

    /// Every sandbox, of any tenant, that `provider` runs and that is not destroyed.
    pub async fn provider_sandboxes(&self, provider: &str) -> Result<Vec<SandboxRow>> {
        let _timed = QueryTimer::start("provider_sandboxes");
        let rows = sqlx::query(&format!(
            "{SANDBOX_COLUMNS} WHERE provider = $1 AND state <> 'destroyed' ORDER BY created_at"
        ))
        .bind(provider)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(sandbox_from_row).collect()
    }

    pub async fn sandbox_by_id(&self, id: &SandboxId) -> Result<Option<SandboxRow>> {
        let _timed = QueryTimer::start("sandbox_by_id");
        let row = sqlx::query(&format!("{SANDBOX_COLUMNS} WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| sandbox_from_row(&r)).transpose()
    }
}
