//! The session stream: one WebSocket that replays and follows a session's
//! output by offset, tells what happens to the session, and carries a
//! driver's keystrokes and terminal size.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::api::SessionInfo;
use paddock_protocol::{
    ClientToControl, ControlToClient, DataFrame, ErrorCode, ExitStatus, FrameKind, Hello,
    SessionId, StreamMode, TermSize, CLOSE_MALFORMED, CLOSE_REFUSED, CLOSE_UNSUPPORTED_VERSION,
    MAX_DATA_PAYLOAD, MAX_NAME_LEN, PROTOCOL_VERSION,
};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api::{api_url, describe_failure, display_base, unreachable_message, Client, Target};

/// How long opening the WebSocket, and then waiting for `welcome`, may each take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client asks of a stream: its mode, whether to take over, where to replay from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRequest {
    pub mode: StreamMode,
    pub take: bool,
    pub from: Option<u64>,
}

/// The WebSocket URL of a session's stream, derived from the HTTP base URL.
pub fn stream_url(
    base: &Url,
    sandbox: &str,
    session: SessionId,
    req: &StreamRequest,
) -> Result<Url> {
    let id = session.to_string();
    let mut url = api_url(
        base,
        &["v1", "sandboxes", sandbox, "sessions", &id, "stream"],
    )?;
    let scheme = match url.scheme() {
        "http" => "ws",
        "https" => "wss",
        other => {
            return Err(anyhow!(
                "cannot derive a WebSocket URL from a `{other}` URL"
            ))
        }
    };
    url.set_scheme(scheme)
        .map_err(|()| anyhow!("cannot derive a WebSocket URL from `{base}`"))?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair(
            "mode",
            match req.mode {
                StreamMode::Watch => "watch",
                StreamMode::Attach => "attach",
            },
        );
        if req.take {
            query.append_pair("take", "true");
        }
        if let Some(from) = req.from {
            query.append_pair("from", &from.to_string());
        }
    }
    Ok(url)
}

/// Who this client is, as shown to others as a session's driver:
/// `paddock/0.1.0 (alice@laptop)`.
pub fn peer_name() -> String {
    let user = std::env::var("USER").unwrap_or_default();
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    format_peer(&user, &host)
}

fn format_peer(user: &str, host: &str) -> String {
    fn short(s: &str) -> String {
        s.chars()
            .filter(|c| c.is_ascii_graphic() && *c != '@')
            .take(32)
            .collect()
    }
    let (user, host) = (short(user), short(host));
    let who = match (user.is_empty(), host.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" ({user})"),
        (true, false) => format!(" (@{host})"),
        (false, false) => format!(" ({user}@{host})"),
    };
    let peer = format!("paddock/{}{who}", env!("CARGO_PKG_VERSION"));
    peer.chars().take(MAX_NAME_LEN).collect()
}

/// Why a stream could not be opened or ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The connection failed or dropped; opening it again may help.
    Dropped(String),
    /// The control plane refused or ended the stream; trying again will not help.
    Refused {
        code: Option<ErrorCode>,
        message: String,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Dropped(message) | StreamError::Refused { message, .. } => {
                f.write_str(message)
            }
        }
    }
}

impl std::error::Error for StreamError {}

/// What the control plane granted in its `welcome`.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub session: SessionInfo,
    pub mode: StreamMode,
    pub from: u64,
}

/// Something that happened on the stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// New output bytes, contiguous with everything delivered before (or after a `Gap`).
    Output(Bytes),
    /// Output in `[from, to)` will never arrive.
    Gap {
        from: u64,
        to: u64,
        reason: String,
    },
    /// The session ended; every byte of its output was delivered before this.
    Exited {
        status: ExitStatus,
        end_offset: u64,
    },
    ModeChanged {
        mode: StreamMode,
        reason: String,
    },
    DriverChanged(Option<String>),
    Resized(TermSize),
}

/// Tracks the next expected stream offset, so output is delivered once and in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    next: u64,
}

/// How to deliver one output frame: skip its first `skip` bytes (already
/// delivered), after noting the hole `gap`, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub skip: usize,
    pub gap: Option<(u64, u64)>,
}

