//! Hostile input (issue 14), each case with the answer it must get, after which the edge still answers a normal
//! request and its memory has stayed bounded: request smuggling forms and bare-LF line endings on the plain and
//! TLS listeners (raw sockets), oversized heads, slow heads and bodies on every listener, HTTP/2 attacks (rapid
//! reset, stream, CONTINUATION, SETTINGS and PING floods, an HPACK bomb; `clients/h2attack.py`), HTTP/3
//! connection and stream floods (quinn), range abuse, Host and absolute-form tricks, encoded paths, signed-URL
//! tricks, and the admin API with bad credentials and bodies. Cases already tested elsewhere are not repeated:
//! see the list at the end of each test's comment.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{Scripted, ScriptedOrigin, ServerProcess, TestCerts, curl, start_edge};

/// How much an edge's resident memory may grow over one test's attacks: generous (the allocator keeps freed
/// pages, the memory tier fills), but far below what an unbounded buffer of the attacks' bytes would take.
const RSS_GROWTH_KIB: u64 = 96 * 1024;

const ADMIN_TOKEN: &str = "hostile-admin-token-0123456789";

/// An edge in front of a scripted origin: GETs are a cacheable object, POSTs are echoed by their body's size.
struct Stack {
    origin: ScriptedOrigin,
    certs: TestCerts,
    _dir: tempfile::TempDir,
    edge: ServerProcess,
    rss_before: u64,
}

impl Stack {
    fn start(extra: &str) -> Stack {
        let origin = ScriptedOrigin::start(|req| {
            if req.method == "POST" {
                return Scripted::ok(format!("got {} bytes", req.body.len()));
            }
            Scripted::ok(vec![b'o'; 5000]).header("Cache-Control", "max-age=600")
        });
        let certs = TestCerts::generate();
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("[admin]\nbearer_token = \"{ADMIN_TOKEN}\"\n{extra}");
        let edge = start_edge(&origin.url(), dir.path(), &certs, &extra);
        let rss_before = edge.rss_kib();
        Stack {
            origin,
            certs,
            _dir: dir,
            edge,
            rss_before,
        }
    }

    fn plain(&self) -> Listener {
        Listener::Plain(self.edge.addr("http_addr"))
    }

    fn tls(&self) -> Listener {
        Listener::Tls(self.edge.addr("tls_addr"), self.certs.ca())
    }

    fn admin(&self) -> Listener {
        Listener::Plain(self.edge.addr("admin_addr"))
    }

    /// The edge still answers a normal request over HTTP/1.1 and HTTP/2 (TLS), and its memory stayed bounded.
    fn assert_alive_and_bounded(&self, after: &str) {
        let ca = self.certs.ca();
        for proto in ["--http1.1", "--http2"] {
            let url = format!(
                "https://localhost:{}/alive.ts",
                self.edge.addr("tls_addr").port()
            );
            let r = curl(&[
                proto,
                "--max-time",
                "10",
                "--cacert",
                ca.to_str().unwrap(),
                &url,
            ]);
            assert_eq!(
                (r.status, r.body.len()),
                (200, 5000),
                "after {after}: {proto}"
            );
        }
        let rss = self.edge.rss_kib();
        assert!(
            rss < self.rss_before + RSS_GROWTH_KIB,
            "after {after}: RSS grew from {} to {rss} KiB",
            self.rss_before
        );
    }
}

/// Where a raw client connects: plain TCP, or TLS (HTTP/1.1 by ALPN) trusting a CA.
#[derive(Clone)]
enum Listener {
    Plain(SocketAddr),
    Tls(SocketAddr, std::path::PathBuf),
}

impl Listener {
    fn name(&self) -> &'static str {
        match self {
            Listener::Plain(_) => "plain",
            Listener::Tls(..) => "tls",
        }
    }

    fn connect(&self) -> Box<dyn ReadWrite> {
        match self {
            Listener::Plain(addr) => Box::new(TcpStream::connect(addr).unwrap()),
            Listener::Tls(addr, ca) => {
                use rustls::pki_types::ServerName;
                let config = testkit::tls_client_config(ca, &[b"http/1.1"]);
                let name = ServerName::try_from("localhost").unwrap();
                let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
                Box::new(rustls::StreamOwned::new(
                    conn,
                    TcpStream::connect(addr).unwrap(),
                ))
            }
        }
    }
}

trait ReadWrite: Read + Write {
    fn set_timeout(&self, timeout: Duration);
}

impl ReadWrite for TcpStream {
    fn set_timeout(&self, timeout: Duration) {
        self.set_read_timeout(Some(timeout)).unwrap();
    }
}

impl ReadWrite for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeout(&self, timeout: Duration) {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
    }
}

/// One response as read off the wire.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The complete final responses at the start of `buf` (interim 1xx responses skipped); a response without
/// `Content-Length` is complete only when `closed`.
fn parse_answers(buf: &[u8], closed: bool) -> Vec<Answer> {
    let mut answers = Vec::new();
    let mut rest = buf;
    while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&rest[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let body_start = end + 4;
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let body_end = match length {
            _ if (100..200).contains(&status) || status == 304 => body_start,
            Some(n) if rest.len() >= body_start + n => body_start + n,
            Some(_) => break,
            None if closed => rest.len(),
            None => break,
        };
        if !(100..200).contains(&status) {
            answers.push(Answer {
                status,
                headers,
                body: rest[body_start..body_end].to_vec(),
            });
        }
        rest = &rest[body_end..];
    }
    answers
}

/// Sends `request` and reads until `want` responses are complete, the server closes the connection, or 10 s
/// pass; returns the responses and whether the server closed the connection.
fn exchange(listener: &Listener, request: &[u8], want: usize) -> (Vec<Answer>, bool) {
    let mut stream = listener.connect();
    // The TLS handshake happens in the first write: under load it can take longer than a read's short wait.
    stream.set_timeout(Duration::from_secs(10));
    let _ = stream.write_all(request);
    let _ = stream.flush();
    stream.set_timeout(Duration::from_millis(200));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (parse_answers(&buf, true), true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (parse_answers(&buf, true), true),
        }
        if parse_answers(&buf, false).len() >= want || Instant::now() > deadline {
            return (parse_answers(&buf, false), false);
        }
    }
}

