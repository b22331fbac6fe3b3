//! HTTP bodies for identities and governance of a tenant: tenants, users,
//! API tokens and the audit log. Times are RFC 3339 strings in UTC.

use serde::{Deserialize, Serialize};

/// What an API token may do. Ordered from most to least powerful for
/// display only; permissions are checked per route, not by order.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, across tenants: the platform operator.
    Owner,
    /// Manages its tenant: users, tokens, sandboxes, settings.
    Admin,
    /// Lists and watches every sandbox and session of its tenant; no input.
    Operator,
    /// Watches and attaches to its tenant's sandboxes; runs commands.
    Developer,
    /// An AI agent or orchestrator: tool calls and tasks for its own agent.
    Agent,
    /// Read-only lists and logs.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Owner,
        Role::Admin,
        Role::Operator,
        Role::Developer,
        Role::Agent,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Developer => "developer",
            Role::Agent => "agent",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// `POST /v1/tenants` (owner only).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTenant {
    pub name: String,
    /// Days terminal output is kept; forever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// `PATCH /v1/tenants/{tenant}` (owner, or an admin of that tenant).
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateTenant {
    /// A new retention in days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Keep output forever (drops any retention limit).
    #[serde(default)]
    pub keep_forever: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    pub created_at: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantList {
    pub tenants: Vec<TenantInfo>,
}

/// `POST /v1/users`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateUser {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub created_at: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<UserInfo>,
}

/// `POST /v1/tokens`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateToken {
    /// A label for people, e.g. `ci` or `alice-laptop`.
    pub name: String,
    pub role: Role,
    /// The user the token belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Lifetime in seconds; the token never expires when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// For role `agent`: the agent (name or id) the token acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// Response to `POST /v1/tokens`: the only time the secret is shown.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    pub info: TokenInfo,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// `GET /v1/whoami`: the caller as the control plane sees it.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoAmI {
    pub token_id: String,
    pub token_name: String,
    pub role: Role,
    pub tenant_id: String,
}

/// `POST /v1/console/session`: sign in to the browser console with an API
/// token; the answer sets an HttpOnly session cookie.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSignIn {
    pub token: String,
}

/// The console session behind a cookie (`POST`/`GET /v1/console/session`).
/// State-changing requests made with the cookie carry `csrf_token` in the
/// [`CSRF_HEADER`] header.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub csrf_token: String,
    pub token_name: String,
    pub role: Role,
    pub tenant_id: String,
    pub expires_at: String,
}

/// The header carrying a console session's CSRF token.
pub const CSRF_HEADER: &str = "x-paddock-csrf";

/// The name of the console's session cookie.
pub const SESSION_COOKIE: &str = "paddock_session";

/// One audit record: who did what to which resource, when.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: i64,
    pub tenant_id: String,
    pub at: String,
    /// The acting token's id, or `system`.
    pub actor: String,
    pub role: String,
    /// e.g. `token.created`, `sandbox.registered`, `session.attach.started`.
    pub action: String,
    /// e.g. `sandbox/sbx_…`, `session/12`, `token/tok_…`.
    pub resource: String,
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// `GET /v1/audit`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditList {
    pub events: Vec<AuditEvent>,
}

/// Header an owner uses to act on a tenant other than its own.
pub const TENANT_HEADER: &str = "x-paddock-tenant";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_by_name() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
            assert_eq!(
                serde_json::to_string(&role).unwrap(),
                format!("\"{}\"", role.as_str())
            );
        }
        assert_eq!(Role::parse("root"), None);
    }
}
