//! Properties of the origin's config and of the control plane's query parameters over generated input
//! (proptest): any TOML text as a config is a config or a refusal that names a field; any query string on the
//! catalog list and on search, and any slug, gets a valid answer or a 4xx with a short reason — never a panic
//! or a 500. Regression tests for what the fuzz targets (`fuzz/`) found are here too.

use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use origin::OriginConfig;
use origin::control::api::ApiService;
use origin::control::catalog::{Catalog, TitleMeta};
use origin::control::search::SearchIndex;
use proptest::prelude::*;

/// The fields an origin config refusal may name: the file (it did not parse) or a field by its dotted path.
const ORIGIN_FIELDS: &[&str] = &[
    "data_dir",
    "media",
    "admin",
    "store",
    "cache_control",
    "log",
    "api",
    "catalog",
    "playback",
    "signing_key",
    "fleet",
    "steering",
];

/// TOML that looks like an origin config: its sections and keys with values of any type, and junk lines.
fn origin_toml() -> impl Strategy<Value = String> {
    const SECTIONS: &[&str] = &[
        "",
        "[media]",
        "[admin]",
        "[store]",
        "[store.options]",
        "[cache_control]",
        "[log]",
        "[api]",
        "[catalog]",
        "[playback]",
        "[[signing_key]]",
        "[fleet]",
        "[steering]",
        "[[steering.network]]",
        "[steering.distances.eu-west]",
    ];
    const KEYS: &[&str] = &[
        "data_dir",
        "listen",
        "tls_cert",
        "max_connections",
        "header_read_timeout_secs",
        "max_header_bytes",
        "h2_max_concurrent_streams",
        "cors_allow_origin",
        "read_chunk_bytes",
        "bearer_token",
        "url",
        "endpoint",
        "region",
        "allow_http",
        "segment",
        "vod_manifest",
        "live_manifest_max_age_secs",
        "segment_not_found",
        "manifest_sniff_limit_bytes",
        "level",
        "format",
        "edges",
        "token_ttl_secs",
        "id",
        "secret",
        "registration_secret",
        "heartbeat_timeout_secs",
        "epsilon",
        "default_region",
        "cidr",
        "max_pathways",
        "ttl_secs",
        "public_url",
        "us-east",
        "bogus",
    ];
    const VALUES: &[&str] = &[
        "\"127.0.0.1:0\"",
        "\"s3://bucket/prefix\"",
        "\"sqlite::memory:\"",
        "\"10.0.0.0/8\"",
        "\"eu-west\"",
        "0.25",
    ];
    testkit::config_toml(SECTIONS, KEYS, VALUES)
}

proptest! {
    #[test]
    fn any_origin_config_text_is_a_config_or_a_refusal_naming_a_field(text in origin_toml()) {
        match shared::config::parse_toml::<OriginConfig>(&text, "origin.toml") {
            Err(e) => {
                prop_assert_eq!(&e.field, "origin.toml");
                prop_assert!(!e.message.is_empty());
            }
            Ok(config) => match config.validate() {
                Ok(()) => {
                    prop_assert!(config.media_addr().is_ok() && config.admin_addr().is_ok());
                    prop_assert!(config.api_addr().is_ok());
                }
                Err(e) => {
                    let head = e.field.split(['.', '[']).next().unwrap_or("");
                    prop_assert!(ORIGIN_FIELDS.contains(&head), "{:?} names no field", e);
                    prop_assert!(!e.message.is_empty());
                }
            },
        }
    }

    #[test]
    fn any_text_as_an_origin_config_never_panics(text in "(?s).{0,200}") {
        if let Ok(config) = shared::config::parse_toml::<OriginConfig>(&text, "origin.toml") {
            let _ = config.validate();
        }
    }
}

/// Longest reason a refusal may give: a client's long parameter is never echoed whole.
const MAX_REASON_BYTES: usize = 300;

/// The API over an in-memory catalog of a few titles, made once for all cases.
fn api() -> &'static (tokio::runtime::Runtime, ApiService) {
    static API: OnceLock<(tokio::runtime::Runtime, ApiService)> = OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let service = runtime.block_on(async {
            let catalog = Catalog::open("sqlite::memory:").await.unwrap();
            let titles = [
                ("test-pattern", "Test Pattern", 2024, "en", "documentary"),
                ("big-buck-bunny", "Big Buck Bunny", 2008, "en", "animation"),
                (
                    "le-voyage",
                    "Le Voyage dans la Lune",
                    1902,
                    "fr",
                    "science-fiction",
                ),
                ("東京", "東京物語", 1953, "ja", "drama"),
            ];
            for (slug, title, year, language, genre) in titles {
                let meta = TitleMeta {
                    slug: slug.into(),
                    title: title.into(),
                    year: Some(year),
                    language: Some(language.into()),
                    genres: vec![genre.into()],
                    ..TitleMeta::default()
                };
                catalog.upsert(&meta, 0).await.unwrap();
            }
            let index = SearchIndex::build(&catalog.search_docs().await.unwrap()).unwrap();
            ApiService::new(Arc::new(catalog), Arc::new(RwLock::new(Arc::new(index))))
        });
        (runtime, service)
    })
}

