//! The request path's defects, each tested where it was seen, over HTTP/1.1, HTTP/2 (curl) and HTTP/3 (aioquic)
//! where the path differs: every percent-encoded spelling of a path meets the same signed, bypass and purge
//! rules (one canonical request); the whole header section of a response reaches the client on misses, hits,
//! HEAD, passes and 304 refreshes; a fill carries the request's end-to-end fields upstream; each client request
//! costs one upstream request (a non-storable answer is streamed, a revalidation's 200 becomes the new version);
//! a hit that fetches later slices says `fwd=partial`; and an unsafe method in 0-RTT early data gets 425.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use shared::token::{Grant, SigningKey, sign};
use testkit::{
    CurlResponse, H3Client, Scripted, ScriptedOrigin, SeenRequest, ServerProcess, TestCerts, curl,
    h3_request, start_edge,
};

const TOKEN: &str = "purge-token-0123456789";
const SECRET: &str = "edge-test signing secret, 32+ bytes long";

struct Fixture {
    origin: ScriptedOrigin,
    certs: TestCerts,
    _dir: tempfile::TempDir,
    edge: ServerProcess,
}

/// What a request came back with, whichever client sent it.
struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn cache_status(&self) -> &str {
        self.header("cache-status").unwrap_or("")
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl From<CurlResponse> for Got {
    fn from(r: CurlResponse) -> Self {
        Got {
            status: r.status,
            headers: r.headers,
            body: r.body,
        }
    }
}

const PROTOCOLS: [&str; 3] = ["h1", "h2", "h3"];

impl Fixture {
    fn start(
        script: impl Fn(&SeenRequest) -> Scripted + Send + Sync + 'static,
        extra: &str,
    ) -> Fixture {
        let origin = ScriptedOrigin::start(script);
        let certs = TestCerts::generate();
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("[admin]\nbearer_token = \"{TOKEN}\"\n{extra}")
            .replace("{upstream}", &origin.url());
        let edge = start_edge(&origin.url(), dir.path(), &certs, &extra);
        Fixture {
            origin,
            certs,
            _dir: dir,
            edge,
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.edge.addr("tls_addr").port()
        )
    }

    /// A request for `path` over `proto` (`h1`, `h2`, `h3`), with curl's `args` (`-I`, `-r A-B`, `-H …`; for
    /// HTTP/3 only `-I`, `-H` and `-X` are understood).
    fn get(&self, proto: &str, path: &str, args: &[&str]) -> Got {
        let ca = self.certs.ca();
        if proto == "h3" {
            let mut h3_args = Vec::new();
            let mut i = 0;
            while i < args.len() {
                match args[i] {
                    "-I" => h3_args.extend(["--method", "HEAD"]),
                    "-H" => {
                        h3_args.extend(["-H", args[i + 1]]);
                        i += 1;
                    }
                    "-X" => {
                        h3_args.extend(["--method", args[i + 1]]);
                        i += 1;
                    }
                    "-r" => {
                        h3_args.extend(["--range", args[i + 1]]);
                        i += 1;
                    }
                    other => panic!("not for HTTP/3: {other}"),
                }
                i += 1;
            }
            // 127.0.0.1: the edge's QUIC socket listens on IPv4 only.
            let url = format!(
                "https://127.0.0.1:{}{path}",
                self.edge.addr("tls_addr").port()
            );
            let r = h3_request(H3Client::Aioquic, &url, &ca, &h3_args).unwrap();
            assert_eq!(r.protocol, "h3");
            return Got {
                status: r.status,
                headers: r.headers.into_iter().collect(),
                body: r.body,
            };
        }
        let flag = if proto == "h2" {
            "--http2"
        } else {
            "--http1.1"
        };
        let url = self.url(path);
        let mut all = vec![flag, "--path-as-is", "--cacert", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all).into()
    }

    fn purge(&self, json: &str) -> CurlResponse {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let url = format!("{}/purge", self.edge.url("admin_addr"));
        curl(&["-X", "POST", "-H", &auth, "-d", json, &url])
    }
}

fn token(prefix: &str) -> String {
    let key = SigningKey::new("k1", SECRET.as_bytes());
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    sign(
        &key,
        &Grant {
            key_id: "k1".into(),
            expires,
            prefix: prefix.into(),
            client: String::new(),
        },
    )
}

/// Every spelling of `/{proto}/titles/a/master.m3u8` a client can send.
fn spellings(proto: &str) -> [String; 4] {
    [
        format!("/{proto}/titles/a/master.m3u8"),
        format!("/{proto}/%74itles/a/master.m3u8"),
        format!("/{proto}/%74%69%74%6C%65%73/a/master.m3u8"),
        format!("/{proto}/%74%69%74%6c%65%73/a/m%61ster.m3u8"),
    ]
}

#[test]
fn encoded_spellings_meet_the_signed_and_bypass_rules() {
    let f = Fixture::start(
        |_| Scripted::ok("#EXTM3U\nsecret\n").header("Cache-Control", "max-age=600"),
        &format!(
            "[[signing_key]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n\
             [[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{{upstream}}\"\n\
             signed_paths = [\"/h1/titles/\", \"/h2/titles/\", \"/h3/titles/\"]\n\
             bypass_paths = [\"/h1/live/\", \"/h2/live/\", \"/h3/live/\"]\n"
        ),
    );
    for proto in PROTOCOLS {
        for path in spellings(proto) {
            let refused = f.get(proto, &path, &[]);
            assert_eq!(refused.status, 403, "{proto} {path}: {}", refused.text());
            assert!(
                refused.text().contains("only through a signed URL"),
                "{path}"
            );
        }
        // The token opens every spelling, and the upstream sees one.
        for path in spellings(proto) {
            let signed = f.get(
                proto,
                &format!("/t/{}{path}", token(&format!("/{proto}/titles/"))),
                &[],
            );
            assert_eq!(signed.status, 200, "{proto} {path}: {}", signed.text());
        }
        let canonical = format!("/{proto}/titles/a/master.m3u8");
        assert_eq!(
            f.origin.count(&canonical),
            1,
            "{proto}: one copy for every spelling"
        );
        // A bypassed prefix, spelled otherwise, still bypasses the cache; the upstream sees the canonical path.
        for path in [
            format!("/{proto}/live/x.m3u8"),
            format!("/{proto}/%6Cive/x.m3u8"),
            format!("/{proto}/%6c%69ve/x.m3u8"),
        ] {
            let passed = f.get(proto, &path, &[]);
            assert_eq!(passed.status, 200);
            assert_eq!(
                passed.cache_status(),
                "edge-test; fwd=bypass",
                "{proto} {path}"
            );
        }
        assert_eq!(f.origin.count(&format!("/{proto}/live/x.m3u8")), 3);
    }
    assert!(
        f.origin.requests().iter().all(|r| !r.path.contains('%')),
        "the upstream only ever sees canonical paths"
    );
}

#[test]
fn purges_cover_every_spelling_of_a_url() {
    let served = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&served);
    let f = Fixture::start(
        move |req| {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Scripted::ok(format!("{} #{n}", req.path)).header("Cache-Control", "max-age=600")
        },
        "",
    );
    let host = format!("https://localhost:{}", f.edge.addr("tls_addr").port());
    for proto in PROTOCOLS {
        let plain = format!("/{proto}/v/seg_001.ts");
        let encoded = [
            format!("/{proto}/%76/seg_001.ts"),
            format!("/{proto}/v/seg_00%31.ts"),
            format!("/{proto}/%76/s%65g_00%31.ts"),
        ];
        let first = f.get(proto, &plain, &[]);
        assert!(
            first.cache_status().contains("fwd=uri-miss"),
            "{}",
            first.cache_status()
        );
        for path in &encoded {
            let again = f.get(proto, path, &[]);
            assert!(
                again.cache_status().contains("; hit;"),
                "{proto} {path}: one entry for every spelling"
            );
            assert_eq!(again.body, first.body);
        }
        // Purged by one spelling of the URL, another spelling misses; the new copy serves them all again.
        let purge = f.purge(&format!("{{\"url\": \"{host}{}\"}}", encoded[2]));
        assert_eq!(purge.status, 200, "{}", purge.text());
        let after = f.get(proto, &encoded[0], &[]);
        assert!(
            after.cache_status().contains("fwd=uri-miss"),
            "{proto} after a URL purge: {}",
            after.cache_status()
        );
        assert_ne!(after.body, first.body, "a new copy");
        assert!(
            f.get(proto, &encoded[1], &[])
                .cache_status()
                .contains("; hit;")
        );
        // Purged by an encoded prefix: likewise.
        let purge = f.purge(&format!("{{\"prefix\": \"{host}/{proto}/%76/\"}}"));
        assert_eq!(purge.status, 200, "{}", purge.text());
        let after = f.get(proto, &plain, &[]);
        assert!(
            after.cache_status().contains("fwd=uri-miss"),
            "{proto} after a prefix purge: {}",
            after.cache_status()
        );
        assert_eq!(
            f.origin.count(&plain),
            3,
            "{proto}: one fill per purge, whatever the spelling"
        );
    }
}

