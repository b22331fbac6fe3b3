//! The link to the control plane: dial out with the sandbox token, hello and
//! welcome, one reader and one writer task per connection, heartbeats, and
//! reconnecting with backoff while the sessions keep running.
//!
//! A connection is an actor pair with explicit teardown: the writer owns the
//! socket's sink and drains the bounded outbound queue (`tx_out`), which
//! session tasks and the reader feed; the reader owns the stream, dispatches
//! requests to the session registry (tool calls to the tool layer, which
//! answers from its own tasks) and watches for silence; a third task
//! pushes language servers' diagnostics while the connection lives. When either
//! ends, the other is stopped and awaited before the next dial, so no stale
//! task can touch the registry on behalf of a dead connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use paddock_protocol::{
    AgentToControl, ControlToAgent, DataFrame, FrameKind, Hello, LiveSession, ResumeFrom,
    SandboxId, CLOSE_MALFORMED, CLOSE_REPLACED, CLOSE_UNSUPPORTED_VERSION, MAX_CONTROL_FRAME,
    PROTOCOL_VERSION,
};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{
    connect_async_tls_with_config, Connector, MaybeTlsStream, WebSocketStream,
};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, info, warn};

use crate::lsp::DiagnosticsEvent;
use crate::sessions::Sessions;
use crate::tools::Tools;

/// Largest WebSocket message or frame accepted: a control frame plus slack
/// (a data frame is far smaller).
const MAX_WS_MESSAGE: usize = MAX_CONTROL_FRAME + 64 * 1024;
/// How long the TCP connect and HTTP upgrade may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the control plane may take to answer the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for the writer. When full, senders wait: session tasks
/// send nothing more (their output stays retained, and they stop reading
/// their PTY once a window's worth is unacknowledged) and the reader stops
/// taking requests until the socket drains.
const OUT_QUEUE: usize = 64;
/// How long a task may take to stop (and the writer to send its close frame).
const STOP_GRACE: Duration = Duration::from_secs(1);
/// The shortest heartbeat interval honoured, whatever the welcome says.
const MIN_HEARTBEAT: Duration = Duration::from_millis(100);
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// WebSocket close reasons must fit in 123 bytes; stay clear of the edge.
const MAX_CLOSE_REASON: usize = 120;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the writer puts on the wire.
pub(crate) enum OutFrame {
    Control(AgentToControl),
    /// An encoded [`DataFrame`].
    Data(Vec<u8>),
}

/// One message for the writer. Nothing waits for it to be written: what
/// must survive a lost connection is retained until the control plane
/// acknowledges it (see `session.rs`).
pub(crate) struct Outbound {
    pub frame: OutFrame,
}

impl Outbound {
    pub(crate) fn control(msg: AgentToControl) -> Self {
        Outbound {
            frame: OutFrame::Control(msg),
        }
    }

    pub(crate) fn data(encoded: Vec<u8>) -> Self {
        Outbound {
            frame: OutFrame::Data(encoded),
        }
    }
}

/// The current connection's outbound queue; see [`OUT_QUEUE`].
pub(crate) type TxOut = mpsc::Sender<Outbound>;

/// The control plane refused this agentd for good; retrying cannot help.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "the control plane refused the sandbox token (HTTP {status}); \
         check --token or PADDOCK_AGENTD_TOKEN"
    )]
    Token { status: u16 },
    #[error("the control plane refused protocol version {version}: {reason}")]
    Version { version: u32, reason: String },
    #[error(
        "the control plane's certificate was rejected: {reason}; \
         pass its CA with --ca-file (PADDOCK_AGENTD_CA_FILE)"
    )]
    Certificate { reason: String },
}

/// Where to dial and with what.
pub(crate) struct LinkConfig {
    pub url: String,
    pub token: String,
    /// Used for `wss://` URLs; see `tls.rs`.
    pub tls: Arc<rustls::ClientConfig>,
}

/// How a connection ended, when another may be tried.
#[derive(Debug)]
enum Ended {
    Shutdown,
    /// Never got as far as a welcome.
    NotWelcomed(String),
    /// Welcomed, then lost.
    Lost(String),
    /// Closed by the control plane because another connection of this sandbox replaced it.
    Replaced,
}

