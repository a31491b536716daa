//! The edge's certificate is reloaded on SIGHUP: new connections get the new certificate, a download in flight
//! on an old connection completes, and a broken certificate file keeps the old one.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use testkit::{TempStore, TestCerts, curl, start_edge, start_origin, try_curl};

#[test]
fn sighup_swaps_the_certificate_without_dropping_connections() {
    let store = TempStore::new();
    store.put_sparse("t/big.ts", 48 << 20);
    let origin = start_origin(&store.url(), "");
    let (first, second, cache) = (
        TestCerts::generate(),
        TestCerts::generate(),
        tempfile::tempdir().unwrap(),
    );
    // The edge reads its certificate from these paths; start with the first CA's.
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
    let url = format!(
        "https://localhost:{}/t/big.ts",
        edge.addr("tls_addr").port()
    );
    let (ca1, ca2) = (first.ca(), second.ca());
    let (ca1, ca2) = (
        ca1.to_str().unwrap().to_string(),
        ca2.to_str().unwrap().to_string(),
    );
    assert_eq!(curl(&["--cacert", &ca1, "-r", "0-99", &url]).status, 206);
    assert!(try_curl(&["--cacert", &ca2, "-r", "0-99", &url]).is_err());

    // A slow download on a connection made with the first certificate (about 3 s).
    let slow = {
        let (ca1, url) = (ca1.clone(), url.clone());
        std::thread::spawn(move || {
            curl(&["--http2", "--cacert", &ca1, "--limit-rate", "16M", &url])
        })
    };
    // Wait until its connection is open (the edge counts it), then swap the certificate.
    let admin = format!("{}/metrics", edge.url("admin_addr"));
    let opened = Instant::now() + Duration::from_secs(10);
    while !curl(&[&admin])
        .text()
        .contains("edge_http_connections_open{listener=\"tls\"} 1")
    {
        assert!(Instant::now() < opened, "the slow download never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::copy(second.cert(), &cert).unwrap();
    std::fs::copy(second.key(), &key).unwrap();
    edge.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_curl(&["--cacert", &ca2, "-r", "0-99", &url]).is_err() {
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        try_curl(&["--cacert", &ca1, "-r", "0-99", &url]).is_err(),
        "new connections use the new certificate"
    );
    let download = slow.join().unwrap();
    assert_eq!(
        (download.status, download.body.len()),
        (200, 48 << 20),
        "the old connection was not dropped"
    );

    // A broken file: the reload fails, the current certificate stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    edge.signal("HUP");
    while !curl(&[&admin])
        .text()
        .contains("edge_tls_certificate_reloads_total{result=\"error\"} 1")
    {
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "the failed reload was not counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(curl(&["--cacert", &ca2, "-r", "0-99", &url]).status, 206);
}

/// An edge with no TLS listener (plain HTTP behind a terminator) takes SIGHUP (`systemctl reload edge`) as a
/// no-op: it logs that there is nothing to reload and serves on, rather than dying of the signal's default.
#[test]
fn sighup_without_a_tls_listener_is_harmless() {
    let store = TempStore::new();
    store.put("t/a.ts", b"0123456789");
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(
        &origin.url("media_addr"),
        cache.path(),
        &certs,
        "[tls]\nlisten = \"\"\n",
    );
    let url = format!("{}/t/a.ts", edge.url("http_addr"));
    assert_eq!(curl(&[&url]).status, 200);
    edge.signal("HUP");
    edge.wait_for_event("edge::server", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no certificate to reload"))
    });
    assert_eq!(curl(&[&url]).status, 200, "the edge serves on after SIGHUP");
}
