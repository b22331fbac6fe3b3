//! Tool calls from the control plane: dispatch to git, LSP, file and exec
//! tools, with a deadline and a cancellation token per request id.
//!
//! Each `tool_call` runs in its own tracked task, so the connection's
//! reader never waits for one. At most [`MAX_CONCURRENT`] calls run at a
//! time; later ones wait for a slot (their deadline running meanwhile).
//! A call ends in exactly one reply: `tool_result`, or `request_failed`
//! (with `timeout` or `cancelled` when its deadline passed or a
//! `cancel_request` came first). Blocking work (git2, the file system) runs
//! on `spawn_blocking`; git checks an abort flag in its progress callbacks,
//! so a cancelled fetch, clone or push stops at its next callback.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use paddock_protocol::tools::{ToolCall, ToolKind, ToolOutput};
use paddock_protocol::{AgentToControl, ControlToAgent, ErrorCode, RequestId, MAX_CONTROL_FRAME};
use tokio::sync::{broadcast, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::connection::{Outbound, TxOut};
use crate::files::Workspace;
use crate::identity::SessionUser;
use crate::lsp::{DiagnosticsEvent, Lsp, LspConfig};
use crate::{exec, git};

/// Tool calls running at once; more wait for a slot.
const MAX_CONCURRENT: usize = 16;
/// At shutdown, how long running calls get to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why a tool call failed, as sent in `request_failed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ToolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ToolError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ToolError {
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ToolError::new(ErrorCode::BadRequest, message)
    }

    pub(crate) fn failed(message: impl Into<String>) -> Self {
        ToolError::new(ErrorCode::ToolFailed, message)
    }
}

/// What the tools need from agentd's settings.
#[derive(Debug, Clone)]
pub(crate) struct ToolsConfig {
    /// The canonical work directory every tool path is relative to.
    pub workdir: PathBuf,
    /// agentd's environment, scrubbed of its own settings before any exec.
    pub parent_env: Vec<(OsString, OsString)>,
    pub lsp: LspConfig,
    /// Who `exec` runs as when not agentd's own user.
    pub session_user: Option<SessionUser>,
}

struct Inner {
    workspace: Workspace,
    parent_env: Vec<(OsString, OsString)>,
    session_user: Option<SessionUser>,
    lsp: Lsp,
    /// Cancellation tokens of calls in flight, by request id.
    inflight: Mutex<HashMap<RequestId, CancellationToken>>,
    slots: Semaphore,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// The tool layer; cheap to clone.
#[derive(Clone)]
pub(crate) struct Tools {
    inner: Arc<Inner>,
}

impl Tools {
    /// Tools working in `config.workdir`; background tasks (the language
    /// servers' idle reaper) end when `shutdown` fires.
    pub(crate) fn new(config: ToolsConfig, shutdown: CancellationToken) -> Self {
        let workspace = Workspace::new(config.workdir);
        let tracker = TaskTracker::new();
        let lsp = Lsp::new(
            config.lsp,
            workspace.clone(),
            &config.parent_env,
            config.session_user.as_ref(),
            &tracker,
            shutdown.clone(),
        );
        Tools {
            inner: Arc::new(Inner {
                workspace,
                parent_env: config.parent_env,
                session_user: config.session_user,
                lsp,
                inflight: Mutex::new(HashMap::new()),
                slots: Semaphore::new(MAX_CONCURRENT),
                tracker,
                shutdown,
            }),
        }
    }

    fn inflight(&self) -> MutexGuard<'_, HashMap<RequestId, CancellationToken>> {
        // The map stays consistent even if a holder panicked.
        self.inner
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Diagnostics that language servers publish, for the connection to push.
    pub(crate) fn subscribe_diagnostics(&self) -> broadcast::Receiver<DiagnosticsEvent> {
        self.inner.lsp.subscribe()
    }

    #[cfg(test)]
    pub(crate) fn lsp(&self) -> &Lsp {
        &self.inner.lsp
    }

    /// Handles `tool_call` and `cancel_request`; never waits for the call.
    pub(crate) fn handle(&self, msg: ControlToAgent, tx_out: &TxOut) {
        match msg {
            ControlToAgent::ToolCall {
                request_id,
                timeout_ms,
                call,
            } => self.spawn_call(request_id, timeout_ms, call, tx_out.clone()),
            ControlToAgent::CancelRequest { request_id } => {
                match self.inflight().get(&request_id) {
                    Some(cancel) => cancel.cancel(),
                    None => debug!(request.id = %request_id, "cancel for a request not in flight"),
                }
            }
            other => warn!(message = ?other, "not a tool message"),
        }
    }

