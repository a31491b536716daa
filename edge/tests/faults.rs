//! The edge under load and faults: a herd on a cold object from a slow origin (one upstream request for the first
//! four slices, then one per slice; waiters' first byte right behind the origin's), an origin that dies mid-body (every client aborted, nothing
//! cached, the next request whole), a restart on the same cache folder (the first request is a disk hit), an
//! upstream that lies about its length, breaks its chunking or stalls (cut, never cached), an upstream not there
//! at start (502 with the reason, then served once it comes up, no restart), and the control plane down (edges
//! keep serving and verifying tokens). The disk tier's faults are in `disk.rs`.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use testkit::{TempStore, TestCerts, TrickleOrigin, curl, start_edge, start_origin, try_curl};

const MIB: u64 = 1 << 20;

#[test]
fn a_herd_on_a_cold_object_costs_one_upstream_request_for_its_first_slices_and_streams() {
    const LEN: u64 = 10 * MIB;
    const WAITERS: usize = 200;
    // 2 MiB/s: each slice takes about 1 s to arrive, the object 5 s. A store-and-forward cache would give its
    // waiters their first byte only after the first slice had arrived (1 s); a streaming one within a few ms
    // (plus the CPU time 200 responses take, which a loaded 2-core machine stretches).
    let origin = TrickleOrigin::start(LEN, 2 * MIB);
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url(), cache.path(), &certs, "");
    let url: http::Uri = format!(
        "http://127.0.0.1:{}/herd/cold.ts",
        edge.addr("http_addr").port()
    )
    .parse()
    .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async move {
        let client =
            Arc::new(Client::builder(TokioExecutor::new()).build_http::<Empty<bytes::Bytes>>());
        let start = Arc::new(tokio::sync::Barrier::new(WAITERS));
        let mut tasks = Vec::new();
        for _ in 0..WAITERS {
            let (client, url, start) = (Arc::clone(&client), url.clone(), Arc::clone(&start));
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let response = client.get(url).await.expect("response");
                let status = response.status().as_u16();
                let mut body = response.into_body();
                let mut first_byte = None;
                let mut received = Vec::with_capacity(LEN as usize);
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame.expect("body").into_data() {
                        first_byte.get_or_insert_with(Instant::now);
                        received.extend_from_slice(&data);
                    }
                }
                (status, first_byte.expect("some body"), received)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });

    let stats = origin.stats.lock().unwrap();
    let mut ranges: Vec<_> = stats
        .requests
        .iter()
        .map(|r| r.clone().unwrap_or_default())
        .collect();
    ranges.sort();
    // The first four slices (8 MiB) in one request, as every peer fetches a segment; the fifth, read ahead while
    // the fourth streams, by itself.
    assert_eq!(
        ranges,
        ["bytes=0-8388607", "bytes=8388608-10485759"],
        "one upstream request for the first four slices, one for the rest"
    );
    let expected: Vec<u8> = (0..LEN).map(TrickleOrigin::byte).collect();
    let origin_first_byte = stats.first_byte_sent[0];
    let mut delays_ms = Vec::new();
    for (status, first_byte, body) in &results {
        assert_eq!(*status, 200);
        assert!(
            body == &expected,
            "every waiter got the whole object, byte for byte"
        );
        delays_ms.push(
            first_byte
                .saturating_duration_since(origin_first_byte)
                .as_secs_f64()
                * 1000.0,
        );
    }
    delays_ms.sort_by(f64::total_cmp);
    let mean = delays_ms.iter().sum::<f64>() / delays_ms.len() as f64;
    let (p50, max) = (
        delays_ms[delays_ms.len() / 2],
        delays_ms[delays_ms.len() - 1],
    );
    eprintln!(
        "herd of {WAITERS}: waiters' first byte after the origin's first byte: mean {mean:.1} ms, p50 {p50:.1} ms, \
         max {max:.1} ms (the first slice takes ~1000 ms to arrive)"
    );
    // Streaming, not store-and-forward: waiters start long before the first slice has arrived.
    assert!(mean < 500.0, "mean first-byte delay {mean:.1} ms");
    let statuses: Vec<String> = edge
        .log_events("access")
        .iter()
        .map(|e| e["cache_status"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "miss").count(),
        1,
        "one request started the fill"
    );
    assert_eq!(
        statuses.iter().filter(|s| *s == "coalesced").count(),
        WAITERS - 1
    );
}

