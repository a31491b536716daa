//! The control plane's API on SQLite and on PostgreSQL (a private server per test): the sample titles are registered from the store at start; listing with
//! filters and stable cursors; details with ETag/304; JSON errors for bad parameters and unknown titles; and the
//! playback API's signed URLs, played through a real edge by ffmpeg, while a tampered URL gets 403.

use serde_json::Value;
use testkit::{PostgresServer, TempStore, TestCerts, curl, ffmpeg_play, start_edge, start_origin};

const SECRET: &str = "catalog-test signing secret, 32+ bytes";

fn json(r: &testkit::CurlResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

#[test]
fn catalog_on_sqlite() {
    catalog_listing_details_and_errors("");
}

#[test]
fn catalog_on_postgresql() {
    let postgres = PostgresServer::start();
    let first =
        catalog_listing_details_and_errors(&format!("[catalog]\nurl = \"{}\"\n", postgres.url()));
    // Registering again at a restart is idempotent: the same titles, once each, with the same ids.
    let again =
        catalog_listing_details_and_errors(&format!("[catalog]\nurl = \"{}\"\n", postgres.url()));
    assert_eq!(first, again);
}

/// Returns each listed title's (slug, id).
fn catalog_listing_details_and_errors(catalog: &str) -> Vec<(String, i64)> {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), catalog);
    let api = origin.url("api_addr");
    let get = |path: &str| curl(&[&format!("{api}{path}")]);

    let all = get("/v1/titles");
    assert_eq!(all.status, 200, "{}", all.text());
    let page = json(&all);
    let slugs: Vec<&str> = page["titles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["mandelbrot", "test-pattern"]);
    assert!(page["next_cursor"].is_null());
    let ids: Vec<(String, i64)> = page["titles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().unwrap().to_string(),
                t["id"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        ids[0].1 > 0 && ids[1].1 > 0 && ids[0].1 != ids[1].1,
        "{ids:?}"
    );

    // Pagination: one per page, the cursor leads to the next.
    let first = json(&get("/v1/titles?limit=1"));
    assert_eq!(first["titles"][0]["slug"], "mandelbrot");
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let second = json(&get(&format!("/v1/titles?limit=1&cursor={cursor}")));
    assert_eq!(second["titles"][0]["slug"], "test-pattern");
    assert!(second["next_cursor"].is_null());

    // Filters.
    let genre = json(&get("/v1/titles?genre=Test"));
    assert_eq!(genre["titles"].as_array().unwrap().len(), 1);
    assert_eq!(genre["titles"][0]["slug"], "test-pattern");
    let year = json(&get("/v1/titles?year=1800"));
    assert_eq!(year["titles"].as_array().unwrap().len(), 0);
    assert_eq!(
        json(&get("/v1/titles?language=en"))["titles"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Details, with ETag and 304.
    let details = get("/v1/titles/test-pattern");
    assert_eq!(details.status, 200);
    let d = json(&details);
    assert_eq!(d["title"], "Test Pattern");
    assert_eq!(d["genres"], serde_json::json!(["Technical", "Test"]));
    let packagings: Vec<&str> = d["packagings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(packagings, ["dash", "hls-ts", "mp4-dash", "mp4-hls"]);
    let hls = d["packagings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hls-ts")
        .unwrap();
    assert_eq!(hls["manifest_key"], "titles/test-pattern/hls/master.m3u8");
    assert_eq!(hls["renditions"][0]["resolution"], "640x360");
    let etag = details.header("etag").unwrap().to_string();
    let again = curl(&[
        "-H",
        &format!("If-None-Match: {etag}"),
        &format!("{api}/v1/titles/test-pattern"),
    ]);
    assert_eq!(again.status, 304);

    // Errors: JSON with a reason.
    for (path, status, reason) in [
        ("/v1/titles/no-such-title", 404, "no title `no-such-title`"),
        ("/v1/titles?limit=0", 400, "limit must be 1 to 100"),
        ("/v1/titles?limit=abc", 400, "limit must be 1 to 100"),
        ("/v1/titles?year=x", 400, "year must be a number"),
        ("/v1/titles?cursor=zz", 400, "is not one this API issued"),
        ("/v1/titles?sort=asc", 400, "unknown parameter `sort`"),
        ("/v2/other", 404, "no route"),
    ] {
        let r = get(path);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            json(&r)["reason"].as_str().unwrap().contains(reason),
            "{path}: {}",
            r.text()
        );
    }
    let bad = curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"titel\": \"x\"}",
        &format!("{api}/v1/playback"),
    ]);
    assert_eq!(bad.status, 400);
    assert!(
        json(&bad)["reason"]
            .as_str()
            .unwrap()
            .contains("unknown field `titel`")
    );
    let unknown = curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"title\": \"nope\"}",
        &format!("{api}/v1/playback"),
    ]);
    assert_eq!(unknown.status, 404);
    ids
}

