//! `Age`, HTTP dates and validators (shared::conditional, edge::cache::freshness::initial_age): a parsed date
//! formats and parses back to itself; the initial age is at least the apparent age and the corrected `Age`,
//! capped at delta-seconds; a normalised ETag is a valid entity-tag; preconditions decide without a panic, and
//! no precondition means proceed.
//!
//! Input: 8 bytes of request time, 8 of response delay, then lines `date`, `age`, `etag`, `if-match`,
//! `if-none-match`, `if-modified-since`, `if-unmodified-since`, `if-range`.

use std::time::{Duration, UNIX_EPOCH};

use edge::cache::freshness::{DELTA_SECONDS_MAX, initial_age};
use fuzz::{fields, take_u64, text};
use shared::conditional::{
    EntityTag, Outcome, Preconditions, Validators, evaluate, format_http_date, normalize_etag,
    parse_http_date,
};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (request, rest) = take_u64(data);
        let (delay, rest) = take_u64(rest);
        let text = text(rest);
        let f = fields(&text, '\n', 8);
        // Times an edge sees: 1970 to 2^40 s, the exchange lasting up to a day.
        let request_time = UNIX_EPOCH + Duration::from_secs(request % (1 << 40));
        let response_time = request_time + Duration::from_secs(delay % 86_400);
        let date = parse_http_date(f[0]);
        if let Some(date) = date {
            let formatted = format_http_date(date);
            assert_eq!(
                parse_http_date(&formatted),
                Some(date),
                "{:?} → {formatted}",
                f[0]
            );
        }
        let age = initial_age(Some(f[1]), date, request_time, response_time);
        let apparent = date
            .and_then(|d| response_time.duration_since(d).ok())
            .map_or(0, |d| d.as_secs());
        assert!(age >= apparent);
        let age_value = f[1].trim();
        if !age_value.is_empty() && age_value.bytes().all(|b| b.is_ascii_digit()) {
            let value = age_value
                .parse::<u64>()
                .map_or(DELTA_SECONDS_MAX, |n| n.min(DELTA_SECONDS_MAX));
            assert!(age >= value, "Age {age_value} gave {age}");
        }
        assert!(age <= apparent.max(DELTA_SECONDS_MAX + delay % 86_400));
        assert_eq!(
            initial_age(None, None, request_time, response_time),
            delay % 86_400
        );
        // Validators.
        let etag = normalize_etag(f[2]);
        assert!(EntityTag::parse(&etag).is_some(), "{:?} → {etag:?}", f[2]);
        if let Some(tag) = EntityTag::parse(f[2]) {
            assert!(tag.weak_eq(&tag));
            assert_eq!(tag.strong_eq(&tag), !tag.weak);
        }
        let current = Validators {
            etag: Some(&etag),
            last_modified: date,
        };
        let opt = |s: &str| -> Option<String> { (!s.is_empty()).then(|| s.to_string()) };
        let (im, inm, ims, ius, ir) = (opt(f[3]), opt(f[4]), opt(f[5]), opt(f[6]), opt(f[7]));
        let pre = Preconditions {
            if_match: im.as_deref(),
            if_none_match: inm.as_deref(),
            if_modified_since: ims.as_deref(),
            if_unmodified_since: ius.as_deref(),
            if_range: ir.as_deref(),
        };
        for (get, range) in [(true, true), (true, false), (false, true), (false, false)] {
            let outcome = evaluate(&pre, &current, get, range);
            if !get {
                assert_ne!(outcome, Outcome::NotModified);
            }
            assert_eq!(
                evaluate(&Preconditions::default(), &current, get, range),
                Outcome::Proceed { apply_range: true }
            );
        }
        // The current tag always matches itself for If-None-Match: a GET gets 304.
        let own = Preconditions {
            if_none_match: Some(&etag),
            ..Preconditions::default()
        };
        assert_eq!(evaluate(&own, &current, true, false), Outcome::NotModified);
    });
}
