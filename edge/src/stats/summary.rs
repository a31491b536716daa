//! One interval's per-title summary: for each title (the slug of `/titles/<slug>/…`), requests by cache status,
//! response bytes, errors (5xx), time-to-first-byte percentiles, and from CMCD the requests that report a stall
//! (`bs`) and the distinct sessions (`sid`). At most `max_titles` titles get a place of their own; every other
//! request (other paths, titles past the limit) counts under [`OTHER`]. A title takes a place only with a
//! successful answer (2xx or 304), so requests for made-up titles cannot push real ones out. Memory: about 900
//! bytes per title, 1 KiB more for a title whose requests carry CMCD session ids. Pure.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::latency::LatencyHistogram;
use super::sessions::DistinctSessions;
use crate::cmcd::Cmcd;
use crate::status::CacheStatus;

/// The bucket of requests that name no title, or a title past the limit.
pub const OTHER: &str = "other";
/// Longest slug read (the control plane's limit).
pub const MAX_SLUG_CHARS: usize = 128;

/// One answered request, as the summary counts it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The request path as received (without the query).
    pub path: &'a str,
    pub status: u16,
    /// [`CacheStatus::label`].
    pub cache_status: &'static str,
    /// Response body bytes sent.
    pub bytes: u64,
    /// Time to the first body byte, when a body byte was sent.
    pub ttfb_ms: Option<f64>,
    pub cmcd: Option<&'a Cmcd>,
}

/// One title's counts.
#[derive(Debug, Clone, Default)]
pub struct TitleCounts {
    /// By [`CacheStatus::LABELS`] position.
    requests: [u64; CacheStatus::LABELS.len()],
    bytes: u64,
    errors: u64,
    ttfb: LatencyHistogram,
    /// Requests that carried CMCD.
    cmcd_requests: u64,
    stalls: u64,
    /// Made on the first session id seen.
    sessions: Option<DistinctSessions>,
}

impl TitleCounts {
    fn record(&mut self, o: &Observation<'_>) {
        let status_index = CacheStatus::LABELS
            .iter()
            .position(|l| *l == o.cache_status)
            .unwrap_or(CacheStatus::LABELS.len() - 1);
        self.requests[status_index] += 1;
        self.bytes = self.bytes.saturating_add(o.bytes);
        if o.status >= 500 {
            self.errors += 1;
        }
        if let Some(ms) = o.ttfb_ms {
            self.ttfb.record(ms);
        }
        if let Some(cmcd) = o.cmcd {
            self.cmcd_requests += 1;
            if cmcd.buffer_starvation == Some(true) {
                self.stalls += 1;
            }
            if let Some(sid) = &cmcd.session_id {
                self.sessions
                    .get_or_insert_with(Default::default)
                    .insert(sid);
            }
        }
    }

    fn total(&self) -> u64 {
        self.requests.iter().sum()
    }

    /// `{"title", "requests": {status: n} (nonzero only), "bytes", "errors", "ttfb_ms"?, "stalls"?, "sessions"?}`:
    /// `ttfb_ms` when a first byte was timed, `stalls` and `sessions` when requests carried CMCD.
    fn to_json(&self, title: &str) -> Value {
        let requests: Map<String, Value> = CacheStatus::LABELS
            .iter()
            .zip(self.requests)
            .filter(|(_, n)| *n > 0)
            .map(|(label, n)| (label.to_string(), n.into()))
            .collect();
        let mut out = json!({
            "title": title,
            "requests": requests,
            "bytes": self.bytes,
            "errors": self.errors,
        });
        if let (Some(p50), Some(p90), Some(p99)) = (
            self.ttfb.quantile(0.5),
            self.ttfb.quantile(0.9),
            self.ttfb.quantile(0.99),
        ) {
            out["ttfb_ms"] = json!({"p50": p50, "p90": p90, "p99": p99});
        }
        if self.cmcd_requests > 0 {
            out["stalls"] = self.stalls.into();
            out["sessions"] = self.sessions.as_ref().map_or(0, |s| s.estimate()).into();
        }
        out
    }
}

/// The counts of one interval.
#[derive(Debug, Clone)]
pub struct Summary {
    max_titles: usize,
    titles: HashMap<String, TitleCounts>,
    other: TitleCounts,
}

