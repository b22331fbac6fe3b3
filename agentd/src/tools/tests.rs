//! The dispatcher (request ids, deadlines, cancellation, replies that fit a
//! frame) and exec with real processes.

use std::collections::BTreeMap;

use paddock_protocol::tools::{Exec, FilePath, FileRead};
use paddock_protocol::ExitStatus;
use tokio::sync::mpsc;

use super::*;
use crate::connection::OutFrame;
use crate::test_support::TestTools;

fn exec(command: &str, args: &[&str]) -> Exec {
    Exec {
        command: command.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        cwd: None,
        env: BTreeMap::new(),
        stdin: None,
        timeout_ms: None,
        max_output: None,
    }
}

async fn run(t: &TestTools, req: Exec) -> paddock_protocol::tools::ExecOutput {
    match t.call(ToolCall::Exec(req)).await.unwrap() {
        ToolOutput::Exec(out) => out,
        other => panic!("not an exec result: {other:?}"),
    }
}

#[tokio::test]
async fn exec_keeps_streams_apart_and_reports_the_exit_code() {
    let t = TestTools::new();
    std::fs::create_dir(t.workdir.join("sub")).unwrap();
    let mut req = exec(
        "sh",
        &[
            "-c",
            "echo out; echo err >&2; cat; pwd; echo \"$GREETING\"; exit 3",
        ],
    );
    req.stdin = Some("from stdin\n".to_owned());
    req.cwd = Some("sub".to_owned());
    req.env.insert("GREETING".to_owned(), "hi".to_owned());
    let out = run(&t, req).await;
    assert_eq!(out.status, ExitStatus::code(3));
    let sub = t.workdir.join("sub");
    assert_eq!(
        out.stdout.text,
        format!("out\nfrom stdin\n{}\nhi\n", sub.display())
    );
    assert_eq!(out.stderr.text, "err\n");
    assert_eq!((out.stdout.omitted_bytes, out.stderr.omitted_bytes), (0, 0));
    assert!(!out.timed_out);

    let killed = run(&t, exec("sh", &["-c", "kill -TERM $$"])).await;
    assert_eq!(killed.status, ExitStatus::signal(15));

    let err = t
        .call(ToolCall::Exec(exec("no-such-program-here", &[])))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::SpawnFailed);
    assert!(
        err.message.contains("no-such-program-here"),
        "{}",
        err.message
    );
    let mut outside = exec("true", &[]);
    outside.cwd = Some("../..".to_owned());
    assert_eq!(
        t.call(ToolCall::Exec(outside)).await.unwrap_err().code,
        ErrorCode::PathEscape
    );
}

#[tokio::test]
async fn exec_output_keeps_head_and_tail_and_says_what_it_dropped() {
    let t = TestTools::new();
    let mut req = exec("seq", &["1", "100000"]);
    req.max_output = Some(1000);
    let out = run(&t, req).await;
    assert_eq!(out.status, ExitStatus::code(0));
    let total = (1..=100_000)
        .map(|n: u32| n.to_string().len() as u64 + 1)
        .sum::<u64>();
    assert_eq!(out.stdout.total_bytes, total);
    assert_eq!(out.stdout.omitted_bytes, total - 1000);
    let text = &out.stdout.text;
    assert!(text.starts_with("1\n2\n3\n"), "{text}");
    assert!(text.ends_with("99999\n100000\n"), "{text}");
    assert!(
        text.contains(&format!("[... {} bytes omitted ...]", total - 1000)),
        "{text}"
    );
}

