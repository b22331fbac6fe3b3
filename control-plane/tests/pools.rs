//! Pools and the idle policy, in process with real agentd children of the
//! local provider: an idle sandbox is stopped once the (injected, manual)
//! clock says it has been idle long enough — never while a session is
//! open; a task whose labels a pool carries makes the pool create a
//! sandbox, and later start its stopped one again rather than create
//! another; a pool with a minimum fills itself.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use control_plane::clock::Clock;
use control_plane::providers::settings::Pool;
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use support::{call, start_config, test_config};

/// Kills the agentd children left when a test ends (they outlive control planes).
struct Reaper(std::path::PathBuf, CancellationToken);

impl Drop for Reaper {
    fn drop(&mut self) {
        self.1.cancel();
        paddock_tests::kill_agentd_processes_of(&self.0);
    }
}

async fn poll<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

async fn status(http: &reqwest::Client, url: &str, sandbox: &str) -> String {
    let (_, body) = call(
        http,
        url,
        Method::GET,
        &format!("/v1/sandboxes/{sandbox}"),
        None,
    )
    .await;
    body["status"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_sandbox_is_stopped_by_the_clock_and_a_busy_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _reaper = Reaper(dir.path().to_owned(), shutdown.clone());
    let clock = Clock::manual(1_800_000_000_000);
    let mut config = test_config(dir.path());
    config.clock = clock.clone();
    config.providers.idle_stop_secs = 60;
    config.providers.agentd_bin = Some(paddock_tests::bin_path("agentd"));
    let url = start_config(config, &shutdown).await;
    let http = reqwest::Client::new();

    let (code, made) = call(
        &http,
        &url,
        Method::POST,
        "/v1/sandboxes",
        Some(json!({ "name": "idler", "provider": "local" })),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(
        made["token"], "",
        "a provisioned sandbox's token is never shown"
    );
    poll("idler to connect", async || {
        (status(&http, &url, "idler").await == "connected").then_some(())
    })
    .await;

    // Busy: a session is open. However far the clock goes, it keeps running.
    let (code, session) = call(
        &http,
        &url,
        Method::POST,
        "/v1/sandboxes/idler/sessions",
        Some(json!({ "command": "sleep", "args": ["600"] })),
    )
    .await;
    assert_eq!(code, 201, "{session}");
    let passes = metric(&http, &url, "paddock_pool_passes_total").await;
    poll(
        "three upkeep passes with a far-advanced clock",
        async || {
            clock.advance(Duration::from_secs(600));
            (metric(&http, &url, "paddock_pool_passes_total").await >= passes + 3).then_some(())
        },
    )
    .await;
    assert_eq!(
        status(&http, &url, "idler").await,
        "connected",
        "a busy sandbox was stopped"
    );
    assert_eq!(metric(&http, &url, "paddock_idle_stops_total").await, 0);

    // Idle: the session ended. Once the clock passes the limit, it stops.
    let path = format!("/v1/sandboxes/idler/sessions/{}", session["id"]);
    let (code, body) = call(&http, &url, Method::DELETE, &path, None).await;
    assert_eq!(code, 204, "{body}");
    poll("idler to be stopped for idleness", async || {
        clock.advance(Duration::from_secs(61));
        (status(&http, &url, "idler").await == "stopped").then_some(())
    })
    .await;
    assert_eq!(metric(&http, &url, "paddock_idle_stops_total").await, 1);
    assert!(paddock_tests::agentd_processes_of(dir.path()).is_empty());
    let (code, body) = call(&http, &url, Method::DELETE, "/v1/sandboxes/idler", None).await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("destroyed")),
        "{body}"
    );
}

