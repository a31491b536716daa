//! The data loop from a real player (issue 16): headless Chromium plays a title through the edge with hls.js and
//! with dash.js, each page reporting its session with the control plane's own script (`/v1/player-events.js`):
//! the events reach `POST /v1/events`, go through the bus, and the QoE metrics move (a session started, its
//! startup time observed, its end counted); the players' own CMCD reaches the edge with the same session id;
//! `origin report` prints the title.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::process::Command;

use testkit::{
    TempStore, TestCerts, binary, browser_play, curl, metric_sum, start_edge, start_origin,
};

#[test]
fn a_chromium_session_reports_events_and_the_qoe_metrics_move() {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let api = origin.url("api_addr");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, "");
    let port = edge.addr("tls_addr").port();
    let runs = [
        ("test-pattern", "titles/test-pattern/hls/master.m3u8", "hls"),
        ("mandelbrot", "titles/mandelbrot/cmaf/manifest.mpd", "dash"),
    ];
    for (title, key, kind) in runs {
        let result = browser_play(
            &format!("https://127.0.0.1:{port}/{key}"),
            &[
                "--player",
                kind,
                "--proto",
                "h2",
                "--min-time",
                "5",
                "--events",
                &api,
                "--title",
                title,
            ],
            certs.cert(),
        )
        .unwrap_or_else(|e| panic!("{kind}: {e}"));
        let line = result.to_string();
        eprintln!("{kind}: {line}");
        assert_eq!(result["pass"], true, "{line}");
        let events = &result["events"];
        assert!(events["sent"].as_u64().unwrap_or(0) >= 2, "{events}");
        assert_eq!(events["dropped"], 0, "{events}");
    }

    // Through the bus to the QoE metrics (the consumer commits about every second).
    let metrics_url = format!("{}/metrics", origin.url("admin_addr"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = curl(&[&metrics_url]).text();
        let ended = metric_sum(&text, "qoe_sessions_total", &[]);
        if ended >= 2.0 || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    for title in ["test-pattern", "mandelbrot"] {
        let this = format!("title=\"{title}\"");
        assert!(
            metric_sum(&text, "qoe_startup_seconds_count", &[&this]) >= 1.0,
            "a startup time for {title}:\n{text}"
        );
        assert!(
            metric_sum(
                &text,
                "qoe_sessions_total",
                &[&this, "outcome=\"abandoned\""]
            ) >= 1.0,
            "{title}'s session ended (the run stops it as a viewer leaving):\n{text}"
        );
        assert!(
            metric_sum(&text, "qoe_watch_seconds_total", &[&this]) >= 3.0,
            "{title} was watched:\n{text}"
        );
    }
    assert!(metric_sum(&text, "qoe_events_total", &["kind=\"start\""]) >= 2.0);
    assert!(
        metric_sum(
            &text,
            "control_events_accepted_total",
            &["source=\"player\""]
        ) >= 8.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "control_event_batches_total",
            &["outcome=\"refused\""]
        ),
        0.0
    );
    assert!(metric_sum(&text, "qoe_events_total", &["kind=\"heartbeat\""]) >= 2.0);

    // The players sent CMCD on their segment requests, with the session ids of the events: the edge logs them.
    let logged = edge.log_lines().join("\n");
    assert!(
        logged.contains("\"cmcd_sid\"") || logged.contains("\"sid\""),
        "the edge's access log carries the CMCD session: {}",
        &logged[logged.len().saturating_sub(2000)..]
    );

    // The report reads the same events from the bus.
    let out = Command::new(binary("origin"))
        .args(["report", "--since", "1h", "--config"])
        .arg(origin.config_path())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        table.contains("test-pattern") && table.contains("mandelbrot"),
        "{table}"
    );
    eprintln!("{table}");
}
