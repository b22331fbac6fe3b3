//! After a scripted scenario, every metric of `/metrics` has the value the
//! script implies — exactly, not "at least": this binary holds one test, so
//! the process-wide recorder counts this scenario alone.
//!
//! The script: register a sandbox; a real agentd connects; a session prints
//! a known stream once a gate file appears, read by a replaying watcher and
//! by a live watcher that stalls (and is skipped ahead); a third watcher is
//! refused by `max_watchers_per_session`; a driver types into `cat`; an
//! events subscriber listens; one task succeeds and the next is held by the
//! agent's execution quota. Every HTTP call is tallied by route template
//! and status to compare with the request counters and histograms.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use paddock_tests::proto::SessionId;
use paddock_tests::{
    ws_connect, x_lines_command, x_lines_output, Agentd, OutputSink, StreamClient, StreamError,
    StreamOptions,
};
use reqwest::Method;
use serde_json::{json, Value};
use support::{sample, start_with, OWNER};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(60);
/// Output of the gated session: more than the socket buffers between the
/// server and the stalled watcher hold (its receive buffer is fixed at 64
/// KiB; a send buffer grows to 4 MiB by default), so it falls behind the
/// (smallest) live buffer.
const TOTAL: u64 = 12 * 1024 * 1024;
const WIDTH: u32 = 100;

const SESSIONS: &str = "/v1/sandboxes/{sandbox}/sessions";
const SESSION: &str = "/v1/sandboxes/{sandbox}/sessions/{session}";
const STREAM: &str = "/v1/sandboxes/{sandbox}/sessions/{session}/stream";

/// Calls the API as the owner and tallies each call by route template,
/// method and status.
struct Api {
    http: reqwest::Client,
    url: String,
    tally: BTreeMap<(String, String, u16), u64>,
}

