//! Handlers for identities and governance: who am I, tenants, users, API
//! tokens, and the audit log — plus [`record`], which every handler uses to
//! write audit events.

use std::time::{Duration, SystemTime};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use paddock_protocol::admin::{
    AuditList, CreateTenant, CreateToken, CreateUser, Role, TenantInfo, TenantList, TokenCreated,
    TokenInfo, TokenList, UpdateTenant, UserInfo, UserList, WhoAmI,
};
use paddock_protocol::ErrorCode;
use serde::Deserialize;
use serde_json::json;

use crate::api::validate_name;
use crate::error::ApiError;
use crate::store::Principal;
use crate::{clock, AppState};

type ApiResult<T> = Result<T, ApiError>;
type JsonBody<T> = Result<Json<T>, axum::extract::rejection::JsonRejection>;

/// Writes an audit event for the caller's tenant. A failure to record is
/// logged, not returned: the action itself already happened.
pub async fn record(
    state: &AppState,
    principal: &Principal,
    action: &str,
    resource: &str,
    detail: serde_json::Value,
) {
    record_for(
        state,
        &principal.tenant_id,
        principal,
        action,
        resource,
        detail,
    )
    .await
}

/// Writes an audit event into `tenant`'s log.
pub async fn record_for(
    state: &AppState,
    tenant: &str,
    principal: &Principal,
    action: &str,
    resource: &str,
    detail: serde_json::Value,
) {
    let result = state
        .store
        .audit(
            tenant,
            &principal.token_id,
            principal.role.as_str(),
            action,
            resource,
            &detail,
        )
        .await;
    if let Err(err) = result {
        tracing::error!(error = %err, action, resource, "could not write an audit event");
    }
}

pub async fn whoami(principal: Principal) -> Json<WhoAmI> {
    Json(WhoAmI {
        token_id: principal.token_id,
        token_name: principal.token_name,
        role: principal.role,
        tenant_id: principal.tenant_id,
    })
}

pub async fn list_tenants(State(state): State<AppState>) -> ApiResult<Json<TenantList>> {
    Ok(Json(TenantList {
        tenants: state.tenants.list().await?,
    }))
}

pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantInfo>)> {
    let Json(body) = body?;
    validate_name(&body.name)?;
    let tenant = state
        .tenants
        .create(&body.name, body.retention_days)
        .await?;
    record_for(
        &state,
        &tenant.id,
        &principal,
        "tenant.created",
        &format!("tenant/{}", tenant.id),
        json!({ "retention_days": tenant.retention_days }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(tenant)))
}

pub async fn update_tenant(
    State(state): State<AppState>,
    principal: Principal,
    Path(tenant): Path<String>,
    body: JsonBody<UpdateTenant>,
) -> ApiResult<Json<TenantInfo>> {
    let Json(body) = body?;
    // An admin sees its own tenant only; another tenant does not exist for it.
    if tenant != principal.tenant_id && principal.role != Role::Owner {
        return Err(ApiError::not_found(format!("no tenant `{tenant}`")));
    }
    let current = state
        .tenants
        .get(&tenant)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant `{tenant}`")))?;
    let retention = match (body.keep_forever, body.retention_days) {
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "give either retention_days or keep_forever, not both",
            ))
        }
        (true, None) => None,
        (false, Some(0)) => return Err(ApiError::bad_request("retention_days must be at least 1")),
        (false, Some(days)) => Some(days),
        (false, None) => current.retention_days,
    };
    state.tenants.set_retention(&tenant, retention).await?;
    record_for(
        &state,
        &tenant,
        &principal,
        "tenant.updated",
        &format!("tenant/{tenant}"),
        json!({ "retention_days": retention }),
    )
    .await;
    Ok(Json(TenantInfo {
        retention_days: retention,
        ..current
    }))
}

pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<UserList>> {
    Ok(Json(UserList {
        users: state.store.list_users(&principal.tenant_id).await?,
    }))
}

pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<CreateUser>,
) -> ApiResult<(StatusCode, Json<UserInfo>)> {
    let Json(body) = body?;
    validate_name(&body.name)?;
    let user = state
        .store
        .create_user(&principal.tenant_id, &body.name, body.email.as_deref())
        .await?;
    record(
        &state,
        &principal,
        "user.created",
        &format!("user/{}", user.id),
        json!({ "name": user.name }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(user)))
}

pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<TokenList>> {
    Ok(Json(TokenList {
        tokens: state.store.list_tokens(&principal.tenant_id).await?,
    }))
}

pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody<CreateToken>,
) -> ApiResult<(StatusCode, Json<TokenCreated>)> {
    let Json(body) = body?;
    validate_name(&body.name)?;
    // No one hands out more power than they hold: only the owner mints owners.
    if body.role == Role::Owner && principal.role != Role::Owner {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only an owner may create owner tokens",
        ));
    }
    if let Some(user) = &body.user_id {
        if !state.store.user_exists(&principal.tenant_id, user).await? {
            return Err(ApiError::not_found(format!("no user `{user}`")));
        }
    }
    let expires_at = match body.expires_in_secs {
        Some(0) => return Err(ApiError::bad_request("expires_in_secs must be at least 1")),
        Some(secs) => Some(clock::rfc3339(
            SystemTime::now() + Duration::from_secs(secs.min(100 * 365 * 86_400)),
        )),
        None => None,
    };
    let agent = match (&body.agent, body.role) {
        (Some(name), Role::Agent) => Some(
            state
                .store
                .find_agent(&principal.tenant_id, name)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no agent `{name}`; create it with `paddock agents create`"
                    ))
                })?,
        ),
        (Some(_), _) => return Err(ApiError::bad_request("only agent tokens act for an agent")),
        (None, _) => None,
    };
    let (info, token) = state
        .store
        .create_token(
            &principal.tenant_id,
            &body.name,
            body.role,
            body.user_id.as_deref(),
            expires_at,
        )
        .await?;
    if let Some(agent) = &agent {
        state
            .store
            .bind_token_agent(&principal.tenant_id, &info.id, &agent.id)
            .await?;
    }
    record(
        &state,
        &principal,
        "token.created",
        &format!("token/{}", info.id),
        json!({ "name": info.name, "role": info.role, "expires_at": info.expires_at }),
    )
    .await;
    Ok((StatusCode::CREATED, Json(TokenCreated { token, info })))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(token): Path<String>,
) -> ApiResult<Json<TokenInfo>> {
    let info = state
        .store
        .revoke_token(&principal.tenant_id, &token)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no token `{token}`; `paddock tokens list` lists them"
            ))
        })?;
    record(
        &state,
        &principal,
        "token.revoked",
        &format!("token/{}", info.id),
        json!({ "name": info.name }),
    )
    .await;
    Ok(Json(info))
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn list_audit(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AuditList>> {
    let Query(query) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = query.limit.unwrap_or(200).clamp(1, 10_000);
    Ok(Json(AuditList {
        events: state.store.list_audit(&principal.tenant_id, limit).await?,
    }))
}
