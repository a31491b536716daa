//! The edge in front of the real origin, with curl over HTTP/1.1 and HTTP/2 (TLS) and ffmpeg: misses then hits
//! with identical bytes, slice-aligned upstream ranges on a 4 GiB object, refusals, and players.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use testkit::{TempStore, TestCerts, curl, ffmpeg_play, start_edge, start_origin};

struct Stack {
    store: TempStore,
    certs: TestCerts,
    _cache: tempfile::TempDir,
    origin: testkit::ServerProcess,
    edge: testkit::ServerProcess,
}

impl Stack {
    fn start(store: TempStore) -> Stack {
        let certs = TestCerts::generate();
        let cache = tempfile::tempdir().unwrap();
        let origin = start_origin(&store.url(), "");
        let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, "");
        Stack {
            store,
            certs,
            _cache: cache,
            origin,
            edge,
        }
    }

    fn https(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.edge.addr("tls_addr").port()
        )
    }

    fn get(&self, version: &str, path: &str, extra: &[&str]) -> testkit::CurlResponse {
        let ca = self.certs.ca();
        let url = self.https(path);
        let mut args = vec![version, "--cacert", ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// Requests the origin saw for `path`, with their Range headers.
    fn origin_requests(&self, path: &str) -> Vec<Option<String>> {
        self.origin
            .log_events("access")
            .into_iter()
            .filter(|e| e["path"] == path)
            .map(|e| e["range"].as_str().map(String::from))
            .collect()
    }
}

#[test]
fn miss_then_hit_with_identical_bytes_over_h1_and_h2() {
    let store = TempStore::with_samples();
    let keys = [
        "titles/test-pattern/hls/master.m3u8",
        "titles/test-pattern/hls/v0/index.m3u8",
        "titles/test-pattern/hls/v0/seg_000.ts",
        "titles/test-pattern/dash/manifest.mpd",
        "titles/test-pattern/dash/init-0.m4s",
        "titles/test-pattern/dash/chunk-0-00001.m4s",
        "titles/test-pattern/mp4/v0.mp4",
        "titles/test-pattern/subs/en.vtt",
        "titles/test-pattern/poster.jpg",
        "titles/test-pattern/meta.json",
    ];
    let stack = Stack::start(store);
    for key in keys {
        let path = format!("/{key}");
        let want = std::fs::read(stack.store.path().join(key)).unwrap();
        let first = stack.get("--http1.1", &path, &[]);
        assert_eq!(first.status, 200, "{key}: {}", first.text());
        assert_eq!(
            first.cache_status(),
            Some("edge-test; fwd=uri-miss; stored"),
            "{key}"
        );
        assert_eq!(first.body, want, "{key}");
        let second = stack.get("--http2", &path, &[]);
        assert_eq!(second.http_version, "2");
        assert!(
            second
                .header("cache-status")
                .unwrap()
                .starts_with("edge-test; hit; ttl="),
            "{key}"
        );
        assert_eq!(second.body, want, "{key}");
        let third = stack.get("--http1.1", &path, &[]);
        assert!(
            third.header("cache-status").unwrap().contains("; hit"),
            "{key}"
        );
        assert_eq!(third.body, want);
        for name in [
            "etag",
            "last-modified",
            "content-type",
            "cache-control",
            "content-length",
        ] {
            assert_eq!(first.header(name), second.header(name), "{key} {name}");
        }
        assert!(second.header("age").is_some());
        assert_eq!(second.header("accept-ranges"), Some("bytes"));
        assert_eq!(second.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            stack.origin_requests(&path).len(),
            1,
            "{key}: one upstream request"
        );
    }
    // Conditional requests are answered from the cache.
    let etag = stack
        .get("--http2", "/titles/test-pattern/hls/v0/seg_000.ts", &["-I"])
        .header("etag")
        .unwrap()
        .to_string();
    let not_modified = stack.get(
        "--http2",
        "/titles/test-pattern/hls/v0/seg_000.ts",
        &["-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(not_modified.status, 304);
}

#[test]
fn ranges_on_a_4_gib_object_fetch_only_their_slices() {
    const LEN: u64 = 4 << 30;
    const SLICE: u64 = 2 << 20;
    let store = TempStore::new();
    store.put_sparse("big/rendition.mp4", LEN);
    let stack = Stack::start(store);
    let path = "/big/rendition.mp4";
    // The origin logs a request when its body ends, which can be after the edge answered the client.
    let expect_upstream = |n: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut seen = stack.origin_requests(path);
        while seen.len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            seen = stack.origin_requests(path);
        }
        assert_eq!(seen.len(), n, "upstream requests so far: {seen:?}");
        seen
    };

    let start = stack.get("--http2", path, &["-r", "0-1023"]);
    assert_eq!((start.status, start.body.len()), (206, 1024));
    assert_eq!(
        start.header("content-range"),
        Some(format!("bytes 0-1023/{LEN}").as_str())
    );
    assert_eq!(
        expect_upstream(1)[0].as_deref(),
        Some(format!("bytes=0-{}", SLICE - 1).as_str())
    );

    let mid = LEN / 2;
    let middle = stack.get("--http1.1", path, &["-r", &format!("{mid}-{}", mid + 99)]);
    assert_eq!((middle.status, middle.body.len()), (206, 100));
    assert_eq!(
        expect_upstream(2)[1].as_deref(),
        Some(format!("bytes={mid}-{}", mid + SLICE - 1).as_str())
    );

    let end = stack.get("--http2", path, &["-r", "-8"]);
    assert_eq!(
        end.body,
        LEN.to_be_bytes(),
        "the last 8 bytes spell the length"
    );
    assert_eq!(
        expect_upstream(3)[2].as_deref(),
        Some(format!("bytes={}-{}", LEN - SLICE, LEN - 1).as_str())
    );

    // Across the boundary of slices 0 and 1: slice 0 is cached, only slice 1 is fetched, and the answer says
    // it was partly cached (RFC 9211 fwd=partial), not a hit.
    let across = stack.get(
        "--http2",
        path,
        &["-r", &format!("{}-{}", SLICE - 10, SLICE + 9)],
    );
    assert_eq!((across.status, across.body.len()), (206, 20));
    assert!(
        across
            .header("cache-status")
            .unwrap()
            .starts_with("edge-test; fwd=partial; stored"),
        "the first slice needed was cached, the next was not: {:?}",
        across.header("cache-status")
    );
    assert_eq!(
        expect_upstream(4)[3].as_deref(),
        Some(format!("bytes={SLICE}-{}", 2 * SLICE - 1).as_str())
    );

    // Again, all from cache.
    for range in ["0-1023", &format!("{}-{}", SLICE - 10, SLICE + 9), "-8"] {
        let again = stack.get("--http2", path, &["-r", range]);
        assert!(
            again.header("cache-status").unwrap().contains("; hit"),
            "{range}"
        );
    }
    expect_upstream(4);
}

#[test]
fn foreign_hosts_absolute_form_and_bad_requests_are_refused() {
    let store = TempStore::new();
    store.put("t/a.ts", &[5u8; 5000]);
    let stack = Stack::start(store);
    let port = stack.edge.addr("http_addr").port();
    let plain = |extra: &[&str], path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let mut args: Vec<&str> = extra.to_vec();
        args.push(&url);
        curl(&args)
    };
    let foreign = plain(&["-H", "Host: evil.example"], "/t/a.ts");
    assert_eq!(foreign.status, 421);
    assert!(
        foreign.text().contains("not an open proxy"),
        "{}",
        foreign.text()
    );
    let absolute = plain(
        &["--request-target", "http://evil.example/t/a.ts"],
        "/t/a.ts",
    );
    assert_eq!(absolute.status, 421, "{}", absolute.text());
    let absolute_ours = plain(
        &[
            "--request-target",
            &format!("http://localhost:{port}/t/a.ts"),
        ],
        "/t/a.ts",
    );
    assert_eq!(absolute_ours.status, 200);
    let https_foreign = stack.get("--http2", "/t/a.ts", &["-H", "Host: other.example"]);
    assert_eq!(https_foreign.status, 421);
    assert_eq!(plain(&["--path-as-is"], "/../etc/passwd").status, 400);
    assert_eq!(plain(&[], "/%2e%2e/etc/passwd").status, 400);
    assert_eq!(plain(&["-X", "POST", "-d", "x"], "/t/a.ts").status, 405);
    // Malformed and unsatisfiable ranges: 416 with the length; other units: the full body.
    let reversed = plain(&["-H", "Range: bytes=50-10"], "/t/a.ts");
    assert_eq!(reversed.status, 416);
    assert_eq!(reversed.header("content-range"), Some("bytes */5000"));
    assert_eq!(plain(&["-H", "Range: bytes=9000-"], "/t/a.ts").status, 416);
    let other_unit = plain(&["-H", "Range: items=0-1"], "/t/a.ts");
    assert_eq!((other_unit.status, other_unit.body.len()), (200, 5000));
    // None of the refused requests reached the origin.
    assert_eq!(stack.origin_requests("/etc/passwd").len(), 0);
    let preflight = plain(
        &["-X", "OPTIONS", "-H", "Origin: https://player.example"],
        "/t/a.ts",
    );
    assert_eq!(preflight.status, 204);
    assert_eq!(preflight.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn ffmpeg_plays_every_title_through_the_edge_over_https() {
    let stack = Stack::start(TempStore::with_samples());
    let manifests = [
        "titles/test-pattern/hls/master.m3u8",
        "titles/test-pattern/dash/manifest.mpd",
        "titles/test-pattern/mp4/manifest.mpd",
        "titles/test-pattern/mp4/master.m3u8",
        "titles/mandelbrot/cmaf/master.m3u8",
        "titles/mandelbrot/cmaf/manifest.mpd",
    ];
    for key in manifests {
        assert!(stack.store.path().join(key).is_file(), "{key}");
        let url = format!(
            "https://localhost:{}/{key}",
            stack.edge.addr("tls_addr").port()
        );
        let report = ffmpeg_play(&url, Some(&stack.certs.ca()));
        assert!(
            report.is_clean()
                && report.video_frames.len() == 3
                && report.video_frames.iter().all(|f| *f >= 500),
            "{key}: frames {:?} problems:\n{}",
            report.video_frames,
            report.problems.join("\n")
        );
        assert_eq!(report.subtitle_cues.len(), 1, "{key}");
    }
    let errors: Vec<_> = stack
        .edge
        .log_events("access")
        .into_iter()
        .filter(|e| e["status"].as_u64() >= Some(400))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn cors_for_configured_origins_only() {
    let store = TempStore::new();
    store.put("t/a.m3u8", b"#EXTM3U\n#EXT-X-ENDLIST\n");
    let certs = TestCerts::generate();
    let cache = tempfile::tempdir().unwrap();
    let origin = start_origin(&store.url(), "");
    let extra = "[cors]\nallow_origins = [\"https://player.example\"]\n";
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, extra);
    let url = format!(
        "http://127.0.0.1:{}/t/a.m3u8",
        edge.addr("http_addr").port()
    );
    let allowed = curl(&["-H", "Origin: https://player.example", &url]);
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://player.example")
    );
    assert_eq!(allowed.header("vary"), Some("Origin"));
    let other = curl(&["-H", "Origin: https://evil.example", &url]);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.status, 200);
}
