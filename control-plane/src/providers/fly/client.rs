//! A small client for the Fly Machines API (`https://api.machines.dev/v1`).
//!
//! One method per endpoint Paddock uses — create, get, list, start, stop,
//! wait for a state, destroy — with bearer authentication, bounded retries
//! ([`RetryPolicy`]) on `429 Too Many Requests` (honouring `Retry-After`)
//! and, for idempotent calls, on 5xx and connection failures. Everything
//! else Fly answers is turned into a [`FlyError`] a caller can branch on.
//!
//! Retries: Fly rate-limits the Machines API per action and per machine and
//! answers `429 Too Many Requests` past the limit, sometimes with
//! `Retry-After`. A 429 means the request was not carried out, so every
//! call may repeat it; a 5xx may have been carried out, so only idempotent
//! calls repeat it. Waits grow exponentially with "equal jitter" (half
//! fixed, half random), so that several control planes throttled at once do
//! not come back in step, and the number of attempts and the longest wait
//! are bounded.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tracing::{debug, warn};

use super::api::{CreateMachineRequest, ErrorResponse, Machine, StopRequest, WaitState};

/// The longest single wait Fly's wait endpoint allows, in seconds.
const MAX_WAIT_SECS: u64 = 60;
/// Time allowed for an ordinary call's answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a Machines API call failed.
#[derive(Debug, thiserror::Error)]
pub enum FlyError {
    /// 404: the app or machine does not exist (any more).
    #[error("{0}")]
    NotFound(String),
    /// 401/403: the token is missing, wrong or lacks access to the app.
    #[error("{0}")]
    Unauthorized(String),
    /// Another 4xx: Fly refused the request as given.
    #[error("{0}")]
    Refused(String),
    /// Throttled, failing or unreachable after every retry.
    #[error("{0}")]
    Unavailable(String),
    /// Fly answered with a body this client does not understand.
    #[error("{0}")]
    Malformed(String),
}

/// Whether a call may be repeated after a 5xx or a broken connection
/// (it may have been carried out). Throttled calls (429) were not carried
/// out and are always repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Idempotent {
    Yes,
    No,
}

/// A client for one Fly app's machines.
#[derive(Clone)]
pub struct MachinesClient {
    http: reqwest::Client,
    /// `https://api.machines.dev`, without a trailing slash.
    base_url: String,
    app: String,
    token: String,
    retry: RetryPolicy,
}

impl fmt::Debug for MachinesClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MachinesClient")
            .field("base_url", &self.base_url)
            .field("app", &self.app)
            .field("token", &"<redacted>")
            .field("retry", &self.retry)
            .finish()
    }
}

impl MachinesClient {
    pub fn new(
        base_url: &str,
        app: &str,
        token: &str,
        retry: RetryPolicy,
    ) -> Result<Self, FlyError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("paddock-control-plane/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FlyError::Unavailable(format!("could not build the HTTP client: {e}")))?;
        Ok(MachinesClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            app: app.to_owned(),
            token: token.to_owned(),
            retry,
        })
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    /// Creates (and, unless told otherwise in the request, launches) a
    /// machine. Not repeated after a 5xx: it may exist already, and a
    /// repeat with the same name would be refused anyway.
    pub async fn create(&self, request: &CreateMachineRequest) -> Result<Machine, FlyError> {
        let body = serde_json::to_vec(request)
            .map_err(|e| FlyError::Malformed(format!("could not encode the machine: {e}")))?;
        let path = format!("/v1/apps/{}/machines", self.app);
        let response = self
            .send(
                Method::POST,
                &path,
                &[],
                Some(body),
                CALL_TIMEOUT,
                Idempotent::No,
            )
            .await?;
        json(expect_success(response, "create machine").await?).await
    }

    pub async fn get(&self, machine_id: &str) -> Result<Machine, FlyError> {
        let path = self.machine_path(machine_id, "");
        let response = self
            .send(Method::GET, &path, &[], None, CALL_TIMEOUT, Idempotent::Yes)
            .await?;
        json(expect_success(response, &format!("machine {machine_id}")).await?).await
    }

    /// Every machine of the app (destroyed ones only if asked).
    pub async fn list(&self, include_deleted: bool) -> Result<Vec<Machine>, FlyError> {
        let path = format!("/v1/apps/{}/machines", self.app);
        let query = [("include_deleted", include_deleted.to_string())];
        let response = self
            .send(
                Method::GET,
                &path,
                &query,
                None,
                CALL_TIMEOUT,
                Idempotent::Yes,
            )
            .await?;
        json(expect_success(response, "list machines").await?).await
    }

