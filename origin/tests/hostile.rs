//! Hostile input at the origin (issue 14): its media, admin and control-plane API listeners each give the
//! answer a hostile request must get (raw sockets for what curl will not send), and keep answering afterwards
//! with bounded memory. The edge's listeners: edge/tests/hostile.rs.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use testkit::{TempStore, curl, start_origin};

/// Sends `request` and reads until the server closes the connection or `wait` passes: what came back, and
/// whether it closed.
fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let _ = stream.write_all(request);
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + wait;
    let mut received = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&received).into_owned(), true),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (String::from_utf8_lossy(&received).into_owned(), true),
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), false)
}

fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

#[test]
fn the_origins_listeners_answer_hostile_heads() {
    let store = TempStore::new();
    store.put("t/a.ts", &[7u8; 1000]);
    let origin = start_origin(&store.url(), "[media]\nheader_read_timeout_secs = 1\n");
    let rss_before = origin.rss_kib();
    let media = origin.addr("media_addr");
    let wait = Duration::from_secs(3);

    // A path longer than the origin reads: 414 with the reason (it was a 400).
    let long = format!(
        "GET /t/{}.ts HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n",
        "a".repeat(3000)
    );
    let (answer, _) = exchange(media, long.as_bytes(), wait);
    assert!(answer.starts_with("HTTP/1.1 414"), "{answer}");
    assert!(
        answer.ends_with("the request path is too long\n"),
        "{answer}"
    );

    // Heads past max_header_bytes, on every listener: 431.
    let heads = [
        format!("GET /{} HTTP/1.1\r\nHost: o\r\n\r\n", "a".repeat(20_000)),
        format!(
            "GET /healthz HTTP/1.1\r\nHost: o\r\nX-Big: {}\r\n\r\n",
            "b".repeat(20_000)
        ),
    ];
    for addr in [media, origin.addr("admin_addr"), origin.addr("api_addr")] {
        for head in &heads {
            let (answer, _) = exchange(addr, head.as_bytes(), wait);
            assert_eq!(
                status_line(&answer),
                "HTTP/1.1 431 Request Header Fields Too Large"
            );
        }
    }

    // Smuggling forms on the media listener: both lengths (the chunked framing is read, the connection
    // closed after the answer, the rest never read as a request), two different lengths (400).
    let body = "0\r\n\r\nGET /t/smuggled.ts HTTP/1.1\r\nHost: o\r\n\r\n";
    let both = format!(
        "GET /t/a.ts HTTP/1.1\r\nHost: o\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let (answer, closed) = exchange(media, both.as_bytes(), Duration::from_secs(10));
    assert!(closed, "the connection stayed open: {answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let two = "GET /t/a.ts HTTP/1.1\r\nHost: o\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
    let (answer, _) = exchange(media, two.as_bytes(), wait);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    // A head trickled to the media listener is cut at the header-read timeout, never answered 200.
    let started = Instant::now();
    let (answer, closed) = exchange(media, b"GET /t/a.ts HTTP/1.1\r\nHo", Duration::from_secs(8));
    assert!(closed && !answer.contains("200 OK"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(8));

    let again = curl(&[&format!("http://{media}/t/a.ts")]);
    assert_eq!((again.status, again.body.len()), (200, 1000));
    assert!(origin.rss_kib() < rss_before + 96 * 1024);
    assert!(
        !origin
            .log_events("access")
            .iter()
            .any(|e| e["path"] == "/t/smuggled.ts"),
        "nothing was smuggled"
    );
}

#[test]
fn the_control_plane_api_refuses_bad_bodies_with_a_reason() {
    // Already tested (catalog_api.rs): unknown fields, bad parameters, a cursor it did not issue; refusals
    // quote at most 32 characters of what they refuse (properties.rs).
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let rss_before = origin.rss_kib();
    let api = origin.url("api_addr");
    let playback = format!("{api}/v1/playback");
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        format!("@{}", path.display())
    };
    let not_utf8 = file("utf8.json", b"{\"title\": \"test-\xff\xfe\"}");
    let deep = file(
        "deep.json",
        format!("{}{}", "[".repeat(1000), "]".repeat(1000)).as_bytes(),
    );
    for (what, body, status, reason) in [
        ("not UTF-8", not_utf8.as_str(), 400, "must be JSON"),
        (
            "a lone surrogate",
            "{\"title\": \"\\ud800\"}",
            400,
            "must be JSON",
        ),
        ("nested 1,000 deep", deep.as_str(), 400, "must be JSON"),
        (
            "a NUL in a title",
            "{\"title\": \"a\\u0000b\"}",
            404,
            "no title",
        ),
        (
            "a title of another type",
            "{\"title\": 7}",
            400,
            "must be JSON",
        ),
        (
            "an unknown protocol",
            "{\"title\": \"test-pattern\", \"protocol\": \"rtmp\"}",
            400,
            "protocol must be",
        ),
    ] {
        let r = curl(&[
            "-H",
            testkit::SERVICE_AUTH,
            "--data-binary",
            body,
            &playback,
        ]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let json: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let text = json["reason"].as_str().unwrap_or_default();
        assert!(text.contains(reason), "{what}: {text}");
    }
    // Odd UTF-8 in queries and paths: an answer, never a 500.
    for (path, status) in [
        ("/v1/search?q=%FF%FE", 200),
        ("/v1/titles?genre=%FF&language=%00", 200),
        ("/v1/titles/%FF%00", 404),
        ("/v1/titles/%C0%AE%C0%AE/assets", 404),
    ] {
        assert_eq!(curl(&[&format!("{api}{path}")]).status, status, "{path}");
    }
    assert_eq!(curl(&[&format!("{api}/v1/titles")]).status, 200);
    assert!(origin.rss_kib() < rss_before + 96 * 1024);
}

#[test]
fn the_control_plane_api_bounds_bodies_in_size_and_time() {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "[media]\nheader_read_timeout_secs = 1\n");
    let api = origin.addr("api_addr");
    let big = format!(
        "POST /v1/playback HTTP/1.1\r\nHost: o\r\n{}\r\nContent-Length: 1048576\r\n\r\n{}",
        testkit::SERVICE_AUTH,
        " ".repeat(1 << 20)
    );
    let (answer, _) = exchange(api, big.as_bytes(), Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let slow = format!(
        "POST /v1/playback HTTP/1.1\r\nHost: o\r\n{}\r\nContent-Length: 100\r\n\r\n{{\"title\":",
        testkit::SERVICE_AUTH
    );
    let (answer, _) = exchange(api, slow.as_bytes(), Duration::from_secs(8));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}
