//! Golden tests: the exact bytes of every control message in each direction.
//! A change here is a change of the wire; it needs a protocol version thought.

use std::collections::BTreeMap;

use super::*;
use crate::api::SessionState;
use crate::tools::*;

fn hello(peer: &str) -> Hello {
    Hello {
        protocol_version: 1,
        peer: peer.to_owned(),
        capabilities: vec!["pty".to_owned()],
    }
}

fn golden_agent(msg: AgentToControl, json: &str) {
    assert_eq!(msg.encode(), json);
    assert_eq!(AgentToControl::decode(json).unwrap(), msg);
}

fn golden_control(msg: ControlToAgent, json: &str) {
    assert_eq!(msg.encode(), json);
    assert_eq!(ControlToAgent::decode(json).unwrap(), msg);
}

fn golden_client(msg: ClientToControl, json: &str) {
    assert_eq!(msg.encode(), json);
    assert_eq!(ClientToControl::decode(json).unwrap(), msg);
}

fn golden_to_client(msg: ControlToClient, json: &str) {
    assert_eq!(msg.encode(), json);
    assert_eq!(ControlToClient::decode(json).unwrap(), msg);
}

#[test]
fn agent_to_control_golden() {
    golden_agent(
        AgentToControl::Hello {
            hello: hello("agentd/0.1.0"),
            sessions: vec![LiveSession {
                session_id: SessionId(4),
                next_offset: 120,
                retained_from: 0,
                size: TermSize { cols: 80, rows: 24 },
            }],
        },
        r#"{"type":"hello","protocol_version":1,"peer":"agentd/0.1.0","capabilities":["pty"],"sessions":[{"session_id":4,"next_offset":120,"retained_from":0,"size":{"cols":80,"rows":24}}]}"#,
    );
    golden_agent(
        AgentToControl::SessionOpened {
            request_id: RequestId(9),
            session_id: SessionId(4),
            pid: Some(4242),
        },
        r#"{"type":"session_opened","request_id":9,"session_id":4,"pid":4242}"#,
    );
    golden_agent(
        AgentToControl::SessionExited {
            session_id: SessionId(4),
            status: ExitStatus::code(3),
            end_offset: 512,
        },
        r#"{"type":"session_exited","session_id":4,"status":{"code":3},"end_offset":512}"#,
    );
    golden_agent(
        AgentToControl::Gap {
            session_id: SessionId(4),
            from: 10,
            to: 20,
            reason: "retention buffer full".to_owned(),
        },
        r#"{"type":"gap","session_id":4,"from":10,"to":20,"reason":"retention buffer full"}"#,
    );
    golden_agent(
        AgentToControl::RequestDone {
            request_id: RequestId(10),
        },
        r#"{"type":"request_done","request_id":10}"#,
    );
    golden_agent(
        AgentToControl::RequestFailed {
            request_id: RequestId(11),
            code: ErrorCode::SpawnFailed,
            message: "no such file: /bin/nope".to_owned(),
        },
        r#"{"type":"request_failed","request_id":11,"code":"spawn_failed","message":"no such file: /bin/nope"}"#,
    );
}

