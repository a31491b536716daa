//! Prefetch's budget, without I/O and without a clock: time is passed in. Prefetch is subordinate to demand, so
//! before one starts it must fit (in this order) under the edge's load (demand fills queued, or fills near
//! `cache.max_fills`), under the concurrent-prefetch limits (all upstreams, then its upstream) and under the
//! byte rates (all upstreams, then its upstream). Rates are token buckets holding one second of their rate;
//! the bytes a prefetch brings are charged as they arrive and may run a bucket into debt, which holds back the
//! next prefetch until it is paid (a prefetch's size is not known before its answer).

use std::collections::HashMap;

use tokio::time::Instant;

/// Fills in flight, as a share of `cache.max_fills`, at which prefetches are shed.
pub const LOAD_SHED_PERCENT: usize = 75;

/// Concurrent prefetches and byte rates; see `config::PrefetchConfig` for the defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_in_flight: usize,
    pub max_in_flight_per_upstream: usize,
    pub bytes_per_sec: u64,
    pub bytes_per_sec_per_upstream: u64,
}

/// The cache's fills as a prefetch finds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Fills running (demand and prefetch).
    pub fills_in_flight: usize,
    /// Fills queued for a slot.
    pub fills_waiting: usize,
    /// `cache.max_fills` as the engine applies it.
    pub max_fills: usize,
}

impl Load {
    /// Whether demand needs the fill slots: any fill queued, or one more would reach [`LOAD_SHED_PERCENT`].
    pub fn is_high(&self) -> bool {
        self.fills_waiting > 0
            || (self.fills_in_flight + 1) * 100 >= self.max_fills * LOAD_SHED_PERCENT
    }
}

/// Why a prefetch was not started (the metric label is [`Shed::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shed {
    /// Demand fills are queued or near `cache.max_fills`.
    Load,
    /// `prefetch.max_in_flight` prefetches run.
    InFlight,
    /// `prefetch.max_in_flight_per_upstream` prefetches run against this upstream.
    UpstreamInFlight,
    /// `prefetch.bytes_per_sec` is spent.
    Rate,
    /// `prefetch.bytes_per_sec_per_upstream` is spent for this upstream.
    UpstreamRate,
}

impl Shed {
    pub fn as_str(self) -> &'static str {
        match self {
            Shed::Load => "load",
            Shed::InFlight => "in_flight",
            Shed::UpstreamInFlight => "upstream_in_flight",
            Shed::Rate => "rate",
            Shed::UpstreamRate => "upstream_rate",
        }
    }
}

/// One account: prefetches running and a token bucket of bytes.
#[derive(Debug, Clone, Copy)]
struct Account {
    in_flight: usize,
    /// Bytes that may still be fetched; negative after a prefetch larger than what was left.
    tokens: f64,
    at: Instant,
}

impl Account {
    fn new(rate: u64, now: Instant) -> Self {
        Account {
            in_flight: 0,
            tokens: rate as f64,
            at: now,
        }
    }

    /// Tokens earned since the last look, at most one second of `rate`.
    fn refill(&mut self, rate: u64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate as f64).min(rate as f64);
        self.at = now.max(self.at);
    }
}

/// The whole edge's prefetch budget and each upstream's.
#[derive(Debug)]
pub struct Budget {
    limits: Limits,
    global: Account,
    /// By upstream (`host:port`, one per configured site or route: bounded by the config).
    upstreams: HashMap<String, Account>,
    /// The most prefetches that ran at once.
    peak: usize,
}

impl Budget {
    pub fn new(limits: Limits, now: Instant) -> Self {
        Budget {
            limits,
            global: Account::new(limits.bytes_per_sec, now),
            upstreams: HashMap::new(),
            peak: 0,
        }
    }

    /// Reserves a place for one prefetch from `upstream`, or says why not; a reserved place is given back
    /// with [`Budget::release`].
    pub fn admit(&mut self, upstream: &str, load: Load, now: Instant) -> Result<(), Shed> {
        if load.is_high() {
            return Err(Shed::Load);
        }
        let limits = self.limits;
        self.global.refill(limits.bytes_per_sec, now);
        let account = self
            .upstreams
            .entry(upstream.to_string())
            .or_insert_with(|| Account::new(limits.bytes_per_sec_per_upstream, now));
        account.refill(limits.bytes_per_sec_per_upstream, now);
        if self.global.in_flight >= limits.max_in_flight {
            return Err(Shed::InFlight);
        }
        if account.in_flight >= limits.max_in_flight_per_upstream {
            return Err(Shed::UpstreamInFlight);
        }
        if self.global.tokens <= 0.0 {
            return Err(Shed::Rate);
        }
        if account.tokens <= 0.0 {
            return Err(Shed::UpstreamRate);
        }
        account.in_flight += 1;
        self.global.in_flight += 1;
        self.peak = self.peak.max(self.global.in_flight);
        Ok(())
    }

