//! Git tools on git2 (libgit2), never the `git` program: clone, fetch,
//! status, diff, log, branches, checkout, add, commit and push.
//!
//! Credentials arrive with each request and reach libgit2 only through the
//! credentials callback, so they live in memory for one operation and are
//! never written to `.git/config`, a credential helper or a log line. A URL
//! carrying a password is refused for the same reason. Auth failures come
//! back as `auth_failed`, a push that would lose remote commits as
//! `non_fast_forward`. Everything here blocks; it runs on `spawn_blocking`
//! and checks `abort` in the transfer callbacks.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use git2::build::{CheckoutBuilder, RepoBuilder};
use git2::{
    BranchType, Cred, CredentialType, Diff, DiffFormat, DiffOptions, FetchOptions, IndexAddOption,
    PushOptions, RemoteCallbacks, Repository, Signature, Status, StatusOptions,
};
use paddock_protocol::tools::{
    BranchInfo, CommitInfo, GitAdd, GitAdded, GitBranchCreate, GitBranchList, GitBranches,
    GitCheckedOut, GitCheckout, GitClone, GitCloned, GitCommit, GitCommitted, GitCredentials,
    GitDiff, GitDiffOutput, GitFetch, GitFetched, GitLog, GitLogOutput, GitPush, GitPushed,
    GitStatusOutput, StatusEntry, ToolCall, ToolOutput,
};
use paddock_protocol::{ErrorCode, MAX_LOG_ENTRIES, MAX_TOOL_TEXT};
use tracing::debug;

use crate::files::{Follow, Workspace};
use crate::tools::ToolError;

const DEFAULT_REMOTE: &str = "origin";
const DEFAULT_USERNAME: &str = "x-access-token";
const DEFAULT_LOG_ENTRIES: u32 = 20;

/// Runs one git call.
pub(crate) fn call(
    workspace: &Workspace,
    call: ToolCall,
    abort: &AtomicBool,
) -> Result<ToolOutput, ToolError> {
    Ok(match call {
        ToolCall::GitClone(req) => ToolOutput::GitClone(clone(workspace, &req, abort)?),
        ToolCall::GitFetch(req) => ToolOutput::GitFetch(fetch(workspace, &req, abort)?),
        ToolCall::GitStatus(req) => ToolOutput::GitStatus(status(&open(workspace, &req.repo)?)?),
        ToolCall::GitDiff(req) => ToolOutput::GitDiff(diff(workspace, &req)?),
        ToolCall::GitLog(req) => ToolOutput::GitLog(log(workspace, &req)?),
        ToolCall::GitBranchList(req) => ToolOutput::GitBranchList(branch_list(workspace, &req)?),
        ToolCall::GitBranchCreate(req) => {
            ToolOutput::GitBranchCreate(branch_create(workspace, &req)?)
        }
        ToolCall::GitCheckout(req) => ToolOutput::GitCheckout(checkout(workspace, &req)?),
        ToolCall::GitAdd(req) => ToolOutput::GitAdd(add(workspace, &req)?),
        ToolCall::GitCommit(req) => ToolOutput::GitCommit(commit(workspace, &req)?),
        ToolCall::GitPush(req) => ToolOutput::GitPush(push(workspace, &req, abort)?),
        other => {
            return Err(ToolError::new(
                ErrorCode::Internal,
                format!("{} is not a git tool", other.name()),
            ))
        }
    })
}

/// A git2 error as a tool error, for errors that are not about a remote.
fn failed(what: &str, err: git2::Error) -> ToolError {
    let code = match err.code() {
        git2::ErrorCode::NotFound => ErrorCode::NotFound,
        git2::ErrorCode::Exists => ErrorCode::Conflict,
        git2::ErrorCode::Conflict | git2::ErrorCode::Locked => ErrorCode::Conflict,
        git2::ErrorCode::NotFastForward => ErrorCode::NonFastForward,
        git2::ErrorCode::Auth => ErrorCode::AuthFailed,
        git2::ErrorCode::InvalidSpec => ErrorCode::BadRequest,
        _ => ErrorCode::ToolFailed,
    };
    ToolError::new(code, format!("{what}: {}", err.message()))
}

