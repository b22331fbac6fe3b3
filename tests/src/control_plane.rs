//! The control plane under test: `control-plane serve` on port 0 with a
//! temporary data directory, and `control-plane up` with its local sandboxes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::agentd::{Agentd, AgentdOptions, Sandbox};
use crate::api::Api;
use crate::cli::{paddock, paddock_command, CliOutput};
use crate::process::{base_command, Proc};
use crate::{bin_path, random_token, tail};

/// How long a server may take to print its readiness line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Heartbeat interval given to every test control plane, so dead links are
/// noticed within about a second.
pub const HEARTBEAT_MS: u64 = 300;

/// A running `control-plane serve` with its own data directory and owner token.
#[derive(Debug)]
pub struct ControlPlane {
    // Declared before `data_dir`, so the process dies before its directory goes.
    proc: Proc,
    url: String,
    token: String,
    /// Extra environment of every start (and restart) of the server.
    env: Vec<(String, String)>,
    data_dir: TempDir,
}

impl ControlPlane {
    /// Starts a server on `127.0.0.1:0` and waits for `PADDOCK_URL=`.
    pub async fn start() -> Result<ControlPlane> {
        ControlPlane::start_with(&[]).await
    }

    /// Like [`ControlPlane::start`], with more environment variables (e.g.
    /// `PADDOCK_SQLITE_SYNCHRONOUS`), set after the defaults so they win.
    pub async fn start_with(env: &[(&str, &str)]) -> Result<ControlPlane> {
        ControlPlane::start_listening("127.0.0.1:0", env).await
    }

    /// Like [`ControlPlane::start_with`] on another address, e.g. the
    /// gateway of a Docker network the test created (`172.18.0.1:0`), with
    /// `PADDOCK_ALLOW_PLAIN_HTTP=true` among `env` since it is not loopback.
    pub async fn start_listening(listen: &str, env: &[(&str, &str)]) -> Result<ControlPlane> {
        let data_dir = tempfile::Builder::new()
            .prefix("paddock-cp-")
            .tempdir()
            .context("could not create a data dir")?;
        let token = random_token();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let (proc, url) = spawn_serve(data_dir.path(), &token, listen, &env).await?;
        Ok(ControlPlane {
            proc,
            url,
            token,
            env,
            data_dir,
        })
    }

    /// SIGKILLs the server (if it still runs) and starts it again on the
    /// same address and data directory, so agents and CLIs reconnect to the
    /// URL they know.
    pub async fn restart(&mut self) -> Result<()> {
        self.proc.kill();
        let listen = self
            .url
            .strip_prefix("http://")
            .context("the control plane's URL is http://")?
            .to_owned();
        let (proc, url) = spawn_serve(self.data_dir.path(), &self.token, &listen, &self.env)
            .await
            .with_context(|| format!("could not restart the control plane on {listen}"))?;
        ensure!(
            url == self.url,
            "the restarted control plane is at {url}, not at {}",
            self.url
        );
        self.proc = proc;
        Ok(())
    }

    /// The server's process id (for `/proc/PID/status`).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILLs the server.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERMs the server and waits (at most `limit`) for it to exit.
    pub async fn terminate(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        self.proc.signal(nix::sys::signal::Signal::SIGTERM)?;
        self.proc.wait_exit(limit).await
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url, &self.token)
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }

    /// Registers a sandbox, starts an `agentd` for it and waits until the
    /// control plane reports it connected.
    pub async fn add_sandbox(&self, name: &str) -> Result<Sandbox> {
        self.add_sandbox_with(name, AgentdOptions::default()).await
    }

    /// Like [`ControlPlane::add_sandbox`], with agentd started as `opts` say.
    pub async fn add_sandbox_with(&self, name: &str, opts: AgentdOptions) -> Result<Sandbox> {
        let registered = self.api().register_sandbox(name).await?;
        let workdir = tempfile::Builder::new()
            .prefix("paddock-work-")
            .tempdir()
            .context("could not create a work dir")?;
        let url = opts.url.as_deref().unwrap_or(&self.url);
        let agentd = Agentd::start_with(url, &registered.token, workdir.path(), &opts.env)?;
        let sandbox = Sandbox {
            info: registered.sandbox,
            token: registered.token,
            agentd,
            workdir,
        };
        self.wait_connected(sandbox.id())
            .await
            .with_context(|| format!("{}\n{}", sandbox.agentd.logs(), tail(&self.logs(), 8000)))?;
        Ok(sandbox)
    }

    /// Waits (up to 15 s) until the sandbox's status is `connected`.
    pub async fn wait_connected(&self, sandbox: &str) -> Result<()> {
        wait_status(&self.api(), sandbox, true, Duration::from_secs(15)).await
    }

    /// Waits (up to 10 s) until the sandbox's status is `disconnected`.
    pub async fn wait_disconnected(&self, sandbox: &str) -> Result<()> {
        wait_status(&self.api(), sandbox, false, Duration::from_secs(10)).await
    }

    /// Runs the `paddock` CLI against this server.
    pub async fn paddock(&self, args: &[&str]) -> Result<CliOutput> {
        paddock(&self.url, &self.token, args).await
    }

    /// Starts the `paddock` CLI against this server without waiting for it,
    /// its output captured as it comes (for long runs the test acts on
    /// half-way, such as an `exec` across a restart).
    pub fn paddock_proc(&self, args: &[&str]) -> Result<Proc> {
        Proc::spawn("paddock", paddock_command(&self.url, &self.token, args))
    }
}

