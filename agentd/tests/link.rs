//! `agentd::run` against a scripted control plane (a bare WebSocket server
//! on 127.0.0.1:0): authentication, handshake, refusals, a session's round
//! trip, resuming after a reconnect (from below what was sent, as acks
//! allow), exits held until recorded, malformed frames and shutdown.

// The handshake callbacks' signature, large error included, is tungstenite's.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::time::Duration;

use agentd::{Config, Refused};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::{
    AgentToControl, ControlToAgent, DataFrame, ExitStatus, FrameKind, Hello, LiveSession,
    RequestId, ResumeFrom, SandboxId, SessionId, TermSize, CLOSE_MALFORMED,
    CLOSE_UNSUPPORTED_VERSION, PROTOCOL_VERSION,
};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(10);
const TOKEN: &str = "sandbox-token-1";

type Ws = WebSocketStream<TcpStream>;

/// A scripted control plane and the agentd dialling it.
struct Harness {
    listener: TcpListener,
    shutdown: CancellationToken,
    agentd: Option<JoinHandle<anyhow::Result<()>>>,
    _workdir: TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Harness {
    start_in(tempfile::tempdir().unwrap()).await
}

/// Starts agentd with its workdir at `work` under `workdir`.
async fn start_in(workdir: TempDir) -> Harness {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = Config::new(base, TOKEN, workdir.path().join("work"));
    config.default_shell = Some("/bin/sh".into());
    let shutdown = CancellationToken::new();
    let agentd = tokio::spawn(agentd::run(config, shutdown.clone()));
    Harness {
        listener,
        shutdown,
        agentd: Some(agentd),
        _workdir: workdir,
    }
}

impl Harness {
    async fn tcp(&self) -> TcpStream {
        let (stream, _) = tokio::time::timeout(DEADLINE, self.listener.accept())
            .await
            .expect("agentd dialled in time")
            .unwrap();
        stream
    }

    /// Accepts agentd's next connection, checking its path and token.
    async fn accept(&self) -> Ws {
        let check = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
            assert_eq!(request.uri().path(), "/v1/agent/connect");
            let auth = request.headers().get("authorization").expect("a token");
            assert_eq!(auth.to_str().unwrap(), format!("Bearer {TOKEN}"));
            Ok(response)
        };
        tokio_tungstenite::accept_hdr_async(self.tcp().await, check)
            .await
            .unwrap()
    }

    /// Accepts a connection and reads its hello.
    async fn hello(&self) -> (Ws, Vec<LiveSession>) {
        let mut ws = self.accept().await;
        match recv_control(&mut ws).await {
            AgentToControl::Hello { hello, sessions } => {
                assert_eq!(hello.protocol_version, PROTOCOL_VERSION);
                assert!(hello.peer.starts_with("agentd/"), "{}", hello.peer);
                assert_eq!(hello.capabilities, ["pty", "tools"]);
                (ws, sessions)
            }
            other => panic!("expected hello, got {other:?}"),
        }
    }

    /// Waits for `run` to return.
    async fn finished(&mut self) -> anyhow::Result<()> {
        let agentd = self.agentd.take().unwrap();
        tokio::time::timeout(DEADLINE, agentd)
            .await
            .expect("agentd returned in time")
            .unwrap()
    }
}

async fn recv(ws: &mut Ws) -> Message {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .unwrap();
        if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
            return msg;
        }
    }
}

async fn recv_control(ws: &mut Ws) -> AgentToControl {
    match recv(ws).await {
        Message::Text(text) => AgentToControl::decode(&text).unwrap(),
        other => panic!("expected a control message, got {other:?}"),
    }
}

async fn send(ws: &mut Ws, msg: ControlToAgent) {
    ws.send(Message::text(msg.encode())).await.unwrap();
}

fn welcome(resume: Vec<ResumeFrom>) -> ControlToAgent {
    ControlToAgent::Welcome {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            peer: "scripted/0".into(),
            capabilities: vec![],
        },
        sandbox_id: SandboxId::from("sbx_test"),
        heartbeat_ms: 15_000,
        resume,
    }
}

fn open_shell(id: u64) -> ControlToAgent {
    ControlToAgent::OpenSession {
        request_id: RequestId(id),
        session_id: SessionId(id),
        command: None,
        args: vec![],
        cwd: None,
        env: BTreeMap::new(),
        size: TermSize::DEFAULT,
    }
}

async fn input(ws: &mut Ws, id: u64, bytes: &[u8]) {
    let frame = DataFrame::input(SessionId(id), bytes).encode();
    ws.send(Message::binary(frame)).await.unwrap();
}

/// One session's output as received, checked for contiguous offsets.
struct Stream {
    next: u64,
    bytes: Vec<u8>,
}