impl Cursor {
    pub fn new(next: u64) -> Self {
        Cursor { next }
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    /// Accounts for `len` bytes starting at `offset`.
    pub fn accept(&mut self, offset: u64, len: usize) -> Accepted {
        let end = offset.saturating_add(len as u64);
        if end <= self.next {
            return Accepted {
                skip: len,
                gap: None,
            };
        }
        let accepted = if offset < self.next {
            // end > next, so the difference is less than len.
            Accepted {
                skip: (self.next - offset) as usize,
                gap: None,
            }
        } else if offset > self.next {
            Accepted {
                skip: 0,
                gap: Some((self.next, offset)),
            }
        } else {
            Accepted { skip: 0, gap: None }
        };
        self.next = end;
        accepted
    }

    /// Moves past output that will never come.
    pub fn skip_to(&mut self, to: u64) {
        self.next = self.next.max(to);
    }
}

/// An open session stream after a successful hello/welcome exchange.
pub struct SessionStream {
    ws: Ws,
    session: SessionId,
    cursor: Cursor,
    pending: VecDeque<Event>,
}

impl SessionStream {
    /// Opens the stream, says hello and waits for the welcome.
    pub async fn connect(
        client: &Client,
        sandbox: &str,
        session: SessionId,
        req: &StreamRequest,
    ) -> Result<(SessionStream, Welcome), StreamError> {
        let target = Target::Session {
            sandbox: sandbox.to_owned(),
            session,
        };
        let url = stream_url(client.base(), sandbox, session, req).map_err(refused)?;
        let mut request = url.as_str().into_client_request().map_err(refused)?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", client.token())).map_err(|_| {
            refused("the API token contains characters that cannot be sent: check PADDOCK_TOKEN or --token")
        })?;
        request.headers_mut().insert(AUTHORIZATION, auth);