#[test]
fn control_to_agent_golden() {
    golden_control(
        ControlToAgent::Welcome {
            hello: hello("control-plane/0.1.0"),
            sandbox_id: SandboxId::from("sbx_01"),
            heartbeat_ms: 15000,
            resume: vec![ResumeFrom {
                session_id: SessionId(4),
                offset: 100,
            }],
        },
        r#"{"type":"welcome","protocol_version":1,"peer":"control-plane/0.1.0","capabilities":["pty"],"sandbox_id":"sbx_01","heartbeat_ms":15000,"resume":[{"session_id":4,"offset":100}]}"#,
    );
    let mut env = BTreeMap::new();
    env.insert("TERM".to_owned(), "xterm-256color".to_owned());
    golden_control(
        ControlToAgent::OpenSession {
            request_id: RequestId(1),
            session_id: SessionId(4),
            command: Some("bash".to_owned()),
            args: vec!["-l".to_owned()],
            cwd: Some("repo".to_owned()),
            env,
            size: TermSize {
                cols: 120,
                rows: 40,
            },
        },
        r#"{"type":"open_session","request_id":1,"session_id":4,"command":"bash","args":["-l"],"cwd":"repo","env":{"TERM":"xterm-256color"},"size":{"cols":120,"rows":40}}"#,
    );
    golden_control(
        ControlToAgent::ResizeSession {
            request_id: RequestId(2),
            session_id: SessionId(4),
            size: TermSize {
                cols: 100,
                rows: 30,
            },
        },
        r#"{"type":"resize_session","request_id":2,"session_id":4,"size":{"cols":100,"rows":30}}"#,
    );
    golden_control(
        ControlToAgent::SignalSession {
            request_id: RequestId(3),
            session_id: SessionId(4),
            signal: Signal::Int,
        },
        r#"{"type":"signal_session","request_id":3,"session_id":4,"signal":"INT"}"#,
    );
    golden_control(
        ControlToAgent::CloseSession {
            request_id: RequestId(5),
            session_id: SessionId(4),
        },
        r#"{"type":"close_session","request_id":5,"session_id":4}"#,
    );
    golden_control(
        ControlToAgent::Ack {
            session_id: SessionId(4),
            offset: 65536,
        },
        r#"{"type":"ack","session_id":4,"offset":65536}"#,
    );
    golden_control(
        ControlToAgent::ExitRecorded {
            session_id: SessionId(4),
        },
        r#"{"type":"exit_recorded","session_id":4}"#,
    );
    golden_control(
        ControlToAgent::DropSession {
            session_id: SessionId(8),
        },
        r#"{"type":"drop_session","session_id":8}"#,
    );
}

#[test]
fn client_to_control_golden() {
    golden_client(
        ClientToControl::Hello {
            hello: hello("paddock/0.1.0"),
        },
        r#"{"type":"hello","protocol_version":1,"peer":"paddock/0.1.0","capabilities":["pty"]}"#,
    );
    golden_client(
        ClientToControl::Resize {
            size: TermSize { cols: 90, rows: 20 },
        },
        r#"{"type":"resize","size":{"cols":90,"rows":20}}"#,
    );
}

#[test]
fn control_to_client_golden() {
    let session = SessionInfo {
        id: SessionId(4),
        sandbox_id: SandboxId::from("sbx_01"),
        command: None,
        args: vec![],
        state: SessionState::Running,
        size: TermSize::DEFAULT,
        created_at: "2026-11-26T03:00:00.000Z".to_owned(),
        ended_at: None,
        exit: None,
        end_offset: 12,
        driver: None,
        viewers: 1,
    };
    golden_to_client(
        ControlToClient::Welcome {
            hello: hello("control-plane/0.1.0"),
            session: Box::new(session),
            mode: StreamMode::Watch,
            from: 0,
        },
        r#"{"type":"welcome","protocol_version":1,"peer":"control-plane/0.1.0","capabilities":["pty"],"session":{"id":4,"sandbox_id":"sbx_01","args":[],"state":"running","size":{"cols":80,"rows":24},"created_at":"2026-11-26T03:00:00.000Z","end_offset":12,"viewers":1},"mode":"watch","from":0}"#,
    );
    golden_to_client(
        ControlToClient::ModeChanged {
            mode: StreamMode::Watch,
            reason: "taken over by owner (paddock/0.1.0)".to_owned(),
        },
        r#"{"type":"mode_changed","mode":"watch","reason":"taken over by owner (paddock/0.1.0)"}"#,
    );
    golden_to_client(
        ControlToClient::DriverChanged {
            driver: Some("owner (paddock/0.1.0)".to_owned()),
        },
        r#"{"type":"driver_changed","driver":"owner (paddock/0.1.0)"}"#,
    );
    golden_to_client(
        ControlToClient::DriverChanged { driver: None },
        r#"{"type":"driver_changed"}"#,
    );
    golden_to_client(
        ControlToClient::Resized {
            size: TermSize { cols: 90, rows: 20 },
        },
        r#"{"type":"resized","size":{"cols":90,"rows":20}}"#,
    );
    golden_to_client(
        ControlToClient::Gap {
            from: 0,
            to: 7,
            reason: "lost while the sandbox was disconnected".to_owned(),
        },
        r#"{"type":"gap","from":0,"to":7,"reason":"lost while the sandbox was disconnected"}"#,
    );
    golden_to_client(
        ControlToClient::Snapshot {
            offset: 4096,
            size: TermSize { cols: 80, rows: 24 },
            screen: "\u{1b}[H\u{1b}[2Jhello".to_owned(),
        },
        r#"{"type":"snapshot","offset":4096,"size":{"cols":80,"rows":24},"screen":"\u001b[H\u001b[2Jhello"}"#,
    );
    golden_to_client(
        ControlToClient::Exited {
            status: ExitStatus::signal(15),
            end_offset: 99,
        },
        r#"{"type":"exited","status":{"signal":15},"end_offset":99}"#,
    );
    golden_to_client(
        ControlToClient::Error {
            code: ErrorCode::DriverExists,
            message: "session 4 is driven by owner".to_owned(),
        },
        r#"{"type":"error","code":"driver_exists","message":"session 4 is driven by owner"}"#,
    );
}

