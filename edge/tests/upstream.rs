//! How the edge treats its upstream's answers: a changed object is refetched, never mixed across versions;
//! responses that may not be stored, and errors, are passed through; an unreachable upstream is a 502 with a
//! reason.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use testkit::{
    TEST_CLOCK, TEST_CLOCK_TOKEN, TempStore, TestCerts, advance_clock, curl, start_edge,
    start_origin,
};

const MIB: usize = 1 << 20;

#[test]
fn a_changed_object_is_refetched_not_mixed() {
    let store = TempStore::new();
    let old: Vec<u8> = (0..5 * MIB).map(|i| (i % 199) as u8).collect();
    let new: Vec<u8> = (0..5 * MIB).map(|i| (i % 211) as u8).collect();
    store.put("t/video.mp4", &old);
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, TEST_CLOCK);
    let url = format!(
        "http://127.0.0.1:{}/t/video.mp4",
        edge.addr("http_addr").port()
    );

    // Cache only the first slice of the old version.
    let first = curl(&["-r", "0-99", &url]);
    assert_eq!(first.body, old[..100]);
    let old_etag = first.header("etag").unwrap().to_string();
    // The object changes upstream (same length, new validator).
    // A new modification time (an hour on, set rather than waited for), hence a new ETag.
    let file = store.put("t/video.mp4", &new);
    let later_mtime = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&file)
        .and_then(|f| f.set_modified(later_mtime))
        .unwrap();
    // A range in slice 2: the edge sees the new validator and refetches; no byte of the old version is served.
    let later = curl(&["-r", "4194304-4194403", &url]);
    assert_eq!(later.status, 206, "{}", later.text());
    assert_eq!(later.body, new[4194304..4194404]);
    assert_ne!(later.header("etag"), Some(old_etag.as_str()));
    // Slice 0 is now the new version too.
    let whole = curl(&[&url]);
    assert!(whole.body == new, "the whole object is the new version");
    let metrics = curl(&[
        "-H",
        &format!("Authorization: Bearer {TEST_CLOCK_TOKEN}"),
        &format!("{}/metrics", edge.url("admin_addr")),
    ])
    .text();
    assert!(
        metrics.contains("edge_upstream_errors_total{kind=\"validator_changed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn unstorable_responses_and_errors_pass_through() {
    let store = TempStore::new();
    store.put("t/meta.json", b"{\"private\": true}");
    store.put("t/seg.ts", &[1u8; 1000]);
    // The origin marks everything that is not a segment or manifest `no-store`.
    let origin = start_origin(&store.url(), "[cache_control]\nother = \"no-store\"\n");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, TEST_CLOCK);
    let base = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());

    for _ in 0..2 {
        let r = curl(&[&format!("{base}/t/meta.json")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "{\"private\": true}");
        assert_eq!(
            r.header("cache-status"),
            Some("edge-test; fwd=uri-miss; detail=no-store"),
            "passed, not stored"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let ranged = curl(&["-r", "2-8", &format!("{base}/t/meta.json")]);
    assert_eq!((ranged.status, ranged.text().as_str()), (206, "private"));

    let missing = curl(&[&format!("{base}/t/missing.ts")]);
    assert_eq!(missing.status, 404);
    assert!(
        missing.text().contains("no object at /t/missing.ts"),
        "the origin's reason: {}",
        missing.text()
    );

    let stored = curl(&[&format!("{base}/t/seg.ts")]);
    assert_eq!(
        stored.cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );

    // The origin goes away: cached objects are still served, others get 502 with a reason.
    assert!(origin.stop());
    assert!(
        curl(&[&format!("{base}/t/seg.ts")])
            .header("cache-status")
            .unwrap()
            .contains("; hit")
    );
    let down = curl(&[&format!("{base}/t/other.ts")]);
    assert_eq!(down.status, 502);
    assert!(down.text().contains("unreachable"), "{}", down.text());
    let metrics = curl(&[
        "-H",
        &format!("Authorization: Bearer {TEST_CLOCK_TOKEN}"),
        &format!("{}/metrics", edge.url("admin_addr")),
    ])
    .text();
    assert!(
        metrics.contains("edge_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );
}

#[test]
fn cdn_cache_control_age_and_stale_refetch() {
    use testkit::TrickleOrigin;
    let origin = TrickleOrigin::start(10_000, 100 << 20);
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url(), cache.path(), &certs, TEST_CLOCK);
    let base = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());

    // RFC 9213: the targeted field overrides Cache-Control for the edge and is not passed to clients.
    *origin.cache_headers.lock().unwrap() =
        "Cache-Control: no-store\r\nCDN-Cache-Control: max-age=600\r\n".into();
    let first = curl(&[&format!("{base}/cdn.ts")]);
    assert_eq!(
        first.cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    assert_eq!(
        first.header("cache-control"),
        Some("no-store"),
        "clients get the origin's Cache-Control"
    );
    assert_eq!(
        first.header("cdn-cache-control"),
        None,
        "the targeted field is not forwarded"
    );
    let second = curl(&[&format!("{base}/cdn.ts")]);
    assert!(
        second
            .header("cache-status")
            .unwrap()
            .contains("; hit; ttl="),
        "stored for the targeted lifetime"
    );

    // Age: the upstream's Age is carried and grows.
    *origin.cache_headers.lock().unwrap() = "Cache-Control: max-age=3600\r\nAge: 100\r\n".into();
    let aged = curl(&[&format!("{base}/aged.ts")]);
    let age: u64 = aged.header("age").unwrap().parse().unwrap();
    assert!((100..110).contains(&age), "Age {age}");
    let ttl = curl(&[&format!("{base}/aged.ts")])
        .header("cache-status")
        .unwrap()
        .to_string();
    let ttl: u64 = ttl.rsplit("ttl=").next().unwrap().parse().unwrap();
    assert!(
        ttl <= 3500,
        "freshness left accounts for the initial age: {ttl}"
    );

    // A stale entry is fetched again and says why.
    *origin.cache_headers.lock().unwrap() = "Cache-Control: max-age=1\r\n".into();
    assert_eq!(
        curl(&[&format!("{base}/short.ts")]).cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    advance_clock(&edge, TEST_CLOCK_TOKEN, 2);
    let again = curl(&[&format!("{base}/short.ts")]);
    assert_eq!(again.cache_status(), Some("edge-test; fwd=stale; stored"));
    let logged = edge.wait_for_event("access", |e| e["fwd"] == "stale");
    assert_eq!(logged["cache_status"], "miss");
}

#[test]
fn stale_objects_are_revalidated_and_keep_their_slices() {
    let store = TempStore::new();
    let v1: Vec<u8> = (0..3 * MIB).map(|i| (i % 193) as u8).collect();
    store.put("t/seg.ts", &v1);
    // Ages count in whole seconds: with max-age=1 a second boundary between the revalidation and the next
    // request would make the refreshed copy stale again at once.
    let origin = start_origin(
        &store.url(),
        "[cache_control]\nsegment = \"public, max-age=2\"\n",
    );
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, TEST_CLOCK);
    let url = format!(
        "http://127.0.0.1:{}/t/seg.ts",
        edge.addr("http_addr").port()
    );
    let origin_requests = || {
        origin
            .log_events("access")
            .into_iter()
            .filter(|e| e["path"] == "/t/seg.ts")
            .count()
    };

    assert_eq!(
        curl(&[&url]).cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    let wait = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while origin_requests() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "origin requests: {}",
                origin_requests()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    wait(1); // both slices, in one request (a new object's first fill)
    advance_clock(&edge, TEST_CLOCK_TOKEN, 2);

    // Stale: one conditional request (304), the slices stay, the body is the same.
    let revalidated = curl(&["--http2-prior-knowledge", &url]);
    let status = revalidated.header("cache-status").unwrap().to_string();
    assert!(
        status.starts_with("edge-test; fwd=stale; fwd-status=304; ttl="),
        "{status}"
    );
    assert!(revalidated.body == v1);
    wait(2);
    let conditional = origin.wait_for_event("access", |e| e["status"] == 304);
    // The conditional request asks for the first slice: a 200 or 206 would be the new version's first slice.
    assert_eq!(conditional["range"], "bytes=0-2097151");
    assert_eq!(
        origin_requests(),
        2,
        "one revalidation for the object, not one per slice"
    );
    assert!(
        curl(&[&url])
            .header("cache-status")
            .unwrap()
            .contains("; hit; ttl="),
        "fresh again"
    );

    // Changed upstream: the revalidation finds it, the new version is fetched.
    advance_clock(&edge, TEST_CLOCK_TOKEN, 2);
    let v2: Vec<u8> = (0..3 * MIB).map(|i| (i % 197) as u8).collect();
    store.put("t/seg.ts", &v2);
    let changed = curl(&[&url]);
    assert_eq!(changed.cache_status(), Some("edge-test; fwd=stale; stored"));
    assert!(changed.body == v2);
    let metrics = curl(&[
        "-H",
        &format!("Authorization: Bearer {TEST_CLOCK_TOKEN}"),
        &format!("{}/metrics", edge.url("admin_addr")),
    ])
    .text();
    assert!(
        metrics.contains("cache_status=\"revalidated\""),
        "{metrics}"
    );
}

#[test]
fn stale_while_revalidate_and_stale_if_error() {
    let store = TempStore::new();
    store.put("t/seg.ts", &[3u8; 300_000]);
    store.put("t/meta.json", b"{\"title\": \"x\"}");
    let classes = "[cache_control]\nsegment = \"public, max-age=1, stale-while-revalidate=30\"\n\
                   other = \"public, max-age=1, stale-if-error=60\"\n";
    let origin = start_origin(&store.url(), classes);
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, TEST_CLOCK);
    let base = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());
    let get = |path: &str| curl(&[&format!("{base}{path}")]);
    assert_eq!(
        get("/t/seg.ts").cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    assert_eq!(
        get("/t/meta.json").cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    advance_clock(&edge, TEST_CLOCK_TOKEN, 2);

    // stale-while-revalidate: the stale copy at once, one revalidation in the background.
    let stale = get("/t/seg.ts");
    let status = stale.header("cache-status").unwrap().to_string();
    assert!(
        status.starts_with("edge-test; hit; ttl=-")
            && status.ends_with("detail=stale-while-revalidate"),
        "{status}"
    );
    assert_eq!(stale.body, vec![3u8; 300_000]);
    origin.wait_for_event("access", |e| e["status"] == 304 && e["path"] == "/t/seg.ts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = get("/t/seg.ts").header("cache-status").unwrap().to_string();
        if status.starts_with("edge-test; hit; ttl=") && !status.contains("ttl=-") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not refreshed by the background revalidation: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // stale-if-error: the upstream is gone, the stale copy is served and says why.
    assert!(origin.stop());
    let fallback = get("/t/meta.json");
    assert_eq!(fallback.status, 200);
    assert_eq!(fallback.text(), "{\"title\": \"x\"}");
    let status = fallback.header("cache-status").unwrap().to_string();
    assert!(
        status.starts_with("edge-test; fwd=stale; ttl=-")
            && status.ends_with("detail=stale-if-error"),
        "{status}"
    );
    // Without a stale-if-error window an unreachable upstream is still a 502.
    assert_eq!(get("/t/never-cached.ts").status, 502);
}