/// Keeps a connection to the control plane until `stop` fires or the
/// control plane refuses this agentd for good.
pub(crate) async fn run_link(
    cfg: LinkConfig,
    sessions: Sessions,
    tools: Tools,
    stop: CancellationToken,
) -> Result<(), Refused> {
    if let Some(host) = crate::config::plain_remote_host(&cfg.url) {
        warn!(
            %host,
            "the link to the control plane is plain ws:// to a host that is not loopback: \
             the token and all traffic cross the network unencrypted; use https:// unless \
             this network is private"
        );
    }
    let mut backoff = Backoff::new();
    loop {
        let ended = connect_once(&cfg, &sessions, &tools, &stop, &mut backoff).await?;
        let delay = backoff.next_delay();
        let retry_ms = delay.as_millis() as u64;
        match ended {
            Ended::Shutdown => return Ok(()),
            Ended::NotWelcomed(err) => {
                warn!(url = %cfg.url, error = %err, retry_ms, "could not connect to the control plane")
            }
            Ended::Lost(err) => warn!(error = %err, retry_ms, "control plane connection lost"),
            Ended::Replaced => {
                info!(
                    retry_ms,
                    "control plane connection replaced by a newer one of this sandbox"
                )
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stop.cancelled() => return Ok(()),
        }
    }
}

/// Exponential backoff with full jitter.
#[derive(Debug)]
struct Backoff {
    ceiling: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            ceiling: BACKOFF_START,
        }
    }

    fn reset(&mut self) {
        self.ceiling = BACKOFF_START;
    }

    /// A random delay in `[0, ceiling]`; the ceiling then doubles up to the cap.
    fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (ceiling * 2).min(BACKOFF_MAX);
        let nanos = ceiling.as_nanos() as u64;
        match getrandom::u64() {
            Ok(random) => Duration::from_nanos(random % (nanos + 1)),
            // Without randomness, waiting the whole ceiling is still correct.
            Err(_) => ceiling,
        }
    }
}

/// Dials once, runs the connection until it ends, and says how it ended.
async fn connect_once(
    cfg: &LinkConfig,
    sessions: &Sessions,
    tools: &Tools,
    stop: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<Ended, Refused> {
    let dialled = tokio::select! {
        dialled = dial(cfg) => dialled?,
        () = stop.cancelled() => return Ok(Ended::Shutdown),
    };
    let mut ws = match dialled {
        Ok(ws) => ws,
        Err(err) => return Ok(Ended::NotWelcomed(err)),
    };
    let live = sessions.live();
    let hello = AgentToControl::Hello {
        hello: Hello {
            protocol_version: PROTOCOL_VERSION,
            peer: format!("agentd/{}", env!("CARGO_PKG_VERSION")),
            capabilities: vec!["pty".to_owned(), "tools".to_owned()],
        },
        sessions: live.clone(),
    };
    let handshake = tokio::select! {
        handshake = handshake(&mut ws, hello) => handshake?,
        () = stop.cancelled() => {
            let _ = tokio::time::timeout(STOP_GRACE, ws.close(Some(normal_close()))).await;
            return Ok(Ended::Shutdown);
        }
    };
    let welcome = match handshake {
        Handshake::Welcome(welcome) => welcome,
        Handshake::Failed(ended) => return Ok(ended),
    };
    backoff.reset();
    info!(
        sandbox.id = %welcome.sandbox_id,
        heartbeat_ms = welcome.heartbeat_ms,
        sessions = live.len(),
        "connected to the control plane"
    );
    serve(ws, welcome, live, sessions, tools, stop).await
}

/// Opens the WebSocket. `Ok(Err(_))` is a failure worth retrying.
async fn dial(cfg: &LinkConfig) -> Result<Result<Ws, String>, Refused> {
    let mut request = match cfg.url.as_str().into_client_request() {
        Ok(request) => request,
        Err(err) => return Ok(Err(format!("bad control plane URL: {err}"))),
    };
    let mut auth = match HeaderValue::from_str(&format!("Bearer {}", cfg.token)) {
        Ok(auth) => auth,
        Err(_) => return Ok(Err("the token is not a valid header value".to_owned())),
    };
    auth.set_sensitive(true);
    request.headers_mut().insert(AUTHORIZATION, auth);
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_WS_MESSAGE))
        .max_frame_size(Some(MAX_WS_MESSAGE));
    let connector = Connector::Rustls(cfg.tls.clone());
    let connected = tokio::time::timeout(
        DIAL_TIMEOUT,
        connect_async_tls_with_config(request, Some(config), true, Some(connector)),
    )
    .await;
    match connected {
        Err(_) => Ok(Err(format!(
            "no answer within {} s",
            DIAL_TIMEOUT.as_secs()
        ))),
        Ok(Ok((ws, _response))) => Ok(Ok(ws)),
        Ok(Err(WsError::Http(response))) => {
            let status = response.status();
            if status.as_u16() == 401 || status.as_u16() == 403 {
                Err(Refused::Token {
                    status: status.as_u16(),
                })
            } else {
                Ok(Err(format!("upgrade refused with HTTP {status}")))
            }
        }
        // A certificate that does not verify will not start to by itself.
        Ok(Err(WsError::Io(err))) => match crate::tls::certificate_error(&err) {
            Some(reason) => Err(Refused::Certificate { reason }),
            None => Ok(Err(err.to_string())),
        },
        Ok(Err(err)) => Ok(Err(err.to_string())),
    }
}

