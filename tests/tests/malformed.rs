//! A misbehaving agent is cut off alone: its connection closes with 4001
//! while other sandboxes keep streaming.

use std::time::Duration;

use anyhow::{bail, ensure};
use futures_util::SinkExt;
use paddock_tests::proto::api::SandboxStatus;
use paddock_tests::proto::{
    DataFrame, SessionId, CLOSE_MALFORMED, FRAME_HEADER_LEN, MAX_DATA_PAYLOAD, PROTOCOL_VERSION,
};
use paddock_tests::{
    agent_connect_raw, agent_hello, expect_close, within, ControlPlane, StreamClient, StreamOptions,
};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_closes_only_that_agent() {
    within(async {
        let cp = ControlPlane::start().await?;
        let healthy = cp.add_sandbox("healthy").await?;
        let bad = cp.api().register_sandbox("misbehaving").await?;

        // The sleep is the workload: output keeps coming for about 5 s.
        let session = cp
            .api()
            .open_sh(
                healthy.id(),
                "for i in $(seq 1 50); do echo tick $i; sleep 0.1; done",
            )
            .await?;
        let mut watcher = StreamClient::connect(
            cp.url(),
            cp.token(),
            healthy.id(),
            session.id,
            StreamOptions::watch(),
        )
        .await?;
        watcher.recv_until_output_contains("tick 3", WAIT).await?;

        let mut fake = agent_connect_raw(cp.url(), &bad.token).await?;
        agent_hello(&mut fake, PROTOCOL_VERSION).await?;
        fake.send(Message::text("{not json")).await?;
        let (code, reason) = expect_close(&mut fake, WAIT).await?;
        ensure!(
            code == CLOSE_MALFORMED,
            "expected close code 4001 for garbage, got {code} ({reason})"
        );
        let seen_at_close = watcher.output_text();
        ensure!(
            !seen_at_close.contains("tick 50"),
            "the healthy session finished before the bad frame; the test proves nothing"
        );

        let status = watcher.wait_exited(Duration::from_secs(30)).await?;
        ensure!(
            status.success(),
            "the healthy session ended with {status:?}"
        );
        ensure!(
            watcher.output_text().contains("tick 50"),
            "the healthy session's output stopped:\n{}",
            watcher.output_text()
        );
        let info = cp.api().sandbox(healthy.id()).await?;
        ensure!(
            info.status == SandboxStatus::Connected,
            "the healthy sandbox is {:?}",
            info.status
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_binary_frame_closes_the_agent() {
    within(async {
        let cp = ControlPlane::start().await?;
        let bad = cp.api().register_sandbox("oversized").await?;

        let mut fake = agent_connect_raw(cp.url(), &bad.token).await?;
        agent_hello(&mut fake, PROTOCOL_VERSION).await?;
        let payload = vec![b'x'; MAX_DATA_PAYLOAD + 1];
        let frame = DataFrame::output(SessionId(1), 0, &payload).encode();
        ensure!(frame.len() > FRAME_HEADER_LEN + MAX_DATA_PAYLOAD);
        fake.send(Message::binary(frame)).await?;
        let (code, reason) = expect_close(&mut fake, WAIT).await?;
        ensure!(
            code == CLOSE_MALFORMED,
            "expected close code 4001 for an oversized frame, got {code} ({reason})"
        );

        // The server itself is fine: the same sandbox can connect again.
        let mut again = agent_connect_raw(cp.url(), &bad.token).await?;
        match agent_hello(&mut again, PROTOCOL_VERSION).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("no welcome on reconnect"),
            Err(err) => {
                return Err(err.context("the control plane refused a well-behaved reconnect"))
            }
        }
        Ok(())
    })
    .await;
}
