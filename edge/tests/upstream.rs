//! How the edge treats its upstream's answers: a changed object is refetched, never mixed across versions;
//! responses that may not be stored, and errors, are passed through; an unreachable upstream is a 502 with a
//! reason.

use shared::testkit::{TempStore, TestCerts, curl, start_edge, start_origin};

const MIB: usize = 1 << 20;

#[test]
fn a_changed_object_is_refetched_not_mixed() {
    let store = TempStore::new();
    let old: Vec<u8> = (0..5 * MIB).map(|i| (i % 199) as u8).collect();
    let new: Vec<u8> = (0..5 * MIB).map(|i| (i % 211) as u8).collect();
    store.put("t/video.mp4", &old);
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, "");
    let url = format!(
        "http://127.0.0.1:{}/t/video.mp4",
        edge.addr("http_addr").port()
    );

    // Cache only the first slice of the old version.
    let first = curl(&["-r", "0-99", &url]);
    assert_eq!(first.body, old[..100]);
    let old_etag = first.header("etag").unwrap().to_string();
    // The object changes upstream (same length, new validator).
    std::thread::sleep(std::time::Duration::from_millis(1100)); // a new mtime, hence a new ETag
    store.put("t/video.mp4", &new);
    // A range in slice 2: the edge sees the new validator and refetches; no byte of the old version is served.
    let later = curl(&["-r", "4194304-4194403", &url]);
    assert_eq!(later.status, 206, "{}", later.text());
    assert_eq!(later.body, new[4194304..4194404]);
    assert_ne!(later.header("etag"), Some(old_etag.as_str()));
    // Slice 0 is now the new version too.
    let whole = curl(&[&url]);
    assert!(whole.body == new, "the whole object is the new version");
    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
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
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, "");
    let base = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());

    for _ in 0..2 {
        let r = curl(&[&format!("{base}/t/meta.json")]);
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "{\"private\": true}");
        assert_eq!(
            r.header("cache-status"),
            Some("edge-test; fwd=uri-miss"),
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
        stored.header("cache-status"),
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
    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    assert!(
        metrics.contains("edge_upstream_errors_total{kind=\"connect\"} 1"),
        "{metrics}"
    );
}
