//! Time-to-first-byte percentiles in fixed memory: a histogram of log-spaced buckets, eight per doubling, from
//! 0.1 ms to about 105 s. A percentile read from it is the middle of its bucket, within ±4.5 % of the true
//! value; a time past the last bucket counts in it. Pure.

/// The smallest time told apart, ms; every time at or under it falls in the first bucket.
pub const FLOOR_MS: f64 = 0.1;
/// Buckets per doubling of time: each bucket spans a factor 2^(1/8) ≈ 1.09.
const PER_DOUBLING: f64 = 8.0;
/// Buckets: the first for ≤ [`FLOOR_MS`], then 160 up to 0.1 ms × 2^20 ≈ 105 s.
pub const BUCKETS: usize = 161;

/// Counts of times by bucket (644 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: [u32; BUCKETS],
    total: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; BUCKETS],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    /// Counts one time, in ms (a negative or NaN time counts as the smallest).
    pub fn record(&mut self, ms: f64) {
        let i = bucket(ms);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
    }

    /// Times counted.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (0 < q ≤ 1) by nearest rank, in ms: the middle of the bucket holding the ⌈q·n⌉-th
    /// smallest time; `None` when nothing was counted. Larger `q` never gives a smaller value.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += u64::from(count);
            if seen >= rank {
                return Some(middle(i));
            }
        }
        Some(middle(BUCKETS - 1))
    }
}

/// The bucket of a time: 0 for ≤ [`FLOOR_MS`], else 1 + ⌊8·log2(ms / 0.1)⌋, at most the last.
fn bucket(ms: f64) -> usize {
    if ms.is_nan() || ms <= FLOOR_MS {
        return 0;
    }
    let i = ((ms / FLOOR_MS).log2() * PER_DOUBLING).floor() + 1.0;
    (i as usize).min(BUCKETS - 1)
}

/// A bucket's representative time: the geometric middle of its bounds (half the floor for the first), rounded
/// to a microsecond.
fn middle(i: usize) -> f64 {
    let ms = if i == 0 {
        FLOOR_MS / 2.0
    } else {
        FLOOR_MS * ((i as f64 - 0.5) / PER_DOUBLING).exp2()
    };
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_log_spaced_and_bounded() {
        assert_eq!(bucket(0.0), 0);
        assert_eq!(bucket(-5.0), 0);
        assert_eq!(bucket(f64::NAN), 0);
        assert_eq!(bucket(0.1), 0);
        assert_eq!(bucket(0.1001), 1);
        assert_eq!(bucket(0.2), 9, "one doubling is eight buckets");
        assert_eq!(bucket(1e12), BUCKETS - 1);
        assert_eq!(bucket(f64::INFINITY), BUCKETS - 1);
        for i in 1..BUCKETS - 1 {
            assert!(middle(i) < middle(i + 1));
            assert_eq!(bucket(middle(i)), i, "a bucket's middle lies in it");
        }
    }

    #[test]
    fn quantiles_are_within_five_percent() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=1000 {
            h.record(ms as f64);
        }
        assert_eq!(h.len(), 1000);
        for (q, exact) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile(q).unwrap();
            assert!(
                (got - exact).abs() / exact < 0.045,
                "q{q}: {got} vs {exact}"
            );
        }
        assert!(h.quantile(0.5) <= h.quantile(0.9));
        assert!(h.quantile(0.9) <= h.quantile(0.99));
    }

    #[test]
    fn one_time_is_every_quantile_and_extremes_are_clamped() {
        let mut h = LatencyHistogram::default();
        h.record(12.0);
        let p = h.quantile(0.5).unwrap();
        assert!((p - 12.0).abs() / 12.0 < 0.045, "{p}");
        assert_eq!(h.quantile(0.0), h.quantile(1.0));
        let mut h = LatencyHistogram::default();
        h.record(0.0);
        h.record(1e9);
        assert_eq!(h.quantile(0.5), Some(0.05));
        assert!(h.quantile(1.0).unwrap() > 100_000.0);
        assert!(
            h.quantile(1.0).unwrap() < 3_600_000.0,
            "the control plane takes it"
        );
    }
}