/// The first response to `request`.
fn first_answer(listener: &Listener, request: &[u8]) -> Answer {
    let (answers, _) = exchange(listener, request, 1);
    answers
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no answer to {:?}", String::from_utf8_lossy(request)))
}

/// Sends `request` and reads until the server closes the connection (at most 10 s): the responses, and
/// whether it closed.
fn until_closed(listener: &Listener, request: &[u8]) -> (Vec<Answer>, bool) {
    exchange(listener, request, usize::MAX)
}

#[test]
fn smuggling_forms_get_their_answer_on_the_plain_and_tls_listeners() {
    let stack = Stack::start("");
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Both Content-Length and Transfer-Encoding (either order): the chunked framing alone is read (an empty
    // body here), the request is answered, and the connection is closed after it (RFC 9112 6.1), so the bytes
    // after the chunked body are never read as a request of their own.
    let body = format!("0\r\n\r\n{smuggled}");
    let cl_te = format!(
        "POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let te_cl = format!(
        "POST /api/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let get_te_cl = format!(
        "GET /a.ts HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for listener in [stack.plain(), stack.tls()] {
        let name = listener.name();
        for (form, request, status, text) in [
            ("CL.TE", &cl_te, 200, Some("got 0 bytes")),
            ("TE.CL", &te_cl, 200, Some("got 0 bytes")),
            ("GET TE.CL", &get_te_cl, 200, None),
        ] {
            let (answers, closed) = until_closed(&listener, request.as_bytes());
            assert_eq!(answers.len(), 1, "{name} {form}: {answers:?}");
            assert_eq!(answers[0].status, status, "{name} {form}");
            if let Some(text) = text {
                assert_eq!(answers[0].text(), text, "{name} {form}");
            }
            assert!(closed, "{name} {form}: the connection stays open");
        }

        // Framing the edge cannot read one way only: 400, before anything goes upstream.
        let post = |fields: &str, body: &str| {
            format!("POST /api/y HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n{body}")
        };
        let table: Vec<(&str, String, Option<&str>)> = vec![
            (
                "two Content-Lengths",
                post("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!"),
                None,
            ),
            (
                "a Content-Length list",
                post("Content-Length: 5, 6\r\n", "hello!"),
                None,
            ),
            (
                "a negative Content-Length",
                post("Content-Length: -1\r\n", ""),
                None,
            ),
            (
                "a signed Content-Length",
                post("Content-Length: +5\r\n", "hello"),
                None,
            ),
            (
                "an unknown coding",
                post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
                None,
            ),
            (
                "chunked not last",
                post("Transfer-Encoding: chunked, gzip\r\n", "0\r\n\r\n"),
                None,
            ),
            (
                "a space before the colon",
                post("Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
                None,
            ),
            (
                "an obs-folded Transfer-Encoding",
                post("Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
                None,
            ),
            (
                "Transfer-Encoding in HTTP/1.0",
                "POST /api/y HTTP/1.0\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                    .to_string(),
                None,
            ),
            (
                "a bare CR",
                "GET /a.ts HTTP/1.1\rHost: localhost\r\r\n\r\n".to_string(),
                None,
            ),
            (
                "NUL in a field value",
                "GET /a.ts HTTP/1.1\r\nHost: localhost\r\nX-A: a\0b\r\n\r\n".to_string(),
                None,
            ),
            (
                "a space in a field name",
                "GET /a.ts HTTP/1.1\r\nHost: localhost\r\nX A: b\r\n\r\n".to_string(),
                None,
            ),
            (
                "a chunk extension with a bare LF",
                post("Transfer-Encoding: chunked\r\n", "5;\nx\r\nhello\r\n0\r\n\r\n"),
                Some("the request body could not be read"),
            ),
            (
                "a chunk size past 2^64",
                post(
                    "Transfer-Encoding: chunked\r\n",
                    "FFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
                ),
                Some("the request body could not be read"),
            ),
            (
                "two Host fields",
                "GET /a.ts HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\n\r\n".to_string(),
                Some("more than one Host header field"),
            ),
            (
                "HTTP/2.0 in a request line",
                "GET /a.ts HTTP/2.0\r\nHost: localhost\r\n\r\n".to_string(),
                None,
            ),
            (
                "an HTTP/0.9 request line",
                "GET /a.ts\r\n\r\n".to_string(),
                None,
            ),
        ];
        for (form, request, reason) in table {
            let answer = first_answer(&listener, request.as_bytes());
            let context = format!("{name} {form}");
            assert_answer(&context, answer.status, &answer.text(), 400, reason);
        }
    }
    assert_eq!(stack.origin.count("/smuggled"), 0, "nothing was smuggled");
    assert_eq!(
        stack.origin.count("/api/y"),
        0,
        "no refused request went upstream"
    );
    stack.assert_alive_and_bounded("smuggling forms");
}

/// An upstream that records the raw bytes of each request head it receives and answers `ok`.
fn raw_recording_origin() -> (String, Arc<std::sync::Mutex<Vec<Vec<u8>>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let record = Arc::clone(&record);
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    record.lock().unwrap().push(head.clone());
                    let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: max-age=600\r\n\r\nok";
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, seen)
}

#[test]
fn bare_lf_line_endings_are_read_as_crlf_and_never_sent_upstream() {
    // Decided: a bare LF ends a line of the request head (RFC 9112 2.2 allows it; hyper reads it so), while
    // the chunked body framing needs CRLF. Whatever the client sent, the upstream receives the request the
    // edge writes itself, in CRLF.
    let (upstream, seen) = raw_recording_origin();
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();
    let edge = start_edge(&upstream, dir.path(), &certs, "");
    let rss_before = edge.rss_kib();
    let listeners = [
        Listener::Plain(edge.addr("http_addr")),
        Listener::Tls(edge.addr("tls_addr"), certs.ca()),
    ];
    for listener in &listeners {
        let name = listener.name();
        let path = format!("/lf-{name}.ts");
        // Two requests with bare-LF line endings in one write: both read, in order, each answered.
        let one = format!("GET {path} HTTP/1.1\nHost: localhost\nX-Trace: lf-{name}\n\n");
        let (answers, _) = exchange(listener, format!("{one}{one}").as_bytes(), 2);
        assert_eq!(answers.len(), 2, "{name}: {answers:?}");
        for answer in &answers {
            assert_eq!(
                (answer.status, answer.text().as_str()),
                (200, "ok"),
                "{name}"
            );
        }
        // A chunked body framed with bare LFs: refused with the reason, nothing sent upstream.
        let post = "POST /lf-post HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n";
        let refused = first_answer(listener, post.as_bytes());
        assert_eq!(refused.status, 400, "{name}: {}", refused.text());
        assert!(
            refused
                .text()
                .contains("the request body could not be read"),
            "{name}: {}",
            refused.text()
        );
    }
    let heads = seen.lock().unwrap().clone();
    assert_eq!(
        heads.len(),
        2,
        "one fill per path, none for the refused POST"
    );
    for head in heads {
        let text = String::from_utf8_lossy(&head).into_owned();
        let bare = head
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
        assert!(!bare, "a bare LF went upstream: {text:?}");
        assert!(text.contains("\r\nx-trace: lf-"), "{text:?}");
    }
    assert!(edge.rss_kib() < rss_before + RSS_GROWTH_KIB);
}

#[test]
fn oversized_heads_get_431_on_every_listener() {
    let stack = Stack::start("");
    let long_line = format!(
        "GET /{}.ts HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(20_000)
    );
    let long_field = format!(
        "GET /a.ts HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    let many_fields = format!(
        "GET /a.ts HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
        (0..120)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect::<String>()
    );
    for listener in [stack.plain(), stack.tls(), stack.admin()] {
        for (form, request) in [
            ("a 20 KB request line", &long_line),
            ("a 20 KB field", &long_field),
            ("120 fields", &many_fields),
        ] {
            let answer = first_answer(&listener, request.as_bytes());
            assert_eq!(answer.status, 431, "{} {form}", listener.name());
        }
    }
    // Over HTTP/2 (TLS), a header list past max_header_bytes: a 431 for that request.
    let url = format!(
        "https://localhost:{}/a.ts",
        stack.edge.addr("tls_addr").port()
    );
    let big = format!("X-Big: {}", "b".repeat(20_000));
    let ca = stack.certs.ca();
    let h2 = curl(&[
        "--http2",
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &big,
        &url,
    ]);
    assert_eq!((h2.status, h2.http_version.as_str()), (431, "2"));
    stack.assert_alive_and_bounded("oversized heads");
}

#[test]
fn a_path_longer_than_the_edge_reads_gets_414() {
    let stack = Stack::start("");
    let request = format!(
        "GET /{}.ts HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(3000)
    );
    for listener in [stack.plain(), stack.tls()] {
        let answer = first_answer(&listener, request.as_bytes());
        assert_eq!(answer.status, 414, "{}", answer.text());
        assert!(answer.text().contains("the request path is too long"));
    }
}

#[test]
fn slow_heads_and_bodies_are_cut_on_every_listener() {
    let stack = Stack::start(
        "[limits]\nheader_read_timeout_secs = 1\ntls_handshake_timeout_secs = 1\n\
         request_body_timeout_secs = 1\nidle_timeout_secs = 2\n",
    );
    let bound = Duration::from_secs(8);
    // TLS: a client that connects and never starts its handshake.
    let started = Instant::now();
    let mut silent = TcpStream::connect(stack.edge.addr("tls_addr")).unwrap();
    silent.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 64];
    assert!(
        matches!(silent.read(&mut buf), Ok(0) | Err(_)),
        "closed without an answer"
    );
    assert!(
        started.elapsed() < bound,
        "cut after {:?}",
        started.elapsed()
    );

    // TLS: a head that never completes after the handshake (the plain listener: edge/tests/limits.rs).
    let (answers, closed) = until_closed(&stack.tls(), b"GET /a.ts HTTP/1.1\r\nHo");
    assert!(closed, "a half head held a TLS connection");
    assert!(answers.iter().all(|a| a.status == 408), "{answers:?}");

    // Bodies trickled to the players' listeners (TLS here; plain in hardening.rs) and to the admin API: 408.
    let post = "POST /api/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789";
    let purge = format!(
        "POST /purge HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Length: 100\r\n\r\n{{\"url\":"
    );
    for (listener, request, what) in [
        (stack.tls(), post.to_string(), "a request body"),
        (stack.admin(), purge, "a purge body"),
    ] {
        let started = Instant::now();
        let answer = first_answer(&listener, request.as_bytes());
        assert_eq!(answer.status, 408, "{what}: {}", answer.text());
        assert!(
            answer.text().contains("did not arrive within"),
            "{what}: {}",
            answer.text()
        );
        assert!(started.elapsed() < bound, "{what}: {:?}", started.elapsed());
    }

    // HTTP/2 (prior knowledge): a HEADERS frame without END_HEADERS, then silence: closed when idle.
    let started = Instant::now();
    let mut h2 = TcpStream::connect(stack.edge.addr("http_addr")).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    h2.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).unwrap(); // SETTINGS
    h2.write_all(&[0, 0, 1, 1, 0x1, 0, 0, 0, 1, 0x82]).unwrap(); // HEADERS (END_STREAM only): :method GET
    h2.set_read_timeout(Some(bound)).unwrap();
    let mut received = Vec::new();
    loop {
        match h2.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        started.elapsed() < bound,
        "a half HTTP/2 head held its connection for {:?}",
        started.elapsed()
    );
    stack.assert_alive_and_bounded("slow heads and bodies");
}

