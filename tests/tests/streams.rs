//! Session streams: fan-out to several watchers, input from the driver,
//! one driver at a time, and the PTY following resizes.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use paddock_tests::proto::api::OpenSessionRequest;
use paddock_tests::proto::{ControlToClient, ErrorCode, StreamMode, TermSize};
use paddock_tests::{within, ControlPlane, StreamClient, StreamOptions};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_watchers_receive_identical_bytes() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("fanout").await?;
        // The script waits for a line of input, so both watchers are
        // connected before the bulk of the output is written.
        let session = cp
            .api()
            .open_sh(
                sb.id(),
                "read go; for i in $(seq 1 2000); do echo line $i; done",
            )
            .await?;
        let connect = |opts| StreamClient::connect(cp.url(), cp.token(), sb.id(), session.id, opts);
        let mut first = connect(StreamOptions::watch().peer("watcher-1")).await?;
        let mut second = connect(StreamOptions::watch().peer("watcher-2")).await?;
        let mut driver = connect(StreamOptions::attach()).await?;
        driver.send_input(b"go\r").await?;

        let limit = Duration::from_secs(30);
        let status = first.wait_exited(limit).await?;
        ensure!(status.success(), "the loop ended with {status:?}");
        second.wait_exited(limit).await?;
        driver.wait_exited(limit).await?;

        ensure!(
            first.output_text().contains("line 2000"),
            "the last line is missing:\n{}",
            paddock_tests::tail(&first.output_text(), 500)
        );
        ensure!(
            first.output() == second.output(),
            "the watchers saw different bytes ({} vs {} bytes)",
            first.output().len(),
            second.output().len()
        );
        ensure!(
            first.output() == driver.output(),
            "the driver and a watcher saw different bytes ({} vs {} bytes)",
            driver.output().len(),
            first.output().len()
        );
        let info = cp.api().session(sb.id(), session.id).await?;
        ensure!(
            info.end_offset == first.end_offset(),
            "the session reports {} bytes of output, the watchers got {}",
            info.end_offset,
            first.end_offset()
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_from_the_driver_reaches_the_shell_and_watchers_see_it() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("attach-input").await?;
        let session = cp.api().open_command(sb.id(), "sh", &[]).await?;
        let connect = |opts| StreamClient::connect(cp.url(), cp.token(), sb.id(), session.id, opts);
        let mut watcher = connect(StreamOptions::watch()).await?;
        let mut driver = connect(StreamOptions::attach()).await?;
        ensure!(
            driver.welcome().mode == StreamMode::Attach,
            "the driver was welcomed as {:?}",
            driver.welcome().mode
        );

        // The shell computes the marker, so seeing it proves the input ran,
        // not just that the terminal echoed it.
        driver.send_input(b"echo marker-$((6*7))\r").await?;
        watcher
            .recv_until_output_contains("marker-42", WAIT)
            .await?;
        driver.recv_until_output_contains("marker-42", WAIT).await?;

        driver.send_input(b"exit\r").await?;
        let status = watcher.wait_exited(WAIT).await?;
        ensure!(status.success(), "the shell ended with {status:?}");
        // After `exited` the stream ends with a normal close.
        let close = watcher.wait_closed(WAIT).await?;
        ensure!(
            matches!(close, Some((1000, _))),
            "expected a normal close (1000) after exited, got {close:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_attach_is_refused_and_take_demotes_the_driver() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("take").await?;
        let api = cp.api();
        let session = api.open_command(sb.id(), "sh", &[]).await?;
        let connect = |opts| StreamClient::connect(cp.url(), cp.token(), sb.id(), session.id, opts);
        let mut watcher = connect(StreamOptions::watch()).await?;
        let mut first = connect(StreamOptions::attach().peer("first-driver")).await?;

        let driver = api
            .session(sb.id(), session.id)
            .await?
            .driver
            .context("the session reports no driver while one is attached")?;

        let refused = match connect(StreamOptions::attach().peer("second-driver")).await {
            Ok(_) => bail!("a second attach was accepted while {driver} drives"),
            Err(err) => err,
        };
        if let Some(code) = refused.code() {
            ensure!(
                code == ErrorCode::DriverExists,
                "the second attach was refused with {code:?}: {refused}"
            );
        }
        let text = refused.text();
        ensure!(
            text.contains(&driver) || text.contains("first-driver"),
            "the refusal does not name the driver {driver:?}: {text}"
        );

        let mut taker = connect(StreamOptions::attach().peer("taker").take()).await?;
        ensure!(
            taker.welcome().mode == StreamMode::Attach,
            "take=true was welcomed as {:?}",
            taker.welcome().mode
        );
        let mode = first
            .wait_event(WAIT, |event| match event {
                ControlToClient::ModeChanged { mode, .. } => Some(*mode),
                _ => None,
            })
            .await
            .context("the old driver was not told it was demoted")?;
        ensure!(mode == StreamMode::Watch, "the old driver became {mode:?}");

        // The demoted client types first; its input must go nowhere.
        first.send_input(b"echo demoted-$((1+1))\r").await?;
        taker.send_input(b"echo driver-$((2+3))\r").await?;
        watcher.recv_until_output_contains("driver-5", WAIT).await?;
        // One more round trip from the new driver, so input the server took
        // from the demoted client would have been echoed by now.
        taker.send_input(b"echo sync-$((3+4))\r").await?;
        watcher.recv_until_output_contains("sync-7", WAIT).await?;
        first.recv_until_output_contains("sync-7", WAIT).await?;
        ensure!(
            !watcher.output_text().contains("demoted"),
            "input from the demoted driver reached the shell:\n{}",
            watcher.output_text()
        );
        Ok(())
    })
    .await;
}

