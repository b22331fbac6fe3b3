//! The system store: the few queries that must cross tenants — looking up
//! which tenant a token belongs to, bootstrapping — run as `paddock_system`
//! (BYPASSRLS) on PostgreSQL. Request handlers never hold one: the auth layer
//! and the agent hub get it through [`crate::auth::Authenticator`].

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use paddock_protocol::admin::Role;

use super::{
    new_id, now_rfc3339, sandbox_from_row, Backend, Principal, QueryTimer, Result, SandboxRow,
    StoreError,
};
use crate::auth::hash_token;

#[derive(Debug, Clone)]
pub struct SystemStore {
    pool: AnyPool,
    #[allow(dead_code)]
    backend: Backend,
}

impl SystemStore {
    pub(super) fn new(pool: AnyPool, backend: Backend) -> Self {
        SystemStore { pool, backend }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Creates the tenant `name` (its id is its name) unless it exists.
    pub async fn ensure_tenant(&self, name: &str) -> Result<()> {
        let _timed = QueryTimer::start("ensure_tenant");
        sqlx::query(
            "INSERT INTO tenants (id, name, created_at) VALUES ($1, $1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn has_api_tokens(&self) -> Result<bool> {
        let _timed = QueryTimer::start("has_api_tokens");
        let row = sqlx::query("SELECT COUNT(*) AS n FROM api_tokens")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// Stores `token` as an owner token of `tenant` unless it is already known.
    pub async fn ensure_owner_token(&self, tenant: &str, token: &str) -> Result<()> {
        let _timed = QueryTimer::start("ensure_owner_token");
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, name, role, token_hash, created_at)
             VALUES ($1, $2, 'owner', 'owner', $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(new_id("tok"))
        .bind(tenant)
        .bind(hash_token(token))
        .bind(now_rfc3339())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The principal an API token speaks for, if it is valid: known, not
    /// revoked and not expired.
    pub async fn authenticate_api(&self, token: &str) -> Result<Option<Principal>> {
        let _timed = QueryTimer::start("authenticate_api");
        let row = sqlx::query(
            "SELECT id, tenant_id, name, role, expires_at, agent_id FROM api_tokens
             WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(hash_token(token))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row): Option<AnyRow> = row else {
            return Ok(None);
        };
        let expires_at: Option<String> = row.try_get("expires_at")?;
        // RFC 3339 UTC strings of one format compare like the times they name.
        if expires_at.is_some_and(|at| at <= now_rfc3339()) {
            return Ok(None);
        }
        let role: String = row.try_get("role")?;
        let tenant: String = row.try_get("tenant_id")?;
        Ok(Some(Principal {
            token_id: row.try_get("id")?,
            token_name: row.try_get("name")?,
            role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
            home_tenant: tenant.clone(),
            tenant_id: tenant,
            agent_id: row.try_get("agent_id")?,
        }))
    }

    /// The sandbox an agentd token belongs to, if it is valid.
    pub async fn authenticate_sandbox(&self, token: &str) -> Result<Option<SandboxRow>> {
        let _timed = QueryTimer::start("authenticate_sandbox");
        let row = sqlx::query(&format!("{} WHERE token_hash = $1", super::SANDBOX_COLUMNS))
            .bind(hash_token(token))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| sandbox_from_row(&r)).transpose()
    }
}
