//! The session stream: one WebSocket that replays and follows a session's
//! output by offset (or joins live with a snapshot of the screen), tells
//! what happens to the session, and carries a driver's keystrokes and
//! terminal size. An idle stream pings, so a link that died silently is
//! noticed and can be reopened.

use std::fmt;
use std::time::Duration;

use anyhow::{anyhow, Result};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::admin::TENANT_HEADER;
use paddock_protocol::api::{SessionInfo, StreamQuery};
use paddock_protocol::{
    ClientToControl, ControlToClient, DataFrame, ErrorCode, FrameKind, Hello, SessionId,
    StreamMode, TermSize, CLOSE_MALFORMED, CLOSE_RATE_LIMITED, CLOSE_REFUSED,
    CLOSE_UNSUPPORTED_VERSION, MAX_DATA_PAYLOAD, MAX_NAME_LEN, PROTOCOL_VERSION,
};
use reqwest::Url;
use tokio::net::TcpStream;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header::AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api::{api_url, describe_failure, display_base, unreachable_message, Client, Target};
use crate::inbox::{Event, Inbox};

/// How long opening the WebSocket, and then waiting for `welcome`, may each take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream may be quiet before it pings the control plane…
const KEEPALIVE_EVERY: Duration = Duration::from_secs(10);
/// …and how long after that ping (or a send) a silent link counts as dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The WebSocket URL of a session's stream, derived from the HTTP base URL.
pub fn stream_url(
    base: &Url,
    sandbox: &str,
    session: SessionId,
    query: &StreamQuery,
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
    url.set_query(Some(&query.to_query_string()));
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

/// Pings a quiet stream and notices when the control plane stops answering.
struct Keepalive {
    tick: Interval,
    limit: Duration,
    /// When the unanswered ping went out; anything received answers it.
    ping_sent: Option<Instant>,
}

impl Keepalive {
    fn new(every: Duration, limit: Duration) -> Self {
        let mut tick = tokio::time::interval_at(Instant::now() + every, every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Keepalive {
            tick,
            limit,
            ping_sent: None,
        }
    }
}

/// An open session stream after a successful hello/welcome exchange.
pub struct SessionStream {
    ws: Ws,
    session: SessionId,
    inbox: Inbox,
    keepalive: Keepalive,
}

impl SessionStream {
    /// Opens the stream, says hello and waits for the welcome. Without
    /// `query.from` the stream joins live: a snapshot of the screen comes first.
    pub async fn connect(
        client: &Client,
        sandbox: &str,
        session: SessionId,
        query: &StreamQuery,
    ) -> Result<(SessionStream, Welcome), StreamError> {
        let target = Target::Session {
            sandbox: sandbox.to_owned(),
            session,
        };
        let url = stream_url(client.base(), sandbox, session, query).map_err(refused)?;
        let mut request = url.as_str().into_client_request().map_err(refused)?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", client.token())).map_err(|_| {
            refused("the API token contains characters that cannot be sent: check PADDOCK_TOKEN or --token")
        })?;
        request.headers_mut().insert(AUTHORIZATION, auth);
        if let Some(tenant) = client.tenant() {
            let value = HeaderValue::from_str(tenant).map_err(|_| {
                refused("the tenant name contains characters that cannot be sent: check --tenant or PADDOCK_TENANT")
            })?;
            request.headers_mut().insert(TENANT_HEADER, value);
        }

        let connector = tokio_tungstenite::Connector::Rustls(client.tls());
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, true, Some(connector));
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
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, ws.send(Message::text(hello.encode()))).await
        {
            Err(_) => {
                return Err(StreamError::Dropped(
                    "the control plane did not take the hello".to_owned(),
                ))
            }
            Ok(sent) => sent.map_err(dropped)?,
        }

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

        let (start, lost) = match query.from {
            Some(asked) if welcome.from > asked => (welcome.from, Some(asked)),
            Some(asked) => (asked, None),
            None => (welcome.from, None),
        };
        let mut inbox = Inbox::new(start, query.from.is_none());
        if let Some(asked) = lost {
            inbox.push(Event::Gap {
                from: asked,
                to: welcome.from,
                reason: "no longer kept by the control plane".to_owned(),
            });
        }
        let stream = SessionStream {
            ws,
            session,
            inbox,
            keepalive: Keepalive::new(KEEPALIVE_EVERY, SILENCE_LIMIT),
        };
        Ok((stream, welcome))
    }

    /// The offset of the first output byte this stream has not delivered:
    /// where a new connection resumes without losing or repeating a byte.
    pub fn next_offset(&self) -> u64 {
        self.inbox.next_offset()
    }

    /// The next event. Cancel-safe: nothing is lost if the future is dropped.
    pub async fn next_event(&mut self) -> Result<Event, StreamError> {
        loop {
            if let Some(event) = self.inbox.pop() {
                return Ok(event);
            }
            let msg = tokio::select! {
                // What has arrived comes first: a reply waiting in the
                // socket proves the link alive, however long this client
                // took to ask for it.
                biased;
                msg = self.ws.next() => msg,
                _ = self.keepalive.tick.tick() => {
                    self.keep_alive().await?;
                    continue;
                }
            };
            self.keepalive.ping_sent = None;
            let msg = match msg {
                None => {
                    return Err(self.ended(StreamError::Dropped("the connection ended".to_owned())))
                }
                Some(Err(err)) => return Err(self.ended(dropped(err))),
                Some(Ok(msg)) => msg,
            };
            match msg {
                Message::Binary(bytes) => self.on_binary(bytes)?,
                Message::Text(text) => match ControlToClient::decode(text.as_str()) {
                    Ok(ControlToClient::Error { code, message }) => {
                        return Err(self.ended(StreamError::Refused {
                            code: Some(code),
                            message,
                        }))
                    }
                    Ok(msg) => self.inbox.control(msg),
                    Err(err) => return Err(self.ended(refused(format!(
                        "the control plane sent a message this paddock cannot read ({err}): use paddock and control-plane of the same version"
                    )))),
                },
                Message::Close(frame) => return Err(self.ended(close_error(frame.as_ref()))),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    fn on_binary(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        let frame = match DataFrame::decode(&bytes) {
            Ok(frame) => frame,
            Err(err) => {
                return Err(self.ended(refused(format!(
                    "the control plane sent a malformed output frame ({err})"
                ))))
            }
        };
        if frame.kind != FrameKind::Output || frame.session_id != self.session {
            return Ok(());
        }
        let (offset, start) = (frame.offset, bytes.len() - frame.payload.len());
        self.inbox.output(offset, bytes, start);
        Ok(())
    }

    /// Pings a quiet link, or gives it up when the last ping went unanswered.
    async fn keep_alive(&mut self) -> Result<(), StreamError> {
        match self.keepalive.ping_sent {
            Some(sent) if sent.elapsed() >= self.keepalive.limit => {
                let silent = self.keepalive.limit.as_secs();
                Err(self.ended(StreamError::Dropped(format!(
                    "the control plane did not answer for {silent}s"
                ))))
            }
            Some(_) => Ok(()),
            None => {
                self.send(Message::Ping(Bytes::new())).await?;
                self.keepalive.ping_sent = Some(Instant::now());
                Ok(())
            }
        }
    }

    /// Sends keystrokes; the control plane ignores them unless this client drives.
    pub async fn send_input(&mut self, bytes: &[u8]) -> Result<(), StreamError> {
        for chunk in bytes.chunks(MAX_DATA_PAYLOAD) {
            let frame = DataFrame::input(self.session, chunk).encode();
            self.send(Message::binary(frame)).await?;
        }
        Ok(())
    }

    /// Tells the control plane the local terminal's size.
    pub async fn send_resize(&mut self, size: TermSize) -> Result<(), StreamError> {
        let msg = ClientToControl::Resize { size };
        self.send(Message::text(msg.encode())).await
    }

    /// Sends one message; a link that cannot take it in time is dead (a
    /// send to a vanished peer blocks once the socket's buffers are full).
    async fn send(&mut self, msg: Message) -> Result<(), StreamError> {
        match tokio::time::timeout(self.keepalive.limit, self.ws.send(msg)).await {
            Ok(sent) => sent.map_err(|err| self.ended(dropped(err))),
            Err(_) => {
                let silent = self.keepalive.limit.as_secs();
                Err(self.ended(StreamError::Dropped(format!(
                    "the control plane did not take data for {silent}s"
                ))))
            }
        }
    }

    /// The connection is over for `err`; returns it.
    fn ended(&mut self, err: StreamError) -> StreamError {
        self.inbox.disconnected();
        err
    }

    /// Closes the stream politely; errors do not matter any more at this point.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }

    #[cfg(test)]
    fn set_keepalive(&mut self, every: Duration, limit: Duration) {
        self.keepalive = Keepalive::new(every, limit);
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
            // A control plane that is starting, overloaded or behind a proxy
            // that lost it may answer these; the others will not change.
            if status.is_server_error()
                || status == http::StatusCode::REQUEST_TIMEOUT
                || status == http::StatusCode::TOO_MANY_REQUESTS
            {
                StreamError::Dropped(message)
            } else {
                let code = serde_json::from_slice::<paddock_protocol::api::ErrorBody>(body)
                    .ok()
                    .map(|b| b.error.code);
                StreamError::Refused { code, message }
            }
        }
        // A certificate that does not verify will not start to on a retry.
        tungstenite::Error::Io(err) => match crate::tls::rejected_certificate(&err) {
            Some(message) => refused(message),
            None => StreamError::Dropped(unreachable_message(base)),
        },
        tungstenite::Error::Url(err) => refused(format!(
            "cannot open a stream at {} ({err}): check PADDOCK_URL or --url",
            display_base(base)
        )),
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
        CLOSE_RATE_LIMITED => refused(format!(
            "the control plane closed the stream: too many messages ({reason}); type or paste more slowly, then attach again"
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
    use crate::fake::{FakeControlPlane, SESSION};

    fn query(mode: StreamMode, take: bool, from: Option<u64>) -> StreamQuery {
        StreamQuery {
            mode,
            take,
            from,
            render: Default::default(),
        }
    }

    #[test]
    fn stream_urls_switch_scheme_and_carry_the_query() {
        let base = parse_base_url("http://127.0.0.1:7700").unwrap();
        let url = stream_url(
            &base,
            "local-1",
            SessionId(3),
            &query(StreamMode::Watch, false, Some(0)),
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
            &query(StreamMode::Attach, true, Some(42)),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:7700/v1/sandboxes/sbx_1/sessions/12/stream?mode=attach&take=true&from=42"
        );
        // Live: no `from` at all.
        let tls = parse_base_url("https://paddock.example.com/?x=1").unwrap();
        let url = stream_url(
            &tls,
            "a b",
            SessionId(1),
            &query(StreamMode::Attach, false, None),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "wss://paddock.example.com/v1/sandboxes/a%20b/sessions/1/stream?mode=attach"
        );
    }

    #[tokio::test]
    async fn a_control_plane_that_stops_answering_pings_is_a_dropped_link() {
        let cp = FakeControlPlane::start().await;
        let watch = query(StreamMode::Watch, false, Some(0));
        let (connected, accepted) = tokio::join!(
            SessionStream::connect(cp.client(), "sb", SESSION, &watch),
            async {
                let (_, mut fake) = cp.accept().await;
                fake.welcome(0).await;
                fake.output(0, b"hi").await;
                fake.into_silent()
            }
        );
        let _silent = accepted;
        let (mut stream, _) = connected.unwrap();
        stream.set_keepalive(Duration::from_millis(50), Duration::from_millis(200));
        let first = stream.next_event().await.unwrap();
        assert_eq!(first, Event::Output(Bytes::from_static(b"hi")));
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), stream.next_event())
            .await
            .expect("a silent link was never given up")
            .unwrap_err();
        assert!(
            matches!(&err, StreamError::Dropped(why) if why.contains("did not answer")),
            "{err:?}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(stream.next_offset(), 2);
    }

    #[tokio::test]
    async fn refusals_before_the_upgrade_are_final_and_server_errors_are_not() {
        let cp = FakeControlPlane::start().await;
        let watch = query(StreamMode::Watch, false, None);
        for (status, code, dropped) in [
            (401, "unauthorized", false),
            (404, "not_found", false),
            (409, "session_ended", false),
            (503, "internal", true),
        ] {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            let (connected, _) = tokio::join!(
                SessionStream::connect(cp.client(), "sb", SESSION, &watch),
                cp.refuse(status, &body)
            );
            let err = connected.err().unwrap();
            assert_eq!(
                matches!(err, StreamError::Dropped(_)),
                dropped,
                "{status}: {err:?}"
            );
        }
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
        assert!(matches!(
            close_error(Some(&frame(4001, "bad frame"))),
            StreamError::Refused { .. }
        ));
        let err = close_error(Some(&frame(4004, "more than 1000 messages a second")));
        assert!(
            matches!(&err, StreamError::Refused { message, .. } if message.contains("1000 messages") && message.contains("more slowly"))
        );
        // A normal close without `exited` first is a stream that ended early.
        assert!(matches!(
            close_error(Some(&frame(1000, ""))),
            StreamError::Dropped(_)
        ));
        assert!(matches!(close_error(None), StreamError::Dropped(_)));
    }
}
