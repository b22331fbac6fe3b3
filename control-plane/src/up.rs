//! `control-plane up`: the all-in-one embedded default. Serves the control
//! plane and runs N local sandboxes through the `local` provider
//! (supervised `agentd` child processes, each in its own work directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use paddock_protocol::api::SandboxStatus;
use paddock_protocol::SandboxId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{new_token, TokenKind};
use crate::lifecycle;
use crate::store::{SandboxRow, DEFAULT_TENANT};
use crate::{App, Config};

#[derive(Debug, Clone)]
pub struct UpOptions {
    /// How many local sandboxes to run.
    pub sandboxes: usize,
    /// The agentd binary; found next to this executable, then on PATH, when absent.
    pub agentd: Option<PathBuf>,
    /// A CA the agentd children trust besides the platform roots (with TLS
    /// on and a self-signed or private certificate).
    pub tls_ca: Option<PathBuf>,
}

/// How long `up` waits for every sandbox to connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the control plane and its local sandboxes until `shutdown` is
/// cancelled, then stops every one of them before returning. Writes the
/// `export PADDOCK_URL=…` / `export PADDOCK_TOKEN=…` lines and a hint to
/// `out`. The sandboxes `local-1` … `local-N` are run by the local
/// provider; after an abrupt end of an earlier `up` on the same data
/// directory their live agentd processes are adopted, not duplicated.
pub async fn up(
    mut config: Config,
    listener: TcpListener,
    options: UpOptions,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    config.providers.agentd_bin = Some(find_agentd(
        options
            .agentd
            .as_deref()
            .or(config.providers.agentd_bin.as_deref()),
    )?);
    // The children run in their own work directories.
    let ca_file = match &options.tls_ca {
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("could not resolve --tls-ca {}", path.display()))?,
        ),
        None => None,
    };
    if ca_file.is_some() {
        config.providers.agent_ca_file = ca_file.clone();
    }
    if !config.providers.enabled.iter().any(|p| p == "local") {
        config.providers.enabled.push("local".into());
    }
    std::fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "could not create data directory {}",
            config.data_dir.display()
        )
    })?;
    let owner_token = read_or_create_secret(&config.data_dir.join("owner.token"), TokenKind::Api)?;
    config.bootstrap_token = Some(owner_token.clone());
    config.owner_token = Some(owner_token.clone());

    // The server stops only after the children, so none of them spins on reconnects.
    let server_shutdown = CancellationToken::new();
    let app = App::open(config, server_shutdown.clone()).await?;
    let state = app.state.clone();

    let addr = listener.local_addr()?;
    let url = state.config.base_url(addr);
    // Known before the server task runs: the sandboxes below need it.
    *state.agent_url.write().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
    let server = tokio::spawn(async move { app.serve(listener).await });

    let mut rows = Vec::new();
    let mut started = Ok(());
    for i in 1..=options.sandboxes {
        match local_sandbox(&state, &format!("local-{i}")).await {
            Ok(row) => rows.push(row),
            Err(err) => {
                started = Err(err);
                break;
            }
        }
    }
    let ids: Vec<SandboxId> = rows.iter().map(|r| r.id.clone()).collect();
    let connected = match started {
        Ok(()) => wait_connected(&state, &ids, &shutdown).await,
        Err(err) => Err(err),
    };
    if let Err(err) = &connected {
        warn!(error = %err, "not every sandbox connected");
    } else {
        writeln!(out, "export PADDOCK_URL={url}")?;
        writeln!(out, "export PADDOCK_TOKEN={owner_token}")?;
        if let Some(ca_file) = &ca_file {
            writeln!(out, "export PADDOCK_CA_FILE={}", ca_file.display())?;
        }
        writeln!(
            out,
            "# Paddock is up with {} local sandbox(es). In another terminal, paste the lines above, then:",
            ids.len()
        )?;
        writeln!(
            out,
            "#   paddock sandboxes && paddock exec local-1 -- uname -a && paddock attach local-1"
        )?;
        out.flush()?;
        shutdown.cancelled().await;
    }

    info!("stopping local sandboxes");
    for row in &rows {
        if let Err(err) = lifecycle::stop(&state, row).await {
            warn!(sandbox.id = %row.id, error = %err.body().error.message, "could not stop a local sandbox");
        }
    }
    server_shutdown.cancel();
    server.await.context("the server task panicked")??;
    connected
}

async fn wait_connected(
    state: &crate::AppState,
    ids: &[SandboxId],
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CONNECT_DEADLINE;
    loop {
        let connected = state.hub.connected();
        if ids.iter().all(|id| connected.contains(id)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "local sandboxes did not connect within {}s; see agentd.log under {}",
                CONNECT_DEADLINE.as_secs(),
                state.config.data_dir.join("sandboxes").display()
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => bail!("interrupted before every sandbox connected"),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// The local sandbox `name`, running: created by the local provider the
/// first time, started again (or adopted, if its agentd still runs) later.
async fn local_sandbox(state: &crate::AppState, name: &str) -> anyhow::Result<SandboxRow> {
    let api = |e: crate::error::ApiError| anyhow::anyhow!(e.body().error.message);
    let existing = state.store.find_sandbox(DEFAULT_TENANT, name).await?;
    if let Some(row) = existing {
        match row.provider.as_deref() {
            Some("local") if row.resource_id.is_some() && row.state != SandboxStatus::Failed => {
                return lifecycle::start(state, &row).await.map_err(api);
            }
            // Made by an older `up`, or lost: make it anew under the same name.
            Some("local") => {
                lifecycle::destroy(state, &row).await.map_err(api)?;
            }
            _ => bail!(
                "a sandbox named {name} exists and is not run by the local provider; \
                 destroy it (`paddock sandboxes destroy {name}`) or use another data directory"
            ),
        }
    }
    lifecycle::provision(
        state,
        DEFAULT_TENANT,
        name,
        &BTreeMap::new(),
        Some("local"),
        None,
    )
    .await
    .map_err(api)
}

fn read_or_create_secret(path: &Path, kind: TokenKind) -> anyhow::Result<String> {
    if let Ok(text) = std::fs::read_to_string(path) {
        let token = text.trim();
        if !token.is_empty() {
            return Ok(token.to_owned());
        }
    }
    let token = new_token(kind);
    write_secret(path, &token)?;
    Ok(token)
}

fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    crate::providers::local::write_secret(path, secret)
        .with_context(|| format!("could not write {}", path.display()))
}

fn find_agentd(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("agentd")));
    if let Some(path) = beside.filter(|p| p.is_file()) {
        return Ok(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("agentd"))
            .find(|p| p.is_file())
    });
    on_path.context(
        "could not find the agentd binary next to control-plane or on PATH; build it with `cargo build --release --workspace --bins` or pass --agentd PATH",
    )
}