fn open(workspace: &Workspace, repo: &str) -> Result<Repository, ToolError> {
    let path = workspace.resolve(repo, Follow::Yes)?;
    Repository::open(&path).map_err(|err| {
        ToolError::new(
            ErrorCode::NotFound,
            format!("{repo:?} is not a git repository: {}", err.message()),
        )
    })
}

/// What happened in the credentials callback during one remote operation.
#[derive(Default)]
struct AuthState {
    /// Times libgit2 asked for credentials.
    asked: Cell<u32>,
    /// It asked and the request had none.
    missing: Cell<bool>,
    /// It asked again after getting them: the remote refused them.
    refused: Cell<bool>,
    /// It wanted a kind of credential other than a username and token.
    unsupported: Cell<bool>,
}

/// Callbacks handing over `credentials` once, and aborting when `abort` is set.
fn callbacks<'a>(
    credentials: Option<&'a GitCredentials>,
    auth: &'a AuthState,
    abort: &'a AtomicBool,
) -> RemoteCallbacks<'a> {
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |_url, _username, allowed| {
        auth.asked.set(auth.asked.get() + 1);
        let Some(credentials) = credentials else {
            auth.missing.set(true);
            return Err(git2::Error::from_str("the remote asks for credentials"));
        };
        if auth.asked.get() > 1 {
            auth.refused.set(true);
            return Err(git2::Error::from_str("the remote refused the credentials"));
        }
        if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            auth.unsupported.set(true);
            return Err(git2::Error::from_str(
                "the remote wants a kind of credentials other than a token",
            ));
        }
        let username = credentials.username.as_deref().unwrap_or(DEFAULT_USERNAME);
        Cred::userpass_plaintext(username, credentials.token.expose())
    });
    callbacks.transfer_progress(move |_| !abort.load(Ordering::Relaxed));
    callbacks.sideband_progress(move |_| !abort.load(Ordering::Relaxed));
    callbacks.push_negotiation(move |_| {
        if abort.load(Ordering::Relaxed) {
            Err(git2::Error::from_str("cancelled"))
        } else {
            Ok(())
        }
    });
    callbacks
}

/// A git2 error from a remote operation, classified with what the
/// callbacks saw.
fn remote_failed(
    what: &str,
    url: &str,
    err: git2::Error,
    auth: &AuthState,
    abort: &AtomicBool,
) -> ToolError {
    if auth.missing.get() {
        return ToolError::new(
            ErrorCode::AuthFailed,
            format!("{what}: {url} needs credentials and the request has none"),
        );
    }
    if auth.refused.get() || err.code() == git2::ErrorCode::Auth {
        return ToolError::new(
            ErrorCode::AuthFailed,
            format!("{what}: authentication to {url} failed: the credentials were refused"),
        );
    }
    if auth.unsupported.get() {
        return ToolError::new(
            ErrorCode::AuthFailed,
            format!("{what}: {url} wants credentials other than a username and token (use https)"),
        );
    }
    if abort.load(Ordering::Relaxed) {
        return ToolError::new(ErrorCode::Cancelled, format!("{what}: cancelled"));
    }
    failed(&format!("{what} ({url})"), err)
}

/// Refuses a URL with a password in it: git would store it in `.git/config`.
fn check_url(url: &str) -> Result<(), ToolError> {
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return Err(ToolError::bad_request(
                    "the URL carries a password; pass the token in `credentials` instead, \
                     so it is never written to disk",
                ));
            }
        }
    }
    Ok(())
}

fn head_info(repo: &Repository) -> (Option<String>, Option<String>) {
    match repo.head() {
        Ok(head) => (
            head.is_branch()
                .then(|| head.shorthand().map(str::to_owned))
                .flatten(),
            head.target().map(|oid| oid.to_string()),
        ),
        // Unborn: HEAD names a branch that has no commit yet.
        Err(_) => {
            let branch = repo
                .find_reference("HEAD")
                .ok()
                .and_then(|r| r.symbolic_target().map(str::to_owned))
                .map(|t| t.trim_start_matches("refs/heads/").to_owned());
            (branch, None)
        }
    }
}

