//! Exec without a PTY: one process in its own process group, stdout and
//! stderr captured separately (head and tail kept past a cap, with the
//! truncation stated), an exit status, and a timeout that kills the group.
//!
//! The environment is agentd's own minus every `PADDOCK_AGENTD_*` variable,
//! with the request's on top, exactly as for PTY sessions, and it runs as
//! the session user when agentd has one. If the call is
//! dropped (cancelled, or its deadline passed) the process group is killed.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal as NixSignal};
use nix::unistd::Pid;
use paddock_protocol::tools::{CapturedOutput, Exec, ExecOutput};
use paddock_protocol::{
    ErrorCode, ExitStatus, DEFAULT_EXEC_OUTPUT, DEFAULT_EXEC_TIMEOUT_MS, MAX_CONTROL_FRAME,
    MAX_EXEC_OUTPUT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::task::AbortOnDropHandle;

use crate::files::{json_len, Follow, Workspace};
use crate::identity::SessionUser;
use crate::pty::{is_agentd_var, resolve_program};
use crate::tools::ToolError;

/// After the process exits, how long its output pipes may stay open (held
/// by a background child) before what was read so far is returned.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Room left in a text frame for everything around the two streams.
const FRAME_SLACK: usize = 16 * 1024;

/// Kills the process group when dropped, unless disarmed.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The group may be gone already; nothing else to do then.
            let _ = killpg(pgid, NixSignal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One stream's bytes: the first half of the cap, and a ring of the last half.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    head: Vec<u8>,
    tail: VecDeque<u8>,
    total: u64,
    cap: usize,
}

impl Capture {
    pub(crate) fn new(cap: usize) -> Self {
        Capture {
            cap,
            ..Capture::default()
        }
    }

    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        let head_cap = self.cap / 2;
        if self.head.len() < head_cap {
            let take = (head_cap - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
        let tail_cap = self.cap - head_cap;
        if bytes.len() >= tail_cap {
            self.tail.clear();
            self.tail.extend(&bytes[bytes.len() - tail_cap..]);
        } else {
            let overflow = (self.tail.len() + bytes.len()).saturating_sub(tail_cap);
            self.tail.drain(..overflow);
            self.tail.extend(bytes);
        }
    }

    /// The output with at most `keep` bytes of it (head and tail halves).
    pub(crate) fn render(&self, keep: usize) -> CapturedOutput {
        let head_keep = (keep / 2).min(self.head.len());
        let tail: Vec<u8> = self.tail.iter().copied().collect();
        let tail_keep = (keep - head_keep).min(tail.len());
        let kept = (head_keep + tail_keep) as u64;
        let omitted = self.total - kept;
        let head = &self.head[..head_keep];
        let tail = &tail[tail.len() - tail_keep..];
        let text = if omitted == 0 {
            let mut all = head.to_vec();
            all.extend_from_slice(tail);
            String::from_utf8_lossy(&all).into_owned()
        } else {
            format!(
                "{}\n[... {omitted} bytes omitted ...]\n{}",
                String::from_utf8_lossy(head),
                String::from_utf8_lossy(tail)
            )
        };
        CapturedOutput {
            text,
            total_bytes: self.total,
            omitted_bytes: omitted,
        }
    }
}

async fn read_all(mut pipe: impl AsyncRead + Unpin, cap: usize) -> Capture {
    let mut capture = Capture::new(cap);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return capture,
            Ok(n) => capture.push(&buf[..n]),
        }
    }
}

/// The environment of an exec'd process; see the module docs.
fn exec_env(
    parent: &[(OsString, OsString)],
    user: Option<&SessionUser>,
    requested: &BTreeMap<String, String>,
) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = parent.iter().cloned().collect();
    if let Some(user) = user {
        user.apply_env(&mut env);
    }
    env.extend(
        requested
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    env.retain(|key, _| !is_agentd_var(key));
    env
}