#[test]
fn playback_urls_are_signed_and_play_through_the_edge() {
    let store = TempStore::with_samples();
    // A catalogue entry with metadata only (like the large demo catalogue's): nothing to play.
    std::fs::create_dir_all(store.path().join("titles/words-only")).unwrap();
    std::fs::write(
        store.path().join("titles/words-only/meta.json"),
        r#"{"title": "Words Only"}"#,
    )
    .unwrap();
    let certs = TestCerts::generate();
    let cache = tempfile::tempdir().unwrap();
    let keys = format!("[[signing_key]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n");
    // The origin first (the edge's upstream), then the edge, then the origin's playback config names the edge:
    // start a second origin process with the edge's address for the API.
    let media = start_origin(&store.url(), "[api]\nlisten = \"\"\n");
    let site = format!(
        "[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{}\"\nsigned_paths = [\"/titles/\"]\n",
        media.url("media_addr")
    );
    let edge = start_edge(
        &media.url("media_addr"),
        cache.path(),
        &certs,
        &format!("{keys}{site}"),
    );
    let edge_base = format!("https://localhost:{}", edge.addr("tls_addr").port());
    let control = start_origin(
        &store.url(),
        &format!("{keys}[playback]\nedges = [\"{edge_base}\"]\ntoken_ttl_secs = 600\n"),
    );
    let api = control.url("api_addr");

    let r = curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"title\": \"test-pattern\", \"protocol\": \"hls\"}",
        &format!("{api}/v1/playback"),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    let playback = json(&r);
    assert_eq!(playback["signed"], true);
    let manifests = playback["edges"][0]["manifests"].as_object().unwrap();
    assert_eq!(
        manifests.keys().collect::<Vec<_>>(),
        ["hls-ts", "mp4-hls"],
        "only HLS"
    );
    let url = manifests["hls-ts"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("{edge_base}/t/"))
            && url.ends_with("/titles/test-pattern/hls/master.m3u8"),
        "{url}"
    );

    let report = ffmpeg_play(&url, Some(&certs.ca()));
    assert!(report.is_clean(), "{:?}\n{}", report.problems, report.log);

    // Every field of the token is covered: change one character and the edge refuses.
    let token_start = url.find("/t/").unwrap() + 3;
    let mut tampered = url.clone().into_bytes();
    let i = token_start + 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let refused = curl(&["--cacert", certs.ca().to_str().unwrap(), &tampered]);
    assert_eq!(refused.status, 403, "{}", refused.text());
    // The token opens only its title.
    let other = url.replace("/titles/test-pattern/", "/titles/mandelbrot/");
    let refused = curl(&["--cacert", certs.ca().to_str().unwrap(), &other]);
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("wrong prefix"),
        "{}",
        refused.text()
    );

    // Bound to a client: only that address may use it.
    let bound = json(&curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"title\": \"mandelbrot\", \"client\": \"10.1.2.3\"}",
        &format!("{api}/v1/playback"),
    ]));
    let url = bound["edges"][0]["manifests"]["cmaf-hls"]
        .as_str()
        .or_else(|| {
            bound["edges"][0]["manifests"]
                .as_object()
                .unwrap()
                .values()
                .next()
                .and_then(Value::as_str)
        });
    let refused = curl(&["--cacert", certs.ca().to_str().unwrap(), url.unwrap()]);
    assert_eq!(refused.status, 403);
    assert!(
        refused.text().contains("another client"),
        "{}",
        refused.text()
    );

    let words = curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"title\": \"words-only\", \"protocol\": \"dash\"}",
        &format!("{api}/v1/playback"),
    ]);
    assert_eq!(words.status, 404, "{}", words.text());
    assert_eq!(
        json(&words)["reason"],
        "title `words-only` has no DASH packaging to play"
    );
}