/// Runs `edge/tests/clients/h2attack.py MODE` against `addr` (TLS when `ca` is given) and returns its JSON.
fn h2attack(addr: SocketAddr, ca: Option<&std::path::Path>, mode: &str, args: &[&str]) -> Value {
    let script = testkit::repo_root().join("edge/tests/clients/h2attack.py");
    let mut cmd = std::process::Command::new(testkit::tool("python3"));
    cmd.arg(script)
        .args(["--port", &addr.port().to_string(), "--path", "/h2.ts"])
        .args(args)
        .arg(mode);
    if let Some(ca) = ca {
        cmd.arg("--tls").arg("--ca").arg(ca);
    }
    let output = cmd.output().expect("run h2attack.py");
    let line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let parsed: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        panic!(
            "h2attack.py {mode} said {line:?}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(
        parsed.get("error").is_none(),
        "h2attack.py {mode}: {parsed}"
    );
    parsed
}

/// ENHANCE_YOUR_CALM (RFC 9113 7).
const ENHANCE_YOUR_CALM: u64 = 0xb;
/// REFUSED_STREAM (RFC 9113 7).
const REFUSED_STREAM: &str = "7";

#[test]
fn http2_attacks_are_cut_off_and_floods_cost_nothing() {
    let stack = Stack::start("");
    let ca = stack.certs.ca();
    for (listener, ca) in [
        (stack.edge.addr("http_addr"), None),
        (stack.edge.addr("tls_addr"), Some(ca.as_path())),
    ] {
        let on = if ca.is_some() { "tls" } else { "plain" };
        let run = |mode: &str, count: &str, extra: &[&str]| {
            let mut args = vec!["--count", count];
            args.extend_from_slice(extra);
            h2attack(listener, ca, mode, &args)
        };
        let goaway = |r: &Value| r["goaway"].as_u64();
        let sent = |r: &Value| r["sent"].as_u64().unwrap();

        // Rapid reset (CVE-2023-44487): the connection is closed (GOAWAY ENHANCE_YOUR_CALM, too_many_resets)
        // long before 2,000 requests were started and cancelled. (A client that writes on after the GOAWAY gets
        // a TCP reset and may lose the GOAWAY itself: only its code is checked when it is seen.)
        let r = run("rapid-reset", "2000", &[]);
        assert!(r["closed"] == true && sent(&r) < 2000, "{on}: {r}");
        if goaway(&r).is_some() {
            assert_eq!(goaway(&r), Some(ENHANCE_YOUR_CALM), "{on}: {r}");
            assert_eq!(r["goaway_debug"], "too_many_resets", "{on}");
        }

        // Streams past SETTINGS_MAX_CONCURRENT_STREAMS (256), POSTs whose bodies never come: the first 64 hold
        // the request-body budget (64 MiB of 1 MiB bodies), later ones get 503 at once; streams past the limit
        // are refused (REFUSED_STREAM), and a client that keeps opening them is sent away (GOAWAY
        // ENHANCE_YOUR_CALM; over TLS the client may see only the close, having written past it).
        let r = run("stream-flood", "2000", &[]);
        assert!(
            r["closed"] == true && r["statuses"].get("200").is_none(),
            "{on}: {r}"
        );
        assert!(
            matches!(goaway(&r), None | Some(ENHANCE_YOUR_CALM)),
            "{on}: {r}"
        );
        if goaway(&r).is_some() {
            assert!(
                r["resets"][REFUSED_STREAM].as_u64().unwrap_or(0) > 0,
                "{on}: {r}"
            );
        }

        // CONTINUATION floods, growing the header list or not: GOAWAY ENHANCE_YOUR_CALM after a few frames.
        for mode in ["continuation", "continuation-empty"] {
            let r = run(mode, "1000", &[]);
            assert!(sent(&r) < 1000 && r["closed"] == true, "{on} {mode}: {r}");
            if goaway(&r).is_some() {
                assert_eq!(goaway(&r), Some(ENHANCE_YOUR_CALM), "{on} {mode}: {r}");
                assert_eq!(r["goaway_debug"], "too_many_continuations", "{on} {mode}");
            }
        }

        // An HPACK bomb: 4,000 one-byte references to a 4 KB table entry (16 MB decoded): the connection is
        // closed before the list is built (header_list_way_too_large), no request is answered.
        let r = run("hpack-bomb", "4000", &[]);
        assert_eq!(goaway(&r), Some(ENHANCE_YOUR_CALM), "{on}: {r}");
        assert_eq!(r["goaway_debug"], "header_list_way_too_large", "{on}");
        assert_eq!(r["statuses"], serde_json::json!({}), "{on}: {r}");

        // SETTINGS and PING floods: each frame is acknowledged (a few bytes, written as the client reads), the
        // connection stays usable, and a request on it is answered.
        let r = run("settings-flood", "20000", &["--then-get"]);
        assert_eq!(r["settings_acks"], 20001, "{on}: {r}");
        assert_eq!(r["then_status"], 200, "{on}: {r}");
        let r = run("ping-flood", "20000", &["--then-get"]);
        assert_eq!(r["ping_acks"], 20000, "{on}: {r}");
        assert_eq!(r["then_status"], 200, "{on}: {r}");

        // Host tricks over HTTP/2: a Host field naming another authority than :authority is malformed
        // (RFC 9113 8.3.1); a foreign :authority is not served (421).
        let r = run("probe", "1", &["--header", "host: evil.example"]);
        assert_eq!(r["statuses"], serde_json::json!({"400": 1}), "{on}: {r}");
        let r = run("probe", "1", &["--authority", "evil.example"]);
        assert_eq!(r["statuses"], serde_json::json!({"421": 1}), "{on}: {r}");
        let r = run("probe", "1", &["--header", "host: localhost"]);
        assert_eq!(r["statuses"], serde_json::json!({"200": 1}), "{on}: {r}");
    }
    stack.assert_alive_and_bounded("HTTP/2 attacks");
}

