//! Control messages: JSON text frames, one tagged enum per direction.
//!
//! Every enum is `#[serde(tag = "type", rename_all = "snake_case")]`, so a
//! message reads `{"type":"open_session",...}`. New fields are added with
//! `#[serde(default)]`; a changed meaning is a new variant, never a silent
//! reinterpretation of an old one. Each enum has `decode`, which enforces the
//! frame size limit and every string limit, and `encode`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::SessionInfo;
use crate::error::{check_len, check_str, check_strs, DecodeError};
use crate::ids::{RequestId, SandboxId, SessionId};
use crate::limits::*;
use crate::screen::{check_rows, Cursor, ScreenRow};
use crate::terminal::{ExitStatus, Signal, TermSize};
use crate::tools::{ToolCall, ToolOutput};

/// The first message on every connection, from the dialling peer.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the peer speaks.
    pub protocol_version: u32,
    /// The peer's software and version, e.g. `agentd/0.1.0`.
    pub peer: String,
    /// Optional features the peer offers, e.g. `pty`.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl Hello {
    fn validate(&self) -> Result<(), DecodeError> {
        check_str("peer", &self.peer, MAX_NAME_LEN)?;
        check_strs(
            "capabilities",
            self.capabilities.iter(),
            MAX_CAPABILITIES,
            MAX_NAME_LEN,
        )
    }
}

/// A session agentd still runs, reported in its hello after a (re)connect.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSession {
    pub session_id: SessionId,
    /// The offset the session's next output byte will have.
    pub next_offset: u64,
    /// The lowest offset agentd can still replay from.
    pub retained_from: u64,
    pub size: TermSize,
}

/// Messages agentd sends to the control plane.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentToControl {
    /// First message on a connection: versions, capabilities, sessions still running.
    Hello {
        #[serde(flatten)]
        hello: Hello,
        #[serde(default)]
        sessions: Vec<LiveSession>,
    },
    /// A session was opened as requested; its output follows as binary frames.
    SessionOpened {
        request_id: RequestId,
        session_id: SessionId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<u32>,
    },
    /// A session's process ended; `end_offset` is the length of its output stream.
    SessionExited {
        session_id: SessionId,
        status: ExitStatus,
        end_offset: u64,
    },
    /// Output in `[from, to)` was lost and will never be sent.
    Gap {
        session_id: SessionId,
        from: u64,
        to: u64,
        reason: String,
    },
    /// A request without a more specific reply succeeded.
    RequestDone { request_id: RequestId },
    /// A request failed; `message` says why, for a person.
    RequestFailed {
        request_id: RequestId,
        code: ErrorCode,
        message: String,
    },
    /// A tool call succeeded; `result` is tagged by the same `"tool"` name.
    ToolResult {
        request_id: RequestId,
        result: ToolOutput,
    },
    /// Unsolicited: a language server published diagnostics for a document
    /// (LSP `Diagnostic` objects as the server sent them; an empty list
    /// clears them). Sent on whatever connection is up; the latest are
    /// also served by `lsp_diagnostics`.
    LspDiagnostics {
        workspace: String,
        language: String,
        uri: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<i32>,
        diagnostics: Vec<serde_json::Value>,
    },
}

