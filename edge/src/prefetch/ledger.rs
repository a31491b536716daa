//! Which prefetched objects demand has used, without I/O and without a clock: each prefetch is entered under
//! its object (cache key and byte range); a demand request for it takes it out as used; one not asked for
//! within `prefetch.unused_secs` is counted wasted (evicted, expired or simply never played), as is the oldest
//! when the ledger is full.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Prefetches tracked at most; entering one more counts the oldest wasted.
pub const MAX_TRACKED: usize = 100_000;

/// What a sweep or a use found: counts and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub bytes: u64,
}

/// Prefetched objects not yet asked for.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Object → when it was prefetched and its bytes.
    open: HashMap<String, (Instant, u64)>,
    /// Objects in the order prefetched (an entry whose object was used or re-entered is skipped).
    order: VecDeque<(String, Instant)>,
}

impl Ledger {
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Enters a prefetch of `object` that brought `bytes`; returns what fell out as wasted to make room.
    pub fn enter(&mut self, object: String, bytes: u64, now: Instant) -> Tally {
        let mut wasted = Tally::default();
        if !self.open.contains_key(&object) {
            while self.open.len() >= MAX_TRACKED {
                match self.pop_oldest() {
                    Some(bytes) => {
                        wasted.count += 1;
                        wasted.bytes += bytes;
                    }
                    None => break,
                }
            }
        }
        self.open.insert(object.clone(), (now, bytes));
        self.order.push_back((object, now));
        wasted
    }

    /// Adds `bytes` to an open prefetch of `object` (its size is known once it ends).
    pub fn add_bytes(&mut self, object: &str, bytes: u64) {
        if let Some((_, held)) = self.open.get_mut(object) {
            *held += bytes;
        }
    }

    /// A demand request asked for `object`: whether it had been prefetched (and not yet used), with its bytes.
    pub fn use_object(&mut self, object: &str) -> Option<u64> {
        self.open.remove(object).map(|(_, bytes)| bytes)
    }

    /// Counts as wasted, and forgets, every prefetch older than `unused` at `now`.
    pub fn sweep(&mut self, unused: Duration, now: Instant) -> Tally {
        let mut wasted = Tally::default();
        while let Some((_, at)) = self.order.front() {
            if now.saturating_duration_since(*at) < unused {
                break;
            }
            if let Some(bytes) = self.pop_front() {
                wasted.count += 1;
                wasted.bytes += bytes;
            }
        }
        wasted
    }

    /// Takes out the oldest open entry (skipping those used or entered again since), with its bytes.
    fn pop_oldest(&mut self) -> Option<u64> {
        while !self.order.is_empty() {
            if let Some(bytes) = self.pop_front() {
                return Some(bytes);
            }
        }
        None
    }

    /// Takes out the front entry; its bytes if it was still open (not used, not entered again since).
    fn pop_front(&mut self) -> Option<u64> {
        let (object, at) = self.order.pop_front()?;
        match self.open.get(&object) {
            Some((entered, bytes)) if *entered == at => {
                let bytes = *bytes;
                self.open.remove(&object);
                Some(bytes)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_once_then_forgotten_and_unused_ones_swept_as_wasted() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        ledger.enter("a".into(), 100, t0);
        ledger.enter("b".into(), 200, t0 + Duration::from_secs(5));
        assert_eq!(ledger.use_object("a"), Some(100));
        assert_eq!(ledger.use_object("a"), None, "used once");
        assert_eq!(ledger.use_object("never"), None);
        // At 30 s, "b" (entered at 5 s) is 25 s old: kept with a 30 s limit; "a" was used, so not wasted.
        let at = t0 + Duration::from_secs(30);
        assert_eq!(ledger.sweep(Duration::from_secs(30), at), Tally::default());
        let later = t0 + Duration::from_secs(35);
        assert_eq!(
            ledger.sweep(Duration::from_secs(30), later),
            Tally {
                count: 1,
                bytes: 200
            }
        );
        assert!(ledger.is_empty());
        assert!(ledger.order.is_empty());
    }

    #[test]
    fn an_object_prefetched_again_is_counted_once_from_its_latest_entry() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        ledger.enter("a".into(), 100, t0);
        ledger.enter("a".into(), 100, t0 + Duration::from_secs(20));
        assert_eq!(ledger.len(), 1);
        // The first entry's age has passed, the second's has not.
        let at = t0 + Duration::from_secs(25);
        assert_eq!(ledger.sweep(Duration::from_secs(10), at), Tally::default());
        assert_eq!(ledger.use_object("a"), Some(100));
        assert_eq!(ledger.sweep(Duration::from_secs(1), at).count, 0);
    }

    #[test]
    fn a_full_ledger_counts_its_oldest_wasted() {
        let t0 = Instant::now();
        let mut ledger = Ledger::default();
        for i in 0..MAX_TRACKED {
            assert_eq!(ledger.enter(format!("o{i}"), 1, t0).count, 0);
        }
        let wasted = ledger.enter("one more".into(), 1, t0);
        assert_eq!(wasted, Tally { count: 1, bytes: 1 });
        assert_eq!(ledger.len(), MAX_TRACKED);
        assert_eq!(ledger.use_object("o0"), None, "the oldest went");
        assert_eq!(ledger.use_object("o1"), Some(1));
    }
}
