//! The `control-plane` binary: parses flags, loads config, sets up tracing
//! and hands a bound listener to the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use control_plane::config::{Config, Overrides};
use control_plane::up::{up, UpOptions};
use control_plane::App;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "control-plane", version, about = "Paddock's control plane")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API and the agent hub.
    Serve(ServeArgs),
    /// Serve, and run local sandboxes as agentd child processes: the all-in-one default.
    Up(UpArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7700].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory for the database and local sandboxes [default: ./.paddock].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Database URL [default: sqlite://<data-dir>/paddock.db].
    #[arg(long)]
    database_url: Option<String>,
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct UpArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// How many local sandboxes to run.
    #[arg(long, default_value_t = 2)]
    sandboxes: usize,
    /// The agentd binary [default: next to control-plane, then PATH].
    #[arg(long)]
    agentd: Option<PathBuf>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let flags = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
        };
        Config::load(self.config.as_deref(), std::env::vars(), flags)
            .context("invalid configuration")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;

    match cli.command {
        Command::Serve(args) => {
            let config = args.config()?;
            let listener = bind(config.listen).await?;
            let app = App::open(config, shutdown).await?;
            if let Some(token) = &app.generated_token {
                println!("PADDOCK_TOKEN={token}");
                eprintln!("# the owner's API token above is shown only once: keep it");
            }
            println!("PADDOCK_URL=http://{}", listener.local_addr()?);
            app.serve(listener).await
        }
        Command::Up(args) => {
            let config = args.serve.config()?;
            let listener = bind(config.listen).await?;
            let options = UpOptions {
                sandboxes: args.sandboxes,
                agentd: args.agentd,
            };
            up(config, listener, options, shutdown, &mut std::io::stdout()).await
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("could not listen on {addr}; is another control plane running? choose another with --listen")
    })
}

/// Ctrl-C or SIGTERM cancels `shutdown`.
fn spawn_signal_handler(shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        shutdown.cancel();
    });
    Ok(())
}