/// The end-to-end fields an origin sends that a client must receive.
const ORIGIN_FIELDS: [(&str, &str); 8] = [
    (
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    ),
    ("timing-allow-origin", "*"),
    ("server-timing", "origin;dur=12"),
    ("content-security-policy", "default-src 'none'"),
    ("link", "</next.ts>; rel=preload"),
    ("x-app", "one"),
    ("x-content-type-options", "nosniff"),
    ("content-language", "fr"),
];

fn with_origin_fields(mut s: Scripted) -> Scripted {
    for (name, value) in ORIGIN_FIELDS {
        s = s.header(name, value);
    }
    s.header("X-App", "two")
        .header("Connection", "X-Hop")
        .header("X-Hop", "for the edge only")
        .header("Surrogate-Key", "tag-1")
}

fn assert_origin_fields(got: &Got, what: &str) {
    for (name, value) in ORIGIN_FIELDS {
        // HTTP/3's client reports repeated lines as one list; either way every value is there.
        let values = got.all(name).join(", ");
        assert!(
            values.split(", ").any(|v| v == value),
            "{what}: {name}: {value} is missing ({values:?}); got {:?}",
            got.headers
        );
    }
    assert_eq!(
        got.all("x-app").join(", "),
        "one, two",
        "{what}: both x-app lines, in order"
    );
    assert_eq!(
        got.header("x-hop"),
        None,
        "{what}: a field named in Connection is hop-by-hop"
    );
    assert_eq!(
        got.header("surrogate-key"),
        None,
        "{what}: purge tags are for the edge"
    );
}

