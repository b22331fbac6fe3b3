//! WebSocket clients for tests: a session-stream client that checks every
//! output frame's offset, and raw helpers that play a (misbehaving) agent.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::api::SessionInfo;
use paddock_protocol::{
    AgentToControl, ClientToControl, ControlToAgent, ControlToClient, DataFrame, ErrorCode,
    ExitStatus, FrameKind, Hello, SessionId, StreamMode, TermSize, PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a stream handshake (upgrade, hello, welcome) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `http://host:port` → `ws://host:port`.
fn ws_base(base: &str) -> String {
    let base = base.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_owned()
    }
}

/// Opens a WebSocket to `url` with `Authorization: Bearer token`.
pub async fn ws_connect(url: &str, token: &str) -> Result<Ws, WsError> {
    let mut req = url.into_client_request()?;
    let value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| WsError::HttpFormat(e.into()))?;
    req.headers_mut().insert("authorization", value);
    // Without Nagle, as agentd dials: one keystroke is one small frame.
    let (ws, _resp) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
    Ok(ws)
}

/// Opens `/v1/agent/connect` as an agent presenting `token`, without hello.
pub async fn agent_connect_raw(base: &str, token: &str) -> Result<Ws, WsError> {
    ws_connect(&format!("{}/v1/agent/connect", ws_base(base)), token).await
}

fn test_hello(version: u32, peer: &str) -> Hello {
    Hello {
        protocol_version: version,
        peer: peer.to_owned(),
        capabilities: vec![],
    }
}

/// Sends an agent hello announcing `version` with no live sessions; with the
/// current version, also waits for and returns the control plane's welcome.
pub async fn agent_hello(ws: &mut Ws, version: u32) -> Result<Option<ControlToAgent>> {
    let hello = AgentToControl::Hello {
        hello: test_hello(version, "paddock-tests-fake-agent/0.1"),
        sessions: vec![],
    };
    ws.send(Message::text(hello.encode()))
        .await
        .context("could not send the agent hello")?;
    if version != PROTOCOL_VERSION {
        return Ok(None);
    }
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        let msg = next_message(ws, deadline).await?;
        match msg {
            Message::Text(text) => {
                let msg = ControlToAgent::decode(text.as_str())
                    .with_context(|| format!("undecodable message to the agent: {text}"))?;
                return match msg {
                    ControlToAgent::Welcome { .. } => Ok(Some(msg)),
                    other => Err(anyhow!("expected welcome, got {other:?}")),
                };
            }
            Message::Close(frame) => bail!("closed instead of welcome: {frame:?}"),
            Message::Binary(_) => bail!("binary frame before welcome"),
            _ => {}
        }
    }
}

async fn next_message(ws: &mut Ws, deadline: Instant) -> Result<Message> {
    match tokio::time::timeout_at(deadline, ws.next()).await {
        Err(_) => bail!("timed out waiting for a WebSocket message"),
        Ok(None) => bail!("the connection ended without a close frame"),
        Ok(Some(Err(err))) => Err(anyhow!(err).context("the connection failed")),
        Ok(Some(Ok(msg))) => Ok(msg),
    }
}

/// Reads until the peer's close frame and returns its code and reason;
/// fails if the connection ends without one or `limit` passes.
pub async fn expect_close(ws: &mut Ws, limit: Duration) -> Result<(u16, String)> {
    let deadline = Instant::now() + limit;
    loop {
        if let Message::Close(frame) = next_message(ws, deadline).await? {
            let frame = frame.context("the close frame carried no code")?;
            return Ok((u16::from(frame.code), frame.reason.as_str().to_owned()));
        }
    }
}

/// How a test client opens a session stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub mode: StreamMode,
    pub take: bool,
    pub from: Option<u64>,
    /// The `peer` of the client's hello; shows up as the driver's name.
    pub peer: String,
    pub protocol_version: u32,
}

