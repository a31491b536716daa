//! The metadata record stored beside an object's slices: length, slice size, the headers a response is rebuilt
//! from, validators, and freshness inputs. One version of an object has one generation number; its slices are
//! keyed by it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue, header};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::freshness::Lifetime;
use super::slices::Slicing;

/// One stored version of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Identifies this version; slices are stored under it.
    pub generation: u64,
    /// The response status: 200 for objects stored as slices; another stored status (404, 301, …) is a whole
    /// small response whose body is slice 0.
    #[serde(default = "ok_status")]
    pub status: u16,
    pub total_len: u64,
    /// The slice size the object was stored with (a config change does not mix sizes).
    pub slice_bytes: u64,
    pub content_type: Option<String>,
    /// Entity-tag as the upstream sent it.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The upstream's Cache-Control, passed on to clients.
    pub cache_control: Option<String>,
    /// Other response fields passed on to clients (`Location`, `Content-Encoding`, `Vary`, …), lower-case names.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Surrogate keys (`Surrogate-Key`, `Cache-Tag`) for purging by tag.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The request fields this response varies on (lower case), and this version's normalised values of them.
    #[serde(default)]
    pub vary: Vec<String>,
    #[serde(default)]
    pub variant: Vec<(String, String)>,
    /// On a URL's primary record: the other variants stored under their own keys, oldest first (capped).
    #[serde(default)]
    pub variants: Vec<Vec<(String, String)>>,
    /// Unix seconds when the response was received.
    pub stored_at: u64,
    /// Unix milliseconds when the upstream last confirmed this version (stored or revalidated); bans compare it.
    #[serde(default)]
    pub confirmed_ms: u64,
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
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, `no-cache`).
    #[serde(default)]
    pub no_stale: bool,
    /// The stored fields ready to send, made on first use from the fields above.
    #[serde(skip)]
    pub prepared: Prepared,
}

/// A version's stored response fields as ready header values, and its `Last-Modified` parsed: made once per
/// decoded record instead of on every hit (parsing and validating each field was a measurable share of a
/// manifest hit). A clone starts empty, so a record changed after cloning never sends stale fields.
#[derive(Default)]
pub struct Prepared(OnceLock<PreparedFields>);

pub struct PreparedFields {
    /// `Content-Type` (the default when none was stored) first, then `ETag`, `Last-Modified`,
    /// `Cache-Control` and the other stored fields, in the order they are sent.
    pub fields: Vec<(HeaderName, HeaderValue)>,
    pub last_modified: Option<SystemTime>,
}

impl Clone for Prepared {
    fn clone(&self) -> Self {
        Prepared::default()
    }
}

impl PartialEq for Prepared {
    fn eq(&self, _: &Self) -> bool {
        true // derived from the other fields
    }
}

impl Eq for Prepared {}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prepared")
    }
}

fn ok_status() -> u16 {
    200
}

impl ObjectMeta {
    /// A new version received at `now` with lifetime `l`; the caller fills in the content fields.
    pub fn new(generation: u64, status: u16, total_len: u64, slice_bytes: u64) -> Self {
        ObjectMeta {
            generation,
            status,
            total_len,
            slice_bytes,
            content_type: None,
            etag: None,
            last_modified: None,
            cache_control: None,
            headers: Vec::new(),
            tags: Vec::new(),
            vary: Vec::new(),
            variant: Vec::new(),
            variants: Vec::new(),
            stored_at: 0,
            confirmed_ms: 0,
            initial_age: 0,
            ttl_secs: 0,
            stale_while_revalidate_secs: 0,
            stale_if_error_secs: 0,
            no_stale: false,
            prepared: Prepared::default(),
        }
    }

    /// How this version is cut into slices.
    pub fn slicing(&self) -> Slicing {
        Slicing {
            slice_bytes: self.slice_bytes,
            total_len: self.total_len,
        }
    }

