//! The `local` provider: each sandbox is an `agentd` child process in its
//! own work directory under `<data_dir>/sandboxes/<sandbox id>/` — the
//! embedded default that `control-plane up` uses.
//!
//! Each child runs in its own session and process group, so a Ctrl-C in
//! the control plane's terminal reaches only the control plane, and an
//! abrupt death of the control plane leaves the children running (they
//! reconnect by themselves). The directory holds `local.json` — the
//! sandbox's labels (owner included), its pid and the pid's start time
//! from `/proc/<pid>/stat`, so a recycled pid is never taken for the child
//! — plus the agentd token (`token`, 0600), `agentd.log`, agentd's state
//! and the workspace (`work/`). The next control plane on the same data
//! directory re-adopts live children ([`Provider::adopt`]) instead of
//! spawning duplicates. A child that dies unexpectedly is started again
//! with backoff, until the sandbox is stopped.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use paddock_protocol::SandboxId;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{labels, ObservedState, Owned, Provider, ProviderError, SandboxSpec};

/// How long agentd gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);
/// How often an adopted child (not ours to `wait` on) is checked.
const ADOPTED_POLL: Duration = Duration::from_millis(500);
const RECORD: &str = "local.json";

/// What `local.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    labels: BTreeMap<String, String>,
    /// The control plane's URL as last given.
    url: String,
    /// The running agentd, if any: pid and its start time in clock ticks
    /// since boot (field 22 of `/proc/<pid>/stat`).
    pid: Option<u32>,
    start_time: Option<u64>,
    /// Stopped on purpose: not restarted, not adopted.
    stopped: bool,
}

/// The control plane's URL for agentd, known once the listener is bound;
/// shared with the app so a restarted child dials the current address.
pub type AgentUrl = Arc<RwLock<Option<String>>>;

#[derive(Debug)]
pub struct LocalProvider {
    root: PathBuf,
    owner: String,
    agentd: PathBuf,
    agent_url: AgentUrl,
    /// The control plane's shutdown: supervisors end with it and leave
    /// their children running, for the next start to adopt.
    shutdown: CancellationToken,
    /// A supervisor per sandbox whose child this control plane watches.
    supervisors: Mutex<HashMap<String, Supervisor>>,
}

#[derive(Debug)]
struct Supervisor {
    stop: CancellationToken,
    done: tokio::sync::watch::Receiver<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_err(what: &str, err: impl std::fmt::Display) -> ProviderError {
    ProviderError::Other(format!("{what}: {err}"))
}

impl LocalProvider {
    /// Sandboxes live under `<data_dir>/sandboxes`; `owner` labels them.
    pub fn new(
        data_dir: &Path,
        owner: &str,
        agentd: PathBuf,
        agent_url: AgentUrl,
        shutdown: CancellationToken,
    ) -> Self {
        LocalProvider {
            root: data_dir.join("sandboxes"),
            owner: owner.to_owned(),
            agentd,
            agent_url,
            shutdown,
            supervisors: Mutex::default(),
        }
    }

    /// A sandbox's directory; the resource id is the sandbox id, checked so
    /// it cannot name a path outside the root.
    fn dir(&self, resource_id: &str) -> Result<PathBuf, ProviderError> {
        let ok = !resource_id.is_empty()
            && resource_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(ProviderError::NotFound(format!(
                "local sandbox `{resource_id}`"
            )));
        }
        Ok(self.root.join(resource_id))
    }

    fn read(&self, resource_id: &str) -> Result<Record, ProviderError> {
        let path = self.dir(resource_id)?.join(RECORD);
        let text = std::fs::read_to_string(&path)
            .map_err(|_| ProviderError::NotFound(format!("local sandbox {resource_id}")))?;
        serde_json::from_str(&text).map_err(|e| io_err(&format!("corrupt {}", path.display()), e))
    }

    fn write(&self, resource_id: &str, record: &Record) -> Result<(), ProviderError> {
        let dir = self.dir(resource_id)?;
        let tmp = dir.join(format!("{RECORD}.tmp"));
        let text = serde_json::to_vec_pretty(record).map_err(|e| io_err("record", e))?;
        std::fs::write(&tmp, text).map_err(|e| io_err(&format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, dir.join(RECORD)).map_err(|e| io_err("rename record", e))
    }

    fn update(&self, resource_id: &str, f: impl FnOnce(&mut Record)) -> Result<(), ProviderError> {
        let mut record = self.read(resource_id)?;
        f(&mut record);
        self.write(resource_id, &record)
    }

    /// The pid of the sandbox's live agentd, if its recorded process still
    /// runs (same pid *and* same start time).
    pub fn live_pid(&self, resource_id: &str) -> Option<u32> {
        let record = self.read(resource_id).ok()?;
        let (pid, start) = (record.pid?, record.start_time?);
        (start_time(pid) == Some(start)).then_some(pid)
    }

    fn url(&self, record: &Record) -> String {
        self.agent_url
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| record.url.clone())
    }

