//! Polling with a deadline: the one way tests wait for state they can only
//! observe through an API (a sandbox's status, a session's state).

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::time::Instant;

/// How often [`wait_until`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok(Some(value))` or `limit` passes.
///
/// `Ok(None)` means "not yet"; an `Err` is remembered and retried (the server
/// may be restarting), and the last one is reported if the deadline passes.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + limit;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(err) => last_error = Some(err),
        }
        if Instant::now() >= deadline {
            match last_error {
                Some(err) => {
                    bail!("timed out after {limit:?} waiting for {what}; last error: {err:#}")
                }
                None => bail!("timed out after {limit:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
