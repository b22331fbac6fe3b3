//! Links that die: a killed agentd shows as disconnected and comes back,
//! agentd survives a control-plane restart, and agentd's own settings never
//! leak into the sessions it starts.

use std::time::Duration;

use anyhow::ensure;
use nix::sys::signal::Signal;
use paddock_tests::{within, Agentd, ControlPlane, StreamClient, StreamOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_agentd_shows_disconnected_and_a_new_one_reconnects() {
    within(async {
        let cp = ControlPlane::start().await?;
        let mut sb = cp.add_sandbox("resilient").await?;

        sb.agentd.kill();
        // Three heartbeats of 300 ms, with generous slack for a busy machine.
        cp.wait_disconnected(sb.id()).await?;

        sb.agentd = Agentd::start(cp.url(), &sb.token, sb.workdir.path())?;
        cp.wait_connected(sb.id()).await?;

        let out = cp
            .paddock(&["exec", sb.name(), "--", "sh", "-c", "echo back-again"])
            .await?;
        ensure!(
            out.code() == Some(0) && out.stdout.contains("back-again"),
            "exec after reconnecting failed: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

/// A stopped agentd keeps its TCP connection open but silent, so only the
/// heartbeat can tell the control plane it is gone. Once it runs again it
/// notices the dropped link and reconnects, and its session kept running
/// all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_agentd_is_declared_dead_by_heartbeat_and_its_session_survives() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("frozen").await?;
        // The sleep is the workload: the session outlives the freeze.
        let session = cp
            .api()
            .open_sh(
                sb.id(),
                "for i in $(seq 1 40); do echo tick $i; sleep 0.1; done",
            )
            .await?;
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        watcher
            .recv_until_output_contains("tick 2", Duration::from_secs(10))
            .await?;

        sb.agentd.signal(Signal::SIGSTOP)?;
        let frozen = cp.wait_disconnected(sb.id()).await;
        sb.agentd.signal(Signal::SIGCONT)?;
        frozen?;
        cp.wait_connected(sb.id()).await?;

        // A fresh watcher replays the whole stream: every offset contiguous,
        // no gap, and the loop ran to its end.
        let mut late = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        let status = late.wait_exited(Duration::from_secs(30)).await?;
        ensure!(status.success(), "the session ended with {status:?}");
        ensure!(
            late.output_text().contains("tick 40"),
            "the session's output after the freeze is missing:\n{}",
            late.output_text()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_reconnects_after_the_control_plane_restarts() {
    within(async {
        let mut cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("survivor").await?;

        cp.restart().await?;
        cp.wait_connected(sb.id()).await?;

        let out = cp
            .paddock(&["exec", sb.name(), "--", "sh", "-c", "echo after-restart"])
            .await?;
        ensure!(
            out.code() == Some(0) && out.stdout.contains("after-restart"),
            "exec after the restart failed: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_environment_has_no_agentd_variables() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("scrubbed").await?;
        let out = cp.paddock(&["exec", sb.name(), "--", "env"]).await?;
        ensure!(out.code() == Some(0), "exec env failed: {}", out.describe());
        ensure!(
            out.stdout.contains("PATH="),
            "`env` printed no PATH, so it cannot have run: {}",
            out.describe()
        );
        ensure!(
            !out.stdout.contains("PADDOCK_AGENTD_"),
            "the session's environment holds agentd's settings:\n{}",
            out.stdout
        );
        ensure!(
            !out.stdout.contains(&sb.token),
            "the session's environment holds the sandbox token"
        );
        Ok(())
    })
    .await;
}

/// agentd on SIGTERM hangs up its sessions and reports how they ended
/// before it exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_on_sigterm_hangs_up_sessions_and_reports_their_exit() {
    paddock_tests::within(async {
        let cp = ControlPlane::start().await?;
        let mut sb = cp.add_sandbox("drain").await?;
        let api = cp.api();
        let session = api
            .open_sh(
                sb.id(),
                "trap 'echo got-hup; exit 7' HUP; echo ready; while true; do sleep 0.1; done",
            )
            .await?;
        paddock_tests::wait_until(
            "the session to be ready",
            Duration::from_secs(20),
            || async {
                let out = api.output(sb.id(), session.id, None, None).await?;
                Ok(String::from_utf8_lossy(&out.bytes)
                    .contains("ready")
                    .then_some(()))
            },
        )
        .await?;
        sb.agentd.signal(nix::sys::signal::Signal::SIGTERM)?;
        let status = sb.agentd.wait_exit(Duration::from_secs(10)).await?;
        anyhow::ensure!(status.success(), "agentd ended with {status} on SIGTERM");
        let info = paddock_tests::wait_until(
            "the exit to be recorded",
            Duration::from_secs(20),
            || async {
                let info = api.session(sb.id(), session.id).await?;
                Ok(info.exit.is_some().then_some(info))
            },
        )
        .await?;
        anyhow::ensure!(
            info.exit == Some(paddock_tests::proto::ExitStatus::code(7)),
            "the session should have ended by its HUP trap: {info:?}"
        );
        let out = api.output(sb.id(), session.id, None, None).await?;
        anyhow::ensure!(
            String::from_utf8_lossy(&out.bytes).contains("got-hup"),
            "the session's last words were lost"
        );
        Ok(())
    })
    .await;
}