/// The answer to `GET target`: its status and JSON body; `None` when the target is not a URI (hyper refuses
/// those before the API sees them).
fn get(target: &str) -> Option<(StatusCode, serde_json::Value)> {
    let request = Request::get(target).body(Empty::<Bytes>::new()).ok()?;
    let (runtime, service) = api();
    Some(runtime.block_on(async {
        let response = service.respond(request).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).expect("a JSON body"))
    }))
}

/// A refusal: the status wanted, a named error and a short reason.
fn check_refusal(
    target: &str,
    status: StatusCode,
    body: &serde_json::Value,
) -> Result<(), TestCaseError> {
    prop_assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{}: {}",
        target,
        body
    );
    let reason = body["reason"].as_str().unwrap_or("");
    prop_assert!(!reason.is_empty(), "{} {}: no reason", target, status);
    prop_assert!(
        reason.len() <= MAX_REASON_BYTES,
        "{}: {} bytes of reason",
        target,
        reason.len()
    );
    Ok(())
}

/// A parameter value: text, numbers, hex cursors, percent-encoded bytes of any kind, long ones.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._~-]{0,12}",
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9a-f]{0,40}",
        "(%[0-9A-Fa-f]{2}|[a-z+]){0,16}",
        "[a-z0-9]{300,600}",
        "[^&#\\s]{0,12}".prop_map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()),
    ]
}

/// A query string of known and unknown parameters.
fn query(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(names), value()), 0..4).prop_map(|params| {
        params
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

proptest! {
    #[test]
    fn any_catalog_list_query_gets_a_page_or_a_400_with_a_reason(
        q in query(&["genre", "year", "language", "limit", "cursor", "bogus", ""]),
    ) {
        let target = format!("/v1/titles?{q}");
        let Some((status, body)) = get(&target) else { return Ok(()) };
        match status {
            StatusCode::OK => {
                prop_assert!(body["titles"].as_array().is_some_and(|t| t.len() <= 100));
                if let Some(cursor) = body["next_cursor"].as_str() {
                    let next = get(&format!("/v1/titles?cursor={cursor}")).unwrap();
                    prop_assert_eq!(next.0, StatusCode::OK, "the next page of {}", target);
                }
            }
            StatusCode::BAD_REQUEST => check_refusal(&target, status, &body)?,
            other => prop_assert!(false, "{} for {}: {}", other, target, body),
        }
    }

    #[test]
    fn any_search_query_gets_hits_or_a_400_with_a_reason(q in query(&["q", "q", "limit", "bogus"])) {
        let target = format!("/v1/search?{q}");
        let Some((status, body)) = get(&target) else { return Ok(()) };
        match status {
            StatusCode::OK => prop_assert!(body["hits"].as_array().is_some_and(|h| h.len() <= 50)),
            StatusCode::BAD_REQUEST => check_refusal(&target, status, &body)?,
            other => prop_assert!(false, "{} for {}: {}", other, target, body),
        }
    }

    #[test]
    fn any_slug_gets_a_title_or_a_404_with_a_reason(slug in value(), assets in any::<bool>()) {
        let target = format!("/v1/titles/{slug}{}", if assets { "/assets" } else { "" });
        let Some((status, body)) = get(&target) else { return Ok(()) };
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => check_refusal(&target, status, &body)?,
            other => prop_assert!(false, "{} for {}: {}", other, target, body),
        }
    }
}

/// Regression (found by the property above): a refusal echoed a long `year`, `limit`, parameter name or slug
/// whole, as it did a cursor before (issue 14, item 10).
#[test]
fn long_parameters_and_slugs_are_not_echoed_whole() {
    let long = "9".repeat(10_000);
    for target in [
        format!("/v1/titles?year=x{long}"),
        format!("/v1/titles?limit={long}"),
        format!("/v1/titles?{long}=1"),
        format!("/v1/search?q=a&limit={long}"),
        format!("/v1/search?{long}=1"),
        format!("/v1/titles/{long}"),
        format!("/v1/titles/{long}/assets"),
        format!("/v2/{long}"),
    ] {
        let (status, body) = get(&target).unwrap();
        assert!(status.is_client_error(), "{status} for {}", &target[..20]);
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.len() <= MAX_REASON_BYTES,
            "{} bytes of reason: {}",
            reason.len(),
            reason.chars().take(60).collect::<String>()
        );
        assert!(reason.contains('…'), "{reason}");
    }
}

/// Regression (fuzz target `dash`, minimised): a SegmentTimeline entry whose duration times its repeat count
/// passes 2^64 panicked reading the MPD (`attempt to multiply with overflow`); it is refused with the reason
/// (fixed with the panic audit in b472e6e, which the fuzzer found independently).
#[test]
fn a_timeline_past_two_to_the_64_is_refused_not_a_panic() {
    let mpd = "<MPD mediaPresentationDuration=\"PT1M\"><Period><AdaptationSet><Representation id=\"a\">\
               <SegmentTemplate media=\"$Time$.m4s\"><SegmentTimeline><S t=\"0\" d=\"9600000000000000000\" r=\"2\"/>\
               </SegmentTimeline></SegmentTemplate></Representation></AdaptationSet></Period></MPD>";
    let refused = origin::control::manifests::read("manifest.mpd", mpd.as_bytes()).unwrap_err();
    assert!(refused.contains("2^64"), "{refused}");
}
