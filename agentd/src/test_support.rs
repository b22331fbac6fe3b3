//! Helpers shared by the tool tests: a tool layer on a temporary work
//! directory, a `git` command-line runner, and a global log capture (so a
//! test can check what agentd logged, from every thread).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use paddock_protocol::tools::{ToolCall, ToolOutput};
use tokio_util::sync::CancellationToken;

use crate::lsp::LspConfig;
use crate::tools::{ToolError, Tools, ToolsConfig};

/// A tool layer whose work directory is a fresh temporary directory.
pub(crate) struct TestTools {
    pub tools: Tools,
    pub workdir: PathBuf,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl TestTools {
    pub(crate) fn new() -> Self {
        Self::with_lsp(LspConfig::default())
    }

    pub(crate) fn with_lsp(lsp: LspConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let workdir = dir.path().join("work");
        std::fs::create_dir(&workdir).unwrap();
        let workdir = workdir.canonicalize().unwrap();
        let shutdown = CancellationToken::new();
        let tools = Tools::new(
            ToolsConfig {
                workdir: workdir.clone(),
                parent_env: std::env::vars_os().collect(),
                lsp,
                session_user: None,
            },
            shutdown.clone(),
        );
        TestTools {
            tools,
            workdir,
            _dir: dir,
            shutdown,
        }
    }

    /// A scratch directory beside the work directory (outside it).
    pub(crate) fn outside(&self) -> PathBuf {
        let dir = self.workdir.parent().unwrap().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(crate) async fn call(&self, call: ToolCall) -> Result<ToolOutput, ToolError> {
        self.tools
            .call(call, Duration::from_secs(60), CancellationToken::new())
            .await
    }

    pub(crate) async fn shutdown(&self) {
        self.tools.shutdown().await;
        self.shutdown.cancel();
    }
}

/// Runs the `git` program in `dir` and returns its stdout.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Seeder")
        .env("GIT_AUTHOR_EMAIL", "seed@example.com")
        .env("GIT_COMMITTER_NAME", "Seeder")
        .env("GIT_COMMITTER_EMAIL", "seed@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

type Buffer = Arc<Mutex<Vec<u8>>>;

struct Capture(Buffer);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<Buffer> = OnceLock::new();

/// Captures every log line of this process, at every level, from now on.
pub(crate) fn capture_logs() {
    LOGS.get_or_init(|| {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Capture(writer.clone()))
            .try_init()
            .expect("no other subscriber is installed in tests");
        buffer
    });
}

/// Everything logged since [`capture_logs`].
pub(crate) fn logs() -> String {
    let buffer = LOGS.get().expect("capture_logs was called");
    let bytes = buffer.lock().unwrap().clone();
    String::from_utf8_lossy(&bytes).into_owned()
}
