//! A scripted stand-in for the control plane: its stream endpoint, for unit
//! tests of what the CLI does when streams drop, are refused or go silent,
//! and canned HTTP answers (whoami, tokens, tool calls) that record the
//! request. It speaks the real protocol over real sockets; only the script
//! is fake. (The end-to-end tests in `tests/` run the real control plane.)

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use paddock_protocol::api::{SessionInfo, SessionState};
use paddock_protocol::{
    ClientToControl, ControlToClient, DataFrame, ExitStatus, Hello, SandboxId, SessionId,
    StreamMode, TermSize, PROTOCOL_VERSION,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::api::{parse_base_url, Client};

/// The session every script is about.
pub const SESSION: SessionId = SessionId(4);
/// How long a test waits for the CLI to connect before failing.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct FakeControlPlane {
    listener: TcpListener,
    client: Client,
}

impl FakeControlPlane {
    pub async fn start() -> FakeControlPlane {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = parse_base_url(&format!("http://{addr}")).unwrap();
        let client = Client::new(base, "test-token".to_owned()).unwrap();
        FakeControlPlane { listener, client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn next_socket(&self) -> TcpStream {
        let accepted = tokio::time::timeout(ACCEPT_TIMEOUT, self.listener.accept()).await;
        accepted
            .expect("the CLI did not connect in time")
            .unwrap()
            .0
    }

    /// Upgrades the next connection and reads its hello; returns the
    /// request's query string and the socket.
    // The handshake callback's error type is tungstenite's, an HTTP response.
    #[allow(clippy::result_large_err)]
    pub async fn accept(&self) -> (String, FakeStream) {
        let socket = self.next_socket().await;
        let mut query = String::new();
        let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            query = req.uri().query().unwrap_or_default().to_owned();
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(socket, callback)
            .await
            .unwrap();
        let hello = ws.next().await.unwrap().unwrap();
        let text = hello.into_text().unwrap();
        assert!(
            matches!(
                ClientToControl::decode(text.as_str()).unwrap(),
                ClientToControl::Hello { .. }
            ),
            "{text}"
        );
        (query, FakeStream { ws })
    }

    /// Answers the next connection's upgrade with an HTTP error; returns its query string.
    #[allow(clippy::result_large_err)]
    pub async fn refuse(&self, status: u16, body: &str) -> String {
        let socket = self.next_socket().await;
        let mut query = String::new();
        let callback = |req: &Request, _resp: Response| -> Result<Response, ErrorResponse> {
            query = req.uri().query().unwrap_or_default().to_owned();
            let mut refusal = ErrorResponse::new(Some(body.to_owned()));
            *refusal.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Err(refusal)
        };
        assert!(tokio_tungstenite::accept_hdr_async(socket, callback)
            .await
            .is_err());
        query
    }
}

/// One HTTP request as the fake received it.
#[derive(Debug)]
pub struct Recorded {
    pub method: String,
    /// The path and query, e.g. `/v1/audit?limit=5`.
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl FakeControlPlane {
    /// Answers the next HTTP request with `status` and `body`, then closes
    /// the connection; returns the request.
    pub async fn answer(&self, status: u16, content_type: &str, body: &str) -> Recorded {
        let mut socket = self.next_socket().await;
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(
                n > 0,
                "the CLI closed the connection before a whole request"
            );
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap().split(' ');
        let method = request_line.next().unwrap().to_owned();
        let path = request_line.next().unwrap().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body_in = buf[head_end..].to_vec();
        while body_in.len() < length {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the CLI closed the connection mid-body");
            body_in.extend_from_slice(&chunk[..n]);
        }
        let reason = http::StatusCode::from_u16(status)
            .unwrap()
            .canonical_reason()
            .unwrap_or("");
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
        let _ = socket.shutdown().await;
        Recorded {
            method,
            path,
            headers,
            body: body_in,
        }
    }
}

pub struct FakeStream {
    ws: WebSocketStream<TcpStream>,
}

impl FakeStream {
    pub async fn send(&mut self, msg: ControlToClient) {
        self.ws.send(Message::text(msg.encode())).await.unwrap();
    }

    pub async fn welcome(&mut self, from: u64) {
        self.send(welcome(from)).await;
    }

    pub async fn output(&mut self, offset: u64, bytes: &[u8]) {
        let frame = DataFrame::output(SESSION, offset, bytes).encode();
        self.ws.send(Message::binary(frame)).await.unwrap();
    }

    pub async fn exited(&mut self, code: i32, end_offset: u64) {
        self.send(ControlToClient::Exited {
            status: ExitStatus::code(code),
            end_offset,
        })
        .await;
    }

    pub async fn snapshot(&mut self, offset: u64, screen: &str) {
        self.send(ControlToClient::Snapshot {
            offset,
            size: TermSize::DEFAULT,
            screen: screen.to_owned(),
        })
        .await;
    }

    /// Closes with `code`; the client's answer is not awaited.
    pub async fn close(mut self, code: u16, reason: &str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ws.send(Message::Close(Some(frame))).await;
    }

    /// Keeps the socket open without reading it, so pings go unanswered.
    pub fn into_silent(self) -> WebSocketStream<TcpStream> {
        self.ws
    }
}

pub fn welcome(from: u64) -> ControlToClient {
    ControlToClient::Welcome {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            peer: "fake-control-plane/0".to_owned(),
            capabilities: Vec::new(),
        },
        session: Box::new(SessionInfo {
            id: SESSION,
            sandbox_id: SandboxId::from("sbx_1"),
            command: None,
            args: Vec::new(),
            state: SessionState::Running,
            size: TermSize::DEFAULT,
            created_at: "2026-11-26T03:00:00Z".to_owned(),
            ended_at: None,
            exit: None,
            end_offset: from,
            driver: None,
            viewers: 1,
        }),
        mode: StreamMode::Watch,
        from,
    }
}