    /// The stored response fields, ready to send (made on first use).
    pub fn prepared(&self) -> &PreparedFields {
        self.prepared.0.get_or_init(|| {
            let mut fields = Vec::with_capacity(4 + self.headers.len());
            let content_type = self
                .content_type
                .as_deref()
                .unwrap_or(shared::media::DEFAULT_CONTENT_TYPE);
            for (name, value) in [
                (header::CONTENT_TYPE, Some(content_type)),
                (header::ETAG, self.etag.as_deref()),
                (header::LAST_MODIFIED, self.last_modified.as_deref()),
                (header::CACHE_CONTROL, self.cache_control.as_deref()),
            ] {
                if let Some(Ok(value)) = value.map(HeaderValue::from_str) {
                    fields.push((name, value));
                }
            }
            for (name, value) in &self.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    fields.push((name, value));
                }
            }
            PreparedFields {
                fields,
                last_modified: self
                    .last_modified
                    .as_deref()
                    .and_then(shared::conditional::parse_http_date),
            }
        })
    }

    /// Takes the freshness of a newer response for the same version, received at `now`.
    pub fn refresh(&mut self, l: &Lifetime, now: SystemTime) {
        self.stored_at = unix_secs(now);
        self.confirmed_ms = unix_millis(now);
        self.initial_age = l.initial_age;
        self.ttl_secs = l.ttl_secs;
        self.stale_while_revalidate_secs = l.stale_while_revalidate_secs;
        self.stale_if_error_secs = l.stale_if_error_secs;
        self.no_stale = l.no_stale;
    }

    /// Marks the version stale from `now` on (a soft purge): its RFC 5861 windows count from here.
    pub fn expire(&mut self, now: SystemTime) {
        self.ttl_secs = self.ttl_secs.min(self.age(now));
    }

    /// Current age in seconds (RFC 9111 §4.2.3, simplified: initial age plus resident time).
    pub fn age(&self, now: SystemTime) -> u64 {
        self.initial_age + unix_secs(now).saturating_sub(self.stored_at)
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.ttl_secs
    }

    /// Its freshness at `now`, as the plan reads it.
    pub fn state(&self, now: SystemTime) -> super::plan::StoredState {
        super::plan::StoredState {
            age: self.age(now),
            ttl_secs: self.ttl_secs,
            has_validator: self.etag.is_some() || self.last_modified.is_some(),
            no_stale: self.no_stale,
            stale_while_revalidate_secs: self.stale_while_revalidate_secs,
            stale_if_error_secs: self.stale_if_error_secs,
        }
    }

    /// Seconds past the freshness lifetime (0 while fresh).
    pub fn staleness(&self, now: SystemTime) -> u64 {
        self.age(now).saturating_sub(self.ttl_secs)
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("meta serializes"))
    }

    /// `None` for a record this version cannot read (it is then treated as a miss and replaced).
    /// About how many bytes the decoded record holds (with its prepared response fields), for weighing it.
    pub fn approx_bytes(&self) -> usize {
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .map(|(k, v)| k.len() + v.len() + 48)
                .sum::<usize>()
        };
        let texts = [
            &self.content_type,
            &self.etag,
            &self.last_modified,
            &self.cache_control,
        ];
        // The fixed fields, and each text once decoded and once prepared as a header value.
        512 + 2 * texts
            .iter()
            .filter_map(|t| t.as_ref())
            .map(|t| t.len() + 48)
            .sum::<usize>()
            + 2 * pairs(&self.headers)
            + self.tags.iter().map(|t| t.len() + 24).sum::<usize>()
            + self.vary.iter().map(|v| v.len() + 24).sum::<usize>()
            + pairs(&self.variant)
            + self.variants.iter().map(|v| pairs(v) + 24).sum::<usize>()
    }

    /// A record read back, or `None` (a miss) for one that no version of the edge writes: the arithmetic on
    /// slices and ages may then trust it.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        const LONGEST_SECS: u64 = 1 << 40;
        let meta: ObjectMeta = serde_json::from_slice(bytes).ok()?;
        let sane = (1..=64 << 20).contains(&meta.slice_bytes)
            && meta.total_len <= 1 << 62
            && (meta.status == 200 || meta.total_len <= meta.slice_bytes)
            && meta.initial_age <= LONGEST_SECS
            && meta.ttl_secs <= LONGEST_SECS;
        sane.then_some(meta)
    }
}