    fn spawn_call(
        &self,
        request_id: RequestId,
        timeout_ms: Option<u64>,
        call: ToolCall,
        tx_out: TxOut,
    ) {
        let cancel = self.inner.shutdown.child_token();
        {
            let mut inflight = self.inflight();
            if inflight.contains_key(&request_id) {
                drop(inflight);
                let reply = AgentToControl::RequestFailed {
                    request_id,
                    code: ErrorCode::Conflict,
                    message: format!("request {request_id} is already in flight"),
                };
                self.inner.tracker.spawn(async move {
                    let _ = tx_out.send(Outbound::control(reply)).await;
                });
                return;
            }
            inflight.insert(request_id, cancel.clone());
        }
        let timeout =
            Duration::from_millis(timeout_ms.unwrap_or_else(|| call.default_timeout_ms()));
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            let tool = call.name();
            // Debug redacts every credential.
            debug!(request.id = %request_id, tool, ?call, "tool call");
            let started = Instant::now();
            let result = this.call(call, timeout, cancel).await;
            this.inflight().remove(&request_id);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let reply = match result {
                Ok(result) => {
                    info!(request.id = %request_id, tool, elapsed_ms, "tool call done");
                    fit_frame(AgentToControl::ToolResult { request_id, result })
                }
                Err(err) => {
                    info!(request.id = %request_id, tool, elapsed_ms, code = err.code.as_str(), error = %err.message, "tool call failed");
                    AgentToControl::RequestFailed {
                        request_id,
                        code: err.code,
                        message: err.message,
                    }
                }
            };
            if tx_out.send(Outbound::control(reply)).await.is_err() {
                debug!(request.id = %request_id, "connection gone before the tool result");
            }
        });
    }

    /// Runs one call to completion, its deadline or its cancellation.
    pub(crate) async fn call(
        &self,
        call: ToolCall,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<ToolOutput, ToolError> {
        let abort = Arc::new(AtomicBool::new(false));
        let deadline = tokio::time::sleep(timeout);
        let work =
            async {
                let _slot =
                    self.inner.slots.acquire().await.map_err(|_| {
                        ToolError::new(ErrorCode::Internal, "the tool layer is closed")
                    })?;
                self.run(call, abort.clone()).await
            };
        let result = tokio::select! {
            result = work => result,
            () = deadline => Err(ToolError::new(
                ErrorCode::Timeout,
                format!("no result within {} ms", timeout.as_millis()),
            )),
            () = cancel.cancelled() => Err(ToolError::new(ErrorCode::Cancelled, "cancelled")),
        };
        // Blocking work still running learns it is no longer wanted.
        abort.store(true, Ordering::Relaxed);
        result
    }

    async fn run(&self, call: ToolCall, abort: Arc<AtomicBool>) -> Result<ToolOutput, ToolError> {
        match call.kind() {
            ToolKind::Git => {
                let workspace = self.inner.workspace.clone();
                blocking(move || git::call(&workspace, call, &abort)).await
            }
            ToolKind::File => {
                let workspace = self.inner.workspace.clone();
                blocking(move || file_call(&workspace, call)).await
            }
            ToolKind::Lsp => self.inner.lsp.call(call).await,
            ToolKind::Exec => match call {
                ToolCall::Exec(exec) => exec::run(
                    &exec,
                    &self.inner.workspace,
                    &self.inner.parent_env,
                    self.inner.session_user.as_ref(),
                )
                .await
                .map(ToolOutput::Exec),
                _ => Err(ToolError::new(ErrorCode::Internal, "not an exec call")),
            },
        }
    }

    /// Cancels every call in flight, waits briefly for them, and shuts the
    /// language servers down.
    pub(crate) async fn shutdown(&self) {
        for cancel in self.inflight().values() {
            cancel.cancel();
        }
        self.inner.lsp.shutdown_all().await;
        self.inner.tracker.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.inner.tracker.wait())
            .await
            .is_err()
        {
            debug!("tool tasks still running at exit");
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ToolError> + Send + 'static,
) -> Result<T, ToolError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|err| {
        Err(ToolError::new(
            ErrorCode::Internal,
            format!("tool task failed: {err}"),
        ))
    })
}

fn file_call(workspace: &Workspace, call: ToolCall) -> Result<ToolOutput, ToolError> {
    Ok(match call {
        ToolCall::FileRead(req) => ToolOutput::FileRead(workspace.read(&req)?),
        ToolCall::FileWrite(req) => ToolOutput::FileWrite(workspace.write(&req)?),
        ToolCall::FileList(req) => ToolOutput::FileList(workspace.list(&req)?),
        ToolCall::FileStat(req) => ToolOutput::FileStat(workspace.stat(&req.path)?),
        ToolCall::FileMkdir(req) => ToolOutput::FileMkdir(workspace.mkdir(&req)?),
        ToolCall::FileRemove(req) => ToolOutput::FileRemove(workspace.remove(&req)?),
        ToolCall::FileMove(req) => ToolOutput::FileMove(workspace.rename(&req)?),
        other => {
            return Err(ToolError::new(
                ErrorCode::Internal,
                format!("{} is not a file tool", other.name()),
            ))
        }
    })
}

/// A result too large for one text frame becomes a failure saying so, so
/// the control plane never receives a frame it must refuse.
fn fit_frame(reply: AgentToControl) -> AgentToControl {
    let AgentToControl::ToolResult { request_id, result } = &reply else {
        return reply;
    };
    let len = reply.encode().len();
    if len <= MAX_CONTROL_FRAME {
        return reply;
    }
    let tool = match serde_json::to_value(result) {
        Ok(value) => value["tool"].as_str().unwrap_or("tool").to_owned(),
        Err(_) => "tool".to_owned(),
    };
    AgentToControl::RequestFailed {
        request_id: *request_id,
        code: ErrorCode::ToolFailed,
        message: format!(
            "the {tool} result is {len} bytes, over the {MAX_CONTROL_FRAME}-byte frame limit; ask for less"
        ),
    }
}

#[cfg(test)]
mod tests;
