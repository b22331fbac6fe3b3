//! The `agentd` binary: parses flags, sets up logging, turns Ctrl-C and
//! SIGTERM into shutdown, and runs [`agentd::run`].
//!
//! Exit codes: 0 after a shutdown, 2 when retrying cannot help (the control
//! plane refused the token or protocol version, its TLS certificate was
//! rejected, or a setting is invalid),
//! 1 for anything else.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Paddock's in-sandbox daemon: runs PTY sessions and tools for the control plane.
#[derive(Parser)]
#[command(name = "agentd", version, about)]
struct Cli {
    /// The control plane's base URL (https://host or http://host:port) or a
    /// full wss:// or ws:// URL. Certificates are always verified; plain
    /// http/ws to a host other than loopback works but logs a warning.
    #[arg(long, env = "PADDOCK_AGENTD_CONTROL_PLANE")]
    control_plane: String,
    /// The sandbox token.
    #[arg(long, env = "PADDOCK_AGENTD_TOKEN", hide_env_values = true)]
    token: String,
    /// Where sessions start; created if missing.
    #[arg(long, env = "PADDOCK_AGENTD_WORKDIR")]
    workdir: PathBuf,
    /// The program a session runs when it names none
    /// [default: $SHELL, else the login shell, else /bin/sh].
    #[arg(long, env = "PADDOCK_AGENTD_DEFAULT_SHELL")]
    default_shell: Option<PathBuf>,
    /// Where unacknowledged output spills to disk; created if missing
    /// [default: <workdir>/.agentd].
    #[arg(long, env = "PADDOCK_AGENTD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Unacknowledged output kept in memory per session before the oldest
    /// spills to disk (bytes, or with a K, M, G suffix: powers of 1024).
    #[arg(long, env = "PADDOCK_AGENTD_MEMORY_BOUND", default_value = "4MiB", value_parser = agentd::parse_bytes)]
    memory_bound: u64,
    /// Spilled output across all sessions; beyond it, output produced
    /// while the control plane is unreachable is dropped as a gap.
    #[arg(long, env = "PADDOCK_AGENTD_DISK_CAP", default_value = "256MiB", value_parser = agentd::parse_bytes)]
    disk_cap: u64,
    /// Output a session may have unacknowledged while connected; at the
    /// window it stops reading its terminal until acks arrive
    /// [default: 8MiB, or the memory bound plus the disk cap if smaller].
    #[arg(long, env = "PADDOCK_AGENTD_WINDOW", value_parser = agentd::parse_bytes)]
    window: Option<u64>,
    /// A language server, as LANGUAGE=COMMAND [ARGS...]; repeat for more
    /// (in the variable, separate them with `;`). Adds to or replaces the
    /// defaults: python=pylsp, rust=rust-analyzer, go=gopls,
    /// typescript/javascript=typescript-language-server --stdio, c/cpp=clangd.
    #[arg(long = "lsp-server", env = "PADDOCK_AGENTD_LSP_SERVERS", value_delimiter = ';', value_parser = agentd::parse_lsp_server)]
    lsp_servers: Vec<(String, agentd::LspServerConfig)>,
    /// Seconds a language server may go unused before it is shut down.
    #[arg(long, env = "PADDOCK_AGENTD_LSP_IDLE_SECS", default_value_t = agentd::DEFAULT_LSP_IDLE.as_secs())]
    lsp_idle_secs: u64,
    /// A PEM file of CA certificates to trust besides the platform roots,
    /// for an https:// control plane with a private or self-signed certificate.
    #[arg(long, env = "PADDOCK_AGENTD_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
    /// Like --ca-file, the PEM text itself (e.g. handed to a container in
    /// its environment).
    #[arg(
        long,
        env = "PADDOCK_AGENTD_CA_PEM",
        value_name = "PEM",
        hide_env_values = true
    )]
    ca_pem: Option<String>,
    /// Run sessions and exec as this uid (agentd must run as root), so they
    /// cannot read agentd's token or signal it [default: agentd's own user].
    #[arg(long, env = "PADDOCK_AGENTD_SESSION_UID")]
    session_uid: Option<u32>,
    /// The sessions' gid [default: the session uid's primary group].
    #[arg(long, env = "PADDOCK_AGENTD_SESSION_GID", requires = "session_uid")]
    session_gid: Option<u32>,
}

fn main() -> ExitCode {
    // agentd as the wrapper that starts a PTY session as another user.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|arg| arg == agentd::SESSION_EXEC_ARG)
    {
        eprintln!("{}", agentd::session_exec_main(&args[2..]));
        return ExitCode::from(127);
    }
    run()
}

#[tokio::main]
async fn run() -> ExitCode {
    let cli = Cli::parse();
    // Every TLS configuration names `ring`; this covers anything that asks for the default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();

    let shutdown = CancellationToken::new();
    if let Err(err) = spawn_signal_handler(shutdown.clone()) {
        eprintln!("agentd: could not install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    let config = agentd::Config {
        control_plane: cli.control_plane,
        token: cli.token,
        workdir: cli.workdir,
        default_shell: cli.default_shell,
        state_dir: cli.state_dir,
        memory_bound: cli.memory_bound,
        disk_cap: cli.disk_cap,
        window: cli.window,
        lsp: lsp_config(cli.lsp_servers, cli.lsp_idle_secs),
        ca_file: cli.ca_file,
        ca_pem: cli.ca_pem,
        session_uid: cli.session_uid,
        session_gid: cli.session_gid,
    };
    match agentd::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agentd: {err:#}");
            let final_ = err.downcast_ref::<agentd::Refused>().is_some()
                || err.downcast_ref::<agentd::ConfigError>().is_some();
            ExitCode::from(if final_ { 2 } else { 1 })
        }
    }
}

fn lsp_config(
    servers: Vec<(String, agentd::LspServerConfig)>,
    idle_secs: u64,
) -> agentd::LspConfig {
    let mut config = agentd::LspConfig::default();
    config.servers.extend(servers);
    config.idle_timeout = std::time::Duration::from_secs(idle_secs.max(1));
    config
}

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM.
fn spawn_signal_handler(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        shutdown.cancel();
    });
    Ok(())
}