#[test]
fn an_origin_dying_mid_body_aborts_every_client_and_caches_nothing() {
    const LEN: u64 = 2 * MIB; // one slice
    // 4 MiB/s: the cut after 1 MiB comes ~250 ms in, after every client has joined the fill.
    let origin = TrickleOrigin::start(LEN, 4 * MIB);
    *origin.cut_after.lock().unwrap() = Some(MIB);
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url(), cache.path(), &certs, "");
    let plain = format!("http://127.0.0.1:{}/dies.ts", edge.addr("http_addr").port());
    let tls = format!("https://localhost:{}/dies.ts", edge.addr("tls_addr").port());
    let ca = certs.ca().to_str().unwrap().to_string();

    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (plain, tls, ca) = (plain.clone(), tls.clone(), ca.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    try_curl(&["--http1.1", &plain])
                } else {
                    try_curl(&["--http2", "--cacert", &ca, &tls])
                }
            })
        })
        .collect();
    for client in clients {
        let result = client.join().unwrap();
        let err = result
            .expect_err("a response cut mid-body must fail at the client, never look complete");
        assert!(
            err.contains("exit status: 18")
                || err.contains("exit status: 92")
                || err.contains("exit status: 56"),
            "{err}"
        );
    }
    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    assert!(
        metrics.contains("edge_upstream_errors_total{kind=\"body\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("edge_cache_slices_stored_total 0"),
        "nothing stored:\n{metrics}"
    );

    // The origin is back: the next request fills the whole object correctly, the one after is a hit.
    let expected: Vec<u8> = (0..LEN).map(TrickleOrigin::byte).collect();
    let again = curl(&["--http2", "--cacert", &ca, &tls]);
    assert_eq!(again.status, 200);
    assert!(
        again.body == expected,
        "whole and correct after the failure"
    );
    assert!(!again.header("cache-status").unwrap().contains("hit"));
    let hit = curl(&["--http1.1", &plain]);
    assert!(hit.header("cache-status").unwrap().contains("; hit"));
    assert!(hit.body == expected);
}

