//! Riding out a lost connection to the control plane (a restart, a dropped
//! link): the backoff schedule, how long one outage is retried, and the two
//! notes that tell the person it was lost and is back.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::term;

/// How long one outage is retried before giving up. A control plane that
/// restarts (a deploy, a crash and its supervisor) is back well within it.
pub const RECONNECT_FOR: Duration = Duration::from_secs(60);
/// The wait before the first attempt; it doubles after each failure…
const FIRST_DELAY: Duration = Duration::from_millis(200);
/// …up to this, so that a control plane that is back is found quickly.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// A connection that lasted this long, or delivered anything, ends its
/// outage: the next drop gets the whole budget again. One that dropped
/// sooner continues the outage, so that a control plane that accepts and
/// drops at once is not retried for ever.
const STABLE_AFTER: Duration = Duration::from_secs(10);

pub const LOST_NOTE: &str = "[connection to the control plane lost; reconnecting (up to 60s)...]";
pub const BACK_NOTE: &str = "[reconnected to the control plane]";

/// The waits of one outage: 200 ms doubling to 5 s, for at least
/// [`RECONNECT_FOR`] after it began.
#[derive(Debug, Clone)]
pub struct Backoff {
    started: Instant,
    delay: Duration,
}

impl Backoff {
    pub fn new(started: Instant) -> Self {
        Backoff {
            started,
            delay: FIRST_DELAY,
        }
    }

    /// The wait before the next attempt, or `None` once the outage has lasted
    /// [`RECONNECT_FOR`]; so the last attempt starts before that and the
    /// giving up comes after it.
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        if now.saturating_duration_since(self.started) >= RECONNECT_FOR {
            return None;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        Some(delay)
    }

    pub fn started(&self) -> Instant {
        self.started
    }
}

/// Why reconnecting stopped: the last failure and how long it was tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaveUp {
    pub why: String,
    pub tried_for: Duration,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (gave up reconnecting after {}s)",
            self.why,
            self.tried_for.as_secs()
        )
    }
}

impl std::error::Error for GaveUp {}

/// The connection state of one command across its connections.
#[derive(Debug)]
pub struct Retry {
    /// The outage in progress, or the last one when a connection that has
    /// not proved stable yet is up.
    outage: Option<Backoff>,
    /// When the connection now up was made.
    up_since: Option<Instant>,
    /// Whether the person was told the connection is lost (and not yet that it is back).
    told_lost: bool,
    why: String,
}

impl Default for Retry {
    fn default() -> Self {
        Self::new()
    }
}

impl Retry {
    pub fn new() -> Self {
        Retry {
            outage: None,
            up_since: None,
            told_lost: false,
            why: String::new(),
        }
    }

    /// A connection is up (its `welcome` arrived); says so if it had been lost.
    pub fn connected(&mut self) {
        self.up_since = Some(Instant::now());
        if std::mem::take(&mut self.told_lost) {
            term::note(BACK_NOTE);
        }
    }

    /// The connection dropped, or the first one could not be opened, for
    /// `why`; `progressed` tells whether it delivered anything.
    pub fn lost(&mut self, why: String, progressed: bool) {
        self.lost_at(Instant::now(), why, progressed);
        if !std::mem::replace(&mut self.told_lost, true) {
            term::note(LOST_NOTE);
        }
    }

    /// An attempt to reconnect failed for `why`.
    pub fn failed(&mut self, why: String) {
        self.why = why;
    }

