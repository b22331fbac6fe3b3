//! Running the `paddock` CLI as a child process and reading its output.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use paddock_protocol::api::{SandboxInfo, SandboxList, SessionInfo, SessionList};

use crate::bin_path;

/// How long one CLI invocation may take before the test gives up on it.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished `paddock` invocation left behind.
#[derive(Debug)]
pub struct CliOutput {
    pub args: Vec<String>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Everything about the run, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`paddock {}` ended with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }

    /// Fails unless the command exited 0.
    pub fn ok(self) -> Result<CliOutput> {
        if !self.status.success() {
            bail!("expected success: {}", self.describe());
        }
        Ok(self)
    }
}

/// Runs `paddock ARGS…` with `PADDOCK_URL` and `PADDOCK_TOKEN` set, stdin
/// closed, and a time limit.
pub async fn paddock(url: &str, token: &str, args: &[&str]) -> Result<CliOutput> {
    let mut cmd = tokio::process::Command::new(bin_path("paddock"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PADDOCK_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args)
        .env("PADDOCK_URL", url)
        .env("PADDOCK_TOKEN", token)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("could not run paddock {args:?}"))?;
    let output = match tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output()).await {
        Ok(output) => output.with_context(|| format!("paddock {args:?} failed to run"))?,
        Err(_) => bail!(
            "`paddock {}` did not finish within {CLI_TIMEOUT:?}",
            args.join(" ")
        ),
    };
    Ok(CliOutput {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A `paddock ARGS…` command with `PADDOCK_URL` and `PADDOCK_TOKEN` set and
/// no other inherited `PADDOCK_*` variable, for [`crate::Proc::spawn`].
pub fn paddock_command(url: &str, token: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = crate::base_command(&bin_path("paddock"));
    cmd.args(args)
        .env("PADDOCK_URL", url)
        .env("PADDOCK_TOKEN", token)
        .env("NO_COLOR", "1");
    cmd
}

/// Parses `paddock sandboxes --json`: a `SandboxList` object or a bare array.
pub fn parse_sandboxes(json: &str) -> Result<Vec<SandboxInfo>> {
    if let Ok(list) = serde_json::from_str::<SandboxList>(json) {
        return Ok(list.sandboxes);
    }
    serde_json::from_str::<Vec<SandboxInfo>>(json).with_context(|| {
        format!("`paddock sandboxes --json` printed neither a list nor an array: {json}")
    })
}

/// Parses `paddock sessions SB --json`: a `SessionList` object or a bare array.
pub fn parse_sessions(json: &str) -> Result<Vec<SessionInfo>> {
    if let Ok(list) = serde_json::from_str::<SessionList>(json) {
        return Ok(list.sessions);
    }
    serde_json::from_str::<Vec<SessionInfo>>(json).with_context(|| {
        format!("`paddock sessions --json` printed neither a list nor an array: {json}")
    })
}
