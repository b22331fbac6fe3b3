//! Tenants, users, API tokens and the audit log.
//!
//! Tenant-scoped operations are on [`Store`] (under row-level security on
//! PostgreSQL); creating and listing tenants crosses tenants and lives on
//! [`SystemStore`], reached by request handlers only through
//! [`crate::auth::Tenants`].

use paddock_protocol::admin::{AuditEvent, Role, TenantInfo, TokenInfo, UserInfo};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::QueryTimer;
use super::{new_id, now_rfc3339, Result, Store, StoreError, SystemStore};
use crate::auth::{hash_token, new_token, TokenKind};

const TOKEN_COLUMNS: &str =
    "SELECT id, tenant_id, name, role, user_id, created_at, expires_at, revoked_at FROM api_tokens";

fn token_from_row(row: &AnyRow) -> Result<TokenInfo> {
    let role: String = row.try_get("role")?;
    Ok(TokenInfo {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        name: row.try_get("name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role {role}")))?,
        user_id: row.try_get("user_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn tenant_from_row(row: &AnyRow) -> Result<TenantInfo> {
    let retention: Option<i64> = row.try_get("retention_days")?;
    Ok(TenantInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        retention_days: retention.map(|d| d as u32),
        created_at: row.try_get("created_at")?,
    })
}

