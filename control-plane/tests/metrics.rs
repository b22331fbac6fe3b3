//! `GET /metrics` after a real session: the sandbox counts as connected, the
//! output received is counted, and requests are counted per route template.
//!
//! The recorder is global to the process, so values are compared with ≥.

mod support;

use std::time::Duration;

use paddock_tests::Agentd;
use serde_json::json;
use support::{call, sample, start};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_session_and_its_requests() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let url = start(dir.path(), None, &shutdown).await;
    let http = reqwest::Client::new();

    let (status, sb) = call(
        &http,
        &url,
        reqwest::Method::POST,
        "/v1/sandboxes",
        Some(json!({ "name": "metered" })),
    )
    .await;
    assert_eq!(status, 201, "{sb}");
    let sandbox = sb["sandbox"]["id"].as_str().unwrap().to_owned();
    let work = tempfile::tempdir().unwrap();
    let _agentd = Agentd::start(&url, sb["token"].as_str().unwrap(), work.path()).unwrap();

    // Opening fails until agentd has connected.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let session = loop {
        let (status, body) = call(
            &http,
            &url,
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{sandbox}/sessions"),
            Some(json!({ "command": "echo", "args": ["hello-metrics"] })),
        )
        .await;
        if status == 201 {
            // A number or a string, whichever the id is on the wire.
            break body["id"].to_string().trim_matches('"').to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agentd never connected: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let end_offset = loop {
        let (_, info) = call(
            &http,
            &url,
            reqwest::Method::GET,
            &format!("/v1/sandboxes/{sandbox}/sessions/{session}"),
            None,
        )
        .await;
        if info["state"] == "exited" {
            break info["end_offset"].as_u64().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never exited: {info}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(end_offset > 0, "echo printed nothing");

    // Public: no token.
    let resp = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert!(content_type.contains("version=0.0.4"), "{content_type}");
    let text = resp.text().await.unwrap();

    let connected = sample(&text, "paddock_sandboxes_connected", &[]);
    assert!(connected.unwrap_or(0.0) >= 1.0, "{text}");
    let bytes_in = sample(&text, "paddock_output_bytes_total", &[("direction", "in")]);
    assert!(bytes_in.unwrap_or(0.0) >= end_offset as f64, "{text}");
    let registered = sample(
        &text,
        "paddock_http_requests_total",
        &[
            ("route", "/v1/sandboxes"),
            ("method", "POST"),
            ("status", "201"),
        ],
    );
    assert!(registered.unwrap_or(0.0) >= 1.0, "{text}");
    // The duration histogram is labelled by route template, not by the path.
    assert!(
        text.contains(r#"route="/v1/sandboxes/{sandbox}/sessions/{session}""#),
        "{text}"
    );
    assert!(
        !text.contains(&format!("/sessions/{session}\"")),
        "raw ids leaked into labels: {text}"
    );

    shutdown.cancel();
}
