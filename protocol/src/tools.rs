//! Tool calls: typed requests the control plane routes to one sandbox's
//! agentd (git, language servers, files, exec) and their typed results.
//!
//! A call travels as `ControlToAgent::ToolCall { request_id, timeout_ms,
//! call }`, where [`ToolCall`] is tagged by `"tool"`; the answer is
//! `AgentToControl::ToolResult { request_id, result }` with the matching
//! [`ToolOutput`], or `request_failed` with an [`ErrorCode`](crate::ErrorCode).
//! Every path is relative to agentd's work directory (an absolute path must
//! lie inside it). File content travels as UTF-8 text or base64, as
//! [`Encoding`] says. Credentials are [`Secret`]s: serialized as plain
//! strings, never shown by `Debug`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{check_len, check_str, check_strs, DecodeError};
use crate::limits::*;
use crate::terminal::ExitStatus;

/// A credential. Serialized as the plain string (it must reach agentd), but
/// `Debug` never shows it, so it cannot end up in a log line by accident.
#[derive(schemars::JsonSchema, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that hands it over.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// How file content is carried in a JSON string.
#[derive(
    schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The bytes are UTF-8 text, carried as is.
    #[default]
    Utf8,
    /// Any bytes, standard base64 with padding.
    Base64,
}

impl Encoding {
    fn is_utf8(&self) -> bool {
        *self == Encoding::Utf8
    }
}

/// HTTPS credentials for one git operation; never stored by agentd.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCredentials {
    /// Defaults to `x-access-token`, which hosts that take a token as the
    /// password accept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    pub token: Secret,
}

/// A position in a document: zero-based line and UTF-16 code unit, as in LSP.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub line: u32,
    pub character: u32,
}

/// A range in a document, end exclusive, as in LSP.
#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

/// One edit of `lsp_change`: the whole text when `range` is absent.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
    pub text: String,
}