#[test]
fn a_restarted_edge_serves_from_its_disk_cache_at_once() {
    let store = TempStore::new();
    let segment: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    store.put("t/seg.ts", &segment);
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let upstream = origin.url("media_addr");

    let edge = start_edge(&upstream, cache.path(), &certs, "");
    let url = |edge: &testkit::ServerProcess| {
        format!(
            "http://127.0.0.1:{}/t/seg.ts",
            edge.addr("http_addr").port()
        )
    };
    let first = curl(&[&url(&edge)]);
    assert_eq!(
        first.cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    assert!(edge.stop(), "clean stop");
    // Without an origin, only the cache can answer.
    assert!(origin.stop());

    let edge = start_edge(&upstream, cache.path(), &certs, "");
    let again = curl(&[&url(&edge)]);
    assert_eq!(again.status, 200);
    assert!(
        again
            .header("cache-status")
            .unwrap()
            .starts_with("edge-test; hit"),
        "{:?}",
        again.header("cache-status")
    );
    assert!(again.body == segment);
    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    let disk_reads = metrics
        .lines()
        .filter(|l| l.starts_with("edge_cache_lookups_total") && l.contains("result=\"disk\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum::<u64>();
    assert!(
        disk_reads >= 2,
        "metadata and slice read from disk:\n{metrics}"
    );
    std::thread::sleep(Duration::from_millis(10));
}

/// An origin that answers every request for a path with the bytes scripted for it, then holds the connection
/// for a while and closes it: for framing faults no HTTP library would send.
struct RawOrigin {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl RawOrigin {
    fn start(script: fn(&str) -> (Vec<u8>, Duration)) -> RawOrigin {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_by_origin = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let seen = Arc::clone(&seen_by_origin);
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                            break;
                        }
                    }
                    seen.lock().unwrap().push(path.clone());
                    let (bytes, hold) = script(&path);
                    let mut stream = stream;
                    let _ = stream.write_all(&bytes);
                    std::thread::sleep(hold);
                });
            }
        });
        RawOrigin { addr, seen }
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn framing_fault(path: &str) -> (Vec<u8>, Duration) {
    let head = |fields: &str| {
        format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=3600\r\n{fields}\r\n").into_bytes()
    };
    // `n` chunks of 4 KiB each, well formed.
    let chunks = |n: usize| -> Vec<u8> {
        let mut framed = Vec::new();
        for _ in 0..n {
            framed.extend(b"1000\r\n");
            framed.extend(vec![7u8; 0x1000]);
            framed.extend(b"\r\n");
        }
        framed
    };
    let mut answer;
    let mut hold = Duration::ZERO;
    match path {
        // Says 100,000 bytes, sends half and closes.
        "/short.bin" => {
            answer = head("Content-Length: 100000\r\n");
            answer.extend(vec![7u8; 50_000]);
        }
        // A chunk size that is not hex.
        "/bad-chunk.bin" => {
            answer = head("Transfer-Encoding: chunked\r\n");
            answer.extend(chunks(1));
            answer.extend(b"zz-not-hex\r\n");
        }
        // Chunks, then the connection closes without the last (empty) chunk.
        "/unterminated.bin" => {
            answer = head("Transfer-Encoding: chunked\r\n");
            answer.extend(chunks(4));
        }
        // Whole and well-formed, its length known only at its end: served, not stored.
        "/chunked.bin" => {
            answer = head("Transfer-Encoding: chunked\r\n");
            answer.extend(chunks(2));
            answer.extend(b"0\r\n\r\n");
        }
        // Half the body, then nothing for longer than the edge's body idle timeout.
        "/stalled.bin" => {
            answer = head("Content-Length: 100000\r\n");
            answer.extend(vec![7u8; 50_000]);
            hold = Duration::from_secs(4);
        }
        _ => answer = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
    }
    (answer, hold)
}

#[test]
fn an_upstream_that_lies_about_its_length_breaks_its_chunking_or_stalls_is_cut_and_never_cached() {
    let origin = RawOrigin::start(framing_fault);
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(
        &format!("http://{}", origin.addr),
        cache.path(),
        &certs,
        "[limits]\nupstream_body_idle_timeout_secs = 1\n",
    );
    let base = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());
    for path in [
        "/short.bin",
        "/bad-chunk.bin",
        "/unterminated.bin",
        "/stalled.bin",
    ] {
        for (attempt, proto) in ["--http1.1", "--http2-prior-knowledge"]
            .into_iter()
            .enumerate()
        {
            let answer = try_curl(&[proto, "--max-time", "20", &format!("{base}{path}")]);
            // Cut short (curl says the transfer ended early) or refused with a 502; never a 200 that ends
            // as if complete.
            match &answer {
                Err(cut) => assert!(
                    cut.contains("(18)")
                        || cut.contains("(92)")
                        || cut.contains("(56)")
                        || cut.contains("(16)"),
                    "{path}: {cut}"
                ),
                Ok(r) => assert_eq!(
                    r.status, 502,
                    "{path} over {proto}: {} {:?}",
                    r.status, r.headers
                ),
            }
            match &answer {
                Err(cut) => eprintln!(
                    "{path} over {proto}: cut: {}",
                    cut.lines().next().unwrap_or("")
                ),
                Ok(r) => eprintln!("{path} over {proto}: {} {}", r.status, r.text()),
            }
            // Nothing was kept: each request went upstream.
            assert_eq!(origin.count(path), attempt + 1, "{path}: {answer:?}");
        }
    }
    for attempt in 1..=2 {
        let whole = curl(&["--http2-prior-knowledge", &format!("{base}/chunked.bin")]);
        assert_eq!(whole.status, 200, "{}", whole.text());
        assert!(whole.body == vec![7u8; 0x2000]);
        assert_eq!(
            whole.cache_status(),
            Some("edge-test; fwd=uri-miss; detail=unknown-length")
        );
        assert_eq!(origin.count("/chunked.bin"), attempt);
    }
    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    assert!(
        metrics.contains("edge_upstream_errors_total{kind=\"body\"}"),
        "{metrics}"
    );
    assert!(edge.stop(), "clean stop");
}

