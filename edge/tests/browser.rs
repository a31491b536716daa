//! Real players end to end: headless Chromium with hls.js and dash.js plays every sample title through the edge
//! over HTTP/1.1, HTTP/2 and HTTP/3, as Chromium's own network events prove, and finds HTTP/3 by itself through
//! Alt-Svc; and plays the signed URL the playback API hands out (`/t/<token>/…`, the relative URIs inside inheriting
//! the token). Screenshots of
//! the playing video are saved under `target/tmp/screenshots/`.

use serde_json::Value;
use testkit::{TempStore, TestCerts, browser_play, start_edge, start_origin};

/// (manifest, player, protocol the browser is limited to)
const RUNS: &[(&str, &str, &str)] = &[
    ("titles/test-pattern/hls/master.m3u8", "hls", "http/1.1"),
    ("titles/mandelbrot/cmaf/manifest.mpd", "dash", "http/1.1"),
    ("titles/test-pattern/dash/manifest.mpd", "dash", "h2"),
    ("titles/mandelbrot/cmaf/master.m3u8", "hls", "h2"),
    ("titles/test-pattern/hls/master.m3u8", "hls", "h3"),
    ("titles/test-pattern/mp4/manifest.mpd", "dash", "h3"),
    ("titles/mandelbrot/cmaf/manifest.mpd", "dash", "h3"),
    ("titles/mandelbrot/cmaf/master.m3u8", "hls", "alt-svc"),
    // Signed: the URL the control plane's playback API returns for it.
    ("signed:titles/test-pattern/dash/manifest.mpd", "dash", "h2"),
];

const SECRET: &str = "browser-test signing secret, 32+ bytes";

#[test]
fn chromium_plays_every_title_over_http1_http2_and_http3() {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let keys = format!("[[signing_key]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n");
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, &keys);
    let port = edge.addr("tls_addr").port();
    // The control plane (a second origin process, knowing the edge's address) hands out the signed URL.
    let control = start_origin(
        &store.url(),
        &format!("{keys}[playback]\nedges = [\"https://127.0.0.1:{port}\"]\n"),
    );
    let playback = testkit::curl(&[
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        "{\"title\": \"test-pattern\", \"protocol\": \"dash\"}",
        &format!("{}/v1/playback", control.url("api_addr")),
    ]);
    let playback: Value = serde_json::from_slice(&playback.body).expect("playback JSON");
    let signed_url = playback["edges"][0]["manifests"]["dash"]
        .as_str()
        .expect("a signed DASH URL")
        .to_string();
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let mut failures = Vec::new();
    for (i, (key, kind, proto)) in RUNS.iter().enumerate() {
        let (signed, key) = match key.strip_prefix("signed:") {
            Some(key) => (true, key),
            None => (false, *key),
        };
        let url = if signed {
            assert!(signed_url.ends_with(key), "{signed_url}");
            signed_url.clone()
        } else {
            format!("https://127.0.0.1:{port}/{key}")
        };
        let shot = shots.join(format!(
            "{i}-{}-{kind}-{}{}.png",
            key.split('/').nth(1).unwrap(),
            proto.replace('/', ""),
            if signed { "-signed" } else { "" }
        ));
        let shot_arg = shot.to_string_lossy();
        let args = [
            "--player",
            kind,
            "--proto",
            proto,
            "--min-time",
            "8",
            "--screenshot",
            &shot_arg,
        ];
        let result = match browser_play(&url, &args, certs.cert()) {
            Ok(result) => result,
            Err(e) => {
                failures.push(format!("{key} {proto}: {e}"));
                continue;
            }
        };
        let line = result.to_string();
        let protocols = result["protocols"].as_object().cloned().unwrap_or_default();
        let count = |p: &str| protocols.get(p).and_then(Value::as_u64).unwrap_or(0);
        let carried_by_expected = match *proto {
            // Discovery: the first requests over HTTP/2, the rest over HTTP/3, with nothing forced.
            "alt-svc" => {
                count("h2") >= 1
                    && count("h3") >= 4
                    && count("h2") + count("h3") == total(&protocols)
            }
            p => count(p) >= 5 && count(p) == total(&protocols),
        };
        eprintln!("{key} over {proto}: {line}");
        if result["pass"] != true || !carried_by_expected || !shot.is_file() {
            failures.push(format!("{key} over {proto}: {line}"));
        }
    }
    eprintln!("screenshots in {}", shots.display());
    assert!(
        failures.is_empty(),
        "playback failures:\n{}",
        failures.join("\n")
    );
}

fn total(protocols: &serde_json::Map<String, Value>) -> u64 {
    protocols.values().filter_map(Value::as_u64).sum()
}
