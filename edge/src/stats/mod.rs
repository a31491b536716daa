//! Per-title summaries for the control plane (`[control] stats_secs`): every answered request is counted under its
//! title at the end of its body (`access.rs`), and every interval the summary so far is posted to
//! `<control.url>/v1/edges/<name>/stats` and a new one begun (`post.rs`). The counting is pure (`summary.rs`, with
//! fixed-memory percentiles in `latency.rs` and distinct sessions in `sessions.rs`); [`TitleStats`] is the one
//! shared, locked interval between them, and counts nothing until the poster starts it.

mod latency;
mod post;
mod sessions;
mod summary;

use std::sync::{Mutex, OnceLock, PoisonError};

pub use latency::LatencyHistogram;
pub use post::{MAX_INTERVAL_SECS, post_forever};
pub use sessions::DistinctSessions;
pub use summary::{OTHER, Observation, Summary, title_of};

/// The interval being counted, shared by every request and the poster.
#[derive(Debug, Default)]
pub struct TitleStats {
    interval: OnceLock<Mutex<Summary>>,
}

impl TitleStats {
    /// Starts counting, `max_titles` titles an interval at most; before, [`TitleStats::record`] does nothing (an
    /// edge that posts no summaries pays nothing for them). Later calls change nothing.
    pub fn start(&self, max_titles: usize) {
        let _ = self.interval.set(Mutex::new(Summary::new(max_titles)));
    }

    /// Counts one answered request.
    pub fn record(&self, observation: &Observation<'_>) {
        if let Some(interval) = self.interval.get() {
            interval
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(observation);
        }
    }

    /// Ends the interval: what it counted (`None` before [`TitleStats::start`]), a new one begun.
    pub fn take(&self) -> Option<Summary> {
        let interval = self.interval.get()?;
        let mut current = interval.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = Summary::new(current.max_titles());
        Some(std::mem::replace(&mut *current, fresh))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(path: &str) -> Observation<'_> {
        Observation {
            path,
            status: 200,
            cache_status: "hit",
            bytes: 1,
            ttfb_ms: None,
            cmcd: None,
        }
    }

    #[test]
    fn nothing_is_counted_before_start_and_each_take_begins_anew() {
        let stats = TitleStats::default();
        stats.record(&hit("/titles/a/x.ts"));
        assert!(stats.take().is_none());
        stats.start(1);
        stats.start(50); // no effect
        stats.record(&hit("/titles/a/x.ts"));
        stats.record(&hit("/titles/b/x.ts"));
        let first = stats.take().unwrap();
        assert_eq!(first.requests(), 2);
        assert_eq!(first.max_titles(), 1);
        let second = stats.take().unwrap();
        assert!(second.is_empty());
        assert_eq!(second.max_titles(), 1);
    }
}