/// The parts of a welcome a connection needs.
struct Welcome {
    sandbox_id: SandboxId,
    heartbeat_ms: u64,
    resume: Vec<ResumeFrom>,
}

enum Handshake {
    Welcome(Welcome),
    Failed(Ended),
}

/// Sends the hello and waits for the welcome.
async fn handshake(ws: &mut Ws, hello: AgentToControl) -> Result<Handshake, Refused> {
    if let Err(err) = ws.send(Message::text(hello.encode())).await {
        return Ok(Handshake::Failed(Ended::NotWelcomed(err.to_string())));
    }
    match tokio::time::timeout(WELCOME_TIMEOUT, wait_welcome(ws)).await {
        Ok(handshake) => handshake,
        Err(_) => Ok(Handshake::Failed(Ended::NotWelcomed(format!(
            "no welcome within {} s",
            WELCOME_TIMEOUT.as_secs()
        )))),
    }
}

async fn wait_welcome(ws: &mut Ws) -> Result<Handshake, Refused> {
    let failed = |err: String| Ok(Handshake::Failed(Ended::NotWelcomed(err)));
    loop {
        let text = match ws.next().await {
            None => return failed("connection closed before the welcome".to_owned()),
            Some(Err(err)) => return failed(err.to_string()),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return closed_by_peer(frame).map(Handshake::Failed),
            Some(Ok(Message::Binary(_))) => {
                debug!("ignoring a binary frame before the welcome");
                continue;
            }
            Some(Ok(_)) => continue,
        };
        match ControlToAgent::decode(&text) {
            Ok(ControlToAgent::Welcome {
                sandbox_id,
                heartbeat_ms,
                resume,
                ..
            }) => {
                return Ok(Handshake::Welcome(Welcome {
                    sandbox_id,
                    heartbeat_ms,
                    resume,
                }))
            }
            Ok(_) => debug!("ignoring a request before the welcome"),
            Err(err) => {
                let reason = err.to_string();
                let _ = tokio::time::timeout(STOP_GRACE, ws.close(Some(malformed_close(&reason))))
                    .await;
                return failed(format!("malformed frame from the control plane: {reason}"));
            }
        }
    }
}

/// Classifies a close frame sent by the control plane.
fn closed_by_peer(frame: Option<CloseFrame>) -> Result<Ended, Refused> {
    let Some(frame) = frame else {
        return Ok(Ended::Lost("closed by the control plane".to_owned()));
    };
    match u16::from(frame.code) {
        CLOSE_UNSUPPORTED_VERSION => Err(Refused::Version {
            version: PROTOCOL_VERSION,
            reason: frame.reason.to_string(),
        }),
        CLOSE_REPLACED => Ok(Ended::Replaced),
        code => Ok(Ended::Lost(format!(
            "closed by the control plane (code {code}: {})",
            frame.reason
        ))),
    }
}

fn normal_close() -> CloseFrame {
    CloseFrame {
        code: CloseCode::Normal,
        reason: "agentd is shutting down".into(),
    }
}

