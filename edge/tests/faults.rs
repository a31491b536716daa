//! The edge under load and faults: a herd on a cold object from a slow origin (one upstream request per slice,
//! waiters' first byte right behind the origin's), an origin that dies mid-body (every client aborted, nothing
//! cached, the next request whole), and a restart on the same cache folder (the first request is a disk hit).

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
fn herd_on_a_cold_object_makes_one_upstream_request_per_slice_and_streams_to_every_waiter() {
    const LEN: u64 = 8 * MIB;
    const WAITERS: usize = 200;
    // 2 MiB/s: each slice takes about 1 s to arrive, the object 4 s. A store-and-forward cache would give its
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
    assert_eq!(
        ranges,
        [
            "bytes=0-2097151",
            "bytes=2097152-4194303",
            "bytes=4194304-6291455",
            "bytes=6291456-8388607"
        ],
        "exactly one upstream request per slice"
    );
    let expected: Vec<u8> = (0..LEN).map(TrickleOrigin::byte).collect();
    let origin_first_byte = stats.first_byte_sent[1];
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