/// A QUIC client of the test's own (quinn), trusting `ca`.
fn quic_client(ca: &std::path::Path) -> quinn::Endpoint {
    let tls = testkit::tls_client_config(ca, &[b"h3"]);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[test]
fn http3_connection_and_stream_floods_leave_the_edge_serving() {
    let stack = Stack::start(
        "[limits]\nmax_connections = 8\nheader_read_timeout_secs = 1\n[h3]\nmax_concurrent_streams = 32\n",
    );
    let addr = stack.edge.addr("tls_addr");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // 40 clients at once against a cap of 8: at most 8 are served, the rest refused or asked to Retry.
        let client = quic_client(&stack.certs.ca());
        let attempts: Vec<_> = (0..40)
            .map(|_| {
                let connecting = client.connect(addr, "localhost").unwrap();
                tokio::time::timeout(Duration::from_secs(5), connecting)
            })
            .collect();
        let results = futures::future::join_all(attempts).await;
        let open: Vec<quinn::Connection> = results
            .into_iter()
            .filter_map(|r| r.ok().and_then(Result::ok))
            .collect();
        assert!(
            (1..=8).contains(&open.len()),
            "{} of 40 connections open",
            open.len()
        );

        // Stream flood on one connection: 2,000 request streams, each with the start of a HEADERS frame and
        // then reset, far more than the 32 allowed at once; each is let go, none holds the connection.
        let conn = &open[0];
        let since = Instant::now();
        let mut opened = 0;
        while opened < 2000 && since.elapsed() < Duration::from_secs(10) {
            let Ok(Ok((mut send, mut recv))) =
                tokio::time::timeout(Duration::from_secs(3), conn.open_bi()).await
            else {
                break;
            };
            let _ = send.write_all(&[0x01, 0x40]).await;
            let _ = send.reset(0x10c_u32.into()); // H3_REQUEST_CANCELLED
            let _ = recv.stop(0x10c_u32.into());
            opened += 1;
        }
        assert!(opened > 32, "only {opened} streams were let through");
        for conn in &open {
            conn.close(0u32.into(), b"done");
        }
        client.wait_idle().await;
    });
    // A new client is served over HTTP/3 (the cap counts open connections, and those are closed).
    let url = format!("https://localhost:{}/h3.ts", addr.port());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match testkit::h3_get(testkit::H3Client::Aioquic, &url, &stack.certs.ca(), None) {
            Ok(r) => {
                assert_eq!((r.status, r.body.len()), (200, 5000));
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "no HTTP/3 after the floods: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stack.assert_alive_and_bounded("HTTP/3 floods");
}

/// HTTP/3 request streams that each start a head and never finish it, as many as allowed at once: no more are
/// let open, each is let go at the head timeout, and the connection, with no request left, is closed at the
/// idle timeout whatever the client keeps open; and a head past `limits.max_header_bytes` is refused, not served.
#[test]
fn http3_incomplete_heads_and_oversized_heads_are_cut() {
    let stack = Stack::start(
        "[limits]\nheader_read_timeout_secs = 1\nmax_header_bytes = 16384\n\
         [h3]\nmax_concurrent_streams = 32\nidle_timeout_secs = 3\n",
    );
    let addr = stack.edge.addr("tls_addr");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = quic_client(&stack.certs.ca());
        let conn = client.connect(addr, "localhost").unwrap().await.unwrap();
        let since = Instant::now();
        let mut held = Vec::new();
        for _ in 0..32 {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            // A HEADERS frame type and a length, and nothing more.
            send.write_all(&[0x01, 0x40]).await.unwrap();
            held.push((send, recv));
        }
        let more = tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await;
        assert!(more.is_err(), "a 33rd stream opened past the limit of 32");
        // Each head is let go at the 1 s head timeout: the edge stops reading it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        for (i, (send, _)) in held.iter_mut().enumerate() {
            let refused =
                tokio::time::timeout(Duration::from_secs(2), send.write_all(&[0; 16])).await;
            assert!(
                matches!(refused, Ok(Err(_))),
                "stream {i} still read after the head timeout: {refused:?}"
            );
        }
        // No request left in flight: the connection is idle and closed, though the client holds its streams.
        let closed = tokio::time::timeout(Duration::from_secs(8), conn.closed()).await;
        assert!(closed.is_ok(), "a connection of stalled heads stayed open");
        assert!(
            since.elapsed() < Duration::from_secs(8),
            "{:?}",
            since.elapsed()
        );

        let quic = client.connect(addr, "localhost").unwrap().await.unwrap();
        let (mut driver, mut requests) = h3::client::new(h3_quinn::Connection::new(quic))
            .await
            .unwrap();
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        let request = http::Request::get(format!("https://localhost:{}/big-head.ts", addr.port()))
            .header("x-filler", "a".repeat(64 * 1024))
            .body(())
            .unwrap();
        let answer = async {
            let mut stream = requests.send_request(request).await?;
            stream.finish().await?;
            let response = stream.recv_response().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(response.status())
        };
        match tokio::time::timeout(Duration::from_secs(10), answer).await {
            Ok(Ok(status)) => assert_eq!(status, 431, "a 64 KiB head was answered {status}"),
            Ok(Err(refused)) => eprintln!("a 64 KiB head over HTTP/3: refused ({refused})"),
            Err(_) => panic!("a 64 KiB head over HTTP/3 got no answer in 10 s"),
        }
        client.wait_idle().await;
    });
    assert_eq!(
        stack.origin.count("/big-head.ts"),
        0,
        "an oversized head went upstream"
    );
    stack.assert_alive_and_bounded("HTTP/3 incomplete and oversized heads");
}