async fn run_task(http: &reqwest::Client, url: &str, labels: Value) -> Value {
    let (code, task) = call(
        http,
        url,
        Method::POST,
        "/v1/tasks",
        Some(json!({
            "agent": "pooled-bot", "labels": labels,
            "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "echo pooled"] }]
        })),
    )
    .await;
    assert_eq!(code, 201, "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    poll("the task to succeed", async || {
        let (_, t) = call(http, url, Method::GET, &format!("/v1/tasks/{id}"), None).await;
        assert!(
            !matches!(t["state"].as_str(), Some("failed" | "timed_out")),
            "{t}"
        );
        (t["state"] == "succeeded").then_some(t)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_create_on_demand_start_stopped_members_first_and_keep_their_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _reaper = Reaper(dir.path().to_owned(), shutdown.clone());
    let mut config = test_config(dir.path());
    config.providers.idle_stop_secs = 0;
    config.providers.agentd_bin = Some(paddock_tests::bin_path("agentd"));
    let pool = |name: &str, kind: &str, min| Pool {
        name: name.into(),
        tenant: "default".into(),
        provider: Some("local".into()),
        labels: BTreeMap::from([("kind".to_owned(), kind.to_owned())]),
        size: None,
        min,
        max: 1,
    };
    config.providers.pools = vec![pool("burst", "burst", 0), pool("warm", "warm", 1)];
    let url = start_config(config, &shutdown).await;
    let http = reqwest::Client::new();
    let (code, body) = call(
        &http,
        &url,
        Method::POST,
        "/v1/agents",
        Some(json!({ "name": "pooled-bot" })),
    )
    .await;
    assert_eq!(code, 201, "{body}");

    let members = async |kind: &str| -> Vec<Value> {
        let (_, list) = call(&http, &url, Method::GET, "/v1/sandboxes", None).await;
        list["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["labels"]["kind"] == kind)
            .cloned()
            .collect()
    };
    // The warm pool fills itself to its minimum.
    poll("the warm pool's sandbox", async || {
        (members("warm").await.len() == 1).then_some(())
    })
    .await;

    let first = run_task(&http, &url, json!({ "kind": "burst" })).await;
    let burst = members("burst").await;
    assert_eq!(burst.len(), 1, "{burst:?}");
    assert_eq!(first["sandbox_id"], burst[0]["id"]);
    assert!(burst[0]["name"].as_str().unwrap().starts_with("burst-"));
    let id = burst[0]["id"].as_str().unwrap().to_owned();

    let (code, body) = call(
        &http,
        &url,
        Method::POST,
        &format!("/v1/sandboxes/{id}/stop"),
        None,
    )
    .await;
    assert_eq!(
        (code, body["status"].as_str()),
        (200, Some("stopped")),
        "{body}"
    );
    let second = run_task(&http, &url, json!({ "kind": "burst" })).await;
    assert_eq!(
        second["sandbox_id"],
        id.as_str(),
        "the stopped member was not reused"
    );
    assert_eq!(
        members("burst").await.len(),
        1,
        "a new sandbox was created instead"
    );

    for sb in [members("burst").await, members("warm").await].concat() {
        let (code, body) = call(
            &http,
            &url,
            Method::DELETE,
            &format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap()),
            None,
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_its_provider_lost_while_running_is_marked_failed() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _reaper = Reaper(dir.path().to_owned(), shutdown.clone());
    let mut config = test_config(dir.path());
    config.providers.agentd_bin = Some(paddock_tests::bin_path("agentd"));
    let url = start_config(config, &shutdown).await;
    let http = reqwest::Client::new();
    let (code, made) = call(
        &http,
        &url,
        Method::POST,
        "/v1/sandboxes",
        Some(json!({ "name": "doomed", "size": "small" })),
    )
    .await;
    assert_eq!(code, 201, "{made}");
    assert_eq!(
        made["sandbox"]["provider"], "local",
        "the tenant's default provider"
    );
    poll("doomed to connect", async || {
        (status(&http, &url, "doomed").await == "connected").then_some(())
    })
    .await;

    // Gone from under the provider: its directory, then its process.
    let id = made["sandbox"]["id"].as_str().unwrap();
    let sandbox_dir = dir.path().join("sandboxes").join(id);
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(sandbox_dir.join("local.json")).unwrap())
            .unwrap();
    std::fs::remove_dir_all(&sandbox_dir).unwrap();
    let pid = record["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let reason = poll("doomed to be marked failed", async || {
        let (_, body) = call(&http, &url, Method::GET, "/v1/sandboxes/doomed", None).await;
        (body["status"] == "failed").then(|| body["reason"].as_str().unwrap_or_default().to_owned())
    })
    .await;
    assert!(reason.contains("no longer reports"), "{reason}");
    assert!(
        paddock_tests::agentd_processes_of(dir.path()).is_empty(),
        "agentd was started again"
    );
}
