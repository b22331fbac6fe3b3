//! agentd's session user (`PADDOCK_AGENTD_SESSION_UID`): run as root, agentd
//! starts PTY sessions and `exec` as another uid, which can read neither
//! agentd's token from its environment nor from `/proc`. Not run as root,
//! agentd refuses the setting at start, naming it.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{ensure, Context};
use nix::unistd::Uid;
use paddock_tests::{within, Agentd, AgentdOptions, ControlPlane};
use reqwest::Method;
use serde_json::{json, Value};

/// `nobody` on Debian; any uid works, with or without a passwd entry.
const SESSION_UID: u32 = 65534;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_exec_run_as_the_session_user() {
    within(async {
        let cp = ControlPlane::start().await?;
        if !Uid::effective().is_root() {
            let registered = cp.api().register_sandbox("not-root").await?;
            let workdir = tempfile::tempdir()?;
            let env = [(
                "PADDOCK_AGENTD_SESSION_UID".to_owned(),
                SESSION_UID.to_string(),
            )];
            let mut agentd = Agentd::start_with(cp.url(), &registered.token, workdir.path(), &env)?;
            let status = agentd.wait_exit(Duration::from_secs(10)).await?;
            ensure!(status.code() == Some(2), "agentd ended with {status}");
            ensure!(
                agentd.stderr().contains("--session-uid"),
                "{}",
                agentd.logs()
            );
            return Ok(());
        }

        let opts = AgentdOptions::default().env("PADDOCK_AGENTD_SESSION_UID", SESSION_UID);
        let sb = cp.add_sandbox_with("as-nobody", opts).await?;
        // The session user must be able to enter the work directory.
        std::fs::set_permissions(sb.workdir.path(), std::fs::Permissions::from_mode(0o755))?;

        let script = "echo uid=$(id -u) gid=$(id -g) groups=$(id -G); env; \
                      cat /proc/$PPID/environ /proc/{agentd}/environ; echo end";
        let script = script.replace("{agentd}", &sb.agentd.pid().to_string());
        let out = cp
            .paddock(&["exec", sb.id(), "--", "sh", "-c", &script])
            .await?;
        let stdout = out.stdout.replace('\r', "");
        ensure!(
            stdout.contains(&format!("uid={SESSION_UID} ")),
            "{}",
            out.describe()
        );
        ensure!(
            !stdout.contains("groups=0"),
            "root's groups were kept: {stdout}"
        );
        ensure!(stdout.contains("end"), "{}", out.describe());
        ensure!(
            !stdout.contains(&sb.token),
            "the token reached a session: {stdout}"
        );
        ensure!(
            !stdout.contains("PADDOCK_AGENTD_"),
            "agentd's settings leaked: {stdout}"
        );

        let (status, text) = cp
            .api()
            .raw(
                Method::POST,
                &format!("/v1/sandboxes/{}/tools/exec", sb.id()),
                Some(json!({ "command": "id", "args": ["-u"] })),
            )
            .await?;
        ensure!(status.is_success(), "exec: {status} {text}");
        let body: Value = serde_json::from_str(&text).context("exec answered no JSON")?;
        ensure!(
            body["stdout"]["text"] == format!("{SESSION_UID}\n"),
            "exec ran as another user: {body}"
        );
        Ok(())
    })
    .await;
}