/// Unix milliseconds.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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
            content_type: Some("video/mp2t".into()),
            etag: Some("\"e\"".into()),
            cache_control: Some("max-age=60".into()),
            stored_at: 1000,
            initial_age: 5,
            ttl_secs: 60,
            stale_while_revalidate_secs: 10,
            ..ObjectMeta::new(7, 200, 100, 64)
        }
    }

    #[test]
    fn prepared_fields_follow_the_record_and_clones_start_over() {
        let mut m = ObjectMeta {
            last_modified: Some("Sun, 06 Nov 1994 08:49:37 GMT".into()),
            headers: vec![
                ("content-encoding".into(), "gzip".into()),
                ("bad name".into(), "x".into()),
            ],
            ..meta()
        };
        let names = |m: &ObjectMeta| -> Vec<String> {
            m.prepared()
                .fields
                .iter()
                .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
                .collect()
        };
        assert_eq!(
            names(&m),
            [
                "content-type: video/mp2t",
                "etag: \"e\"",
                "last-modified: Sun, 06 Nov 1994 08:49:37 GMT",
                "cache-control: max-age=60",
                "content-encoding: gzip"
            ]
        );
        assert_eq!(
            m.prepared().last_modified,
            Some(UNIX_EPOCH + Duration::from_secs(784_111_777))
        );
        let mut changed = m.clone();
        changed.cache_control = Some("max-age=5".into());
        assert!(names(&changed).contains(&"cache-control: max-age=5".to_string()));
        m.content_type = None;
        let fresh = m.clone();
        assert_eq!(
            names(&fresh)[0],
            format!("content-type: {}", shared::media::DEFAULT_CONTENT_TYPE)
        );
    }

    #[test]
    fn round_trip() {
        let m = meta();
        assert_eq!(ObjectMeta::decode(&m.encode()), Some(m));
        assert_eq!(ObjectMeta::decode(b"garbage"), None);
    }

    /// A record no edge writes (a forged or damaged file with a valid checksum) is a miss, never arithmetic
    /// that divides by zero or overflows.
    #[test]
    fn records_no_edge_writes_are_misses() {
        let broken: [fn(&mut ObjectMeta); 5] = [
            |m| m.slice_bytes = 0,
            |m| m.total_len = u64::MAX,
            |m| m.initial_age = u64::MAX,
            |m| m.ttl_secs = 1 << 63,
            |m| {
                m.status = 404;
                m.total_len = m.slice_bytes + 1;
            },
        ];
        for breaking in broken {
            let mut m = meta();
            breaking(&mut m);
            assert_eq!(ObjectMeta::decode(&m.encode()), None, "{m:?}");
        }
    }

    #[test]
    fn age_and_freshness() {
        let m = meta();
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(m.age(at(1000)), 5);
        assert_eq!(m.age(at(1010)), 15);
        assert!(m.is_fresh(at(1054)));
        assert!(!m.is_fresh(at(1055)));
        assert_eq!(m.staleness(at(1050)), 0);
        assert_eq!(m.staleness(at(1065)), 10);
        assert_eq!(
            m.age(at(900)),
            5,
            "a clock that went back does not make negative ages"
        );
    }

    #[test]
    fn records_of_an_older_version_still_decode() {
        let old =
            br#"{"generation":1,"total_len":3,"slice_bytes":64,"content_type":null,"etag":null,
            "last_modified":null,"cache_control":null,"stored_at":1,"initial_age":0,"ttl_secs":9}"#;
        let m = ObjectMeta::decode(old).expect("decodes");
        assert_eq!((m.status, m.no_stale, m.tags.len()), (200, false, 0));
    }

    #[test]
    fn soft_expiry_starts_staleness_now() {
        let mut m = meta();
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        m.expire(at(1010));
        assert!(!m.is_fresh(at(1010)));
        assert_eq!(m.staleness(at(1010)), 0);
        assert_eq!(m.staleness(at(1013)), 3);
        let mut expired = meta();
        expired.expire(at(2000));
        assert_eq!(
            expired.ttl_secs, 60,
            "an already stale version keeps its lifetime"
        );
    }

    #[test]
    fn generations_differ() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_ne!(new_generation(now), new_generation(now));
    }
}
