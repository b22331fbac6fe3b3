//! Reputation routes a restricted agent's tasks to a person: once the
//! agent's score falls below 50, its next task waits in
//! `awaiting_approval`, and approving it runs it on a real agentd.

mod support;

use std::time::Duration;

use control_plane::governance::{Governance, Outcome};
use control_plane::store::{self, Durability};
use paddock_tests::Agentd;
use serde_json::json;
use support::{call, start};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_agents_task_waits_for_approval_then_runs() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let url = start(dir.path(), None, &shutdown).await;
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;

    let (_, agent) = call(
        &http,
        &url,
        post.clone(),
        "/v1/agents",
        Some(json!({ "name": "risky" })),
    )
    .await;
    let agent_id = agent["id"].as_str().unwrap().to_owned();
    let (status, sb) = call(
        &http,
        &url,
        post.clone(),
        "/v1/sandboxes",
        Some(json!({ "name": "box" })),
    )
    .await;
    assert_eq!(status, 201, "{sb}");
    let work = tempfile::tempdir().unwrap();
    let _agentd = Agentd::start(&url, sb["token"].as_str().unwrap(), work.path()).unwrap();

    // The same database, through the governance interface: eleven failures
    // take the agent from 100 to 45.
    let (store, _system) = store::open(&store::sqlite_url(dir.path()), Durability::Normal)
        .await
        .unwrap();
    let governance = Governance::new(store);
    let mut restricted = false;
    for i in 0..11 {
        let change = governance
            .apply_outcome(
                "default",
                &agent_id,
                Outcome::Failure,
                &format!("failure {i}"),
                1_000 + i,
            )
            .await
            .unwrap();
        restricted = change.restricted;
    }
    assert!(restricted, "the agent should be restricted below 50");

    let task = json!({ "agent": "risky", "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "echo approved-run"] }] });
    let (status, task) = call(&http, &url, post.clone(), "/v1/tasks", Some(task)).await;
    assert_eq!(status, 201, "{task}");
    assert_eq!(task["state"], "awaiting_approval", "{task}");
    assert!(
        task["reason"]
            .as_str()
            .unwrap_or("")
            .contains("agent_restricted"),
        "{task}"
    );
    let id = task["id"].as_str().unwrap().to_owned();

    // It does not run by itself: three scheduler scans (every 500 ms) pass
    // and it still waits. A wait is the only way to observe an absence.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, still) = call(
        &http,
        &url,
        reqwest::Method::GET,
        &format!("/v1/tasks/{id}"),
        None,
    )
    .await;
    assert_eq!(still["state"], "awaiting_approval");

    let (status, approved) = call(
        &http,
        &url,
        post.clone(),
        &format!("/v1/tasks/{id}/approve"),
        Some(json!({ "reason": "looked fine" })),
    )
    .await;
    assert_eq!(status, 200, "{approved}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, t) = call(
            &http,
            &url,
            reqwest::Method::GET,
            &format!("/v1/tasks/{id}"),
            None,
        )
        .await;
        if t["state"] == "succeeded" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the approved task never ran: {t}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A second approval is refused: it is not waiting any more.
    let (status, _) = call(&http, &url, post, &format!("/v1/tasks/{id}/approve"), None).await;
    assert_eq!(status, 409);
    shutdown.cancel();
}
