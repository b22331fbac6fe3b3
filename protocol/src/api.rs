//! Bodies of the control plane's HTTP API (`/v1/...`), shared by the server
//! and its clients. Times are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::ids::{RequestId, SandboxId, SessionId};
use crate::messages::{ControlToAgent, ErrorCode, StreamMode};
use crate::screen::Render;
use crate::terminal::{ExitStatus, Signal, TermSize};
use crate::tools::ToolCall;

/// The one error shape of the HTTP API: `{"error":{"code":"...","message":"..."}}`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

/// `POST /v1/sandboxes`. Without `provider` (and without `size`) the
/// sandbox is registered by hand: the answer's token is for an agentd
/// started by the caller. With `provider` (or `size`, which picks the
/// tenant's provider) the control plane provisions it and hands agentd
/// its token itself.
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSandbox {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `local`, `docker`, `fly`, or `default` for the tenant's provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// A size named in the control plane's config (`small`, `medium`,
    /// `large` by default); the configured default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Response to `POST /v1/sandboxes`: the only time the agentd token is shown.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRegistered {
    pub sandbox: SandboxInfo,
    /// The token agentd presents as `Authorization: Bearer`; stored hashed.
    /// Empty for a provisioned sandbox: the provider handed it to agentd.
    #[serde(default)]
    pub token: String,
}

/// Where a sandbox is in its life: `provisioning → starting → connected ⇄
/// disconnected → stopping → stopped → destroyed`, or `failed` (with
/// [`SandboxInfo::reason`]). A sandbox registered by hand is `disconnected`
/// until its agentd connects, and only ever `connected`, `disconnected` or
/// `destroyed`.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    /// The provider is creating it.
    Provisioning,
    /// Created or started; its agentd has not connected yet.
    Starting,
    Connected,
    Disconnected,
    Stopping,
    /// Stopped by the provider; `start` brings it back with its workspace.
    Stopped,
    /// Gone, with everything the provider made for it; its name is free again.
    Destroyed,
    /// Broken; [`SandboxInfo::reason`] says why.
    Failed,
}

impl SandboxStatus {
    pub const ALL: [SandboxStatus; 8] = [
        SandboxStatus::Provisioning,
        SandboxStatus::Starting,
        SandboxStatus::Connected,
        SandboxStatus::Disconnected,
        SandboxStatus::Stopping,
        SandboxStatus::Stopped,
        SandboxStatus::Destroyed,
        SandboxStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxStatus::Provisioning => "provisioning",
            SandboxStatus::Starting => "starting",
            SandboxStatus::Connected => "connected",
            SandboxStatus::Disconnected => "disconnected",
            SandboxStatus::Stopping => "stopping",
            SandboxStatus::Stopped => "stopped",
            SandboxStatus::Destroyed => "destroyed",
            SandboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SandboxStatus> {
        SandboxStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub status: SandboxStatus,
    /// Why it is `failed` (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The provider that runs it; absent for a sandbox registered by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Its size's name, for a provisioned sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
    pub created_at: String,
    /// When agentd last sent anything; absent if it never connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<String>,
    /// The `peer` agentd announced in its last hello, e.g. `agentd/0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
}

/// `GET /v1/sandboxes`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxInfo>,
}

/// `POST /v1/sandboxes/{id}/sessions`
#[derive(schemars::JsonSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSessionRequest {
    /// The program; the sandbox's default shell when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Initial PTY size; 80×24 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<TermSize>,
}

/// Why a `POST /v1/sandboxes/{id}/tools/{tool}` body was refused.
#[derive(Debug, thiserror::Error)]
pub enum ToolBodyError {
    #[error("the body must be a JSON object of the tool's arguments")]
    NotAnObject,
    #[error("call_timeout_ms must be a number of milliseconds")]
    BadTimeout,
    #[error("invalid arguments for tool `{tool}`: {source}")]
    Arguments {
        tool: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Limit(#[from] DecodeError),
}

/// Reads a tool call from the HTTP API: `tool` from the path, the body a
/// JSON object of the tool's arguments plus an optional `call_timeout_ms`
/// (the path's tool wins over a `tool` field in the body). Returns the call
/// and its timeout once they pass every check agentd applies.
pub fn tool_call_from_body(
    tool: &str,
    mut body: serde_json::Value,
) -> Result<(ToolCall, Option<u64>), ToolBodyError> {
    let fields = body.as_object_mut().ok_or(ToolBodyError::NotAnObject)?;
    let timeout_ms = match fields.remove("call_timeout_ms") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or(ToolBodyError::BadTimeout)?),
    };
    fields.insert("tool".into(), serde_json::Value::String(tool.to_owned()));
    let call: ToolCall =
        serde_json::from_value(body).map_err(|source| ToolBodyError::Arguments {
            tool: tool.to_owned(),
            source,
        })?;
    ControlToAgent::ToolCall {
        request_id: RequestId(0),
        timeout_ms,
        call: call.clone(),
    }
    .preflight()?;
    Ok((call, timeout_ms))
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// The control plane asked agentd to start it and awaits the answer.
    Starting,
    Running,
    Exited,
    /// The sandbox disconnected and the session's fate is not known yet.
    Lost,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub sandbox_id: SandboxId,
    /// The program as asked for; `None` for the sandbox's default shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    pub state: SessionState,
    pub size: TermSize,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitStatus>,
    /// Bytes of output so far: the offset the next output byte will have.
    pub end_offset: u64,
    /// Who drives the session, if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// How many clients watch or drive it now.
    #[serde(default)]
    pub viewers: u32,
}

