//! Shared harness for the end-to-end tests: starts the real `control-plane`,
//! `agentd` and `paddock` binaries on `127.0.0.1:0` with temporary data
//! directories, talks to them over HTTP and WebSocket with the wire types of
//! `paddock-protocol`, and tears every process down on `Drop`.
//!
//! Nothing here sleeps to synchronise: processes are waited on through their
//! readiness lines, the API is polled with a deadline, and stream clients wait
//! on the bytes and events they need.

mod agentd;
mod api;
mod browser;
mod cli;
mod control_plane;
pub mod docker;
mod expect;
mod memory;
mod postgres;
mod process;
mod proxy;
mod pty;
mod stream;
mod wait;

use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

pub use agentd::{Agentd, AgentdOptions, Sandbox};
pub use api::{parse_gaps, Api, StoredOutput};
pub use browser::{screenshot_dir, snapshot_rows, Browser};
pub use cli::{paddock, paddock_command, parse_sandboxes, parse_sessions, CliOutput};
pub use control_plane::{agentd_processes_of, kill_agentd_processes_of, ControlPlane, Up};
pub use expect::{
    first_difference, onlcr, seq_output, sha256_hex, without_gaps, x_lines_command, x_lines_output,
};
pub use memory::{dir_bytes, rss_bytes, RssSampler, MIB};
pub use paddock_protocol as proto;
pub use postgres::{database_url, psql, PgCluster, SharedPg, PG_URL_ENV};
pub use process::{base_command, quiet_teardown, Capture, Proc};
pub use proxy::LinkProxy;
pub use pty::PtyProcess;
pub use stream::{
    agent_connect_raw, agent_hello, expect_close, ws_connect, OutputSink, SnapshotEvent,
    StreamClient, StreamError, StreamOptions, Welcome, Ws,
};
pub use wait::wait_until;

/// The overall limit of one test, so a hang fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a test body under [`TEST_TIMEOUT`], panicking with the error chain
/// (or a timeout message) so the test fails with a readable cause.
pub async fn within<F>(body: F)
where
    F: Future<Output = anyhow::Result<()>>,
{
    within_for(TEST_TIMEOUT, body).await
}

/// Like [`within`] with another limit, for tests that move hundreds of MiB
/// or wait out a restart.
pub async fn within_for<F>(limit: Duration, body: F)
where
    F: Future<Output = anyhow::Result<()>>,
{
    match tokio::time::timeout(limit, body).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            // The chain without a backtrace: the causes carry the process logs.
            let causes: Vec<String> = err.chain().map(ToString::to_string).collect();
            panic!("test failed: {}", causes.join("\ncaused by: "))
        }
        Err(_) => panic!("test timed out after {limit:?}"),
    }
}

/// The directory holding the workspace's binaries: `PADDOCK_BIN_DIR` if set,
/// else `target/<profile>/`, the parent of the test executable's `deps/`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PADDOCK_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test executable has a path");
    let dir = exe
        .parent()
        .expect("the test executable lives in a directory");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().unwrap_or(dir).to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of one of the workspace's binaries (`control-plane`, `agentd`,
/// `paddock`); panics with the command to run when it is missing.
pub fn bin_path(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary `{name}` not found at {}: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    path
}

/// A fresh 256-bit random token, hex-encoded, read from the kernel's CSPRNG.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last `max` bytes of `text`, cut at a character boundary, for logs in
/// failure messages.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}
