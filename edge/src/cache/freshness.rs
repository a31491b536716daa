//! Whether an upstream response may be stored and for how long (RFC 9111 §3, §4.2; RFC 9213 targeted fields;
//! RFC 5861 stale windows), and what a client's request directives ask for (§5.2.1). Pure functions: the
//! response head and the clock are passed in.
//!
//! Choices where the RFCs leave room:
//! - A duplicated delta-seconds directive, an invalid one, or two `Expires` lines make the response stale at
//!   once (§4.2.1 allows first-wins or stale; stale is the safe reading). A number too large is 2^31 (§1.2.2).
//! - Stored statuses: 200 and 206 as slices; 204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 451 and 501 as
//!   whole small responses. 203 and everything else are passed, never stored (not storing is always allowed).
//! - Heuristic freshness (§4.2.2) is a configurable fraction of the time since `Last-Modified`, bounded; 404
//!   and 410 without explicit freshness get a short configurable negative-caching lifetime instead.
//! - `must-revalidate`, `proxy-revalidate` and `no-cache` forbid serving stale (no RFC 5861 window, no client
//!   `max-stale`). `s-maxage` implies `proxy-revalidate` (§5.2.2.10), so the configured stale defaults do not
//!   apply to it; stale windows the response itself sets still do (they are an explicit, later permission).
//! - `must-understand` with a status this cache stores overrides `no-store` (§5.2.2.3); with any other status
//!   the response is not stored.

use std::time::SystemTime;

use http::{HeaderMap, HeaderName, header};

/// A delta-seconds value too large to represent is this (RFC 9111 §1.2.2).
pub const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The directives of a `Cache-Control` value (response or request) that matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub private: bool,
    pub public: bool,
    /// `no-cache` without field names: stored, but validated before every use.
    pub no_cache: bool,
    /// `no-cache="a, b"`: stored without these fields (lower case), used freely otherwise.
    pub no_cache_fields: Vec<String>,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// RFC 5861: seconds a stale response may be served while it is revalidated in the background.
    pub stale_while_revalidate: Option<u64>,
    /// RFC 5861: seconds a stale response may be served when the upstream fails.
    pub stale_if_error: Option<u64>,
    /// Request: accept a response stale by up to this many seconds (`u64::MAX` when bare).
    pub max_stale: Option<u64>,
    /// Request: only a response still fresh for this many seconds.
    pub min_fresh: Option<u64>,
    /// Request: answer from the cache or with 504.
    pub only_if_cached: bool,
}

impl CacheControl {
    /// Parses one or more `Cache-Control` values (several field lines are one comma-separated list). Directive
    /// names are case-insensitive; arguments may be quoted; unknown directives are ignored.
    pub fn parse(value: &str) -> Self {
        let mut cc = CacheControl::default();
        for directive in split_list(value) {
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(unquote(a.trim()))),
                None => (directive, None),
            };
            let seconds = |seen: Option<u64>| {
                if seen.is_some() {
                    return Some(0); // duplicated: stale (§4.2.1)
                }
                Some(arg.as_deref().map_or(0, delta_seconds))
            };
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "private" => cc.private = true,
                "public" => cc.public = true,
                "no-cache" => match arg.as_deref().filter(|a| !a.trim().is_empty()) {
                    Some(fields) => cc
                        .no_cache_fields
                        .extend(split_list(fields).map(|f| f.to_ascii_lowercase())),
                    None => cc.no_cache = true,
                },
                "must-revalidate" => cc.must_revalidate = true,
                "proxy-revalidate" => cc.proxy_revalidate = true,
                "must-understand" => cc.must_understand = true,
                "max-age" => cc.max_age = seconds(cc.max_age),
                "s-maxage" => cc.s_maxage = seconds(cc.s_maxage),
                "stale-while-revalidate" => {
                    cc.stale_while_revalidate = seconds(cc.stale_while_revalidate)
                }
                "stale-if-error" => cc.stale_if_error = seconds(cc.stale_if_error),
                "max-stale" => cc.max_stale = Some(arg.as_deref().map_or(u64::MAX, delta_seconds)),
                "min-fresh" => cc.min_fresh = seconds(cc.min_fresh),
                "only-if-cached" => cc.only_if_cached = true,
                _ => {}
            }
        }
        cc
    }

    /// Parses every `Cache-Control` line of `headers` as one list.
    pub fn from_headers(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        joined(headers, name).map(|v| CacheControl::parse(&v))
    }

    /// Serving this response stale is forbidden (§4.2.4).
    pub fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.no_cache
    }
}

