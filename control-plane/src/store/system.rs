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
        principal_from(row)
    }

    /// Stores a console session for the token behind `principal`; `secret`
    /// is the cookie's value (kept hashed). Expired sessions are swept here.
    pub async fn create_console_session(
        &self,
        principal: &Principal,
        secret: &str,
        csrf_token: &str,
        expires_at: &str,
    ) -> Result<()> {
        let _timed = QueryTimer::start("create_console_session");
        let now = now_rfc3339();
        sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1")
            .bind(&now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO console_sessions
                 (secret_hash, tenant_id, token_id, csrf_token, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hash_token(secret))
        .bind(&principal.home_tenant)
        .bind(&principal.token_id)
        .bind(csrf_token)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The principal and CSRF token of a console session, if the session
    /// and the token it was made from are both still valid.
    pub async fn authenticate_console(
        &self,
        secret: &str,
    ) -> Result<Option<(Principal, ConsoleSessionRow)>> {
        let _timed = QueryTimer::start("authenticate_console");
        let row = sqlx::query(
            "SELECT t.id, t.tenant_id, t.name, t.role, t.expires_at, t.agent_id,
                    s.csrf_token, s.expires_at AS session_expires_at
             FROM console_sessions s JOIN api_tokens t ON t.id = s.token_id
             WHERE s.secret_hash = $1 AND t.revoked_at IS NULL",
        )
        .bind(hash_token(secret))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let session = ConsoleSessionRow {
            csrf_token: row.try_get("csrf_token")?,
            expires_at: row.try_get("session_expires_at")?,
        };
        if session.expires_at <= now_rfc3339() {
            return Ok(None);
        }
        Ok(principal_from(Some(row))?.map(|p| (p, session)))
    }

    /// Ends a console session (logout).
    pub async fn delete_console_session(&self, secret: &str) -> Result<()> {
        let _timed = QueryTimer::start("delete_console_session");
        sqlx::query("DELETE FROM console_sessions WHERE secret_hash = $1")
            .bind(hash_token(secret))
            .execute(&self.pool)
            .await?;
        Ok(())
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

/// A console session's own facts, beside the principal of its token.
#[derive(Debug, Clone)]
pub struct ConsoleSessionRow {
    pub csrf_token: String,
    pub expires_at: String,
}

/// The principal of an `api_tokens` row, unless the token has expired.
fn principal_from(row: Option<AnyRow>) -> Result<Option<Principal>> {
    let Some(row) = row else {
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