/// Messages the control plane sends to agentd.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlToAgent {
    /// Accepts agentd's hello.
    Welcome {
        #[serde(flatten)]
        hello: Hello,
        sandbox_id: SandboxId,
        /// How often agentd pings; the control plane drops a link silent for three intervals.
        heartbeat_ms: u64,
        /// Per live session, the offset from which the control plane needs output again.
        #[serde(default)]
        resume: Vec<ResumeFrom>,
    },
    /// Start a process in a new PTY.
    OpenSession {
        request_id: RequestId,
        session_id: SessionId,
        /// The program; agentd's default shell when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        #[serde(default)]
        args: Vec<String>,
        /// Working directory, relative to agentd's workdir or absolute.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        size: TermSize,
    },
    /// Change a session's PTY size.
    ResizeSession {
        request_id: RequestId,
        session_id: SessionId,
        size: TermSize,
    },
    /// Send a signal to a session's process group.
    SignalSession {
        request_id: RequestId,
        session_id: SessionId,
        signal: Signal,
    },
    /// End a session: hang up its process (then kill it) and free its PTY.
    CloseSession {
        request_id: RequestId,
        session_id: SessionId,
    },
    /// Forget a session agentd reported in its hello that the control plane does not know.
    DropSession { session_id: SessionId },
    /// Every output byte of the session below `offset` is durably stored:
    /// agentd may discard it. Acks only ever move forward.
    Ack { session_id: SessionId, offset: u64 },
    /// The session's exit is durably stored: agentd may forget the session.
    ExitRecorded { session_id: SessionId },
    /// Run a tool. agentd answers `tool_result` or `request_failed`; it
    /// gives up after `timeout_ms` (default per tool, see
    /// [`ToolCall::default_timeout_ms`]) with code `timeout`.
    ToolCall {
        request_id: RequestId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
        call: ToolCall,
    },
    /// Cancel an in-flight tool call: agentd answers the call itself with
    /// `request_failed` code `cancelled`. For a call already answered (or
    /// unknown) nothing is sent.
    CancelRequest { request_id: RequestId },
}

/// Where the control plane wants a live session's output replayed from.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeFrom {
    pub session_id: SessionId,
    pub offset: u64,
}

/// Messages a client (CLI, console) sends on a session stream.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientToControl {
    /// First message on a stream.
    Hello {
        #[serde(flatten)]
        hello: Hello,
    },
    /// The driver's terminal changed size; the PTY follows. Ignored from watchers.
    Resize { size: TermSize },
}

/// Whether a client only watches a session or drives it.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamMode {
    /// Read-only; any number of watchers.
    Watch,
    /// May type and resize; one driver at a time.
    Attach,
}

impl StreamMode {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamMode::Watch => "watch",
            StreamMode::Attach => "attach",
        }
    }
}

/// Messages the control plane sends to a client on a session stream.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlToClient {
    /// Accepts the client's hello; output from offset `from` follows.
    Welcome {
        #[serde(flatten)]
        hello: Hello,
        session: Box<SessionInfo>,
        mode: StreamMode,
        from: u64,
    },
    /// This client's mode changed, e.g. a driver demoted to watcher by a take-over.
    ModeChanged { mode: StreamMode, reason: String },
    /// Who drives the session now; `None` when nobody does.
    DriverChanged {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        driver: Option<String>,
    },
    /// The session's PTY size changed.
    Resized { size: TermSize },
    /// Output in `[from, to)` was lost and will never be delivered, or this
    /// client fell behind and skips it (a `snapshot` follows).
    Gap { from: u64, to: u64, reason: String },
    /// The screen as it stands at stream offset `offset`: escape sequences
    /// that redraw it (contents, attributes, cursor, modes) on a terminal of
    /// `size`. Output frames from `offset` on follow.
    Snapshot {
        offset: u64,
        size: TermSize,
        screen: String,
    },
    /// `render=screen` only: the whole screen as it stands at stream offset
    /// `offset`, on a terminal of `size`. Rows not listed are blank; a large
    /// screen may be completed by `screen_diff`s at the same offset.
    ScreenFrame {
        offset: u64,
        size: TermSize,
        rows: Vec<ScreenRow>,
        cursor: Cursor,
    },
    /// `render=screen` only: the rows that changed since the last frame or
    /// diff (each replaces that row whole) and the cursor, at `offset`.
    ScreenDiff {
        offset: u64,
        rows: Vec<ScreenRow>,
        cursor: Cursor,
    },
    /// The session ended; every output byte up to `end_offset` was sent before this.
    Exited { status: ExitStatus, end_offset: u64 },
    /// A refusal or failure; the connection closes after it.
    Error { code: ErrorCode, message: String },
}

