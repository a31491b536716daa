//! `Cache-Control`, its targeted fields (RFC 9213 `CDN-Cache-Control`) and the storage decision
//! (edge::cache::freshness): any response head gets a decision; a targeted field replaces `Cache-Control`
//! wholly; `no-store` and `private` are never stored; a stored lifetime stays within delta-seconds and has no
//! stale window when stale is forbidden; request directives parse alike.
//!
//! Input: 2 bytes of status, 1 of flags, 8 of response time, then the head as lines of `name: value`.

use std::time::{Duration, UNIX_EPOCH};

use edge::cache::freshness::{
    CacheControl, DELTA_SECONDS_MAX, NotStored, Policy, client_accepts_stale, decide, fresh_enough,
    request_directives,
};
use fuzz::{head, take_u8, take_u64};
use http::header;

fn main() {
    let policy = Policy::default();
    afl::fuzz!(|data: &[u8]| {
        let (hi, rest) = take_u8(data);
        let (lo, rest) = take_u8(rest);
        let (flags, rest) = take_u8(rest);
        let (now, rest) = take_u64(rest);
        let status = [
            200,
            206,
            404,
            301,
            410,
            500,
            204,
            100 + (u16::from(hi) << 8 | u16::from(lo)) % 500,
        ][usize::from(hi % 8)];
        let authorized = flags & 1 == 1;
        let response_time = UNIX_EPOCH + Duration::from_secs(now % (1 << 40));
        let request_time = response_time - Duration::from_secs(u64::from(flags >> 1));
        let headers = head(rest);
        let text = String::from_utf8_lossy(rest);
        for value in [text.as_ref(), text.lines().next().unwrap_or("")] {
            let cc = CacheControl::parse(value);
            for secs in [
                cc.max_age,
                cc.s_maxage,
                cc.stale_while_revalidate,
                cc.stale_if_error,
                cc.min_fresh,
            ] {
                assert!(secs.is_none_or(|s| s <= DELTA_SECONDS_MAX));
            }
            assert!(
                cc.no_cache_fields
                    .iter()
                    .all(|f| *f == f.to_ascii_lowercase())
            );
        }
        let decision = decide(
            &policy,
            status,
            &headers,
            authorized,
            request_time,
            response_time,
        );
        // The directives that apply (RFC 9213 §2.1): the targeted field's when it has a non-empty text value,
        // and then Cache-Control and Expires are ignored; else Cache-Control's.
        let cdn = header::HeaderName::from_static("cdn-cache-control");
        let targeted = edge::cache::freshness::joined(&headers, &cdn);
        let cc = match &targeted {
            Some(value) if !value.trim().is_empty() => CacheControl::parse(value),
            _ => CacheControl::from_headers(&headers, &header::CACHE_CONTROL).unwrap_or_default(),
        };
        let without = |name: header::HeaderName| {
            let mut head = headers.clone();
            head.remove(name);
            decide(
                &policy,
                status,
                &head,
                authorized,
                request_time,
                response_time,
            )
        };
        match &targeted {
            Some(value) if !value.trim().is_empty() => {
                assert_eq!(
                    without(header::CACHE_CONTROL),
                    decision,
                    "a targeted field replaces Cache-Control"
                );
                assert_eq!(
                    without(header::EXPIRES),
                    decision,
                    "a targeted field replaces Expires"
                );
            }
            Some(_) => assert_eq!(without(cdn), decision, "an empty targeted field is ignored"),
            None => {}
        }
        match &decision {
            Ok(lifetime) => {
                assert!(!(cc.no_store && !cc.must_understand), "no-store stored");
                assert!(!cc.private, "private stored");
                assert!(!authorized || cc.public || cc.must_revalidate || cc.s_maxage.is_some());
                assert!(
                    lifetime.ttl_secs <= DELTA_SECONDS_MAX,
                    "ttl {}",
                    lifetime.ttl_secs
                );
                if lifetime.no_stale {
                    assert_eq!(
                        (
                            lifetime.stale_while_revalidate_secs,
                            lifetime.stale_if_error_secs
                        ),
                        (0, 0)
                    );
                }
                if cc.no_cache {
                    assert_eq!(lifetime.ttl_secs, 0);
                }
                let request = request_directives(&headers);
                let _ = fresh_enough(&request, lifetime.initial_age, lifetime.ttl_secs);
                let staleness = lifetime.initial_age.saturating_sub(lifetime.ttl_secs);
                if client_accepts_stale(&request, staleness, lifetime.no_stale) {
                    assert!(!lifetime.no_stale);
                }
            }
            Err(NotStored::Status) => {}
            Err(_) => assert!(edge::cache::freshness::understood(status)),
        }
    });
}