impl StreamOptions {
    /// A watcher replaying from offset 0.
    pub fn watch() -> StreamOptions {
        StreamOptions {
            mode: StreamMode::Watch,
            take: false,
            from: Some(0),
            peer: "paddock-tests/watcher".to_owned(),
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// A driver replaying from offset 0.
    pub fn attach() -> StreamOptions {
        StreamOptions {
            mode: StreamMode::Attach,
            peer: "paddock-tests/driver".to_owned(),
            ..StreamOptions::watch()
        }
    }

    pub fn take(mut self) -> StreamOptions {
        self.take = true;
        self
    }

    pub fn peer(mut self, peer: &str) -> StreamOptions {
        self.peer = peer.to_owned();
        self
    }

    pub fn from(mut self, from: Option<u64>) -> StreamOptions {
        self.from = from;
        self
    }

    pub fn version(mut self, version: u32) -> StreamOptions {
        self.protocol_version = version;
        self
    }

    fn query(&self) -> String {
        let mode = match self.mode {
            StreamMode::Watch => "watch",
            StreamMode::Attach => "attach",
        };
        let mut query = format!("mode={mode}");
        if self.take {
            query.push_str("&take=true");
        }
        if let Some(from) = self.from {
            query.push_str(&format!("&from={from}"));
        }
        query
    }
}

/// The URL of a session's stream.
pub fn stream_url(base: &str, sandbox: &str, session: SessionId, opts: &StreamOptions) -> String {
    format!(
        "{}/v1/sandboxes/{sandbox}/sessions/{session}/stream?{}",
        ws_base(base),
        opts.query()
    )
}

/// Why a stream could not be opened.
#[derive(Debug)]
pub enum StreamError {
    /// The upgrade was refused with an HTTP status.
    Http {
        status: u16,
        body: String,
    },
    /// The control plane answered the hello with an `error` event.
    Refused {
        code: ErrorCode,
        message: String,
        close: Option<(u16, String)>,
    },
    /// The connection was closed before a welcome.
    Closed {
        code: Option<u16>,
        reason: String,
    },
    Other(anyhow::Error),
}

impl StreamError {
    /// Every human-readable word of the refusal, for assertions on wording.
    pub fn text(&self) -> String {
        self.to_string()
    }

    /// The error code, from an `error` event or an HTTP error body.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            StreamError::Refused { code, .. } => Some(*code),
            StreamError::Http { body, .. } => {
                serde_json::from_str::<paddock_protocol::api::ErrorBody>(body)
                    .ok()
                    .map(|b| b.error.code)
            }
            _ => None,
        }
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Http { status, body } => {
                write!(f, "upgrade refused with HTTP {status}: {body}")
            }
            StreamError::Refused {
                code,
                message,
                close,
            } => write!(
                f,
                "refused ({}): {message}; close: {close:?}",
                code.as_str()
            ),
            StreamError::Closed { code, reason } => {
                write!(f, "closed before welcome: {code:?} {reason}")
            }
            StreamError::Other(err) => write!(f, "{err:#}"),
        }
    }
}

impl std::error::Error for StreamError {}

impl From<anyhow::Error> for StreamError {
    fn from(err: anyhow::Error) -> Self {
        StreamError::Other(err)
    }
}

/// What the control plane's welcome said.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub hello: Hello,
    pub session: SessionInfo,
    pub mode: StreamMode,
    pub from: u64,
}

/// What a [`StreamClient`] does with the output bytes it receives.
#[derive(Debug, Clone)]
pub enum OutputSink {
    /// Keeps them all (the default).
    Keep,
    /// Counts them only (for streams of hundreds of MiB).
    Discard,
    /// Compares each byte with the byte at the same stream offset of the
    /// expected stream, failing at the first difference; keeps none.
    Verify(Arc<Vec<u8>>),
}

/// A `snapshot` event as a client received it.
#[derive(Debug, Clone)]
pub struct SnapshotEvent {
    pub offset: u64,
    pub size: TermSize,
    pub screen: String,
}

/// A client of one session stream. It keeps every output byte it received
/// (or counts or verifies them, see [`OutputSink`]), checks that frames
/// arrive at contiguous offsets (a `gap` or `snapshot` moves the cursor
/// ahead, never back), and queues text events.
#[derive(Debug)]
pub struct StreamClient {
    ws: Ws,
    welcome: Welcome,
    output: Vec<u8>,
    sink: OutputSink,
    /// The stream offset of the next byte this client expects.
    next_offset: u64,
    /// Output bytes received, whatever the sink did with them.
    received: u64,
    gaps: Vec<(u64, u64, String)>,
    snapshots: Vec<SnapshotEvent>,
    events: VecDeque<ControlToClient>,
    exited: Option<(ExitStatus, u64)>,
    closed: Option<Option<(u16, String)>>,
    /// Where the previous search for a needle stopped, to avoid rescanning.
    searched: usize,
}