#[test]
fn range_abuse_gets_its_answer() {
    // Already tested: a reversed range and one past the end (416 with `bytes */LEN`, serving.rs), another
    // unit (200), a range starting near 2^64 (hardening.rs).
    let stack = Stack::start("");
    let url = format!(
        "http://127.0.0.1:{}/r.ts",
        stack.edge.addr("http_addr").port()
    );
    let ranges = |n: usize, f: &dyn Fn(usize) -> String| {
        format!(
            "Range: bytes={}",
            (0..n).map(f).collect::<Vec<_>>().join(",")
        )
    };
    let hundreds = ranges(400, &|i| format!("{}-{}", i * 10, i * 10 + 5));
    let overlapping = ranges(400, &|_| "0-4999".to_string());
    let thousands = ranges(1500, &|i| format!("{i}-{i}"));
    let table: &[(&str, u16, usize, Option<&str>)] = &[
        // Several ranges: the edge serves one range or the whole representation (RFC 9110 14.2 lets it ignore
        // Range), never a multipart answer it would have to assemble from hundreds of parts.
        (&hundreds, 200, 5000, None),
        (&overlapping, 200, 5000, None),
        (&thousands, 200, 5000, None),
        ("Range: bytes=0-10,5-20", 200, 5000, None),
        // A reversed range first, or a malformed one anywhere: 416 with the reason.
        (
            "Range: bytes=1-0,0-1",
            416,
            0,
            Some("the last position is before the first"),
        ),
        ("Range: bytes=0--1", 416, 0, Some("decimal digits")),
        (
            "Range: bytes=-",
            416,
            0,
            Some("a first position or a suffix"),
        ),
        ("Range: bytes=abc", 416, 0, Some("a range needs a '-'")),
        ("Range: bytes=-0", 416, 0, Some("past the end")),
        // Numbers past 2^64: a start is past the end; an end or a suffix that large means the whole object.
        (
            "Range: bytes=99999999999999999999-",
            416,
            0,
            Some("past the end"),
        ),
        ("Range: bytes=0-99999999999999999999", 206, 5000, None),
        ("Range: bytes=-99999999999999999999", 206, 5000, None),
        ("Range: bytes=0-18446744073709551615", 206, 5000, None),
        ("Range: bytes=4990-", 206, 10, None),
    ];
    for (range, status, len, reason) in table {
        let r = curl(&["--max-time", "10", "-H", range, &url]);
        let shown = &range[..range.len().min(60)];
        assert_eq!(r.status, *status, "{shown}: {}", r.text());
        match reason {
            Some(reason) => {
                assert!(r.text().contains(reason), "{shown}: {}", r.text());
                assert_eq!(r.header("content-range"), Some("bytes */5000"), "{shown}");
            }
            None => assert_eq!(r.body.len(), *len, "{shown}"),
        }
    }
    assert_eq!(stack.origin.count("/r.ts"), 1, "one fill served them all");
    stack.assert_alive_and_bounded("range abuse");
}

