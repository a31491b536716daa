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

    /// Moves the clock forward by `by`; refused unless the test clock is on.
    pub fn advance(&self, by: Duration) -> Result<Duration, &'static str> {
        if !self.adjustable {
            return Err("the clock moves only with admin.test_clock = true");
        }
        let ahead = self
            .ahead_ms
            .fetch_add(by.as_millis() as u64, Ordering::Relaxed);
        Ok(Duration::from_millis(ahead) + by)
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
