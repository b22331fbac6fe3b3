//! The local provider end to end, through the real `control-plane serve`,
//! `agentd` and `paddock` binaries: a sandbox created, used, stopped,
//! started, re-adopted after the control plane is SIGKILLed, destroyed;
//! and reconciling at start-up (an unknown labelled local sandbox is
//! destroyed, one missing from the provider is marked failed, one
//! registered by hand is left alone).

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use paddock_tests::proto::api::{SandboxInfo, SandboxStatus};
use paddock_tests::{agentd_processes_of, parse_sandboxes, wait_until, within_for, ControlPlane};

fn record(data_dir: &Path, id: &str) -> Result<serde_json::Value> {
    let path = data_dir.join("sandboxes").join(id).join("local.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("{} is missing", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            !state.starts_with('Z')
        })
        .unwrap_or(false)
}

async fn sandbox_cli(cp: &ControlPlane, args: &[&str]) -> Result<SandboxInfo> {
    let mut all = vec!["sandboxes"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = cp.paddock(&all).await?.ok()?;
    serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`paddock {}` printed no sandbox: {}",
            all.join(" "),
            out.stdout
        )
    })
}

async fn exec_echo(cp: &ControlPlane, sandbox: &str, word: &str) -> Result<()> {
    let out = cp
        .paddock(&["exec", sandbox, "--", "sh", "-c", &format!("echo {word}")])
        .await?;
    ensure!(
        out.code() == Some(0) && out.stdout.contains(word),
        "exec in {sandbox} failed: {}",
        out.describe()
    );
    Ok(())
}

async fn listed(cp: &ControlPlane) -> Result<Vec<SandboxInfo>> {
    parse_sandboxes(&cp.paddock(&["sandboxes", "--json"]).await?.ok()?.stdout)
}