fn clone(
    workspace: &Workspace,
    req: &GitClone,
    abort: &AtomicBool,
) -> Result<GitCloned, ToolError> {
    check_url(&req.url)?;
    let dest = workspace.resolve(&req.path, Follow::Yes)?;
    if let Ok(mut entries) = std::fs::read_dir(&dest) {
        if entries.next().is_some() {
            return Err(ToolError::new(
                ErrorCode::Conflict,
                format!("{:?} exists and is not empty", req.path),
            ));
        }
    } else if dest.exists() {
        return Err(ToolError::new(
            ErrorCode::Conflict,
            format!("{:?} exists and is not a directory", req.path),
        ));
    }
    // A relative local path is relative to the work directory, like every tool path.
    let url = if req.url.contains("://") || Path::new(&req.url).is_absolute() {
        req.url.clone()
    } else {
        workspace
            .resolve(&req.url, Follow::Yes)?
            .display()
            .to_string()
    };
    let auth = AuthState::default();
    let mut fetch = FetchOptions::new();
    fetch.remote_callbacks(callbacks(req.credentials.as_ref(), &auth, abort));
    if let Some(depth) = req.depth {
        fetch.depth(depth.min(i32::MAX as u32) as i32);
    }
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch);
    if let Some(branch) = &req.branch {
        builder.branch(branch);
    }
    debug!(url = %req.url, path = %dest.display(), "git clone");
    let repo = builder
        .clone(&url, &dest)
        .map_err(|err| remote_failed("clone", &req.url, err, &auth, abort))?;
    let (branch, head) = head_info(&repo);
    Ok(GitCloned {
        path: workspace.relative(&dest),
        head,
        branch,
    })
}

fn fetch(
    workspace: &Workspace,
    req: &GitFetch,
    abort: &AtomicBool,
) -> Result<GitFetched, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let name = req.remote.as_deref().unwrap_or(DEFAULT_REMOTE);
    let mut remote = repo
        .find_remote(name)
        .map_err(|err| failed(&format!("no remote {name:?}"), err))?;
    let url = remote.url().unwrap_or(name).to_owned();
    let auth = AuthState::default();
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks(req.credentials.as_ref(), &auth, abort));
    if let Some(depth) = req.depth {
        options.depth(depth.min(i32::MAX as u32) as i32);
    }
    let refspecs: Vec<&str> = req.refspecs.iter().map(String::as_str).collect();
    remote
        .fetch(&refspecs, Some(&mut options), None)
        .map_err(|err| remote_failed("fetch", &url, err, &auth, abort))?;
    let stats = remote.stats();
    Ok(GitFetched {
        received_objects: stats.received_objects() as u64,
        received_bytes: stats.received_bytes() as u64,
    })
}

/// The X (index) and Y (work tree) letters of `git status --porcelain`.
fn porcelain(status: Status) -> (char, char) {
    if status.is_wt_new() && !status.intersects(index_bits()) {
        return ('?', '?');
    }
    if status.is_ignored() {
        return ('!', '!');
    }
    if status.is_conflicted() {
        return ('U', 'U');
    }
    let x = if status.is_index_new() {
        'A'
    } else if status.is_index_modified() {
        'M'
    } else if status.is_index_deleted() {
        'D'
    } else if status.is_index_renamed() {
        'R'
    } else if status.is_index_typechange() {
        'T'
    } else {
        ' '
    };
    let y = if status.is_wt_modified() {
        'M'
    } else if status.is_wt_deleted() {
        'D'
    } else if status.is_wt_renamed() {
        'R'
    } else if status.is_wt_typechange() {
        'T'
    } else {
        ' '
    };
    (x, y)
}

fn index_bits() -> Status {
    Status::INDEX_NEW
        | Status::INDEX_MODIFIED
        | Status::INDEX_DELETED
        | Status::INDEX_RENAMED
        | Status::INDEX_TYPECHANGE
}