#[tokio::test]
async fn exec_timeout_kills_the_process_group() {
    let t = TestTools::new();
    let pid_file = t.workdir.join("bg.pid");
    // A background child in the same group, holding the pipes open.
    let mut req = exec(
        "sh",
        &["-c", "sleep 300 & echo $! > bg.pid; echo started; wait"],
    );
    req.timeout_ms = Some(300);
    let out = run(&t, req).await;
    assert!(out.timed_out);
    assert_eq!(out.status, ExitStatus::signal(9));
    assert_eq!(out.stdout.text, "started\n");
    let bg: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The background sleep was killed with its group: it is gone, or a
    // zombie until init reaps it. Death after SIGKILL is prompt but not
    // instant, so wait for it, with a deadline.
    let gone = || match std::fs::read_to_string(format!("/proc/{bg}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.contains(") Z "),
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !gone() {
        assert!(std::time::Instant::now() < deadline, "{bg} still runs");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn agentd_settings_never_reach_an_exec() {
    let dir = tempfile::tempdir().unwrap();
    let workdir = dir.path().canonicalize().unwrap();
    let mut parent_env: Vec<_> = std::env::vars_os().collect();
    parent_env.push(("PADDOCK_AGENTD_TOKEN".into(), "sandbox-secret".into()));
    let tools = Tools::new(
        ToolsConfig {
            workdir,
            parent_env,
            lsp: LspConfig::default(),
            session_user: None,
        },
        CancellationToken::new(),
    );
    let mut req = exec("env", &[]);
    req.env
        .insert("PADDOCK_AGENTD_WORKDIR".to_owned(), "smuggled".to_owned());
    let out = tools
        .call(
            ToolCall::Exec(req),
            Duration::from_secs(30),
            CancellationToken::new(),
        )
        .await
        .unwrap();
    let ToolOutput::Exec(out) = out else {
        panic!("not exec")
    };
    assert!(out.stdout.text.contains("PATH="), "{}", out.stdout.text);
    assert!(
        !out.stdout.text.contains("PADDOCK_AGENTD_"),
        "{}",
        out.stdout.text
    );
}

async fn reply(rx_out: &mut mpsc::Receiver<Outbound>) -> AgentToControl {
    let out = tokio::time::timeout(Duration::from_secs(30), rx_out.recv())
        .await
        .expect("a reply within 30 s")
        .expect("channel open");
    match out.frame {
        OutFrame::Control(msg) => msg,
        OutFrame::Data(_) => panic!("a data frame"),
    }
}

fn tool_call(id: u64, timeout_ms: Option<u64>, call: ToolCall) -> ControlToAgent {
    ControlToAgent::ToolCall {
        request_id: RequestId(id),
        timeout_ms,
        call,
    }
}

#[tokio::test]
async fn calls_are_cancelled_timed_out_and_answered_once() {
    let t = TestTools::new();
    let (tx_out, mut rx_out) = mpsc::channel(8);
    let sleeper = || {
        let mut req = exec("sleep", &["300"]);
        req.timeout_ms = Some(600_000);
        ToolCall::Exec(req)
    };

    // Cancelled: answered with `cancelled`; a second cancel sends nothing.
    t.tools.handle(tool_call(1, None, sleeper()), &tx_out);
    t.tools.handle(
        ControlToAgent::CancelRequest {
            request_id: RequestId(1),
        },
        &tx_out,
    );
    let msg = reply(&mut rx_out).await;
    assert!(
        matches!(
            msg,
            AgentToControl::RequestFailed {
                request_id: RequestId(1),
                code: ErrorCode::Cancelled,
                ..
            }
        ),
        "{msg:?}"
    );
    t.tools.handle(
        ControlToAgent::CancelRequest {
            request_id: RequestId(1),
        },
        &tx_out,
    );

    // The request's own deadline: `timeout`.
    t.tools.handle(tool_call(2, Some(200), sleeper()), &tx_out);
    // A duplicate id while the first is in flight is refused.
    t.tools.handle(tool_call(2, None, sleeper()), &tx_out);
    let msg = reply(&mut rx_out).await;
    assert!(
        matches!(
            msg,
            AgentToControl::RequestFailed {
                request_id: RequestId(2),
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "{msg:?}"
    );
    let msg = reply(&mut rx_out).await;
    let AgentToControl::RequestFailed {
        request_id: RequestId(2),
        code: ErrorCode::Timeout,
        message,
    } = msg
    else {
        panic!("{msg:?}")
    };
    assert!(message.contains("200 ms"), "{message}");

    // A result, and a failure with its code.
    std::fs::write(t.workdir.join("a.txt"), "hello").unwrap();
    t.tools.handle(
        tool_call(
            3,
            None,
            ToolCall::FileRead(FileRead {
                path: "a.txt".to_owned(),
                offset: 0,
                len: None,
            }),
        ),
        &tx_out,
    );
    let msg = reply(&mut rx_out).await;
    let AgentToControl::ToolResult {
        request_id: RequestId(3),
        result: ToolOutput::FileRead(content),
    } = msg
    else {
        panic!("{msg:?}")
    };
    assert_eq!(content.content, "hello");
    t.tools.handle(
        tool_call(
            4,
            None,
            ToolCall::FileStat(FilePath {
                path: "/etc/passwd".to_owned(),
            }),
        ),
        &tx_out,
    );
    let msg = reply(&mut rx_out).await;
    assert!(
        matches!(
            msg,
            AgentToControl::RequestFailed {
                request_id: RequestId(4),
                code: ErrorCode::PathEscape,
                ..
            }
        ),
        "{msg:?}"
    );
    t.shutdown().await;
}

#[test]
fn oversized_results_become_a_failure_that_says_so() {
    let huge = ToolOutput::LspRequest(paddock_protocol::tools::LspResponse {
        response: serde_json::Value::String("x".repeat(MAX_CONTROL_FRAME)),
    });
    let reply = fit_frame(AgentToControl::ToolResult {
        request_id: RequestId(9),
        result: huge,
    });
    let AgentToControl::RequestFailed { code, message, .. } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(code, ErrorCode::ToolFailed);
    assert!(message.contains("lsp_request"), "{message}");
}