impl Summary {
    /// An empty interval that gives at most `max_titles` titles a place of their own.
    pub fn new(max_titles: usize) -> Self {
        Summary {
            max_titles,
            titles: HashMap::new(),
            other: TitleCounts::default(),
        }
    }

    pub fn max_titles(&self) -> usize {
        self.max_titles
    }

    pub fn record(&mut self, o: &Observation<'_>) {
        let counts = match title_of(o.path) {
            Some(title) if self.titles.contains_key(title.as_ref()) => {
                self.titles.get_mut(title.as_ref())
            }
            Some(title)
                if self.titles.len() < self.max_titles
                    && ((200..300).contains(&o.status) || o.status == 304) =>
            {
                Some(self.titles.entry(title.into_owned()).or_default())
            }
            _ => None,
        };
        counts.unwrap_or(&mut self.other).record(o);
    }

    /// Requests counted.
    pub fn requests(&self) -> u64 {
        self.other.total() + self.titles.values().map(TitleCounts::total).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.requests() == 0
    }

    /// The body of `POST /v1/edges/<name>/stats`: `{"interval_secs", "titles": [...]}`, titles by name, then
    /// [`OTHER`] when it counted anything.
    pub fn to_json(&self, interval_secs: u64) -> Value {
        let mut names: Vec<&String> = self.titles.keys().collect();
        names.sort_unstable();
        let mut titles: Vec<Value> = names
            .into_iter()
            .map(|name| self.titles[name].to_json(name))
            .collect();
        if self.other.total() > 0 {
            titles.push(self.other.to_json(OTHER));
        }
        json!({"interval_secs": interval_secs, "titles": titles})
    }
}

/// The title a request path is for: the slug of `/titles/<slug>/<object>` (behind a signed URL's `/t/<token>`
/// too), in its canonical spelling; `None` for other paths and for slugs that are not the catalog's (lower-case
/// letters, digits and `-`, at most [`MAX_SLUG_CHARS`]).
pub fn title_of(path: &str) -> Option<Cow<'_, str>> {
    if path.contains('%') {
        let canonical = shared::path::canonical_path(path).ok()?;
        return slug_in(&canonical).map(|slug| Cow::Owned(slug.to_string()));
    }
    slug_in(path).map(Cow::Borrowed)
}