    fn spawn(&self, resource_id: &str) -> Result<Child, ProviderError> {
        let dir = self.dir(resource_id)?;
        let record = self.read(resource_id)?;
        let token = std::fs::read_to_string(dir.join("token"))
            .map_err(|e| io_err("read the sandbox token", e))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("agentd.log"))
            .map_err(|e| io_err("open agentd.log", e))?;
        let stderr = log.try_clone().map_err(|e| io_err("agentd.log", e))?;
        let mut command = Command::new(&self.agentd);
        let ca = dir.join("ca.pem");
        if ca.is_file() {
            command.env("PADDOCK_AGENTD_CA_FILE", &ca);
        }
        command
            .env("PADDOCK_AGENTD_CONTROL_PLANE", self.url(&record))
            .env("PADDOCK_AGENTD_TOKEN", token.trim())
            .env("PADDOCK_AGENTD_WORKDIR", dir.join("work"))
            .env("PADDOCK_AGENTD_STATE_DIR", dir.join("state"))
            .current_dir(dir.join("work"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        new_session(&mut command);
        let child = command
            .spawn()
            .map_err(|e| io_err(&format!("could not start {}", self.agentd.display()), e))?;
        let pid = child.id();
        let started = pid.and_then(start_time);
        let url = self.url(&record);
        self.update(resource_id, |r| {
            r.url = url;
            r.pid = pid;
            r.start_time = started;
            r.stopped = false;
        })?;
        info!(resource = resource_id, pid = ?pid, "agentd started");
        Ok(child)
    }

    /// Watches the sandbox's agentd (spawning it unless a live one is
    /// recorded), restarting it when it dies, until stopped.
    fn supervise(self: &Arc<Self>, resource_id: &str) {
        let mut supervisors = lock(&self.supervisors);
        if let Some(existing) = supervisors.get(resource_id) {
            if !*existing.done.borrow() {
                return;
            }
        }
        let stop = CancellationToken::new();
        let (tx_done, rx_done) = tokio::sync::watch::channel(false);
        supervisors.insert(
            resource_id.to_owned(),
            Supervisor {
                stop: stop.clone(),
                done: rx_done,
            },
        );
        drop(supervisors);
        let this = self.clone();
        let id = resource_id.to_owned();
        tokio::spawn(async move {
            this.run_supervisor(&id, stop).await;
            let _ = tx_done.send(true);
        });
    }

    async fn run_supervisor(&self, id: &str, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(250);
        loop {
            if let Some(pid) = self.live_pid(id) {
                // Adopted (or still running): not ours to wait on, so poll.
                tokio::select! {
                    _ = stop.cancelled() => {
                        terminate_pid(pid).await;
                        return;
                    }
                    _ = self.shutdown.cancelled() => return,
                    _ = wait_gone(pid) => {
                        warn!(resource = id, pid, "agentd exited; starting it again");
                    }
                }
            } else {
                match self.spawn(id) {
                    Ok(mut child) => {
                        tokio::select! {
                            _ = stop.cancelled() => {
                                terminate_child(&mut child).await;
                                return;
                            }
                            // The child outlives this control plane.
                            _ = self.shutdown.cancelled() => return,
                            status = child.wait() => {
                                warn!(resource = id, status = ?status, "agentd exited; starting it again");
                            }
                        }
                    }
                    Err(ProviderError::NotFound(_)) => return,
                    Err(err) => warn!(resource = id, error = %err, "could not start agentd"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Stops the supervisor (which terminates the child) and waits for it;
    /// a live child without a supervisor here is terminated directly.
    async fn halt(&self, resource_id: &str) {
        let supervisor = lock(&self.supervisors).remove(resource_id);
        if let Some(mut supervisor) = supervisor {
            supervisor.stop.cancel();
            let _ = supervisor.done.wait_for(|done| *done).await;
        }
        if let Some(pid) = self.live_pid(resource_id) {
            terminate_pid(pid).await;
        }
    }

    async fn observe(&self, resource_id: &str) -> Result<ObservedState, ProviderError> {
        let record = self.read(resource_id)?;
        if self.live_pid(resource_id).is_some() {
            return Ok(ObservedState::Running);
        }
        if record.stopped {
            return Ok(ObservedState::Stopped);
        }
        let supervised = lock(&self.supervisors)
            .get(resource_id)
            .is_some_and(|s| !*s.done.borrow());
        Ok(if supervised {
            ObservedState::Starting
        } else {
            ObservedState::Failed("agentd is not running".into())
        })
    }
}

/// The wrapper the registry holds: the trait needs `&self`, supervisors need `Arc<Self>`.
#[derive(Debug, Clone)]
pub struct Local(pub Arc<LocalProvider>);

#[async_trait::async_trait]
impl Provider for Local {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn create(&self, spec: &SandboxSpec) -> Result<String, ProviderError> {
        let p = &self.0;
        let id = spec.sandbox_id.as_str().to_owned();
        let dir = p.dir(&id)?;
        for sub in ["work", "state"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| io_err(&format!("create {}", dir.display()), e))?;
        }
        write_secret(&dir.join("token"), &spec.agent.token)
            .map_err(|e| io_err("write the sandbox token", e))?;
        match &spec.agent.ca_pem {
            Some(pem) => {
                std::fs::write(dir.join("ca.pem"), pem).map_err(|e| io_err("ca.pem", e))?
            }
            None => {
                let _ = std::fs::remove_file(dir.join("ca.pem"));
            }
        }
        let mut labels = spec.labels.clone();
        labels.insert(labels::SANDBOX.into(), id.clone());
        labels.insert(labels::TENANT.into(), spec.tenant_id.clone());
        labels.insert(labels::OWNER.into(), p.owner.clone());
        let record = Record {
            labels,
            url: spec.agent.control_plane_url.clone(),
            pid: None,
            start_time: None,
            stopped: false,
        };
        // A live child of an earlier attempt is ended first: never two.
        p.halt(&id).await;
        p.write(&id, &record)?;
        p.supervise(&id);
        Ok(id)
    }

    async fn start(&self, resource_id: &str) -> Result<(), ProviderError> {
        self.0.update(resource_id, |r| r.stopped = false)?;
        self.0.supervise(resource_id);
        Ok(())
    }

    async fn stop(&self, resource_id: &str) -> Result<(), ProviderError> {
        self.0.read(resource_id)?;
        self.0.halt(resource_id).await;
        self.0.update(resource_id, |r| {
            r.stopped = true;
            r.pid = None;
            r.start_time = None;
        })
    }

    async fn destroy(&self, resource_id: &str) -> Result<(), ProviderError> {
        let dir = match self.0.dir(resource_id) {
            Ok(dir) => dir,
            Err(_) => return Ok(()),
        };
        self.0.halt(resource_id).await;
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&format!("remove {}", dir.display()), e)),
        }
    }

    async fn status(&self, resource_id: &str) -> Result<ObservedState, ProviderError> {
        self.0.observe(resource_id).await
    }

    async fn list_owned(&self) -> Result<Vec<Owned>, ProviderError> {
        let entries = match std::fs::read_dir(&self.0.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list local sandboxes", e)),
        };
        let mut owned = Vec::new();
        for entry in entries.flatten() {
            let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let Ok(record) = self.0.read(&id) else {
                continue;
            };
            if record.labels.get(labels::OWNER) != Some(&self.0.owner) {
                continue;
            }
            let state = self.0.observe(&id).await?;
            owned.push(Owned {
                resource_id: id.clone(),
                sandbox_id: SandboxId(
                    record
                        .labels
                        .get(labels::SANDBOX)
                        .cloned()
                        .unwrap_or_else(|| id.clone()),
                ),
                tenant_id: record
                    .labels
                    .get(labels::TENANT)
                    .cloned()
                    .unwrap_or_default(),
                state,
            });
        }
        owned.sort_by(|a, b| a.resource_id.cmp(&b.resource_id));
        Ok(owned)
    }

    async fn adopt(&self, resource_id: &str) -> Result<(), ProviderError> {
        let record = self.0.read(resource_id)?;
        if record.stopped {
            return Ok(());
        }
        // A child dialling an address this control plane no longer serves
        // would never come back: it is started again with the current one.
        if self.0.url(&record) != record.url && self.0.live_pid(resource_id).is_some() {
            info!(
                resource = resource_id,
                "the control plane moved; restarting agentd with its new URL"
            );
            self.0.halt(resource_id).await;
        }
        self.0.supervise(resource_id);
        Ok(())
    }
}

/// Puts the child in a new session (and so a new process group whose id is
/// its pid) before it runs agentd.
#[allow(unsafe_code)]
fn new_session(command: &mut Command) {
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the
    // parent; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot),
/// or `None` if the process does not exist or is a zombie.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 is fields[19].
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

async fn wait_gone(pid: u32) {
    let start = start_time(pid);
    while start.is_some() && start_time(pid) == start {
        tokio::time::sleep(ADOPTED_POLL).await;
    }
}

/// SIGTERM to the process group, SIGKILL if it outlives the grace period.
async fn terminate_child(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(GRACE, child.wait()).await.is_err() {
        if let Some(pid) = child.id() {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = child.kill().await;
    }
}

/// The same for a process this control plane did not spawn.
async fn terminate_pid(pid: u32) {
    let Some(start) = start_time(pid) else {
        return;
    };
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let gone = async {
        while start_time(pid) == Some(start) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(GRACE, gone).await.is_err() && start_time(pid) == Some(start) {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Writes a secret readable by its owner only (0600, set at creation).
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_read_for_live_processes_only() {
        let me = std::process::id();
        let a = start_time(me).expect("this process has a start time");
        assert_eq!(start_time(me), Some(a));
        assert_eq!(start_time(u32::MAX - 1), None);
    }

    #[test]
    fn resource_ids_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let p = LocalProvider::new(
            dir.path(),
            "own_1",
            "agentd".into(),
            AgentUrl::default(),
            CancellationToken::new(),
        );
        assert!(p.dir("sbx_0123abcd").is_ok());
        for bad in ["", "..", "../x", "a/b", "sbx_1/.."] {
            assert!(p.dir(bad).is_err(), "{bad}");
        }
    }
}
