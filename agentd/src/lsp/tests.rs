//! Language server tests: text edits in UTF-16 positions, and the whole
//! life of a real server (Debian's `pylsp`, with pyflakes for diagnostics).

use std::time::Duration;

use nix::sys::signal::{kill, Signal as NixSignal};
use nix::unistd::Pid;

use paddock_protocol::tools::Position;

use super::wire::{apply_change, offset_of};
use super::*;
use crate::test_support::TestTools;

#[test]
fn positions_count_utf16_units_and_clamp() {
    let text = "héllo\n😀x\nend";
    let at = |line, character| offset_of(text, Position { line, character });
    assert_eq!(at(0, 0), 0);
    assert_eq!(at(0, 2), 3); // é is one UTF-16 unit, two bytes
    assert_eq!(at(0, 99), 6); // clamped to the end of the line
    assert_eq!(at(1, 2), 11); // 😀 is two UTF-16 units
    assert_eq!(at(2, 1), 14);
    assert_eq!(at(9, 0), text.len());

    let mut doc = "let x = 1;\nlet y = 2;\n".to_owned();
    let range = |sl, sc, el, ec| {
        Some(paddock_protocol::tools::Range {
            start: Position {
                line: sl,
                character: sc,
            },
            end: Position {
                line: el,
                character: ec,
            },
        })
    };
    apply_change(
        &mut doc,
        &TextChange {
            range: range(1, 4, 1, 5),
            text: "why".to_owned(),
        },
    );
    apply_change(
        &mut doc,
        &TextChange {
            range: range(0, 10, 1, 0),
            text: " ".to_owned(),
        },
    );
    assert_eq!(doc, "let x = 1; let why = 2;\n");
    apply_change(
        &mut doc,
        &TextChange {
            range: None,
            text: "all new".to_owned(),
        },
    );
    assert_eq!(doc, "all new");
}

#[test]
fn servers_are_configured_as_language_equals_command() {
    let (language, server) = parse_lsp_server("python=pylsp -v --log-file x").unwrap();
    assert_eq!(language, "python");
    assert_eq!(server.command, "pylsp");
    assert_eq!(server.args, ["-v", "--log-file", "x"]);
    assert!(parse_lsp_server("python").is_err());
    assert!(parse_lsp_server("python=").is_err());
    assert!(parse_lsp_server("=pylsp").is_err());
    assert_eq!(LspConfig::default().servers["python"].command, "pylsp");
}

#[test]
fn file_uris_are_percent_encoded() {
    assert_eq!(
        file_uri(Path::new("/w/a b/ü.py")),
        "file:///w/a%20b/%C3%BC.py"
    );
}

fn python() -> LspTarget {
    LspTarget {
        workspace: ".".to_owned(),
        language: "python".to_owned(),
    }
}

const BROKEN: &str =
    "def greet(name):\n    return 'hello ' + name\n\n\nprint(greet('x'))\nprint(undefined_name)\n";

fn mentions_undefined(diagnostics: &[Value]) -> bool {
    diagnostics.iter().any(|d| {
        d["message"]
            .as_str()
            .unwrap_or("")
            .contains("undefined_name")
    })
}

