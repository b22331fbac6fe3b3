//! Refusals: wrong tokens and unsupported protocol versions are turned away
//! with the status, error body or close code the contract names.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use paddock_tests::proto::api::ErrorBody;
use paddock_tests::proto::{ErrorCode, CLOSE_UNSUPPORTED_VERSION};
use paddock_tests::{
    agent_connect_raw, agent_hello, expect_close, within, Agentd, ControlPlane, StreamClient,
    StreamError, StreamOptions,
};
use reqwest::{Method, StatusCode};
use tokio_tungstenite::tungstenite::Error as WsError;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_with_a_wrong_token_gets_401_before_the_upgrade() {
    within(async {
        let cp = ControlPlane::start().await?;
        cp.api().register_sandbox("wrong-token").await?;
        match agent_connect_raw(cp.url(), "not-a-sandbox-token").await {
            Ok(_) => bail!("the upgrade succeeded with a wrong sandbox token"),
            Err(WsError::Http(resp)) => ensure!(
                resp.status().as_u16() == 401,
                "expected 401, got {}",
                resp.status()
            ),
            Err(other) => bail!("expected an HTTP 401 refusal, got {other}"),
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_with_a_wrong_token_exits_and_says_so() {
    within(async {
        let cp = ControlPlane::start().await?;
        cp.api().register_sandbox("agentd-wrong-token").await?;
        let workdir = tempfile::tempdir()?;
        let mut agentd = Agentd::start(cp.url(), "not-a-sandbox-token", workdir.path())?;
        let status = agentd
            .wait_exit(Duration::from_secs(20))
            .await
            .context("agentd kept retrying a refused token")?;
        ensure!(
            !status.success(),
            "agentd exited successfully with a wrong token"
        );
        let said = format!("{}{}", agentd.stderr(), agentd.stdout()).to_lowercase();
        ensure!(
            said.contains("token"),
            "agentd's message does not mention the token:\n{said}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_call_with_a_wrong_token_gets_401_and_the_error_shape() {
    within(async {
        let cp = ControlPlane::start().await?;
        let api = cp.api().with_token("not-the-owner-token");
        let (status, body) = api.raw(Method::GET, "/v1/sandboxes", None).await?;
        ensure!(
            status == StatusCode::UNAUTHORIZED,
            "expected 401, got {status}: {body}"
        );
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("the 401 body is not JSON: {body}"))?;
        ensure!(
            json["error"]["code"] == "unauthorized",
            "unexpected error code in {json}"
        );
        ensure!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "the error has no message: {json}"
        );
        let parsed: ErrorBody = serde_json::from_str(&body)?;
        ensure!(parsed.error.code == ErrorCode::Unauthorized, "{parsed:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_hello_with_an_unsupported_version_is_closed_with_4000() {
    within(async {
        let cp = ControlPlane::start().await?;
        let registered = cp.api().register_sandbox("agent-v99").await?;
        let mut ws = agent_connect_raw(cp.url(), &registered.token).await?;
        agent_hello(&mut ws, 99).await?;
        let (code, reason) = expect_close(&mut ws, WAIT).await?;
        ensure!(
            code == CLOSE_UNSUPPORTED_VERSION,
            "expected close code 4000, got {code} ({reason})"
        );
        ensure!(
            reason.contains("supported: 1"),
            "the close reason does not name the supported versions: {reason:?}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_hello_with_an_unsupported_version_is_closed_with_4000() {
    within(async {
        let cp = ControlPlane::start().await?;
        let sb = cp.add_sandbox("client-v99").await?;
        let session = cp.api().open_command(sb.id(), "sleep", &["1000"]).await?;
        let result = StreamClient::connect(
            cp.url(),
            cp.token(),
            sb.id(),
            session.id,
            StreamOptions::watch().version(99),
        )
        .await;
        let (code, reason) = match result {
            Ok(_) => bail!("a client speaking version 99 was welcomed"),
            Err(StreamError::Closed {
                code: Some(code),
                reason,
            }) => (code, reason),
            Err(StreamError::Refused {
                close: Some((code, reason)),
                ..
            }) => (code, reason),
            Err(other) => bail!("expected a close frame with code 4000, got {other}"),
        };
        ensure!(
            code == CLOSE_UNSUPPORTED_VERSION,
            "expected close code 4000, got {code} ({reason})"
        );
        ensure!(
            reason.contains("supported: 1"),
            "the close reason does not name the supported versions: {reason:?}"
        );
        Ok(())
    })
    .await;
}