fn status(repo: &Repository) -> Result<GitStatusOutput, ToolError> {
    let mut options = StatusOptions::new();
    options
        .include_untracked(true)
        .renames_head_to_index(true)
        .include_ignored(false);
    let statuses = repo
        .statuses(Some(&mut options))
        .map_err(|err| failed("status", err))?;
    let entries = statuses
        .iter()
        .map(|entry| {
            let (x, y) = porcelain(entry.status());
            let renamed = entry
                .head_to_index()
                .filter(|_| entry.status().is_index_renamed());
            let (path, orig_path) = match renamed {
                Some(delta) => (
                    delta.new_file().path().map(|p| p.display().to_string()),
                    delta.old_file().path().map(|p| p.display().to_string()),
                ),
                None => (
                    Some(String::from_utf8_lossy(entry.path_bytes()).into_owned()),
                    None,
                ),
            };
            StatusEntry {
                path: path.unwrap_or_default(),
                orig_path,
                index: x.to_string(),
                worktree: y.to_string(),
            }
        })
        .collect();
    let (branch, head) = head_info(repo);
    Ok(GitStatusOutput {
        branch,
        head,
        entries,
    })
}

fn diff(workspace: &Workspace, req: &GitDiff) -> Result<GitDiffOutput, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let mut options = DiffOptions::new();
    for path in &req.paths {
        options.pathspec(path);
    }
    let diff: Diff = if req.staged {
        let head = match repo.head() {
            Ok(head) => Some(head.peel_to_tree().map_err(|err| failed("diff", err))?),
            Err(_) => None,
        };
        repo.diff_tree_to_index(head.as_ref(), None, Some(&mut options))
    } else {
        repo.diff_index_to_workdir(None, Some(&mut options))
    }
    .map_err(|err| failed("diff", err))?;
    let mut text = Vec::new();
    let mut truncated = false;
    let printed = diff.print(DiffFormat::Patch, |_delta, _hunk, line| {
        let origin = line.origin();
        let extra = usize::from(matches!(origin, '+' | '-' | ' '));
        if text.len() + extra + line.content().len() > MAX_TOOL_TEXT {
            truncated = true;
            return false;
        }
        if extra == 1 {
            text.push(origin as u8);
        }
        text.extend_from_slice(line.content());
        true
    });
    if let Err(err) = printed {
        if !truncated {
            return Err(failed("diff", err));
        }
    }
    Ok(GitDiffOutput {
        diff: String::from_utf8_lossy(&text).into_owned(),
        truncated,
    })
}

fn log(workspace: &Workspace, req: &GitLog) -> Result<GitLogOutput, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let max = req
        .max_count
        .unwrap_or(DEFAULT_LOG_ENTRIES)
        .min(MAX_LOG_ENTRIES) as usize;
    let start = repo
        .revparse_single(req.rev.as_deref().unwrap_or("HEAD"))
        .and_then(|obj| obj.peel_to_commit())
        .map_err(|err| failed("log", err))?;
    let mut walk = repo.revwalk().map_err(|err| failed("log", err))?;
    walk.push(start.id()).map_err(|err| failed("log", err))?;
    walk.set_sorting(git2::Sort::TIME)
        .map_err(|err| failed("log", err))?;
    let mut commits = Vec::new();
    for oid in walk.take(max) {
        let oid = oid.map_err(|err| failed("log", err))?;
        let commit = repo.find_commit(oid).map_err(|err| failed("log", err))?;
        let author = commit.author();
        commits.push(CommitInfo {
            id: oid.to_string(),
            author_name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            author_email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            time: author.when().seconds(),
            message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
        });
    }
    Ok(GitLogOutput { commits })
}

fn branch_info(branch: &git2::Branch<'_>, remote: bool) -> BranchInfo {
    BranchInfo {
        name: branch.name().ok().flatten().unwrap_or_default().to_owned(),
        remote,
        head: branch.is_head(),
        target: branch.get().target().map(|oid| oid.to_string()),
        upstream: branch
            .upstream()
            .ok()
            .and_then(|up| up.name().ok().flatten().map(str::to_owned)),
    }
}

