//! The API's request-rate limit on a real control plane: a token that bursts
//! past its allowance is refused with 429 and `Retry-After`, other tokens
//! are not, and waiting as long as the header says lets it in again.

use std::time::Duration;

use control_plane::config::Config;
use control_plane::App;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const FIRST: &str = "pdk_first_token_for_rate_limit_tests_01";
const SECOND: &str = "pdk_second_token_for_rate_limit_tests_2";

/// A control plane on 127.0.0.1:0 with its data in a temporary directory;
/// stopped when dropped.
struct Server {
    url: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(rate_per_sec: u32, burst: u32) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        api_rate_per_sec: rate_per_sec,
        api_burst: burst,
        bootstrap_token: Some(FIRST.to_owned()),
        // A second owner token: its own row, so its own allowance.
        owner_token: Some(SECOND.to_owned()),
        ..Config::default()
    };
    config.validate().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let app = App::open(config, shutdown.clone()).await.unwrap();
    tokio::spawn(app.serve(listener));
    Server {
        url,
        shutdown,
        _dir: dir,
    }
}

/// Status, `Retry-After` (if any) and JSON body of `GET /v1/whoami`.
async fn whoami(http: &reqwest::Client, url: &str, token: &str) -> (u16, Option<u64>, Value) {
    let resp = http
        .get(format!("{url}/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bursting_token_is_refused_then_served_after_retry_after() {
    let server = start(5, 10).await;
    let http = reqwest::Client::new();

    let mut answers = Vec::new();
    for _ in 0..30 {
        answers.push(whoami(&http, &server.url, FIRST).await);
    }
    for (i, (status, retry_after, body)) in answers.iter().take(10).enumerate() {
        assert_eq!(*status, 200, "request {i} is within the burst: {body}");
        assert_eq!(*retry_after, None);
    }
    let refused: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
    assert!(
        !refused.is_empty(),
        "30 quick requests at 5/s with bursts of 10 must see a 429: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().all(|(s, _, _)| *s == 200 || *s == 429),
        "only 200 or 429: {:?}",
        answers.iter().map(|a| a.0).collect::<Vec<_>>()
    );
    for (_, retry_after, body) in &refused {
        // One request more at 5 a second is at most 200 ms away.
        assert_eq!(*retry_after, Some(1), "a 429 carries Retry-After");
        assert_eq!(body["error"]["code"], "quota_exceeded", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        let ms = message
            .strip_prefix(
                "too many requests for this token: at most 5 per second, bursts of 10; retry after ",
            )
            .and_then(|rest| rest.strip_suffix(" ms"))
            .and_then(|ms| ms.parse::<u64>().ok());
        assert!(ms.is_some_and(|ms| (1..=200).contains(&ms)), "{message}");
    }

    // Another token has its own allowance.
    let (status, _, body) = whoami(&http, &server.url, SECOND).await;
    assert_eq!(status, 200, "{body}");

    // Drain the first token again, then wait as long as the server says.
    let mut retry_after = None;
    for _ in 0..50 {
        let (status, header, _) = whoami(&http, &server.url, FIRST).await;
        if status == 429 {
            retry_after = header;
            break;
        }
    }
    let wait = Duration::from_secs(retry_after.expect("the first token is refused again"));
    tokio::time::sleep(wait).await;
    let (status, _, body) = whoami(&http, &server.url, FIRST).await;
    assert_eq!(status, 200, "served again after Retry-After: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_routes_are_not_limited() {
    let server = start(1, 1).await;
    let http = reqwest::Client::new();
    for i in 0..5 {
        let status = http
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "health check {i}");
    }
    let (status, _, _) = whoami(&http, &server.url, FIRST).await;
    assert_eq!(status, 200);
    let (status, retry_after, _) = whoami(&http, &server.url, FIRST).await;
    assert_eq!((status, retry_after), (429, Some(1)));
}
