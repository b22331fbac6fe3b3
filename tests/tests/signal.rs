//! Signals: `paddock signal` reaches a session's process, and everyone sees
//! how it ended.

use std::time::Duration;

use anyhow::{ensure, Context};
use paddock_tests::proto::api::SessionState;
use paddock_tests::{
    parse_sessions, wait_until, within, ControlPlane, StreamClient, StreamOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_signal_term_ends_the_session_with_signal_15() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("signal").await?;
        let api = cp.api();
        let session = api.open_command(sb.id(), "sleep", &["1000"]).await?;
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;

        let id = session.id.to_string();
        let out = cp.paddock(&["signal", sb.name(), &id, "TERM"]).await?;
        ensure!(
            out.code() == Some(0),
            "paddock signal failed: {}",
            out.describe()
        );

        let status = watcher.wait_exited(Duration::from_secs(15)).await?;
        ensure!(
            status.signal == Some(15) && status.code.is_none(),
            "expected the session to end by signal 15, got {status:?}"
        );

        let (cp, sb_id) = (&cp, sb.id());
        let exited = wait_until(
            "`paddock sessions --json` to show the session exited",
            Duration::from_secs(10),
            || async move {
                let out = cp.paddock(&["sessions", sb_id, "--json"]).await?.ok()?;
                let list = parse_sessions(&out.stdout)?;
                let info = list
                    .into_iter()
                    .find(|s| s.id == session.id)
                    .context("the session is missing from `paddock sessions --json`")?;
                Ok((info.state == SessionState::Exited).then_some(info))
            },
        )
        .await?;
        let exit = exited.exit.context("an exited session reports its exit")?;
        ensure!(
            exit.signal == Some(15),
            "`paddock sessions --json` reports {exit:?}, expected signal 15"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_close_ends_the_session() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("close").await?;
        let session = cp.api().open_command(sb.id(), "sleep", &["1000"]).await?;
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;

        let id = session.id.to_string();
        let out = cp.paddock(&["close", sb.id(), &id]).await?;
        ensure!(
            out.code() == Some(0),
            "paddock close failed: {}",
            out.describe()
        );

        let status = watcher.wait_exited(Duration::from_secs(15)).await?;
        ensure!(
            !status.success(),
            "`sleep 1000` cannot have finished by itself: {status:?}"
        );
        watcher.wait_closed(Duration::from_secs(10)).await?;
        let info = cp.api().session(sb.id(), session.id).await?;
        ensure!(
            info.state == SessionState::Exited,
            "the closed session is {:?}",
            info.state
        );
        Ok(())
    })
    .await;
}
