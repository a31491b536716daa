//! The shield tier's decisions, pure (no I/O, time passed in): which parent edge a cache key fills from
//! (rendezvous hashing over the parents that are not out, so every child asks the same parent for the same
//! object and the origin sees one fetch per object), the parents' passive health (a failure takes a parent out
//! for a while), and the `CDN-Loop` field of RFC 8586 (counting this CDN's hops and adding one).

use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

/// `CDN-Loop` (RFC 8586).
pub const CDN_LOOP: http::HeaderName = http::HeaderName::from_static("cdn-loop");

/// One parent edge.
#[derive(Debug, Clone)]
pub struct Parent {
    /// Its base URL as configured: the metric label and what logs name.
    pub url: String,
    /// `host:port` to connect to.
    pub authority: String,
    seed: u64,
}

impl Parent {
    pub fn new(url: &str, authority: &str) -> Self {
        Parent {
            url: url.to_string(),
            authority: authority.to_string(),
            // Seeded by the URL as configured, the same string in every child's config, so every child ranks
            // the parents of a key alike.
            seed: shared::rendezvous::node_seed(url),
        }
    }
}

/// What a parent's answer says about its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It answered (any status below 500, and 508: the request looped, the parent is well).
    Up,
    /// It could not be reached, timed out, or answered 5xx: out for the retry period.
    Failed,
}

/// How a parent's answer is judged: 4xx is the request's business, 5xx the parent's — except 508, which says
/// the request itself looped (RFC 8586) and would loop through any parent.
pub fn verdict(status: http::StatusCode) -> Verdict {
    if status.is_server_error() && status != http::StatusCode::LOOP_DETECTED {
        Verdict::Failed
    } else {
        Verdict::Up
    }
}

/// A site's parents and their passive health: a parent that failed is skipped until `retry` has passed; then
/// the next request for one of its keys tries it again (there is no probe: traffic is the probe).
#[derive(Debug)]
pub struct Parents {
    parents: Vec<Parent>,
    retry: Duration,
    /// Per parent: out until then, or `None` when usable.
    out_until: Mutex<Vec<Option<Instant>>>,
}

/// A change of a parent's state, for the log and the `edge_parent_up` gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    WentOut,
    CameBack,
}

impl Parents {
    pub fn new(parents: Vec<Parent>, retry: Duration) -> Self {
        let out_until = Mutex::new(vec![None; parents.len()]);
        Parents {
            parents,
            retry,
            out_until,
        }
    }

    pub fn get(&self, index: usize) -> &Parent {
        &self.parents[index]
    }

    pub fn all(&self) -> &[Parent] {
        &self.parents
    }

    /// The parents to try for `key`, most preferred first, leaving out those that are out at `now`.
    pub fn order(&self, key: &str, now: Instant) -> Vec<usize> {
        let nodes: Vec<(u64, f64)> = self.parents.iter().map(|p| (p.seed, 1.0)).collect();
        let out = self.out_until.lock().unwrap_or_else(|e| e.into_inner());
        shared::rendezvous::rank(key, &nodes)
            .into_iter()
            .filter(|&i| out[i].is_none_or(|until| now >= until))
            .collect()
    }

    /// Records how parent `index` answered at `now`; the change of its state, if any.
    pub fn record(&self, index: usize, verdict: Verdict, now: Instant) -> Option<Change> {
        let mut out = self.out_until.lock().unwrap_or_else(|e| e.into_inner());
        let slot = out.get_mut(index)?;
        match (verdict, *slot) {
            (Verdict::Failed, previous) => {
                *slot = Some(now + self.retry);
                // A parent tried again after its period and failing again is still out, not a new change.
                previous.is_none().then_some(Change::WentOut)
            }
            (Verdict::Up, Some(_)) => {
                *slot = None;
                Some(Change::CameBack)
            }
            (Verdict::Up, None) => None,
        }
    }

