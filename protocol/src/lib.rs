//! Paddock's wire: every type two peers must agree on, and nothing that does I/O.
//!
//! Four peers speak it: `agentd` (inside a sandbox), the control plane, the
//! `paddock` CLI and the web console. Control messages are JSON text frames,
//! one tagged enum per direction ([`AgentToControl`], [`ControlToAgent`],
//! [`ClientToControl`], [`ControlToClient`]); terminal bytes travel in binary
//! frames with a fixed 17-byte header ([`DataFrame`]). The HTTP API's request
//! and response bodies live in [`api`]; tool calls and their results in
//! [`tools`]. `docs/PROTOCOL.md` describes every
//! message with an example; the golden tests in each module pin the bytes.

pub mod admin;
pub mod api;
mod error;
mod frame;
#[doc(hidden)]
pub mod fuzz_checks;
mod ids;
mod limits;
mod messages;
pub mod screen;
pub mod tasks;
mod terminal;
pub mod tools;

pub use error::DecodeError;
pub use frame::{DataFrame, FrameKind, FRAME_HEADER_LEN};
pub use ids::{RequestId, SandboxId, SessionId};
pub use limits::*;
pub use messages::*;
pub use terminal::{ExitStatus, Signal, TermSize};
pub use tools::{Secret, ToolCall, ToolOutput};

/// The protocol version this build speaks, sent in every `hello` and `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Every protocol version this build accepts from a peer.
pub const SUPPORTED_VERSIONS: &[u32] = &[1];

/// Whether a peer announcing `version` can be served.
pub fn is_supported(version: u32) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// The reason sent in the close frame that refuses an unsupported version.
///
/// Kept well under the 123 bytes a WebSocket close reason may hold.
pub fn unsupported_version_reason(version: u32) -> String {
    let supported: Vec<String> = SUPPORTED_VERSIONS.iter().map(u32::to_string).collect();
    format!(
        "unsupported protocol version {version}; supported: {}",
        supported.join(", ")
    )
}

/// WebSocket close code for a refused protocol version (application range).
pub const CLOSE_UNSUPPORTED_VERSION: u16 = 4000;
/// WebSocket close code for a frame that failed to decode or broke a limit.
pub const CLOSE_MALFORMED: u16 = 4001;
/// WebSocket close code for a connection replaced by a newer one of the same sandbox.
pub const CLOSE_REPLACED: u16 = 4002;
/// WebSocket close code for a request the server refuses (e.g. attach while driven).
pub const CLOSE_REFUSED: u16 = 4003;
/// WebSocket close code for a connection that sent messages faster than the
/// server's per-connection rate allows.
pub const CLOSE_RATE_LIMITED: u16 = 4004;

#[cfg(test)]
mod tests {
    use super::*;

    /// Close codes are wire: each is pinned here and listed in docs/PROTOCOL.md.
    #[test]
    fn close_codes_golden() {
        let codes = [
            (CLOSE_UNSUPPORTED_VERSION, 4000),
            (CLOSE_MALFORMED, 4001),
            (CLOSE_REPLACED, 4002),
            (CLOSE_REFUSED, 4003),
            (CLOSE_RATE_LIMITED, 4004),
        ];
        let doc = include_str!("../../docs/PROTOCOL.md");
        for (code, wire) in codes {
            assert_eq!(code, wire);
            assert!(
                doc.contains(&format!("| {wire} |")),
                "close code {wire} is missing from the table in docs/PROTOCOL.md"
            );
        }
    }
}