async fn wait_status(api: &Api, sandbox: &str, connected: bool, limit: Duration) -> Result<()> {
    use paddock_protocol::api::SandboxStatus;
    let want = if connected {
        SandboxStatus::Connected
    } else {
        SandboxStatus::Disconnected
    };
    crate::wait_until(
        &format!("sandbox {sandbox} to be {want:?}"),
        limit,
        || async move {
            let info = api.sandbox(sandbox).await?;
            Ok((info.status == want).then_some(()))
        },
    )
    .await
}

async fn spawn_serve(
    data_dir: &Path,
    token: &str,
    listen: &str,
    env: &[(String, String)],
) -> Result<(Proc, String)> {
    let mut cmd = base_command(&bin_path("control-plane"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--data-dir")
        .arg(data_dir)
        .env("PADDOCK_BOOTSTRAP_TOKEN", token)
        .env("PADDOCK_HEARTBEAT_MS", HEARTBEAT_MS.to_string())
        // Tests poll the API hard; the per-token rate limit has its own test.
        .env("PADDOCK_API_RATE_PER_SEC", "100000")
        .env("PADDOCK_API_BURST", "100000")
        .env("RUST_LOG", "info");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let mut proc = Proc::spawn("control-plane", cmd)?;
    let url = wait_ready(&mut proc, "PADDOCK_URL", false).await?;
    Ok((proc, url))
}

/// Waits for a `NAME=value` line on the process's stdout (also as `export
/// NAME=value` when `allow_export`); the error carries its logs.
async fn wait_ready(proc: &mut Proc, name: &str, allow_export: bool) -> Result<String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let found = if allow_export {
        proc.stdout.wait_assignment(name, deadline).await
    } else {
        proc.stdout
            .wait_line_value(&format!("{name}="), deadline)
            .await
    };
    match found {
        Ok(value) => Ok(value),
        Err(err) => {
            let status = proc.try_status().ok().flatten();
            Err(err.context(format!(
                "{} did not print {name}= (exit status: {status:?})\n{}",
                proc.name(),
                proc.logs()
            )))
        }
    }
}

impl Drop for ControlPlane {
    /// The local provider's agentd children outlive the server by design:
    /// they go with it here.
    fn drop(&mut self) {
        self.proc.kill();
        kill_agentd_processes_of(self.data_dir.path());
    }
}

/// A running `control-plane up`: the server plus its local sandboxes.
#[derive(Debug)]
pub struct Up {
    pub proc: Proc,
    pub url: String,
    pub token: String,
    data_dir: PathBuf,
}

impl Up {
    /// Starts `control-plane up --listen 127.0.0.1:0 --data-dir DIR
    /// --sandboxes N` and waits for its `PADDOCK_URL=` and `PADDOCK_TOKEN=`
    /// lines.
    pub async fn start(data_dir: &Path, sandboxes: u32) -> Result<Up> {
        Up::start_on(data_dir, sandboxes, "127.0.0.1:0").await
    }

    /// Like [`Up::start`] on the address `listen`.
    pub async fn start_on(data_dir: &Path, sandboxes: u32, listen: &str) -> Result<Up> {
        let mut cmd = base_command(&bin_path("control-plane"));
        cmd.arg("up")
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--sandboxes")
            .arg(sandboxes.to_string())
            .env("PADDOCK_HEARTBEAT_MS", HEARTBEAT_MS.to_string())
            .env("PADDOCK_API_RATE_PER_SEC", "100000")
            .env("PADDOCK_API_BURST", "100000")
            .env("RUST_LOG", "info");
        let mut proc = Proc::spawn("control-plane-up", cmd)?;
        // `up` prints its lines ready to paste into a shell: `export NAME=…`.
        let url = wait_ready(&mut proc, "PADDOCK_URL", true).await?;
        let token = wait_ready(&mut proc, "PADDOCK_TOKEN", true).await?;
        Ok(Up {
            proc,
            url,
            token,
            data_dir: data_dir.to_owned(),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url, &self.token)
    }

    pub async fn paddock(&self, args: &[&str]) -> Result<CliOutput> {
        paddock(&self.url, &self.token, args).await
    }

    /// The `agentd` processes this `up` started, found by its data directory.
    pub fn agentd_processes(&self) -> Vec<(u32, String)> {
        agentd_processes_of(&self.data_dir)
    }
}

impl Drop for Up {
    /// A test that fails half-way leaves `up` running: ask it to stop its
    /// children gracefully, then kill whatever agentd of this data dir is
    /// left (they run in their own process groups, out of reach of `Proc`).
    fn drop(&mut self) {
        if matches!(self.proc.try_status(), Ok(None)) {
            let _ = self.proc.signal(nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while matches!(self.proc.try_status(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill_agentd_processes_of(&self.data_dir);
    }
}

/// Processes running the `agentd` binary that mention `data_dir` in their
/// command line or environment, as `(pid, command line)`. The data dir is a
/// fresh temporary directory, so this finds exactly one test's processes.
/// SIGKILLs every agentd of `data_dir` (the local provider's children
/// outlive their control plane by design; tests end them on the way out).
pub fn kill_agentd_processes_of(data_dir: &Path) {
    for (pid, _) in agentd_processes_of(data_dir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

pub fn agentd_processes_of(data_dir: &Path) -> Vec<(u32, String)> {
    let needle = data_dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes vanish while we look; whatever cannot be read is gone.
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
        if !String::from_utf8_lossy(argv0).ends_with("agentd") {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let environ = std::fs::read(entry.path().join("environ"))
            .map(|e| String::from_utf8_lossy(&e).into_owned())
            .unwrap_or_default();
        if cmdline.contains(&needle) || environ.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}
