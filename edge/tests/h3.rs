//! HTTP/3 through the same pipeline and cache as HTTP/1.1 and HTTP/2, with two independent clients (aioquic and
//! libcurl's ngtcp2): misses and hits with bytes identical to the origin's, ranges, Alt-Svc on TCP, metrics
//! and the access log's protocol.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use testkit::{H3Client, TempStore, TestCerts, curl, h3_get, start_edge, start_origin};

#[test]
fn segments_and_ranges_over_http3_match_the_origin() {
    let store = TempStore::with_samples();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i % 233) as u8).collect();
    store.put("t/big.ts", &big);
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, "");
    let port = edge.addr("h3_addr").port();
    assert_eq!(
        port,
        edge.addr("tls_addr").port(),
        "HTTP/3 on the TLS listener's port number"
    );
    let url = |key: &str| format!("https://localhost:{port}/{key}");
    let ca = certs.ca();

    let keys = [
        "titles/test-pattern/hls/master.m3u8",
        "titles/test-pattern/hls/v0/seg_001.ts",
        "titles/mandelbrot/cmaf/manifest.mpd",
        "titles/mandelbrot/cmaf/chunk-0-00002.m4s",
        "titles/test-pattern/subs/en.vtt",
    ];
    for key in keys {
        let want = std::fs::read(store.path().join(key)).unwrap();
        let first = h3_get(H3Client::Curl, &url(key), &ca, None).unwrap();
        assert_eq!(
            (first.status, first.protocol.as_str()),
            (200, "h3"),
            "{key}"
        );
        assert_eq!(
            first
                .headers
                .get("cache-status")
                .and_then(|s| s.split("; ttl=").next()),
            Some("edge-test; fwd=uri-miss; stored")
        );
        assert!(first.body == want, "{key}: curl h3 body");
        let second = h3_get(H3Client::Aioquic, &url(key), &ca, None).unwrap();
        assert!(
            second.headers["cache-status"].starts_with("edge-test; hit"),
            "{key}"
        );
        assert!(second.body == want, "{key}: aioquic body");
    }

    // A 5 MB object (three slices) filled over HTTP/3, then ranges from the cache, across a slice boundary too.
    let full = h3_get(H3Client::Aioquic, &url("t/big.ts"), &ca, None).unwrap();
    assert_eq!(full.status, 200);
    assert!(
        full.body == big,
        "a miss streamed over HTTP/3 is byte-identical"
    );
    for (client, range, span) in [
        (H3Client::Curl, "0-999", 0..1000),
        (H3Client::Aioquic, "2097000-2098000", 2097000..2098001),
        (H3Client::Curl, "-100", big.len() - 100..big.len()),
    ] {
        let part = h3_get(client, &url("t/big.ts"), &ca, Some(range)).unwrap();
        assert_eq!(part.status, 206, "{range}");
        assert!(part.body == big[span.clone()], "{client:?} {range}");
        assert_eq!(
            part.headers["content-range"],
            format!("bytes {}-{}/{}", span.start, span.end - 1, big.len())
        );
    }

    // Every TCP response advertises HTTP/3.
    let tcp = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().unwrap(),
        "-I",
        &url("t/big.ts"),
    ]);
    assert_eq!(
        tcp.header("alt-svc"),
        Some(format!("h3=\":{port}\"; ma=86400").as_str())
    );

    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    assert!(metrics.contains("edge_http_requests_total{cache_status=\"hit\",method=\"GET\",protocol=\"h3\",status_class=\"2xx\"}"), "{metrics}");
    let quic_connections = metrics
        .lines()
        .find(|l| l.starts_with("edge_quic_connections_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap();
    assert!(
        quic_connections >= 13,
        "one QUIC connection per client run: {quic_connections}"
    );
    let h3_lines = edge
        .log_events("access")
        .into_iter()
        .filter(|e| e["protocol"] == "h3")
        .count();
    assert!(
        h3_lines >= 13,
        "access log lines with protocol h3: {h3_lines}"
    );
}

#[test]
fn http3_drains_on_shutdown_and_picks_up_a_reloaded_certificate() {
    let store = TempStore::new();
    let big: Vec<u8> = (0..24_000_000u32).map(|i| (i % 229) as u8).collect();
    store.put("t/big.ts", &big);
    let origin = start_origin(&store.url(), "");
    let (first, second, cache) = (
        TestCerts::generate(),
        TestCerts::generate(),
        tempfile::tempdir().unwrap(),
    );
    let live = tempfile::tempdir().unwrap();
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(first.cert(), &cert).unwrap();
    std::fs::copy(first.key(), &key).unwrap();
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &first, &extra);
    let url = format!("https://localhost:{}/t/big.ts", edge.addr("h3_addr").port());
    assert_eq!(
        h3_get(H3Client::Curl, &url, &first.ca(), Some("0-99"))
            .unwrap()
            .status,
        206
    );

    // New QUIC connections get the reloaded certificate.
    std::fs::copy(second.cert(), &cert).unwrap();
    std::fs::copy(second.key(), &key).unwrap();
    edge.signal("HUP");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while h3_get(H3Client::Curl, &url, &second.ca(), Some("0-99")).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "HTTP/3 still serves the old certificate"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(h3_get(H3Client::Aioquic, &url, &first.ca(), Some("0-99")).is_err());

    // A download in flight when the edge is told to stop completes (GOAWAY, then drain).
    let (url_for_thread, ca) = (url.clone(), second.ca());
    let download =
        std::thread::spawn(move || h3_get(H3Client::Aioquic, &url_for_thread, &ca, None));
    let metrics = format!("{}/metrics", edge.url("admin_addr"));
    while !curl(&[&metrics])
        .text()
        .contains("edge_quic_connections_open 1")
    {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(10),
            "no QUIC download"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    edge.terminate();
    let response = download
        .join()
        .unwrap()
        .expect("the in-flight HTTP/3 download completes");
    assert_eq!(response.status, 200);
    assert!(response.body == big);
    assert!(edge.wait_exit(), "clean exit after the drain");
}