#[test]
fn the_whole_header_section_reaches_the_client() {
    let version = Arc::new(AtomicUsize::new(1));
    let v = Arc::clone(&version);
    let f = Fixture::start(
        move |req| {
            let v = v.load(Ordering::SeqCst);
            if req.path.ends_with("/pass") {
                return with_origin_fields(
                    Scripted::ok("private").header("Cache-Control", "no-store"),
                );
            }
            let cache_control = if req.path.ends_with("/refresh") {
                "max-age=0"
            } else {
                "max-age=600"
            };
            let mut s = with_origin_fields(Scripted::ok("stored body"))
                .header("Cache-Control", cache_control)
                .header("ETag", "\"v1\"");
            if v > 1 {
                s = s.header("X-Refreshed", &v.to_string());
            }
            s
        },
        "",
    );
    for proto in PROTOCOLS {
        let path = format!("/{proto}/obj");
        let miss = f.get(proto, &path, &[]);
        assert!(miss.cache_status().contains("fwd=uri-miss"));
        assert_origin_fields(&miss, &format!("{proto} miss"));
        let hit = f.get(proto, &path, &[]);
        assert!(hit.cache_status().contains("; hit;"));
        assert_origin_fields(&hit, &format!("{proto} hit"));
        // (aioquic takes a HEAD answer's Content-Length for its body's: HEAD over HTTP/1.1 and HTTP/2 only.)
        if proto != "h3" {
            let head = f.get(proto, &path, &["-I"]);
            assert!(head.cache_status().contains("; hit;"));
            assert_origin_fields(&head, &format!("{proto} HEAD"));
        }
        let pass = f.get(proto, &format!("/{proto}/pass"), &[]);
        assert!(
            pass.cache_status().contains("detail=no-store"),
            "{}",
            pass.cache_status()
        );
        assert_origin_fields(&pass, &format!("{proto} pass"));
        // A 304 updates the stored fields (RFC 9111 §3.2) and keeps the others.
        let refresh = format!("/{proto}/refresh");
        f.get(proto, &refresh, &[]);
        version.store(2, Ordering::SeqCst);
        let refreshed = f.get(proto, &refresh, &[]);
        assert!(
            refreshed.cache_status().contains("fwd-status=304"),
            "{}",
            refreshed.cache_status()
        );
        assert_eq!(refreshed.header("x-refreshed"), Some("2"));
        assert_origin_fields(&refreshed, &format!("{proto} 304 refresh"));
        assert_eq!(refreshed.text(), "stored body");
        version.store(1, Ordering::SeqCst);
    }
}

