//! Language servers: a registry (language → command), one server per
//! (workspace, language) started on demand, open documents tracked with
//! versions, diagnostics cached and pushed, typed requests and a raw
//! passthrough.
//!
//! A server that dies is started again on the next call, initialized, and
//! sent every document it had open (with its current text and version); a
//! request cut short by the death is retried once on the new server. A
//! server unused for the idle time gets `shutdown` and `exit` and is
//! started again when next needed, its documents reopened the same way.
//! Positions are LSP's: zero-based lines and UTF-16 code units.

pub(crate) mod framing;
mod server;
mod wire;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lsp_types::{
    ClientInfo, CompletionParams, DidChangeTextDocumentParams, DidCloseTextDocumentParams,
    DidOpenTextDocumentParams, DocumentSymbolParams, GotoDefinitionParams, HoverParams,
    InitializeParams, ReferenceContext, ReferenceParams, TextDocumentContentChangeEvent,
    TextDocumentIdentifier, TextDocumentItem, VersionedTextDocumentIdentifier, WorkspaceFolder,
    WorkspaceSymbolParams,
};
use paddock_protocol::tools::{
    DocumentDiagnostics, LspClosed, LspDiagnosticsOutput, LspOpened, LspResponse, LspTarget,
    TextChange, ToolCall, ToolOutput,
};
use paddock_protocol::{ErrorCode, MAX_TEXT_LEN};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::files::{Follow, Workspace};
use crate::identity::SessionUser;
use crate::pty::is_agentd_var;
use crate::tools::ToolError;
pub(crate) use server::Server;
use server::{OnNotification, RpcError};
pub(crate) use wire::file_uri;
use wire::{
    apply_change, client_capabilities, lsp_range, lsp_uri, position_params, sync_kind, Sync,
};

/// Servers unused this long are shut down unless configured otherwise.
pub const DEFAULT_LSP_IDLE: Duration = Duration::from_secs(600);
/// How long `initialize` may take.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server gets to exit after `shutdown` and `exit`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Diagnostics events queued for the connection. A connection that falls
/// further behind skips the oldest (logged); `lsp_diagnostics` still has
/// the latest.
const EVENT_QUEUE: usize = 256;
/// Diagnostics kept and pushed per document; the rest are dropped, so a
/// push always fits a frame.
const MAX_DIAGNOSTICS: usize = 500;

/// How to start the server of one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LspServerConfig {
    pub command: String,
    pub args: Vec<String>,
}

/// The registry of language servers and the idle time.
#[derive(Debug, Clone)]
pub struct LspConfig {
    /// By language name, which is also the `languageId` documents are opened with.
    pub servers: BTreeMap<String, LspServerConfig>,
    pub idle_timeout: Duration,
}