fn branch_list(workspace: &Workspace, req: &GitBranchList) -> Result<GitBranches, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let filter = if req.remotes {
        None
    } else {
        Some(BranchType::Local)
    };
    let mut branches = Vec::new();
    for item in repo
        .branches(filter)
        .map_err(|err| failed("branch list", err))?
    {
        let (branch, kind) = item.map_err(|err| failed("branch list", err))?;
        branches.push(branch_info(&branch, kind == BranchType::Remote));
    }
    Ok(GitBranches { branches })
}

fn branch_create(workspace: &Workspace, req: &GitBranchCreate) -> Result<BranchInfo, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let start = req.start_point.as_deref().unwrap_or("HEAD");
    let commit = repo
        .revparse_single(start)
        .and_then(|obj| obj.peel_to_commit())
        .map_err(|err| failed(&format!("no commit {start:?}"), err))?;
    let branch = repo
        .branch(&req.name, &commit, req.force)
        .map_err(|err| failed(&format!("could not create branch {:?}", req.name), err))?;
    Ok(branch_info(&branch, false))
}

fn checkout(workspace: &Workspace, req: &GitCheckout) -> Result<GitCheckedOut, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let mut builder = CheckoutBuilder::new();
    if req.force {
        builder.force();
    } else {
        builder.safe();
    }
    let what = format!("checkout {:?}", req.target);
    // A local branch, else a remote one of the same name (creating a local
    // branch that tracks it, as `git checkout NAME` does), else a revision.
    let local = match repo.find_branch(&req.target, BranchType::Local) {
        Ok(branch) => Some(branch),
        Err(_) => {
            let remote_name = format!("{DEFAULT_REMOTE}/{}", req.target);
            match repo.find_branch(&remote_name, BranchType::Remote) {
                Ok(remote) => {
                    let commit = remote
                        .get()
                        .peel_to_commit()
                        .map_err(|e| failed(&what, e))?;
                    let mut branch = repo
                        .branch(&req.target, &commit, false)
                        .map_err(|e| failed(&what, e))?;
                    branch
                        .set_upstream(Some(&remote_name))
                        .map_err(|e| failed(&what, e))?;
                    Some(branch)
                }
                Err(_) => None,
            }
        }
    };
    match local {
        Some(branch) => {
            let refname = branch
                .get()
                .name()
                .ok_or_else(|| ToolError::failed("branch name is not UTF-8"))?
                .to_owned();
            let commit = branch
                .get()
                .peel_to_commit()
                .map_err(|e| failed(&what, e))?;
            repo.checkout_tree(commit.as_object(), Some(&mut builder))
                .map_err(|e| failed(&what, e))?;
            repo.set_head(&refname).map_err(|e| failed(&what, e))?;
            Ok(GitCheckedOut {
                branch: Some(req.target.clone()),
                head: commit.id().to_string(),
            })
        }
        None => {
            let commit = repo
                .revparse_single(&req.target)
                .and_then(|obj| obj.peel_to_commit())
                .map_err(|e| failed(&what, e))?;
            repo.checkout_tree(commit.as_object(), Some(&mut builder))
                .map_err(|e| failed(&what, e))?;
            repo.set_head_detached(commit.id())
                .map_err(|e| failed(&what, e))?;
            Ok(GitCheckedOut {
                branch: None,
                head: commit.id().to_string(),
            })
        }
    }
}

fn add(workspace: &Workspace, req: &GitAdd) -> Result<GitAdded, ToolError> {
    if req.paths.is_empty() {
        return Err(ToolError::bad_request(
            "no paths to add; use [\".\"] for everything",
        ));
    }
    let repo = open(workspace, &req.repo)?;
    let mut index = repo.index().map_err(|err| failed("add", err))?;
    index
        .add_all(req.paths.iter(), IndexAddOption::DEFAULT, None)
        .map_err(|err| failed("add", err))?;
    // Stages deletions of tracked files too, as `git add` does.
    index
        .update_all(req.paths.iter(), None)
        .map_err(|err| failed("add", err))?;
    index.write().map_err(|err| failed("add", err))?;
    Ok(GitAdded {
        index_entries: index.len() as u64,
    })
}

