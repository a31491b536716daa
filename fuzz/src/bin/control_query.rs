//! The control plane's query parameters (origin::control::api, over an in-memory SQLite catalog of a few
//! titles and its search index): any query string on the catalog list and on search, and any slug, gets a valid
//! answer or a 4xx whose JSON names the error and a short reason — never a panic or a 500; a list's
//! `next_cursor` opens the next page.
//!
//! Input: 1 byte choosing the route (list, search, title, assets), then the query string or slug.

use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use origin::control::api::ApiService;
use origin::control::catalog::{Catalog, TitleMeta};
use origin::control::search::SearchIndex;

/// Longest reason a refusal may give: a client's long parameter is never echoed whole.
const MAX_REASON_BYTES: usize = 300;

/// The runtime and the API, made once in the fuzzed process (after AFL++'s fork: SQLite's worker thread would
/// not survive it) and kept in a static, so the fuzz loop captures nothing that is not unwind-safe.
fn api() -> &'static (tokio::runtime::Runtime, ApiService) {
    static API: OnceLock<(tokio::runtime::Runtime, ApiService)> = OnceLock::new();
    API.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let service = runtime.block_on(service());
        (runtime, service)
    })
}

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (runtime, service) = api();
        let (route, rest) = fuzz::take_u8(data);
        let text = fuzz::text(rest);
        let uri = match route % 4 {
            0 => format!("/v1/titles?{text}"),
            1 => format!("/v1/search?{text}"),
            2 => format!("/v1/titles/{text}"),
            _ => format!("/v1/titles/{text}/assets"),
        };
        // hyper refuses a request target that is not a URI before the API sees it.
        let Ok(request) = Request::get(uri.as_str()).body(Empty::<Bytes>::new()) else {
            return;
        };
        let (status, body) = runtime.block_on(answer(service, request));
        match status {
            StatusCode::OK => {
                if route % 4 == 0
                    && let Some(cursor) = body["next_cursor"].as_str()
                {
                    let next = format!("/v1/titles?cursor={cursor}");
                    let request = Request::get(next.as_str())
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let (status, _) = runtime.block_on(answer(service, request));
                    assert_eq!(status, StatusCode::OK, "{next}");
                }
                if route % 4 == 0 {
                    assert!(body["titles"].as_array().is_some_and(|t| t.len() <= 100));
                }
            }
            StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND => {
                assert!(
                    route % 4 >= 2 || status == StatusCode::BAD_REQUEST,
                    "{status} for {uri}"
                );
                assert!(
                    body["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{body}"
                );
                let reason = body["reason"].as_str().unwrap_or("");
                assert!(!reason.is_empty(), "no reason: {body}");
                assert!(
                    reason.len() <= MAX_REASON_BYTES,
                    "{} bytes of reason for {uri}",
                    reason.len()
                );
            }
            other => panic!("{other} for {uri}: {body}"),
        }
    });
}

async fn answer(
    service: &ApiService,
    request: Request<Empty<Bytes>>,
) -> (StatusCode, serde_json::Value) {
    let response = service.respond(request).await;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let body =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}"));
    (status, body)
}

async fn service() -> ApiService {
    let catalog = Catalog::open("sqlite::memory:").await.expect("a catalog");
    let titles = [
        (
            "test-pattern",
            "Test Pattern",
            2024,
            "en",
            &["documentary"][..],
        ),
        (
            "big-buck-bunny",
            "Big Buck Bunny",
            2008,
            "en",
            &["animation", "comedy"][..],
        ),
        (
            "le-voyage",
            "Le Voyage dans la Lune",
            1902,
            "fr",
            &["science-fiction"][..],
        ),
        ("東京", "東京物語", 1953, "ja", &["drama"][..]),
    ];
    for (i, (slug, title, year, language, genres)) in titles.into_iter().enumerate() {
        let meta = TitleMeta {
            slug: slug.into(),
            title: title.into(),
            year: Some(year),
            language: Some(language.into()),
            genres: genres.iter().map(|g| g.to_string()).collect(),
            popularity: Some(i as i64),
            ..TitleMeta::default()
        };
        catalog.upsert(&meta, 0).await.expect("a title");
    }
    let index = SearchIndex::build(&catalog.search_docs().await.expect("docs")).expect("an index");
    ApiService::new(Arc::new(catalog), Arc::new(RwLock::new(Arc::new(index))))
}