    /// Charges `bytes` a prefetch from `upstream` received to both buckets.
    pub fn charge(&mut self, upstream: &str, bytes: u64, now: Instant) {
        let limits = self.limits;
        self.global.refill(limits.bytes_per_sec, now);
        self.global.tokens -= bytes as f64;
        if let Some(account) = self.upstreams.get_mut(upstream) {
            account.refill(limits.bytes_per_sec_per_upstream, now);
            account.tokens -= bytes as f64;
        }
    }

    /// Gives back the place of a prefetch from `upstream` that ended.
    pub fn release(&mut self, upstream: &str) {
        self.global.in_flight = self.global.in_flight.saturating_sub(1);
        if let Some(account) = self.upstreams.get_mut(upstream) {
            account.in_flight = account.in_flight.saturating_sub(1);
        }
    }

    /// Prefetches running now.
    pub fn in_flight(&self) -> usize {
        self.global.in_flight
    }

    /// The most prefetches that ran at once since the edge started.
    pub fn peak(&self) -> usize {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const IDLE: Load = Load {
        fills_in_flight: 0,
        fills_waiting: 0,
        max_fills: 100,
    };

    fn limits() -> Limits {
        Limits {
            max_in_flight: 3,
            max_in_flight_per_upstream: 2,
            bytes_per_sec: 1000,
            bytes_per_sec_per_upstream: 600,
        }
    }

    #[test]
    fn load_sheds_prefetch_before_demand_needs_the_slots() {
        let table = [
            (0, 0, 100, false),
            (73, 0, 100, false),
            (74, 0, 100, true), // the 75th fill would reach 75 %
            (10, 1, 100, true), // demand is queued
            (0, 0, 1, true),    // one slot: it is demand's
            (2, 0, 4, true),
            (1, 0, 4, false),
        ];
        for (fills_in_flight, fills_waiting, max_fills, high) in table {
            let load = Load {
                fills_in_flight,
                fills_waiting,
                max_fills,
            };
            assert_eq!(load.is_high(), high, "{load:?}");
        }
        let now = Instant::now();
        let mut budget = Budget::new(limits(), now);
        let busy = Load {
            fills_waiting: 1,
            ..IDLE
        };
        assert_eq!(budget.admit("a", busy, now), Err(Shed::Load));
        assert_eq!(budget.in_flight(), 0, "a shed prefetch holds nothing");
    }

    #[test]
    fn concurrency_is_bounded_globally_and_per_upstream() {
        let now = Instant::now();
        let mut budget = Budget::new(limits(), now);
        assert_eq!(budget.admit("a", IDLE, now), Ok(()));
        assert_eq!(budget.admit("a", IDLE, now), Ok(()));
        assert_eq!(budget.admit("a", IDLE, now), Err(Shed::UpstreamInFlight));
        assert_eq!(budget.admit("b", IDLE, now), Ok(()));
        assert_eq!(budget.admit("c", IDLE, now), Err(Shed::InFlight));
        assert_eq!((budget.in_flight(), budget.peak()), (3, 3));
        budget.release("a");
        assert_eq!(budget.admit("a", IDLE, now), Ok(()));
        for upstream in ["a", "a", "b"] {
            budget.release(upstream);
        }
        assert_eq!((budget.in_flight(), budget.peak()), (0, 3));
        // Releasing more than was admitted never underflows.
        budget.release("a");
        budget.release("nowhere");
        assert_eq!(budget.in_flight(), 0);
    }

    #[test]
    fn bytes_are_a_token_bucket_that_may_run_into_debt() {
        let t0 = Instant::now();
        let mut budget = Budget::new(limits(), t0);
        assert_eq!(budget.admit("a", IDLE, t0), Ok(()));
        // One prefetch larger than a second of the upstream's rate: its debt holds the next one back.
        budget.charge("a", 900, t0);
        budget.release("a");
        assert_eq!(budget.admit("a", IDLE, t0), Err(Shed::UpstreamRate));
        // Another upstream still has its own bytes, within what is left globally (100).
        assert_eq!(budget.admit("b", IDLE, t0), Ok(()));
        budget.charge("b", 150, t0);
        budget.release("b");
        assert_eq!(budget.admit("b", IDLE, t0), Err(Shed::Rate));
        // Half a second pays the global debt of 50 (500 earned); "a" earned 300 of its 300 debt: not yet.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(budget.admit("a", IDLE, t1), Err(Shed::UpstreamRate));
        let t2 = t0 + Duration::from_millis(600);
        assert_eq!(budget.admit("a", IDLE, t2), Ok(()));
        budget.release("a");
        // A long idle time fills a bucket to one second of its rate, no more.
        let t3 = t0 + Duration::from_secs(3600);
        assert_eq!(budget.admit("a", IDLE, t3), Ok(()));
        budget.charge("a", 600, t3);
        budget.release("a");
        assert_eq!(budget.admit("a", IDLE, t3), Err(Shed::UpstreamRate));
        // Time read out of order (a task that took `now` earlier) never adds tokens.
        budget.charge("a", 0, t2);
        assert_eq!(budget.admit("a", IDLE, t3), Err(Shed::UpstreamRate));
    }
}