/// The values of every `name` line joined with ", " (one list, RFC 9110 §5.3); `None` when absent.
pub fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let first = values.next()?;
    Some(values.fold(first.to_string(), |mut all, v| {
        all.push_str(", ");
        all.push_str(v);
        all
    }))
}

/// The comma-separated items of a list, commas inside quoted strings kept, empty items dropped.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut items = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in value.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                items.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&value[start..]);
    items.into_iter().map(str::trim).filter(|s| !s.is_empty())
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => value.to_string(),
    }
}

/// delta-seconds (§1.2.2): digits only; invalid is 0 (stale), too large is 2^31.
fn delta_seconds(text: &str) -> u64 {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    text.parse::<u64>()
        .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX))
}

/// Statuses stored as whole small responses (everything but 200/206, which are stored as slices).
pub const WHOLE_STATUSES: [u16; 12] = [204, 300, 301, 302, 307, 308, 404, 405, 410, 414, 451, 501];

/// Statuses heuristically cacheable by default (RFC 9110 §15.1).
const HEURISTIC_STATUSES: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Whether this cache stores responses with `status` at all.
pub fn understood(status: u16) -> bool {
    status == 200 || status == 206 || WHOLE_STATUSES.contains(&status)
}

/// How this edge computes lifetimes the upstream does not give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Targeted cache-control fields (RFC 9213), in priority order.
    pub targeted_fields: Vec<HeaderName>,
    /// Heuristic lifetime as a percentage of the time since `Last-Modified` (0 disables heuristics).
    pub heuristic_percent: u64,
    /// Upper bound on a heuristic lifetime.
    pub heuristic_max_secs: u64,
    /// Lifetime of a 404 or 410 without explicit freshness (0: not stored).
    pub negative_ttl_secs: u64,
    /// RFC 5861 windows when the response gives none: (stale-while-revalidate, stale-if-error).
    pub stale_defaults: (u64, u64),
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            targeted_fields: vec![HeaderName::from_static("cdn-cache-control")],
            heuristic_percent: 10,
            heuristic_max_secs: 86_400,
            negative_ttl_secs: 10,
            stale_defaults: (0, 300),
        }
    }
}

/// Why a response is not stored (for the log and `Cache-Status` detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it (§3.5).
    Authorization,
    /// Neither explicit freshness, nor a heuristic, nor a validator to revalidate with.
    NoFreshness,
    VaryStar,
}

impl NotStored {
    /// The response itself forbids sharing it, whatever the request: `no-store`, `private`, `Vary: *`. Only
    /// these make a URL hit-for-pass; a status (the client's own 416, an upstream's 5xx) or a missing lifetime
    /// says nothing about the next request.
    pub fn is_never_shared(self) -> bool {
        matches!(
            self,
            NotStored::NoStore | NotStored::Private | NotStored::VaryStar
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::Authorization => "authorization",
            NotStored::NoFreshness => "no-freshness",
            NotStored::VaryStar => "vary-star",
        }
    }
}

/// The freshness of a response that may be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    pub ttl_secs: u64,
    /// The age the response already had when received (§4.2.3).
    pub initial_age: u64,
    pub stale_while_revalidate_secs: u64,
    pub stale_if_error_secs: u64,
    /// Never served stale: no RFC 5861 window, no client `max-stale`.
    pub no_stale: bool,
    /// The lifetime is a heuristic (§4.2.2), not given by the upstream.
    pub heuristic: bool,
    /// Response fields stored without (`no-cache="…"`), lower case.
    pub strip_fields: Vec<String>,
}