    /// Waits before the next attempt; an error once the outage has lasted
    /// [`RECONNECT_FOR`].
    pub async fn wait(&mut self) -> Result<(), GaveUp> {
        let now = Instant::now();
        let outage = self.outage.get_or_insert_with(|| Backoff::new(now));
        match outage.next_delay(now) {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                Ok(())
            }
            None => Err(GaveUp {
                why: self.why.clone(),
                tried_for: now.saturating_duration_since(outage.started()),
            }),
        }
    }

    /// Starts a new outage unless the connection that just dropped was too
    /// short-lived and fruitless to end the last one; returns whether it did.
    fn lost_at(&mut self, now: Instant, why: String, progressed: bool) -> bool {
        let stable = progressed
            || self
                .up_since
                .is_some_and(|since| now.saturating_duration_since(since) >= STABLE_AFTER);
        self.up_since = None;
        self.why = why;
        if self.outage.is_none() || stable {
            self.outage = Some(Backoff::new(now));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every wait of one outage whose attempts each fail after `attempt_takes`.
    fn schedule(attempt_takes: Duration) -> (Vec<Duration>, Duration) {
        let start = Instant::now();
        let mut backoff = Backoff::new(start);
        let mut now = start;
        let mut delays = Vec::new();
        while let Some(delay) = backoff.next_delay(now) {
            delays.push(delay);
            now += delay + attempt_takes;
        }
        (delays, now - start)
    }

    #[test]
    fn backoff_doubles_from_200ms_to_5s() {
        let (delays, _) = schedule(Duration::ZERO);
        let ms: Vec<u128> = delays.iter().take(8).map(Duration::as_millis).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
    }

    #[test]
    fn one_outage_is_retried_for_at_least_a_minute_and_not_much_longer() {
        for takes in [
            Duration::ZERO,
            Duration::from_millis(30),
            Duration::from_secs(10),
        ] {
            let (delays, tried) = schedule(takes);
            assert!(tried >= RECONNECT_FOR, "{takes:?}: gave up after {tried:?}");
            assert!(
                tried <= RECONNECT_FOR + MAX_DELAY + takes,
                "{takes:?}: kept on for {tried:?}"
            );
            // Quick failures get many attempts, slow ones still several.
            assert!(
                delays.len() >= 6,
                "{takes:?}: only {} attempts",
                delays.len()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_gives_up_after_a_minute_naming_the_last_failure() {
        let start = Instant::now();
        let mut retry = Retry::new();
        retry.lost("the connection ended".to_owned(), false);
        let mut attempts = 0;
        let gave_up = loop {
            match retry.wait().await {
                Ok(()) => {
                    attempts += 1;
                    retry.failed(format!("refused #{attempts}"));
                }
                Err(gave_up) => break gave_up,
            }
        };
        let elapsed = start.elapsed();
        assert!(elapsed >= RECONNECT_FOR, "{elapsed:?}");
        assert!(elapsed < RECONNECT_FOR + MAX_DELAY, "{elapsed:?}");
        assert_eq!(gave_up.why, format!("refused #{attempts}"));
        assert_eq!(gave_up.tried_for, elapsed);
        assert_eq!(
            gave_up.to_string(),
            format!(
                "refused #{attempts} (gave up reconnecting after {}s)",
                elapsed.as_secs()
            )
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_or_fruitful_connection_resets_the_budget() {
        let mut retry = Retry::new();
        let t0 = Instant::now();
        assert!(retry.lost_at(t0, "a".to_owned(), false), "first drop");
        // Reconnected, then dropped after 1 s with nothing delivered: same outage.
        retry.connected();
        assert!(!retry.lost_at(t0 + Duration::from_secs(1), "b".to_owned(), false));
        assert_eq!(retry.outage.as_ref().map(Backoff::started), Some(t0));
        // Dropped quickly but after delivering output: a new outage.
        retry.connected();
        assert!(retry.lost_at(t0 + Duration::from_secs(2), "c".to_owned(), true));
        // Up long enough: a new outage too.
        tokio::time::advance(STABLE_AFTER).await;
        let later = Instant::now();
        retry.up_since = Some(later - STABLE_AFTER);
        assert!(retry.lost_at(later, "d".to_owned(), false));
        assert_eq!(retry.outage.as_ref().map(Backoff::started), Some(later));
    }
}
