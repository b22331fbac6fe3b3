//! Several control-plane replicas on one PostgreSQL database: two control
//! planes, A and B, share a fresh database; each holds the connection of
//! one sandbox (`sa` on A, `sb` on B), so each can dispatch only to its own.
//! Tasks submitted alternately through A and B all succeed, each runs
//! exactly once (one `task.started`, one step result), and both replicas
//! take part.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use paddock_tests::{Agentd, PgCluster};
use serde_json::{json, Value};
use support::{call, start, OWNER};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const TASKS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_database_run_each_task_exactly_once() {
    tokio::time::timeout(Duration::from_secs(150), scenario())
        .await
        .expect("the replica scenario took too long");
}

async fn scenario() {
    let pg = tokio::task::spawn_blocking(PgCluster::shared)
        .await
        .unwrap()
        .unwrap();
    let (_pg, database_url) = tokio::task::spawn_blocking(move || {
        let url = pg.fresh_database();
        (pg, url)
    })
    .await
    .unwrap();
    let database_url = database_url.unwrap();

    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let shutdown_a = CancellationToken::new();
    let shutdown_b = CancellationToken::new();
    let _guard_a = shutdown_a.clone().drop_guard();
    let _guard_b = shutdown_b.clone().drop_guard();
    let url_a = start(dir_a.path(), Some(&database_url), &shutdown_a).await;
    // B finds the owner token already stored by A.
    let url_b = start(dir_b.path(), Some(&database_url), &shutdown_b).await;
    let urls = [url_a.as_str(), url_b.as_str()];
    assert_ne!(
        std::fs::read_to_string(dir_a.path().join("instance.id")).ok(),
        std::fs::read_to_string(dir_b.path().join("instance.id")).ok(),
        "the two replicas should have distinct identities"
    );

    let http = reqwest::Client::new();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // The one owner token works on both.
    for url in urls {
        let (status, body) = call(&http, url, get.clone(), "/v1/sandboxes", None).await;
        assert_eq!(status, 200, "owner token refused by {url}: {body}");
    }

    let (status, agent) = call(
        &http,
        &url_a,
        post.clone(),
        "/v1/agents",
        Some(json!({ "name": "dev-agent" })),
    )
    .await;
    assert_eq!(status, 201, "{agent}");
    let mut sandbox_ids = BTreeMap::new();
    let mut sandbox_tokens = BTreeMap::new();
    for name in ["sa", "sb"] {
        let (status, sb) = call(
            &http,
            &url_a,
            post.clone(),
            "/v1/sandboxes",
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(status, 201, "{sb}");
        sandbox_ids.insert(
            sb["sandbox"]["id"].as_str().unwrap().to_owned(),
            name.to_owned(),
        );
        sandbox_tokens.insert(name, sb["token"].as_str().unwrap().to_owned());
    }
    // The agent and sandboxes created through A are visible through B.
    let (status, agents) = call(&http, &url_b, get.clone(), "/v1/agents", None).await;
    assert_eq!(status, 200, "{agents}");
    assert!(
        agents["agents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "dev-agent"),
        "{agents}"
    );

    let work_a = tempfile::tempdir().unwrap();
    let work_b = tempfile::tempdir().unwrap();
    let agentd_a = Agentd::start(&url_a, &sandbox_tokens["sa"], work_a.path()).unwrap();
    let agentd_b = Agentd::start(&url_b, &sandbox_tokens["sb"], work_b.path()).unwrap();

    // Both sandboxes connected, each to its own replica, before any task.
    // (A sandbox's `status` is the answering replica's view: A reports `sb`
    // as disconnected and B reports `sa` so, so each is asked about its own.)
    let deadline = Instant::now() + Duration::from_secs(30);
    for (url, name, agentd) in [(&url_a, "sa", &agentd_a), (&url_b, "sb", &agentd_b)] {
        loop {
            let (_, list) = call(&http, url, get.clone(), "/v1/sandboxes", None).await;
            let connected = list["sandboxes"].as_array().is_some_and(|all| {
                all.iter()
                    .any(|sb| sb["name"] == name && sb["status"] == "connected")
            });
            if connected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sandbox {name} never connected to {url}: {list}\n{}",
                agentd.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Twelve tasks, alternately through A and B.
    let mut ids = Vec::new();
    for n in 0..TASKS {
        let url = urls[n % 2];
        let task = json!({
            "agent": "dev-agent",
            "steps": [{ "kind": "run", "command": "sh", "args": ["-c", format!("echo task-{n}; sleep 0.3")] }],
        });
        let (status, task) = call(&http, url, post.clone(), "/v1/tasks", Some(task)).await;
        assert_eq!(status, 201, "{task}");
        ids.push(task["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), TASKS);

    // All succeed.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut done = BTreeMap::new();
    while done.len() < TASKS {
        for (n, id) in ids.iter().enumerate() {
            if done.contains_key(id) {
                continue;
            }
            let (status, t) = call(
                &http,
                urls[n % 2],
                get.clone(),
                &format!("/v1/tasks/{id}"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{t}");
            match t["state"].as_str().unwrap_or("") {
                "succeeded" => {
                    done.insert(id.clone(), t);
                }
                "pending" | "running" | "retrying" => {}
                other => panic!(
                    "task {n} ended {other}: {t}\nagentd sa:\n{}\nagentd sb:\n{}",
                    agentd_a.logs(),
                    agentd_b.logs()
                ),
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {TASKS} tasks succeeded in time",
            done.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Each ran exactly once; both replicas did work.
    let mut used = BTreeMap::<String, usize>::new();
    for (n, id) in ids.iter().enumerate() {
        let task = &done[id];
        // Read through the other replica than the one it was submitted to.
        let (status, events) = call(
            &http,
            urls[(n + 1) % 2],
            get.clone(),
            &format!("/v1/tasks/{id}/events"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{events}");
        let events = events["events"].as_array().unwrap();
        let started: Vec<&Value> = events
            .iter()
            .filter(|e| e["kind"] == "task.started")
            .collect();
        assert_eq!(
            started.len(),
            1,
            "task {n} started {} times: {events:?}",
            started.len()
        );
        let succeeded = events
            .iter()
            .filter(|e| e["kind"] == "task.succeeded")
            .count();
        assert_eq!(succeeded, 1, "task {n}: {events:?}");
        let results = task["results"].as_array().unwrap();
        assert_eq!(
            results.len(),
            1,
            "task {n} has {} results: {task}",
            results.len()
        );
        assert_eq!(results[0]["attempt"], 1, "task {n}: {task}");
        assert_eq!(task["attempt"], 1, "task {n}: {task}");
        let sandbox = task["sandbox_id"].as_str().unwrap_or_default();
        assert_eq!(
            started[0]["detail"]["sandbox"].as_str(),
            Some(sandbox),
            "task {n}: the started event and the task disagree on the sandbox: {task}"
        );
        let name = sandbox_ids
            .get(sandbox)
            .unwrap_or_else(|| panic!("task {n} ran on an unknown sandbox: {task}"));
        *used.entry(name.clone()).or_default() += 1;
        // The one session ran this task's own command, on that sandbox,
        // through the replica holding it.
        let session = results[0]["session_id"]
            .as_u64()
            .unwrap_or_else(|| panic!("task {n}'s run step has no session: {task}"));
        let owner = if name == "sa" { &url_a } else { &url_b };
        let expected = format!("task-{n}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp = http
                .get(format!(
                    "{owner}/v1/sandboxes/{sandbox}/sessions/{session}/output"
                ))
                .bearer_auth(OWNER)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            if status == 200 && text.lines().any(|l| l.trim_end() == expected) {
                assert_eq!(text.matches("task-").count(), 1, "task {n}: {text:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "task {n}'s session never showed {expected}: {status} {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(
        used.contains_key("sa") && used.contains_key("sb"),
        "both replicas should run tasks; sandboxes used: {used:?}"
    );
    eprintln!("tasks per sandbox: {used:?}");

    shutdown_a.cancel();
    shutdown_b.cancel();
}