    /// The app's live machines whose metadata carries every given pair.
    /// The published API has no metadata filter on the list endpoint, so
    /// the filtering happens here.
    pub async fn list_by_metadata(
        &self,
        wanted: &[(&str, &str)],
    ) -> Result<Vec<Machine>, FlyError> {
        let machines = self.list(false).await?;
        Ok(machines
            .into_iter()
            .filter(|m| {
                wanted
                    .iter()
                    .all(|(k, v)| m.config.metadata.get(*k).map(String::as_str) == Some(*v))
            })
            .collect())
    }

    pub async fn start(&self, machine_id: &str) -> Result<(), FlyError> {
        let path = self.machine_path(machine_id, "/start");
        let response = self
            .send(
                Method::POST,
                &path,
                &[],
                None,
                CALL_TIMEOUT,
                Idempotent::Yes,
            )
            .await?;
        expect_success(response, &format!("start machine {machine_id}")).await?;
        Ok(())
    }

    /// Asks Fly to stop the machine with `signal` (Fly kills it after its
    /// stop timeout).
    pub async fn stop(&self, machine_id: &str, signal: &str) -> Result<(), FlyError> {
        let path = self.machine_path(machine_id, "/stop");
        let body = serde_json::to_vec(&StopRequest {
            signal: signal.to_owned(),
        })
        .map_err(|e| FlyError::Malformed(format!("could not encode the stop request: {e}")))?;
        let response = self
            .send(
                Method::POST,
                &path,
                &[],
                Some(body),
                CALL_TIMEOUT,
                Idempotent::Yes,
            )
            .await?;
        expect_success(response, &format!("stop machine {machine_id}")).await?;
        Ok(())
    }

    /// Destroys the machine (`force` kills it first if it runs). A machine
    /// that is already gone is not an error.
    pub async fn destroy(&self, machine_id: &str, force: bool) -> Result<(), FlyError> {
        let path = self.machine_path(machine_id, "");
        let query = [("force", force.to_string())];
        let response = self
            .send(
                Method::DELETE,
                &path,
                &query,
                None,
                CALL_TIMEOUT,
                Idempotent::Yes,
            )
            .await?;
        match expect_success(response, &format!("destroy machine {machine_id}")).await {
            Ok(_) | Err(FlyError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits until the machine reaches `state`, for at most `limit`
    /// (Fly's endpoint blocks up to 60 s per call; longer waits take
    /// several). `instance_id` names the machine version meant, when known.
    /// Returns whether the state was reached in time.
    pub async fn wait_for_state(
        &self,
        machine_id: &str,
        instance_id: Option<&str>,
        state: WaitState,
        limit: Duration,
    ) -> Result<bool, FlyError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            // The endpoint counts whole seconds, at least one.
            let secs = left.as_secs().clamp(1, MAX_WAIT_SECS);
            if self.wait_once(machine_id, instance_id, state, secs).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
        }
    }

    async fn wait_once(
        &self,
        machine_id: &str,
        instance_id: Option<&str>,
        state: WaitState,
        secs: u64,
    ) -> Result<bool, FlyError> {
        let path = self.machine_path(machine_id, "/wait");
        let mut query = vec![
            ("state", state.as_str().to_owned()),
            ("timeout", secs.to_string()),
        ];
        if let Some(instance) = instance_id.filter(|i| !i.is_empty()) {
            query.push(("instance_id", instance.to_owned()));
        }
        let timeout = Duration::from_secs(secs) + CALL_TIMEOUT;
        let response = self
            .send(Method::GET, &path, &query, None, timeout, Idempotent::Yes)
            .await?;
        // Fly answers 408 when the state was not reached within `timeout`.
        if response.status() == StatusCode::REQUEST_TIMEOUT {
            return Ok(false);
        }
        expect_success(
            response,
            &format!("wait for machine {machine_id} to be {}", state.as_str()),
        )
        .await?;
        Ok(true)
    }

    fn machine_path(&self, machine_id: &str, suffix: &str) -> String {
        format!("/v1/apps/{}/machines/{machine_id}{suffix}", self.app)
    }

    /// Sends one call, repeating it per the retry policy; returns the first
    /// answer that is not to be retried (which may still be an error
    /// status for the caller to judge).
    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
        idempotent: Idempotent,
    ) -> Result<reqwest::Response, FlyError> {
        let url = format!("{}{path}", self.base_url);
        let attempts = self.retry.max_attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.token)
                .timeout(timeout);
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = &body {
                request = request
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone());
            }
            let (why, retry_after) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retryable = status == StatusCode::TOO_MANY_REQUESTS
                        || (status.is_server_error() && idempotent == Idempotent::Yes);
                    if !retryable {
                        return Ok(response);
                    }
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(parse_retry_after);
                    let message = error_message(response).await;
                    (format!("Fly answered {status}: {message}"), retry_after)
                }
                // A refused connection never reached Fly; anything later may have.
                Err(e) if e.is_connect() || idempotent == Idempotent::Yes => {
                    (format!("could not reach {}: {e}", self.base_url), None)
                }
                Err(e) => {
                    return Err(FlyError::Unavailable(format!(
                        "{method} {path}: no answer from {} ({e}); the call may or may not have \
                         taken effect — list the app's machines to find out",
                        self.base_url
                    )))
                }
            };
            let delay = if attempt < attempts {
                self.retry.delay(attempt, retry_after)
            } else {
                None
            };
            let Some(delay) = delay else {
                warn!(%method, path, attempt, reason = %why, "fly machines api: giving up");
                return Err(FlyError::Unavailable(format!(
                    "{method} {path}: {why} (attempts made: {attempt}); try again later or \
                     raise the retry limits"
                )));
            };
            debug!(%method, path, attempt, delay_ms = delay.as_millis() as u64, reason = %why,
                "fly machines api: retrying");
            tokio::time::sleep(delay).await;
        }
    }
}

