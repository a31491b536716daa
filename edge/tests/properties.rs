//! Properties of the edge's `Vary` matching and config over generated input (proptest): the fields a response
//! varies on are lower case and unique, a variant's values are normalised once and select one record, and any
//! TOML text as a config is a config or a refusal that names a field — never a panic. Regression tests for what
//! the fuzz targets (`fuzz/`) found in the edge are here too.

use edge::cache::key::CacheKey;
use edge::cache::vary::{apply_variant, preferred_encoding, variant_values, vary_fields};
use edge::config::EdgeConfig;
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Field names a response may vary on, hostile spellings included.
fn vary_value() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("Accept-Encoding".to_string()),
            Just("accept-language".to_string()),
            Just("ORIGIN".to_string()),
            Just("*".to_string()),
            "[A-Za-z-]{0,12}",
            "[ -~]{0,12}",
        ],
        0..5,
    )
    .prop_map(|names| names.join(", "))
}

/// A request head: `Accept-Encoding` and `Accept-Language` lines, some repeated, some odd.
fn request_head() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        (
            prop_oneof![
                Just("accept-encoding".to_string()),
                Just("Accept-Language".to_string()),
                Just("origin".to_string()),
                "[a-z-]{1,10}",
            ],
            prop_oneof![
                "(br|gzip|x-gzip|deflate|zstd|identity|\\*)(;[qQ]=[0-9.]{0,5})?(, ?(br|gzip|\\*)(;q=[0-9.]{0,4})?){0,3}",
                "[ -~]{0,24}",
                "[a-z]{1,4}( {1,3}[a-z]{1,4}){0,3}(,  ?[a-z]{1,4}){0,2}",
            ],
        ),
        0..6,
    )
}

fn head(lines: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.trim()),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

proptest! {
    #[test]
    fn vary_fields_are_lower_case_unique_and_trimmed(lines in proptest::collection::vec(vary_value(), 0..3)) {
        let mut response = HeaderMap::new();
        for line in &lines {
            if let Ok(value) = HeaderValue::from_str(line.trim()) {
                response.append(http::header::VARY, value);
            }
        }
        let fields = vary_fields(&response);
        for (i, name) in fields.iter().enumerate() {
            prop_assert!(!name.is_empty());
            prop_assert_eq!(name, &name.to_ascii_lowercase());
            prop_assert_eq!(name.trim(), name.as_str());
            prop_assert!(!name.contains(','));
            prop_assert!(!fields[..i].contains(name), "{} twice", name);
        }
    }

    #[test]
    fn a_variant_is_normalised_once_and_selects_one_record(
        vary in vary_value(),
        a in request_head(),
        b in request_head(),
    ) {
        let mut response = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(vary.trim()) {
            response.insert(http::header::VARY, value);
        }
        let fields = vary_fields(&response);
        let (a, b) = (head(&a), head(&b));
        let values_a = variant_values(&fields, &a);
        let values_b = variant_values(&fields, &b);
        prop_assert_eq!(values_a.len(), fields.len());
        for (name, value) in &values_a {
            if name == "accept-encoding" {
                prop_assert!(["br", "gzip", ""].contains(&value.as_str()), "{}", value);
            }
        }
        // What is sent upstream for a variant selects the same variant when read again.
        let mut sent = b.clone();
        apply_variant(&mut sent, &values_a);
        prop_assert_eq!(&variant_values(&fields, &sent), &values_a);
        // One record per distinct set of values.
        let key = CacheKey::new("site", "/v.mp4", None);
        prop_assert_eq!(
            key.variant(&values_a).meta_key() == key.variant(&values_b).meta_key(),
            values_a == values_b
        );
        prop_assert_eq!(key.variant(&values_a).primary(), key);
    }

    #[test]
    fn accept_encoding_comes_down_to_one_coding(value in "[ -~]{0,40}") {
        prop_assert!(["br", "gzip", ""].contains(&preferred_encoding(&value)));
    }
}

/// The fields an edge config refusal may name: the file (it did not parse) or a field by its dotted path.
const EDGE_FIELDS: &[&str] = &[
    "name",
    "data_dir",
    "tls",
    "h3",
    "http",
    "admin",
    "site",
    "cache",
    "limits",
    "cors",
    "log",
    "signing_key",
    "control",
    "cdn_id",
];