/// Sends `stty size` until its answer shows `expect` (the resize and the
/// input travel separately, so the first try may still see the old size).
async fn wait_stty_size(driver: &mut StreamClient, expect: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        driver.send_input(b"stty size\r").await?;
        match driver
            .recv_until_output_contains(expect, Duration::from_secs(1))
            .await
        {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() >= deadline => {
                return Err(err.context(format!("`stty size` never printed {expect:?}")))
            }
            Err(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_from_the_driver_reaches_the_pty() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("resize-driver").await?;
        let session = cp.api().open_command(sb.id(), "sh", &[]).await?;
        let mut driver = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::attach(),
        )
        .await?;
        driver
            .send_resize(TermSize {
                cols: 100,
                rows: 30,
            })
            .await?;
        wait_stty_size(&mut driver, "30 100").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_over_http_reaches_the_pty() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("resize-http").await?;
        let api = cp.api();
        // The shell prints its size on every SIGWINCH; `ready` says the trap is set.
        let session = api
            .open_sh(
                sb.id(),
                "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done",
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
        watcher.recv_until_output_contains("ready", WAIT).await?;
        api.resize(
            sb.id(),
            session.id,
            TermSize {
                cols: 120,
                rows: 40,
            },
        )
        .await?;
        watcher.recv_until_output_contains("40 120", WAIT).await?;
        api.close_session(sb.id(), session.id).await?;
        watcher.wait_exited(WAIT).await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_opens_at_the_size_asked_for() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("initial-size").await?;
        let req = OpenSessionRequest {
            command: Some("stty".to_owned()),
            args: vec!["size".to_owned()],
            size: Some(TermSize {
                cols: 100,
                rows: 30,
            }),
            ..Default::default()
        };
        let session = cp.api().open_session(sb.id(), req).await?;
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        let status = watcher.wait_exited(WAIT).await?;
        ensure!(status.success(), "stty ended with {status:?}");
        ensure!(
            watcher.output_text().contains("30 100"),
            "`stty size` printed {:?}",
            watcher.output_text()
        );
        Ok(())
    })
    .await;
}
