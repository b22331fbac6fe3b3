//! The CLI's stream commands: the interactive `paddock attach`, run in a real
//! PTY (keystrokes reach the session, its output reaches the terminal, and
//! `Ctrl-]` detaches without ending the session), and `paddock watch`.

use std::time::Duration;

use anyhow::{ensure, Context};
use paddock_tests::proto::api::SessionState;
use paddock_tests::proto::TermSize;
use paddock_tests::{
    bin_path, paddock, wait_until, within, ControlPlane, PtyProcess, StreamClient, StreamOptions,
};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_attach_types_into_the_session_and_detaches_with_ctrl_bracket() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("attach-cli").await?;
        let api = cp.api();
        let session = api.open_command(sb.id(), "sh", &[]).await?;
        let id = session.id.to_string();
        let mut term = PtyProcess::spawn(
            &bin_path("paddock"),
            &["attach", sb.name(), &id],
            &[("PADDOCK_URL", cp.url()), ("PADDOCK_TOKEN", cp.token())],
            TermSize::DEFAULT,
        )?;

        // Attached once the control plane names a driver.
        let (api_ref, sb_id) = (&api, sb.id());
        wait_until(
            "`paddock attach` to become the driver",
            WAIT,
            || async move {
                let info = api_ref.session(sb_id, session.id).await?;
                Ok(info.driver.map(|_| ()))
            },
        )
        .await?;

        // The CLI may still be switching its terminal to raw mode, so type
        // again (after Ctrl-U clears the line) until the answer shows.
        let deadline = Instant::now() + WAIT;
        loop {
            term.write(b"\x15echo pty-$((5*5))\r")?;
            match term.wait_for_text("pty-25", Duration::from_secs(2)).await {
                Ok(()) => break,
                Err(err) if Instant::now() >= deadline => {
                    return Err(err.context("typed input never produced its output"))
                }
                Err(_) => {}
            }
        }

        // A watcher confirms the shell itself ran the command.
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        watcher.recv_until_output_contains("pty-25", WAIT).await?;

        term.write(b"\x1d")?;
        let status = term
            .wait_exit(WAIT)
            .await
            .context("Ctrl-] did not end `paddock attach`")?;
        ensure!(
            status.success(),
            "`paddock attach` ended with {status:?} after detaching:\n{}",
            term.text()
        );

        let info = api.session(sb.id(), session.id).await?;
        ensure!(
            info.state == SessionState::Running,
            "the session is {:?} after detaching, expected running",
            info.state
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paddock_watch_shows_output_until_the_session_ends() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("watch-cli").await?;
        let api = cp.api();
        // The session waits for a line, so the marker is written only once
        // `paddock watch` is connected.
        let session = api
            .open_sh(sb.id(), "read go; echo watched-$((40+2))")
            .await?;
        let (url, token, sandbox, id) = (
            cp.url().to_owned(),
            cp.token().to_owned(),
            sb.id().to_owned(),
            session.id.to_string(),
        );
        let watch =
            tokio::spawn(async move { paddock(&url, &token, &["watch", &sandbox, &id]).await });

        let (api_ref, sb_id) = (&api, sb.id());
        wait_until("`paddock watch` to connect", WAIT, || async move {
            let info = api_ref.session(sb_id, session.id).await?;
            Ok((info.viewers >= 1).then_some(()))
        })
        .await?;
        let mut driver = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::attach(),
        )
        .await?;
        driver.send_input(b"go\r").await?;
        driver.wait_exited(WAIT).await?;

        let out = watch.await.context("the watch task panicked")??;
        ensure!(
            out.stdout.contains("watched-42"),
            "`paddock watch` did not show the output: {}",
            out.describe()
        );
        ensure!(
            out.code() == Some(0),
            "`paddock watch` of a session that exited 0 failed: {}",
            out.describe()
        );
        Ok(())
    })
    .await;
}