/// `GET /v1/sandboxes/{id}/sessions`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionInfo>,
}

/// `POST /v1/sandboxes/{id}/sessions/{session}/signal`
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    pub signal: Signal,
}

/// `POST /v1/sandboxes/{id}/sessions/{session}/resize`
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeRequest {
    pub size: TermSize,
}

/// Query of `GET /v1/sandboxes/{id}/sessions/{session}/stream`.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamQuery {
    #[serde(default = "default_mode")]
    pub mode: StreamMode,
    /// With `mode=attach`: take over from the current driver, who becomes a watcher.
    #[serde(default)]
    pub take: bool,
    /// Replay stored output from this offset and never skip any. When
    /// absent, the client joins live: a `snapshot` of the screen first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// `screen`: rendered screens (`screen_frame`, `screen_diff`) instead
    /// of output bytes, for the browser console. Not with `from`.
    #[serde(default)]
    pub render: Render,
}

/// Query of `GET /v1/sandboxes/{id}/sessions/{session}/output`: the stored
/// output in `[from, to)` as `application/octet-stream`. Holes in that range
/// are listed in the `x-paddock-gaps` response header as `from-to` pairs
/// separated by commas; the body holds the bytes that exist, in order.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize,
)]
pub struct OutputQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// `raw` (the default) or `asciicast` (v2, the whole session; `from`
    /// and `to` do not apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Raw,
    Asciicast,
}

/// Response header of the output endpoint listing holes in the range.
pub const GAPS_HEADER: &str = "x-paddock-gaps";

impl StreamQuery {
    /// The query string, e.g. `mode=attach&take=true&from=0`.
    pub fn to_query_string(&self) -> String {
        let mut q = format!("mode={}", self.mode.as_str());
        if self.take {
            q.push_str("&take=true");
        }
        if let Some(from) = self.from {
            q.push_str(&format!("&from={from}"));
        }
        if self.render != Render::Bytes {
            q.push_str(&format!("&render={}", self.render.as_str()));
        }
        q
    }
}

fn default_mode() -> StreamMode {
    StreamMode::Watch
}

/// `GET /healthz`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub version: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_tool_body_takes_its_tool_from_the_path() {
        let body = json!({"tool": "git_push", "repo": "app", "call_timeout_ms": 500});
        let (call, timeout) = tool_call_from_body("git_status", body).unwrap();
        assert_eq!(call.name(), "git_status");
        assert_eq!(timeout, Some(500));
    }

    #[test]
    fn bad_tool_bodies_say_what_is_wrong() {
        let refused = |tool: &str, body| tool_call_from_body(tool, body).unwrap_err().to_string();
        assert_eq!(
            refused("git_status", json!([1])),
            "the body must be a JSON object of the tool's arguments"
        );
        assert_eq!(
            refused(
                "git_status",
                json!({"repo": "a", "call_timeout_ms": "soon"})
            ),
            "call_timeout_ms must be a number of milliseconds"
        );
        assert!(refused("launch", json!({})).starts_with("invalid arguments for tool `launch`"));
        let long = "a".repeat(crate::MAX_STRING_LEN + 1);
        assert!(refused("git_status", json!({ "repo": long })).contains("`repo`"));
    }

    /// Pins the bytes shown in docs/PROTOCOL.md ("Sandbox lifecycle").
    #[test]
    fn sandbox_bodies_golden() {
        let failed = SandboxInfo {
            id: SandboxId::from("sbx_01"),
            name: "box1".into(),
            labels: BTreeMap::from([("team".into(), "a".into())]),
            status: SandboxStatus::Failed,
            reason: Some("the local provider no longer reports its resource sbx_01".into()),
            provider: Some("local".into()),
            size: Some("small".into()),
            created_at: "2026-11-26T03:00:00.000Z".into(),
            last_seen_at: None,
            agent_version: None,
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            text,
            r#"{"id":"sbx_01","name":"box1","labels":{"team":"a"},"status":"failed","reason":"the local provider no longer reports its resource sbx_01","provider":"local","size":"small","created_at":"2026-11-26T03:00:00.000Z"}"#
        );
        assert_eq!(serde_json::from_str::<SandboxInfo>(&text).unwrap(), failed);
        // A body from before lifecycle states still reads.
        let old: SandboxInfo = serde_json::from_str(
            r#"{"id":"sbx_02","name":"b","status":"disconnected","created_at":"2026-11-26T03:00:00.000Z"}"#,
        )
        .unwrap();
        assert_eq!(
            (old.status, old.provider),
            (SandboxStatus::Disconnected, None)
        );
        let create = RegisterSandbox {
            name: "box1".into(),
            labels: BTreeMap::new(),
            provider: Some("local".into()),
            size: Some("small".into()),
        };
        assert_eq!(
            serde_json::to_string(&create).unwrap(),
            r#"{"name":"box1","labels":{},"provider":"local","size":"small"}"#
        );
        for status in SandboxStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(SandboxStatus::parse(status.as_str()), Some(status));
        }
    }
}
