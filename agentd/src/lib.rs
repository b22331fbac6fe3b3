//! agentd, the daemon inside each Paddock sandbox: it runs PTY sessions and
//! tools (git, language servers, files, exec) and keeps one outbound
//! WebSocket to the control plane, which drives them.
//!
//! [`run`] is the whole daemon; the `agentd` binary only parses flags, sets
//! up logging and wires Ctrl-C to the shutdown token. Modules:
//! `config` (settings), `connection` (dial, handshake, heartbeat,
//! reconnect), `tls` (the link's rustls configuration), `sessions` (the
//! registry and request handling), `session` (one session's output: flow
//! control, replay, exit), `retention` (its
//! unacknowledged bytes), `spill` (spill files under the disk cap),
//! `pty` (the process and its blocking I/O threads), `identity` (the
//! user sessions run as), and the tools:
//! `tools` (dispatch, deadlines, cancellation), `git`, `lsp`, `files`
//! (paths confined to the work directory) and `exec`.

mod config;
mod connection;
mod exec;
mod files;
#[doc(hidden)]
pub mod fuzz_checks;
mod git;
mod identity;
mod lsp;
mod pty;
mod retention;
mod session;
mod sessions;
mod spill;
#[cfg(test)]
mod test_support;
mod tls;
mod tools;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{
    connect_url, default_shell, parse_bytes, Config, ConfigError, CONNECT_PATH, DEFAULT_DISK_CAP,
    DEFAULT_MEMORY_BOUND, DEFAULT_STATE_SUBDIR, DEFAULT_WINDOW,
};
pub use connection::Refused;
pub use identity::{session_exec_main, SESSION_EXEC_ARG};
pub use lsp::{parse_lsp_server, LspConfig, LspServerConfig, DEFAULT_LSP_IDLE};

use connection::LinkConfig;
use pty::SpawnContext;
use sessions::{Limits, Sessions};
use spill::SpillDir;
use tools::{Tools, ToolsConfig};

/// At shutdown, how long hung-up sessions get to exit and report it.
const HANGUP_GRACE: Duration = Duration::from_secs(1);
/// At shutdown, how long the link gets to close normally.
const CLOSE_GRACE: Duration = Duration::from_millis(1500);
/// At shutdown, how long session tasks get to wind down.
const TASKS_GRACE: Duration = Duration::from_millis(500);

/// Runs agentd until `shutdown` fires (then returns `Ok` within about three
/// seconds) or the control plane refuses it for good (then the error wraps
/// a [`Refused`]; a bad setting wraps a [`ConfigError`]).
///
/// At shutdown every session's process group gets SIGHUP; sessions that
/// exit within a second are still reported (and their output sent, within
/// the window), then the link closes normally.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let url = config.connect_url()?;
    let tls = tls::client_config(config.ca_file.as_deref(), config.ca_pem.as_deref())?;
    std::fs::create_dir_all(&config.workdir)
        .with_context(|| format!("could not create the workdir {}", config.workdir.display()))?;
    let workdir = config
        .workdir
        .canonicalize()
        .with_context(|| format!("could not resolve the workdir {}", config.workdir.display()))?;
    let default_shell = config.default_shell.clone().unwrap_or_else(default_shell);
    let state_dir = config.state_dir(&workdir);
    let spill_dir = SpillDir::open(&state_dir, config.disk_cap).with_context(|| {
        format!(
            "could not prepare the state directory {} (--state-dir, PADDOCK_AGENTD_STATE_DIR)",
            state_dir.display()
        )
    })?;
    info!(
        url = %url,
        workdir = %workdir.display(),
        state_dir = %state_dir.display(),
        default_shell = %default_shell.display(),
        memory_bound = config.memory_bound,
        disk_cap = config.disk_cap,
        window = config.window(),
        "agentd starting"
    );

    let session_user = match config.session_uid {
        None => None,
        Some(uid) => Some(
            identity::SessionUser::resolve(uid, config.session_gid)
                .context("could not find agentd's own binary to start sessions as another user")?,
        ),
    };
    if let Some(user) = &session_user {
        // What the tools write (files, git objects) is agentd's, yet the
        // session user must be able to change it: with group write in the
        // umask and a setgid workspace owned by the session user's group
        // (as images/sandbox/Dockerfile makes it), it is.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o002));
        info!(
            uid = user.uid,
            gid = user.gid,
            "sessions run as another user"
        );
    }
    let parent_env: Vec<_> = std::env::vars_os().collect();
    let stop_sessions = CancellationToken::new();
    let tools = Tools::new(
        ToolsConfig {
            workdir: workdir.clone(),
            parent_env: parent_env.clone(),
            lsp: config.lsp.clone(),
            session_user: session_user.clone(),
        },
        stop_sessions.child_token(),
    );
    let ctx = SpawnContext {
        workdir,
        default_shell,
        parent_env,
        session_user,
    };
    let limits = Limits {
        // validate() checked that it fits.
        memory_bound: usize::try_from(config.memory_bound).unwrap_or(usize::MAX),
        window: config.window(),
        spill_dir,
    };
    let sessions = Sessions::new(ctx, limits, stop_sessions.clone());
    let stop_link = CancellationToken::new();
    let link_config = LinkConfig {
        url,
        token: config.token.clone(),
        tls,
    };
    let mut link = tokio::spawn(connection::run_link(
        link_config,
        sessions.clone(),
        tools.clone(),
        stop_link.clone(),
    ));

    let refused = tokio::select! {
        ended = &mut link => Some(ended),
        () = shutdown.cancelled() => None,
    };
    sessions.hangup_all();
    let result = match refused {
        Some(ended) => {
            stop_link.cancel();
            match ended {
                Ok(Ok(())) => Ok(()),
                Ok(Err(refused)) => Err(anyhow::Error::new(refused)),
                Err(err) => Err(anyhow::anyhow!("connection task failed: {err}")),
            }
        }
        None => {
            info!("shutting down");
            // While the link is up, sessions that end on SIGHUP still report their exit.
            let _ = tokio::time::timeout(HANGUP_GRACE, sessions.wait_empty()).await;
            stop_link.cancel();
            if tokio::time::timeout(CLOSE_GRACE, &mut link).await.is_err() {
                warn!("the control plane link did not close in time");
                link.abort();
            }
            Ok(())
        }
    };
    tools.shutdown().await;
    stop_sessions.cancel();
    sessions.wait_tasks(TASKS_GRACE).await;
    result
}