    /// Whether parent `index` would be tried at `now`.
    pub fn is_up(&self, index: usize, now: Instant) -> bool {
        let out = self.out_until.lock().unwrap_or_else(|e| e.into_inner());
        out.get(index)
            .is_some_and(|until| until.is_none_or(|until| now >= until))
    }
}

/// How many times `cdn_id` appears in the request's `CDN-Loop` fields: every field line, every comma-separated
/// member, case-insensitively, with any `;` parameters after it (RFC 8586 §2). Commas inside a quoted parameter
/// value do not split members. `None` when a line leaves a quoted string open: such a value would swallow the
/// hops appended after it, so it is refused rather than counted.
pub fn hops(headers: &HeaderMap, cdn_id: &str) -> Option<usize> {
    let mut count = 0;
    for value in headers.get_all(&CDN_LOOP) {
        for member in members(value.as_bytes()) {
            let member = member?;
            let id = member.split(|&b| b == b';').next().unwrap_or_default();
            if id.trim_ascii().eq_ignore_ascii_case(cdn_id.as_bytes()) {
                count += 1;
            }
        }
    }
    Some(count)
}

/// The comma-separated members of a list field value, commas inside quoted strings (with `\` escapes) kept;
/// `None` for a member whose quoted string never ends.
fn members(value: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    let mut rest = Some(value);
    std::iter::from_fn(move || {
        let current = rest.take().filter(|r| !r.is_empty())?;
        let (mut quoted, mut escaped) = (false, false);
        let mut end = None;
        for (i, &b) in current.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
        }
        if quoted {
            return Some(None);
        }
        let end = end.unwrap_or(current.len());
        rest = current.get(end + 1..);
        Some(Some(&current[..end]))
    })
}