async fn wait_status(cp: &ControlPlane, name: &str, status: SandboxStatus) -> Result<SandboxInfo> {
    wait_until(
        &format!("{name} to be {}", status.as_str()),
        Duration::from_secs(30),
        || async move {
            Ok(listed(cp)
                .await?
                .into_iter()
                .find(|s| s.name == name && s.status == status))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_sandbox_lives_stops_starts_survives_a_control_plane_kill_and_is_destroyed() {
    within_for(Duration::from_secs(180), async {
        let mut cp = ControlPlane::start().await?;
        let data_dir = cp.data_dir().to_owned();

        let made = sandbox_cli(
            &cp,
            &[
                "create",
                "box1",
                "--provider",
                "local",
                "--size",
                "small",
                "--label",
                "team=a",
            ],
        )
        .await?;
        ensure!(made.status == SandboxStatus::Connected, "{made:?}");
        ensure!(made.provider.as_deref() == Some("local") && made.size.as_deref() == Some("small"));
        ensure!(made.labels.get("team").map(String::as_str) == Some("a"));
        let id = made.id.to_string();
        let workdir = data_dir.join("sandboxes").join(&id);
        ensure!(
            workdir.join("work").is_dir(),
            "no work directory at {}",
            workdir.display()
        );
        exec_echo(&cp, "box1", "first-run").await?;

        let first_pid = record(&data_dir, &id)?["pid"]
            .as_u64()
            .context("no pid recorded")? as u32;
        ensure!(alive(first_pid));
        let stopped = sandbox_cli(&cp, &["stop", "box1"]).await?;
        ensure!(stopped.status == SandboxStatus::Stopped, "{stopped:?}");
        ensure!(
            !alive(first_pid),
            "agentd {first_pid} still runs after stop"
        );
        ensure!(agentd_processes_of(&data_dir).is_empty());
        let refused = cp.paddock(&["exec", "box1", "--", "true"]).await?;
        ensure!(
            refused.code() != Some(0),
            "exec in a stopped sandbox worked"
        );

        let started = sandbox_cli(&cp, &["start", "box1"]).await?;
        ensure!(started.status == SandboxStatus::Connected, "{started:?}");
        exec_echo(&cp, "box1", "after-start").await?;
        let pid = record(&data_dir, &id)?["pid"].as_u64().context("no pid")? as u32;
        ensure!(pid != first_pid && alive(pid));

        // An abrupt end: agentd keeps running and is adopted, not duplicated.
        cp.restart().await?;
        wait_status(&cp, "box1", SandboxStatus::Connected).await?;
        let after = record(&data_dir, &id)?["pid"].as_u64().context("no pid")? as u32;
        ensure!(after == pid, "agentd {pid} was replaced by {after}");
        ensure!(alive(pid), "agentd {pid} died with the control plane");
        let processes = agentd_processes_of(&data_dir);
        ensure!(processes.len() == 1, "agentd processes: {processes:?}");
        exec_echo(&cp, "box1", "after-restart").await?;

        let gone = sandbox_cli(&cp, &["destroy", "box1"]).await?;
        ensure!(
            gone.status == SandboxStatus::Destroyed && gone.name == "box1",
            "{gone:?}"
        );
        ensure!(!workdir.exists(), "{} is still there", workdir.display());
        ensure!(!alive(pid), "agentd {pid} outlived destroy");
        ensure!(listed(&cp).await?.iter().all(|s| s.name != "box1"));
        // The name is free again.
        let again = sandbox_cli(&cp, &["create", "box1", "--provider", "local"]).await?;
        ensure!(again.id.to_string() != id && again.status == SandboxStatus::Connected);
        sandbox_cli(&cp, &["destroy", "box1"]).await?;
        ensure!(agentd_processes_of(&data_dir).is_empty());
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_destroys_unknown_local_sandboxes_and_marks_missing_ones_failed() {
    within_for(Duration::from_secs(120), async {
        let mut cp = ControlPlane::start().await?;
        let data_dir = cp.data_dir().to_owned();
        let hand = cp.add_sandbox("by-hand").await?;
        // Errors say what to do next.
        for (args, says) in [
            (vec!["sandboxes", "stop", "by-hand"], "registered by hand"),
            (vec!["sandboxes", "create", "x", "--provider", "fly"], "PADDOCK_PROVIDERS"),
            (vec!["sandboxes", "create", "x", "--size", "huge"], "use one of large, medium, small"),
        ] {
            let out = cp.paddock(&args).await?;
            ensure!(
                out.code() != Some(0) && out.stderr.contains(says),
                "`paddock {}` should fail saying {says:?}: {}",
                args.join(" "),
                out.describe()
            );
        }
        let kept = sandbox_cli(&cp, &["create", "kept", "--provider", "local"]).await?;
        let lost = sandbox_cli(&cp, &["create", "lost", "--provider", "local"]).await?;
        let owner = record(&data_dir, kept.id.as_str())?["labels"]["paddock.owner"]
            .as_str()
            .context("no owner label")?
            .to_owned();

        // A live process labelled as this deployment's, unknown to the database.
        let mut stray = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::process_group(&mut stray, 0);
        let mut stray = stray.arg("600").spawn()?;
        let stray_pid = stray.id();
        let stat = std::fs::read_to_string(format!("/proc/{stray_pid}/stat"))?;
        let start_time: u64 = stat.rsplit(')').next().unwrap_or_default().split_whitespace().nth(19).context("no start time")?.parse()?;
        let stray_dir = data_dir.join("sandboxes").join("sbx_00000000deadbeef");
        std::fs::create_dir_all(&stray_dir)?;
        std::fs::write(
            stray_dir.join("local.json"),
            serde_json::json!({
                "labels": { "paddock.sandbox": "sbx_00000000deadbeef", "paddock.tenant": "default", "paddock.owner": owner },
                "url": cp.url(), "pid": stray_pid, "start_time": start_time, "stopped": false
            })
            .to_string(),
        )?;
        // One of another deployment: not ours to touch.
        let foreign_dir = data_dir.join("sandboxes").join("sbx_00000000f0f0f0f0");
        std::fs::create_dir_all(&foreign_dir)?;
        std::fs::write(
            foreign_dir.join("local.json"),
            serde_json::json!({
                "labels": { "paddock.sandbox": "sbx_00000000f0f0f0f0", "paddock.tenant": "default", "paddock.owner": "own_someone_else" },
                "url": cp.url(), "pid": null, "start_time": null, "stopped": true
            })
            .to_string(),
        )?;

        // `lost` disappears from the provider while the control plane is down.
        cp.kill();
        let lost_pid = record(&data_dir, lost.id.as_str())?["pid"].as_u64().context("no pid")? as u32;
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(lost_pid as i32), nix::sys::signal::Signal::SIGKILL)?;
        std::fs::remove_dir_all(data_dir.join("sandboxes").join(lost.id.as_str()))?;
        cp.restart().await?;

        let failed = wait_status(&cp, "lost", SandboxStatus::Failed).await?;
        let reason = failed.reason.unwrap_or_default();
        ensure!(reason.contains("no longer reports"), "reason: {reason}");
        ensure!(!stray_dir.exists(), "the unknown sandbox's directory is still there");
        let reaped = wait_until("the stray process to be killed", Duration::from_secs(15), || {
            let status = stray.try_wait();
            async move { Ok(status?) }
        })
        .await?;
        ensure!(!reaped.success(), "the stray process exited by itself: {reaped}");
        ensure!(foreign_dir.exists(), "another deployment's sandbox was touched");
        wait_status(&cp, "kept", SandboxStatus::Connected).await?;
        cp.wait_connected(hand.name()).await?;
        let hand_now = listed(&cp).await?.into_iter().find(|s| s.name == "by-hand").context("by-hand is gone")?;
        ensure!(hand_now.provider.is_none() && hand_now.status == SandboxStatus::Connected, "{hand_now:?}");
        sandbox_cli(&cp, &["destroy", "kept"]).await?;
        let failed_destroyed = sandbox_cli(&cp, &["destroy", "lost"]).await?;
        ensure!(failed_destroyed.status == SandboxStatus::Destroyed);
        Ok(())
    })
    .await;
}
