//! Freshness: whether a response may be stored and for how long, from `Cache-Control` (`no-store`, `private`,
//! `s-maxage`, `max-age`) and `Expires`, or from a targeted field such as `CDN-Cache-Control` (RFC 9213) that
//! overrides them for this cache; and the response's age when received (RFC 9111 §4.2.3). The clock is passed
//! in. Validation, heuristics and stale serving extend these functions.

use std::time::{Duration, SystemTime};

/// The directives of a `Cache-Control` value that matter here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    pub private: bool,
    pub no_cache: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    /// RFC 5861: seconds a stale response may be served while it is revalidated in the background.
    pub stale_while_revalidate: Option<u64>,
    /// RFC 5861: seconds a stale response may be served when the upstream fails.
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    /// Parses a `Cache-Control` value; unknown directives are ignored, a duplicated or invalid delta-seconds
    /// makes the directive count as 0 (the conservative reading of RFC 9111 §4.2.1).
    pub fn parse(value: &str) -> Self {
        let mut cc = CacheControl::default();
        for directive in value.split(',') {
            let directive = directive.trim();
            let (name, arg) = match directive.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (directive, None),
            };
            let seconds = || arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
            match name.to_ascii_lowercase().as_str() {
                "no-store" => cc.no_store = true,
                "private" => cc.private = true,
                "no-cache" => cc.no_cache = true,
                "max-age" => cc.max_age = Some(if cc.max_age.is_some() { 0 } else { seconds() }),
                "s-maxage" => cc.s_maxage = Some(if cc.s_maxage.is_some() { 0 } else { seconds() }),
                "stale-while-revalidate" => cc.stale_while_revalidate = Some(seconds()),
                "stale-if-error" => cc.stale_if_error = Some(seconds()),
                _ => {}
            }
        }
        cc
    }
}

/// How long a response may be served from cache, or `None` when it must not be stored.
/// `status` must be 200 or 206; `expires`/`date` are the raw header values.
pub fn storable_ttl(
    status: u16,
    cache_control: Option<&str>,
    expires: Option<&str>,
    date: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if status != 200 && status != 206 {
        return None;
    }
    let cc = cache_control.map(CacheControl::parse).unwrap_or_default();
    if cc.no_store || cc.private {
        return None;
    }
    if cc.no_cache {
        // Storable, but must be validated on every use: without validation (a later issue), zero TTL.
        return Some(Duration::ZERO);
    }
    if let Some(secs) = cc.s_maxage.or(cc.max_age) {
        return Some(Duration::from_secs(secs));
    }
    let expires = expires?;
    // An invalid Expires means already expired (RFC 9111 §5.3).
    let Some(expires) = shared::conditional::parse_http_date(expires) else {
        return Some(Duration::ZERO);
    };
    let base = date
        .and_then(shared::conditional::parse_http_date)
        .unwrap_or(now);
    Some(expires.duration_since(base).unwrap_or(Duration::ZERO))
}

/// The freshness lifetime from the first targeted field present (RFC 9213: a targeted field, when present and
/// valid, replaces `Cache-Control` for the caches it targets, wholly); `fields` are the header values of the
/// configured targeted field names, in priority order. `None` when no targeted field is present.
pub fn targeted_ttl(status: u16, fields: &[Option<&str>]) -> Option<Option<Duration>> {
    let value = fields.iter().flatten().next()?;
    let cc = CacheControl::parse(value);
    if status != 200 && status != 206 || cc.no_store || cc.private {
        return Some(None);
    }
    if cc.no_cache {
        return Some(Some(Duration::ZERO));
    }
    // RFC 9213 §2.1: s-maxage and max-age mean the same here; without either, the field gives no lifetime.
    Some(cc.s_maxage.or(cc.max_age).map(Duration::from_secs))
}

