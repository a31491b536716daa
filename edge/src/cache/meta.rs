//! The metadata record stored beside an object's slices: length, slice size, the headers a response is rebuilt
//! from, validators, and freshness inputs. One version of an object has one generation number; its slices are
//! keyed by it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One stored version of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Identifies this version; slices are stored under it.
    pub generation: u64,
    pub total_len: u64,
    /// The slice size the object was stored with (a config change does not mix sizes).
    pub slice_bytes: u64,
    pub content_type: Option<String>,
    /// Entity-tag as the upstream sent it.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The upstream's Cache-Control, passed on to clients.
    pub cache_control: Option<String>,
    /// Unix seconds when the response was received.
    pub stored_at: u64,
    /// The upstream's `Age` when received.
    pub initial_age: u64,
    /// Freshness lifetime in seconds.
    pub ttl_secs: u64,
    /// Seconds past its lifetime it may be served while revalidated in the background (RFC 5861).
    #[serde(default)]
    pub stale_while_revalidate_secs: u64,
    /// Seconds past its lifetime it may be served when the upstream fails (RFC 5861).
    #[serde(default)]
    pub stale_if_error_secs: u64,
}

/// The freshness inputs of one upstream response (RFC 9111, RFC 5861), set on a new version or on a version
/// that a 304 refreshed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    pub stored_at: u64,
    pub initial_age: u64,
    pub ttl_secs: u64,
    pub stale_while_revalidate_secs: u64,
    pub stale_if_error_secs: u64,
}

impl ObjectMeta {
    /// Takes the freshness of a newer response for the same version.
    pub fn refresh(&mut self, f: Freshness) {
        self.stored_at = f.stored_at;
        self.initial_age = f.initial_age;
        self.ttl_secs = f.ttl_secs;
        self.stale_while_revalidate_secs = f.stale_while_revalidate_secs;
        self.stale_if_error_secs = f.stale_if_error_secs;
    }

    /// Current age in seconds (RFC 9111 §4.2.3, simplified: initial age plus resident time).
    pub fn age(&self, now: SystemTime) -> u64 {
        self.initial_age + unix_secs(now).saturating_sub(self.stored_at)
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.ttl_secs
    }

    /// Seconds past the freshness lifetime (0 while fresh).
    pub fn staleness(&self, now: SystemTime) -> u64 {
        self.age(now).saturating_sub(self.ttl_secs)
    }

    /// Seconds of freshness left.
    pub fn ttl_left(&self, now: SystemTime) -> u64 {
        self.ttl_secs.saturating_sub(self.age(now))
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("meta serializes"))
    }

    /// `None` for a record this version cannot read (it is then treated as a miss and replaced).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Unix seconds.
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A generation number unlikely to repeat across restarts: time in nanoseconds plus a process counter.
pub fn new_generation(now: SystemTime) -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            generation: 7,
            total_len: 100,
            slice_bytes: 64,
            content_type: Some("video/mp2t".into()),
            etag: Some("\"e\"".into()),
            last_modified: None,
            cache_control: Some("max-age=60".into()),
            stored_at: 1000,
            initial_age: 5,
            ttl_secs: 60,
            stale_while_revalidate_secs: 10,
            stale_if_error_secs: 0,
        }
    }

    #[test]
    fn round_trip() {
        let m = meta();
        assert_eq!(ObjectMeta::decode(&m.encode()), Some(m));
        assert_eq!(ObjectMeta::decode(b"garbage"), None);
    }

    #[test]
    fn age_and_freshness() {
        let m = meta();
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(m.age(at(1000)), 5);
        assert_eq!(m.age(at(1010)), 15);
        assert!(m.is_fresh(at(1054)));
        assert!(!m.is_fresh(at(1055)));
        assert_eq!(m.ttl_left(at(1050)), 5);
        assert_eq!(m.staleness(at(1050)), 0);
        assert_eq!(m.staleness(at(1065)), 10);
        assert_eq!(
            m.age(at(900)),
            5,
            "a clock that went back does not make negative ages"
        );
    }

    #[test]
    fn generations_differ() {
        let now = SystemTime::now();
        assert_ne!(new_generation(now), new_generation(now));
    }
}