/// The next diagnostics published for `uri` that satisfy `want`.
async fn next_diagnostics(
    rx: &mut broadcast::Receiver<DiagnosticsEvent>,
    uri: &str,
    want: impl Fn(&[Value]) -> bool,
) -> DiagnosticsEvent {
    let wait = async {
        loop {
            let event = rx.recv().await.expect("diagnostics channel open");
            if event.uri == uri && want(&event.diagnostics) {
                return event;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .expect("no such diagnostics within 60 s")
}

fn position(line: u32, character: u32) -> Position {
    Position { line, character }
}

async fn hover(t: &TestTools, line: u32, character: u32) -> Value {
    let call = ToolCall::LspHover(paddock_protocol::tools::LspPosition {
        target: python(),
        path: "main.py".to_owned(),
        position: position(line, character),
    });
    match t.call(call).await.unwrap() {
        ToolOutput::LspHover(LspResponse { response }) => response,
        other => panic!("not a hover: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pylsp_diagnoses_hovers_defines_and_survives_a_crash() {
    let t = TestTools::new();
    std::fs::write(t.workdir.join("main.py"), BROKEN).unwrap();
    let uri = file_uri(&t.workdir.join("main.py"));
    let mut rx = t.tools.subscribe_diagnostics();

    let opened = t
        .call(ToolCall::LspOpen(paddock_protocol::tools::LspOpen {
            target: python(),
            path: "main.py".to_owned(),
            text: None,
        }))
        .await
        .unwrap();
    assert_eq!(
        opened,
        ToolOutput::LspOpen(LspOpened {
            uri: uri.clone(),
            version: 1
        })
    );
    let event = next_diagnostics(&mut rx, &uri, mentions_undefined).await;
    assert_eq!(
        (event.workspace.as_str(), event.language.as_str()),
        (".", "python")
    );
    let error = event
        .diagnostics
        .iter()
        .find(|d| {
            d["message"]
                .as_str()
                .unwrap_or("")
                .contains("undefined_name")
        })
        .unwrap();
    assert_eq!(error["range"]["start"]["line"], 5);
    // Also served on request.
    let ToolOutput::LspDiagnostics(cached) = t
        .call(ToolCall::LspDiagnostics(
            paddock_protocol::tools::LspDiagnosticsQuery {
                target: python(),
                path: Some("main.py".to_owned()),
            },
        ))
        .await
        .unwrap()
    else {
        panic!("not diagnostics")
    };
    assert_eq!(cached.documents.len(), 1);
    assert!(mentions_undefined(&cached.documents[0].diagnostics));

    // Hover over the call of greet names the function.
    let response = hover(&t, 4, 7).await;
    assert!(response.to_string().contains("greet"), "{response}");
    // Its definition is line 0 of the same file.
    let ToolOutput::LspDefinition(LspResponse { response }) = t
        .call(ToolCall::LspDefinition(
            paddock_protocol::tools::LspPosition {
                target: python(),
                path: "main.py".to_owned(),
                position: position(4, 7),
            },
        ))
        .await
        .unwrap()
    else {
        panic!("not a definition")
    };
    let location = response
        .as_array()
        .and_then(|list| list.first())
        .cloned()
        .unwrap_or(response.clone());
    assert_eq!(location["uri"], uri.as_str(), "{response}");
    assert_eq!(location["range"]["start"]["line"], 0, "{response}");
    assert_eq!(location["range"]["start"]["character"], 4, "{response}");

    // Fix the error with an incremental edit: the diagnostic clears.
    let changed = t
        .call(ToolCall::LspChange(paddock_protocol::tools::LspChange {
            target: python(),
            path: "main.py".to_owned(),
            changes: vec![TextChange {
                range: Some(paddock_protocol::tools::Range {
                    start: position(5, 6),
                    end: position(5, 20),
                }),
                text: "greet('y')".to_owned(),
            }],
        }))
        .await
        .unwrap();
    assert_eq!(
        changed,
        ToolOutput::LspChange(LspOpened {
            uri: uri.clone(),
            version: 2
        })
    );
    next_diagnostics(&mut rx, &uri, |d| !mentions_undefined(d)).await;

    // Document symbols and a raw request go through too.
    let ToolOutput::LspDocumentSymbols(LspResponse { response }) = t
        .call(ToolCall::LspDocumentSymbols(
            paddock_protocol::tools::LspDocument {
                target: python(),
                path: "main.py".to_owned(),
            },
        ))
        .await
        .unwrap()
    else {
        panic!("not symbols")
    };
    assert!(response.to_string().contains("greet"), "{response}");
    let ToolOutput::LspRequest(LspResponse { response }) = t
        .call(ToolCall::LspRequest(paddock_protocol::tools::LspRequest {
            target: python(),
            method: "textDocument/references".to_owned(),
            params: json!({
                "textDocument": {"uri": uri},
                "position": {"line": 0, "character": 5},
                "context": {"includeDeclaration": true},
            }),
        }))
        .await
        .unwrap()
    else {
        panic!("not a raw response")
    };
    // The definition and two calls.
    assert_eq!(response.as_array().map(Vec::len), Some(3), "{response}");

    // Kill the server: the next request restarts it, reopening the
    // document with its current (fixed) text.
    let server = t.tools.lsp().server(&python()).await.unwrap();
    let old_pid = server.pid();
    while rx.try_recv().is_ok() {}
    kill(Pid::from_raw(old_pid as i32), NixSignal::SIGKILL).unwrap();
    let response = hover(&t, 4, 7).await;
    assert!(response.to_string().contains("greet"), "{response}");
    let new_pid = t.tools.lsp().server(&python()).await.unwrap().pid();
    assert_ne!(new_pid, old_pid);
    server.exited().await;
    let reopened = next_diagnostics(&mut rx, &uri, |_| true).await;
    assert!(!mentions_undefined(&reopened.diagnostics), "{reopened:?}");

    t.call(ToolCall::LspClose(paddock_protocol::tools::LspDocument {
        target: python(),
        path: "main.py".to_owned(),
    }))
    .await
    .unwrap();
    t.shutdown().await;
    let server = t.tools.lsp().server(&python()).await;
    assert!(server.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_servers_are_shut_down_and_started_again() {
    let config = LspConfig {
        idle_timeout: Duration::from_millis(300),
        ..LspConfig::default()
    };
    let t = TestTools::with_lsp(config);
    std::fs::write(t.workdir.join("main.py"), BROKEN).unwrap();
    let response = hover(&t, 4, 7).await;
    assert!(response.to_string().contains("greet"), "{response}");
    let server = t.tools.lsp().server(&python()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), server.exited())
        .await
        .expect("the idle server was not shut down");
    assert!(t.tools.lsp().server(&python()).await.is_none());
    let response = hover(&t, 4, 7).await;
    assert!(response.to_string().contains("greet"), "{response}");
    t.shutdown().await;
}

#[tokio::test]
async fn unknown_languages_and_missing_servers_are_clear_errors() {
    let mut config = LspConfig::default();
    config.servers.insert(
        "cobol".to_owned(),
        LspServerConfig {
            command: "/nonexistent/cobol-lsp".to_owned(),
            args: vec![],
        },
    );
    let t = TestTools::with_lsp(config);
    std::fs::write(t.workdir.join("a.cob"), "x").unwrap();
    let open = |language: &str| {
        ToolCall::LspOpen(paddock_protocol::tools::LspOpen {
            target: LspTarget {
                workspace: ".".to_owned(),
                language: language.to_owned(),
            },
            path: "a.cob".to_owned(),
            text: None,
        })
    };
    let err = t.call(open("klingon")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BadRequest);
    assert!(err.message.contains("python"), "{}", err.message);
    let err = t.call(open("cobol")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::SpawnFailed);
    assert!(err.message.contains("cobol-lsp"), "{}", err.message);
    let escape = ToolCall::LspOpen(paddock_protocol::tools::LspOpen {
        target: python(),
        path: "../etc/passwd".to_owned(),
        text: None,
    });
    assert_eq!(
        t.call(escape).await.unwrap_err().code,
        ErrorCode::PathEscape
    );
}