#[test]
fn host_and_absolute_form_tricks_get_their_answer() {
    // Already tested: a foreign Host and a foreign absolute-form target (421), our own absolute-form target
    // (200) (serving.rs). HTTP/2's Host and :authority: http2_attacks_are_cut_off_and_floods_cost_nothing.
    let stack = Stack::start("");
    let get = |target: &str, fields: &str| format!("GET {target} HTTP/1.1\r\n{fields}\r\n");
    let table: Vec<(&str, String, u16, Option<&str>)> = vec![
        // Absolute form: the target's authority decides and Host is ignored (RFC 9112 3.2.2).
        (
            "absolute form with a foreign Host",
            get("http://localhost/a.ts", "Host: evil.example\r\n"),
            200,
            None,
        ),
        (
            "userinfo in an absolute form",
            get("http://evil.example@localhost/a.ts", "Host: localhost\r\n"),
            421,
            Some("it is not an open proxy"),
        ),
        (
            "userinfo in Host",
            get("/a.ts", "Host: evil@localhost\r\n"),
            421,
            Some("no site for host `evil@localhost`"),
        ),
        (
            "a trailing dot",
            get("/a.ts", "Host: localhost.\r\n"),
            421,
            Some("no site for host `localhost.`"),
        ),
        (
            "a port that is not a number",
            get("/a.ts", "Host: localhost:abc\r\n"),
            421,
            None,
        ),
        (
            "a space in Host",
            get("/a.ts", "Host: local host\r\n"),
            421,
            None,
        ),
        ("upper case", get("/a.ts", "Host: LOCALHOST\r\n"), 200, None),
        (
            "another port",
            get("/a.ts", "Host: localhost:1\r\n"),
            200,
            None,
        ),
        (
            "an empty Host",
            get("/a.ts", "Host: \r\n"),
            421,
            Some("no site for host ``"),
        ),
        (
            "no Host",
            get("/a.ts", ""),
            400,
            Some("a Host header is required"),
        ),
        (
            "no Host in HTTP/1.0",
            "GET /a.ts HTTP/1.0\r\n\r\n".to_string(),
            400,
            Some("a Host header is required"),
        ),
        (
            "CONNECT",
            "CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n".to_string(),
            405,
            Some("method CONNECT is not served"),
        ),
        (
            "a lower-case method",
            get("/a.ts", "Host: localhost\r\n").replacen("GET", "get", 1),
            405,
            Some("method get is not served"),
        ),
        (
            "OPTIONS *",
            get("*", "Host: localhost\r\n").replacen("GET", "OPTIONS", 1),
            400,
            Some("the request path must start with '/'"),
        ),
        (
            "another scheme",
            get("ftp://localhost/a.ts", "Host: localhost\r\n"),
            400,
            None,
        ),
    ];
    for listener in [stack.plain(), stack.tls()] {
        for (trick, request, status, reason) in &table {
            let answer = first_answer(&listener, request.as_bytes());
            let context = format!("{} {trick}", listener.name());
            assert_answer(&context, answer.status, &answer.text(), *status, *reason);
        }
    }
    stack.assert_alive_and_bounded("Host tricks");
}

