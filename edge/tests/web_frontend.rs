//! The viewer's web front end (issue 17) end to end in headless Chromium: the control plane serves the page
//! (`origin/web`, its players from npm), a viewer signs in through the form, finds a title by searching with a
//! typo as they type, opens it (similar titles shown), plays it with hls.js through the edge (the steered
//! manifest from the control plane, the media from the edge's port, captions on), stops; after a reload the
//! home page's "Continue watching" row shows it and playing it again resumes near where it stopped; a DASH play
//! with dash.js; sign out. axe-core finds no WCAG 2.0/2.1 A or AA violation on the home, search, title and
//! player pages at phone (390×844) and desktop (1280×800) widths, whose screenshots are kept in
//! `target/test-artifacts/web-frontend/`. The driver is `edge/tests/browser/web.mjs`.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{TempStore, TestCerts, curl, metric_sum, repo_root, start_edge, start_origin, tool};

const SIGNING: &str =
    "[[signing_key]]\nid = \"k1\"\nsecret = \"web front end test signing secret, 32+ bytes\"\n";
const EMAIL: &str = "demo@example.com";
const PASSWORD: &str = "correct horse battery";
/// The driver stops itself after this long; the test kills it a little later.
const DRIVER_SECS: u64 = 110;

/// Runs the driver with its output in files (no pipe to fill), killed if it outlives its own bound.
fn run_driver(args: &[String]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(tool("node"))
        .arg(repo_root().join("edge/tests/browser/web.mjs"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .expect("run node");
    let deadline = Instant::now() + Duration::from_secs(DRIVER_SECS + 20);
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    (
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

#[test]
fn a_viewer_signs_in_searches_plays_through_the_edge_and_resumes_and_the_pages_pass_axe() {
    let started = Instant::now();
    let web = repo_root().join("origin/web");
    assert!(
        web.join("node_modules/hls.js/dist/hls.min.js").is_file()
            && web
                .join("node_modules/dashjs/dist/modern/umd/dash.all.min.js")
                .is_file(),
        "the front end's players are not installed: run scripts/install-test-deps.sh (npm ci in origin/web)"
    );
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, SIGNING);
    let edge_host = format!("127.0.0.1:{}", edge.addr("tls_addr").port());
    // The control plane (a second origin process, knowing the edge) serves the API and the front end.
    let control = start_origin(
        &store.url(),
        &format!("{SIGNING}[playback]\nedges = [\"https://{edge_host}\"]\n"),
    );
    let api = control.url("api_addr");

    // The page and its players come from the control plane itself.
    let index = curl(&[&format!("{api}/")]);
    assert_eq!(index.status, 200, "{}", index.text());
    assert!(
        index
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html"))
            && index.text().contains("/web/app.js"),
        "{:?} {}",
        index.headers,
        index.text()
    );
    for asset in [
        "/web/app.js",
        "/web/app.css",
        "/web/vendor/hls.js",
        "/web/vendor/dash.js",
    ] {
        let got = curl(&[&format!("{api}{asset}")]);
        assert_eq!(got.status, 200, "{asset}: {}", got.text());
        assert!(got.body.len() > 1000, "{asset}: {} bytes", got.body.len());
    }
    assert!(
        !index.text().contains("://"),
        "the page links no other host: {}",
        index.text()
    );

    // The demo account, through the API.
    let created = curl(&[
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        &format!("{{\"email\": \"{EMAIL}\", \"password\": \"{PASSWORD}\"}}"),
        &format!("{api}/v1/accounts"),
    ]);
    assert_eq!(created.status, 201, "{}", created.text());
    let created: Value = serde_json::from_slice(&created.body).expect("account JSON");
    let profile = created["profiles"][0]["name"]
        .as_str()
        .expect("the account's first profile")
        .to_string();

    let shots = repo_root().join("target/test-artifacts/web-frontend");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let args: Vec<String> = [
        "--api",
        &api,
        "--cert",
        &certs.cert().display().to_string(),
        "--edge",
        &edge_host,
        "--email",
        EMAIL,
        "--password",
        PASSWORD,
        "--profile",
        &profile,
        "--shots",
        &shots.display().to_string(),
        "--query",
        "test patern",
        "--title",
        "test-pattern",
        "--title-name",
        "Test Pattern",
        "--dash-title",
        "mandelbrot",
        "--timeout",
        &DRIVER_SECS.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (stdout, stderr) = run_driver(&args);
    let line = stdout.lines().last().unwrap_or_default().to_string();
    let result: Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("no result line from web.mjs:\n{stdout}\n{stderr}"));
    eprintln!("web.mjs: {line}");
    if result["pass"] != true {
        let warnings: Vec<String> = control
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        eprintln!("the control plane's warnings:\n{}", warnings.join("\n"));
    }
    assert_eq!(result["pass"], true, "{}", result["reason"]);

    // Signed in with the session in a cookie the page's scripts cannot read.
    let cookie = &result["cookie"];
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Lax", "{cookie}");
    assert_eq!(cookie["readableByPage"], false, "{cookie}");

    // Rows by keyboard.
    let keyboard = &result["keyboard"];
    assert!(
        keyboard["rows"].as_array().is_some_and(|r| !r.is_empty()),
        "{keyboard}"
    );

    // Search as you type, the typo forgiven.
    let search = &result["search"];
    let has = |v: &Value, text: &str| {
        v.as_array()
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(text)))
    };
    assert!(
        has(&search["partial"]["results"], "Test Pattern"),
        "{search}"
    );
    assert!(has(&search["results"], "Test Pattern"), "{search}");
    assert!(search["requests"].as_u64().unwrap_or(0) >= 2, "{search}");

    // Similar titles on the title page.
    let similar = &result["title"]["similar"];
    assert!(
        similar.as_array().is_some_and(|s| !s.is_empty()),
        "{similar}"
    );

    // Played with hls.js through the edge, steered, captions on.
    let play = &result["play"];
    assert_eq!(play["protocol"], "hls", "{play}");
    assert!(play["currentTime"].as_f64().unwrap_or(0.0) >= 5.0, "{play}");
    assert!(
        play["captionsShowing"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "captions on: {play}"
    );
    assert_eq!(
        play["steered"], true,
        "the control plane offers Content Steering: {play}"
    );
    assert!(
        result["steeredManifests"].as_u64().unwrap_or(0) >= 1,
        "{line}"
    );
    assert!(
        result["steeringRequests"].as_u64().unwrap_or(0) >= 1,
        "{line}"
    );
    let hosts = result["hosts"].as_array().cloned().unwrap_or_default();
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h[0] == edge_host.as_str()),
        "every media response from the edge {edge_host}: {hosts:?}"
    );
    assert!(
        result["mediaResponses"].as_u64().unwrap_or(0) >= 5,
        "{line}"
    );

    // Stopped with the progress reported; continue watching; resumed near the stop.
    assert_eq!(
        result["stop"]["reported"]["status"], 200,
        "{}",
        result["stop"]
    );
    let continuing = &result["continueWatching"];
    assert!(has(&continuing["cards"], "Test Pattern"), "{continuing}");
    let resume = &result["resume"];
    let stopped_at = resume["stoppedAt"].as_f64().unwrap();
    let started_at = resume["startedAt"].as_f64().unwrap();
    assert!(stopped_at >= 5.0, "{resume}");
    assert!(
        (started_at - stopped_at).abs() <= 3.0 && started_at >= 2.0,
        "resumed near the stop, not at the start: {resume}"
    );
    assert!(
        resume["currentTime"].as_f64().unwrap() >= started_at + 2.0,
        "{resume}"
    );

    // DASH chosen: dash.js plays it, captions on.
    let dash = &result["dash"];
    assert_eq!(dash["protocol"], "dash", "{dash}");
    assert!(dash["currentTime"].as_f64().unwrap_or(0.0) >= 3.0, "{dash}");
    assert!(
        dash["captionsShowing"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{dash}"
    );
    assert_eq!(result["signedOut"], 401, "{line}");

    // axe-core: no WCAG 2.0/2.1 A or AA violation on any page at either width; nothing scrolls sideways.
    let axe = result["axe"].as_object().cloned().unwrap_or_default();
    for page in ["home", "search", "title", "player"] {
        for size in ["desktop", "phone"] {
            assert_eq!(
                axe.get(page).map(|p| &p[size]),
                Some(&Value::from(0)),
                "axe on {page} at {size}: {}",
                result["violations"]
            );
        }
    }
    assert_eq!(result["violations"], Value::Array(vec![]));
    for (page, px) in result["overflow"].as_object().cloned().unwrap_or_default() {
        assert!(
            px.as_f64().unwrap_or(0.0) <= 1.0,
            "{page} scrolls sideways by {px}px"
        );
    }

    // The screenshots, kept.
    let screenshots: Vec<String> = result["screenshots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    assert_eq!(screenshots.len(), 8, "{screenshots:?}");
    for shot in &screenshots {
        let size = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{shot}: {size} bytes");
        eprintln!("screenshot: {shot}");
    }

    // The pages reported their playback sessions (the player-events script): through the bus to QoE metrics.
    let metrics_url = format!("{}/metrics", control.url("admin_addr"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let text = curl(&[&metrics_url]).text();
        if metric_sum(&text, "qoe_events_total", &["kind=\"start\""]) >= 3.0
            || Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        metric_sum(&text, "qoe_events_total", &["kind=\"start\""]) >= 3.0,
        "three sessions started (hls, resumed, dash):\n{text}"
    );
    assert!(
        metric_sum(
            &text,
            "qoe_startup_seconds_count",
            &["title=\"test-pattern\""]
        ) >= 1.0,
        "{text}"
    );
    eprintln!(
        "web front end test: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
