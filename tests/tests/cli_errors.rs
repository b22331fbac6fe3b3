//! The CLI's plumbing commands, and error messages that say what went wrong
//! and what to do next.

use anyhow::{ensure, Context};
use paddock_tests::proto::api::{SandboxRegistered, SandboxStatus};
use paddock_tests::{paddock, parse_sandboxes, within, Agentd, ControlPlane};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_registers_a_sandbox_whose_token_agentd_can_use() {
    within(async {
        let cp = ControlPlane::start().await?;
        let out = cp
            .paddock(&["sandboxes", "register", "from-cli", "--json"])
            .await?
            .ok()?;
        let registered: SandboxRegistered = serde_json::from_str(&out.stdout)
            .with_context(|| format!("unexpected register output: {}", out.stdout))?;
        ensure!(registered.sandbox.name == "from-cli", "{registered:?}");

        let workdir = tempfile::tempdir()?;
        let _agentd = Agentd::start(cp.url(), &registered.token, workdir.path())?;
        cp.wait_connected(registered.sandbox.id.as_str()).await?;

        let out = cp.paddock(&["sandboxes", "--json"]).await?.ok()?;
        let list = parse_sandboxes(&out.stdout)?;
        let listed = list
            .iter()
            .find(|s| s.id == registered.sandbox.id)
            .context("the registered sandbox is not listed")?;
        ensure!(
            listed.status == SandboxStatus::Connected,
            "`paddock sandboxes --json` shows it {:?}",
            listed.status
        );
        let out = cp.paddock(&["sandboxes"]).await?.ok()?;
        ensure!(
            out.stdout.contains("from-cli"),
            "`paddock sandboxes` does not list the sandbox: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_control_plane_is_reported() {
    within(async {
        // A port that was just free: nothing listens on it.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            listener.local_addr()?.port()
        };
        let url = format!("http://127.0.0.1:{port}");
        let out = paddock(&url, "some-token", &["sandboxes"]).await?;
        ensure!(
            !out.status.success(),
            "expected failure: {}",
            out.describe()
        );
        let said = out.stderr.to_lowercase();
        ensure!(
            (said.contains("reach") || said.contains("connect"))
                && (said.contains("control plane") || said.contains(&url)),
            "stderr does not say the control plane could not be reached: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_is_reported() {
    within(async {
        let cp = ControlPlane::start().await?;
        let out = paddock(cp.url(), "not-the-owner-token", &["sandboxes"]).await?;
        ensure!(
            !out.status.success(),
            "expected failure: {}",
            out.describe()
        );
        ensure!(
            out.stderr.to_lowercase().contains("token"),
            "stderr does not mention the token: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sandbox_points_to_paddock_sandboxes() {
    within(async {
        let cp = ControlPlane::start().await?;
        for args in [
            &["sessions", "no-such-sandbox"][..],
            &["exec", "no-such-sandbox", "--", "true"][..],
        ] {
            let out = cp.paddock(args).await?;
            ensure!(
                !out.status.success(),
                "expected failure: {}",
                out.describe()
            );
            ensure!(
                out.stderr.contains("paddock sandboxes"),
                "stderr does not point to `paddock sandboxes`: {}",
                out.describe()
            );
        }
        Ok(())
    })
    .await;
}