#[test]
fn an_upstream_not_there_at_start_is_a_502_with_its_reason_until_it_comes_up() {
    let store = TempStore::new();
    store.put("v/seg.ts", &[9u8; 5000]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(
        &format!("http://127.0.0.1:{port}"),
        cache.path(),
        &certs,
        "",
    );
    let url = format!(
        "http://127.0.0.1:{}/v/seg.ts",
        edge.addr("http_addr").port()
    );
    let since = Instant::now();
    let refused = curl(&[&url]);
    assert_eq!(refused.status, 502, "{}", refused.text());
    assert!(refused.text().contains("connect"), "{}", refused.text());
    assert!(
        since.elapsed() < Duration::from_secs(10),
        "{:?}",
        since.elapsed()
    );

    let _origin = start_origin(
        &store.url(),
        &format!("[media]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    // Served once the upstream is there (after the failing URL's back-off), without a restart.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = curl(&[&url]);
        if answer.status == 200 {
            assert_eq!(answer.body, vec![9u8; 5000]);
            break;
        }
        assert_eq!(answer.status, 502, "{}", answer.text());
        assert!(Instant::now() < deadline, "never served: {}", answer.text());
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn with_the_control_plane_down_edges_keep_serving_and_verifying_tokens() {
    const SECRET: &str = "faults-test signing secret, 32+ bytes";
    let store = TempStore::with_samples();
    let media = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let keys = format!("[[signing_key]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n");
    let edge = start_edge(
        &media.url("media_addr"),
        cache.path(),
        &certs,
        &format!(
            "{keys}[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{}\"\nsigned_paths = [\"/titles/\"]\n",
            media.url("media_addr")
        ),
    );
    let port = edge.addr("tls_addr").port();
    let control = start_origin(
        &store.url(),
        &format!("{keys}[playback]\nedges = [\"https://127.0.0.1:{port}\"]\n"),
    );
    let playback = curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"title\": \"test-pattern\", \"protocol\": \"hls\"}",
        &format!("{}/v1/playback", control.url("api_addr")),
    ]);
    assert_eq!(playback.status, 200, "{}", playback.text());
    let playback: serde_json::Value = serde_json::from_slice(&playback.body).unwrap();
    let master = playback["edges"][0]["manifests"]["hls-ts"]
        .as_str()
        .unwrap_or_else(|| panic!("a signed HLS URL: {playback}"))
        .to_string();
    assert!(control.stop(), "the control plane stops");

    let ca = certs.ca();
    let get = |url: &str| curl(&["--cacert", ca.to_str().unwrap(), url]);
    let signed_base = master.trim_end_matches("master.m3u8");
    for path in ["master.m3u8", "v0/index.m3u8", "v0/seg_000.ts"] {
        let answer = get(&format!("{signed_base}{path}"));
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
    }
    // A tampered token and one used for another title are still refused.
    let tampered = master.replacen("/t/", "/t/A", 1);
    assert_eq!(get(&tampered).status, 403);
    let other_title = master.replace("test-pattern", "mandelbrot");
    let refused = get(&other_title);
    assert_eq!(refused.status, 403, "{}", refused.text());
}