impl StreamClient {
    /// Opens a stream, sends hello and waits for welcome.
    pub async fn connect(
        base: &str,
        token: &str,
        sandbox: &str,
        session: SessionId,
        opts: StreamOptions,
    ) -> Result<StreamClient, StreamError> {
        let url = stream_url(base, sandbox, session, &opts);
        let ws = ws_connect(&url, token).await;
        Self::handshake(ws, &url, opts).await
    }

    /// [`StreamClient::connect`] over a socket whose receive buffer is
    /// `recv_buffer` bytes and does not grow (plain `http://` only): a client
    /// that stops reading stalls the server after little data.
    pub async fn connect_with_recv_buffer(
        base: &str,
        token: &str,
        sandbox: &str,
        session: SessionId,
        opts: StreamOptions,
        recv_buffer: u32,
    ) -> Result<StreamClient, StreamError> {
        let url = stream_url(base, sandbox, session, &opts);
        let addr = base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<std::net::SocketAddr>()
            .map_err(|e| anyhow!("{base} is not http://IP:PORT: {e}"))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .context("could not create a socket")?;
        socket
            .set_recv_buffer_size(recv_buffer)
            .context("could not set the receive buffer")?;
        let tcp = socket
            .connect(addr)
            .await
            .with_context(|| format!("could not connect to {addr}"))?;
        let mut req = url.as_str().into_client_request().map_err(|e| anyhow!(e))?;
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| anyhow!(e))?;
        req.headers_mut().insert("authorization", value);
        let ws = tokio_tungstenite::client_async_with_config(req, MaybeTlsStream::Plain(tcp), None)
            .await
            .map(|(ws, _resp)| ws);
        Self::handshake(ws, &url, opts).await
    }

    /// Sends hello on a just-opened stream and waits for welcome.
    async fn handshake(
        ws: Result<Ws, WsError>,
        url: &str,
        opts: StreamOptions,
    ) -> Result<StreamClient, StreamError> {
        let mut ws = match ws {
            Ok(ws) => ws,
            Err(WsError::Http(resp)) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                return Err(StreamError::Http {
                    status: resp.status().as_u16(),
                    body,
                });
            }
            Err(err) => return Err(anyhow!(err).context(format!("could not open {url}")).into()),
        };
        let hello = ClientToControl::Hello {
            hello: test_hello(opts.protocol_version, &opts.peer),
        };
        ws.send(Message::text(hello.encode()))
            .await
            .map_err(|e| anyhow!(e).context("could not send the stream hello"))?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        loop {
            let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => return Err(anyhow!("no welcome within {HANDSHAKE_TIMEOUT:?}").into()),
                Ok(None) => {
                    return Err(StreamError::Closed {
                        code: None,
                        reason: "connection ended".to_owned(),
                    })
                }
                Ok(Some(Err(err))) => {
                    return Err(anyhow!(err).context("stream failed before welcome").into())
                }
                Ok(Some(Ok(msg))) => msg,
            };
            match msg {
                Message::Text(text) => {
                    let msg = ControlToClient::decode(text.as_str())
                        .map_err(|e| anyhow!("undecodable message {text}: {e}"))?;
                    match msg {
                        ControlToClient::Welcome {
                            hello,
                            session,
                            mode,
                            from,
                        } => {
                            return Ok(StreamClient {
                                ws,
                                welcome: Welcome {
                                    hello,
                                    session: *session,
                                    mode,
                                    from,
                                },
                                output: Vec::new(),
                                sink: OutputSink::Keep,
                                next_offset: from,
                                received: 0,
                                gaps: Vec::new(),
                                snapshots: Vec::new(),
                                events: VecDeque::new(),
                                exited: None,
                                closed: None,
                                searched: 0,
                            })
                        }
                        ControlToClient::Error { code, message } => {
                            let close = expect_close(&mut ws, Duration::from_secs(2)).await.ok();
                            return Err(StreamError::Refused {
                                code,
                                message,
                                close,
                            });
                        }
                        other => return Err(anyhow!("expected welcome, got {other:?}").into()),
                    }
                }
                Message::Close(frame) => {
                    return Err(StreamError::Closed {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame
                            .map(|f| f.reason.as_str().to_owned())
                            .unwrap_or_default(),
                    })
                }
                Message::Binary(_) => return Err(anyhow!("output before welcome").into()),
                _ => {}
            }
        }
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn session_id(&self) -> SessionId {
        self.welcome.session.id
    }

    /// Every output byte received so far, starting at the welcome's `from`
    /// (without the holes of gaps and skips); empty unless the sink keeps.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    pub fn output_text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// The stream offset of the next byte this client expects.
    pub fn end_offset(&self) -> u64 {
        self.next_offset
    }

    /// How many output bytes arrived, whatever the sink did with them.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Sets what happens to output from now on; call it before receiving.
    pub fn set_sink(&mut self, sink: OutputSink) {
        self.sink = sink;
    }

    /// The `gap` events received so far, as `(from, to, reason)`.
    pub fn gaps(&self) -> &[(u64, u64, String)] {
        &self.gaps
    }

    /// The `snapshot` events received so far.
    pub fn snapshots(&self) -> &[SnapshotEvent] {
        &self.snapshots
    }

    /// The last `max` bytes of the kept output, as text, for error messages.
    fn output_tail(&self, max: usize) -> String {
        let start = self.output.len().saturating_sub(max);
        String::from_utf8_lossy(&self.output[start..]).into_owned()
    }

    fn accept_output(&mut self, offset: u64, payload: &[u8]) -> Result<()> {
        match &self.sink {
            OutputSink::Keep => self.output.extend_from_slice(payload),
            OutputSink::Discard => {}
            OutputSink::Verify(expected) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = start.saturating_add(payload.len());
                if end > expected.len() {
                    bail!(
                        "output runs past the expected stream's end ({} bytes): a frame of {} bytes at offset {offset}: {:?}",
                        expected.len(),
                        payload.len(),
                        String::from_utf8_lossy(&payload[..payload.len().min(200)])
                    );
                }
                let want = &expected[start..end];
                // The slice comparison is a memcmp even in debug builds;
                // the position is looked for only once they differ.
                if want != payload {
                    let i = want
                        .iter()
                        .zip(payload)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    let from = i.saturating_sub(40);
                    let to = (i + 40).min(payload.len());
                    bail!(
                        "output differs from the expected stream at offset {}: got {:?}, expected {:?}",
                        offset + i as u64,
                        String::from_utf8_lossy(&payload[from..to]),
                        String::from_utf8_lossy(&want[from..to])
                    );
                }
            }
        }
        self.received += payload.len() as u64;
        self.next_offset = offset + payload.len() as u64;
        Ok(())
    }

    /// Reads and handles one message.
    async fn pump(&mut self, deadline: Instant) -> Result<()> {
        if let Some(close) = &self.closed {
            bail!(
                "the stream is closed ({close:?}); output so far:\n{}",
                self.output_tail(2000)
            );
        }
        let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
            Err(_) => bail!(
                "timed out on the stream; output so far:\n{}",
                self.output_tail(2000)
            ),
            Ok(None) => {
                self.closed = Some(None);
                return Ok(());
            }
            Ok(Some(Err(err))) => {
                self.closed = Some(None);
                return Err(anyhow!(err).context("the stream failed"));
            }
            Ok(Some(Ok(msg))) => msg,
        };
        match msg {
            Message::Binary(bytes) => {
                let frame = DataFrame::decode(&bytes).context("undecodable output frame")?;
                if frame.kind != FrameKind::Output {
                    bail!("a client got a {:?} frame", frame.kind);
                }
                if frame.session_id != self.session_id() {
                    bail!(
                        "output of session {} on the stream of {}",
                        frame.session_id,
                        self.session_id()
                    );
                }
                if frame.offset != self.end_offset() {
                    bail!(
                        "output offsets are not contiguous: expected {}, got {} ({} bytes)",
                        self.end_offset(),
                        frame.offset,
                        frame.payload.len()
                    );
                }
                self.accept_output(frame.offset, frame.payload)?;
            }
            Message::Text(text) => {
                let event = ControlToClient::decode(text.as_str())
                    .with_context(|| format!("undecodable event: {text}"))?;
                match &event {
                    ControlToClient::Exited { status, end_offset } => {
                        self.exited = Some((*status, *end_offset));
                    }
                    ControlToClient::Gap { from, to, reason } => {
                        if *from > self.next_offset {
                            bail!(
                                "a gap {from}..{to} ({reason}) starts beyond this client's cursor {}: bytes {}..{from} were neither sent nor reported lost",
                                self.next_offset,
                                self.next_offset
                            );
                        }
                        self.next_offset = self.next_offset.max(*to);
                        self.gaps.push((*from, *to, reason.clone()));
                    }
                    ControlToClient::Snapshot {
                        offset,
                        size,
                        screen,
                    } => {
                        if *offset < self.next_offset {
                            bail!(
                                "a snapshot at offset {offset} goes back behind this client's cursor {}",
                                self.next_offset
                            );
                        }
                        if *offset > self.next_offset {
                            bail!(
                                "a snapshot at offset {offset} skips {}..{offset} without a gap event",
                                self.next_offset
                            );
                        }
                        self.snapshots.push(SnapshotEvent {
                            offset: *offset,
                            size: *size,
                            screen: screen.clone(),
                        });
                    }
                    _ => {}
                }
                self.events.push_back(event);
            }
            Message::Close(frame) => {
                self.closed =
                    Some(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())));
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the output holds `needle`, scanning only what is new.
    fn output_has(&mut self, needle: &[u8]) -> bool {
        if needle.is_empty() {
            return true;
        }
        let start = self.searched.saturating_sub(needle.len() - 1);
        let found = self.output[start..]
            .windows(needle.len())
            .any(|w| w == needle);
        self.searched = self.output.len();
        found
    }

    /// Receives until the stream cursor reaches `offset`.
    pub async fn recv_until_offset(&mut self, offset: u64, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.next_offset < offset {
            self.pump(deadline)
                .await
                .with_context(|| format!("waiting for output up to offset {offset}"))?;
        }
        Ok(())
    }

    /// Receives until the output holds `needle`.
    pub async fn recv_until_output_contains(
        &mut self,
        needle: &str,
        limit: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.output_has(needle.as_bytes()) {
                return Ok(());
            }
            self.pump(deadline)
                .await
                .with_context(|| format!("waiting for {needle:?}"))?;
        }
    }

    /// The next text event.
    pub async fn recv_event(&mut self, limit: Duration) -> Result<ControlToClient> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(event);
            }
            self.pump(deadline).await.context("waiting for an event")?;
        }
    }

    /// Skips events until `pick` accepts one.
    pub async fn wait_event<T>(
        &mut self,
        limit: Duration,
        mut pick: impl FnMut(&ControlToClient) -> Option<T>,
    ) -> Result<T> {
        let deadline = Instant::now() + limit;
        loop {
            while let Some(event) = self.events.pop_front() {
                if let Some(found) = pick(&event) {
                    return Ok(found);
                }
            }
            self.pump(deadline).await.context("waiting for an event")?;
        }
    }

    /// Receives until `exited`, then checks that every byte up to its
    /// `end_offset` arrived before it.
    pub async fn wait_exited(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((status, end_offset)) = self.exited {
                if end_offset != self.end_offset() {
                    bail!(
                        "exited says the stream ends at {end_offset}, but output up to {} arrived",
                        self.end_offset()
                    );
                }
                return Ok(status);
            }
            self.pump(deadline).await.context("waiting for exited")?;
        }
    }

    /// Receives until the server closes the stream; returns its close frame.
    pub async fn wait_closed(&mut self, limit: Duration) -> Result<Option<(u16, String)>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(close) = &self.closed {
                return Ok(close.clone());
            }
            self.pump(deadline).await.context("waiting for the close")?;
        }
    }

    /// Sends keyboard input as one input frame.
    pub async fn send_input(&mut self, bytes: &[u8]) -> Result<()> {
        let frame = DataFrame::input(self.session_id(), bytes).encode();
        self.ws
            .send(Message::binary(frame))
            .await
            .context("could not send input")
    }

    /// Sends a resize request (honoured only from the driver).
    pub async fn send_resize(&mut self, size: TermSize) -> Result<()> {
        let msg = ClientToControl::Resize { size };
        self.ws
            .send(Message::text(msg.encode()))
            .await
            .context("could not send resize")
    }

    /// Sends one raw WebSocket message (for tests of what the server refuses).
    pub async fn send_raw(&mut self, msg: Message) -> Result<()> {
        self.ws.send(msg).await.context("could not send")
    }

    /// Closes the stream from this side.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}
