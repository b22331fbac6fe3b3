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
