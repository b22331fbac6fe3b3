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
