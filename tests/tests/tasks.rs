//! Tasks end to end with real agentd: a two-step task runs (its session
//! watchable and stored) and succeeds; a failing step retries and then
//! fails with the right events; a queue survives a control-plane restart.

use std::time::Duration;

use anyhow::{ensure, Context};
use paddock_tests::{wait_until, within_for, ControlPlane};
use reqwest::Method;
use serde_json::{json, Value};

async fn post(cp: &ControlPlane, path: &str, body: Value) -> anyhow::Result<Value> {
    let (status, text) = cp.api().raw(Method::POST, path, Some(body)).await?;
    ensure!(status.is_success(), "POST {path}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

async fn get(cp: &ControlPlane, path: &str) -> anyhow::Result<Value> {
    let (status, text) = cp.api().raw(Method::GET, path, None).await?;
    ensure!(status.is_success(), "GET {path}: {status} {text}");
    Ok(serde_json::from_str(&text)?)
}

async fn wait_state(
    cp: &ControlPlane,
    id: &str,
    want: &str,
    limit: Duration,
) -> anyhow::Result<Value> {
    wait_until(&format!("task {id} to be {want}"), limit, || async {
        let task = get(cp, &format!("/v1/tasks/{id}")).await?;
        Ok((task["state"] == want).then_some(task))
    })
    .await
}

async fn event_kinds(cp: &ControlPlane, id: &str) -> anyhow::Result<Vec<String>> {
    let events = get(cp, &format!("/v1/tasks/{id}/events")).await?;
    Ok(events["events"]
        .as_array()
        .context("no events")?
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_step_task_runs_watchable_and_succeeds() {
    within_for(Duration::from_secs(90), async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("worker").await?;
        post(&cp, "/v1/agents", json!({ "name": "dev-agent" })).await?;
        let task = post(
            &cp,
            "/v1/tasks",
            json!({
                "agent": "dev-agent",
                "steps": [
                    { "kind": "tool", "call": { "tool": "file_write", "path": "hello.txt", "content": "from a task\n" } },
                    { "kind": "run", "command": "sh", "args": ["-c", "cat hello.txt; sleep 1; echo step-two-done"] }
                ],
                "idempotency_key": "once"
            }),
        )
        .await?;
        let id = task["id"].as_str().context("no id")?.to_owned();
        // The same key returns the same task.
        let again = post(
            &cp,
            "/v1/tasks",
            json!({ "agent": "dev-agent", "steps": [{ "kind": "run", "command": "false" }], "idempotency_key": "once" }),
        )
        .await?;
        ensure!(again["id"] == task["id"], "the idempotency key made a second task");

        // While it runs, its session is there to watch.
        let running = wait_until("the run step's session", Duration::from_secs(30), || async {
            let t = get(&cp, &format!("/v1/tasks/{id}")).await?;
            Ok(t["results"]
                .as_array()
                .and_then(|r| r.iter().find_map(|s| s["session_id"].as_u64())))
        })
        .await?;
        let done = wait_state(&cp, &id, "succeeded", Duration::from_secs(30)).await?;
        ensure!(done["sandbox_id"] == sb.id(), "ran elsewhere: {done}");
        let stored = cp
            .api()
            .output(sb.id(), paddock_tests::proto::SessionId(running), None, None)
            .await?;
        let text = String::from_utf8_lossy(&stored.bytes);
        ensure!(
            text.contains("from a task") && text.contains("step-two-done"),
            "the step's output was not stored: {text:?}"
        );
        let kinds = event_kinds(&cp, &id).await?;
        for want in ["task.submitted", "task.started", "task.step.started", "task.step.finished", "task.succeeded"] {
            ensure!(kinds.iter().any(|k| k == want), "missing {want} in {kinds:?}");
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_retried_then_the_task_fails() {
    within_for(Duration::from_secs(90), async {
        let cp = ControlPlane::start().await?;
        let _sb = cp.add_sandbox("worker").await?;
        post(&cp, "/v1/agents", json!({ "name": "dev-agent" })).await?;
        let task = post(
            &cp,
            "/v1/tasks",
            json!({
                "agent": "dev-agent",
                "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "exit 3"] }],
                "retry": { "attempts": 2, "backoff_secs": 0 }
            }),
        )
        .await?;
        let id = task["id"].as_str().context("no id")?.to_owned();
        let failed = wait_state(&cp, &id, "failed", Duration::from_secs(30)).await?;
        ensure!(failed["attempt"] == 2, "expected two attempts: {failed}");
        ensure!(
            failed["reason"]
                .as_str()
                .is_some_and(|r| r.contains("exit 3")),
            "the reason should give the exit status: {failed}"
        );
        let kinds = event_kinds(&cp, &id).await?;
        let started = kinds.iter().filter(|k| *k == "task.started").count();
        ensure!(started == 2, "two attempts expected: {kinds:?}");
        ensure!(
            kinds.iter().any(|k| k == "task.retrying"),
            "no retry event: {kinds:?}"
        );
        ensure!(
            kinds.last().map(String::as_str) == Some("task.failed"),
            "{kinds:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_queue_loses_no_task() {
    within_for(Duration::from_secs(120), async {
        let mut cp = ControlPlane::start().await?;
        let _sb = cp.add_sandbox("worker").await?;
        post(&cp, "/v1/agents", json!({ "name": "dev-agent" })).await?;
        // One long task occupies the only sandbox; two more wait behind it.
        let mut ids = Vec::new();
        for script in ["sleep 3; echo first", "echo second", "echo third"] {
            let task = post(
                &cp,
                "/v1/tasks",
                json!({
                    "agent": "dev-agent",
                    "steps": [{ "kind": "run", "command": "sh", "args": ["-c", script] }],
                    "retry": { "attempts": 2 }
                }),
            )
            .await?;
            ids.push(task["id"].as_str().context("no id")?.to_owned());
        }
        wait_state(&cp, &ids[0], "running", Duration::from_secs(30)).await?;
        cp.kill();
        cp.restart().await?;
        for id in &ids {
            wait_state(&cp, id, "succeeded", Duration::from_secs(60)).await?;
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_task_over_its_agents_budget_is_stopped() {
    within_for(Duration::from_secs(90), async {
        // Sandbox time at $36 an hour: a cent every second.
        let cp = ControlPlane::start_with(&[("PADDOCK_SANDBOX_MICROS_PER_HOUR", "36000000")]).await?;
        let _sb = cp.add_sandbox("worker").await?;
        post(&cp, "/v1/agents", json!({ "name": "spender" })).await?;
        let (status, text) = cp
            .api()
            .raw(
                Method::PUT,
                "/v1/agents/spender/limits",
                Some(json!({ "budget_hourly_micros": 30000 })),
            )
            .await?;
        ensure!(status.is_success(), "limits: {status} {text}");
        let task = post(
            &cp,
            "/v1/tasks",
            json!({ "agent": "spender", "steps": [{ "kind": "run", "command": "sleep", "args": ["60"] }] }),
        )
        .await?;
        let id = task["id"].as_str().context("no id")?.to_owned();
        let failed = wait_state(&cp, &id, "failed", Duration::from_secs(30)).await?;
        ensure!(
            failed["reason"].as_str().is_some_and(|r| r.starts_with("budget_exceeded")),
            "the task should stop for its budget: {failed}"
        );
        // The next task of that agent is held: the budget is used up.
        let next = post(
            &cp,
            "/v1/tasks",
            json!({ "agent": "spender", "steps": [{ "kind": "run", "command": "true" }] }),
        )
        .await?;
        let next_id = next["id"].as_str().context("no id")?.to_owned();
        let held = wait_until("the next task to be held", Duration::from_secs(10), || async {
            let t = get(&cp, &format!("/v1/tasks/{next_id}")).await?;
            Ok(t["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("budget_exceeded"))
                .then_some(t))
        })
        .await?;
        ensure!(held["state"] == "pending", "held, not run: {held}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_lost_mid_task_is_retried_on_another() {
    within_for(Duration::from_secs(90), async {
        let cp = ControlPlane::start().await?;
        let mut first = cp.add_sandbox("first").await?;
        let mut second = cp.add_sandbox("second").await?;
        post(&cp, "/v1/agents", json!({ "name": "dev-agent" })).await?;
        let task = post(
            &cp,
            "/v1/tasks",
            json!({
                "agent": "dev-agent",
                "steps": [{ "kind": "run", "command": "sh", "args": ["-c", "sleep 2; echo finished"] }],
                "retry": { "attempts": 2 }
            }),
        )
        .await?;
        let id = task["id"].as_str().context("no id")?.to_owned();
        // Mid-step: the step's session is open (a task is `running` from its
        // claim on, before its first session exists).
        let running = wait_until("the step's session to open", Duration::from_secs(20), || async {
            let t = get(&cp, &format!("/v1/tasks/{id}")).await?;
            let opened = t["results"]
                .as_array()
                .is_some_and(|r| r.iter().any(|s| s["session_id"].is_u64()));
            Ok((t["state"] == "running" && opened).then_some(t))
        })
        .await?;
        let lost_on = running["sandbox_id"].as_str().context("no sandbox")?.to_owned();
        // The sandbox running it goes away for good.
        if lost_on == first.id() {
            first.agentd.kill();
        } else {
            second.agentd.kill();
        }
        let done = wait_state(&cp, &id, "succeeded", Duration::from_secs(45)).await?;
        ensure!(done["sandbox_id"] != lost_on.as_str(), "retried on the lost sandbox: {done}");
        ensure!(done["attempt"] == 2, "two attempts expected: {done}");
        let kinds = event_kinds(&cp, &id).await?;
        ensure!(kinds.iter().any(|k| k == "task.retrying"), "{kinds:?}");
        let results = done["results"].as_array().context("no results")?;
        ensure!(
            results.iter().any(|r| r["error"].as_str().is_some_and(|e| e.contains("lost"))),
            "the first attempt should be recorded as lost: {done}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_stream_tells_a_tasks_story() {
    within_for(Duration::from_secs(60), async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;

        let cp = ControlPlane::start().await?;
        let mut request =
            format!("{}/v1/events", cp.url().replacen("http", "ws", 1)).into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {}", cp.token()).parse()?);
        let (mut events, _) = tokio_tungstenite::connect_async(request).await?;
        let _sb = cp.add_sandbox("worker").await?;
        post(&cp, "/v1/agents", json!({ "name": "dev-agent" })).await?;
        post(
            &cp,
            "/v1/tasks",
            json!({ "agent": "dev-agent", "steps": [{ "kind": "run", "command": "true" }] }),
        )
        .await?;
        let mut seen = Vec::new();
        let wanted = [
            "sandbox.connected",
            "task.submitted",
            "task.started",
            "session.opened",
            "task.step.started",
            "session.closed",
            "task.succeeded",
        ];
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(msg) = events.next().await {
                let msg = msg?;
                let Ok(text) = msg.to_text() else { continue };
                let event: Value = serde_json::from_str(text)?;
                if let Some(kind) = event["kind"].as_str() {
                    seen.push(kind.to_owned());
                }
                if wanted.iter().all(|w| seen.iter().any(|s| s == w)) {
                    return anyhow::Ok(());
                }
            }
            anyhow::bail!("the events stream ended")
        })
        .await
        .with_context(|| format!("events seen: {seen:?}"))??;
        Ok(())
    })
    .await;
}