/// TOML that looks like an edge config: its sections and keys with values of any type, and junk lines.
fn edge_toml() -> impl Strategy<Value = String> {
    const SECTIONS: &[&str] = &[
        "",
        "[tls]",
        "[h3]",
        "[http]",
        "[admin]",
        "[[site]]",
        "[cache]",
        "[limits]",
        "[cors]",
        "[log]",
        "[[signing_key]]",
        "[control]",
    ];
    const KEYS: &[&str] = &[
        "name",
        "data_dir",
        "cdn_id",
        "listen",
        "cert",
        "enabled",
        "zero_rtt",
        "idle_timeout_secs",
        "bearer_token",
        "test_clock",
        "hosts",
        "upstream",
        "parents",
        "bypass_paths",
        "signed_paths",
        "strip_request_fields",
        "query_key",
        "query_params",
        "max_passes",
        "memory_bytes",
        "disk_bytes",
        "slice_bytes",
        "max_fills",
        "targeted_fields",
        "heuristic_percent",
        "max_variants",
        "max_retention_secs",
        "client_directives",
        "max_connections",
        "max_header_bytes",
        "h2_window_bytes",
        "request_bodies_bytes",
        "parent_retry_secs",
        "max_loop_hops",
        "allow_origins",
        "level",
        "format",
        "id",
        "secret",
        "url",
        "registration_secret",
        "region",
        "public_urls",
        "metrics_target",
        "heartbeat_secs",
        "bogus",
    ];
    const VALUES: &[&str] = &[
        "\"127.0.0.1:0\"",
        "\"http://127.0.0.1:8080\"",
        "[\"http://127.0.0.1:8081\"]",
        "\"listed\"",
        "\"eu-west\"",
    ];
    testkit::config_toml(SECTIONS, KEYS, VALUES)
}

proptest! {
    #[test]
    fn any_edge_config_text_is_a_config_or_a_refusal_naming_a_field(text in edge_toml()) {
        match shared::config::parse_toml::<EdgeConfig>(&text, "edge.toml") {
            Err(e) => {
                prop_assert_eq!(&e.field, "edge.toml");
                prop_assert!(!e.message.is_empty());
            }
            Ok(config) => match config.validate() {
                Ok(()) => {
                    prop_assert!(config.admin_addr().is_ok());
                    prop_assert!(!config.effective_sites().is_empty());
                }
                Err(e) => {
                    let head = e.field.split(['.', '[']).next().unwrap_or("");
                    prop_assert!(EDGE_FIELDS.contains(&head), "{:?} names no field", e);
                    prop_assert!(!e.message.is_empty());
                }
            },
        }
    }

    #[test]
    fn any_text_as_an_edge_config_never_panics(text in "(?s).{0,200}") {
        if let Ok(config) = shared::config::parse_toml::<EdgeConfig>(&text, "edge.toml") {
            let _ = config.validate();
        }
    }
}

/// A response head from `name: value` lines.
fn response_head(lines: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    headers
}

/// Fuzz target `cache_control`: an empty `CDN-Cache-Control` replaces `Cache-Control` wholly, so a response with
/// `Cache-Control: max-age=600` is not stored. RFC 9213 §2.1: the cache uses the first targeted field "with a
/// valid, non-empty value", and Cache-Control "unless no valid, non-empty value is available".
#[test]
fn an_empty_targeted_field_leaves_cache_control_in_force() {
    use edge::cache::freshness::{Policy, decide};
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let head = response_head(&[("cache-control", "max-age=600"), ("cdn-cache-control", "")]);
    let lifetime = decide(&Policy::default(), 200, &head, false, now, now);
    assert_eq!(lifetime.map(|l| l.ttl_secs), Ok(600));
}

/// Fuzz target `cache_control`: a far `Expires` (year 8023) gives a lifetime of 186,490,090,239 s, past the
/// delta-seconds bound (2^31) every other lifetime keeps and the `freshness` property test states.
#[test]
fn a_far_expires_gives_a_lifetime_within_delta_seconds() {
    use edge::cache::freshness::{DELTA_SECONDS_MAX, Policy, decide};
    let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
    let head = response_head(&[
        ("date", "Tue, 14 Nov 2023 22:13:20 GMT"),
        ("expires", "Wed, 15 Nov 8023 22:13:20 GMT"),
    ]);
    let lifetime = decide(&Policy::default(), 200, &head, false, now, now).unwrap();
    assert!(
        lifetime.ttl_secs <= DELTA_SECONDS_MAX,
        "ttl {}",
        lifetime.ttl_secs
    );
}
