//! Request-rate limits on the HTTP API: a GCRA limiter per API token, so one
//! token's bursty client cannot crowd out the others. Checked by the
//! authorization layer once the caller is known; public routes and agentd's
//! connection are not counted here.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use paddock_protocol::ErrorCode;

use crate::error::ApiError;

/// Checks between two sweeps of the keyed store: tokens idle long enough to
/// have a full burst again are dropped, so memory follows the active tokens
/// rather than every token ever seen.
const SWEEP_EVERY: u64 = 1_000;

/// The API's request-rate limiter, keyed by API token id.
pub struct ApiRateLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<C::Instant>>,
    rate_per_sec: u32,
    burst: u32,
    checks: AtomicU64,
}

impl ApiRateLimiter {
    /// At most `rate_per_sec` requests a second per token, in bursts of up to
    /// `burst`; zeros (refused by config validation) count as 1.
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self::with_clock(rate_per_sec, burst, DefaultClock::default())
    }
}

impl<C: Clock> ApiRateLimiter<C> {
    fn with_clock(rate_per_sec: u32, burst: u32, clock: C) -> Self {
        let rate = NonZeroU32::new(rate_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        ApiRateLimiter {
            limiter: RateLimiter::new(quota, DefaultKeyedStateStore::default(), clock),
            rate_per_sec: rate.get(),
            burst: burst.get(),
            checks: AtomicU64::new(0),
        }
    }

    /// Counts one request of `token_id`, or says how long it must wait.
    pub fn check(&self, token_id: &str) -> Result<(), Throttled> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&token_id.to_owned())
            .map_err(|not_until| Throttled {
                wait: not_until.wait_time_from(self.limiter.clock().now()),
                rate_per_sec: self.rate_per_sec,
                burst: self.burst,
            })
    }

    /// Tokens the store currently tracks.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.limiter.len()
    }
}

/// A request refused for its token's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// How long until one more request of this token would be admitted.
    pub wait: Duration,
    rate_per_sec: u32,
    burst: u32,
}

impl Throttled {
    /// Whole milliseconds, rounded up so a client that waits this long is served.
    fn wait_ms(&self) -> u128 {
        self.wait.as_nanos().div_ceil(1_000_000)
    }

    /// `Retry-After` allows whole seconds only: rounded up, and at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

impl IntoResponse for Throttled {
    fn into_response(self) -> Response {
        let message = format!(
            "too many requests for this token: at most {} per second, bursts of {}; retry after {} ms",
            self.rate_per_sec,
            self.burst,
            self.wait_ms()
        );
        let mut response = ApiError::new(ErrorCode::QuotaExceeded, message).into_response();
        response
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(self.retry_after_secs()));
        response
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate_per_token() {
        let clock = FakeRelativeClock::default();
        let limiter = ApiRateLimiter::with_clock(5, 10, clock.clone());
        for i in 0..10 {
            assert!(limiter.check("tok_a").is_ok(), "request {i} of the burst");
        }
        let refused = limiter.check("tok_a").unwrap_err();
        assert_eq!(refused.wait, Duration::from_millis(200));
        assert_eq!(refused.retry_after_secs(), 1);
        assert!(limiter.check("tok_b").is_ok(), "tokens are counted apart");

        clock.advance(Duration::from_millis(200));
        assert!(limiter.check("tok_a").is_ok());
        assert!(limiter.check("tok_a").is_err());
    }

    #[test]
    fn the_refusal_names_the_limits_and_the_wait() {
        let refused = Throttled {
            wait: Duration::from_micros(1_500_001),
            rate_per_sec: 5,
            burst: 10,
        };
        assert_eq!(refused.retry_after_secs(), 2);
        let response = refused.into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[RETRY_AFTER], "2");
        let short = Throttled {
            wait: Duration::from_millis(3),
            ..refused
        };
        assert_eq!(short.retry_after_secs(), 1);
        assert_eq!(short.wait_ms(), 3);
    }

    #[test]
    fn idle_tokens_are_swept() {
        let clock = FakeRelativeClock::default();
        let limiter = ApiRateLimiter::with_clock(50, 100, clock.clone());
        for i in 0..500 {
            let _ = limiter.check(&format!("tok_{i}"));
        }
        assert_eq!(limiter.tracked(), 500);
        // Two seconds refill a burst of 100 at 50 a second: all are fresh again.
        clock.advance(Duration::from_secs(2));
        for _ in 0..SWEEP_EVERY {
            let _ = limiter.check("tok_busy");
        }
        assert_eq!(limiter.tracked(), 1);
    }
}