/// Passes a 2xx answer through; turns any other into the matching error.
async fn expect_success(
    response: reqwest::Response,
    what: &str,
) -> Result<reqwest::Response, FlyError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let message = error_message(response).await;
    Err(match status {
        StatusCode::NOT_FOUND => FlyError::NotFound(format!("{what}: not found ({message})")),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => FlyError::Unauthorized(format!(
            "{what}: Fly refused the API token ({status}: {message}); check that \
             PADDOCK_FLY_API_TOKEN is a deploy token for the app"
        )),
        s if s.is_client_error() => {
            FlyError::Refused(format!("{what}: Fly refused it ({status}: {message})"))
        }
        _ => FlyError::Unavailable(format!(
            "{what}: Fly answered {status} ({message}); try again later"
        )),
    })
}

/// Fly's `ErrorResponse.error`, or the start of whatever body came.
async fn error_message(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorResponse>(&text) {
        Ok(body) if !body.error.is_empty() => match body.status.as_deref() {
            Some("insufficient_capacity") => {
                format!("{} (no capacity: try another region or size)", body.error)
            }
            _ => body.error,
        },
        _ => text.chars().take(200).collect(),
    }
}

async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, FlyError> {
    let url = response.url().path().to_owned();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| FlyError::Unavailable(format!("{url}: the answer broke off: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| FlyError::Malformed(format!("{url}: unexpected answer from Fly: {e}")))
}

/// How often and how patiently a call is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt, doubling with each further one.
    #[serde(with = "serde_millis")]
    pub base_delay: Duration,
    /// No single wait is longer; a `Retry-After` beyond it ends the retries.
    #[serde(with = "serde_millis")]
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt number `attempt` (1-based): the
    /// server's `Retry-After` when it gave one (it knows best), else
    /// `base · 2^(attempt-1)` with equal jitter, capped at `max_delay`.
    /// `None` when the server asks for longer than `max_delay`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        if let Some(wait) = retry_after {
            return (wait <= self.max_delay).then_some(wait);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let ceiling = exp.min(self.max_delay);
        let half = ceiling / 2;
        let jitter_ms = half.as_millis() as u64;
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(random_u64() % (jitter_ms + 1))
        };
        Some(half + jitter)
    }
}

/// `Retry-After` as delta-seconds (what Fly sends). An HTTP-date is not
/// understood and falls back to the exponential wait.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn random_u64() -> u64 {
    // Jitter only spreads retries out; if the OS has no randomness the
    // wait is simply the fixed half.
    getrandom::u64().unwrap_or(0)
}

/// Durations in config as milliseconds (`base_delay = 250`).
mod serde_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_within_their_jitter_band_and_stop_at_the_cap() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for (attempt, ceiling) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 1000), (9, 1000)] {
            for _ in 0..50 {
                let wait = policy.delay(attempt, None).unwrap().as_millis() as u64;
                assert!(
                    (ceiling / 2..=ceiling).contains(&wait),
                    "attempt {attempt}: {wait} ms outside {}..={ceiling}",
                    ceiling / 2
                );
            }
        }
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(2))),
            Some(Duration::from_secs(2))
        );
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3600))), None);
    }

    #[test]
    fn retry_after_parses_seconds_only() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
