//! Git tools against real repositories: a bare repository as the remote,
//! checked with the `git` program, and a smart-HTTP server with basic auth.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use paddock_protocol::tools::*;
use paddock_protocol::{AgentToControl, ControlToAgent, ErrorCode, RequestId};
use tokio::sync::mpsc;

use super::test_http::GitHttpServer;
use crate::connection::{OutFrame, Outbound};
use crate::test_support::{capture_logs, git, logs, TestTools};
use crate::tools::ToolError;

/// A bare repository `remote.git` under `base` holding one commit on `main`.
fn seeded_remote(base: &Path) -> PathBuf {
    git(base, &["init", "--bare", "-q", "-b", "main", "remote.git"]);
    git(base, &["init", "-q", "-b", "main", "seed"]);
    let seed = base.join("seed");
    fs::write(seed.join("README.md"), "hello\n").unwrap();
    fs::create_dir(seed.join("src")).unwrap();
    fs::write(seed.join("src/lib.rs"), "pub fn one() -> u32 {\n    1\n}\n").unwrap();
    fs::write(seed.join("old.txt"), "to be removed\n").unwrap();
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(&seed, &["push", "-q", "../remote.git", "main"]);
    base.join("remote.git")
}

fn clone_call(url: &str, path: &str) -> ToolCall {
    ToolCall::GitClone(GitClone {
        url: url.to_owned(),
        path: path.to_owned(),
        branch: None,
        depth: None,
        credentials: None,
    })
}

fn commit_call(repo: &str, message: &str, name: &str) -> ToolCall {
    ToolCall::GitCommit(GitCommit {
        repo: repo.to_owned(),
        message: message.to_owned(),
        author_name: name.to_owned(),
        author_email: format!("{}@example.com", name.to_lowercase()),
        allow_empty: false,
    })
}

fn add_all(repo: &str) -> ToolCall {
    ToolCall::GitAdd(GitAdd {
        repo: repo.to_owned(),
        paths: vec![".".to_owned()],
    })
}

fn push_call(repo: &str, force: bool, credentials: Option<GitCredentials>) -> ToolCall {
    ToolCall::GitPush(GitPush {
        repo: repo.to_owned(),
        remote: None,
        branch: "main".to_owned(),
        force,
        credentials,
    })
}

fn expect_err(result: Result<ToolOutput, ToolError>) -> ToolError {
    match result {
        Ok(ok) => panic!("expected an error, got {ok:?}"),
        Err(err) => err,
    }
}