// ---- git ----------------------------------------------------------------

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitClone {
    /// `https://…`, `http://…`, `file://…` or a local path. Must not carry a
    /// password: credentials go in `credentials`, never in a URL that git
    /// would write into `.git/config`.
    pub url: String,
    /// Where to clone to; must not exist or be an empty directory.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Shallow clone of this many commits (not over the local transport).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitFetch {
    pub repo: String,
    /// Defaults to `origin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// Defaults to the remote's configured refspecs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refspecs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitRepo {
    pub repo: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitDiff {
    pub repo: String,
    /// `false`: work tree against the index (`git diff`); `true`: index
    /// against HEAD (`git diff --cached`).
    #[serde(default)]
    pub staged: bool,
    /// Limit to these pathspecs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitLog {
    pub repo: String,
    /// Where to start; HEAD when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<String>,
    /// How many commits, newest first; 20 when absent, at most [`MAX_LOG_ENTRIES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitBranchList {
    pub repo: String,
    /// Also list remote-tracking branches.
    #[serde(default)]
    pub remotes: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitBranchCreate {
    pub repo: String,
    pub name: String,
    /// A revision; HEAD when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_point: Option<String>,
    /// Move the branch if it exists.
    #[serde(default)]
    pub force: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCheckout {
    pub repo: String,
    /// A local branch (HEAD then follows it), else any revision (detached HEAD).
    pub target: String,
    /// Throw away local changes that are in the way.
    #[serde(default)]
    pub force: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitAdd {
    pub repo: String,
    /// Pathspecs relative to the repository; `["."]` stages everything,
    /// deletions included.
    pub paths: Vec<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCommit {
    pub repo: String,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// Commit even when the index equals HEAD's tree.
    #[serde(default)]
    pub allow_empty: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitPush {
    pub repo: String,
    /// Defaults to `origin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// The local branch, pushed to the remote branch of the same name.
    pub branch: String,
    /// Overwrite the remote branch even when that loses commits.
    #[serde(default)]
    pub force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
}

// ---- LSP ----------------------------------------------------------------

/// The language server a call goes to: one per workspace directory and language.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspTarget {
    /// The workspace root, relative to agentd's work directory (`"."` for itself).
    pub workspace: String,
    /// A language of agentd's registry, e.g. `python`.
    pub language: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspOpen {
    #[serde(flatten)]
    pub target: LspTarget,
    pub path: String,
    /// The document's text; read from the file when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspChange {
    #[serde(flatten)]
    pub target: LspTarget,
    pub path: String,
    /// Applied in order; a change without a range replaces the whole text.
    pub changes: Vec<TextChange>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspDocument {
    #[serde(flatten)]
    pub target: LspTarget,
    pub path: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspDiagnosticsQuery {
    #[serde(flatten)]
    pub target: LspTarget,
    /// One document; every document with diagnostics when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspPosition {
    #[serde(flatten)]
    pub target: LspTarget,
    pub path: String,
    pub position: Position,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspReferences {
    #[serde(flatten)]
    pub target: LspTarget,
    pub path: String,
    pub position: Position,
    #[serde(default)]
    pub include_declaration: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspWorkspaceSymbols {
    #[serde(flatten)]
    pub target: LspTarget,
    pub query: String,
}

/// Any other LSP request, passed through as JSON.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspRequest {
    #[serde(flatten)]
    pub target: LspTarget,
    pub method: String,
    #[serde(default)]
    pub params: Value,
}

// ---- files --------------------------------------------------------------

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRead {
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    /// At most [`MAX_FILE_READ`] bytes (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWrite {
    pub path: String,
    /// At most [`MAX_FILE_WRITE`] bytes once decoded.
    pub content: String,
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    /// Permission bits (e.g. 493 for 0o755) set after writing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Create missing parent directories (default true).
    #[serde(default = "yes")]
    pub create_dirs: bool,
    /// Append instead of replacing.
    #[serde(default)]
    pub append: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    /// A directory; the work directory when empty.
    #[serde(default)]
    pub path: String,
    /// 1 lists the directory itself; more descends (at most [`MAX_LIST_DEPTH`]).
    #[serde(default = "one")]
    pub depth: u32,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePath {
    pub path: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMkdir {
    pub path: String,
    /// Create missing parents too, and succeed if it exists (default true).
    #[serde(default = "yes")]
    pub parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRemove {
    pub path: String,
    /// Remove a directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMove {
    pub from: String,
    pub to: String,
    /// Replace `to` if it exists.
    #[serde(default)]
    pub overwrite: bool,
}

// ---- exec ---------------------------------------------------------------

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Relative to the work directory; the work directory when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Written to the process's standard input, which is then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The process group is killed after this long (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes kept per stream, head and tail (default [`DEFAULT_EXEC_OUTPUT`],
    /// at most [`MAX_EXEC_OUTPUT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output: Option<u32>,
}

fn yes() -> bool {
    true
}

fn one() -> u32 {
    1
}

/// One typed tool call, tagged by `"tool"`.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum ToolCall {
    GitClone(GitClone),
    GitFetch(GitFetch),
    GitStatus(GitRepo),
    GitDiff(GitDiff),
    GitLog(GitLog),
    GitBranchList(GitBranchList),
    GitBranchCreate(GitBranchCreate),
    GitCheckout(GitCheckout),
    GitAdd(GitAdd),
    GitCommit(GitCommit),
    GitPush(GitPush),
    LspOpen(LspOpen),
    LspChange(LspChange),
    LspClose(LspDocument),
    LspDiagnostics(LspDiagnosticsQuery),
    LspHover(LspPosition),
    LspDefinition(LspPosition),
    LspReferences(LspReferences),
    LspCompletion(LspPosition),
    LspDocumentSymbols(LspDocument),
    LspWorkspaceSymbols(LspWorkspaceSymbols),
    LspRequest(LspRequest),
    FileRead(FileRead),
    FileWrite(FileWrite),
    FileList(FileList),
    FileStat(FilePath),
    FileMkdir(FileMkdir),
    FileRemove(FileRemove),
    FileMove(FileMove),
    Exec(Exec),
}

/// The family a tool belongs to, which sets its default timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolKind {
    Git,
    Lsp,
    File,
    Exec,
}

impl ToolCall {
    /// The tool's name as on the wire, e.g. `git_clone`.
    pub fn name(&self) -> &'static str {
        match self {
            ToolCall::GitClone(_) => "git_clone",
            ToolCall::GitFetch(_) => "git_fetch",
            ToolCall::GitStatus(_) => "git_status",
            ToolCall::GitDiff(_) => "git_diff",
            ToolCall::GitLog(_) => "git_log",
            ToolCall::GitBranchList(_) => "git_branch_list",
            ToolCall::GitBranchCreate(_) => "git_branch_create",
            ToolCall::GitCheckout(_) => "git_checkout",
            ToolCall::GitAdd(_) => "git_add",
            ToolCall::GitCommit(_) => "git_commit",
            ToolCall::GitPush(_) => "git_push",
            ToolCall::LspOpen(_) => "lsp_open",
            ToolCall::LspChange(_) => "lsp_change",
            ToolCall::LspClose(_) => "lsp_close",
            ToolCall::LspDiagnostics(_) => "lsp_diagnostics",
            ToolCall::LspHover(_) => "lsp_hover",
            ToolCall::LspDefinition(_) => "lsp_definition",
            ToolCall::LspReferences(_) => "lsp_references",
            ToolCall::LspCompletion(_) => "lsp_completion",
            ToolCall::LspDocumentSymbols(_) => "lsp_document_symbols",
            ToolCall::LspWorkspaceSymbols(_) => "lsp_workspace_symbols",
            ToolCall::LspRequest(_) => "lsp_request",
            ToolCall::FileRead(_) => "file_read",
            ToolCall::FileWrite(_) => "file_write",
            ToolCall::FileList(_) => "file_list",
            ToolCall::FileStat(_) => "file_stat",
            ToolCall::FileMkdir(_) => "file_mkdir",
            ToolCall::FileRemove(_) => "file_remove",
            ToolCall::FileMove(_) => "file_move",
            ToolCall::Exec(_) => "exec",
        }
    }

    pub fn kind(&self) -> ToolKind {
        let name = self.name();
        if name.starts_with("git_") {
            ToolKind::Git
        } else if name.starts_with("lsp_") {
            ToolKind::Lsp
        } else if name.starts_with("file_") {
            ToolKind::File
        } else {
            ToolKind::Exec
        }
    }

    /// How long agentd lets the call run when the request names no timeout.
    pub fn default_timeout_ms(&self) -> u64 {
        match self {
            ToolCall::Exec(exec) => exec
                .timeout_ms
                .unwrap_or(DEFAULT_EXEC_TIMEOUT_MS)
                .saturating_add(EXEC_TIMEOUT_SLACK_MS),
            _ => match self.kind() {
                ToolKind::Git => DEFAULT_GIT_TIMEOUT_MS,
                ToolKind::Lsp => DEFAULT_LSP_TIMEOUT_MS,
                ToolKind::File | ToolKind::Exec => DEFAULT_FILE_TIMEOUT_MS,
            },
        }
    }

    pub(crate) fn validate(&self) -> Result<(), DecodeError> {
        let path = |field: &'static str, value: &str| check_path(field, value);
        let opt = |field: &'static str, value: &Option<String>| match value {
            Some(value) => check_str(field, value, MAX_STRING_LEN),
            None => Ok(()),
        };
        match self {
            ToolCall::GitClone(c) => {
                check_str("url", &c.url, MAX_STRING_LEN)?;
                path("path", &c.path)?;
                opt("branch", &c.branch)?;
                check_credentials(&c.credentials)
            }
            ToolCall::GitFetch(c) => {
                path("repo", &c.repo)?;
                opt("remote", &c.remote)?;
                check_strs("refspecs", c.refspecs.iter(), MAX_ARGS, MAX_STRING_LEN)?;
                check_credentials(&c.credentials)
            }
            ToolCall::GitStatus(c) => path("repo", &c.repo),
            ToolCall::GitDiff(c) => {
                path("repo", &c.repo)?;
                check_strs("paths", c.paths.iter(), MAX_ARGS, MAX_STRING_LEN)
            }
            ToolCall::GitLog(c) => {
                path("repo", &c.repo)?;
                opt("rev", &c.rev)
            }
            ToolCall::GitBranchList(c) => path("repo", &c.repo),
            ToolCall::GitBranchCreate(c) => {
                path("repo", &c.repo)?;
                check_str("name", &c.name, MAX_STRING_LEN)?;
                opt("start_point", &c.start_point)
            }
            ToolCall::GitCheckout(c) => {
                path("repo", &c.repo)?;
                check_str("target", &c.target, MAX_STRING_LEN)
            }
            ToolCall::GitAdd(c) => {
                path("repo", &c.repo)?;
                check_strs("paths", c.paths.iter(), MAX_ARGS, MAX_STRING_LEN)
            }
            ToolCall::GitCommit(c) => {
                path("repo", &c.repo)?;
                check_str("message", &c.message, MAX_TEXT_LEN)?;
                check_str("author_name", &c.author_name, MAX_STRING_LEN)?;
                check_str("author_email", &c.author_email, MAX_STRING_LEN)
            }
            ToolCall::GitPush(c) => {
                path("repo", &c.repo)?;
                opt("remote", &c.remote)?;
                check_str("branch", &c.branch, MAX_STRING_LEN)?;
                check_credentials(&c.credentials)
            }
            ToolCall::LspOpen(c) => {
                c.target.validate()?;
                path("path", &c.path)?;
                match &c.text {
                    Some(text) => check_str("text", text, MAX_TEXT_LEN),
                    None => Ok(()),
                }
            }
            ToolCall::LspChange(c) => {
                c.target.validate()?;
                path("path", &c.path)?;
                check_len("changes", c.changes.len(), MAX_ARGS)?;
                let total: usize = c.changes.iter().map(|change| change.text.len()).sum();
                check_len("changes", total, MAX_TEXT_LEN)
            }
            ToolCall::LspClose(c) | ToolCall::LspDocumentSymbols(c) => {
                c.target.validate()?;
                path("path", &c.path)
            }
            ToolCall::LspDiagnostics(c) => {
                c.target.validate()?;
                match &c.path {
                    Some(p) => path("path", p),
                    None => Ok(()),
                }
            }
            ToolCall::LspHover(c) | ToolCall::LspDefinition(c) | ToolCall::LspCompletion(c) => {
                c.target.validate()?;
                path("path", &c.path)
            }
            ToolCall::LspReferences(c) => {
                c.target.validate()?;
                path("path", &c.path)
            }
            ToolCall::LspWorkspaceSymbols(c) => {
                c.target.validate()?;
                check_str("query", &c.query, MAX_STRING_LEN)
            }
            ToolCall::LspRequest(c) => {
                c.target.validate()?;
                check_str("method", &c.method, MAX_NAME_LEN)
            }
            ToolCall::FileRead(c) => path("path", &c.path),
            ToolCall::FileWrite(c) => {
                path("path", &c.path)?;
                let limit = match c.encoding {
                    Encoding::Utf8 => MAX_FILE_WRITE,
                    Encoding::Base64 => MAX_FILE_WRITE.div_ceil(3) * 4,
                };
                check_str("content", &c.content, limit)
            }
            ToolCall::FileList(c) => path("path", &c.path),
            ToolCall::FileStat(c) => path("path", &c.path),
            ToolCall::FileMkdir(c) => path("path", &c.path),
            ToolCall::FileRemove(c) => path("path", &c.path),
            ToolCall::FileMove(c) => {
                path("from", &c.from)?;
                path("to", &c.to)
            }
            ToolCall::Exec(c) => {
                check_str("command", &c.command, MAX_STRING_LEN)?;
                check_strs("args", c.args.iter(), MAX_ARGS, MAX_STRING_LEN)?;
                opt("cwd", &c.cwd)?;
                crate::messages::check_env(&c.env)?;
                if let Some(stdin) = &c.stdin {
                    check_str("stdin", stdin, MAX_TEXT_LEN)?;
                }
                if let Some(max) = c.max_output {
                    check_len("max_output", max as usize, MAX_EXEC_OUTPUT)?;
                }
                Ok(())
            }
        }
    }
}

impl LspTarget {
    fn validate(&self) -> Result<(), DecodeError> {
        check_path("workspace", &self.workspace)?;
        check_str("language", &self.language, MAX_NAME_LEN)
    }
}

fn check_path(field: &'static str, path: &str) -> Result<(), DecodeError> {
    check_str(field, path, MAX_STRING_LEN)?;
    if path.contains('\0') {
        return Err(DecodeError::Invalid {
            field,
            reason: "paths must not contain NUL",
        });
    }
    Ok(())
}

fn check_credentials(credentials: &Option<GitCredentials>) -> Result<(), DecodeError> {
    if let Some(credentials) = credentials {
        if let Some(username) = &credentials.username {
            check_str("username", username, MAX_NAME_LEN)?;
        }
        check_str("token", credentials.token.expose(), MAX_STRING_LEN)?;
    }
    Ok(())
}

// ---- results ------------------------------------------------------------

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCloned {
    /// The clone's path, relative to the work directory.
    pub path: String,
    /// The commit HEAD points at; absent for an empty repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitFetched {
    pub received_objects: u64,
    pub received_bytes: u64,
}

/// One line of `git status --porcelain`: `index` and `worktree` are its X
/// and Y letters (`M`, `A`, `D`, `R`, `T`, `U`, `?`, `!` or a space).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    pub path: String,
    /// The path before a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orig_path: Option<String>,
    pub index: String,
    pub worktree: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitStatusOutput {
    /// The checked-out branch; absent when HEAD is detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// HEAD's commit; absent before the first commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    pub entries: Vec<StatusEntry>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitDiffOutput {
    /// Unified diff text, as `git diff` prints it.
    pub diff: String,
    /// The diff was longer than [`MAX_TOOL_TEXT`] and was cut there.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub id: String,
    pub author_name: String,
    pub author_email: String,
    /// Author time, seconds since the epoch.
    pub time: i64,
    pub message: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitLogOutput {
    pub commits: Vec<CommitInfo>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchInfo {
    /// `main` for a local branch, `origin/main` for a remote-tracking one.
    pub name: String,
    #[serde(default)]
    pub remote: bool,
    /// HEAD is on this branch.
    #[serde(default)]
    pub head: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitBranches {
    pub branches: Vec<BranchInfo>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCheckedOut {
    /// Absent when HEAD is now detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub head: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitAdded {
    /// Entries in the index afterwards.
    pub index_entries: u64,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitCommitted {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitPushed {
    /// The remote ref updated, e.g. `refs/heads/main`.
    pub remote_ref: String,
    /// The commit it now points at.
    pub id: String,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspOpened {
    pub uri: String,
    pub version: i32,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspClosed {
    pub uri: String,
}

/// The diagnostics a server last published for one document.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentDiagnostics {
    pub uri: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i32>,
    /// LSP `Diagnostic` objects, as the server sent them.
    pub diagnostics: Vec<Value>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspDiagnosticsOutput {
    pub documents: Vec<DocumentDiagnostics>,
}

/// A language server's answer, as the LSP JSON it sent (`null` included).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LspResponse {
    pub response: Value,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileContent {
    pub content: String,
    /// UTF-8 when the range is valid UTF-8 text, else base64.
    #[serde(default, skip_serializing_if = "Encoding::is_utf8")]
    pub encoding: Encoding,
    pub offset: u64,
    /// Bytes returned.
    pub len: u64,
    /// The file's size.
    pub size: u64,
    /// The range reached the end of the file.
    pub eof: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Relative to the work directory.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Last modification, milliseconds since the epoch.
    pub modified_ms: i64,
    /// Where a symlink points, as written in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileListing {
    pub entries: Vec<FileInfo>,
    /// More than [`MAX_LIST_ENTRIES`] entries; the rest were left out.
    #[serde(default)]
    pub truncated: bool,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileWritten {
    pub path: String,
    /// The file's size afterwards.
    pub size: u64,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDone {
    pub path: String,
}

/// One captured stream of an exec'd process.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturedOutput {
    /// The output (lossy UTF-8). When truncated, the head and the tail with
    /// a line `[... N bytes omitted ...]` between them.
    pub text: String,
    /// Bytes the process wrote.
    pub total_bytes: u64,
    /// Bytes left out of `text`; 0 when complete.
    #[serde(default)]
    pub omitted_bytes: u64,
}

#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub status: ExitStatus,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
    /// Killed (with its process group) at the timeout.
    #[serde(default)]
    pub timed_out: bool,
    pub duration_ms: u64,
}

/// One typed result per tool, tagged by `"tool"` like the call.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "tool", rename_all = "snake_case")]
pub enum ToolOutput {
    GitClone(GitCloned),
    GitFetch(GitFetched),
    GitStatus(GitStatusOutput),
    GitDiff(GitDiffOutput),
    GitLog(GitLogOutput),
    GitBranchList(GitBranches),
    GitBranchCreate(BranchInfo),
    GitCheckout(GitCheckedOut),
    GitAdd(GitAdded),
    GitCommit(GitCommitted),
    GitPush(GitPushed),
    LspOpen(LspOpened),
    LspChange(LspOpened),
    LspClose(LspClosed),
    LspDiagnostics(LspDiagnosticsOutput),
    LspHover(LspResponse),
    LspDefinition(LspResponse),
    LspReferences(LspResponse),
    LspCompletion(LspResponse),
    LspDocumentSymbols(LspResponse),
    LspWorkspaceSymbols(LspResponse),
    LspRequest(LspResponse),
    FileRead(FileContent),
    FileWrite(FileWritten),
    FileList(FileListing),
    FileStat(FileInfo),
    FileMkdir(FileDone),
    FileRemove(FileDone),
    FileMove(FileDone),
    Exec(ExecOutput),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug_but_sent_in_json() {
        let credentials = GitCredentials {
            username: None,
            token: Secret::new("hunter2"),
        };
        assert!(!format!("{credentials:?}").contains("hunter2"));
        assert_eq!(
            serde_json::to_string(&credentials).unwrap(),
            r#"{"token":"hunter2"}"#
        );
    }
}