        let connecting = tokio_tungstenite::connect_async(request);
        let mut ws = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Err(_) => {
                return Err(StreamError::Dropped(format!(
                    "the control plane at {} did not accept the stream within {}s",
                    display_base(client.base()),
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            Ok(Err(err)) => return Err(connect_error(err, client.base(), &target)),
            Ok(Ok((ws, _response))) => ws,
        };

        let hello = ClientToControl::Hello {
            hello: Hello {
                protocol_version: PROTOCOL_VERSION,
                peer: peer_name(),
                capabilities: Vec::new(),
            },
        };
        ws.send(Message::text(hello.encode()))
            .await
            .map_err(dropped)?;

        let welcome = match tokio::time::timeout(HANDSHAKE_TIMEOUT, wait_for_welcome(&mut ws)).await
        {
            Err(_) => {
                return Err(StreamError::Dropped(format!(
                    "the control plane did not answer the hello within {}s",
                    HANDSHAKE_TIMEOUT.as_secs()
                )))
            }
            Ok(welcome) => welcome?,
        };

        let mut pending = VecDeque::new();
        let start = match req.from {
            Some(asked) if welcome.from > asked => {
                pending.push_back(Event::Gap {
                    from: asked,
                    to: welcome.from,
                    reason: "no longer kept by the control plane".to_owned(),
                });
                welcome.from
            }
            Some(asked) => asked,
            None => welcome.from,
        };
        let stream = SessionStream {
            ws,
            session,
            cursor: Cursor::new(start),
            pending,
        };
        Ok((stream, welcome))
    }

    /// The offset of the next output byte this stream will deliver.
    pub fn next_offset(&self) -> u64 {
        self.cursor.next()
    }

    /// The next event. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next_event(&mut self) -> Result<Event, StreamError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let msg = match self.ws.next().await {
                None => return Err(StreamError::Dropped("the connection ended".to_owned())),
                Some(Err(err)) => return Err(dropped(err)),
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Binary(bytes) => self.on_binary(bytes)?,
                Message::Text(text) => {
                    let msg = ControlToClient::decode(text.as_str()).map_err(|err| {
                        refused(format!("the control plane sent a message this paddock cannot read ({err}): use paddock and control-plane of the same version"))
                    })?;
                    self.on_control(msg)?;
                }
                Message::Close(frame) => return Err(close_error(frame.as_ref())),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn on_binary(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let frame = DataFrame::decode(&bytes).map_err(|err| {
            refused(format!(
                "the control plane sent a malformed output frame ({err})"
            ))
        })?;
        if frame.kind != FrameKind::Output || frame.session_id != self.session {
            return Ok(());
        }
        let (offset, len) = (frame.offset, frame.payload.len());
        let accepted = self.cursor.accept(offset, len);
        if let Some((from, to)) = accepted.gap {
            self.pending.push_back(Event::Gap {
                from,
                to,
                reason: "missing from the stream".to_owned(),
            });
        }
        if accepted.skip < len {
            let start = bytes.len() - len + accepted.skip;
            self.pending.push_back(Event::Output(bytes.slice(start..)));
        }
        Ok(())
    }

    fn on_control(&mut self, msg: ControlToClient) -> Result<(), StreamError> {
        let event = match msg {
            ControlToClient::Welcome { .. } => return Ok(()),
            ControlToClient::Gap { from, to, reason } => {
                if to <= self.cursor.next() {
                    return Ok(());
                }
                let from = from.max(self.cursor.next());
                self.cursor.skip_to(to);
                Event::Gap { from, to, reason }
            }
            ControlToClient::Exited { status, end_offset } => Event::Exited { status, end_offset },
            ControlToClient::ModeChanged { mode, reason } => Event::ModeChanged { mode, reason },
            ControlToClient::DriverChanged { driver } => Event::DriverChanged(driver),
            ControlToClient::Resized { size } => Event::Resized(size),
            ControlToClient::Error { code, message } => {
                return Err(StreamError::Refused {
                    code: Some(code),
                    message,
                })
            }
        };
        self.pending.push_back(event);
        Ok(())
    }

    /// Sends keystrokes; the control plane ignores them unless this client drives.
    pub async fn send_input(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        for chunk in bytes.chunks(MAX_DATA_PAYLOAD) {
            let frame = DataFrame::input(self.session, chunk).encode();
            self.ws
                .send(Message::binary(frame))
                .await
                .map_err(dropped)?;
        }
        Ok(())
    }

    /// Tells the control plane the local terminal's size.
    pub async fn send_resize(&mut self, size: TermSize) -> Result<(), StreamError> {
        let msg = ClientToControl::Resize { size };
        self.ws
            .send(Message::text(msg.encode()))
            .await
            .map_err(dropped)
    }

    /// Closes the stream politely; errors do not matter any more at this point.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

async fn wait_for_welcome(ws: &mut Ws) -> Result<Welcome, StreamError> {
    loop {
        let msg = match ws.next().await {
            None => {
                return Err(StreamError::Dropped(
                    "the connection ended before the control plane's welcome".to_owned(),
                ))
            }
            Some(Err(err)) => return Err(dropped(err)),
            Some(Ok(msg)) => msg,
        };
        match msg {
            Message::Text(text) => match ControlToClient::decode(text.as_str()) {
                Ok(ControlToClient::Welcome {
                    session, mode, from, ..
                }) => {
                    return Ok(Welcome {
                        session: *session,
                        mode,
                        from,
                    })
                }
                Ok(ControlToClient::Error { code, message }) => {
                    return Err(StreamError::Refused {
                        code: Some(code),
                        message,
                    })
                }
                // Events before the welcome carry nothing this client needs yet.
                Ok(_) => {}
                Err(err) => {
                    return Err(refused(format!(
                        "the control plane answered the hello with something this paddock cannot read ({err}): use paddock and control-plane of the same version"
                    )))
                }
            },
            Message::Close(frame) => return Err(close_error(frame.as_ref())),
            Message::Binary(_) => {
                return Err(refused(
                    "the control plane sent output before its welcome".to_owned(),
                ))
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

fn refused(message: impl fmt::Display) -> StreamError {
    StreamError::Refused {
        code: None,
        message: message.to_string(),
    }
}

fn dropped(err: tungstenite::Error) -> StreamError {
    StreamError::Dropped(format!("the connection to the control plane broke ({err})"))
}

/// Maps a failed WebSocket open to a message that says what to do next.
fn connect_error(err: tungstenite::Error, base: &Url, target: &Target) -> StreamError {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status();
            let body = response.body().as_deref().unwrap_or_default();
            let message = describe_failure(status, body, target);
            if status.is_server_error() {
                StreamError::Dropped(message)
            } else {
                let code = serde_json::from_slice::<paddock_protocol::api::ErrorBody>(body)
                    .ok()
                    .map(|b| b.error.code);
                StreamError::Refused { code, message }
            }
        }
        tungstenite::Error::Io(_) => StreamError::Dropped(unreachable_message(base)),
        tungstenite::Error::Url(tungstenite::error::UrlError::TlsFeatureNotEnabled) => {
            refused("this paddock cannot speak TLS yet: use an http:// control plane URL")
        }
        other => StreamError::Dropped(format!(
            "could not open the session stream at {} ({other})",
            display_base(base)
        )),
    }
}

/// Maps a close frame to why the stream ended.
fn close_error(frame: Option<&CloseFrame>) -> StreamError {
    let Some(frame) = frame else {
        return StreamError::Dropped("the control plane closed the stream".to_owned());
    };
    let code = u16::from(frame.code);
    let reason = frame.reason.as_str();
    match code {
        CLOSE_UNSUPPORTED_VERSION => StreamError::Refused {
            code: Some(ErrorCode::UnsupportedVersion),
            message: format!(
                "the control plane refused this paddock's protocol version ({reason}): use paddock and control-plane of the same version"
            ),
        },
        CLOSE_REFUSED => refused(format!("the control plane refused the stream ({reason})")),
        CLOSE_MALFORMED => refused(format!(
            "the control plane refused a frame from this paddock ({reason}): this is a bug in paddock"
        )),
        _ if reason.is_empty() => {
            StreamError::Dropped(format!("the control plane closed the stream (code {code})"))
        }
        _ => StreamError::Dropped(format!(
            "the control plane closed the stream (code {code}: {reason})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

    use super::*;
    use crate::api::parse_base_url;

    fn req(mode: StreamMode, take: bool, from: Option<u64>) -> StreamRequest {
        StreamRequest { mode, take, from }
    }

    #[test]
    fn stream_urls_switch_scheme_and_carry_the_query() {
        let base = parse_base_url("http://127.0.0.1:7700").unwrap();
        let url = stream_url(
            &base,
            "local-1",
            SessionId(3),
            &req(StreamMode::Watch, false, Some(0)),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:7700/v1/sandboxes/local-1/sessions/3/stream?mode=watch&from=0"
        );
        let url = stream_url(
            &base,
            "sbx_1",
            SessionId(12),
            &req(StreamMode::Attach, true, Some(42)),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:7700/v1/sandboxes/sbx_1/sessions/12/stream?mode=attach&take=true&from=42"
        );
        let tls = parse_base_url("https://paddock.example.com/").unwrap();
        let url = stream_url(
            &tls,
            "a b",
            SessionId(1),
            &req(StreamMode::Attach, false, None),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "wss://paddock.example.com/v1/sandboxes/a%20b/sessions/1/stream?mode=attach"
        );
    }

    #[test]
    fn cursor_delivers_each_byte_once_and_notes_holes() {
        let mut cursor = Cursor::new(10);
        // Entirely before the cursor: skip all of it.
        assert_eq!(
            cursor.accept(0, 10),
            Accepted {
                skip: 10,
                gap: None
            }
        );
        assert_eq!(cursor.next(), 10);
        // Overlapping the cursor: skip the seen prefix.
        assert_eq!(cursor.accept(5, 10), Accepted { skip: 5, gap: None });
        assert_eq!(cursor.next(), 15);
        // Contiguous.
        assert_eq!(cursor.accept(15, 3), Accepted { skip: 0, gap: None });
        assert_eq!(cursor.next(), 18);
        // A hole.
        assert_eq!(
            cursor.accept(20, 2),
            Accepted {
                skip: 0,
                gap: Some((18, 20))
            }
        );
        assert_eq!(cursor.next(), 22);
        // Empty frames change nothing.
        assert_eq!(cursor.accept(22, 0), Accepted { skip: 0, gap: None });
        assert_eq!(cursor.next(), 22);
        cursor.skip_to(30);
        cursor.skip_to(25);
        assert_eq!(cursor.next(), 30);
    }

    #[test]
    fn peer_names_are_short_and_printable() {
        assert_eq!(
            format_peer("alice", "laptop"),
            format!("paddock/{} (alice@laptop)", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(
            format_peer("", ""),
            format!("paddock/{}", env!("CARGO_PKG_VERSION"))
        );
        let long = format_peer(&"u".repeat(500), "h\x1b@x");
        assert!(long.len() < 80, "{long}");
        assert!(long.ends_with("@hx)"), "{long}");
    }

    #[test]
    fn close_codes_map_to_refusals_or_drops() {
        let frame = |code: u16, reason: &str| CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let err = close_error(Some(&frame(
            4000,
            "unsupported protocol version 9; supported: 1",
        )));
        assert!(matches!(
            &err,
            StreamError::Refused { code: Some(ErrorCode::UnsupportedVersion), message }
                if message.contains("supported: 1")
        ));
        let err = close_error(Some(&frame(4003, "session 4 is driven by owner")));
        assert!(
            matches!(&err, StreamError::Refused { message, .. } if message.contains("driven by owner"))
        );
        assert!(matches!(
            close_error(Some(&frame(1001, "shutting down"))),
            StreamError::Dropped(_)
        ));
        assert!(matches!(close_error(None), StreamError::Dropped(_)));
    }
}
