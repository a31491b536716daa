//! Properties of the parsers every request goes through, over generated input (proptest): none panics on any
//! input, and what each promises holds — one canonical spelling per path whatever is percent-encoded, ranges
//! inside the representation, tokens that verify only for what they grant.

use proptest::prelude::*;
use shared::path::{canonical_path, canonical_query, object_key};
use shared::range::{RangeOutcome, evaluate, parse};
use shared::token::{Grant, SigningKey, sign, verify};

/// Characters a request path may bring, the hostile ones included.
fn path_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("(/[a-zA-Z0-9._~%/\\\\:@!$&'()*+,;=-]{0,12}){0,6}").unwrap()
}

/// A path of unreserved segments (a valid object path).
fn object_path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z0-9_~-][a-zA-Z0-9._~-]{0,8}", 1..5).prop_map(|segments| {
        let segments: Vec<String> = segments
            .into_iter()
            .map(|s| {
                if s == "." || s == ".." {
                    format!("{s}x")
                } else {
                    s
                }
            })
            .collect();
        format!("/{}", segments.join("/"))
    })
}

proptest! {
    #[test]
    fn canonical_paths_are_stable_and_name_the_same_object(path in path_text()) {
        if let Ok(canonical) = canonical_path(&path) {
            prop_assert_eq!(canonical_path(&canonical), Ok(canonical.clone()), "idempotent");
            prop_assert_eq!(object_key(&canonical), object_key(&path), "the same object");
            prop_assert!(canonical.starts_with('/'));
        } else {
            prop_assert!(object_key(&path).is_err(), "refused alike");
        }
    }

    #[test]
    fn every_spelling_of_a_path_has_one_canonical_form(
        path in object_path(),
        encode in proptest::collection::vec(any::<bool>(), 64),
        upper in any::<bool>(),
    ) {
        // Percent-encode some of its characters (not the separators).
        let spelled: String = path
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if c != '/' && encode[i % encode.len()] {
                    if upper { format!("%{:02X}", c as u32) } else { format!("%{:02x}", c as u32) }
                } else {
                    c.to_string()
                }
            })
            .collect();
        prop_assert_eq!(canonical_path(&spelled), Ok(path.clone()), "{}", spelled);
    }

    #[test]
    fn canonical_queries_are_stable(query in "[a-zA-Z0-9=&%._~+-]{0,40}") {
        let once = canonical_query(&query);
        prop_assert_eq!(canonical_query(&once), once);
    }

    #[test]
    fn ranges_are_inside_the_representation(header in "[a-z =0-9,-]{0,40}", len in 0u64..u64::MAX) {
        let _ = parse(&header);
        match evaluate(Some(&header), len) {
            RangeOutcome::Partial(range) => {
                prop_assert!(range.start <= range.end && range.end < len, "{:?} of {}", range, len);
                prop_assert_eq!(range.len(), range.end - range.start + 1);
            }
            RangeOutcome::Full | RangeOutcome::Refused(_) => {}
        }
    }

    #[test]
    fn huge_numbers_in_ranges_are_refused_or_bounded(
        first in any::<u64>(),
        last in any::<u64>(),
        len in 1u64..u64::MAX,
    ) {
        for header in [format!("bytes={first}-{last}"), format!("bytes={first}-"), format!("bytes=-{last}")] {
            if let RangeOutcome::Partial(range) = evaluate(Some(&header), len) {
                prop_assert!(range.end < len);
            }
        }
    }

    #[test]
    fn tokens_open_only_what_they_grant(
        prefix in object_path(),
        rest in object_path(),
        expires in 1_000u64..2_000_000_000,
        now in 0u64..2_000_000_000,
        garbage in "[ -~]{0,80}",
    ) {
        let key = SigningKey::new("k1", b"a secret of at least thirty-two bytes!");
        let keys = [key.clone()];
        let grant = Grant { key_id: "k1".into(), expires, prefix: format!("{prefix}/"), client: String::new() };
        let token = sign(&key, &grant);
        let inside = format!("{prefix}{rest}");
        let verdict = verify(&keys, &token, &inside, "", now);
        prop_assert_eq!(verdict.is_ok(), now <= expires, "{}", inside);
        // Another tree is never opened; garbage never verifies (and never panics).
        let elsewhere = format!("/elsewhere{rest}");
        let opened = verify(&keys, &token, &elsewhere, "", 0).is_ok();
        prop_assert!(!opened || prefix.starts_with("/elsewhere"));
        prop_assert!(verify(&keys, &garbage, &inside, "", 0).is_err());
    }

    #[test]
    fn validators_and_dates_never_panic(text in "[ -~]{0,60}") {
        let _ = shared::conditional::EntityTag::parse(&text);
        let _ = shared::conditional::parse_http_date(&text);
        let _ = shared::conditional::normalize_etag(&text);
    }
}

/// Text that looks like an HLS playlist or a DASH MPD, hostile parts included.
fn manifest_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("#EXTM3U".to_string()),
            Just("#EXT-X-ENDLIST".to_string()),
            "#EXT-X-TARGETDURATION:[0-9a-z.-]{0,25}",
            "#EXT-X-PLAYLIST-TYPE:[A-Z]{0,6}",
            "#EXTINF:[0-9.,]{0,12}",
            "<MPD type=\"(static|dynamic|)\" minimumUpdatePeriod=\"[PTHMS0-9.]{0,20}\">",
            "[ -~]{0,30}",
        ],
        0..12,
    )
    .prop_map(|lines| lines.join("\n"))
}

proptest! {
    #[test]
    fn manifests_and_durations_never_panic(text in manifest_text(), duration in "[PTDHMS0-9.]{0,30}") {
        let _ = shared::media::manifest_liveness(&text);
        let _ = shared::media::iso8601_duration_secs(&duration);
        let _ = shared::media::classify(&text);
    }
}

/// Regression (fuzz target `token`): a grant signed with an expiry of 20 digits (10^19 or later) was refused as
/// malformed, so what `sign` wrote, `verify` could not read.
#[test]
fn a_token_with_a_twenty_digit_expiry_verifies() {
    let key = SigningKey::new("k1", b"a secret of at least thirty-two bytes!");
    for expires in [10_000_000_000_000_000_000, u64::MAX] {
        let grant = Grant {
            key_id: "k1".into(),
            expires,
            prefix: "/titles/".into(),
            client: String::new(),
        };
        let token = sign(&key, &grant);
        assert_eq!(
            verify(
                std::slice::from_ref(&key),
                &token,
                "/titles/a/master.m3u8",
                "",
                5
            ),
            Ok(grant)
        );
    }
}

/// Regression (fuzz target `path`, and `canonical_queries_are_stable` above): a lone `%` next to a
/// percent-encoding of a hex digit, or to a non-ASCII character, made a canonical query that was not canonical
/// again (`%%330` → `%30` → `0`), so two spellings of one query could be two cache keys.
#[test]
fn a_lone_percent_sign_leaves_a_canonical_query_canonical() {
    for query in [
        "%%330", "%3%30", "a=%%61b", "%\u{e9}", "%3\u{e9}", "x=%", "%zz", "%%",
    ] {
        let once = canonical_query(query);
        assert_eq!(canonical_query(&once), once, "{query}");
    }
}