pub(crate) async fn run(
    req: &Exec,
    workspace: &Workspace,
    parent_env: &[(OsString, OsString)],
    user: Option<&SessionUser>,
) -> Result<ExecOutput, ToolError> {
    let cwd = workspace.resolve(req.cwd.as_deref().unwrap_or(""), Follow::Yes)?;
    if !cwd.is_dir() {
        return Err(ToolError::new(
            ErrorCode::SpawnFailed,
            format!("no such directory: {}", cwd.display()),
        ));
    }
    let env = exec_env(parent_env, user, &req.env);
    let program = resolve_program(
        &req.command,
        &cwd,
        env.get(OsStr::new("PATH")).map(|p| p.as_os_str()),
    )
    .map_err(|err| ToolError::new(ErrorCode::SpawnFailed, format!("{err:#}")))?;
    let cap = req
        .max_output
        .unwrap_or(DEFAULT_EXEC_OUTPUT)
        .min(MAX_EXEC_OUTPUT as u32) as usize;
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS));

    let mut command = Command::new(&program);
    command
        .args(&req.args)
        .current_dir(&cwd)
        .env_clear()
        .envs(&env)
        .stdin(if req.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = user {
        // As root, std also drops the supplementary groups.
        command.uid(user.uid).gid(user.gid);
    }
    let started = Instant::now();
    let mut child = command.spawn().map_err(|err| {
        ToolError::new(
            ErrorCode::SpawnFailed,
            format!("could not start {}: {err}", req.command),
        )
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().map(|pid| Pid::from_raw(pid as i32)),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ToolError::new(ErrorCode::Internal, "output pipes missing"));
    };
    let mut out_task = AbortOnDropHandle::new(tokio::spawn(read_all(stdout, cap)));
    let mut err_task = AbortOnDropHandle::new(tokio::spawn(read_all(stderr, cap)));
    let _stdin_task = match (child.stdin.take(), req.stdin.clone()) {
        (Some(mut stdin), Some(text)) => Some(AbortOnDropHandle::new(tokio::spawn(async move {
            // A process that exits without reading its input is not an error.
            let _ = stdin.write_all(text.as_bytes()).await;
        }))),
        _ => None,
    };

    let (status, timed_out) = tokio::select! {
        status = child.wait() => (status, false),
        () = tokio::time::sleep(timeout) => {
            guard.kill();
            (child.wait().await, true)
        }
    };
    let status = status
        .map_err(|err| ToolError::failed(format!("could not wait for the process: {err}")))?;
    let duration_ms = started.elapsed().as_millis() as u64;
    let drain = tokio::time::Instant::now() + DRAIN_GRACE;
    let stdout = tokio::time::timeout_at(drain, &mut out_task).await;
    let stderr = tokio::time::timeout_at(drain, &mut err_task).await;
    let stdout = stdout.ok().and_then(Result::ok).unwrap_or_default();
    let stderr = stderr.ok().and_then(Result::ok).unwrap_or_default();
    // Leave background processes of a finished command alone; only a
    // timed-out or abandoned command has its group killed.
    if !timed_out {
        guard.pgid = None;
    }
    let status = match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::code(code),
        (None, Some(signal)) => ExitStatus::signal(signal),
        (None, None) => ExitStatus {
            code: None,
            signal: None,
        },
    };
    Ok(fit(status, &stdout, &stderr, cap, timed_out, duration_ms))
}

/// Renders both streams, halving what is kept until the result fits a frame.
fn fit(
    status: ExitStatus,
    stdout: &Capture,
    stderr: &Capture,
    cap: usize,
    timed_out: bool,
    duration_ms: u64,
) -> ExecOutput {
    let mut keep = cap;
    loop {
        let out = stdout.render(keep);
        let err = stderr.render(keep);
        if json_len(&out.text) + json_len(&err.text) + FRAME_SLACK <= MAX_CONTROL_FRAME || keep == 0
        {
            return ExecOutput {
                status,
                stdout: out,
                stderr: err,
                timed_out,
                duration_ms,
            };
        }
        keep /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut capture = Capture::new(8);
        for chunk in [&b"abc"[..], b"defgh", b"ijklmnop", b"qrstuvwxyz"] {
            capture.push(chunk);
        }
        let rendered = capture.render(8);
        assert_eq!(rendered.total_bytes, 26);
        assert_eq!(rendered.omitted_bytes, 18);
        assert_eq!(rendered.text, "abcd\n[... 18 bytes omitted ...]\nwxyz");
        let mut small = Capture::new(8);
        small.push(b"hello");
        assert_eq!(small.render(8).text, "hello");
        assert_eq!(small.render(8).omitted_bytes, 0);
    }

    #[test]
    fn agentd_settings_are_scrubbed() {
        let parent = vec![
            ("PATH".into(), "/bin".into()),
            ("PADDOCK_AGENTD_TOKEN".into(), "secret".into()),
        ];
        let mut requested = BTreeMap::new();
        requested.insert("PADDOCK_AGENTD_WORKDIR".to_owned(), "x".to_owned());
        requested.insert("FOO".to_owned(), "bar".to_owned());
        let env = exec_env(&parent, None, &requested);
        assert_eq!(env.len(), 2);
        assert!(env.keys().all(|k| !is_agentd_var(k)));
    }
}