/// Decides whether a response with `status` and `headers` may be stored by this shared cache, and its
/// freshness. `authorized` says the request carried `Authorization`; `request_time`/`response_time` bracket the
/// upstream exchange.
pub fn decide(
    policy: &Policy,
    status: u16,
    headers: &HeaderMap,
    authorized: bool,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Result<Lifetime, NotStored> {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    // RFC 9213 §2.1: the first targeted field with a non-empty value replaces Cache-Control wholly for this
    // cache; an empty one is as if absent.
    let targeted = policy
        .targeted_fields
        .iter()
        .find_map(|name| joined(headers, name).filter(|v| !v.trim().is_empty()));
    let is_targeted = targeted.is_some();
    let cc = match targeted {
        Some(value) => CacheControl::parse(&value),
        None => CacheControl::from_headers(headers, &header::CACHE_CONTROL).unwrap_or_default(),
    };
    if !understood(status) {
        return Err(NotStored::Status);
    }
    if cc.no_store && !cc.must_understand {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    if authorized && !(cc.public || cc.must_revalidate || cc.s_maxage.is_some()) {
        return Err(NotStored::Authorization);
    }
    if joined(headers, &header::VARY).is_some_and(|v| split_list(&v).any(|f| f == "*")) {
        return Err(NotStored::VaryStar);
    }
    let date = text(&header::DATE).and_then(shared::conditional::parse_http_date);
    let explicit = if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        Some(secs)
    } else if is_targeted {
        None // RFC 9213 §2.1: a targeted field's lifetime comes from its own directives only
    } else {
        expires_ttl(headers, date, response_time)
    };
    let mut heuristic = false;
    let ttl = match explicit {
        Some(ttl) => ttl,
        None if cc.no_cache => 0,
        None if (status == 404 || status == 410) && policy.negative_ttl_secs > 0 => {
            policy.negative_ttl_secs
        }
        None if HEURISTIC_STATUSES.contains(&status) || cc.public => {
            let since_modified = text(&header::LAST_MODIFIED)
                .and_then(shared::conditional::parse_http_date)
                .and_then(|lm| date.unwrap_or(response_time).duration_since(lm).ok());
            match since_modified {
                Some(d) if policy.heuristic_percent > 0 => {
                    heuristic = true;
                    (d.as_secs() * policy.heuristic_percent / 100).min(policy.heuristic_max_secs)
                }
                _ => return Err(NotStored::NoFreshness),
            }
        }
        None => return Err(NotStored::NoFreshness),
    };
    let ttl = if cc.no_cache { 0 } else { ttl };
    let no_stale = cc.forbids_stale();
    // s-maxage implies proxy-revalidate: the configured stale defaults stand back, explicit windows do not.
    let defaults = if cc.s_maxage.is_some() {
        (0, 0)
    } else {
        policy.stale_defaults
    };
    let window = |explicit: Option<u64>, default: u64| {
        if no_stale {
            0
        } else {
            explicit.unwrap_or(default)
        }
    };
    Ok(Lifetime {
        ttl_secs: ttl,
        initial_age: initial_age(text(&header::AGE), date, request_time, response_time),
        stale_while_revalidate_secs: window(cc.stale_while_revalidate, defaults.0),
        stale_if_error_secs: window(cc.stale_if_error, defaults.1),
        no_stale,
        heuristic,
        strip_fields: cc.no_cache_fields,
    })
}

/// The lifetime from `Expires` (§4.2.1): relative to `Date` (or the response time); invalid or duplicated
/// means already expired.
fn expires_ttl(headers: &HeaderMap, date: Option<SystemTime>, now: SystemTime) -> Option<u64> {
    let mut lines = headers.get_all(header::EXPIRES).iter();
    let first = lines.next()?;
    if lines.next().is_some() {
        return Some(0);
    }
    let Some(expires) = first
        .to_str()
        .ok()
        .and_then(shared::conditional::parse_http_date)
    else {
        return Some(0);
    };
    Some(
        expires
            .duration_since(date.unwrap_or(now))
            .map_or(0, |d| d.as_secs().min(DELTA_SECONDS_MAX)),
    )
}

/// The age of a response when it was received (RFC 9111 §4.2.3): the larger of the apparent age (response time
/// minus `Date`) and the corrected `Age` (`Age` plus the response delay), in whole seconds.
pub fn initial_age(
    age: Option<&str>,
    date: Option<SystemTime>,
    request_time: SystemTime,
    response_time: SystemTime,
) -> u64 {
    let apparent = date
        .and_then(|date| response_time.duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    // A non-numeric Age is ignored; an overflowing one is 2^31 (§1.2.2).
    let age_value = age
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
        .map_or(0, delta_seconds);
    let delay = response_time
        .duration_since(request_time)
        .map_or(0, |d| d.as_secs());
    apparent.max(age_value.saturating_add(delay))
}

/// A response's lifetime left as the `Cache-Status` `ttl=` value (negative when stale).
pub fn ttl_param(ttl_secs: u64, age: u64) -> i64 {
    let ttl = i64::try_from(ttl_secs).unwrap_or(i64::MAX);
    ttl.saturating_sub(i64::try_from(age).unwrap_or(i64::MAX))
}

/// How much a client's `max-stale` lets a stale response be served, given how stale it is.
pub fn client_accepts_stale(request: &CacheControl, staleness: u64, no_stale: bool) -> bool {
    !no_stale && request.max_stale.is_some_and(|max| staleness <= max)
}

/// Whether a fresh response is fresh enough for a request's `max-age`/`min-fresh` (§5.2.1.1, §5.2.1.3). Ages are
/// whole seconds rounded down, so a response of age `max` may be older than `max`: it is not fresh enough (and
/// `max-age=0` always revalidates, as clients mean it to).
pub fn fresh_enough(request: &CacheControl, age: u64, ttl_secs: u64) -> bool {
    let max_age_ok = request.max_age.is_none_or(|max| age < max);
    let min_fresh_ok = request
        .min_fresh
        .is_none_or(|min| ttl_secs.saturating_sub(age) >= min);
    max_age_ok && min_fresh_ok && !request.no_cache
}

/// Request directives from `Cache-Control`, with `Pragma: no-cache` read as `no-cache` when there is no
/// `Cache-Control` (RFC 9111 §5.4).
pub fn request_directives(headers: &HeaderMap) -> CacheControl {
    match CacheControl::from_headers(headers, &header::CACHE_CONTROL) {
        Some(cc) => cc,
        None => CacheControl {
            no_cache: joined(headers, &header::PRAGMA)
                .is_some_and(|p| split_list(&p).any(|d| d.eq_ignore_ascii_case("no-cache"))),
            ..CacheControl::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    const NOW: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn date(secs: u64) -> String {
        shared::conditional::format_http_date(at(secs))
    }

    fn head(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in lines {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn decide_at(
        status: u16,
        lines: &[(&str, &str)],
        authorized: bool,
    ) -> Result<Lifetime, NotStored> {
        decide(
            &Policy::default(),
            status,
            &head(lines),
            authorized,
            at(NOW),
            at(NOW),
        )
    }

    fn ttl(lines: &[(&str, &str)]) -> Option<u64> {
        decide_at(200, lines, false).ok().map(|l| l.ttl_secs)
    }

    #[test]
    fn cache_control_lifetimes_and_odd_inputs() {
        let table: &[(&str, Option<u64>)] = &[
            ("public, max-age=31536000, immutable", Some(31_536_000)),
            ("max-age=60, s-maxage=10", Some(10)), // s-maxage wins for a shared cache
            ("s-maxage=10, max-age=60", Some(10)),
            ("MAX-AGE=5", Some(5)),     // names are case-insensitive
            ("max-age=\"7\"", Some(7)), // quoted argument
            ("max-age=abc", Some(0)),   // invalid: stale
            ("max-age=-5", Some(0)),    // negative: invalid
            ("max-age=", Some(0)),
            ("max-age", Some(0)),
            ("max-age=5, max-age=10", Some(0)), // duplicate: stale
            ("max-age=99999999999999999999", Some(DELTA_SECONDS_MAX)), // too large: 2^31
            ("max-age=4294967296", Some(DELTA_SECONDS_MAX)),
            (" max-age = 9 ,,", Some(9)), // whitespace and empty items
            ("no-store, max-age=60", None),
            ("NO-STORE", None),
            ("private, max-age=60", None),
            ("private=\"set-cookie\", max-age=60", None), // private with fields: conservative, not stored
            ("no-cache", Some(0)),
            ("no-cache, max-age=60", Some(0)),
            ("no-cache=\"Set-Cookie, X-Foo\", max-age=60", Some(60)), // field names: stored without them
            ("public", None), // no explicit freshness, no Last-Modified: nothing to base a heuristic on
            ("foo=\"a,max-age=1\", max-age=30", Some(30)), // a comma inside quotes does not split
        ];
        for (cc, want) in table {
            assert_eq!(ttl(&[("cache-control", cc)]), *want, "{cc}");
        }
        // Two Cache-Control lines are one list.
        assert_eq!(
            ttl(&[("cache-control", "public"), ("cache-control", "max-age=9")]),
            Some(9)
        );
        assert_eq!(
            ttl(&[
                ("cache-control", "max-age=9"),
                ("cache-control", "max-age=9")
            ]),
            Some(0)
        );
        let fields = decide_at(
            200,
            &[(
                "cache-control",
                "no-cache=\"Set-Cookie, X-Foo\", max-age=60",
            )],
            false,
        )
        .unwrap()
        .strip_fields;
        assert_eq!(fields, ["set-cookie", "x-foo"]);
    }

    #[test]
    fn expires_relative_to_date() {
        let d = date(NOW);
        type Row<'a> = (Vec<(&'a str, String)>, Option<u64>);
        let table: Vec<Row> = vec![
            (
                vec![("expires", date(NOW + 60)), ("date", d.clone())],
                Some(60),
            ),
            (
                vec![("expires", date(NOW - 60)), ("date", d.clone())],
                Some(0),
            ), // in the past
            (vec![("expires", "0".into()), ("date", d.clone())], Some(0)), // invalid: expired
            (
                vec![("expires", "Sun, 06 Nov 1994 08:49:37".into())],
                Some(0),
            ), // no zone: invalid
            (vec![("expires", date(NOW + 60))], Some(60)),                 // no Date: response time
            (
                vec![("expires", date(NOW + 60)), ("date", date(NOW - 60))],
                Some(120),
            ), // relative to Date
            (
                vec![("expires", date(NOW + 60)), ("expires", date(NOW + 60))],
                Some(0),
            ), // duplicated
            (
                vec![
                    ("expires", date(NOW + 3600)),
                    ("cache-control", "max-age=5".into()),
                ],
                Some(5), // max-age wins over Expires
            ),
            (
                vec![("expires", "Sunday, 06-Nov-94 08:50:37 GMT".into())],
                Some(60),
            ), // RFC 850 form
            (
                vec![("expires", "Sun Nov  6 08:50:37 1994".into())],
                Some(60),
            ), // asctime form
        ];
        for (lines, want) in table {
            let lines: Vec<(&str, &str)> = lines.iter().map(|(n, v)| (*n, v.as_str())).collect();
            assert_eq!(ttl(&lines), want, "{lines:?}");
        }
    }

    #[test]
    fn statuses() {
        // Explicit freshness: every status this cache understands is stored; others never are.
        for status in [
            200, 204, 206, 300, 301, 302, 307, 308, 404, 405, 410, 414, 451, 501,
        ] {
            assert!(
                decide_at(status, &[("cache-control", "max-age=60")], false).is_ok(),
                "{status}"
            );
        }
        for status in [
            100, 201, 202, 203, 303, 304, 400, 401, 403, 500, 502, 503, 504, 599,
        ] {
            assert_eq!(
                decide_at(status, &[("cache-control", "max-age=60")], false),
                Err(NotStored::Status),
                "{status}"
            );
        }
        // Negative caching: 404 and 410 without freshness get the configured short lifetime.
        for status in [404, 410] {
            assert_eq!(
                decide_at(status, &[], false).unwrap().ttl_secs,
                10,
                "{status}"
            );
        }
        // 302 and 307 are not heuristically cacheable: without explicit freshness they are not stored.
        let lm = date(NOW - 1000);
        for status in [302, 307] {
            assert_eq!(
                decide_at(status, &[("last-modified", &lm)], false),
                Err(NotStored::NoFreshness)
            );
        }
        // …unless `public` allows a heuristic.
        assert_eq!(
            decide_at(
                302,
                &[("last-modified", &lm), ("cache-control", "public")],
                false
            )
            .unwrap()
            .ttl_secs,
            100
        );
    }

    #[test]
    fn must_understand() {
        let cc = [("cache-control", "no-store, must-understand, max-age=60")];
        assert_eq!(
            decide_at(200, &cc, false).unwrap().ttl_secs,
            60,
            "understood: no-store ignored"
        );
        assert_eq!(decide_at(203, &cc, false), Err(NotStored::Status));
        assert_eq!(decide_at(299, &cc, false), Err(NotStored::Status));
    }

    #[test]
    fn heuristic_freshness() {
        let lm = |ago| date(NOW - ago);
        let l = decide_at(200, &[("last-modified", &lm(1000))], false).unwrap();
        assert_eq!((l.ttl_secs, l.heuristic), (100, true)); // 10 % of the time since modification
        let capped = decide_at(200, &[("last-modified", &lm(100 * 86_400))], false).unwrap();
        assert_eq!(capped.ttl_secs, 86_400, "bounded");
        // Relative to Date when given.
        let l = decide_at(
            200,
            &[("last-modified", &lm(1000)), ("date", &date(NOW - 500))],
            false,
        );
        assert_eq!(l.unwrap().ttl_secs, 50);
        // Disabled by configuration.
        let off = Policy {
            heuristic_percent: 0,
            ..Policy::default()
        };
        let h = head(&[("last-modified", &lm(1000))]);
        assert_eq!(
            decide(&off, 200, &h, false, at(NOW), at(NOW)),
            Err(NotStored::NoFreshness)
        );
        // Not when explicit freshness exists, nor for a Last-Modified in the future or invalid.
        let l = decide_at(
            200,
            &[("last-modified", &lm(1000)), ("cache-control", "max-age=3")],
            false,
        );
        assert_eq!(
            (l.as_ref().unwrap().ttl_secs, l.unwrap().heuristic),
            (3, false)
        );
        assert!(decide_at(200, &[("last-modified", &date(NOW + 10))], false).is_err());
        assert!(decide_at(200, &[("last-modified", "yesterday")], false).is_err());
    }

    #[test]
    fn authorization_requests() {
        // §3.5: shared only with public, must-revalidate or s-maxage.
        let table: &[(&str, bool)] = &[
            ("max-age=60", false),
            ("public, max-age=60", true),
            ("must-revalidate, max-age=60", true),
            ("s-maxage=60", true),
            ("no-cache=\"x\", max-age=60", false),
        ];
        for (cc, stored) in table {
            let r = decide_at(200, &[("cache-control", cc)], true);
            assert_eq!(r.is_ok(), *stored, "{cc}");
            if !stored {
                assert_eq!(r, Err(NotStored::Authorization));
            }
        }
    }

    #[test]
    fn stale_serving_permissions() {
        let l = |cc: &str| decide_at(200, &[("cache-control", cc)], false).unwrap();
        let windows = |l: Lifetime| {
            (
                l.stale_while_revalidate_secs,
                l.stale_if_error_secs,
                l.no_stale,
            )
        };
        assert_eq!(windows(l("max-age=60")), (0, 300, false)); // configured defaults
        assert_eq!(
            windows(l(
                "max-age=60, stale-while-revalidate=30, STALE-IF-ERROR=\"600\""
            )),
            (30, 600, false)
        );
        assert_eq!(
            windows(l("max-age=60, must-revalidate, stale-if-error=60")),
            (0, 0, true)
        );
        assert_eq!(windows(l("max-age=60, proxy-revalidate")), (0, 0, true));
        assert_eq!(windows(l("max-age=60, no-cache")), (0, 0, true));
        assert_eq!(windows(l("s-maxage=60")), (0, 0, false)); // implied proxy-revalidate: no defaults
        assert_eq!(windows(l("s-maxage=60, stale-if-error=9")), (0, 9, false)); // explicit permission
        assert_eq!(
            windows(l("max-age=60, stale-while-revalidate=x")),
            (0, 300, false)
        );
    }

    #[test]
    fn targeted_fields_override_cache_control() {
        type Row<'a> = (&'a [(&'a str, &'a str)], Option<u64>);
        let table: &[Row] = &[
            (&[("cache-control", "max-age=5")], Some(5)), // no targeted field: Cache-Control decides
            (
                &[
                    ("cdn-cache-control", "max-age=60"),
                    ("cache-control", "no-store"),
                ],
                Some(60),
            ),
            (&[("CDN-Cache-Control", "s-maxage=5, max-age=60")], Some(5)),
            (
                &[
                    ("cdn-cache-control", "no-store"),
                    ("cache-control", "max-age=60"),
                ],
                None,
            ),
            (&[("cdn-cache-control", "private")], None),
            (&[("cdn-cache-control", "no-cache")], Some(0)),
            // Present but without a lifetime: Expires is not consulted, and there is no heuristic base.
            (
                &[
                    ("cdn-cache-control", "public"),
                    ("expires", "Sun, 06 Nov 1994 09:49:37 GMT"),
                ],
                None,
            ),
        ];
        for (lines, want) in table {
            assert_eq!(ttl(lines), *want, "{lines:?}");
        }
        let two = Policy {
            targeted_fields: vec![
                HeaderName::from_static("edge-cache-control"),
                HeaderName::from_static("cdn-cache-control"),
            ],
            ..Policy::default()
        };
        let h = head(&[
            ("cdn-cache-control", "max-age=7"),
            ("edge-cache-control", "max-age=1"),
        ]);
        assert_eq!(
            decide(&two, 200, &h, false, at(NOW), at(NOW))
                .unwrap()
                .ttl_secs,
            1
        );
        let h = head(&[("cdn-cache-control", "max-age=7")]);
        assert_eq!(
            decide(&two, 200, &h, false, at(NOW), at(NOW))
                .unwrap()
                .ttl_secs,
            7
        );
    }

    #[test]
    fn vary_star_is_never_stored() {
        assert_eq!(
            decide_at(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept, *")],
                false
            ),
            Err(NotStored::VaryStar)
        );
        assert!(
            decide_at(
                200,
                &[("cache-control", "max-age=60"), ("vary", "Accept")],
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn initial_age_follows_rfc9111_4_2_3() {
        let table = [
            // (Age, Date, request time, response time, initial age)
            (None, None, 1000, 1000, 0),
            (Some("30"), None, 1000, 1000, 30),
            (Some("30"), None, 1000, 1002, 32), // plus the response delay
            (None, Some(990), 1000, 1000, 10),  // apparent age from Date
            (Some("5"), Some(990), 1000, 1000, 10), // the larger of the two
            (None, Some(2000), 1000, 1000, 0),  // a Date in the future: no negative age
            (Some("abc"), None, 1000, 1000, 0), // invalid Age: ignored
            (Some("-5"), None, 1000, 1000, 0),
            (Some(" 7 "), None, 1000, 1000, 7),
            (
                Some("99999999999999999999"),
                None,
                1000,
                1000,
                DELTA_SECONDS_MAX,
            ),
        ];
        for (age, date, request, response, want) in table {
            assert_eq!(
                initial_age(age, date.map(at), at(request), at(response)),
                want,
                "{age:?} {date:?}"
            );
        }
        let l = decide_at(
            200,
            &[("cache-control", "max-age=60"), ("age", "20")],
            false,
        )
        .unwrap();
        assert_eq!(l.initial_age, 20);
    }

    #[test]
    fn request_directives_table() {
        let r = |v: &str| request_directives(&head(&[("cache-control", v)]));
        assert_eq!(r("max-stale").max_stale, Some(u64::MAX));
        assert_eq!(r("max-stale=30").max_stale, Some(30));
        assert_eq!(r("min-fresh=5").min_fresh, Some(5));
        assert!(r("ONLY-IF-CACHED").only_if_cached);
        assert!(r("no-cache").no_cache);
        assert!(r("no-store").no_store);
        assert!(request_directives(&head(&[("pragma", "no-cache")])).no_cache);
        // Pragma is ignored when Cache-Control is present.
        assert!(
            !request_directives(&head(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-stale")
            ]))
            .no_cache
        );

        assert!(client_accepts_stale(&r("max-stale=30"), 30, false));
        assert!(!client_accepts_stale(&r("max-stale=30"), 31, false));
        assert!(client_accepts_stale(&r("max-stale"), 1 << 40, false));
        assert!(
            !client_accepts_stale(&r("max-stale"), 1, true),
            "must-revalidate wins"
        );
        assert!(!client_accepts_stale(&r(""), 0, false));

        assert!(fresh_enough(&r(""), 10, 60));
        assert!(!fresh_enough(&r("max-age=0"), 0, 60));
        assert!(fresh_enough(&r("max-age=10"), 9, 60));
        assert!(!fresh_enough(&r("max-age=10"), 10, 60));
        assert!(!fresh_enough(&r("min-fresh=51"), 10, 60));
        assert!(fresh_enough(&r("min-fresh=50"), 10, 60));
        assert!(!fresh_enough(&r("no-cache"), 0, 60));
    }

    #[test]
    fn ttl_parameter() {
        assert_eq!(ttl_param(60, 10), 50);
        assert_eq!(ttl_param(60, 70), -10);
        assert_eq!(ttl_param(0, u64::MAX), -i64::MAX);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn field_value() -> impl Strategy<Value = String> {
            prop_oneof![
                "[ -~]{0,40}",
                proptest::collection::vec(
                    prop_oneof![
                        Just("no-store".to_string()),
                        Just("private".to_string()),
                        Just("no-cache".to_string()),
                        Just("must-revalidate".to_string()),
                        Just("must-understand".to_string()),
                        Just("public".to_string()),
                        "(max-age|s-maxage|stale-while-revalidate|stale-if-error)=[0-9]{0,25}",
                        "no-cache=\"[a-z, -]{0,20}\"",
                    ],
                    0..5,
                )
                .prop_map(|d| d.join(", ")),
            ]
        }

        proptest! {
            /// Any response head gets a decision, never a panic, and a lifetime within delta-seconds.
            #[test]
            fn any_response_head_gets_a_bounded_decision(
                status in prop_oneof![Just(200u16), Just(206), Just(404), Just(301), Just(500), 100u16..600],
                cache_control in field_value(),
                cdn in proptest::option::of(field_value()),
                expires in "[ -~]{0,40}",
                age in "[0-9a-z ]{0,25}",
                date in "[ -~]{0,40}",
                last_modified in "[ -~]{0,40}",
                authorized in any::<bool>(),
            ) {
                let mut lines = vec![
                    ("cache-control", cache_control.as_str()),
                    ("expires", expires.as_str()),
                    ("age", age.as_str()),
                    ("date", date.as_str()),
                    ("last-modified", last_modified.as_str()),
                ];
                if let Some(cdn) = &cdn {
                    lines.push(("cdn-cache-control", cdn.as_str()));
                }
                let policy = Policy {
                    targeted_fields: vec![HeaderName::from_static("cdn-cache-control")],
                    ..Policy::default()
                };
                if let Ok(lifetime) = decide(&policy, status, &head(&lines), authorized, at(NOW), at(NOW)) {
                    prop_assert!(lifetime.ttl_secs <= DELTA_SECONDS_MAX);
                    let request = CacheControl::parse(&cache_control);
                    let _ = fresh_enough(&request, lifetime.initial_age, lifetime.ttl_secs);
                }
            }
        }
    }
}