#[test]
fn screen_messages_golden() {
    use crate::screen::{Color, Cursor, ScreenRow, ScreenRun};
    let prompt = ScreenRow {
        row: 0,
        runs: vec![
            ScreenRun {
                text: "$ ".to_owned(),
                fg: Some(Color::Indexed(2)),
                bold: true,
                ..ScreenRun::default()
            },
            ScreenRun {
                text: "ls".to_owned(),
                ..ScreenRun::default()
            },
        ],
    };
    golden_to_client(
        ControlToClient::ScreenFrame {
            offset: 120,
            size: TermSize { cols: 80, rows: 24 },
            rows: vec![prompt.clone()],
            cursor: Cursor {
                row: 0,
                col: 4,
                visible: true,
            },
        },
        r#"{"type":"screen_frame","offset":120,"size":{"cols":80,"rows":24},"rows":[{"row":0,"runs":[{"text":"$ ","fg":2,"bold":true},{"text":"ls"}]}],"cursor":{"row":0,"col":4,"visible":true}}"#,
    );
    golden_to_client(
        ControlToClient::ScreenDiff {
            offset: 180,
            rows: vec![
                ScreenRow {
                    row: 1,
                    runs: vec![ScreenRun {
                        text: "warn".to_owned(),
                        fg: Some(Color::Rgb([255, 128, 0])),
                        bg: Some(Color::Indexed(0)),
                        italic: true,
                        underline: true,
                        inverse: true,
                        ..ScreenRun::default()
                    }],
                },
                ScreenRow {
                    row: 2,
                    runs: vec![],
                },
            ],
            cursor: Cursor {
                row: 3,
                col: 0,
                visible: false,
            },
        },
        r#"{"type":"screen_diff","offset":180,"rows":[{"row":1,"runs":[{"text":"warn","fg":[255,128,0],"bg":0,"italic":true,"underline":true,"inverse":true}]},{"row":2,"runs":[]}],"cursor":{"row":3,"col":0,"visible":false}}"#,
    );
    assert_eq!(prompt.text(), "$ ls");
    // A row past the largest terminal is refused like any other bad field.
    let bad = r#"{"type":"screen_diff","offset":0,"rows":[{"row":5000,"runs":[]}],"cursor":{"row":0,"col":0,"visible":true}}"#;
    assert!(ControlToClient::decode(bad).is_err());
    let query: crate::api::StreamQuery =
        serde_json::from_str(r#"{"mode":"attach","render":"screen"}"#).unwrap();
    assert_eq!(query.to_query_string(), "mode=attach&render=screen");
}

#[test]
fn unknown_fields_are_ignored_and_unknown_codes_tolerated() {
    let msg = AgentToControl::decode(
        r#"{"type":"request_failed","request_id":1,"code":"from_the_future","message":"x","extra":true}"#,
    )
    .unwrap();
    assert_eq!(
        msg,
        AgentToControl::RequestFailed {
            request_id: RequestId(1),
            code: ErrorCode::Unknown,
            message: "x".to_owned()
        }
    );
}

#[test]
fn malformed_and_oversized_messages_are_refused() {
    assert!(matches!(
        AgentToControl::decode("{not json"),
        Err(DecodeError::Json(_))
    ));
    assert!(matches!(
        AgentToControl::decode(r#"{"type":"launch_missiles"}"#),
        Err(DecodeError::Json(_))
    ));
    let huge = format!(
        r#"{{"type":"gap","session_id":1,"from":0,"to":1,"reason":"{}"}}"#,
        "x".repeat(MAX_CONTROL_FRAME)
    );
    assert!(matches!(
        AgentToControl::decode(&huge),
        Err(DecodeError::TooLarge { .. })
    ));
    let long_reason = format!(
        r#"{{"type":"gap","session_id":1,"from":0,"to":1,"reason":"{}"}}"#,
        "x".repeat(MAX_STRING_LEN + 1)
    );
    assert!(matches!(
        AgentToControl::decode(&long_reason),
        Err(DecodeError::TooLong {
            field: "reason",
            ..
        })
    ));
    let bad_env = r#"{"type":"open_session","request_id":1,"session_id":1,"env":{"A=B":"c"},"size":{"cols":80,"rows":24}}"#;
    assert!(matches!(
        ControlToAgent::decode(bad_env),
        Err(DecodeError::Invalid { field: "env", .. })
    ));
    let zero_size = r#"{"type":"resize","size":{"cols":0,"rows":24}}"#;
    assert!(ClientToControl::decode(zero_size).is_err());
}

#[test]
fn version_refusal_names_supported_versions() {
    assert!(crate::is_supported(crate::PROTOCOL_VERSION));
    assert!(!crate::is_supported(99));
    let reason = crate::unsupported_version_reason(99);
    assert_eq!(reason, "unsupported protocol version 99; supported: 1");
    assert!(reason.len() <= 123);
}

fn target() -> LspTarget {
    LspTarget {
        workspace: "repo".to_owned(),
        language: "python".to_owned(),
    }
}

#[test]
fn tool_call_golden() {
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(7),
            timeout_ms: Some(120_000),
            call: ToolCall::GitClone(GitClone {
                url: "https://git.example.com/acme/app.git".to_owned(),
                path: "app".to_owned(),
                branch: Some("main".to_owned()),
                depth: Some(1),
                credentials: Some(GitCredentials {
                    username: Some("x-access-token".to_owned()),
                    token: Secret::new("ghp_secret"),
                }),
            }),
        },
        r#"{"type":"tool_call","request_id":7,"timeout_ms":120000,"call":{"tool":"git_clone","url":"https://git.example.com/acme/app.git","path":"app","branch":"main","depth":1,"credentials":{"username":"x-access-token","token":"ghp_secret"}}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(8),
            timeout_ms: None,
            call: ToolCall::GitCommit(GitCommit {
                repo: "app".to_owned(),
                message: "Fix the parser".to_owned(),
                author_name: "Ada".to_owned(),
                author_email: "ada@example.com".to_owned(),
                allow_empty: false,
            }),
        },
        r#"{"type":"tool_call","request_id":8,"call":{"tool":"git_commit","repo":"app","message":"Fix the parser","author_name":"Ada","author_email":"ada@example.com","allow_empty":false}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(9),
            timeout_ms: None,
            call: ToolCall::GitPush(GitPush {
                repo: "app".to_owned(),
                remote: None,
                branch: "main".to_owned(),
                force: false,
                credentials: None,
            }),
        },
        r#"{"type":"tool_call","request_id":9,"call":{"tool":"git_push","repo":"app","branch":"main","force":false}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(10),
            timeout_ms: None,
            call: ToolCall::LspHover(LspPosition {
                target: target(),
                path: "repo/main.py".to_owned(),
                position: Position {
                    line: 3,
                    character: 7,
                },
            }),
        },
        r#"{"type":"tool_call","request_id":10,"call":{"tool":"lsp_hover","workspace":"repo","language":"python","path":"repo/main.py","position":{"line":3,"character":7}}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(11),
            timeout_ms: None,
            call: ToolCall::LspChange(LspChange {
                target: target(),
                path: "repo/main.py".to_owned(),
                changes: vec![TextChange {
                    range: Some(Range {
                        start: Position {
                            line: 0,
                            character: 4,
                        },
                        end: Position {
                            line: 0,
                            character: 5,
                        },
                    }),
                    text: "y".to_owned(),
                }],
            }),
        },
        r#"{"type":"tool_call","request_id":11,"call":{"tool":"lsp_change","workspace":"repo","language":"python","path":"repo/main.py","changes":[{"range":{"start":{"line":0,"character":4},"end":{"line":0,"character":5}},"text":"y"}]}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(12),
            timeout_ms: None,
            call: ToolCall::LspRequest(LspRequest {
                target: target(),
                method: "textDocument/foldingRange".to_owned(),
                params: serde_json::json!({"textDocument":{"uri":"file:///w/repo/main.py"}}),
            }),
        },
        r#"{"type":"tool_call","request_id":12,"call":{"tool":"lsp_request","workspace":"repo","language":"python","method":"textDocument/foldingRange","params":{"textDocument":{"uri":"file:///w/repo/main.py"}}}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(13),
            timeout_ms: None,
            call: ToolCall::FileWrite(FileWrite {
                path: "bin/run.sh".to_owned(),
                content: "#!/bin/sh\necho hi\n".to_owned(),
                encoding: Encoding::Utf8,
                mode: Some(0o755),
                create_dirs: true,
                append: false,
            }),
        },
        r##"{"type":"tool_call","request_id":13,"call":{"tool":"file_write","path":"bin/run.sh","content":"#!/bin/sh\necho hi\n","mode":493,"create_dirs":true,"append":false}}"##,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(14),
            timeout_ms: None,
            call: ToolCall::FileRead(FileRead {
                path: "logo.png".to_owned(),
                offset: 0,
                len: Some(4096),
            }),
        },
        r#"{"type":"tool_call","request_id":14,"call":{"tool":"file_read","path":"logo.png","offset":0,"len":4096}}"#,
    );
    golden_control(
        ControlToAgent::ToolCall {
            request_id: RequestId(15),
            timeout_ms: None,
            call: ToolCall::Exec(Exec {
                command: "cargo".to_owned(),
                args: vec!["test".to_owned()],
                cwd: Some("app".to_owned()),
                env: BTreeMap::new(),
                stdin: None,
                timeout_ms: Some(600_000),
                max_output: None,
            }),
        },
        r#"{"type":"tool_call","request_id":15,"call":{"tool":"exec","command":"cargo","args":["test"],"cwd":"app","env":{},"timeout_ms":600000}}"#,
    );
    golden_control(
        ControlToAgent::CancelRequest {
            request_id: RequestId(15),
        },
        r#"{"type":"cancel_request","request_id":15}"#,
    );
}

