//! When and how long the Fly client waits before asking again.
//!
//! Fly rate-limits the Machines API per action and per machine and answers
//! `429 Too Many Requests` past the limit, sometimes with `Retry-After`.
//! A 429 means the request was not carried out, so every call may repeat
//! it; a 5xx may have been carried out, so only idempotent calls repeat it.
//! Waits grow exponentially with "equal jitter" (half fixed, half random),
//! so that several control planes throttled at once do not come back in
//! step, and the number of attempts and the longest wait are bounded.

use std::time::Duration;

use serde::Deserialize;

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