/// Machine-readable error codes shared by the wire and the HTTP API.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    /// The sandbox is registered but its agentd is not connected.
    SandboxDisconnected,
    /// Attach refused: another client drives the session.
    DriverExists,
    /// The process could not be started.
    SpawnFailed,
    /// The session has already ended.
    SessionEnded,
    UnsupportedVersion,
    Timeout,
    Internal,
    /// A remote refused the credentials given (or needed some and got none).
    AuthFailed,
    /// A path leads outside the sandbox's work directory.
    PathEscape,
    /// A push would lose commits on the remote; fetch and merge, or force.
    NonFastForward,
    /// A tool ran and failed (git, a language server, a file operation).
    ToolFailed,
    /// The request was cancelled by `cancel_request`.
    Cancelled,
    /// Governance: a rolling-window quota is used up (HTTP 429).
    QuotaExceeded,
    /// Governance: a cost budget is used up (HTTP 429).
    BudgetExceeded,
    /// Governance: the agent's reputation restricts it (HTTP 403).
    AgentRestricted,
    /// A dependency (the database) does not answer (HTTP 503).
    Unavailable,
    /// A configured limit is reached: connections per token or IP, watchers
    /// per session, sessions per sandbox (HTTP 429).
    LimitExceeded,
    /// The request body is larger than the server accepts (HTTP 413).
    PayloadTooLarge,
    /// A code this build does not know, from a newer peer.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::SandboxDisconnected => "sandbox_disconnected",
            ErrorCode::DriverExists => "driver_exists",
            ErrorCode::SpawnFailed => "spawn_failed",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::PathEscape => "path_escape",
            ErrorCode::NonFastForward => "non_fast_forward",
            ErrorCode::ToolFailed => "tool_failed",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::BudgetExceeded => "budget_exceeded",
            ErrorCode::AgentRestricted => "agent_restricted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unknown => "unknown",
        }
    }
}

fn check_text_len(text: &str) -> Result<(), DecodeError> {
    if text.len() > MAX_CONTROL_FRAME {
        return Err(DecodeError::TooLarge {
            len: text.len(),
            limit: MAX_CONTROL_FRAME,
        });
    }
    Ok(())
}

pub(crate) fn check_env(env: &BTreeMap<String, String>) -> Result<(), DecodeError> {
    check_len("env", env.len(), MAX_ENV)?;
    for (key, value) in env {
        check_str("env", key, MAX_NAME_LEN)?;
        check_str("env", value, MAX_STRING_LEN)?;
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            return Err(DecodeError::Invalid {
                field: "env",
                reason: "keys must be non-empty without '=' or NUL; values without NUL",
            });
        }
    }
    Ok(())
}

macro_rules! codec {
    ($ty:ty) => {
        impl $ty {
            /// Decodes a text frame, enforcing the size limit and every field limit.
            pub fn decode(text: &str) -> Result<Self, DecodeError> {
                check_text_len(text)?;
                let msg: Self = serde_json::from_str(text)?;
                msg.validate()?;
                Ok(msg)
            }

            /// Encodes the message as one JSON text frame.
            pub fn encode(&self) -> String {
                // Serializing these plain derived types cannot fail: every map key is a string.
                serde_json::to_string(self).expect("wire messages always serialize")
            }
        }
    };
}

codec!(AgentToControl);
codec!(ControlToAgent);
codec!(ClientToControl);
codec!(ControlToClient);

impl AgentToControl {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            AgentToControl::Hello { hello, sessions } => {
                hello.validate()?;
                check_len("sessions", sessions.len(), MAX_SESSIONS_PER_HELLO)?;
                sessions.iter().try_for_each(|s| s.size.validate())
            }
            AgentToControl::Gap { reason, .. } => check_str("reason", reason, MAX_STRING_LEN),
            AgentToControl::RequestFailed { message, .. } => {
                check_str("message", message, MAX_STRING_LEN)
            }
            AgentToControl::LspDiagnostics {
                workspace,
                language,
                uri,
                ..
            } => {
                check_str("workspace", workspace, MAX_STRING_LEN)?;
                check_str("language", language, MAX_NAME_LEN)?;
                check_str("uri", uri, MAX_STRING_LEN * 3)
            }
            AgentToControl::SessionOpened { .. }
            | AgentToControl::SessionExited { .. }
            | AgentToControl::RequestDone { .. }
            // Bounded by the frame size; agentd shapes it to fit.
            | AgentToControl::ToolResult { .. } => Ok(()),
        }
    }
}