#[tokio::test]
async fn clone_commit_push_lands_on_the_remote() {
    let t = TestTools::new();
    let remote = seeded_remote(&t.outside());
    let remote_url = remote.display().to_string();

    let ToolOutput::GitClone(cloned) = t.call(clone_call(&remote_url, "app")).await.unwrap() else {
        panic!("not a clone result")
    };
    assert_eq!(cloned.path, "app");
    assert_eq!(cloned.branch.as_deref(), Some("main"));
    let seed_head = git(&remote, &["rev-parse", "main"]);
    assert_eq!(cloned.head.as_deref(), Some(seed_head.trim()));

    let app = t.workdir.join("app");
    fs::write(app.join("README.md"), "hello, world\n").unwrap();
    fs::write(app.join("NEW.md"), "new file\n").unwrap();
    fs::remove_file(app.join("old.txt")).unwrap();
    t.call(add_all("app")).await.unwrap();
    let ToolOutput::GitCommit(committed) = t
        .call(commit_call("app", "Greet the world\n\nWith a body.", "Ada"))
        .await
        .unwrap()
    else {
        panic!("not a commit result")
    };
    assert_eq!(committed.branch.as_deref(), Some("main"));
    let ToolOutput::GitPush(pushed) = t.call(push_call("app", false, None)).await.unwrap() else {
        panic!("not a push result")
    };
    assert_eq!(pushed.remote_ref, "refs/heads/main");
    assert_eq!(pushed.id, committed.id);

    // What the remote holds, as the git program sees it.
    assert_eq!(git(&remote, &["rev-parse", "main"]).trim(), committed.id);
    assert_eq!(
        git(&remote, &["log", "-1", "--format=%an <%ae>%n%B", "main"]).trim_end(),
        "Ada <ada@example.com>\nGreet the world\n\nWith a body."
    );
    assert_eq!(
        git(&remote, &["ls-tree", "-r", "--name-only", "main"]),
        "NEW.md\nREADME.md\nsrc/lib.rs\n"
    );
    assert_eq!(git(&remote, &["show", "main:README.md"]), "hello, world\n");
    assert_eq!(
        git(&remote, &["rev-parse", "main~1"]).trim(),
        seed_head.trim()
    );

    // Nothing staged: a second commit is refused.
    let err = expect_err(t.call(commit_call("app", "again", "Ada")).await);
    assert_eq!(err.code, ErrorCode::Conflict, "{err:?}");

    // The log as the tool reports it.
    let ToolOutput::GitLog(log) = t
        .call(ToolCall::GitLog(GitLog {
            repo: "app".to_owned(),
            rev: None,
            max_count: Some(5),
        }))
        .await
        .unwrap()
    else {
        panic!("not a log result")
    };
    let summary: Vec<_> = log
        .commits
        .iter()
        .map(|c| {
            (
                c.author_name.as_str(),
                c.message.lines().next().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(summary, [("Ada", "Greet the world"), ("Seeder", "seed")]);
}

#[tokio::test]
async fn a_non_fast_forward_push_is_refused_and_force_overrides() {
    let t = TestTools::new();
    let remote = seeded_remote(&t.outside());
    let url = remote.display().to_string();
    t.call(clone_call(&url, "a")).await.unwrap();
    t.call(clone_call(&url, "b")).await.unwrap();

    fs::write(t.workdir.join("a/a.txt"), "from a\n").unwrap();
    t.call(add_all("a")).await.unwrap();
    t.call(commit_call("a", "from a", "Alice")).await.unwrap();
    t.call(push_call("a", false, None)).await.unwrap();

    fs::write(t.workdir.join("b/b.txt"), "from b\n").unwrap();
    t.call(add_all("b")).await.unwrap();
    let ToolOutput::GitCommit(b_commit) = t.call(commit_call("b", "from b", "Bob")).await.unwrap()
    else {
        panic!("not a commit result")
    };
    let err = expect_err(t.call(push_call("b", false, None)).await);
    assert_eq!(err.code, ErrorCode::NonFastForward, "{err:?}");
    assert!(err.message.contains("fetch"), "{}", err.message);
    assert_eq!(
        git(&remote, &["log", "-1", "--format=%an", "main"]).trim(),
        "Alice"
    );

    // After a fetch the push is still not a fast-forward (the remote's
    // commit is known locally now, so libgit2 itself refuses).
    t.call(ToolCall::GitFetch(GitFetch {
        repo: "b".to_owned(),
        remote: None,
        refspecs: vec![],
        depth: None,
        credentials: None,
    }))
    .await
    .unwrap();
    let err = expect_err(t.call(push_call("b", false, None)).await);
    assert_eq!(err.code, ErrorCode::NonFastForward, "{err:?}");

    t.call(push_call("b", true, None)).await.unwrap();
    assert_eq!(git(&remote, &["rev-parse", "main"]).trim(), b_commit.id);
}

/// `git status --porcelain` lines built from the tool's entries.
fn porcelain_lines(status: &GitStatusOutput) -> BTreeSet<String> {
    status
        .entries
        .iter()
        .map(|e| match &e.orig_path {
            Some(orig) => format!("{}{} {orig} -> {}", e.index, e.worktree, e.path),
            None => format!("{}{} {}", e.index, e.worktree, e.path),
        })
        .collect()
}

#[tokio::test]
async fn status_and_diff_match_the_git_program() {
    let t = TestTools::new();
    let remote = seeded_remote(&t.outside());
    t.call(clone_call(&remote.display().to_string(), "app"))
        .await
        .unwrap();
    let app = t.workdir.join("app");
    // Staged: a new file, a modification, a rename. Unstaged: a
    // modification on top, a deletion. Untracked: a file and a directory.
    fs::write(app.join("staged.txt"), "staged\n").unwrap();
    fs::write(app.join("README.md"), "hello\nstaged line\n").unwrap();
    git(&app, &["mv", "src/lib.rs", "src/core.rs"]);
    git(&app, &["add", "staged.txt", "README.md"]);
    fs::write(app.join("README.md"), "hello\nstaged line\nunstaged line\n").unwrap();
    fs::remove_file(app.join("old.txt")).unwrap();
    fs::write(app.join("untracked.txt"), "?\n").unwrap();
    fs::create_dir(app.join("newdir")).unwrap();
    fs::write(app.join("newdir/inner.txt"), "?\n").unwrap();

    let ToolOutput::GitStatus(status) = t
        .call(ToolCall::GitStatus(GitRepo {
            repo: "app".to_owned(),
        }))
        .await
        .unwrap()
    else {
        panic!("not a status result")
    };
    let expected: BTreeSet<String> = git(&app, &["status", "--porcelain"])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(porcelain_lines(&status), expected);
    assert_eq!(expected.len(), 6, "{expected:?}");
    assert_eq!(status.branch.as_deref(), Some("main"));

    for staged in [false, true] {
        let ToolOutput::GitDiff(diff) = t
            .call(ToolCall::GitDiff(GitDiff {
                repo: "app".to_owned(),
                staged,
                paths: vec![],
            }))
            .await
            .unwrap()
        else {
            panic!("not a diff result")
        };
        let args: &[&str] = if staged {
            &["diff", "--cached", "--no-renames", "--no-color"]
        } else {
            &["diff", "--no-color"]
        };
        assert_eq!(diff.diff, git(&app, args), "staged: {staged}");
        assert!(!diff.truncated);
        assert!(!diff.diff.is_empty());
    }
}

#[tokio::test]
async fn branches_and_checkout() {
    let t = TestTools::new();
    let remote = seeded_remote(&t.outside());
    let outside = t.outside();
    git(&outside.join("seed"), &["checkout", "-q", "-b", "feature"]);
    fs::write(outside.join("seed/feature.txt"), "f\n").unwrap();
    git(&outside.join("seed"), &["add", "."]);
    git(&outside.join("seed"), &["commit", "-q", "-m", "feature"]);
    git(
        &outside.join("seed"),
        &["push", "-q", "../remote.git", "feature"],
    );
    t.call(clone_call(&remote.display().to_string(), "app"))
        .await
        .unwrap();

    let ToolOutput::GitBranchCreate(created) = t
        .call(ToolCall::GitBranchCreate(GitBranchCreate {
            repo: "app".to_owned(),
            name: "topic".to_owned(),
            start_point: None,
            force: false,
        }))
        .await
        .unwrap()
    else {
        panic!("not a branch result")
    };
    assert_eq!(created.name, "topic");
    assert!(!created.head);

    // A remote branch checked out by name gets a local tracking branch.
    let ToolOutput::GitCheckout(out) = t
        .call(ToolCall::GitCheckout(GitCheckout {
            repo: "app".to_owned(),
            target: "feature".to_owned(),
            force: false,
        }))
        .await
        .unwrap()
    else {
        panic!("not a checkout result")
    };
    assert_eq!(out.branch.as_deref(), Some("feature"));
    assert!(t.workdir.join("app/feature.txt").exists());
    assert_eq!(
        git(&t.workdir.join("app"), &["symbolic-ref", "--short", "HEAD"]).trim(),
        "feature"
    );

    let ToolOutput::GitBranchList(list) = t
        .call(ToolCall::GitBranchList(GitBranchList {
            repo: "app".to_owned(),
            remotes: true,
        }))
        .await
        .unwrap()
    else {
        panic!("not a branch list")
    };
    let local: Vec<_> = list
        .branches
        .iter()
        .filter(|b| !b.remote)
        .map(|b| (b.name.as_str(), b.head))
        .collect();
    assert_eq!(
        local,
        [("feature", true), ("main", false), ("topic", false)]
    );
    let feature = list.branches.iter().find(|b| b.name == "feature").unwrap();
    assert_eq!(feature.upstream.as_deref(), Some("origin/feature"));
    assert!(list
        .branches
        .iter()
        .any(|b| b.remote && b.name == "origin/main"));

    // A revision checks out detached.
    let ToolOutput::GitCheckout(out) = t
        .call(ToolCall::GitCheckout(GitCheckout {
            repo: "app".to_owned(),
            target: "main~0".to_owned(),
            force: false,
        }))
        .await
        .unwrap()
    else {
        panic!("not a checkout result")
    };
    assert_eq!(out.branch, None);
    assert!(!t.workdir.join("app/feature.txt").exists());

    let err = expect_err(
        t.call(ToolCall::GitStatus(GitRepo {
            repo: "nope".to_owned(),
        }))
        .await,
    );
    assert_eq!(err.code, ErrorCode::NotFound);
}

#[tokio::test]
async fn a_password_in_the_url_is_refused() {
    let t = TestTools::new();
    let err = expect_err(
        t.call(clone_call("https://user:secret@example.com/repo.git", "x"))
            .await,
    );
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(!err.message.contains("secret"));
    assert!(!t.workdir.join("x").exists());
}

/// Sends one tool call through the dispatcher, as the connection does, and
/// returns the reply.
async fn through_dispatch(
    t: &TestTools,
    tx_out: &mpsc::Sender<Outbound>,
    rx_out: &mut mpsc::Receiver<Outbound>,
    id: u64,
    call: ToolCall,
) -> AgentToControl {
    t.tools.handle(
        ControlToAgent::ToolCall {
            request_id: RequestId(id),
            timeout_ms: None,
            call,
        },
        tx_out,
    );
    let out = rx_out.recv().await.unwrap();
    let OutFrame::Control(reply) = out.frame else {
        panic!("not a control message")
    };
    reply
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            files_under(&entry.path(), out);
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
}

#[tokio::test]
async fn smart_http_with_basic_auth_and_no_token_left_behind() {
    capture_logs();
    const TOKEN: &str = "tok_5f3a9c1e7b2d4680";
    let t = TestTools::new();
    let outside = t.outside();
    seeded_remote(&outside);
    git(
        &outside.join("remote.git"),
        &["config", "http.receivepack", "true"],
    );
    let server = GitHttpServer::start(outside.clone(), "agent", TOKEN);
    let url = server.url("remote.git");
    let credentials = |token: &str| {
        Some(GitCredentials {
            username: Some("agent".to_owned()),
            token: Secret::new(token),
        })
    };
    let (tx_out, mut rx_out) = mpsc::channel(8);

    // Without credentials, and with a wrong token: auth_failed, nothing cloned.
    let reply = through_dispatch(&t, &tx_out, &mut rx_out, 1, clone_call(&url, "anon")).await;
    let AgentToControl::RequestFailed { code, message, .. } = reply else {
        panic!("cloned without credentials: {reply:?}")
    };
    assert_eq!(code, ErrorCode::AuthFailed, "{message}");
    let wrong = ToolCall::GitClone(GitClone {
        credentials: credentials("wrong-token"),
        ..GitClone {
            url: url.clone(),
            path: "wrong".to_owned(),
            branch: None,
            depth: None,
            credentials: None,
        }
    });
    let reply = through_dispatch(&t, &tx_out, &mut rx_out, 2, wrong).await;
    let AgentToControl::RequestFailed { code, message, .. } = reply else {
        panic!("cloned with a wrong token: {reply:?}")
    };
    assert_eq!(code, ErrorCode::AuthFailed, "{message}");
    assert!(message.contains("refused"), "{message}");
    assert!(server.refused.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    // The right token: a shallow clone of one commit.
    let good = ToolCall::GitClone(GitClone {
        url: url.clone(),
        path: "app".to_owned(),
        branch: Some("main".to_owned()),
        depth: Some(1),
        credentials: credentials(TOKEN),
    });
    let reply = through_dispatch(&t, &tx_out, &mut rx_out, 3, good).await;
    assert!(
        matches!(
            reply,
            AgentToControl::ToolResult {
                request_id: RequestId(3),
                result: ToolOutput::GitClone(_)
            }
        ),
        "{reply:?}"
    );
    let app = t.workdir.join("app");
    assert_eq!(
        git(&app, &["rev-parse", "--is-shallow-repository"]).trim(),
        "true"
    );
    assert_eq!(git(&app, &["rev-list", "--count", "HEAD"]).trim(), "1");

    // Commit and push over HTTP; a wrong token cannot push.
    fs::write(app.join("http.txt"), "over http\n").unwrap();
    let reply = through_dispatch(&t, &tx_out, &mut rx_out, 4, add_all("app")).await;
    assert!(
        matches!(reply, AgentToControl::ToolResult { .. }),
        "{reply:?}"
    );
    let reply = through_dispatch(
        &t,
        &tx_out,
        &mut rx_out,
        5,
        commit_call("app", "over http", "Hal"),
    )
    .await;
    assert!(
        matches!(reply, AgentToControl::ToolResult { .. }),
        "{reply:?}"
    );
    let reply = through_dispatch(
        &t,
        &tx_out,
        &mut rx_out,
        6,
        push_call("app", false, credentials("nope")),
    )
    .await;
    let AgentToControl::RequestFailed { code, .. } = reply else {
        panic!("pushed with a wrong token: {reply:?}")
    };
    assert_eq!(code, ErrorCode::AuthFailed);
    let reply = through_dispatch(
        &t,
        &tx_out,
        &mut rx_out,
        7,
        push_call("app", false, credentials(TOKEN)),
    )
    .await;
    assert!(
        matches!(reply, AgentToControl::ToolResult { .. }),
        "{reply:?}"
    );
    assert_eq!(
        git(
            &outside.join("remote.git"),
            &["log", "-1", "--format=%an %s", "main"]
        )
        .trim(),
        "Hal over http"
    );
    let fetch = ToolCall::GitFetch(GitFetch {
        repo: "app".to_owned(),
        remote: None,
        refspecs: vec![],
        depth: None,
        credentials: credentials(TOKEN),
    });
    let reply = through_dispatch(&t, &tx_out, &mut rx_out, 8, fetch).await;
    assert!(
        matches!(reply, AgentToControl::ToolResult { .. }),
        "{reply:?}"
    );

    // The token is in no file of the sandbox and no log line.
    let mut files = Vec::new();
    files_under(&t.workdir, &mut files);
    assert!(files.iter().any(|f| f.ends_with(".git/config")));
    for file in &files {
        let bytes = fs::read(file).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {}",
            file.display()
        );
    }
    let logged = logs();
    assert!(logged.contains("tool call"), "calls were not logged");
    assert!(
        logged.contains("<redacted>"),
        "credentials were not logged redacted"
    );
    assert!(!logged.contains(TOKEN), "the token is in the log");
    assert!(!logged.contains("wrong-token"), "a token is in the log");
}