/// The `CDN-Loop` value to send upstream: every value the request carried, in order, then `cdn_id` (RFC 8586:
/// each CDN appends its own).
pub fn append_hop(carried: &HeaderMap, cdn_id: &str) -> Option<http::HeaderValue> {
    let mut value = Vec::new();
    for line in carried.get_all(&CDN_LOOP) {
        let line = line.as_bytes().trim_ascii();
        if !line.is_empty() {
            value.extend_from_slice(line);
            value.extend_from_slice(b", ");
        }
    }
    value.extend_from_slice(cdn_id.as_bytes());
    http::HeaderValue::from_bytes(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loop_fields(lines: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in lines {
            map.append(CDN_LOOP, http::HeaderValue::from_str(line).unwrap());
        }
        map
    }

    #[test]
    fn hops_count_every_spelling() {
        let table: [(&[&str], usize); 10] = [
            (&[], 0),
            (&["video-cdn"], 1),
            (&["VIDEO-CDN"], 1),
            (&["  video-cdn  "], 1),
            (&["video-cdn, video-cdn,video-cdn"], 3),
            (&["video-cdn", "Video-Cdn", "other, video-cdn"], 3),
            (&["video-cdn; abc=def, other-cdn; x=\"a, video-cdn\""], 1),
            (
                &["video-cdn ; x=1 ; y=\"q\\\"uote, video-cdn\", video-cdn"],
                2,
            ),
            (&["video-cdn-2, xvideo-cdn, video-cdn.example"], 0),
            (&[",, , video-cdn,,"], 1),
        ];
        for (lines, expected) in table {
            assert_eq!(
                hops(&loop_fields(lines), "video-cdn"),
                Some(expected),
                "{lines:?}"
            );
        }
        // An open quote would hide every hop appended after it.
        for open in ["other; x=\"abc, video-cdn", "a, b; x=\"\\\", video-cdn"] {
            assert_eq!(hops(&loop_fields(&[open]), "video-cdn"), None, "{open}");
        }
        // A field the client spells in another case is the same field.
        let mut map = HeaderMap::new();
        map.append(
            http::HeaderName::from_bytes(b"CDN-LOOP").unwrap(),
            http::HeaderValue::from_static("video-cdn"),
        );
        assert_eq!(hops(&map, "video-cdn"), Some(1));
    }

    #[test]
    fn a_hop_is_appended_to_what_was_carried() {
        let appended = |lines: &[&str]| append_hop(&loop_fields(lines), "video-cdn").unwrap();
        assert_eq!(appended(&[]), "video-cdn");
        assert_eq!(appended(&["other"]), "other, video-cdn");
        assert_eq!(appended(&["a, b", " c "]), "a, b, c, video-cdn");
        let twice = loop_fields(&[appended(&["video-cdn"]).to_str().unwrap()]);
        assert_eq!(hops(&twice, "video-cdn"), Some(2));
    }

    fn parents(n: usize) -> Parents {
        let list = (0..n)
            .map(|i| {
                let url = format!("http://10.0.0.{i}:8080");
                Parent::new(&url, &format!("10.0.0.{i}:8080"))
            })
            .collect();
        Parents::new(list, Duration::from_secs(10))
    }

    #[test]
    fn keys_prefer_one_parent_and_spread() {
        let p = parents(3);
        let now = Instant::now();
        let order = p.order("/t/seg-1.ts", now);
        assert_eq!(order.len(), 3);
        assert_eq!(order, p.order("/t/seg-1.ts", now), "stable");
        let mut firsts = [0usize; 3];
        for k in 0..3000 {
            firsts[p.order(&format!("/t/seg-{k}.ts"), now)[0]] += 1;
        }
        assert!(firsts.iter().all(|&n| n > 800), "{firsts:?}");
        // Another child with the same parents in another order ranks them alike.
        let mut list = p.all().to_vec();
        list.reverse();
        let reversed = Parents::new(list, Duration::from_secs(10));
        let first = reversed.order("/t/seg-1.ts", now)[0];
        assert_eq!(reversed.get(first).url, p.get(order[0]).url);
    }

    #[test]
    fn a_failed_parent_is_out_for_the_retry_period() {
        let p = parents(2);
        let t0 = Instant::now();
        let key = "/t/a.ts";
        let order = p.order(key, t0);
        let (first, second) = (order[0], order[1]);
        assert_eq!(p.record(first, Verdict::Failed, t0), Some(Change::WentOut));
        assert!(!p.is_up(first, t0));
        // Its keys go to the next parent meanwhile; the other parent's keys are not moved.
        assert_eq!(p.order(key, t0 + Duration::from_secs(9)), [second]);
        // Failing again while out (a request that had chosen it before) is no new change.
        assert_eq!(p.record(first, Verdict::Failed, t0), None);
        // After the period it is tried again, first for its keys, and an answer brings it back.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.order(key, later), [first, second]);
        assert!(p.is_up(first, later));
        assert_eq!(p.record(first, Verdict::Up, later), Some(Change::CameBack));
        assert_eq!(p.record(first, Verdict::Up, later), None);
        // Tried again and failing again: out for another period from then.
        assert_eq!(
            p.record(first, Verdict::Failed, later),
            Some(Change::WentOut)
        );
        assert_eq!(p.order(key, later + Duration::from_secs(5)), [second]);
        // Every parent out: nothing to try (the caller goes to the origin).
        p.record(second, Verdict::Failed, later);
        assert!(p.order(key, later).is_empty());
        assert_eq!(p.record(7, Verdict::Failed, later), None, "no such parent");
    }

    #[test]
    fn statuses_judge_the_parent_not_the_request() {
        use http::StatusCode as S;
        for (status, expected) in [
            (S::OK, Verdict::Up),
            (S::PARTIAL_CONTENT, Verdict::Up),
            (S::NOT_MODIFIED, Verdict::Up),
            (S::NOT_FOUND, Verdict::Up),
            (S::FORBIDDEN, Verdict::Up),
            (S::LOOP_DETECTED, Verdict::Up),
            (S::INTERNAL_SERVER_ERROR, Verdict::Failed),
            (S::BAD_GATEWAY, Verdict::Failed),
            (S::SERVICE_UNAVAILABLE, Verdict::Failed),
            (S::GATEWAY_TIMEOUT, Verdict::Failed),
        ] {
            assert_eq!(verdict(status), expected, "{status}");
        }
    }
}