#[test]
fn fills_and_passes_carry_the_requests_end_to_end_fields() {
    let f = Fixture::start(
        |_| Scripted::ok("x").header("Cache-Control", "max-age=600"),
        "[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{upstream}\"\n\
         strip_request_fields = [\"X-Internal\"]\n",
    );
    for proto in PROTOCOLS {
        let path = format!("/{proto}/fill");
        f.get(
            proto,
            &path,
            &[
                "-H",
                "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "-H",
                "X-Request-Id: r-42",
                "-H",
                "X-Internal: secret",
                "-H",
                "Cookie: session=abc",
                "-H",
                "If-None-Match: \"other\"",
            ],
        );
        let seen = f.origin.requests_for(&path);
        assert_eq!(seen.len(), 1, "{proto}");
        let fill = &seen[0];
        assert_eq!(
            fill.header("traceparent"),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            "{proto}"
        );
        assert_eq!(fill.header("x-request-id"), Some("r-42"), "{proto}");
        assert_eq!(
            fill.header("x-internal"),
            None,
            "{proto}: the site's deny list"
        );
        assert_eq!(
            fill.header("cookie"),
            None,
            "{proto}: a shared fill carries no cookie"
        );
        assert_eq!(
            fill.header("if-none-match"),
            None,
            "{proto}: a fill is unconditional"
        );
        assert!(
            fill.header("range")
                .is_some_and(|r| r.starts_with("bytes=0-")),
            "{proto}"
        );
        assert!(fill.header("via").is_some(), "{proto}");
        // A pass is one client's: its credentials and preconditions go along.
        let pass = format!("/{proto}/pass");
        f.get(
            proto,
            &pass,
            &[
                "-H",
                "Authorization: Bearer t",
                "-H",
                "X-Request-Id: r-43",
                "-H",
                "X-Internal: s",
            ],
        );
        let seen = f.origin.requests_for(&pass);
        assert_eq!(seen[0].header("authorization"), Some("Bearer t"), "{proto}");
        assert_eq!(seen[0].header("x-request-id"), Some("r-43"), "{proto}");
        assert_eq!(seen[0].header("x-internal"), None, "{proto}");
    }
}

#[test]
fn each_client_request_costs_one_upstream_request() {
    let version = Arc::new(AtomicUsize::new(1));
    let v = Arc::clone(&version);
    let f = Fixture::start(
        move |req| {
            let v = v.load(Ordering::SeqCst);
            if req.path.contains("/private/") {
                return Scripted::ok(format!("private answer {v}"))
                    .header("Cache-Control", "no-store");
            }
            Scripted::ok(format!("version {v} of the object"))
                .header("Cache-Control", "max-age=0")
                .header("ETag", &format!("\"v{v}\""))
        },
        "",
    );
    for proto in PROTOCOLS {
        version.store(1, Ordering::SeqCst);
        // A non-storable answer streams to the request that caused it: whole, then a range of it.
        let private = format!("/{proto}/private/a");
        let whole = f.get(proto, &private, &[]);
        assert_eq!(whole.status, 200, "{proto}");
        assert_eq!(whole.text(), "private answer 1");
        assert!(whole.cache_status().contains("detail=no-store"));
        assert_eq!(
            f.origin.count(&private),
            1,
            "{proto}: one upstream request for a non-storable answer"
        );
        let ranged = format!("/{proto}/private/b");
        let part = f.get(proto, &ranged, &["-r", "8-13"]);
        assert_eq!(part.status, 206, "{proto}");
        assert_eq!(part.text(), "answer");
        assert_eq!(part.header("content-range"), Some("bytes 8-13/16"));
        assert_eq!(f.origin.count(&ranged), 1, "{proto}");

        // Revalidation is one conditional request; its 200 (206) becomes the new version.
        let object = format!("/{proto}/object");
        version.store(1, Ordering::SeqCst);
        assert_eq!(f.get(proto, &object, &[]).text(), "version 1 of the object");
        version.store(2, Ordering::SeqCst);
        let changed = f.get(proto, &object, &[]);
        assert_eq!(changed.text(), "version 2 of the object", "{proto}");
        assert!(
            changed.cache_status().contains("fwd=stale; stored"),
            "{proto}: {}",
            changed.cache_status()
        );
        let seen = f.origin.requests_for(&object);
        assert_eq!(
            seen.len(),
            2,
            "{proto}: one upstream request for a revalidation answered 200"
        );
        assert_eq!(seen[1].header("if-none-match"), Some("\"v1\""));
        let same = f.get(proto, &object, &[]);
        assert!(
            same.cache_status().contains("fwd-status=304"),
            "{}",
            same.cache_status()
        );
        assert_eq!(same.text(), "version 2 of the object");
        assert_eq!(f.origin.count(&object), 3);
    }
}

