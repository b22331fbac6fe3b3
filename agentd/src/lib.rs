//! agentd, the daemon inside each Paddock sandbox: it runs PTY sessions and
//! keeps one outbound WebSocket to the control plane, which drives them.
//!
//! [`run`] is the whole daemon; the `agentd` binary only parses flags, sets
//! up logging and wires Ctrl-C to the shutdown token. Modules:
//! `config` (settings), `connection` (dial, handshake, heartbeat,
//! reconnect), `sessions` (the registry and request handling), `session`
//! (one session's output, retention and replay) and `pty` (the process and
//! its blocking I/O threads).

mod config;
mod connection;
mod pty;
mod session;
mod sessions;

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::{connect_url, default_shell, Config, ConfigError, CONNECT_PATH};
pub use connection::Refused;

use connection::LinkConfig;
use pty::SpawnContext;
use sessions::Sessions;

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
/// exit within a second are still reported, then the link closes normally.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let url = config.connect_url()?;
    std::fs::create_dir_all(&config.workdir)
        .with_context(|| format!("could not create the workdir {}", config.workdir.display()))?;
    let workdir = config
        .workdir
        .canonicalize()
        .with_context(|| format!("could not resolve the workdir {}", config.workdir.display()))?;
    let default_shell = config.default_shell.clone().unwrap_or_else(default_shell);
    info!(url = %url, workdir = %workdir.display(), default_shell = %default_shell.display(), "agentd starting");

    let ctx = SpawnContext {
        workdir,
        default_shell,
        parent_env: std::env::vars_os().collect(),
    };
    let stop_sessions = CancellationToken::new();
    let sessions = Sessions::new(ctx, stop_sessions.clone());
    let stop_link = CancellationToken::new();
    let link_config = LinkConfig {
        url,
        token: config.token.clone(),
    };
    let mut link = tokio::spawn(connection::run_link(
        link_config,
        sessions.clone(),
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
    stop_sessions.cancel();
    sessions.wait_tasks(TASKS_GRACE).await;
    result
}