impl Api {
    async fn call(
        &mut self,
        method: Method,
        route: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, body) = support::call(&self.http, &self.url, method.clone(), path, body).await;
        self.count(method.as_str(), route, status);
        (status, body)
    }

    fn count(&mut self, method: &str, route: &str, status: u16) {
        *self
            .tally
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// `GET path` (tallied under `route`) until `done` holds of the body.
    async fn poll(&mut self, route: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self.call(Method::GET, route, path, None).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn scrape(&mut self) -> String {
        let text = support::scrape(&self.http, &self.url).await;
        self.count("GET", "/metrics", 200);
        text
    }

    async fn stream(
        &mut self,
        sandbox: &str,
        session: SessionId,
        opts: StreamOptions,
        recv_buffer: Option<u32>,
    ) -> Result<StreamClient, StreamError> {
        let client = match recv_buffer {
            Some(size) => {
                StreamClient::connect_with_recv_buffer(
                    &self.url, OWNER, sandbox, session, opts, size,
                )
                .await
            }
            None => StreamClient::connect(&self.url, OWNER, sandbox, session, opts).await,
        };
        let status = match &client {
            Ok(_) => 101,
            Err(StreamError::Http { status, .. }) => *status,
            Err(other) => panic!("the stream failed: {other:?}"),
        };
        self.count("GET", STREAM, status);
        client
    }
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(text, name, labels).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_scripted_scenario_every_metric_has_its_expected_value() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let url = start_with(data.path(), None, &shutdown, |config| {
        // A link silent this long on a loaded machine would reconnect and
        // count a second agent connection.
        config.heartbeat_ms = 5000;
        config.live_buffer_bytes = 64 * 1024;
        config.limits.max_watchers_per_session = 2;
    })
    .await;
    let mut api = Api {
        http: reqwest::Client::new(),
        url: url.clone(),
        tally: BTreeMap::new(),
    };

    // A sandbox and its real agentd.
    let (status, sb) = api
        .call(
            Method::POST,
            "/v1/sandboxes",
            "/v1/sandboxes",
            Some(json!({ "name": "scripted" })),
        )
        .await;
    assert_eq!(status, 201, "{sb}");
    let sandbox = sb["sandbox"]["id"].as_str().unwrap().to_owned();
    let _agentd = Agentd::start(&url, sb["token"].as_str().unwrap(), work.path()).unwrap();
    let path = format!("/v1/sandboxes/{sandbox}");
    api.poll("/v1/sandboxes/{sandbox}", &path, |info| {
        info["status"] == "connected"
    })
    .await;

    // The gated session, a replaying reader, a live watcher that stalls,
    // and one watcher too many.
    let gate = work.path().join("gate");
    let script = format!(
        "while [ ! -e '{}' ]; do sleep 0.05; done; {}",
        gate.display(),
        x_lines_command(TOTAL, WIDTH)
    );
    let sessions = format!("/v1/sandboxes/{sandbox}/sessions");
    let (status, opened) = api
        .call(
            Method::POST,
            SESSIONS,
            &sessions,
            Some(json!({ "command": "sh", "args": ["-c", script] })),
        )
        .await;
    assert_eq!(status, 201, "{opened}");
    let gated = SessionId(opened["id"].as_u64().unwrap());
    let expected = x_lines_output(TOTAL, WIDTH);
    let mut reader = api
        .stream(&sandbox, gated, StreamOptions::watch(), None)
        .await
        .unwrap();
    reader.set_sink(OutputSink::Discard);
    // Joins live (no `from`): a live watcher is skipped, never fed a backlog.
    let mut stalled = api
        .stream(
            &sandbox,
            gated,
            StreamOptions::watch().from(None),
            Some(64 * 1024),
        )
        .await
        .unwrap();
    stalled.set_sink(OutputSink::Discard);
    let refused = api
        .stream(&sandbox, gated, StreamOptions::watch(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, StreamError::Http { status: 429, .. }),
        "{refused:?}"
    );
    std::fs::write(&gate, b"go").unwrap();
    let status = reader.wait_exited(WAIT).await.unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(reader.received(), expected.len() as u64);
    // Only now does the stalled watcher read again: far behind, skipped.
    stalled.wait_exited(WAIT).await.unwrap();
    let skips = stalled
        .gaps()
        .iter()
        .filter(|(_, _, reason)| reason.starts_with("skipped ahead"))
        .count();
    assert!(
        skips >= 1,
        "the stalled watcher was never skipped: received {}, gaps {:?}, {} snapshots",
        stalled.received(),
        stalled.gaps(),
        stalled.snapshots().len()
    );

    // A driver types into `cat`; an events subscriber listens.
    let (status, opened) = api
        .call(
            Method::POST,
            SESSIONS,
            &sessions,
            Some(json!({ "command": "cat" })),
        )
        .await;
    assert_eq!(status, 201, "{opened}");
    let cat = SessionId(opened["id"].as_u64().unwrap());
    let mut driver = api
        .stream(&sandbox, cat, StreamOptions::attach(), None)
        .await
        .unwrap();
    driver.send_input(b"hello\n").await.unwrap();
    driver
        .recv_until_output_contains("hello\r\nhello\r\n", WAIT)
        .await
        .unwrap();
    let events_url = format!("{}/v1/events", url.replacen("http://", "ws://", 1));
    let _events = ws_connect(&events_url, OWNER).await.unwrap();
    api.count("GET", "/v1/events", 101);

    // One task succeeds; the agent's quota holds the next.
    let (status, body) = api
        .call(
            Method::POST,
            "/v1/agents",
            "/v1/agents",
            Some(json!({ "name": "bot" })),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let (status, body) = api
        .call(
            Method::PUT,
            "/v1/agents/{agent}/limits",
            "/v1/agents/bot/limits",
            Some(json!({ "executions_per_day": 1 })),
        )
        .await;
    assert!(status < 300, "{status} {body}");
    let task = json!({ "agent": "bot", "steps": [{ "kind": "run", "command": "true" }] });
    let (status, first) = api
        .call(Method::POST, "/v1/tasks", "/v1/tasks", Some(task.clone()))
        .await;
    assert!(status < 300, "{status} {first}");
    let first = first["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tasks/{first}");
    api.poll("/v1/tasks/{task}", &path, |t| t["state"] == "succeeded")
        .await;
    let (status, second) = api
        .call(Method::POST, "/v1/tasks", "/v1/tasks", Some(task))
        .await;
    assert!(status < 300, "{status} {second}");
    let second = second["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/tasks/{second}");
    api.poll("/v1/tasks/{task}", &path, |t| {
        t["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("quota_exceeded"))
    })
    .await;

    // Everything received is stored and acked; the streams that ended are gone.
    let (status, list) = api.call(Method::GET, SESSIONS, &sessions, None).await;
    assert_eq!(status, 200, "{list}");
    let list = list["sessions"].as_array().unwrap().clone();
    assert_eq!(
        list.len(),
        3,
        "the gated session, cat and the task's step: {list:?}"
    );
    let mut received = 0.0;
    for s in &list {
        let id = s["id"].as_u64().unwrap();
        let path = format!("/v1/sandboxes/{sandbox}/sessions/{id}");
        let info = api
            .poll(SESSION, &path, |info| {
                if id == cat.0 {
                    info["end_offset"] == 14
                } else {
                    info["state"] == "exited"
                }
            })
            .await;
        let end = info["end_offset"].as_u64().unwrap();
        received += end as f64;
    }
    assert_eq!(
        received,
        (expected.len() + "hello\r\nhello\r\n".len()) as f64,
        "the gated stream, the echo and cat's copy, and nothing from `true`"
    );
    let sent_out = (reader.received() + stalled.received() + driver.received()) as f64;
    drop((reader, stalled));
    let mut text;
    // Polled by hand: each scrape is itself a request to count.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        text = api.scrape().await;
        let ready = value(
            &text,
            "paddock_websocket_connections",
            &[("kind", "client")],
        ) == 1.0
            && value(&text, "paddock_ack_lag_bytes", &[]) == 0.0;
        if ready {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last scrape counts the ones before it; this one is the last.
    let scrapes_before = api.tally[&("/metrics".to_owned(), "GET".to_owned(), 200)] - 1;
    api.tally.insert(
        ("/metrics".to_owned(), "GET".to_owned(), 200),
        scrapes_before,
    );
    if scrapes_before == 0 {
        api.tally
            .remove(&("/metrics".to_owned(), "GET".to_owned(), 200));
    }

    let expect = |name: &str, labels: &[(&str, &str)], want: f64| {
        let got = value(&text, name, labels);
        assert_eq!(got, want, "{name}{labels:?}\n{text}");
    };
    expect("paddock_sandboxes_connected", &[], 1.0);
    expect("paddock_sessions_live", &[], 1.0);
    expect(
        "paddock_output_bytes_total",
        &[("direction", "in")],
        received,
    );
    expect(
        "paddock_output_bytes_total",
        &[("direction", "out")],
        sent_out,
    );
    expect("paddock_input_bytes_total", &[], 6.0);
    expect("paddock_stored_bytes_total", &[], received);
    expect("paddock_ack_lag_bytes", &[], 0.0);
    expect("paddock_watcher_skips_total", &[], skips as f64);
    expect("paddock_websocket_connections", &[("kind", "agent")], 1.0);
    expect("paddock_websocket_connections", &[("kind", "client")], 1.0);
    expect("paddock_websocket_connections", &[("kind", "events")], 1.0);
    expect("paddock_tasks_total", &[("state", "succeeded")], 1.0);
    expect("paddock_tasks_total", &[], 1.0);
    expect("paddock_tasks", &[("state", "succeeded")], 1.0);
    expect("paddock_tasks", &[("state", "pending")], 1.0);
    expect("paddock_tasks", &[], 2.0);
    expect(
        "paddock_governance_refusals_total",
        &[("reason", "quota_exceeded")],
        1.0,
    );
    expect("paddock_governance_refusals_total", &[], 1.0);
    expect(
        "paddock_limit_refusals_total",
        &[("limit", "watchers_per_session")],
        1.0,
    );
    expect("paddock_limit_refusals_total", &[], 1.0);
    // Store latency: one observation per call of the method.
    expect(
        "paddock_store_query_duration_seconds_count",
        &[("op", "create_sandbox")],
        1.0,
    );
    expect(
        "paddock_store_query_duration_seconds_count",
        &[("op", "create_session")],
        3.0,
    );

    // HTTP: every request of the script, by route, method and status, and
    // one duration observation per request; agentd's connection besides.
    api.count("GET", "/v1/agent/connect", 101);
    let mut per_route: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((route, method, status), n) in &api.tally {
        let status = status.to_string();
        let labels = [
            ("route", route.as_str()),
            ("method", method.as_str()),
            ("status", status.as_str()),
        ];
        expect("paddock_http_requests_total", &labels, *n as f64);
        *per_route
            .entry((route.clone(), method.clone()))
            .or_default() += n;
    }
    let total: u64 = api.tally.values().sum();
    expect("paddock_http_requests_total", &[], total as f64);
    for ((route, method), n) in &per_route {
        expect(
            "paddock_http_request_duration_seconds_count",
            &[("route", route), ("method", method)],
            *n as f64,
        );
    }
    shutdown.cancel();
}
