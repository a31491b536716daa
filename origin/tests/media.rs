//! The media origin against curl over HTTP/1.1 and HTTP/2 (cleartext and TLS): media types, HEAD, ranges,
//! conditional requests, traversal attempts, errors with reasons, metrics and the access log.

use testkit::{CurlResponse, TempStore, TestCerts, curl, start_origin};

/// Runs the same request over HTTP/1.1 and over HTTP/2 (prior knowledge), checks both agree, returns HTTP/1.1's.
fn get_both(url: &str, args: &[&str]) -> CurlResponse {
    let mut h1_args = vec!["--http1.1"];
    h1_args.extend_from_slice(args);
    h1_args.push(url);
    let mut h2_args = vec!["--http2-prior-knowledge"];
    h2_args.extend_from_slice(args);
    h2_args.push(url);
    let (h1, h2) = (curl(&h1_args), curl(&h2_args));
    assert_eq!(h1.http_version, "1.1");
    assert_eq!(h2.http_version, "2");
    assert_eq!(h1.status, h2.status, "{url} {args:?}");
    assert_eq!(h1.body, h2.body, "{url} {args:?}");
    for name in [
        "content-length",
        "content-range",
        "etag",
        "content-type",
        "cache-control",
    ] {
        assert_eq!(
            h1.header(name),
            h2.header(name),
            "{name} for {url} {args:?}"
        );
    }
    h1
}

fn store_with_every_type() -> (TempStore, Vec<(&'static str, &'static str)>) {
    let store = TempStore::new();
    let table = vec![
        ("t/master.m3u8", "application/vnd.apple.mpegurl"),
        ("t/manifest.mpd", "application/dash+xml"),
        ("t/seg_000.ts", "video/mp2t"),
        ("t/chunk-0-00001.m4s", "video/iso.segment"),
        ("t/video.mp4", "video/mp4"),
        ("t/audio.m4a", "audio/mp4"),
        ("t/video.m4v", "video/mp4"),
        ("t/audio.aac", "audio/aac"),
        ("t/subs/en.vtt", "text/vtt; charset=utf-8"),
        ("t/enc.key", "application/octet-stream"),
        ("t/meta.json", "application/json"),
        ("t/poster.jpg", "image/jpeg"),
        ("t/poster.png", "image/png"),
    ];
    for (key, _) in &table {
        let content = match *key {
            "t/master.m3u8" => {
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv0/index.m3u8\n".to_string()
            }
            "t/manifest.mpd" => "<?xml version=\"1.0\"?><MPD type=\"static\"></MPD>".to_string(),
            other => format!("content of {other}: {}", "x".repeat(1000)),
        };
        store.put(key, content.as_bytes());
    }
    (store, table)
}

