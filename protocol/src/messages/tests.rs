//! Golden tests: the exact bytes of every control message in each direction.
//! A change here is a change of the wire; it needs a protocol version thought.

use std::collections::BTreeMap;

use super::*;
use crate::api::SessionState;

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
