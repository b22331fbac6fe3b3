//! Each configurable limit, with real connections to an in-process control
//! plane and a real agentd: past the limit the request or connection is
//! refused with a clear error (JSON before an upgrade, a close code and
//! reason after it), the others carry on, and
//! `paddock_limit_refusals_total{limit}` counts the refusal.
//!
//! Each test refuses a different `limit` label, so comparing that label's
//! count before and after is exact even if tests share a process.

mod support;

use std::time::Duration;

use control_plane::limits::Limits;
use paddock_tests::proto::{SessionId, TermSize, CLOSE_MALFORMED, CLOSE_RATE_LIMITED};
use paddock_tests::{
    agent_connect_raw, agent_hello, expect_close, wait_until, Agentd, StreamClient, StreamError,
    StreamOptions,
};
use reqwest::Method;
use serde_json::{json, Value};
use support::{call, refusals, start_with, OWNER};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// A control plane with `limits`, one sandbox and its real agentd.
struct Fixture {
    url: String,
    http: reqwest::Client,
    sandbox: String,
    shutdown: CancellationToken,
    _agentd: Agentd,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Fixture {
    async fn start(limits: Limits) -> Fixture {
        let data = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let url = start_with(data.path(), None, &shutdown, |config| {
            config.limits = limits;
        })
        .await;
        let http = reqwest::Client::new();
        let (sandbox, token) = register(&http, &url, "limited").await;
        let agentd = Agentd::start(&url, &token, work.path()).unwrap();
        let fixture = Fixture {
            url,
            http,
            sandbox,
            shutdown,
            _agentd: agentd,
            _dirs: (data, work),
        };
        wait_until("agentd to connect", WAIT, || async {
            let (_, info) = fixture
                .call(
                    Method::GET,
                    &format!("/v1/sandboxes/{}", fixture.sandbox),
                    None,
                )
                .await;
            Ok((info["status"] == "connected").then_some(()))
        })
        .await
        .unwrap();
        fixture
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        call(&self.http, &self.url, method, path, body).await
    }

    /// Opens `cat` in the sandbox: the status and the body.
    async fn open_cat(&self) -> (u16, Value) {
        let path = format!("/v1/sandboxes/{}/sessions", self.sandbox);
        self.call(Method::POST, &path, Some(json!({ "command": "cat" })))
            .await
    }

    async fn open_session(&self) -> SessionId {
        let (status, body) = self.open_cat().await;
        assert_eq!(status, 201, "{body}");
        SessionId(body["id"].as_u64().unwrap())
    }

    /// Opens `cat` with a driver attached and a watcher.
    async fn driver_and_watcher(&self) -> (SessionId, StreamClient, StreamClient) {
        let session = self.open_session().await;
        let driver = self
            .stream(OWNER, session, StreamOptions::attach())
            .await
            .unwrap();
        let watcher = self
            .stream(OWNER, session, StreamOptions::watch())
            .await
            .unwrap();
        (session, driver, watcher)
    }

    async fn stream(
        &self,
        token: &str,
        session: SessionId,
        opts: StreamOptions,
    ) -> Result<StreamClient, StreamError> {
        StreamClient::connect(&self.url, token, &self.sandbox, session, opts).await
    }

    async fn refusals(&self, limit: &str) -> f64 {
        refusals(&self.http, &self.url, limit).await
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn register(http: &reqwest::Client, url: &str, name: &str) -> (String, String) {
    let (status, sb) = call(
        http,
        url,
        Method::POST,
        "/v1/sandboxes",
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, 201, "{sb}");
    (
        sb["sandbox"]["id"].as_str().unwrap().to_owned(),
        sb["token"].as_str().unwrap().to_owned(),
    )
}

/// The driver types a line into `cat` and sees it come back.
async fn still_served(driver: &mut StreamClient, line: &str) {
    driver
        .send_input(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    driver.recv_until_output_contains(line, WAIT).await.unwrap();
}

/// Opens `cat` with a driver and a watcher, then a third stream, which must
/// be refused before the upgrade with 429 `limit_exceeded`, counted under
/// `limit`; the session, both clients and the refusal's message.
async fn a_third_stream_is_refused(
    fx: &Fixture,
    limit: &str,
) -> (SessionId, StreamClient, StreamClient, String) {
    let (session, driver, watcher) = fx.driver_and_watcher().await;
    let before = fx.refusals(limit).await;
    let err = fx
        .stream(OWNER, session, StreamOptions::watch())
        .await
        .unwrap_err();
    let (status, code, message) = http_refusal(err);
    assert_eq!(
        (status, code.as_str()),
        (429, "limit_exceeded"),
        "{message}"
    );
    assert!(message.contains(&format!("max_{limit}")), "{message}");
    assert_eq!(fx.refusals(limit).await, before + 1.0);
    (session, driver, watcher, message)
}

/// A refusal before the upgrade: the status and the JSON error's code and message.
fn http_refusal(err: StreamError) -> (u16, String, String) {
    match err {
        StreamError::Http { status, body } => {
            let body: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{body}"));
            (
                status,
                body["error"]["code"].as_str().unwrap().to_owned(),
                body["error"]["message"].as_str().unwrap().to_owned(),
            )
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_closes_only_that_stream() {
    let fx = Fixture::start(Limits {
        max_frame_bytes: 100_000,
        ..Limits::default()
    })
    .await;
    let (_, mut driver, mut watcher) = fx.driver_and_watcher().await;
    let before = fx.refusals("frame_size").await;

    watcher
        .send_raw(Message::text("x".repeat(150_000)))
        .await
        .unwrap();
    let (code, reason) = watcher.wait_closed(WAIT).await.unwrap().unwrap();
    assert_eq!(code, CLOSE_MALFORMED, "{reason}");
    assert!(
        reason.contains("150000 bytes") && reason.contains("max_frame_bytes"),
        "{reason}"
    );
    still_served(&mut driver, "after-the-big-frame").await;
    assert_eq!(fx.refusals("frame_size").await, before + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_sending_too_fast_is_closed_alone() {
    let fx = Fixture::start(Limits {
        max_client_messages_per_sec: 5,
        max_agent_messages_per_sec: 5,
        ..Limits::default()
    })
    .await;
    let (_, mut driver, mut watcher) = fx.driver_and_watcher().await;
    let before = fx.refusals("message_rate").await;

    // A burst of twice the rate is allowed; 40 at once are not.
    for _ in 0..40 {
        if watcher
            .send_resize(TermSize { cols: 80, rows: 24 })
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = watcher.wait_closed(WAIT).await.unwrap().unwrap();
    assert_eq!(code, CLOSE_RATE_LIMITED, "{reason}");
    assert!(reason.contains("more than 5 messages a second"), "{reason}");

    // An agent flooding its link is cut off alone too.
    let (_flooder, flooder_token) = register(&fx.http, &fx.url, "flooder").await;
    let mut fake = agent_connect_raw(&fx.url, &flooder_token).await.unwrap();
    agent_hello(&mut fake, paddock_tests::proto::PROTOCOL_VERSION)
        .await
        .unwrap();
    for id in 0..40u64 {
        let done = paddock_tests::proto::AgentToControl::RequestDone {
            request_id: paddock_tests::proto::RequestId(1_000_000 + id),
        };
        if futures_util::SinkExt::send(&mut fake, Message::text(done.encode()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, reason) = expect_close(&mut fake, WAIT).await.unwrap();
    assert_eq!(code, CLOSE_RATE_LIMITED, "{reason}");

    // Typing at a human pace is unharmed.
    still_served(&mut driver, "typed-after-the-flood").await;
    assert_eq!(fx.refusals("message_rate").await, before + 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_session_too_many_is_refused_with_429() {
    let fx = Fixture::start(Limits {
        max_sessions_per_sandbox: 2,
        ..Limits::default()
    })
    .await;
    let first = fx.open_session().await;
    let second = fx.open_session().await;
    let before = fx.refusals("sessions_per_sandbox").await;

    let (status, body) = fx.open_cat().await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "limit_exceeded", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("2 open sessions") && message.contains("max_sessions_per_sandbox"),
        "{message}"
    );
    assert_eq!(fx.refusals("sessions_per_sandbox").await, before + 1.0);

    // The open ones are unharmed; closing one makes room.
    let mut driver = fx
        .stream(OWNER, second, StreamOptions::attach())
        .await
        .unwrap();
    still_served(&mut driver, "second-still-runs").await;
    let path = format!("/v1/sandboxes/{}/sessions/{}", fx.sandbox, first.0);
    let (status, body) = fx.call(Method::DELETE, &path, None).await;
    assert!(status < 300, "{status} {body}");
    wait_until("room for a session", WAIT, || async {
        let (status, _) = fx.open_cat().await;
        Ok((status == 201).then_some(()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_watcher_too_many_is_refused_before_the_upgrade() {
    let fx = Fixture::start(Limits {
        max_watchers_per_session: 2,
        ..Limits::default()
    })
    .await;
    let (session, mut driver, watcher, message) =
        a_third_stream_is_refused(&fx, "watchers_per_session").await;
    assert!(message.contains("max_watchers_per_session"), "{message}");

    // Another session's stream is not counted against this one.
    let other = fx.open_session().await;
    fx.stream(OWNER, other, StreamOptions::watch())
        .await
        .unwrap();
    still_served(&mut driver, "driver-unharmed").await;
    // A watcher leaving frees its seat.
    watcher.close().await;
    wait_until("a free seat", WAIT, || async {
        Ok(fx
            .stream(OWNER, session, StreamOptions::watch())
            .await
            .ok()
            .map(|_| ()))
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_too_many_for_a_token_is_refused() {
    let fx = Fixture::start(Limits {
        max_connections_per_token: 2,
        ..Limits::default()
    })
    .await;
    let (session, mut driver, _watcher, message) =
        a_third_stream_is_refused(&fx, "connections_per_token").await;
    assert!(message.contains("max_connections_per_token"), "{message}");

    // Another token is counted apart.
    let (status, created) = fx
        .call(
            Method::POST,
            "/v1/tokens",
            Some(json!({ "name": "second", "role": "developer" })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let other = created["token"].as_str().unwrap();
    fx.stream(other, session, StreamOptions::watch())
        .await
        .unwrap();
    still_served(&mut driver, "driver-unharmed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_too_many_from_an_address_is_refused() {
    // agentd's own link, the driver and a watcher: three from 127.0.0.1.
    let fx = Fixture::start(Limits {
        max_connections_per_ip: 3,
        ..Limits::default()
    })
    .await;
    let (session, mut driver, _watcher, message) =
        a_third_stream_is_refused(&fx, "connections_per_ip").await;
    assert!(
        message.contains("127.0.0.1") && message.contains("max_connections_per_ip"),
        "{message}"
    );

    // Another address is counted apart: dial from 127.0.0.2.
    let addr: std::net::SocketAddr = fx.url.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    let url = format!(
        "ws://{addr}/v1/sandboxes/{}/sessions/{}/stream?mode=watch",
        fx.sandbox, session.0
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {OWNER}").parse().unwrap());
    let (_ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    still_served(&mut driver, "driver-unharmed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_is_413_with_the_json_error() {
    let fx = Fixture::start(Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let before = fx.refusals("body_size").await;
    let labels: serde_json::Map<String, Value> = (0..500)
        .map(|i| (format!("label-{i}"), json!("value")))
        .collect();
    let big = json!({ "name": "big", "labels": labels }).to_string();
    assert!(big.len() > 4096);

    // Announced by its length: refused before it is read.
    let resp = fx
        .http
        .post(format!("{}/v1/sandboxes", fx.url))
        .bearer_auth(OWNER)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("4096") && message.contains("max_body_bytes"),
        "{message}"
    );

    // Sent without a length (chunked): cut while it is read, same answer.
    let (status, body) = post_chunked(&fx.url, "/v1/sandboxes", big.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(fx.refusals("body_size").await, before + 2.0);
    // Both refusals are counted as requests of the route, by status.
    let text = support::scrape(&fx.http, &fx.url).await;
    let refused = support::sample(
        &text,
        "paddock_http_requests_total",
        &[
            ("route", "/v1/sandboxes"),
            ("method", "POST"),
            ("status", "413"),
        ],
    );
    assert_eq!(refused, Some(2.0), "{text}");

    // A request within the limit is served.
    let (status, body) = fx
        .call(
            Method::POST,
            "/v1/sandboxes",
            Some(json!({ "name": "small" })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// POSTs `body` as the owner with `Transfer-Encoding: chunked` (no length
/// announced), over a raw HTTP/1.1 connection; the status and JSON body.
async fn post_chunked(url: &str, path: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {OWNER}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may answer and close before reading all of it.
    let _ = tcp.write_all(&request).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let json = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(json).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_client_ip_header_is_what_counts() {
    // agentd's link carries no header: it counts for 127.0.0.1 alone.
    let fx = Fixture::start(Limits {
        max_connections_per_ip: 1,
        client_ip_header: Some("x-client-ip".into()),
        ..Limits::default()
    })
    .await;
    let session = fx.open_session().await;
    let before = fx.refusals("connections_per_ip").await;
    let (first, status) = upgrade_from(&fx, session, "203.0.113.7").await;
    assert_eq!(status, 101);
    let (_, status) = upgrade_from(&fx, session, "203.0.113.8").await;
    assert_eq!(status, 101, "another client address is counted apart");
    let (refused, status) = upgrade_from(&fx, session, "203.0.113.7").await;
    assert_eq!(status, 429);
    let refused = refused.unwrap_err();
    assert!(
        refused.contains("203.0.113.7") && refused.contains("max_connections_per_ip"),
        "{refused}"
    );
    assert_eq!(fx.refusals("connections_per_ip").await, before + 1.0);
    drop(first);
}

/// Opens a watch stream as a proxy would forward it for `client`: the
/// socket (on success) or the refusal's body, and the status.
async fn upgrade_from(
    fx: &Fixture,
    session: SessionId,
    client: &str,
) -> (Result<paddock_tests::Ws, String>, u16) {
    let url = format!(
        "{}/v1/sandboxes/{}/sessions/{}/stream?mode=watch",
        fx.url.replacen("http://", "ws://", 1),
        fx.sandbox,
        session.0
    );
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        url.as_str(),
    )
    .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {OWNER}").parse().unwrap());
    req.headers_mut()
        .insert("x-client-ip", client.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, resp)) => (Ok(ws), resp.status().as_u16()),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (Err(body), resp.status().as_u16())
        }
        Err(err) => panic!("{err}"),
    }
}
