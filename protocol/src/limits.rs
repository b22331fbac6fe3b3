//! Hard limits every peer enforces when decoding, so no frame can make a peer
//! allocate without bound.

/// Largest JSON text frame accepted, in bytes.
pub const MAX_CONTROL_FRAME: usize = 1024 * 1024;
/// Largest terminal payload in one binary frame, in bytes.
pub const MAX_DATA_PAYLOAD: usize = 64 * 1024;
/// Largest string field (command, argument, path, environment value), in bytes.
pub const MAX_STRING_LEN: usize = 4096;
/// Largest name (sandbox name, peer name, capability, env key), in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most arguments a command may carry.
pub const MAX_ARGS: usize = 1024;
/// Most environment variables a session may be opened with.
pub const MAX_ENV: usize = 1024;
/// Most capabilities a peer may announce.
pub const MAX_CAPABILITIES: usize = 64;
/// Most sessions an agent may report in its hello.
pub const MAX_SESSIONS_PER_HELLO: usize = 4096;
/// Largest terminal dimension, in cells.
pub const MAX_TERM_DIM: u16 = 1000;

/// Largest file content one `file_write` carries, in bytes once decoded.
/// Text frames are limited to [`MAX_CONTROL_FRAME`]; base64 of this fits.
pub const MAX_FILE_WRITE: usize = 512 * 1024;
/// Most bytes one `file_read` returns.
pub const MAX_FILE_READ: usize = 512 * 1024;
/// Largest text field of a tool call: an LSP document, a commit message, exec's stdin.
pub const MAX_TEXT_LEN: usize = 512 * 1024;
/// Largest text a tool returns (a diff); longer ones are cut and say so.
pub const MAX_TOOL_TEXT: usize = 512 * 1024;
/// Most commits one `git_log` returns.
pub const MAX_LOG_ENTRIES: u32 = 1000;
/// Deepest `file_list` recursion.
pub const MAX_LIST_DEPTH: u32 = 32;
/// Most entries one `file_list` returns.
pub const MAX_LIST_ENTRIES: usize = 5000;
/// Most output bytes kept per stream of an `exec`.
pub const MAX_EXEC_OUTPUT: usize = 256 * 1024;
/// Output bytes kept per stream of an `exec` unless it asks otherwise.
pub const DEFAULT_EXEC_OUTPUT: u32 = 64 * 1024;
/// How long a git call may run unless the request says otherwise.
pub const DEFAULT_GIT_TIMEOUT_MS: u64 = 60_000;
/// How long an LSP call may run unless the request says otherwise.
pub const DEFAULT_LSP_TIMEOUT_MS: u64 = 30_000;
/// How long a file call may run unless the request says otherwise.
pub const DEFAULT_FILE_TIMEOUT_MS: u64 = 30_000;
/// How long an exec'd process may run unless it asks otherwise.
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 60_000;
/// An exec call's own deadline is its process timeout plus this, so the
/// process timeout (which still returns the output) fires first.
pub const EXEC_TIMEOUT_SLACK_MS: u64 = 5_000;