fn malformed_close(reason: &str) -> CloseFrame {
    CloseFrame {
        code: CloseCode::from(CLOSE_MALFORMED),
        reason: truncate(reason, MAX_CLOSE_REASON).into(),
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a char boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Runs a welcomed connection: replays what the control plane asked for,
/// then serves requests and live output until the link ends.
async fn serve(
    ws: Ws,
    welcome: Welcome,
    live: Vec<LiveSession>,
    sessions: &Sessions,
    tools: &Tools,
    stop: &CancellationToken,
) -> Result<Ended, Refused> {
    let heartbeat = Duration::from_millis(welcome.heartbeat_ms).max(MIN_HEARTBEAT);
    let (sink, stream) = ws.split();
    let (tx_out, rx_out) = mpsc::channel(OUT_QUEUE);
    // Sending a frame makes the writer close with it; dropping the sender stops it silently.
    let (tx_close, rx_close) = oneshot::channel();
    let stop_reader = CancellationToken::new();
    // Aborted on drop, so even a cancelled `serve` leaves no task behind.
    let mut writer =
        AbortOnDropHandle::new(tokio::spawn(write_loop(sink, rx_out, rx_close, heartbeat)));
    let mut reader = AbortOnDropHandle::new(tokio::spawn(read_loop(
        stream,
        sessions.clone(),
        tools.clone(),
        tx_out.clone(),
        heartbeat,
        stop_reader.clone(),
    )));
    // Lives exactly as long as this connection.
    let _diagnostics = AbortOnDropHandle::new(tokio::spawn(forward_diagnostics(
        tools.subscribe_diagnostics(),
        tx_out.clone(),
    )));

    // Sessions from the hello resume where the control plane asks (it has
    // stored everything below that offset); one it did not mention
    // continues from the offset the hello announced.
    let resume: HashMap<_, _> = welcome
        .resume
        .iter()
        .map(|r| (r.session_id, r.offset))
        .collect();
    for session in &live {
        let (from, stored) = match resume.get(&session.session_id) {
            Some(&offset) => (offset, true),
            None => (session.next_offset, false),
        };
        sessions
            .attach(session.session_id, tx_out.clone(), from, stored)
            .await;
    }
    for r in &welcome.resume {
        if !live.iter().any(|s| s.session_id == r.session_id) {
            debug!(session.id = %r.session_id, "resume for a session this agentd does not hold");
        }
    }
    // Kept until teardown, so the writer ends only when told to (or on a
    // socket error), never merely because the reader went first.
    let _tx_out = tx_out;

    let mut reader_done = false;
    let mut writer_done = false;
    let mut tx_close = Some(tx_close);
    let ended = tokio::select! {
        read = &mut reader => {
            reader_done = true;
            match read {
                Ok(Ok(ReadEnd::Ended(ended))) => Ok(ended),
                Ok(Ok(ReadEnd::Malformed(reason))) => {
                    if let Some(tx_close) = tx_close.take() {
                        let _ = tx_close.send(malformed_close(&reason));
                    }
                    Ok(Ended::Lost(format!("malformed frame from the control plane: {reason}")))
                }
                Ok(Err(refused)) => Err(refused),
                Err(err) => Ok(Ended::Lost(format!("reader task failed: {err}"))),
            }
        }
        written = &mut writer => {
            writer_done = true;
            Ok(Ended::Lost(written.unwrap_or_else(|err| format!("writer task failed: {err}"))))
        }
        () = stop.cancelled() => {
            if let Some(tx_close) = tx_close.take() {
                let _ = tx_close.send(normal_close());
            }
            Ok(Ended::Shutdown)
        }
    };

    // Teardown: the writer sends its close frame if it has one (else stops
    // at once), the reader stops; neither may outlive this connection.
    drop(tx_close);
    stop_reader.cancel();
    if !writer_done {
        settle(&mut writer).await;
    }
    if !reader_done {
        settle(&mut reader).await;
    }
    ended
}

/// Waits briefly for a task to finish, then aborts it.
async fn settle<T>(task: &mut AbortOnDropHandle<T>) {
    if tokio::time::timeout(STOP_GRACE, &mut *task).await.is_err() {
        task.abort();
        let _ = task.await;
    }
}

/// How the reader ended.
enum ReadEnd {
    Ended(Ended),
    /// The control plane sent something undecodable; close with 4001.
    Malformed(String),
}

async fn read_loop(
    mut stream: SplitStream<Ws>,
    sessions: Sessions,
    tools: Tools,
    tx_out: TxOut,
    heartbeat: Duration,
    stop: CancellationToken,
) -> Result<ReadEnd, Refused> {
    let silence_limit = heartbeat * 3;
    let mut last_seen = Instant::now();
    let lost = |reason: String| Ok(ReadEnd::Ended(Ended::Lost(reason)));
    loop {
        let msg = tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(ReadEnd::Ended(Ended::Shutdown)),
            msg = stream.next() => msg,
            () = tokio::time::sleep_until(last_seen + silence_limit) => {
                return lost(format!("nothing received for {} ms (three heartbeats)", silence_limit.as_millis()));
            }
        };
        last_seen = Instant::now();
        match msg {
            None => return lost("connection closed".to_owned()),
            Some(Err(WsError::Capacity(err))) => return Ok(ReadEnd::Malformed(err.to_string())),
            Some(Err(err)) => return lost(err.to_string()),
            Some(Ok(Message::Text(text))) => {
                let request = match ControlToAgent::decode(&text) {
                    Ok(request) => request,
                    Err(err) => return Ok(ReadEnd::Malformed(err.to_string())),
                };
                if matches!(
                    request,
                    ControlToAgent::ToolCall { .. } | ControlToAgent::CancelRequest { .. }
                ) {
                    // Runs in its own task; the reader never waits for a tool.
                    tools.handle(request, &tx_out);
                    continue;
                }
                let handled = tokio::select! {
                    () = stop.cancelled() => return Ok(ReadEnd::Ended(Ended::Shutdown)),
                    handled = sessions.handle(request, &tx_out) => handled,
                };
                if handled.is_err() {
                    return lost("outbound queue closed".to_owned());
                }
            }
            Some(Ok(Message::Binary(bytes))) => match DataFrame::decode(&bytes) {
                Ok(frame) if frame.kind == FrameKind::Input => {
                    sessions.input(frame.session_id, frame.payload)
                }
                Ok(frame) => {
                    debug!(session.id = %frame.session_id, kind = ?frame.kind, "ignoring a data frame that is not input")
                }
                Err(err) => return Ok(ReadEnd::Malformed(err.to_string())),
            },
            Some(Ok(Message::Close(frame))) => return closed_by_peer(frame).map(ReadEnd::Ended),
            // Pings are answered by tungstenite; pongs only prove the link lives.
            Some(Ok(_)) => {}
        }
    }
}

/// Pushes language servers' diagnostics to the control plane. Events that
/// arrive while no connection is up are not replayed (the latest are served
/// by `lsp_diagnostics`); a lagging connection skips the oldest.
async fn forward_diagnostics(mut rx_events: broadcast::Receiver<DiagnosticsEvent>, tx_out: TxOut) {
    loop {
        let event = match rx_events.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                warn!(
                    skipped,
                    "diagnostics events skipped: the connection fell behind"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let msg = AgentToControl::LspDiagnostics {
            workspace: event.workspace,
            language: event.language,
            uri: event.uri,
            version: event.version,
            diagnostics: event.diagnostics,
        };
        if tx_out.send(Outbound::control(msg)).await.is_err() {
            return;
        }
    }
}

/// Writes queued messages and heartbeat pings; returns why it stopped.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx_out: mpsc::Receiver<Outbound>,
    mut rx_close: oneshot::Receiver<CloseFrame>,
    heartbeat: Duration,
) -> String {
    let mut ping = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            close = &mut rx_close => {
                if let Ok(frame) = close {
                    let _ = sink.send(Message::Close(Some(frame))).await;
                }
                return "closed by agentd".to_owned();
            }
            _ = ping.tick() => {
                if let Err(err) = sink.send(Message::Ping(Default::default())).await {
                    return err.to_string();
                }
            }
            out = rx_out.recv() => {
                let Some(out) = out else {
                    return "outbound queue closed".to_owned();
                };
                let msg = match out.frame {
                    OutFrame::Control(msg) => Message::text(msg.encode()),
                    OutFrame::Data(bytes) => Message::binary(bytes),
                };
                if let Err(err) = sink.send(msg).await {
                    return err.to_string();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let ceiling = backoff.ceiling;
            let delay = backoff.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            ceilings.push(ceiling.as_millis());
        }
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        backoff.reset();
        assert_eq!(backoff.ceiling, BACKOFF_START);
    }

    #[test]
    fn close_reasons_are_truncated_on_a_char_boundary() {
        let long = "é".repeat(100);
        let reason = malformed_close(&long).reason;
        assert!(reason.len() <= MAX_CLOSE_REASON);
        assert_eq!(reason.len(), 120);
        assert_eq!(truncate("short", 120), "short");
    }

    #[test]
    fn close_codes_are_classified() {
        let frame = |code: u16, reason: &str| {
            Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })
        };
        let refused = closed_by_peer(frame(CLOSE_UNSUPPORTED_VERSION, "supported: 2")).unwrap_err();
        assert!(refused.to_string().contains("supported: 2"), "{refused}");
        assert!(matches!(
            closed_by_peer(frame(CLOSE_REPLACED, "replaced")),
            Ok(Ended::Replaced)
        ));
        assert!(matches!(
            closed_by_peer(frame(1000, "bye")),
            Ok(Ended::Lost(_))
        ));
    }
}