#[test]
fn every_media_type_with_headers_over_h1_and_h2() {
    let (store, table) = store_with_every_type();
    let origin = start_origin(&store.url(), "");
    let base = origin.url("media_addr");
    for (key, content_type) in table {
        let r = get_both(&format!("{base}/{key}"), &[]);
        assert_eq!(r.status, 200, "{key}");
        assert_eq!(r.header("content-type"), Some(content_type), "{key}");
        assert_eq!(
            r.body,
            std::fs::read(store.path().join(key)).unwrap(),
            "{key}"
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(r.header("accept-ranges"), Some("bytes"));
        assert!(r.header("etag").unwrap().starts_with('"'), "{key}");
        assert!(r.header("last-modified").unwrap().ends_with(" GMT"));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        let want_cc = match content_type {
            "application/vnd.apple.mpegurl" | "application/dash+xml" => "public, max-age=86400",
            "application/json" | "image/jpeg" | "image/png" => "public, max-age=3600",
            _ if key.ends_with(".key") => "public, max-age=3600",
            _ => "public, max-age=31536000, immutable",
        };
        assert_eq!(r.header("cache-control"), Some(want_cc), "{key}");
    }
    assert!(origin.stop(), "clean exit on SIGTERM");
}

#[test]
fn head_has_the_get_headers_and_no_body() {
    let (store, _) = store_with_every_type();
    let origin = start_origin(&store.url(), "");
    let url = format!("{}/t/seg_000.ts", origin.url("media_addr"));
    let get = get_both(&url, &[]);
    let head = get_both(&url, &["-I"]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    for name in [
        "content-length",
        "etag",
        "last-modified",
        "content-type",
        "cache-control",
        "accept-ranges",
    ] {
        assert_eq!(head.header(name), get.header(name), "{name}");
    }
    let head_range = get_both(&url, &["-I", "-r", "0-9"]);
    assert_eq!(head_range.status, 206);
    assert_eq!(head_range.header("content-length"), Some("10"));
}

#[test]
fn byte_ranges() {
    let store = TempStore::new();
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    store.put("r/seg.ts", &content);
    let origin = start_origin(&store.url(), "");
    let url = format!("{}/r/seg.ts", origin.url("media_addr"));
    let len = content.len();
    // (Range header, status, Content-Range, body range)
    type Row = (
        &'static str,
        u16,
        Option<String>,
        Option<std::ops::Range<usize>>,
    );
    let table: Vec<Row> = vec![
        (
            "bytes=0-499",
            206,
            Some(format!("bytes 0-499/{len}")),
            Some(0..500),
        ),
        (
            "bytes=500-999",
            206,
            Some(format!("bytes 500-999/{len}")),
            Some(500..1000),
        ),
        (
            "bytes=9000-",
            206,
            Some(format!("bytes 9000-9999/{len}")),
            Some(9000..10000),
        ),
        (
            "bytes=-500",
            206,
            Some(format!("bytes 9500-9999/{len}")),
            Some(9500..10000),
        ),
        (
            "bytes=-20000",
            206,
            Some(format!("bytes 0-9999/{len}")),
            Some(0..10000),
        ),
        (
            "bytes=9990-20000",
            206,
            Some(format!("bytes 9990-9999/{len}")),
            Some(9990..10000),
        ),
        (
            "bytes=0-0",
            206,
            Some(format!("bytes 0-0/{len}")),
            Some(0..1),
        ),
        // past the end
        ("bytes=10000-", 416, Some(format!("bytes */{len}")), None),
        (
            "bytes=20000-30000",
            416,
            Some(format!("bytes */{len}")),
            None,
        ),
        ("bytes=-0", 416, Some(format!("bytes */{len}")), None),
        // reversed and malformed: refused with a reason
        ("bytes=500-100", 416, Some(format!("bytes */{len}")), None),
        ("bytes=abc", 416, Some(format!("bytes */{len}")), None),
        ("bytes=1-2-3", 416, Some(format!("bytes */{len}")), None),
        ("bytes 0-10", 416, Some(format!("bytes */{len}")), None),
        // ignored: other units, several ranges
        ("items=0-5", 200, None, Some(0..len)),
        ("bytes=0-1,5-6", 200, None, Some(0..len)),
    ];
    for (range, status, content_range, body) in table {
        let header = format!("Range: {range}");
        let r = get_both(&url, &["-H", &header]);
        assert_eq!(r.status, status, "{range}");
        assert_eq!(
            r.header("content-range").map(String::from),
            content_range,
            "{range}"
        );
        match body {
            Some(body) => {
                assert_eq!(r.body, content[body.clone()], "{range}");
                assert_eq!(
                    r.header("content-length"),
                    Some(body.len().to_string().as_str()),
                    "{range}"
                );
            }
            None => {
                let text = r.text();
                assert!(
                    text.contains("range not satisfiable") || text.contains("malformed Range"),
                    "{range}: {text}"
                );
            }
        }
    }
}

#[test]
fn conditional_requests() {
    let store = TempStore::new();
    store.put("c/seg.m4s", &[7u8; 4096]);
    let origin = start_origin(&store.url(), "");
    let url = format!("{}/c/seg.m4s", origin.url("media_addr"));
    let first = get_both(&url, &[]);
    let etag = first.header("etag").unwrap().to_string();
    let last_modified = first.header("last-modified").unwrap().to_string();
    let weak = format!("W/{etag}");
    let h = |name: &str, value: &str| format!("{name}: {value}");
    let table: Vec<(Vec<String>, u16, usize)> = vec![
        (vec![h("If-None-Match", &etag)], 304, 0),
        (vec![h("If-None-Match", &weak)], 304, 0),
        (
            vec![h("If-None-Match", &format!("\"other\", {etag}"))],
            304,
            0,
        ),
        (vec![h("If-None-Match", "*")], 304, 0),
        (vec![h("If-None-Match", "\"other\"")], 200, 4096),
        (vec![h("If-Modified-Since", &last_modified)], 304, 0),
        (
            vec![h("If-Modified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")],
            200,
            4096,
        ),
        (vec![h("If-Modified-Since", "yesterday")], 200, 4096),
        (
            vec![
                h("If-None-Match", "\"other\""),
                h("If-Modified-Since", &last_modified),
            ],
            200,
            4096,
        ),
        (vec![h("If-Match", &etag)], 200, 4096),
        (vec![h("If-Match", "\"other\"")], 412, 0),
        (
            vec![h("If-Unmodified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")],
            412,
            0,
        ),
        (
            vec![h("Range", "bytes=0-99"), h("If-Range", &etag)],
            206,
            100,
        ),
        (
            vec![h("Range", "bytes=0-99"), h("If-Range", "\"other\"")],
            200,
            4096,
        ),
        (
            vec![h("Range", "bytes=0-99"), h("If-Range", &weak)],
            200,
            4096,
        ),
        (
            vec![h("Range", "bytes=0-99"), h("If-Range", &last_modified)],
            206,
            100,
        ),
        (
            vec![
                h("Range", "bytes=0-99"),
                h("If-Range", "Thu, 01 Jan 1998 00:00:00 GMT"),
            ],
            200,
            4096,
        ),
    ];
    for (headers, status, body_len) in table {
        let mut args = Vec::new();
        for header in &headers {
            args.push("-H");
            args.push(header.as_str());
        }
        let r = get_both(&url, &args);
        assert_eq!(r.status, status, "{headers:?}");
        if status != 412 {
            assert_eq!(r.body.len(), body_len, "{headers:?}");
        }
        if status == 304 {
            assert_eq!(
                r.header("etag"),
                Some(etag.as_str()),
                "304 carries the validators"
            );
            assert!(
                r.header("cache-control").is_some(),
                "304 carries Cache-Control"
            );
        }
    }
}

#[test]
fn traversal_and_bad_paths_are_refused_with_a_reason() {
    let parent = TempStore::new();
    parent.put("secret.ts", b"outside the store");
    std::fs::create_dir_all(parent.path().join("store/t")).unwrap();
    std::fs::write(parent.path().join("store/t/ok.ts"), b"inside").unwrap();
    let store_url = format!("file://{}", parent.path().join("store").display());
    let origin = start_origin(&store_url, "");
    let base = origin.url("media_addr");
    assert_eq!(curl(&[&format!("{base}/t/ok.ts")]).text(), "inside");
    let table = [
        ("/../secret.ts", 400, "traversal"),
        ("/t/../../secret.ts", 400, "traversal"),
        ("/%2e%2e/secret.ts", 400, "traversal"),
        ("/%2E%2E/secret.ts", 400, "traversal"),
        ("/t/%2e%2e/%2e%2e/secret.ts", 400, "traversal"),
        ("/t%2f..%2f..%2fsecret.ts", 400, "encoded"),
        ("/t%5c..%5c..%5csecret.ts", 400, "encoded"),
        ("/t\\..\\..\\secret.ts", 400, "'\\'"),
        ("/t/ok.ts%00.jpg", 400, "NUL"),
        ("/t//ok.ts", 400, "empty path segments"),
        ("/t/%zz.ts", 400, "percent-encoded"),
        ("/t/", 404, "directories"),
        ("/", 404, "directories"),
        ("/t/missing.ts", 404, "no object at /t/missing.ts"),
        ("/secret.ts", 404, "no object"),
    ];
    for (path, status, reason) in table {
        for version in ["--http1.1", "--http2-prior-knowledge"] {
            let r = curl(&[version, "--path-as-is", &format!("{base}{path}")]);
            assert_eq!(r.status, status, "{path} {version}");
            assert!(r.text().contains(reason), "{path}: {}", r.text());
            assert!(
                !r.text().contains("outside the store"),
                "{path} leaked a file outside the store"
            );
        }
    }
    let r = curl(&["-X", "POST", "-d", "x", &format!("{base}/t/ok.ts")]);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn live_manifests_get_short_cache_control() {
    let store = TempStore::new();
    store.put(
        "live/v0.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:9\n#EXTINF:6,\ns9.ts\n",
    );
    store.put("live/nodur.m3u8", b"#EXTM3U\n#EXTINF:6,\ns9.ts\n");
    store.put(
        "live/m.mpd",
        b"<?xml version=\"1.0\"?>\n<MPD type=\"dynamic\" minimumUpdatePeriod=\"PT4S\"></MPD>",
    );
    store.put(
        "vod/v0.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\ns0.ts\n#EXT-X-ENDLIST\n",
    );
    let origin = start_origin(
        &store.url(),
        "[cache_control]\nlive_manifest_max_age_secs = 5\n",
    );
    let base = origin.url("media_addr");
    let cc = |key: &str| {
        curl(&[&format!("{base}/{key}")])
            .header("cache-control")
            .map(String::from)
    };
    assert_eq!(cc("live/v0.m3u8").as_deref(), Some("public, max-age=3"));
    assert_eq!(cc("live/nodur.m3u8").as_deref(), Some("public, max-age=5"));
    assert_eq!(cc("live/m.mpd").as_deref(), Some("public, max-age=4"));
    assert_eq!(cc("vod/v0.m3u8").as_deref(), Some("public, max-age=86400"));
}

#[test]
fn tls_with_alpn_h2_and_http11() {
    let store = TempStore::new();
    store.put("t/seg.ts", &[1u8; 100_000]);
    let certs = TestCerts::generate();
    let config = format!(
        "[media]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [api]\nlisten = \"\"\n[store]\nurl = \"{}\"\n",
        certs.cert().display(),
        certs.key().display(),
        store.url()
    );
    let origin = testkit::ServerProcess::start(&testkit::binary("origin"), &config);
    let port = origin.addr("media_addr").port();
    let url = format!("https://localhost:{port}/t/seg.ts");
    let ca = certs.ca();
    let ca = ca.to_str().unwrap();
    let h2 = curl(&["--http2", "--cacert", ca, "-r", "10-19", &url]);
    assert_eq!(
        (h2.status, h2.http_version.as_str(), h2.body.len()),
        (206, "2", 10)
    );
    let h1 = curl(&["--http1.1", "--cacert", ca, &url]);
    assert_eq!(
        (h1.status, h1.http_version.as_str(), h1.body.len()),
        (200, "1.1", 100_000)
    );
    let ip = curl(&[
        "--http2",
        "--cacert",
        ca,
        &format!("https://127.0.0.1:{port}/t/seg.ts"),
        "-I",
    ]);
    assert_eq!(ip.status, 200);
}

#[test]
fn metrics_healthz_and_access_log() {
    let (store, _) = store_with_every_type();
    let origin = start_origin(
        &store.url(),
        "[admin]\nbearer_token = \"0123456789abcdef0123\"\n",
    );
    let base = origin.url("media_addr");
    let admin = origin.url("admin_addr");
    assert_eq!(curl(&[&format!("{base}/t/seg_000.ts")]).status, 200);
    assert_eq!(
        curl(&["-r", "0-9", &format!("{base}/t/seg_000.ts")]).status,
        206
    );
    assert_eq!(curl(&[&format!("{base}/t/nope.ts")]).status, 404);
    assert_eq!(curl(&["-I", &format!("{base}/t/seg_000.ts")]).status, 200);
    // The media listener does not serve the admin endpoints, and the admin listener not media.
    assert_eq!(curl(&[&format!("{base}/metrics")]).status, 404);
    assert_eq!(curl(&[&format!("{admin}/t/seg_000.ts")]).status, 404);

    assert_eq!(curl(&[&format!("{admin}/healthz")]).text(), "ok\n");
    assert_eq!(curl(&[&format!("{admin}/metrics")]).status, 401);
    assert_eq!(
        curl(&[
            "-H",
            "Authorization: Bearer wrong-token-wrong-token",
            &format!("{admin}/metrics")
        ])
        .status,
        401
    );
    // Access-log lines are written when a body ends; wait for the last one before reading the counters.
    origin.wait_for_event("access", |e| e["method"] == "HEAD");
    let metrics = curl(&[
        "-H",
        "Authorization: Bearer 0123456789abcdef0123",
        &format!("{admin}/metrics"),
    ]);
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    for line in [
        "origin_http_requests_total{method=\"GET\",status_class=\"2xx\"} 2",
        "origin_http_requests_total{method=\"GET\",status_class=\"4xx\"} 2",
        "origin_http_requests_total{method=\"HEAD\",status_class=\"2xx\"} 1",
        "origin_http_request_duration_seconds_count 5",
        "origin_http_responses_incomplete_total 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in\n{text}");
    }
    let bytes_line = text
        .lines()
        .find(|l| l.starts_with("origin_http_response_body_bytes_total "))
        .unwrap();
    let bytes: u64 = bytes_line.split(' ').nth(1).unwrap().parse().unwrap();
    let seg_len = std::fs::metadata(store.path().join("t/seg_000.ts"))
        .unwrap()
        .len();
    assert!(bytes >= seg_len + 10, "{bytes_line}");

    let ranged = origin.wait_for_event("access", |e| e["status"] == 206);
    assert_eq!(ranged["path"], "/t/seg_000.ts");
    assert_eq!(ranged["range"], "bytes=0-9");
    assert_eq!(ranged["bytes"], 10);
    assert_eq!(ranged["complete"], true);
    assert_eq!(ranged["protocol"], "http/1.1");
    let missing = origin.wait_for_event("access", |e| {
        e["status"] == 404 && e["path"] == "/t/nope.ts"
    });
    assert_eq!(missing["error"], "no object at /t/nope.ts");
}
