//! `agentd` under test, configured through its environment variables (so the
//! test that a session's environment holds none of them means something).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use nix::sys::signal::Signal;
use paddock_protocol::api::SandboxInfo;
use tempfile::TempDir;

use crate::bin_path;
use crate::process::{base_command, Proc};

/// A running `agentd`, killed on `Drop`.
#[derive(Debug)]
pub struct Agentd {
    proc: Proc,
}

impl Agentd {
    /// Starts `agentd` dialling `cp_url` with `token`, running sessions in `workdir`.
    pub fn start(cp_url: &str, token: &str, workdir: &Path) -> Result<Agentd> {
        Agentd::start_with(cp_url, token, workdir, &[])
    }

    /// Like [`Agentd::start`], with more environment variables (agentd's
    /// `PADDOCK_AGENTD_*` settings), set after the defaults so they win.
    pub fn start_with(
        cp_url: &str,
        token: &str,
        workdir: &Path,
        env: &[(String, String)],
    ) -> Result<Agentd> {
        let mut cmd = base_command(&bin_path("agentd"));
        cmd.env("PADDOCK_AGENTD_CONTROL_PLANE", cp_url)
            .env("PADDOCK_AGENTD_TOKEN", token)
            .env("PADDOCK_AGENTD_WORKDIR", workdir)
            .env("RUST_LOG", "info");
        for (key, value) in env {
            cmd.env(key, value);
        }
        Ok(Agentd {
            proc: Proc::spawn("agentd", cmd)?,
        })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// SIGKILLs agentd (and its process group) and reaps it.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        self.proc.signal(signal)
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> Result<std::process::ExitStatus> {
        self.proc.wait_exit(limit).await
    }

    pub fn stderr(&self) -> String {
        self.proc.stderr.text()
    }

    pub fn stdout(&self) -> String {
        self.proc.stdout.text()
    }

    pub fn logs(&self) -> String {
        self.proc.logs()
    }
}

/// How a test's agentd is started: another URL to dial (a [`crate::LinkProxy`]
/// in front of the control plane) and extra environment variables.
#[derive(Debug, Clone, Default)]
pub struct AgentdOptions {
    pub url: Option<String>,
    pub env: Vec<(String, String)>,
}

impl AgentdOptions {
    /// Dial `url` instead of the control plane's own address.
    pub fn via(mut self, url: &str) -> AgentdOptions {
        self.url = Some(url.to_owned());
        self
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> AgentdOptions {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
}

/// A registered sandbox with its agentd running and connected.
#[derive(Debug)]
pub struct Sandbox {
    pub info: SandboxInfo,
    /// The agentd token shown once at registration.
    pub token: String,
    // Declared before `workdir`, so agentd dies before its directory goes.
    pub agentd: Agentd,
    pub workdir: TempDir,
}

impl Sandbox {
    pub fn id(&self) -> &str {
        self.info.id.as_str()
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }
}