#[test]
fn a_hit_that_fetches_later_slices_is_partial() {
    let body: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
    let served = body.clone();
    let f = Fixture::start(
        move |_| {
            Scripted::ok(served.clone())
                .header("Cache-Control", "max-age=600")
                .header("ETag", "\"b\"")
        },
        "[cache]\nslice_bytes = 65536\n",
    );
    for proto in PROTOCOLS {
        let path = format!("/{proto}/big.mp4");
        let first = f.get(proto, &path, &["-r", "0-999"]);
        assert_eq!(first.status, 206);
        let whole = f.get(proto, &path, &[]);
        assert!(whole.body == body, "{proto}");
        assert!(
            whole
                .cache_status()
                .starts_with("edge-test; fwd=partial; stored"),
            "{proto}: {}",
            whole.cache_status()
        );
        let again = f.get(proto, &path, &[]);
        assert!(
            again.cache_status().contains("; hit;"),
            "{proto}: {}",
            again.cache_status()
        );
    }
    let partial = f
        .edge
        .log_events("access")
        .into_iter()
        .filter(|e| e["fwd"] == "partial")
        .count();
    assert_eq!(partial, 3, "the access log agrees with Cache-Status");
    let metrics = curl(&[
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{}/metrics", f.edge.url("admin_addr")),
    ])
    .text();
    assert!(metrics.contains("fwd=\"partial\"} 3"), "{metrics}");
}

#[test]
fn unsafe_methods_in_early_data_get_425() {
    let f = Fixture::start(
        |req| {
            let cache_control = if req.path.ends_with("/pass") {
                "no-store"
            } else {
                "max-age=600"
            };
            Scripted::ok("ok").header("Cache-Control", cache_control)
        },
        "[h3]\nzero_rtt = true\n",
    );
    let ca = f.certs.ca();
    let url = format!(
        "https://127.0.0.1:{}/early/a",
        f.edge.addr("tls_addr").port()
    );
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = h3_request(
            H3Client::Aioquic,
            &url,
            &ca,
            &["--zero-rtt", "--method", method],
        )
        .unwrap();
        assert_eq!(
            r.headers.get("x-early-data-accepted").map(String::as_str),
            Some("1"),
            "the request went in 0-RTT"
        );
        assert_eq!(r.status, 425, "{method}");
        assert!(
            String::from_utf8_lossy(&r.body).contains("early data"),
            "{method}"
        );
    }
    assert!(
        f.origin.requests().iter().all(|r| r.method == "GET"),
        "nothing replayable reached the upstream"
    );
    // A safe request in early data is served, and says so upstream; the ticket's own request (after its
    // handshake) does not. `/early/pass` is never stored, so both reach the upstream.
    let pass = format!(
        "https://127.0.0.1:{}/early/pass",
        f.edge.addr("tls_addr").port()
    );
    let r = h3_request(H3Client::Aioquic, &pass, &ca, &["--zero-rtt"]).unwrap();
    assert_eq!(
        r.headers.get("x-early-data-accepted").map(String::as_str),
        Some("1")
    );
    assert_eq!(r.status, 200);
    let seen = f.origin.requests_for("/early/pass");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].header("early-data"), None);
    assert_eq!(seen[1].header("early-data"), Some("1"), "RFC 8470 §5.1");
    // After the handshake, the same unsafe request is served.
    let r = h3_request(H3Client::Aioquic, &url, &ca, &["--method", "POST"]).unwrap();
    assert_eq!(r.status, 200);
}
