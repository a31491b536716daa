//! Connection limits: idle connections are closed (HTTP/1.1 and HTTP/2, which hyper alone never closes), and a
//! client that trickles its request head is cut off at the header-read timeout.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use testkit::{TempStore, TestCerts, start_edge, start_origin};

/// Reads until the server closes the connection; returns what it sent and how long that took.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (received, started.elapsed()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (received, started.elapsed());
            }
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn idle_and_slow_connections_are_closed() {
    let store = TempStore::new();
    store.put("t/a.ts", b"0123456789");
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let extra = "[limits]\nidle_timeout_secs = 1\nheader_read_timeout_secs = 2\n";
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, extra);
    let addr = edge.addr("http_addr");

    // HTTP/1.1: one request, then silence.
    let mut h1 = TcpStream::connect(addr).unwrap();
    h1.write_all(b"GET /t/a.ts HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let (received, after) = read_until_closed(&mut h1);
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("0123456789"),
        "{text}"
    );
    assert!(after < Duration::from_secs(5), "closed after {after:?}");

    // HTTP/2 (prior knowledge): the preface and SETTINGS, then silence: a GOAWAY (frame type 7), then close.
    let mut h2 = TcpStream::connect(addr).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap();
    let (received, after) = read_until_closed(&mut h2);
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
    let mut frames = Vec::new();
    let mut rest = &received[..];
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        frames.push(rest[3]);
        rest = &rest[(9 + len).min(rest.len())..];
    }
    assert!(
        frames.contains(&7),
        "a GOAWAY before closing; frame types {frames:?}"
    );

    // A request head sent a byte at a time, too slowly: cut at the header-read timeout.
    let mut slow = TcpStream::connect(addr).unwrap();
    let started = Instant::now();
    for byte in b"GET /t/a.ts HTTP/1.1\r\nHo" {
        if slow.write_all(&[*byte]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(150));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let (received, _) = read_until_closed(&mut slow);
    assert!(
        !String::from_utf8_lossy(&received).contains("200 OK"),
        "a trickled head is never answered"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut after {:?}",
        started.elapsed()
    );
}

#[test]
fn sigterm_drains_an_in_flight_download_and_refuses_new_connections() {
    const LEN: u64 = 48 << 20;
    let store = TempStore::new();
    store.put_sparse("t/big.ts", LEN);
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, "");
    let addr = edge.addr("http_addr");
    let url = format!("http://{addr}/t/big.ts");
    testkit::curl(&["-o", "/dev/null", &url]); // cached
    let download = std::thread::spawn(move || testkit::curl(&["--limit-rate", "16M", &url]));
    let metrics = format!("{}/metrics", edge.url("admin_addr"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !testkit::curl(&[&metrics])
        .text()
        .contains("edge_http_connections_open{listener=\"http\"} 1")
    {
        assert!(Instant::now() < deadline, "the download did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    edge.terminate();
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline + Duration::from_secs(5),
            "the listener stayed open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let response = download.join().unwrap();
    assert_eq!(
        response.body.len() as u64,
        LEN,
        "the in-flight body completed during the drain"
    );
    assert!(edge.wait_exit(), "exit status 0 after draining");
}
