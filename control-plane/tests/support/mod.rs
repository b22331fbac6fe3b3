//! What the in-process control-plane tests share: starting the real library
//! entry point on 127.0.0.1:0 and calling its API as the owner.

use std::path::Path;

use control_plane::config::Config;
use control_plane::App;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The owner's API token of every in-process control plane started here.
pub const OWNER: &str = "pdk_owner_token_for_in_process_tests_0123";

/// Starts a control plane with its data under `data_dir` (on SQLite there
/// unless `database_url` names another database); returns its URL. It
/// serves until `shutdown` is cancelled.
#[allow(dead_code)] // some test binaries start with their own config
pub async fn start(
    data_dir: &Path,
    database_url: Option<&str>,
    shutdown: &CancellationToken,
) -> String {
    start_with(data_dir, database_url, shutdown, |_| {}).await
}

/// [`start`] with the config changed by `configure` first.
#[allow(dead_code)]
pub async fn start_with(
    data_dir: &Path,
    database_url: Option<&str>,
    shutdown: &CancellationToken,
    configure: impl FnOnce(&mut Config),
) -> String {
    let mut config = test_config(data_dir);
    config.database_url = database_url.map(str::to_owned);
    configure(&mut config);
    start_config(config, shutdown).await
}

/// The settings [`start`] uses, to change before [`start_config`].
#[allow(dead_code)]
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        heartbeat_ms: 1000,
        // These tests call the API hard; the rate limit has its own test.
        api_rate_per_sec: 100_000,
        api_burst: 100_000,
        bootstrap_token: Some(OWNER.to_owned()),
        ..Config::default()
    }
}

/// Starts a control plane with `config` on 127.0.0.1:0; returns its URL.
pub async fn start_config(config: Config, shutdown: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = App::open(config, shutdown.clone()).await.unwrap();
    tokio::spawn(app.serve(listener));
    url
}

/// Calls the API as the owner; the status and the body as JSON (`Null` if none).
pub async fn call(
    http: &reqwest::Client,
    url: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http
        .request(method, format!("{url}{path}"))
        .bearer_auth(OWNER);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The sum of the samples of `name` in Prometheus text whose labels include
/// every one of `labels`; `None` if there is no such sample.
#[allow(dead_code)] // not every test binary reads metrics
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let metric = series.split('{').next().unwrap_or_default();
        if metric != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, v)| series.contains(&format!("{k}=\"{v}\"")))
        {
            *found.get_or_insert(0.0) += value.parse::<f64>().unwrap();
        }
    }
    found
}

/// `GET /metrics` of the control plane at `url`.
#[allow(dead_code)] // not every test binary reads metrics
pub async fn scrape(http: &reqwest::Client, url: &str) -> String {
    let resp = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.unwrap()
}

/// Refusals of `limit` counted so far (`paddock_limit_refusals_total`).
#[allow(dead_code)] // not every test binary reads metrics
pub async fn refusals(http: &reqwest::Client, url: &str, limit: &str) -> f64 {
    let text = scrape(http, url).await;
    sample(&text, "paddock_limit_refusals_total", &[("limit", limit)]).unwrap_or(0.0)
}