impl Default for LspConfig {
    fn default() -> Self {
        let server = |command: &str, args: &[&str]| LspServerConfig {
            command: command.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let servers = [
            ("python", server("pylsp", &[])),
            ("rust", server("rust-analyzer", &[])),
            ("go", server("gopls", &[])),
            (
                "typescript",
                server("typescript-language-server", &["--stdio"]),
            ),
            (
                "javascript",
                server("typescript-language-server", &["--stdio"]),
            ),
            ("c", server("clangd", &[])),
            ("cpp", server("clangd", &[])),
        ];
        LspConfig {
            servers: servers
                .into_iter()
                .map(|(lang, server)| (lang.to_owned(), server))
                .collect(),
            idle_timeout: DEFAULT_LSP_IDLE,
        }
    }
}

/// Parses `LANGUAGE=COMMAND [ARGS...]` (arguments split on whitespace).
pub fn parse_lsp_server(spec: &str) -> Result<(String, LspServerConfig), String> {
    let (language, command) = spec
        .split_once('=')
        .ok_or_else(|| format!("expected LANGUAGE=COMMAND [ARGS...], got {spec:?}"))?;
    let mut words = command.split_whitespace();
    let program = words
        .next()
        .ok_or_else(|| format!("no command for language {language:?}"))?;
    let language = language.trim();
    if language.is_empty() {
        return Err(format!("no language in {spec:?}"));
    }
    Ok((
        language.to_owned(),
        LspServerConfig {
            command: program.to_owned(),
            args: words.map(str::to_owned).collect(),
        },
    ))
}

/// Diagnostics a server published, as pushed to the control plane.
#[derive(Debug, Clone)]
pub(crate) struct DiagnosticsEvent {
    pub workspace: String,
    pub language: String,
    pub uri: String,
    pub version: Option<i32>,
    pub diagnostics: Vec<Value>,
}

#[derive(Debug, Clone)]
struct Doc {
    text: String,
    version: i32,
}

type DiagnosticsCache = Arc<Mutex<BTreeMap<String, (Option<i32>, Vec<Value>)>>>;

struct SlotState {
    server: Option<Arc<Server>>,
    sync: Sync,
    docs: BTreeMap<String, Doc>,
    /// Servers started so far, to tell a start from a restart.
    starts: u32,
}

/// One (workspace, language) pair: its server, when running, and its documents.
struct Slot {
    workspace: String,
    language: String,
    root: PathBuf,
    config: LspServerConfig,
    state: tokio::sync::Mutex<SlotState>,
    diagnostics: DiagnosticsCache,
    last_used: Mutex<Instant>,
    /// Calls in progress; a busy server is never shut down as idle.
    busy: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks a slot busy for the life of a call.
struct Busy<'a>(&'a Slot);

impl<'a> Busy<'a> {
    fn new(slot: &'a Slot) -> Self {
        slot.busy.fetch_add(1, Ordering::SeqCst);
        *lock(&slot.last_used) = Instant::now();
        Busy(slot)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        *lock(&self.0.last_used) = Instant::now();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Inner {
    config: LspConfig,
    workspace: Workspace,
    env: Vec<(OsString, OsString)>,
    /// The uid and gid servers run as, when sessions run as another user.
    user: Option<(u32, u32)>,
    slots: Mutex<HashMap<(PathBuf, String), Arc<Slot>>>,
    tx_events: broadcast::Sender<DiagnosticsEvent>,
}

/// Every language server of the sandbox; cheap to clone.
#[derive(Clone)]
pub(crate) struct Lsp {
    inner: Arc<Inner>,
}

fn to_value(params: impl Serialize) -> Value {
    // LSP parameter types are plain data; they always serialize.
    serde_json::to_value(params).unwrap_or(Value::Null)
}

impl Lsp {
    /// Language servers per `config`, spawned with `env` (minus agentd's
    /// settings). The idle reaper runs on `tracker` until `shutdown`.
    pub(crate) fn new(
        config: LspConfig,
        workspace: Workspace,
        env: &[(OsString, OsString)],
        session_user: Option<&SessionUser>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (tx_events, _) = broadcast::channel(EVENT_QUEUE);
        let mut env: BTreeMap<OsString, OsString> = env
            .iter()
            .filter(|(key, _)| !is_agentd_var(key))
            .cloned()
            .collect();
        if let Some(user) = session_user {
            user.apply_env(&mut env);
        }
        let lsp = Lsp {
            inner: Arc::new(Inner {
                env: env.into_iter().collect(),
                user: session_user.map(|user| (user.uid, user.gid)),
                config,
                workspace,
                slots: Mutex::new(HashMap::new()),
                tx_events,
            }),
        };
        let reaper = lsp.clone();
        tracker.spawn(async move { reaper.reap_idle(shutdown).await });
        lsp
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<DiagnosticsEvent> {
        self.inner.tx_events.subscribe()
    }

    fn slot(&self, target: &LspTarget) -> Result<Arc<Slot>, ToolError> {
        let config = self
            .inner
            .config
            .servers
            .get(&target.language)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .inner
                    .config
                    .servers
                    .keys()
                    .map(String::as_str)
                    .collect();
                ToolError::bad_request(format!(
                    "no language server for {:?}; configured: {}",
                    target.language,
                    known.join(", ")
                ))
            })?;
        let root = self
            .inner
            .workspace
            .resolve(&target.workspace, Follow::Yes)?;
        if !root.is_dir() {
            return Err(ToolError::new(
                ErrorCode::NotFound,
                format!("workspace {:?} is not a directory", target.workspace),
            ));
        }
        let key = (root.clone(), target.language.clone());
        let mut slots = lock(&self.inner.slots);
        let slot = slots.entry(key).or_insert_with(|| {
            Arc::new(Slot {
                workspace: self.inner.workspace.relative(&root),
                language: target.language.clone(),
                root,
                config: config.clone(),
                state: tokio::sync::Mutex::new(SlotState {
                    server: None,
                    sync: Sync::Full,
                    docs: BTreeMap::new(),
                    starts: 0,
                }),
                diagnostics: Arc::default(),
                last_used: Mutex::new(Instant::now()),
                busy: AtomicUsize::new(0),
            })
        });
        Ok(slot.clone())
    }

    /// A document's path and URI.
    fn document(&self, path: &str) -> Result<(PathBuf, String), ToolError> {
        let path = self.inner.workspace.resolve(path, Follow::Yes)?;
        let uri = file_uri(&path);
        Ok((path, uri))
    }

    pub(crate) async fn call(&self, call: ToolCall) -> Result<ToolOutput, ToolError> {
        match call {
            ToolCall::LspOpen(req) => {
                let slot = self.slot(&req.target)?;
                let _busy = Busy::new(&slot);
                let (path, uri) = self.document(&req.path)?;
                let text = match req.text {
                    Some(text) => text,
                    None => read_text(&path, &req.path)?,
                };
                let version = self.open(&slot, &uri, text).await?;
                Ok(ToolOutput::LspOpen(LspOpened { uri, version }))
            }
            ToolCall::LspChange(req) => {
                let slot = self.slot(&req.target)?;
                let _busy = Busy::new(&slot);
                let (_, uri) = self.document(&req.path)?;
                let version = self.change(&slot, &uri, &req.changes).await?;
                Ok(ToolOutput::LspChange(LspOpened { uri, version }))
            }
            ToolCall::LspClose(req) => {
                let slot = self.slot(&req.target)?;
                let _busy = Busy::new(&slot);
                let (_, uri) = self.document(&req.path)?;
                self.close(&slot, &uri).await?;
                Ok(ToolOutput::LspClose(LspClosed { uri }))
            }
            ToolCall::LspDiagnostics(req) => {
                let slot = self.slot(&req.target)?;
                let only = match &req.path {
                    Some(path) => Some(self.document(path)?.1),
                    None => None,
                };
                let cache = lock(&slot.diagnostics);
                let documents = cache
                    .iter()
                    .filter(|(uri, _)| only.as_ref().is_none_or(|only| only == *uri))
                    .map(|(uri, (version, diagnostics))| DocumentDiagnostics {
                        uri: uri.clone(),
                        version: *version,
                        diagnostics: diagnostics.clone(),
                    })
                    .collect();
                Ok(ToolOutput::LspDiagnostics(LspDiagnosticsOutput {
                    documents,
                }))
            }
            ToolCall::LspHover(req) => {
                let (slot, uri) = self.prepare(&req.target, &req.path).await?;
                let params = HoverParams {
                    text_document_position_params: position_params(&uri, req.position)?,
                    work_done_progress_params: Default::default(),
                };
                let response = self
                    .request(&slot, "textDocument/hover", to_value(params))
                    .await?;
                Ok(ToolOutput::LspHover(LspResponse { response }))
            }
            ToolCall::LspDefinition(req) => {
                let (slot, uri) = self.prepare(&req.target, &req.path).await?;
                let params = GotoDefinitionParams {
                    text_document_position_params: position_params(&uri, req.position)?,
                    work_done_progress_params: Default::default(),
                    partial_result_params: Default::default(),
                };
                let response = self
                    .request(&slot, "textDocument/definition", to_value(params))
                    .await?;
                Ok(ToolOutput::LspDefinition(LspResponse { response }))
            }
            ToolCall::LspReferences(req) => {
                let (slot, uri) = self.prepare(&req.target, &req.path).await?;
                let params = ReferenceParams {
                    text_document_position: position_params(&uri, req.position)?,
                    work_done_progress_params: Default::default(),
                    partial_result_params: Default::default(),
                    context: ReferenceContext {
                        include_declaration: req.include_declaration,
                    },
                };
                let response = self
                    .request(&slot, "textDocument/references", to_value(params))
                    .await?;
                Ok(ToolOutput::LspReferences(LspResponse { response }))
            }
            ToolCall::LspCompletion(req) => {
                let (slot, uri) = self.prepare(&req.target, &req.path).await?;
                let params = CompletionParams {
                    text_document_position: position_params(&uri, req.position)?,
                    work_done_progress_params: Default::default(),
                    partial_result_params: Default::default(),
                    context: None,
                };
                let response = self
                    .request(&slot, "textDocument/completion", to_value(params))
                    .await?;
                Ok(ToolOutput::LspCompletion(LspResponse { response }))
            }
            ToolCall::LspDocumentSymbols(req) => {
                let (slot, uri) = self.prepare(&req.target, &req.path).await?;
                let params = DocumentSymbolParams {
                    text_document: TextDocumentIdentifier {
                        uri: lsp_uri(&uri)?,
                    },
                    work_done_progress_params: Default::default(),
                    partial_result_params: Default::default(),
                };
                let response = self
                    .request(&slot, "textDocument/documentSymbol", to_value(params))
                    .await?;
                Ok(ToolOutput::LspDocumentSymbols(LspResponse { response }))
            }
            ToolCall::LspWorkspaceSymbols(req) => {
                let slot = self.slot(&req.target)?;
                let _busy = Busy::new(&slot);
                let params = WorkspaceSymbolParams {
                    query: req.query,
                    work_done_progress_params: Default::default(),
                    partial_result_params: Default::default(),
                };
                let response = self
                    .request(&slot, "workspace/symbol", to_value(params))
                    .await?;
                Ok(ToolOutput::LspWorkspaceSymbols(LspResponse { response }))
            }
            ToolCall::LspRequest(req) => {
                let slot = self.slot(&req.target)?;
                let _busy = Busy::new(&slot);
                let response = self.request(&slot, &req.method, req.params).await?;
                Ok(ToolOutput::LspRequest(LspResponse { response }))
            }
            other => Err(ToolError::new(
                ErrorCode::Internal,
                format!("{} is not an LSP tool", other.name()),
            )),
        }
    }

    /// The slot and URI for a request about one document, which is opened
    /// from disk first if it is not open yet.
    async fn prepare(
        &self,
        target: &LspTarget,
        path: &str,
    ) -> Result<(Arc<Slot>, String), ToolError> {
        let slot = self.slot(target)?;
        let (file, uri) = self.document(path)?;
        let open = slot.state.lock().await.docs.contains_key(&uri);
        if !open {
            let text = read_text(&file, path)?;
            self.open(&slot, &uri, text).await?;
        }
        Ok((slot, uri))
    }

    /// The slot's running server, started (and its documents reopened) if needed.
    async fn running(&self, slot: &Slot, state: &mut SlotState) -> Result<Arc<Server>, ToolError> {
        if let Some(server) = &state.server {
            if server.is_alive() {
                return Ok(server.clone());
            }
            warn!(
                workspace = %slot.workspace,
                language = %slot.language,
                pid = server.pid(),
                "language server died; restarting it"
            );
        }
        state.server = None;
        let label = format!("{}:{}", slot.language, slot.workspace);
        let on_notification = self.on_notification(slot);
        let server = Server::spawn(
            &slot.config.command,
            &slot.config.args,
            &slot.root,
            &self.inner.env,
            self.inner.user,
            &label,
            on_notification,
        )
        .map_err(|err| {
            ToolError::new(
                ErrorCode::SpawnFailed,
                format!(
                    "could not start the {} language server `{}`: {err}",
                    slot.language, slot.config.command
                ),
            )
        })?;
        let server = Arc::new(server);
        let root_uri = lsp_uri(&file_uri(&slot.root))?;
        #[allow(deprecated)] // root_uri: older servers read only it.
        let params = InitializeParams {
            process_id: Some(std::process::id()),
            root_uri: Some(root_uri.clone()),
            workspace_folders: Some(vec![WorkspaceFolder {
                uri: root_uri,
                name: slot.workspace.clone(),
            }]),
            capabilities: client_capabilities(),
            client_info: Some(ClientInfo {
                name: "agentd".to_owned(),
                version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            }),
            ..Default::default()
        };
        let initialized =
            tokio::time::timeout(INIT_TIMEOUT, server.request("initialize", to_value(params)))
                .await
                .map_err(|_| {
                    ToolError::failed(format!(
                        "the {} language server did not initialize within {} s",
                        slot.language,
                        INIT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|err| {
                    ToolError::failed(format!(
                        "the {} language server failed to initialize: {err}",
                        slot.language
                    ))
                })?;
        state.sync = sync_kind(&initialized["capabilities"]);
        let rpc = |err: RpcError| ToolError::failed(format!("language server: {err}"));
        server.notify("initialized", json!({})).await.map_err(rpc)?;
        for (uri, doc) in &state.docs {
            server
                .notify("textDocument/didOpen", did_open(uri, &slot.language, doc)?)
                .await
                .map_err(rpc)?;
        }
        state.starts += 1;
        info!(
            workspace = %slot.workspace,
            language = %slot.language,
            pid = server.pid(),
            restart = state.starts > 1,
            documents = state.docs.len(),
            "language server started"
        );
        state.server = Some(server.clone());
        Ok(server)
    }

    fn on_notification(&self, slot: &Slot) -> OnNotification {
        let cache = slot.diagnostics.clone();
        let tx_events = self.inner.tx_events.clone();
        let workspace = slot.workspace.clone();
        let language = slot.language.clone();
        Arc::new(move |method: &str, params: Value| match method {
            "textDocument/publishDiagnostics" => {
                let Some(uri) = params["uri"].as_str().map(str::to_owned) else {
                    return;
                };
                let version = params["version"]
                    .as_i64()
                    .and_then(|v| i32::try_from(v).ok());
                let mut diagnostics = match params.get("diagnostics") {
                    Some(Value::Array(list)) => list.clone(),
                    _ => Vec::new(),
                };
                diagnostics.truncate(MAX_DIAGNOSTICS);
                lock(&cache).insert(uri.clone(), (version, diagnostics.clone()));
                // Nobody listening (no connection) is fine: the cache has them.
                let _ = tx_events.send(DiagnosticsEvent {
                    workspace: workspace.clone(),
                    language: language.clone(),
                    uri,
                    version,
                    diagnostics,
                });
            }
            "window/logMessage" | "window/showMessage" => {
                debug!(language = %language, message = %params["message"], "language server message");
            }
            _ => {}
        })
    }

    /// Sends a request, restarting a dead server and retrying once.
    async fn request(&self, slot: &Slot, method: &str, params: Value) -> Result<Value, ToolError> {
        let _busy = Busy::new(slot);
        for attempt in 0..2 {
            let server = {
                let mut state = slot.state.lock().await;
                self.running(slot, &mut state).await?
            };
            match server.request(method, params.clone()).await {
                Ok(result) => return Ok(result),
                Err(RpcError::Exited) if attempt == 0 => {
                    warn!(language = %slot.language, %method, "language server exited during a request; retrying");
                }
                Err(err) => return Err(ToolError::failed(format!("{method}: {err}"))),
            }
        }
        Err(ToolError::failed(format!(
            "{method}: the language server exited twice"
        )))
    }

    async fn open(&self, slot: &Slot, uri: &str, text: String) -> Result<i32, ToolError> {
        let mut state = slot.state.lock().await;
        let server = self.running(slot, &mut state).await?;
        let rpc = |err: RpcError| ToolError::failed(format!("language server: {err}"));
        let version = match state.docs.get_mut(uri) {
            // Already open: the new text replaces the old, as a change.
            Some(doc) => {
                doc.version += 1;
                doc.text = text;
                let params = DidChangeTextDocumentParams {
                    text_document: VersionedTextDocumentIdentifier {
                        uri: lsp_uri(uri)?,
                        version: doc.version,
                    },
                    content_changes: vec![TextDocumentContentChangeEvent {
                        range: None,
                        range_length: None,
                        text: doc.text.clone(),
                    }],
                };
                server
                    .notify("textDocument/didChange", to_value(params))
                    .await
                    .map_err(rpc)?;
                doc.version
            }
            None => {
                let doc = Doc { text, version: 1 };
                server
                    .notify("textDocument/didOpen", did_open(uri, &slot.language, &doc)?)
                    .await
                    .map_err(rpc)?;
                state.docs.insert(uri.to_owned(), doc);
                1
            }
        };
        Ok(version)
    }

    async fn change(
        &self,
        slot: &Slot,
        uri: &str,
        changes: &[TextChange],
    ) -> Result<i32, ToolError> {
        let mut state = slot.state.lock().await;
        let server = self.running(slot, &mut state).await?;
        let sync = state.sync;
        let doc = state.docs.get_mut(uri).ok_or_else(|| {
            ToolError::new(
                ErrorCode::NotFound,
                format!("{uri} is not open; lsp_open it first"),
            )
        })?;
        let mut text = doc.text.clone();
        for change in changes {
            apply_change(&mut text, change);
        }
        if text.len() > MAX_TEXT_LEN {
            return Err(ToolError::bad_request(format!(
                "the document would be {} bytes, over the limit of {MAX_TEXT_LEN}",
                text.len()
            )));
        }
        doc.text = text;
        doc.version += 1;
        let content_changes = match sync {
            Sync::None => Vec::new(),
            Sync::Full => vec![TextDocumentContentChangeEvent {
                range: None,
                range_length: None,
                text: doc.text.clone(),
            }],
            Sync::Incremental => changes
                .iter()
                .map(|change| TextDocumentContentChangeEvent {
                    range: change.range.map(lsp_range),
                    range_length: None,
                    text: change.text.clone(),
                })
                .collect(),
        };
        if sync != Sync::None {
            let params = DidChangeTextDocumentParams {
                text_document: VersionedTextDocumentIdentifier {
                    uri: lsp_uri(uri)?,
                    version: doc.version,
                },
                content_changes,
            };
            server
                .notify("textDocument/didChange", to_value(params))
                .await
                .map_err(|err| ToolError::failed(format!("language server: {err}")))?;
        }
        Ok(doc.version)
    }

    async fn close(&self, slot: &Slot, uri: &str) -> Result<(), ToolError> {
        let mut state = slot.state.lock().await;
        if state.docs.remove(uri).is_none() {
            return Err(ToolError::new(
                ErrorCode::NotFound,
                format!("{uri} is not open"),
            ));
        }
        lock(&slot.diagnostics).remove(uri);
        if let Some(server) = state.server.as_ref().filter(|s| s.is_alive()) {
            let params = DidCloseTextDocumentParams {
                text_document: TextDocumentIdentifier { uri: lsp_uri(uri)? },
            };
            server
                .notify("textDocument/didClose", to_value(params))
                .await
                .map_err(|err| ToolError::failed(format!("language server: {err}")))?;
        }
        Ok(())
    }

    fn slots(&self) -> Vec<Arc<Slot>> {
        lock(&self.inner.slots).values().cloned().collect()
    }

    /// Shuts down servers unused for the idle time, until `shutdown`.
    async fn reap_idle(&self, shutdown: CancellationToken) {
        let idle = self.inner.config.idle_timeout;
        let every = (idle / 4).clamp(Duration::from_millis(10), Duration::from_secs(30));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            for slot in self.slots() {
                let unused = lock(&slot.last_used).elapsed() >= idle;
                if !unused || slot.busy.load(Ordering::SeqCst) > 0 {
                    continue;
                }
                let Ok(mut state) = slot.state.try_lock() else {
                    continue;
                };
                if let Some(server) = state.server.take() {
                    info!(
                        workspace = %slot.workspace,
                        language = %slot.language,
                        pid = server.pid(),
                        "language server idle; shutting it down"
                    );
                    server.shutdown(SHUTDOWN_GRACE).await;
                }
            }
        }
    }

    /// Shuts every server down (`shutdown`, `exit`, then kill).
    pub(crate) async fn shutdown_all(&self) {
        for slot in self.slots() {
            let server = slot.state.lock().await.server.take();
            if let Some(server) = server {
                server.shutdown(SHUTDOWN_GRACE).await;
            }
        }
    }

    /// The running server of a (workspace, language), for tests.
    #[cfg(test)]
    pub(crate) async fn server(&self, target: &LspTarget) -> Option<Arc<Server>> {
        let slot = self.slot(target).ok()?;
        let state = slot.state.lock().await;
        state.server.clone()
    }
}

fn read_text(path: &Path, shown: &str) -> Result<String, ToolError> {
    let bytes = std::fs::read(path).map_err(|err| {
        let code = if err.kind() == std::io::ErrorKind::NotFound {
            ErrorCode::NotFound
        } else {
            ErrorCode::ToolFailed
        };
        ToolError::new(code, format!("could not read {shown}: {err}"))
    })?;
    if bytes.len() > MAX_TEXT_LEN {
        return Err(ToolError::bad_request(format!(
            "{shown} is {} bytes, over the limit of {MAX_TEXT_LEN} for a document",
            bytes.len()
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| ToolError::bad_request(format!("{shown} is not UTF-8 text")))
}

fn did_open(uri: &str, language: &str, doc: &Doc) -> Result<Value, ToolError> {
    Ok(to_value(DidOpenTextDocumentParams {
        text_document: TextDocumentItem {
            uri: lsp_uri(uri)?,
            language_id: language.to_owned(),
            version: doc.version,
            text: doc.text.clone(),
        },
    }))
}

#[cfg(test)]
mod tests;