#[test]
fn encoded_paths_get_their_answer() {
    // Already tested: `/../` and `/%2e%2e/` (serving.rs); every spelling of a path meets the same signed,
    // bypass and purge rules and one cache key (request_path.rs).
    let stack = Stack::start("");
    let table: &[(&str, u16, &str)] = &[
        ("/m%2Fa.ts", 400, "encoded '/' or '\\' is not allowed"),
        ("/m%2fa.ts", 400, "encoded '/' or '\\' is not allowed"),
        ("/m%5Ca.ts", 400, "encoded '/' or '\\' is not allowed"),
        ("/m\\a.ts", 400, "'\\' is not allowed in paths"),
        ("/m/a%00.ts", 400, "NUL and control characters"),
        ("/m/a%0A.ts", 400, "NUL and control characters"),
        (
            "/m/%C0%AE%C0%AE/a.ts",
            400,
            "not valid percent-encoded UTF-8",
        ), // overlong '.'
        ("/m/%FF/a.ts", 400, "not valid percent-encoded UTF-8"),
        ("/m/%zz.ts", 400, "not valid percent-encoded UTF-8"),
        ("/m/%2.ts", 400, "not valid percent-encoded UTF-8"),
        ("/m//a.ts", 400, "empty path segments"),
        ("/m/./a.ts", 400, "'.' and '..' segments"),
        ("/m/%2E/a.ts", 400, "'.' and '..' segments"),
        ("/m/.%2e/a.ts", 400, "'.' and '..' segments"),
        ("/m/a.ts;/../x", 400, "'.' and '..' segments"),
        ("/m/", 404, "directories are not served"),
        // Decoded once, never twice: `%252e%252e` is the literal segment `%2e%2e`, an ordinary name.
        ("/m/%252e%252e/a.ts", 200, ""),
        // Unreserved characters percent-encoded are the same object as their plain spelling.
        ("/%6D/%61.ts", 200, ""),
    ];
    for listener in [stack.plain(), stack.tls()] {
        for (path, status, reason) in table {
            let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
            let answer = first_answer(&listener, request.as_bytes());
            assert_answer(path, answer.status, &answer.text(), *status, Some(reason));
        }
    }
    // Only the two servable spellings reached the origin, each once; `/%6D/%61.ts` is `/m/a.ts`.
    let seen: Vec<String> = stack
        .origin
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(seen, ["/m/%252e%252e/a.ts", "/m/a.ts"], "{seen:?}");
    stack.assert_alive_and_bounded("encoded paths");
}

#[test]
fn a_raw_utf8_path_is_its_percent_encoded_spelling() {
    let stack = Stack::start("");
    let raw = "GET /m/\u{e9}.ts HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let encoded = "GET /m/%C3%A9.ts HTTP/1.1\r\nHost: localhost\r\n\r\n";
    assert_eq!(first_answer(&stack.plain(), raw.as_bytes()).status, 200);
    let second = first_answer(&stack.plain(), encoded.as_bytes());
    assert!(
        second
            .header("cache-status")
            .unwrap_or("")
            .contains("; hit;"),
        "{:?}",
        second.header("cache-status")
    );
    let seen: Vec<String> = stack
        .origin
        .requests()
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(seen, ["/m/%C3%A9.ts"]);
}

#[test]
fn signed_url_tricks_are_refused_with_their_reason() {
    // Already tested (signed_urls.rs, over HTTP/1.1 and HTTP/2): missing, expired, tampered, unknown key id,
    // wrong prefix, another client's and malformed tokens; request_path.rs: encoded spellings of a signed path.
    use shared::token::{Grant, SigningKey, sign};
    const SECRET: &str = "hostile-test signing secret, 32+ bytes long";
    let sites = "[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"UPSTREAM\"\nsigned_paths = [\"/titles/\"]\n";
    let origin = ScriptedOrigin::start(|_| {
        Scripted::ok(vec![b's'; 100]).header("Cache-Control", "max-age=600")
    });
    let certs = TestCerts::generate();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "[[signing_key]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n{}",
        sites.replace("UPSTREAM", &origin.url())
    );
    let edge = start_edge(&origin.url(), dir.path(), &certs, &extra);
    let rss_before = edge.rss_kib();
    let key = SigningKey::new("k1", SECRET.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = |prefix: &str, client: &str| {
        sign(
            &key,
            &Grant {
                key_id: "k1".into(),
                expires: now + 600,
                prefix: prefix.into(),
                client: client.into(),
            },
        )
    };
    let a = token("/titles/a/", "");
    let https = |path: &str| format!("https://localhost:{}{path}", edge.addr("tls_addr").port());
    let ca = certs.ca();
    let get = |path: &str, extra: &[&str]| {
        let url = https(path);
        let mut args = vec!["--cacert", ca.to_str().unwrap(), "--path-as-is"];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    };
    let long = "A".repeat(1500);
    let table: Vec<(String, Vec<&str>, u16, &str)> = vec![
        (format!("/t/{a}/titles/a/x.ts"), vec![], 200, ""),
        // A prefix is a whole path segment: `/titles/a/` does not open `/titles/ab/`.
        (
            format!("/t/{a}/titles/ab/x.ts"),
            vec![],
            403,
            "wrong prefix",
        ),
        // Climbing out of the prefix, plainly or encoded: refused before the token is even used.
        (
            format!("/t/{a}/titles/a/../b/x.ts"),
            vec![],
            400,
            "'.' and '..' segments",
        ),
        (
            format!("/t/{a}/titles/a/%2e%2e/b/x.ts"),
            vec![],
            400,
            "'.' and '..' segments",
        ),
        (
            format!("/t/{a}/titles/a%2F..%2Fb/x.ts"),
            vec![],
            400,
            "encoded '/'",
        ),
        // A token bound to another address: what the client claims in forwarding fields does not count.
        (
            format!("/t/{}/titles/a/x.ts", token("/titles/", "10.9.9.9")),
            vec![
                "-H",
                "X-Forwarded-For: 10.9.9.9",
                "-H",
                "Forwarded: for=10.9.9.9",
            ],
            403,
            "another client",
        ),
        (format!("/t/{long}/titles/a/x.ts"), vec![], 403, "malformed"),
        (
            "/t//titles/a/x.ts".to_string(),
            vec![],
            400,
            "empty path segments",
        ),
        ("/t/titles/a/x.ts".to_string(), vec![], 403, ""),
    ];
    for (path, extra, status, reason) in &table {
        let r = get(path, extra);
        let shown = &path[..path.len().min(80)];
        assert_answer(shown, r.status, &r.text(), *status, Some(reason));
    }
    // Over HTTP/3 (aioquic) the refusals are the same.
    let refused = testkit::h3_get(
        testkit::H3Client::Aioquic,
        &https(&format!("/t/{a}/titles/ab/x.ts")),
        &ca,
        None,
    )
    .unwrap();
    assert_eq!(refused.status, 403);
    assert!(String::from_utf8_lossy(&refused.body).contains("wrong prefix"));
    assert_eq!(origin.count("/titles/ab/x.ts"), 0);
    assert_eq!(origin.count("/titles/b/x.ts"), 0);
    assert!(edge.rss_kib() < rss_before + RSS_GROWTH_KIB);
}