fn slug_in(path: &str) -> Option<&str> {
    let path = shared::token::split_path(path).map_or(path, |(_, rest)| rest);
    let (slug, object) = path.strip_prefix("/titles/")?.split_once('/')?;
    let is_slug = (1..=MAX_SLUG_CHARS).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    (is_slug && !object.is_empty()).then_some(slug)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<'a>(path: &'a str, status: u16, cache_status: &'static str) -> Observation<'a> {
        Observation {
            path,
            status,
            cache_status,
            bytes: 100,
            ttfb_ms: Some(2.0),
            cmcd: None,
        }
    }

    #[test]
    fn titles_come_from_their_paths() {
        let table = [
            ("/titles/mandelbrot/hls/v0/seg_001.ts", Some("mandelbrot")),
            ("/titles/test-pattern/master.m3u8", Some("test-pattern")),
            ("/titles/a1/x", Some("a1")),
            ("/t/abc.def/titles/mandelbrot/seg.ts", Some("mandelbrot")),
            ("/%74itles/%6Dandelbrot/seg.ts", Some("mandelbrot")),
            ("/titles/Mandelbrot/seg.ts", None),
            ("/titles/a_b/seg.ts", None),
            ("/titles/mandelbrot", None),
            ("/titles/mandelbrot/", None),
            ("/titles//seg.ts", None),
            ("/other/x.ts", None),
            ("/titlesx/a/b", None),
            ("/titles/caf%C3%A9/x", None),
            ("/titles/%zz/x", None),
        ];
        for (path, want) in table {
            assert_eq!(title_of(path).as_deref(), want, "{path}");
        }
        let long = format!("/titles/{}/x", "a".repeat(MAX_SLUG_CHARS));
        assert!(title_of(&long).is_some());
        let longer = format!("/titles/{}/x", "a".repeat(MAX_SLUG_CHARS + 1));
        assert_eq!(title_of(&longer), None);
    }

    #[test]
    fn requests_count_by_title_and_cache_status() {
        let mut s = Summary::new(10);
        assert!(s.is_empty());
        s.record(&seen("/titles/a/1.ts", 200, "miss"));
        s.record(&seen("/titles/a/1.ts", 200, "hit"));
        s.record(&seen("/titles/a/2.ts", 206, "hit"));
        s.record(&seen("/titles/a/3.ts", 502, "error"));
        s.record(&seen("/titles/b/1.ts", 200, "coalesced"));
        s.record(&seen("/healthz", 200, "local"));
        assert_eq!(s.requests(), 6);
        let body = s.to_json(5);
        assert_eq!(body["interval_secs"], 5);
        let titles = body["titles"].as_array().unwrap();
        assert_eq!(titles.len(), 3);
        assert_eq!(
            titles[0],
            json!({"title": "a", "requests": {"hit": 2, "miss": 1, "error": 1}, "bytes": 400, "errors": 1,
                   "ttfb_ms": {"p50": 1.987, "p90": 1.987, "p99": 1.987}})
        );
        assert_eq!(titles[1]["title"], "b");
        assert_eq!(titles[1]["requests"], json!({"coalesced": 1}));
        assert_eq!(titles[2]["title"], OTHER);
        assert_eq!(titles[2]["requests"], json!({"local": 1}));
    }

    #[test]
    fn titles_past_the_limit_and_failed_newcomers_count_as_other() {
        let mut s = Summary::new(2);
        s.record(&seen("/titles/nope/x.ts", 404, "miss"));
        s.record(&seen("/titles/a/x.ts", 200, "miss"));
        s.record(&seen("/titles/b/x.ts", 304, "hit"));
        s.record(&seen("/titles/c/x.ts", 200, "miss"));
        // A title with a place keeps counting its failures.
        s.record(&seen("/titles/a/y.ts", 404, "miss"));
        let body = s.to_json(1);
        let names: Vec<&str> = body["titles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", OTHER]);
        assert_eq!(body["titles"][0]["requests"]["miss"], 2);
        assert_eq!(body["titles"][2]["requests"]["miss"], 2, "nope and c");
        assert_eq!(s.max_titles(), 2);
        let none = Summary::new(0);
        assert!(none.to_json(1)["titles"].as_array().unwrap().is_empty());
    }

    #[test]
    fn cmcd_adds_stalls_and_sessions() {
        let mut s = Summary::new(10);
        let cmcd = |sid: &str, stalled: bool| Cmcd {
            session_id: Some(sid.into()),
            buffer_starvation: Some(stalled),
            ..Cmcd::default()
        };
        let (one, one_stalled, two) = (cmcd("s1", false), cmcd("s1", true), cmcd("s2", false));
        let no_sid = Cmcd::default();
        for c in [&one, &one_stalled, &two, &no_sid] {
            s.record(&Observation {
                cmcd: Some(c),
                ..seen("/titles/a/x.ts", 200, "hit")
            });
        }
        s.record(&seen("/titles/b/x.ts", 200, "hit"));
        s.record(&Observation {
            cmcd: Some(&no_sid),
            ..seen("/titles/c/x.ts", 200, "hit")
        });
        let body = s.to_json(5);
        assert_eq!(body["titles"][0]["stalls"], 1);
        assert_eq!(body["titles"][0]["sessions"], 2);
        assert!(
            body["titles"][1].get("stalls").is_none()
                && body["titles"][1].get("sessions").is_none(),
            "no CMCD, no CMCD counts"
        );
        assert_eq!(body["titles"][2]["sessions"], 0);
    }

    #[test]
    fn percentiles_follow_the_times_and_are_left_out_without_any() {
        let mut s = Summary::new(10);
        for ms in 1..=100 {
            s.record(&Observation {
                ttfb_ms: Some(ms as f64),
                ..seen("/titles/a/x.ts", 200, "hit")
            });
        }
        s.record(&Observation {
            ttfb_ms: None,
            ..seen("/titles/b/x.ts", 304, "hit")
        });
        let body = s.to_json(5);
        let ttfb = &body["titles"][0]["ttfb_ms"];
        for (p, exact) in [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)] {
            let got = ttfb[p].as_f64().unwrap();
            assert!((got - exact).abs() / exact < 0.045, "{p}: {got}");
        }
        assert!(body["titles"][1].get("ttfb_ms").is_none());
    }
}