impl ControlToAgent {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ControlToAgent::Welcome { hello, resume, .. } => {
                hello.validate()?;
                check_len("resume", resume.len(), MAX_SESSIONS_PER_HELLO)
            }
            ControlToAgent::OpenSession {
                command,
                args,
                cwd,
                env,
                size,
                ..
            } => {
                if let Some(command) = command {
                    check_str("command", command, MAX_STRING_LEN)?;
                }
                check_strs("args", args.iter(), MAX_ARGS, MAX_STRING_LEN)?;
                if let Some(cwd) = cwd {
                    check_str("cwd", cwd, MAX_STRING_LEN)?;
                }
                check_env(env)?;
                size.validate()
            }
            ControlToAgent::ResizeSession { size, .. } => size.validate(),
            ControlToAgent::ToolCall { call, .. } => call.validate(),
            ControlToAgent::SignalSession { .. }
            | ControlToAgent::CloseSession { .. }
            | ControlToAgent::DropSession { .. }
            | ControlToAgent::Ack { .. }
            | ControlToAgent::ExitRecorded { .. }
            | ControlToAgent::CancelRequest { .. } => Ok(()),
        }
    }
}

impl ControlToAgent {
    /// Checks a request built from client input against every limit agentd
    /// applies, as if it carried the widest ids (`u64::MAX`): the frame
    /// finally sent, whatever ids it is given, is then no longer and is
    /// accepted too — a frame agentd refuses would cost the whole link.
    pub fn preflight(&self) -> Result<(), DecodeError> {
        let mut widest = self.clone();
        let max_request = RequestId(u64::MAX);
        let max_session = SessionId(u64::MAX);
        match &mut widest {
            ControlToAgent::OpenSession {
                request_id,
                session_id,
                ..
            }
            | ControlToAgent::ResizeSession {
                request_id,
                session_id,
                ..
            }
            | ControlToAgent::SignalSession {
                request_id,
                session_id,
                ..
            }
            | ControlToAgent::CloseSession {
                request_id,
                session_id,
            } => {
                *request_id = max_request;
                *session_id = max_session;
            }
            ControlToAgent::ToolCall { request_id, .. }
            | ControlToAgent::CancelRequest { request_id } => *request_id = max_request,
            ControlToAgent::DropSession { session_id }
            | ControlToAgent::Ack { session_id, .. }
            | ControlToAgent::ExitRecorded { session_id } => *session_id = max_session,
            ControlToAgent::Welcome { .. } => {}
        }
        ControlToAgent::decode(&widest.encode()).map(drop)
    }
}

impl ClientToControl {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ClientToControl::Hello { hello } => hello.validate(),
            ClientToControl::Resize { size } => size.validate(),
        }
    }
}

impl ControlToClient {
    fn validate(&self) -> Result<(), DecodeError> {
        match self {
            ControlToClient::Welcome { hello, .. } => hello.validate(),
            ControlToClient::ModeChanged { reason, .. } | ControlToClient::Gap { reason, .. } => {
                check_str("reason", reason, MAX_STRING_LEN)
            }
            ControlToClient::DriverChanged { driver } => match driver {
                Some(driver) => check_str("driver", driver, MAX_STRING_LEN),
                None => Ok(()),
            },
            ControlToClient::Resized { size } => size.validate(),
            ControlToClient::Snapshot { size, screen, .. } => {
                size.validate()?;
                check_str("screen", screen, MAX_CONTROL_FRAME)
            }
            ControlToClient::Error { message, .. } => check_str("message", message, MAX_STRING_LEN),
            ControlToClient::ScreenFrame { size, rows, .. } => {
                size.validate()?;
                check_rows(rows)
            }
            ControlToClient::ScreenDiff { rows, .. } => check_rows(rows),
            ControlToClient::Exited { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
