//! The edge's clock. Every decision that depends on the time of day — freshness and age, bans and retention,
//! token expiry, hit-for-pass marks — reads [`Clock::now`], never the system clock directly (clippy's
//! `disallowed-methods` in `edge/clippy.toml` holds the rule). The decisions themselves are pure functions
//! taking the time as an argument; this is where the time comes from.
//!
//! With `admin.test_clock = true` (for tests only; off by default) the admin API can move the clock forward,
//! so a test makes a stored response stale without sleeping. Exchanges with the upstream are still timed by
//! the wall clock ([`Clock::wall`]): the upstream's `Date` is compared with when its answer really arrived, so
//! a moved clock ages what is stored rather than skewing what arrives.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

#[derive(Debug, Default)]
pub struct Clock {
    /// How far the clock has been moved forward, in milliseconds (0 unless the test clock is on).
    ahead_ms: AtomicU64,
    /// Whether [`Clock::advance`] is allowed.
    adjustable: bool,
}

/// How far the test clock may be moved ahead in all.
pub const MAX_AHEAD: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Clock {
    /// The system clock; `adjustable` lets tests move it forward.
    pub fn new(adjustable: bool) -> Self {
        Clock {
            ahead_ms: AtomicU64::new(0),
            adjustable,
        }
    }

    /// The time the edge's decisions use.
    pub fn now(&self) -> SystemTime {
        self.wall() + Duration::from_millis(self.ahead_ms.load(Ordering::Relaxed))
    }

    /// The system clock, for timing an exchange with the upstream.
    #[allow(clippy::disallowed_methods)] // the one place the system clock is read
    pub fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    /// Whether tests may move it (`admin.test_clock`).
    pub fn is_adjustable(&self) -> bool {
        self.adjustable
    }

    /// Moves the clock forward by `by`; refused unless the test clock is on, and past [`MAX_AHEAD`] in all
    /// (the time arithmetic of the cache must not overflow).
    pub fn advance(&self, by: Duration) -> Result<Duration, &'static str> {
        if !self.adjustable {
            return Err("the clock moves only with admin.test_clock = true");
        }
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let moved = self
            .ahead_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |ahead| {
                ahead
                    .checked_add(by_ms)
                    .filter(|&total| total <= MAX_AHEAD.as_millis() as u64)
            });
        match moved {
            Ok(before) => Ok(Duration::from_millis(before + by_ms)),
            Err(_) => Err("the test clock moves at most 100 years ahead in all"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_test_clock_moves() {
        let fixed = Clock::new(false);
        assert!(fixed.advance(Duration::from_secs(5)).is_err());
        let test = Clock::new(true);
        let before = test.now();
        assert_eq!(
            test.advance(Duration::from_secs(5)),
            Ok(Duration::from_secs(5))
        );
        assert_eq!(
            test.advance(Duration::from_secs(2)),
            Ok(Duration::from_secs(7))
        );
        let moved = test.now().duration_since(before).unwrap();
        assert!(moved >= Duration::from_secs(7), "{moved:?}");
        assert!(test.wall() < test.now());
    }
}