#[test]
fn playback_ranks_the_edges_per_title_by_rendezvous_hashing() {
    let store = TempStore::with_samples();
    let edges = [
        "https://edge-a.cdn.test",
        "https://edge-b.cdn.test",
        "https://edge-c.cdn.test",
    ];
    let origin = start_origin(&store.url(), &format!("[playback]\nedges = {edges:?}\n"));
    let api = origin.url("api_addr");
    let order = |title: &str| -> Vec<String> {
        let r = curl(&[
            "-H",
            testkit::SERVICE_AUTH,
            "-d",
            &format!("{{\"title\": \"{title}\"}}"),
            &format!("{api}/v1/playback"),
        ]);
        assert_eq!(r.status, 200, "{}", r.text());
        json(&r)["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["edge"].as_str().unwrap().to_string())
            .collect()
    };
    // Each configured edge is named by its host and port (its pathway id), and ranked by that name.
    let nodes: Vec<(u64, f64)> = edges
        .iter()
        .map(|e| {
            (
                shared::rendezvous::node_seed(e.trim_start_matches("https://")),
                1.0,
            )
        })
        .collect();
    for title in ["test-pattern", "mandelbrot"] {
        let expected: Vec<String> = shared::rendezvous::rank(title, &nodes)
            .into_iter()
            .map(|i| edges[i].to_string())
            .collect();
        assert_eq!(order(title), expected, "{title}");
        assert_eq!(order(title), expected, "{title}: stable");
    }
}

#[test]
fn search_finds_titles_with_typos_prefixes_accents_and_korean() {
    let store = TempStore::new();
    let titles = [
        (
            "stranger-things",
            "Stranger Things",
            "en",
            95,
            "Winona Ryder",
        ),
        ("strange-days", "Strange Days", "en", 40, "Ralph Fiennes"),
        (
            "amelie",
            "Le Fabuleux Destin d'Amélie Poulain",
            "fr",
            70,
            "Audrey Tautou",
        ),
        ("parasite", "기생충", "ko", 90, "Song Kang-ho"),
    ];
    for (slug, title, language, popularity, actor) in titles {
        let meta = serde_json::json!({
            "slug": slug, "title": title, "language": language, "popularity": popularity,
            "cast": [actor], "genres": ["Drama"],
        });
        store.put(
            &format!("titles/{slug}/meta.json"),
            meta.to_string().as_bytes(),
        );
    }
    let origin = start_origin(&store.url(), "");
    let api = origin.url("api_addr");
    let search = |q: &str| {
        let url = format!("{api}/v1/search?q={}", url_encode(q));
        let r = curl(&[&url]);
        assert_eq!(r.status, 200, "{q}: {}", r.text());
        json(&r)["hits"].as_array().unwrap().clone()
    };
    let first = |q: &str| search(q)[0]["slug"].as_str().unwrap().to_string();
    assert_eq!(first("strnger thngs"), "stranger-things");
    assert_eq!(
        search("strnger thngs")[0]["highlight"],
        "<b>Stranger</b> <b>Things</b>"
    );
    assert_eq!(first("strange"), "strange-days", "exact before prefix");
    assert_eq!(
        first("stranger th"),
        "stranger-things",
        "the last word as a prefix"
    );
    assert_eq!(first("amelie"), "amelie");
    assert_eq!(first("기생충"), "parasite");
    assert_eq!(first("winona"), "stranger-things", "cast is searched");
    assert!(search("qqqqqqqq").is_empty());
    for (q, reason) in [("", "q must be"), ("x&limit=0", "limit must be 1 to 50")] {
        let r = curl(&[&format!("{api}/v1/search?q={q}")]);
        assert_eq!(r.status, 400);
        assert!(
            json(&r)["reason"].as_str().unwrap().contains(reason),
            "{}",
            r.text()
        );
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