fn commit(workspace: &Workspace, req: &GitCommit) -> Result<GitCommitted, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let signature = Signature::now(&req.author_name, &req.author_email)
        .map_err(|err| ToolError::bad_request(format!("bad author: {}", err.message())))?;
    let mut index = repo.index().map_err(|err| failed("commit", err))?;
    let tree_id = index.write_tree().map_err(|err| failed("commit", err))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(|err| failed("commit", err))?;
    let parent = match repo.head() {
        Ok(head) => Some(head.peel_to_commit().map_err(|err| failed("commit", err))?),
        Err(_) => None,
    };
    let unchanged = match &parent {
        Some(parent) => parent.tree_id() == tree_id,
        None => tree.is_empty(),
    };
    if unchanged && !req.allow_empty {
        return Err(ToolError::new(
            ErrorCode::Conflict,
            "nothing to commit: the index matches HEAD (git_add first, or allow_empty)",
        ));
    }
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo
        .commit(
            Some("HEAD"),
            &signature,
            &signature,
            &req.message,
            &tree,
            &parents,
        )
        .map_err(|err| failed("commit", err))?;
    let (branch, _) = head_info(&repo);
    Ok(GitCommitted {
        id: id.to_string(),
        branch,
    })
}

/// Whether a remote's refusal of a ref is about losing its commits.
fn is_non_fast_forward(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    [
        "non-fast-forward",
        "fetch first",
        "not a fast forward",
        "stale info",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

fn push(workspace: &Workspace, req: &GitPush, abort: &AtomicBool) -> Result<GitPushed, ToolError> {
    let repo = open(workspace, &req.repo)?;
    let name = req.remote.as_deref().unwrap_or(DEFAULT_REMOTE);
    let mut remote = repo
        .find_remote(name)
        .map_err(|err| failed(&format!("no remote {name:?}"), err))?;
    let url = remote.url().unwrap_or(name).to_owned();
    let branch = repo
        .find_branch(&req.branch, BranchType::Local)
        .map_err(|err| failed(&format!("no local branch {:?}", req.branch), err))?;
    let id = branch
        .get()
        .target()
        .ok_or_else(|| ToolError::failed(format!("branch {:?} has no commit", req.branch)))?;
    let refname = format!("refs/heads/{}", req.branch);
    let refspec = format!("{}{refname}:{refname}", if req.force { "+" } else { "" });

    let auth = AuthState::default();
    let rejected: RefCell<Option<String>> = RefCell::new(None);
    let mut callbacks = callbacks(req.credentials.as_ref(), &auth, abort);
    callbacks.push_update_reference(|_refname, status| {
        if let Some(status) = status {
            *rejected.borrow_mut() = Some(status.to_owned());
        }
        Ok(())
    });
    let mut options = PushOptions::new();
    options.remote_callbacks(callbacks);
    let pushed = remote.push(&[refspec.as_str()], Some(&mut options));
    drop(options);
    let non_ff = || {
        ToolError::new(
            ErrorCode::NonFastForward,
            format!(
                "push refused: the remote's {} has commits this branch lacks; \
                 fetch and merge or rebase, or push with force",
                req.branch
            ),
        )
    };
    match pushed {
        Err(err) if err.code() == git2::ErrorCode::NotFastForward => return Err(non_ff()),
        Err(err) => return Err(remote_failed("push", &url, err, &auth, abort)),
        Ok(()) => {}
    }
    if let Some(status) = rejected.into_inner() {
        if is_non_fast_forward(&status) {
            return Err(non_ff());
        }
        return Err(ToolError::failed(format!(
            "the remote refused {refname}: {status}"
        )));
    }
    Ok(GitPushed {
        remote_ref: refname,
        id: id.to_string(),
    })
}

#[cfg(test)]
mod test_http;
#[cfg(test)]
mod tests;