impl Stream {
    fn from(offset: u64) -> Self {
        Stream {
            next: offset,
            bytes: Vec::new(),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Reads until the output contains `needle`, returning control messages seen meanwhile.
    async fn until_text(&mut self, ws: &mut Ws, needle: &str) -> Vec<AgentToControl> {
        let mut control = Vec::new();
        while !self.text().contains(needle) {
            if let Some(msg) = self.take(ws).await {
                control.push(msg);
            }
        }
        control
    }

    /// Reads until the session's exit.
    async fn until_exit(&mut self, ws: &mut Ws) -> ExitStatus {
        loop {
            if let Some(AgentToControl::SessionExited {
                status, end_offset, ..
            }) = self.take(ws).await
            {
                assert_eq!(end_offset, self.next);
                return status;
            }
        }
    }

    async fn take(&mut self, ws: &mut Ws) -> Option<AgentToControl> {
        match recv(ws).await {
            Message::Binary(bytes) => {
                let frame = DataFrame::decode(&bytes).unwrap();
                assert_eq!(frame.kind, FrameKind::Output);
                assert_eq!(frame.offset, self.next, "offsets are contiguous");
                self.next += frame.payload.len() as u64;
                self.bytes.extend_from_slice(frame.payload);
                None
            }
            Message::Text(text) => Some(AgentToControl::decode(&text).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refused_token_stops_agentd() {
    let mut harness = start().await;
    let refuse = |_: &Request, _: Response| -> Result<Response, ErrorResponse> {
        let mut response = ErrorResponse::new(Some("bad token".into()));
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        Err(response)
    };
    let _ = tokio_tungstenite::accept_hdr_async(harness.tcp().await, refuse).await;
    let err = harness.finished().await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<Refused>(),
        Some(Refused::Token { status: 401 })
    ));
    assert!(err.to_string().contains("PADDOCK_AGENTD_TOKEN"), "{err}");
}

#[tokio::test]
async fn a_refused_version_stops_agentd() {
    let mut harness = start().await;
    let (mut ws, _) = harness.hello().await;
    let close = CloseFrame {
        code: CloseCode::from(CLOSE_UNSUPPORTED_VERSION),
        reason: "unsupported protocol version 1; supported: 2".into(),
    };
    ws.close(Some(close)).await.unwrap();
    let err = harness.finished().await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<Refused>(),
        Some(Refused::Version { .. })
    ));
    assert!(err.to_string().contains("supported: 2"), "{err}");
}

#[tokio::test]
async fn a_session_survives_a_reconnect_and_resumes_where_asked() {
    let mut harness = start().await;
    let (mut ws, sessions) = harness.hello().await;
    assert!(sessions.is_empty());
    send(&mut ws, welcome(vec![])).await;
    send(&mut ws, open_shell(1)).await;
    input(&mut ws, 1, b"echo o''ne\r").await;
    let mut output = Stream::from(0);
    let control = output.until_text(&mut ws, "one\r\n").await;
    assert!(matches!(
        control[0],
        AgentToControl::SessionOpened {
            request_id: RequestId(1),
            session_id: SessionId(1),
            pid: Some(_)
        }
    ));

    // The link drops without a close; the shell goes on.
    drop(ws);
    let (mut ws, sessions) = harness.hello().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, SessionId(1));
    assert!(sessions[0].next_offset >= output.next);
    // Ask again for everything after what arrived, and more input.
    let resume = ResumeFrom {
        session_id: SessionId(1),
        offset: output.next,
    };
    send(&mut ws, welcome(vec![resume])).await;
    input(&mut ws, 1, b"echo t''wo; exit 4\r").await;
    let status = output.until_exit(&mut ws).await;
    assert_eq!(status, ExitStatus::code(4));
    assert!(output.text().contains("two\r\n"));

    harness.shutdown.cancel();
    match recv(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a normal close, got {other:?}"),
    }
    harness.finished().await.unwrap();
}

#[tokio::test]
async fn stale_spill_files_are_removed_at_startup() {
    let workdir = tempfile::tempdir().unwrap();
    let state = workdir
        .path()
        .join("work")
        .join(agentd::DEFAULT_STATE_SUBDIR);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("session-9-0.spill"), b"from a previous agentd").unwrap();
    std::fs::write(state.join("notes.txt"), b"not agentd's").unwrap();
    let harness = start_in(workdir).await;
    // The state directory is ready before agentd dials.
    let (_ws, sessions) = harness.hello().await;
    assert!(sessions.is_empty());
    assert!(!state.join("session-9-0.spill").exists());
    assert!(state.join("notes.txt").exists());
}

