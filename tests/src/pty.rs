//! Running an interactive program (the `paddock attach` CLI) inside a real
//! PTY, so raw mode and the detach key work as they do for a person.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use paddock_protocol::TermSize;
use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use tokio::time::Instant;

use crate::process::{spawn_drain, Capture};
use crate::tail;

/// A child running on the slave side of a PTY; the test holds the master.
pub struct PtyProcess {
    child: Box<dyn Child + Send + Sync>,
    writer: Box<dyn Write + Send>,
    // Kept open so the child's terminal stays alive until we drop it.
    _master: Box<dyn MasterPty + Send>,
    output: Arc<Capture>,
    status: Option<portable_pty::ExitStatus>,
}

impl std::fmt::Debug for PtyProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtyProcess")
            .field("child", &self.child)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl PtyProcess {
    /// Starts `program args…` in a new PTY of `size`, with `env` added to an
    /// environment free of inherited `PADDOCK_*` variables.
    pub fn spawn(
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        size: TermSize,
    ) -> Result<PtyProcess> {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: size.rows,
                cols: size.cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .context("could not open a PTY")?;
        let mut cmd = CommandBuilder::new(program);
        cmd.args(args);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PADDOCK_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("TERM", "xterm-256color");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let child = pair
            .slave
            .spawn_command(cmd)
            .with_context(|| format!("could not start {} in a PTY", program.display()))?;
        // Only the child holds the slave now, so reads end when it exits.
        drop(pair.slave);
        let reader = pair
            .master
            .try_clone_reader()
            .context("could not read the PTY")?;
        let writer = pair
            .master
            .take_writer()
            .context("could not write the PTY")?;
        let output = Capture::new();
        spawn_drain("pty-reader".to_owned(), reader, output.clone());
        Ok(PtyProcess {
            child,
            writer,
            _master: pair.master,
            output,
            status: None,
        })
    }

    /// Types `bytes` into the terminal.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .and_then(|()| self.writer.flush())
            .context("could not write to the PTY")
    }

    pub fn output(&self) -> &Arc<Capture> {
        &self.output
    }

    pub fn text(&self) -> String {
        self.output.text()
    }

    /// Waits until the terminal shows `needle`.
    pub async fn wait_for_text(&self, needle: &str, limit: Duration) -> Result<()> {
        self.output.wait_contains(needle, limit).await
    }

    /// Waits for the child to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<portable_pty::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = &self.status {
                return Ok(status.clone());
            }
            self.status = self
                .child
                .try_wait()
                .context("could not poll the PTY child")?;
            if self.status.is_none() {
                if Instant::now() >= deadline {
                    return Err(anyhow!(
                        "the PTY child still runs after {limit:?}; its terminal shows:\n{}",
                        tail(&self.text(), 4000)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

impl Drop for PtyProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        eprintln!(
            "--- pty output ---\n{}\n--- end of pty output ---",
            tail(&self.text(), 8000)
        );
    }
}
