//! Bodies of the control plane's HTTP API (`/v1/...`), shared by the server
//! and its clients. Times are RFC 3339 strings in UTC.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::ids::{RequestId, SandboxId, SessionId};
use crate::messages::{ControlToAgent, ErrorCode, StreamMode};
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

/// `POST /v1/sandboxes`
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSandbox {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Response to `POST /v1/sandboxes`: the only time the agentd token is shown.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRegistered {
    pub sandbox: SandboxInfo,
    /// The token agentd presents as `Authorization: Bearer`; stored hashed.
    pub token: String,
}

/// Whether a sandbox's agentd holds its connection to the control plane.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxStatus {
    Connected,
    Disconnected,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    pub id: SandboxId,
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub status: SandboxStatus,
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
}
