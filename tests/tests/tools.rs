//! Tool calls routed through the control plane to agentd: results come
//! back typed, errors keep their codes, a disconnected sandbox is named,
//! and a caller that goes away cancels the call in the sandbox.

use std::time::Duration;

use anyhow::{ensure, Context};
use paddock_tests::{wait_until, within, ControlPlane};
use serde_json::{json, Value};

async fn call(
    cp: &ControlPlane,
    sandbox: &str,
    tool: &str,
    args: Value,
) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sandboxes/{sandbox}/tools/{tool}", cp.url()))
        .bearer_auth(cp.token())
        .json(&args)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.context("the answer is not JSON")?;
    Ok((status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_round_trip_through_the_control_plane() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("tools").await?;

        let (status, body) = call(
            &cp,
            sb.id(),
            "file_write",
            json!({ "path": "notes/a.txt", "content": "hello tools\n" }),
        )
        .await?;
        ensure!(status == 200, "file_write: {status} {body}");
        let (status, body) =
            call(&cp, sb.id(), "file_read", json!({ "path": "notes/a.txt" })).await?;
        ensure!(
            status == 200 && body["content"] == "hello tools\n",
            "file_read: {status} {body}"
        );

        let (status, body) = call(
            &cp,
            sb.id(),
            "exec",
            json!({ "command": "sh", "args": ["-c", "cat notes/a.txt; echo oops >&2; exit 3"] }),
        )
        .await?;
        ensure!(status == 200, "exec: {status} {body}");
        ensure!(body["status"]["code"] == 3, "exec status: {body}");
        ensure!(
            body["stdout"]["text"] == "hello tools\n",
            "exec stdout: {body}"
        );
        ensure!(body["stderr"]["text"] == "oops\n", "exec stderr: {body}");

        let (status, body) = call(
            &cp,
            sb.id(),
            "file_read",
            json!({ "path": "../../etc/passwd" }),
        )
        .await?;
        ensure!(
            status == 400 && body["error"]["code"] == "path_escape",
            "an escape must be refused: {status} {body}"
        );
        let (status, body) = call(&cp, sb.id(), "no_such_tool", json!({})).await?;
        ensure!(
            status == 400 && body["error"]["code"] == "bad_request",
            "{status} {body}"
        );

        // The CLI calls the same route.
        let out = cp
            .paddock(&[
                "tool",
                sb.name(),
                "file_stat",
                "--json",
                r#"{"path":"notes/a.txt"}"#,
            ])
            .await?;
        ensure!(
            out.code() == Some(0),
            "paddock tool failed: {}",
            out.describe()
        );
        ensure!(
            out.stdout.contains("12"),
            "file_stat should show 12 bytes: {}",
            out.stdout
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_cancels_the_call_in_the_sandbox() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("cancel").await?;
        // A marker only this call's process carries, to find it in /proc.
        let marker = format!("paddock-cancel-{}", std::process::id());
        let script = format!("exec -a {marker} sleep 120");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/v1/sandboxes/{}/tools/exec", cp.url(), sb.id());
        let request = client
            .post(&url)
            .bearer_auth(cp.token())
            .json(&json!({ "command": "bash", "args": ["-c", script], "timeout_ms": 120_000 }))
            .send();
        let running = || {
            let marker = marker.clone();
            async move {
                let found = std::fs::read_dir("/proc")?.filter_map(Result::ok).any(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                        .unwrap_or(false)
                });
                anyhow::Ok(found)
            }
        };
        let request = tokio::spawn(request);
        wait_until(
            "the exec'd process to start",
            Duration::from_secs(5),
            || async { Ok(running().await?.then_some(())) },
        )
        .await?;
        let result = request.await?;
        ensure!(
            result.is_err(),
            "the call should still be running when the caller gives up"
        );
        // It was running, and now it must go: agentd got `cancel_request`.
        wait_until(
            "the exec'd process to be killed",
            Duration::from_secs(15),
            || async { Ok((!running().await?).then_some(())) },
        )
        .await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_sandbox_is_named_in_the_error() {
    within(async {
        let cp = ControlPlane::start().await?;
        let mut sb = cp.add_sandbox("gone").await?;
        sb.agentd.kill();
        cp.wait_disconnected(sb.id()).await?;
        let (status, body) = call(&cp, sb.id(), "file_stat", json!({ "path": "." })).await?;
        ensure!(
            status == 409 && body["error"]["code"] == "sandbox_disconnected",
            "{status} {body}"
        );
        Ok(())
    })
    .await;
}

async fn post_as(
    cp: &ControlPlane,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", cp.url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// An agent token calls tools only on a sandbox running one of its tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_call_tools_only_where_their_tasks_run() {
    within(async {
        let cp = ControlPlane::start().await?;
        let busy = cp.add_sandbox("busy").await?;
        let idle = cp.add_sandbox("idle").await?;
        let owner = cp.token().to_owned();
        post_as(&cp, &owner, "/v1/agents", json!({ "name": "dev-agent" })).await?;
        let (status, made) = post_as(
            &cp,
            &owner,
            "/v1/tokens",
            json!({ "name": "bot", "role": "agent", "agent": "dev-agent" }),
        )
        .await?;
        ensure!(status == 201, "token: {made}");
        let agent_token = made["token"].as_str().context("no token")?.to_owned();

        // Before any task, no sandbox is open to the agent.
        let (status, _) = post_as(&cp, &agent_token, &format!("/v1/sandboxes/{}/tools/file_stat", busy.id()), json!({ "path": "." })).await?;
        ensure!(status == 403, "an agent without a task got {status}");

        let (status, task) = post_as(
            &cp,
            &agent_token,
            "/v1/tasks",
            json!({ "agent": "dev-agent", "labels": {}, "steps": [{ "kind": "run", "command": "sleep", "args": ["5"] }] }),
        )
        .await?;
        ensure!(status == 201, "submit: {task}");
        let id = task["id"].as_str().context("no id")?.to_owned();
        let running = wait_until("the task to run", Duration::from_secs(20), || async {
            let (status, text) = cp.api().raw(reqwest::Method::GET, &format!("/v1/tasks/{id}"), None).await?;
            ensure!(status.is_success(), "{text}");
            let t: Value = serde_json::from_str(&text)?;
            Ok((t["state"] == "running").then_some(t))
        })
        .await?;
        let on = running["sandbox_id"].as_str().context("no sandbox")?.to_owned();
        let other = if on == busy.id() { idle.id() } else { busy.id() };
        let (status, body) = post_as(&cp, &agent_token, &format!("/v1/sandboxes/{on}/tools/file_stat"), json!({ "path": "." })).await?;
        ensure!(status == 200, "the agent's own sandbox: {status} {body}");
        let (status, _) = post_as(&cp, &agent_token, &format!("/v1/sandboxes/{other}/tools/file_stat"), json!({ "path": "." })).await?;
        ensure!(status == 403, "another sandbox must stay closed to the agent, got {status}");
        Ok(())
    })
    .await;
}

/// Language-server diagnostics reach `/v1/events` subscribers as they come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnostics_are_pushed_on_the_events_stream() {
    within(async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;

        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("lsp").await?;
        let mut request =
            format!("{}/v1/events", cp.url().replacen("http", "ws", 1)).into_client_request()?;
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {}", cp.token()).parse()?);
        let (mut events, _) = tokio_tungstenite::connect_async(request).await?;

        let (status, body) = call(
            &cp,
            sb.id(),
            "file_write",
            json!({ "path": "proj/bad.py", "content": "print(undefined_name)\n" }),
        )
        .await?;
        ensure!(status == 200, "file_write: {body}");
        let (status, body) = call(
            &cp,
            sb.id(),
            "lsp_open",
            json!({ "workspace": "proj", "language": "python", "path": "proj/bad.py" }),
        )
        .await?;
        ensure!(status == 200, "lsp_open: {status} {body}");

        let found = tokio::time::timeout(Duration::from_secs(40), async {
            while let Some(msg) = events.next().await {
                let msg = msg?;
                let Ok(text) = msg.to_text() else { continue };
                let event: Value = serde_json::from_str(text)?;
                if event["kind"] == "lsp.diagnostics"
                    && event["detail"]["diagnostics"]
                        .to_string()
                        .contains("undefined_name")
                {
                    return anyhow::Ok(event);
                }
            }
            anyhow::bail!("the events stream ended")
        })
        .await
        .context("no diagnostics event within 40 s")??;
        ensure!(found["sandbox_id"] == sb.id(), "{found}");
        Ok(())
    })
    .await;
}
