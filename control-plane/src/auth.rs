//! Tokens: generation, hashing at rest, and the extractor that turns an
//! `Authorization: Bearer` header into a [`Principal`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};
use paddock_protocol::admin::{Role, TenantInfo, TENANT_HEADER};
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::store::{ConsoleSessionRow, Principal, SandboxRow, StoreError, SystemStore};
use crate::AppState;

/// The auth layer's narrow window onto the system store: it can look up
/// tokens and nothing else, so holding one grants no tenant data.
#[derive(Debug, Clone)]
pub struct Authenticator {
    system: SystemStore,
}

impl Authenticator {
    pub fn new(system: SystemStore) -> Self {
        Authenticator { system }
    }

    pub async fn api_token(&self, token: &str) -> Result<Option<Principal>, StoreError> {
        self.system.authenticate_api(token).await
    }

    pub async fn sandbox_token(&self, token: &str) -> Result<Option<SandboxRow>, StoreError> {
        self.system.authenticate_sandbox(token).await
    }

    pub async fn console_session(
        &self,
        secret: &str,
    ) -> Result<Option<(Principal, ConsoleSessionRow)>, StoreError> {
        self.system.authenticate_console(secret).await
    }

    pub async fn create_console_session(
        &self,
        principal: &Principal,
        secret: &str,
        csrf_token: &str,
        expires_at: &str,
    ) -> Result<(), StoreError> {
        self.system
            .create_console_session(principal, secret, csrf_token, expires_at)
            .await
    }

    pub async fn end_console_session(&self, secret: &str) -> Result<(), StoreError> {
        self.system.delete_console_session(secret).await
    }
}

/// What a token is for; its prefix tells a person which kind they hold.
#[derive(Debug, Clone, Copy)]
pub enum TokenKind {
    /// An API token for people and orchestrators.
    Api,
    /// A sandbox's agentd token.
    Sandbox,
}

/// A new 256-bit random token, hex encoded, with a kind prefix.
pub fn new_token(kind: TokenKind) -> String {
    let mut bytes = [0u8; 32];
    fill_random(&mut bytes);
    let prefix = match kind {
        TokenKind::Api => "pdk",
        TokenKind::Sandbox => "pds",
    };
    format!("{prefix}_{}", hex::encode(bytes))
}

/// Tokens are high-entropy random strings, so one round of SHA-256 is enough
/// to make a stolen database useless for authentication.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub fn fill_random(buf: &mut [u8]) {
    // The OS random source failing is unrecoverable and extremely rare.
    getrandom::fill(buf).expect("the operating system's random source is unavailable");
}

/// The bearer token of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Who is calling, on which tenant: a valid API token (else 401) — as a
/// bearer token, or a console session cookie (see [`crate::console`]) —
/// and for an owner the tenant named in `x-paddock-tenant` (404 if there
/// is none).
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let mut principal = match (bearer(headers), crate::console::session_cookie(headers)) {
        (Some(token), _) => state
            .auth
            .api_token(token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid, expired or revoked API token"))?,
        (None, Some(secret)) => {
            crate::console::authenticate_cookie(state, method, headers, secret).await?
        }
        (None, None) => {
            return Err(ApiError::unauthorized(
                "missing API token: send `Authorization: Bearer <token>`, or sign in to the console at /console",
            ))
        }
    };
    if let Some(tenant) = headers.get(TENANT_HEADER).and_then(|v| v.to_str().ok()) {
        if tenant != principal.home_tenant {
            // Only the platform owner acts across tenants; for anyone else the
            // other tenant does not exist.
            let exists =
                principal.role == Role::Owner && state.tenants.get(tenant).await?.is_some();
            if !exists {
                return Err(ApiError::not_found(format!("no tenant `{tenant}`")));
            }
            principal.tenant_id = tenant.to_owned();
        }
    }
    Ok(principal)
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    /// Handed over by the authorization layer of [`crate::routes`].
    async fn from_request_parts(parts: &mut Parts, _state: &AppState) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing API token"))
    }
}

/// The tenant directory: the one cross-tenant capability request handlers
/// get (owner-only routes and the tenant header), nothing more.
#[derive(Debug, Clone)]
pub struct Tenants {
    system: SystemStore,
}

impl Tenants {
    pub fn new(system: SystemStore) -> Self {
        Tenants { system }
    }

    pub async fn get(&self, id: &str) -> Result<Option<TenantInfo>, StoreError> {
        self.system.get_tenant(id).await
    }

    pub async fn list(&self) -> Result<Vec<TenantInfo>, StoreError> {
        self.system.list_tenants().await
    }

    pub async fn create(
        &self,
        name: &str,
        retention: Option<u32>,
    ) -> Result<TenantInfo, StoreError> {
        self.system.create_tenant(name, retention).await
    }

    pub async fn set_retention(&self, id: &str, days: Option<u32>) -> Result<bool, StoreError> {
        self.system.set_retention(id, days).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hash_stably() {
        let a = new_token(TokenKind::Api);
        let b = new_token(TokenKind::Api);
        assert!(a.starts_with("pdk_") && a.len() == 4 + 64);
        assert_ne!(a, b);
        assert_eq!(hash_token("x"), hash_token("x"));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(new_token(TokenKind::Sandbox).starts_with("pds_"));
    }
}