/// The age of a response when it was received (RFC 9111 §4.2.3): the larger of the apparent age (response time
/// minus `Date`) and the corrected `Age` (`Age` plus the response delay), in whole seconds.
pub fn initial_age(
    age: Option<&str>,
    date: Option<&str>,
    request_time: SystemTime,
    response_time: SystemTime,
) -> u64 {
    let apparent = date
        .and_then(shared::conditional::parse_http_date)
        .and_then(|date| response_time.duration_since(date).ok())
        .map_or(0, |d| d.as_secs());
    // A non-numeric Age is ignored; an overflowing one is as old as can be (RFC 9111 §1.2.2).
    let age_value = age
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
        .map_or(0, |a| a.parse::<u64>().unwrap_or(u64::from(u32::MAX)));
    let delay = response_time
        .duration_since(request_time)
        .map_or(0, |d| d.as_secs());
    apparent.max(age_value.saturating_add(delay))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn ttl(cc: Option<&str>, expires: Option<&str>, date: Option<&str>) -> Option<u64> {
        let now = shared::conditional::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        storable_ttl(200, cc, expires, date, now).map(|d| d.as_secs())
    }

    #[test]
    fn directives() {
        let table: &[(&str, Option<u64>)] = &[
            ("public, max-age=31536000, immutable", Some(31536000)),
            ("max-age=60, s-maxage=10", Some(10)), // s-maxage wins for a shared cache
            ("s-maxage=10, max-age=60", Some(10)),
            ("MAX-AGE=5", Some(5)),
            ("max-age=\"7\"", Some(7)),
            ("max-age=abc", Some(0)),
            ("max-age=5, max-age=10", Some(0)), // duplicate: conservative
            ("no-store, max-age=60", None),
            ("private, max-age=60", None),
            ("no-cache", Some(0)),
            ("public", None), // no explicit freshness and no Expires: not stored (heuristics come later)
        ];
        for (cc, want) in table {
            assert_eq!(ttl(Some(cc), None, None), *want, "{cc}");
        }
    }

    #[test]
    fn expires() {
        let date = Some("Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            ttl(None, Some("Sun, 06 Nov 1994 08:50:37 GMT"), date),
            Some(60)
        );
        assert_eq!(
            ttl(None, Some("Sun, 06 Nov 1994 08:49:00 GMT"), date),
            Some(0)
        ); // in the past
        assert_eq!(ttl(None, Some("0"), date), Some(0)); // invalid: expired
        assert_eq!(
            ttl(
                Some("max-age=5"),
                Some("Sun, 06 Nov 1994 09:49:37 GMT"),
                date
            ),
            Some(5)
        ); // max-age wins
        assert_eq!(
            ttl(None, Some("Sun, 06 Nov 1994 08:50:37 GMT"), None),
            Some(60)
        ); // no Date: now
    }

    #[test]
    fn rfc5861_directives() {
        let cc =
            CacheControl::parse("max-age=60, stale-while-revalidate=30, STALE-IF-ERROR=\"600\"");
        assert_eq!(
            (cc.stale_while_revalidate, cc.stale_if_error),
            (Some(30), Some(600))
        );
        let cc = CacheControl::parse("stale-while-revalidate=x");
        assert_eq!(cc.stale_while_revalidate, Some(0));
        assert_eq!(CacheControl::parse("max-age=1").stale_if_error, None);
    }

    #[test]
    fn targeted_fields_override_cache_control() {
        type Row<'a> = (&'a [Option<&'a str>], Option<Option<u64>>);
        let table: &[Row] = &[
            (&[None], None), // no targeted field: Cache-Control decides
            (&[Some("max-age=60")], Some(Some(60))),
            (&[Some("s-maxage=5, max-age=60")], Some(Some(5))),
            (&[Some("no-store")], Some(None)),
            (&[Some("private")], Some(None)),
            (&[Some("no-cache")], Some(Some(0))),
            (&[Some("public")], Some(None)), // present, but no lifetime: not stored
            (&[None, Some("max-age=7")], Some(Some(7))), // the first field present wins
            (&[Some("max-age=1"), Some("max-age=7")], Some(Some(1))),
        ];
        for (fields, want) in table {
            assert_eq!(
                targeted_ttl(200, fields).map(|t| t.map(|d| d.as_secs())),
                *want,
                "{fields:?}"
            );
        }
        assert_eq!(targeted_ttl(404, &[Some("max-age=60")]), Some(None));
    }

    #[test]
    fn initial_age_follows_rfc9111_4_2_3() {
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let date = |s| shared::conditional::format_http_date(t(s));
        let table = [
            // (Age, Date, request time, response time, initial age)
            (None, None, 1000, 1000, 0),
            (Some("30"), None, 1000, 1000, 30),
            (Some("30"), None, 1000, 1002, 32), // plus the response delay
            (None, Some(date(990)), 1000, 1000, 10), // apparent age from Date
            (Some("5"), Some(date(990)), 1000, 1000, 10), // the larger of the two
            (None, Some(date(2000)), 1000, 1000, 0), // a Date in the future: no negative age
            (Some("abc"), None, 1000, 1000, 0), // invalid Age: ignored
            (Some("-5"), None, 1000, 1000, 0),
            (
                Some("99999999999999999999"),
                None,
                1000,
                1000,
                u64::from(u32::MAX),
            ),
        ];
        for (age, date, request, response, want) in table {
            assert_eq!(
                initial_age(age, date.as_deref(), t(request), t(response)),
                want,
                "{age:?} {date:?}"
            );
        }
    }

    #[test]
    fn only_200_and_206() {
        let now = SystemTime::now();
        assert!(storable_ttl(404, Some("max-age=60"), None, None, now).is_none());
        assert!(storable_ttl(206, Some("max-age=60"), None, None, now).is_some());
    }
}