impl SystemStore {
    pub async fn create_tenant(
        &self,
        name: &str,
        retention_days: Option<u32>,
    ) -> Result<TenantInfo> {
        let _timed = QueryTimer::start("create_tenant");
        let created_at = now_rfc3339();
        let result = sqlx::query(
            "INSERT INTO tenants (id, name, created_at, retention_days) VALUES ($1, $1, $2, $3)",
        )
        .bind(name)
        .bind(&created_at)
        .bind(retention_days.map(i64::from))
        .execute(self.pool())
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(format!(
                    "a tenant named `{name}` already exists"
                )))
            }
            other => other?,
        };
        Ok(TenantInfo {
            id: name.to_owned(),
            name: name.to_owned(),
            retention_days,
            created_at,
        })
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantInfo>> {
        let _timed = QueryTimer::start("list_tenants");
        let rows =
            sqlx::query("SELECT id, name, retention_days, created_at FROM tenants ORDER BY name")
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(tenant_from_row).collect()
    }

    pub async fn get_tenant(&self, id: &str) -> Result<Option<TenantInfo>> {
        let _timed = QueryTimer::start("get_tenant");
        let row =
            sqlx::query("SELECT id, name, retention_days, created_at FROM tenants WHERE id = $1")
                .bind(id)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| tenant_from_row(&r)).transpose()
    }

    pub async fn set_retention(&self, id: &str, retention_days: Option<u32>) -> Result<bool> {
        let _timed = QueryTimer::start("set_retention");
        let done = sqlx::query("UPDATE tenants SET retention_days = $1 WHERE id = $2")
            .bind(retention_days.map(i64::from))
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

impl Store {
    pub async fn create_user(
        &self,
        tenant_id: &str,
        name: &str,
        email: Option<&str>,
    ) -> Result<UserInfo> {
        let _timed = QueryTimer::start("create_user");
        let user = UserInfo {
            id: new_id("usr"),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            email: email.map(str::to_owned),
            created_at: now_rfc3339(),
        };
        let mut tx = self.begin(tenant_id).await?;
        let result = sqlx::query(
            "INSERT INTO users (id, tenant_id, name, email, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(tenant_id)
        .bind(name)
        .bind(email)
        .bind(&user.created_at)
        .execute(&mut *tx)
        .await;
        match result {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(format!(
                    "a user named `{name}` already exists"
                )))
            }
            other => other?,
        };
        tx.commit().await?;
        Ok(user)
    }

    pub async fn list_users(&self, tenant_id: &str) -> Result<Vec<UserInfo>> {
        let _timed = QueryTimer::start("list_users");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, tenant_id, name, email, created_at FROM users WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter()
            .map(|row| {
                Ok(UserInfo {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    name: row.try_get("name")?,
                    email: row.try_get("email")?,
                    created_at: row.try_get("created_at")?,
                })
            })
            .collect()
    }

    pub async fn user_exists(&self, tenant_id: &str, id: &str) -> Result<bool> {
        let _timed = QueryTimer::start("user_exists");
        let mut tx = self.begin(tenant_id).await?;
        let row = sqlx::query("SELECT id FROM users WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row.is_some())
    }

    /// Creates an API token; the secret is returned once and stored hashed.
    pub async fn create_token(
        &self,
        tenant_id: &str,
        name: &str,
        role: Role,
        user_id: Option<&str>,
        expires_at: Option<String>,
    ) -> Result<(TokenInfo, String)> {
        let _timed = QueryTimer::start("create_token");
        let secret = new_token(TokenKind::Api);
        let info = TokenInfo {
            id: new_id("tok"),
            tenant_id: tenant_id.to_owned(),
            name: name.to_owned(),
            role,
            user_id: user_id.map(str::to_owned),
            created_at: now_rfc3339(),
            expires_at,
            revoked_at: None,
        };
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "INSERT INTO api_tokens (id, tenant_id, name, role, token_hash, created_at, user_id, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&info.id)
        .bind(tenant_id)
        .bind(name)
        .bind(role.as_str())
        .bind(hash_token(&secret))
        .bind(&info.created_at)
        .bind(user_id)
        .bind(&info.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((info, secret))
    }

    pub async fn list_tokens(&self, tenant_id: &str) -> Result<Vec<TokenInfo>> {
        let _timed = QueryTimer::start("list_tokens");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(&format!(
            "{TOKEN_COLUMNS} WHERE tenant_id = $1 ORDER BY created_at, id"
        ))
        .bind(tenant_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        rows.iter().map(token_from_row).collect()
    }

    /// Revokes a token of the tenant; `None` if there is no such token.
    pub async fn revoke_token(&self, tenant_id: &str, id: &str) -> Result<Option<TokenInfo>> {
        let _timed = QueryTimer::start("revoke_token");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE tenant_id = $2 AND id = $3",
        )
        .bind(now_rfc3339())
        .bind(tenant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&format!("{TOKEN_COLUMNS} WHERE tenant_id = $1 AND id = $2"))
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.map(|r| token_from_row(&r)).transpose()
    }

    /// Appends an audit record. Failures are the caller's to log, not to surface.
    pub async fn audit(
        &self,
        tenant_id: &str,
        actor: &str,
        role: &str,
        action: &str,
        resource: &str,
        detail: &serde_json::Value,
    ) -> Result<()> {
        let _timed = QueryTimer::start("audit");
        let mut tx = self.begin(tenant_id).await?;
        sqlx::query(
            "INSERT INTO audit_events (tenant_id, at, actor, role, action, resource, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant_id)
        .bind(now_rfc3339())
        .bind(actor)
        .bind(role)
        .bind(action)
        .bind(resource)
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The tenant's most recent audit records, newest last.
    pub async fn list_audit(&self, tenant_id: &str, limit: u32) -> Result<Vec<AuditEvent>> {
        let _timed = QueryTimer::start("list_audit");
        let mut tx = self.begin(tenant_id).await?;
        let rows = sqlx::query(
            "SELECT id, tenant_id, at, actor, role, action, resource, detail FROM audit_events
             WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(tenant_id)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut events = rows
            .iter()
            .map(|row| {
                let detail: String = row.try_get("detail")?;
                Ok(AuditEvent {
                    id: row.try_get("id")?,
                    tenant_id: row.try_get("tenant_id")?,
                    at: row.try_get("at")?,
                    actor: row.try_get("actor")?,
                    role: row.try_get("role")?,
                    action: row.try_get("action")?,
                    resource: row.try_get("resource")?,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }
}