#[test]
fn tool_result_golden() {
    golden_agent(
        AgentToControl::ToolResult {
            request_id: RequestId(20),
            result: ToolOutput::GitStatus(GitStatusOutput {
                branch: Some("main".to_owned()),
                head: Some("4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned()),
                entries: vec![
                    StatusEntry {
                        path: "src/lib.rs".to_owned(),
                        orig_path: None,
                        index: " ".to_owned(),
                        worktree: "M".to_owned(),
                    },
                    StatusEntry {
                        path: "notes.txt".to_owned(),
                        orig_path: None,
                        index: "?".to_owned(),
                        worktree: "?".to_owned(),
                    },
                ],
            }),
        },
        r#"{"type":"tool_result","request_id":20,"result":{"tool":"git_status","branch":"main","head":"4b825dc642cb6eb9a060e54bf8d69288fbee4904","entries":[{"path":"src/lib.rs","index":" ","worktree":"M"},{"path":"notes.txt","index":"?","worktree":"?"}]}}"#,
    );
    golden_agent(
        AgentToControl::ToolResult {
            request_id: RequestId(21),
            result: ToolOutput::LspHover(LspResponse {
                response: serde_json::json!({"contents":{"kind":"markdown","value":"def greet()"}}),
            }),
        },
        r#"{"type":"tool_result","request_id":21,"result":{"tool":"lsp_hover","response":{"contents":{"kind":"markdown","value":"def greet()"}}}}"#,
    );
    golden_agent(
        AgentToControl::ToolResult {
            request_id: RequestId(22),
            result: ToolOutput::Exec(ExecOutput {
                status: ExitStatus::code(1),
                stdout: CapturedOutput {
                    text: "ok\n".to_owned(),
                    total_bytes: 3,
                    omitted_bytes: 0,
                },
                stderr: CapturedOutput {
                    text: "a\n[... 100 bytes omitted ...]\nz\n".to_owned(),
                    total_bytes: 104,
                    omitted_bytes: 100,
                },
                timed_out: false,
                duration_ms: 12,
            }),
        },
        r#"{"type":"tool_result","request_id":22,"result":{"tool":"exec","status":{"code":1},"stdout":{"text":"ok\n","total_bytes":3,"omitted_bytes":0},"stderr":{"text":"a\n[... 100 bytes omitted ...]\nz\n","total_bytes":104,"omitted_bytes":100},"timed_out":false,"duration_ms":12}}"#,
    );
    golden_agent(
        AgentToControl::ToolResult {
            request_id: RequestId(23),
            result: ToolOutput::FileRead(FileContent {
                content: "iVBORw==".to_owned(),
                encoding: Encoding::Base64,
                offset: 0,
                len: 4,
                size: 4,
                eof: true,
            }),
        },
        r#"{"type":"tool_result","request_id":23,"result":{"tool":"file_read","content":"iVBORw==","encoding":"base64","offset":0,"len":4,"size":4,"eof":true}}"#,
    );
    golden_agent(
        AgentToControl::ToolResult {
            request_id: RequestId(24),
            result: ToolOutput::GitPush(GitPushed {
                remote_ref: "refs/heads/main".to_owned(),
                id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".to_owned(),
            }),
        },
        r#"{"type":"tool_result","request_id":24,"result":{"tool":"git_push","remote_ref":"refs/heads/main","id":"4b825dc642cb6eb9a060e54bf8d69288fbee4904"}}"#,
    );
    golden_agent(
        AgentToControl::RequestFailed {
            request_id: RequestId(25),
            code: ErrorCode::NonFastForward,
            message: "the remote's main has commits this branch lacks; fetch and merge, or push with force".to_owned(),
        },
        r#"{"type":"request_failed","request_id":25,"code":"non_fast_forward","message":"the remote's main has commits this branch lacks; fetch and merge, or push with force"}"#,
    );
    golden_agent(
        AgentToControl::LspDiagnostics {
            workspace: "repo".to_owned(),
            language: "python".to_owned(),
            uri: "file:///w/repo/main.py".to_owned(),
            version: Some(2),
            diagnostics: vec![
                serde_json::json!({"message":"undefined name 'x'","range":{"end":{"character":5,"line":0},"start":{"character":4,"line":0}},"severity":1,"source":"pyflakes"}),
            ],
        },
        r#"{"type":"lsp_diagnostics","workspace":"repo","language":"python","uri":"file:///w/repo/main.py","version":2,"diagnostics":[{"message":"undefined name 'x'","range":{"end":{"character":5,"line":0},"start":{"character":4,"line":0}},"severity":1,"source":"pyflakes"}]}"#,
    );
}

#[test]
fn new_error_codes_are_snake_case() {
    for (code, text) in [
        (ErrorCode::AuthFailed, "auth_failed"),
        (ErrorCode::PathEscape, "path_escape"),
        (ErrorCode::NonFastForward, "non_fast_forward"),
        (ErrorCode::ToolFailed, "tool_failed"),
        (ErrorCode::Cancelled, "cancelled"),
        (ErrorCode::LimitExceeded, "limit_exceeded"),
        (ErrorCode::PayloadTooLarge, "payload_too_large"),
    ] {
        assert_eq!(code.as_str(), text);
        assert_eq!(serde_json::to_string(&code).unwrap(), format!("\"{text}\""));
    }
}

#[test]
fn tool_calls_are_checked_against_the_limits() {
    let write = |content: String, encoding: &str| {
        format!(
            r#"{{"type":"tool_call","request_id":1,"call":{{"tool":"file_write","path":"a","content":"{content}","encoding":"{encoding}"}}}}"#
        )
    };
    assert!(ControlToAgent::decode(&write("x".repeat(MAX_FILE_WRITE), "utf8")).is_ok());
    assert!(matches!(
        ControlToAgent::decode(&write("x".repeat(MAX_FILE_WRITE + 1), "utf8")),
        Err(DecodeError::TooLong {
            field: "content",
            ..
        })
    ));
    // Base64 of the largest write still fits a frame.
    let b64 = "A".repeat(MAX_FILE_WRITE.div_ceil(3) * 4);
    assert!(ControlToAgent::decode(&write(b64, "base64")).is_ok());
    let long_path = format!(
        r#"{{"type":"tool_call","request_id":1,"call":{{"tool":"file_stat","path":"{}"}}}}"#,
        "a".repeat(MAX_STRING_LEN + 1)
    );
    assert!(matches!(
        ControlToAgent::decode(&long_path),
        Err(DecodeError::TooLong { field: "path", .. })
    ));
    let nul =
        r#"{"type":"tool_call","request_id":1,"call":{"tool":"file_stat","path":"a\u0000b"}}"#;
    assert!(matches!(
        ControlToAgent::decode(nul),
        Err(DecodeError::Invalid { field: "path", .. })
    ));
    let unknown = r#"{"type":"tool_call","request_id":1,"call":{"tool":"launch_missiles"}}"#;
    assert!(ControlToAgent::decode(unknown).is_err());
    let defaults = ControlToAgent::decode(
        r#"{"type":"tool_call","request_id":1,"call":{"tool":"file_list"}}"#,
    )
    .unwrap();
    assert_eq!(
        defaults,
        ControlToAgent::ToolCall {
            request_id: RequestId(1),
            timeout_ms: None,
            call: ToolCall::FileList(FileList {
                path: String::new(),
                depth: 1
            }),
        }
    );
}

#[test]
fn default_timeouts_follow_the_tool() {
    let status = ToolCall::GitStatus(GitRepo {
        repo: ".".to_owned(),
    });
    assert_eq!(status.default_timeout_ms(), DEFAULT_GIT_TIMEOUT_MS);
    let exec = ToolCall::Exec(Exec {
        command: "true".to_owned(),
        args: vec![],
        cwd: None,
        env: BTreeMap::new(),
        stdin: None,
        timeout_ms: Some(1000),
        max_output: None,
    });
    assert_eq!(exec.default_timeout_ms(), 1000 + EXEC_TIMEOUT_SLACK_MS);
    assert_eq!(exec.name(), "exec");
}

fn open_session(request_id: u64, args: Vec<String>) -> ControlToAgent {
    ControlToAgent::OpenSession {
        request_id: RequestId(request_id),
        session_id: SessionId(0),
        command: None,
        args,
        cwd: None,
        env: BTreeMap::new(),
        size: TermSize { cols: 80, rows: 24 },
    }
}

/// The arguments that make an open_session with ids 0 exactly the limit long.
fn args_filling_a_frame() -> Vec<String> {
    // Each argument adds its length, two quotes and (after the first) a comma.
    let mut len = open_session(0, Vec::new()).encode().len();
    let mut args = Vec::new();
    while len < MAX_CONTROL_FRAME {
        let cost = if args.is_empty() { 2 } else { 3 };
        let n = (MAX_CONTROL_FRAME - len - cost).min(MAX_STRING_LEN);
        args.push("a".repeat(n));
        len += n + cost;
    }
    args
}

#[test]
fn preflight_allows_for_the_widest_ids() {
    let args = args_filling_a_frame();
    let msg = open_session(0, args.clone());
    assert_eq!(msg.encode().len(), MAX_CONTROL_FRAME);
    assert!(ControlToAgent::decode(&msg.encode()).is_ok());
    // The same request sent with a two-digit id no longer fits a frame...
    assert!(matches!(
        ControlToAgent::decode(&open_session(10, args).encode()),
        Err(DecodeError::TooLarge { .. })
    ));
    // ...so the preflight refuses it whatever ids it was built with.
    assert!(matches!(msg.preflight(), Err(DecodeError::TooLarge { .. })));
    let small = ControlToAgent::CloseSession {
        request_id: RequestId(0),
        session_id: SessionId(0),
    };
    assert!(small.preflight().is_ok());
}
