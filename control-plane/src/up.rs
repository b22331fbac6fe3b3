//! `control-plane up`: the all-in-one embedded default. Serves the control
//! plane and runs N local sandboxes as supervised `agentd` child processes
//! (the `local` provider), each in its own work directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use paddock_protocol::SandboxId;
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::{new_token, TokenKind};
use crate::store::DEFAULT_TENANT;
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

/// How long agentd children get to exit after SIGTERM before SIGKILL.
const CHILD_GRACE: Duration = Duration::from_secs(5);
/// How long `up` waits for every sandbox to connect.
const CONNECT_DEADLINE: Duration = Duration::from_secs(30);

/// Runs the control plane and its local sandboxes until `shutdown` is
/// cancelled, then stops every child before returning. Writes the
/// `export PADDOCK_URL=…` / `export PADDOCK_TOKEN=…` lines and a hint to `out`.
pub async fn up(
    mut config: Config,
    listener: TcpListener,
    options: UpOptions,
    shutdown: CancellationToken,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let agentd = find_agentd(options.agentd.as_deref())?;
    // The children run in their own work directories.
    let ca_file = match &options.tls_ca {
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("could not resolve --tls-ca {}", path.display()))?,
        ),
        None => None,
    };
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
    let server = tokio::spawn(async move { app.serve(listener).await });

    let stop_children = CancellationToken::new();
    let mut supervisors = Vec::new();
    let mut ids = Vec::new();
    for i in 1..=options.sandboxes {
        let name = format!("local-{i}");
        let dir = state.config.data_dir.join("sandboxes").join(&name);
        let (id, token) = local_sandbox(&state, &name, &dir).await?;
        ids.push(id);
        let child = LocalAgent {
            name,
            agentd: agentd.clone(),
            url: url.clone(),
            token,
            dir,
            ca_file: ca_file.clone(),
        };
        supervisors.push(tokio::spawn(child.supervise(stop_children.clone())));
    }

    let connected = wait_connected(&state, &ids, &shutdown).await;
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
    stop_children.cancel();
    for supervisor in supervisors {
        let _ = supervisor.await;
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

/// The sandbox `name` and a valid agentd token for it, registering it or
/// renewing its token as needed. The token is kept in `<dir>/token` (0600).
async fn local_sandbox(
    state: &crate::AppState,
    name: &str,
    dir: &Path,
) -> anyhow::Result<(SandboxId, String)> {
    std::fs::create_dir_all(dir.join("work"))
        .with_context(|| format!("could not create {}", dir.display()))?;
    let token_path = dir.join("token");
    let existing = state.store.find_sandbox(DEFAULT_TENANT, name).await?;
    let saved = std::fs::read_to_string(&token_path).ok();
    if let (Some(sandbox), Some(token)) = (&existing, &saved) {
        let token = token.trim();
        let owner = state.auth.sandbox_token(token).await?;
        if owner.is_some_and(|o| o.id == sandbox.id) {
            return Ok((sandbox.id.clone(), token.to_owned()));
        }
    }
    let (id, token) = match existing {
        Some(sandbox) => {
            let token = state
                .store
                .rotate_sandbox_token(DEFAULT_TENANT, &sandbox.id)
                .await?;
            (sandbox.id, token)
        }
        None => {
            let (row, token) = state
                .store
                .create_sandbox(DEFAULT_TENANT, name, &BTreeMap::new(), Some("local"))
                .await?;
            (row.id, token)
        }
    };
    write_secret(&token_path, &token)?;
    Ok((id, token))
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

/// Writes a secret readable by its owner only (0600, set at creation).
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("could not write {}", path.display()))?;
    writeln!(file, "{secret}")?;
    Ok(())
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

/// One local sandbox's agentd, restarted if it dies.
struct LocalAgent {
    name: String,
    agentd: PathBuf,
    url: String,
    token: String,
    dir: PathBuf,
    ca_file: Option<PathBuf>,
}

impl LocalAgent {
    fn spawn(&self) -> anyhow::Result<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agentd.log"))?;
        let mut command = Command::new(&self.agentd);
        if let Some(ca_file) = &self.ca_file {
            command.env("PADDOCK_AGENTD_CA_FILE", ca_file);
        }
        let child = command
            .env("PADDOCK_AGENTD_CONTROL_PLANE", &self.url)
            .env("PADDOCK_AGENTD_TOKEN", &self.token)
            .env("PADDOCK_AGENTD_WORKDIR", self.dir.join("work"))
            .env("PADDOCK_AGENTD_STATE_DIR", self.dir.join("state"))
            .current_dir(self.dir.join("work"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: a Ctrl-C in `up`'s terminal reaches `up`
            // only, which then stops the children in order.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("could not start {}", self.agentd.display()))?;
        Ok(child)
    }

    async fn supervise(self, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut child = match self.spawn() {
                Ok(child) => child,
                Err(err) => {
                    warn!(sandbox.name = %self.name, error = %err, "could not start agentd");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => continue,
                    }
                }
            };
            info!(sandbox.name = %self.name, pid = ?child.id(), "agentd started");
            tokio::select! {
                status = child.wait() => {
                    warn!(sandbox.name = %self.name, status = ?status, "agentd exited; restarting");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
                _ = stop.cancelled() => {
                    terminate(&mut child).await;
                    return;
                }
            }
        }
    }
}

/// SIGTERM to the child's process group, SIGKILL if it outlives the grace period.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(CHILD_GRACE, child.wait())
        .await
        .is_err()
    {
        if let Some(pid) = child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}