#[test]
fn the_admin_api_refuses_bad_credentials_and_bodies() {
    // Already tested (caching.rs): a purge without a token or with a wrong one (401), bodies that are not
    // JSON, miss their field, name an unknown host or field (400 with the reason).
    let stack = Stack::start("[limits]\nrequest_body_timeout_secs = 1\n");
    let admin = stack.edge.url("admin_addr");
    let purge = format!("{admin}/purge");
    let good = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let half = format!("Authorization: Bearer {}", &ADMIN_TOKEN[..10]);
    let longer = format!("Authorization: Bearer {ADMIN_TOKEN}x");
    let padded = format!("Authorization: Bearer  {ADMIN_TOKEN}");
    let huge = format!("Authorization: Bearer {}", "t".repeat(10_000));
    let basic = format!("Authorization: Basic {ADMIN_TOKEN}");
    for (what, auth) in [
        ("a prefix of the token", half.as_str()),
        ("the token and one more character", longer.as_str()),
        ("two spaces", padded.as_str()),
        ("a 10 KB token", huge.as_str()),
        ("another scheme", basic.as_str()),
        ("an empty token", "Authorization: Bearer "),
        ("no scheme", "Authorization: hostile-admin-token-0123456789"),
    ] {
        for path in ["/purge", "/bans", "/metrics"] {
            let r = curl(&[
                "-H",
                auth,
                "-d",
                "{\"tag\": \"x\"}",
                &format!("{admin}{path}"),
            ]);
            assert_eq!(r.status, 401, "{what} {path}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
        }
    }
    // Bytes that are not UTF-8 in the Authorization field: 401 as well.
    let raw = format!(
        "GET /bans HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \u{00ff}{ADMIN_TOKEN}\r\n\r\n"
    );
    let mut request = raw.into_bytes();
    let at = request.windows(2).position(|w| w == [0xC3, 0xBF]).unwrap();
    request.splice(at..at + 2, [0xFF]);
    assert_eq!(first_answer(&stack.admin(), &request).status, 401);

    // Bodies: too large (413), not UTF-8, a lone surrogate, nested past serde's limit (400 with the reason).
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        format!("@{}", path.display())
    };
    let big = file("big.json", &vec![b' '; 1 << 20]);
    let not_utf8 = file("utf8.json", b"{\"url\": \"https://localhost/\xff\xfe\"}");
    let deep = file(
        "deep.json",
        format!("{}{}", "[".repeat(1000), "]".repeat(1000)).as_bytes(),
    );
    for (what, body, status, reason) in [
        ("1 MiB", big.as_str(), 413, "larger than 16384 bytes"),
        ("not UTF-8", not_utf8.as_str(), 400, "must be JSON"),
        (
            "a lone surrogate",
            "{\"url\": \"https://localhost/\\ud800\"}",
            400,
            "must be JSON",
        ),
        ("nested 1,000 deep", deep.as_str(), 400, "must be JSON"),
        (
            "a control character",
            "{\"url\": \"https://localhost/a\\u0000b\"}",
            400,
            "is not a URL",
        ),
        (
            "a prefix climbing out",
            "{\"prefix\": \"https://localhost/../\"}",
            400,
            "'.' and '..' segments",
        ),
        ("a number", "{\"url\": 7}", 400, "must be JSON"),
    ] {
        let r = curl(&["-H", &good, "--data-binary", body, &purge]);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert!(r.text().contains(reason), "{what}: {}", r.text());
    }
    // The clock is not for production: refused when the edge has no test clock.
    let clock = curl(&[
        "-H",
        &good,
        "-d",
        "{\"advance_secs\": 5}",
        &format!("{admin}/clock"),
    ]);
    assert_eq!(clock.status, 403, "{}", clock.text());
    stack.assert_alive_and_bounded("admin API abuse");
}

/// Checks an answer's status and, when given, that its body gives `reason`; `context` names the case.
fn assert_answer(context: &str, status: u16, text: &str, want: u16, reason: Option<&str>) {
    assert_eq!(status, want, "{context}: {text}");
    if let Some(reason) = reason {
        assert!(text.contains(reason), "{context}: {text}");
    }
}
