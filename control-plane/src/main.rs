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
    /// PEM certificate chain: serve HTTPS and wss:// (with --tls-key).
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address: only behind a proxy that terminates TLS.
    #[arg(long)]
    allow_plain_http: bool,
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
    /// A CA certificate (PEM) the local agentd children trust besides the
    /// platform roots (their --ca-file): the CA that signed --tls-cert, or the
    /// certificate itself when it is self-signed without CA:TRUE.
    #[arg(long, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
}

impl ServeArgs {
    fn config(&self) -> anyhow::Result<Config> {
        let flags = Overrides {
            listen: self.listen,
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            allow_plain_http: self.allow_plain_http.then_some(true),
        };
        let config = Config::load(self.config.as_deref(), std::env::vars(), flags)
            .context("invalid configuration")?;
        // Read the certificate and key now, so a bad one stops the server
        // before it reports itself ready (serving reads them again).
        if let Some((cert, key)) = config.tls() {
            control_plane::tls::server_config(cert, key).context("invalid configuration")?;
        }
        Ok(config)
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
    control_plane::tls::install_default_provider();
    let cli = Cli::parse();
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone())?;

    match cli.command {
        Command::Serve(args) => {
            let config = args.config()?;
            let listener = bind(config.listen).await?;
            let url = config.base_url(listener.local_addr()?);
            let app = App::open(config, shutdown).await?;
            if let Some(token) = &app.generated_token {
                println!("PADDOCK_TOKEN={token}");
                eprintln!("# the owner's API token above is shown only once: keep it");
            }
            println!("PADDOCK_URL={url}");
            app.serve(listener).await
        }
        Command::Up(args) => {
            let config = args.serve.config()?;
            let listener = bind(config.listen).await?;
            let options = UpOptions {
                sandboxes: args.sandboxes,
                agentd: args.agentd,
                tls_ca: args.tls_ca,
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