#[tokio::test]
async fn a_malformed_frame_closes_the_connection_and_agentd_reconnects() {
    let harness = start().await;
    let (mut ws, _) = harness.hello().await;
    send(&mut ws, welcome(vec![])).await;
    ws.send(Message::text("{\"type\":\"no_such_message\"}"))
        .await
        .unwrap();
    match recv(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(u16::from(frame.code), CLOSE_MALFORMED);
            assert!(frame.reason.len() <= 120);
        }
        other => panic!("expected a close, got {other:?}"),
    }
    let (_ws, sessions) = harness.hello().await;
    assert!(sessions.is_empty());
}

#[tokio::test]
async fn shutdown_hangs_up_sessions_and_reports_their_exit() {
    let mut harness = start().await;
    let (mut ws, _) = harness.hello().await;
    send(&mut ws, welcome(vec![])).await;
    let sleep = ControlToAgent::OpenSession {
        request_id: RequestId(3),
        session_id: SessionId(3),
        command: Some("sleep".into()),
        args: vec!["30".into()],
        cwd: None,
        env: BTreeMap::new(),
        size: TermSize::DEFAULT,
    };
    send(&mut ws, sleep).await;
    assert!(matches!(
        recv_control(&mut ws).await,
        AgentToControl::SessionOpened { .. }
    ));
    harness.shutdown.cancel();
    let status = Stream::from(0).until_exit(&mut ws).await;
    assert_eq!(status, ExitStatus::signal(1));
    send(
        &mut ws,
        ControlToAgent::ExitRecorded {
            session_id: SessionId(3),
        },
    )
    .await;
    harness.finished().await.unwrap();
}

#[tokio::test]
async fn unacknowledged_output_and_an_unrecorded_exit_are_sent_again_after_a_reconnect() {
    let harness = start().await;
    let (mut ws, _) = harness.hello().await;
    send(&mut ws, welcome(vec![])).await;
    send(&mut ws, open_shell(1)).await;
    input(&mut ws, 1, b"echo o''ne\r").await;
    let mut first = Stream::from(0);
    first.until_text(&mut ws, "one\r\n").await;
    // Only the first three bytes are stored when the control plane goes.
    send(
        &mut ws,
        ControlToAgent::Ack {
            session_id: SessionId(1),
            offset: 3,
        },
    )
    .await;
    drop(ws);

    let (mut ws, sessions) = harness.hello().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].retained_from, 3);
    assert!(sessions[0].next_offset >= first.next);
    // It resumes from what it stored, below what agentd sent before.
    let resume = ResumeFrom {
        session_id: SessionId(1),
        offset: 3,
    };
    send(&mut ws, welcome(vec![resume])).await;
    let mut again = Stream::from(3);
    while again.next < first.next {
        assert_eq!(again.take(&mut ws).await, None);
    }
    // The same bytes again (and maybe more, such as the next prompt).
    let replayed = first.bytes.len() - 3;
    assert_eq!(again.bytes[..replayed], first.bytes[3..]);
    input(&mut ws, 1, b"exit 4\r").await;
    assert_eq!(again.until_exit(&mut ws).await, ExitStatus::code(4));
    let end = again.next;
    send(
        &mut ws,
        ControlToAgent::Ack {
            session_id: SessionId(1),
            offset: end,
        },
    )
    .await;
    // The exit is not recorded before the link drops.
    drop(ws);

    let (mut ws, sessions) = harness.hello().await;
    assert_eq!(sessions.len(), 1, "an unrecorded exit keeps the session");
    assert_eq!(
        (sessions[0].retained_from, sessions[0].next_offset),
        (end, end)
    );
    let resume = ResumeFrom {
        session_id: SessionId(1),
        offset: end,
    };
    send(&mut ws, welcome(vec![resume])).await;
    let mut last = Stream::from(end);
    assert_eq!(last.until_exit(&mut ws).await, ExitStatus::code(4));
    assert!(last.bytes.is_empty());
    send(
        &mut ws,
        ControlToAgent::ExitRecorded {
            session_id: SessionId(1),
        },
    )
    .await;
    // Recorded: gone from the next hello. Closing normally makes agentd
    // redial; by then the exit_recorded sent before has been handled.
    ws.close(None).await.unwrap();
    let (_ws, sessions) = harness.hello().await;
    assert!(sessions.is_empty(), "{sessions:?}");
}

#[tokio::test]
async fn a_silent_link_is_dropped_and_redialled() {
    let harness = start().await;
    let (mut ws, _) = harness.hello().await;
    let mut quick = welcome(vec![]);
    if let ControlToAgent::Welcome { heartbeat_ms, .. } = &mut quick {
        *heartbeat_ms = 100;
    }
    send(&mut ws, quick).await;
    let first = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(first, Message::Ping(_)), "{first:?}");
    // From now on this side stays silent (it answers no ping), so agentd
    // must give the link up after three heartbeats and dial again.
    let (_ws, _) = harness.hello().await;
    drop(ws);
}
