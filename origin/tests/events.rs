//! Events in, QoE out, through a real `origin serve`: `POST /v1/events` refuses malformed, oversized, too large
//! and unknown-field batches with reasons naming the event and field; a good batch lands on the playback topic
//! of the embedded bus (read here by another process's consumer, as `origin report` would) with what the server
//! adds; the QoE metrics on the admin `/metrics` move, and a batch sent again (the same ids) does not move them
//! twice; an edge's summary is taken with the fleet secret and counted.

use std::time::{Duration, Instant};

use origin::bus::{Bus, StartAt, TOPIC_PLAYBACK};
use origin::config::BusConfig;
use serde_json::{Value, json};
use testkit::{CurlResponse, TempStore, curl, start_origin};

const SECRET: &str = "events-test-fleet-secret-0123456789";

/// POSTs `body` (from a file: bodies past the command line's limits too) to `url`, as a player's
/// `sendBeacon` would (text/plain).
fn post(url: &str, body: &[u8], bearer: Option<&str>) -> CurlResponse {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body");
    std::fs::write(&file, body).unwrap();
    let data = format!("@{}", file.display());
    let auth = bearer.map(|b| format!("authorization: Bearer {b}"));
    let mut args = vec![
        "-X",
        "POST",
        "-H",
        "content-type: text/plain",
        "-H",
        "expect:",
        "--data-binary",
        &data,
    ];
    if let Some(auth) = &auth {
        args.extend(["-H", auth.as_str()]);
    }
    args.push(url);
    curl(&args)
}

fn json(r: &CurlResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// The sum of a metric's series whose labels include all of `labels` (`name="value"` pairs).
fn metric(admin: &str, name: &str, labels: &[&str]) -> f64 {
    let text = curl(&[&format!("{admin}/metrics")]).text();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Waits (up to 20 s) for `check` to hold.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One viewer's session, in order: start, two heartbeats, a stall, a switch, an error, the end.
fn session(session: &str) -> Vec<Value> {
    let base = |i: u32, kind: &str, fields: Value| {
        let mut e = json!({
            "id": format!("{session}-{i}"), "kind": kind, "session": session, "title": "mandelbrot",
            "ts": 1_733_350_000_000u64 + u64::from(i) * 1000, "br": 3000, "bl": 6000,
            "edge": "https://edge1.example:8443/titles/mandelbrot/v/1.m4s?token=private", "region": "eu-west"
        });
        for (k, v) in fields.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    vec![
        base(
            0,
            "start",
            json!({"startup_ms": 1500, "su": true, "ot": "v"}),
        ),
        base(
            1,
            "heartbeat",
            json!({"played_ms": 10_000, "position_ms": 10_000}),
        ),
        base(2, "stall", json!({"duration_ms": 3000, "bs": true})),
        base(
            3,
            "bitrate_switch",
            json!({"from_kbps": 3000, "to_kbps": 1500}),
        ),
        base(4, "heartbeat", json!({"played_ms": 20_000, "br": 1500})),
        base(
            5,
            "error",
            json!({"code": "fragLoadError", "message": "one segment timed out"}),
        ),
        base(
            6,
            "end",
            json!({"reason": "completed", "watched_ms": 30_000, "br": 1500}),
        ),
    ]
}

fn batch(events: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "events": events })).unwrap()
}

#[test]
fn events_are_checked_published_and_counted_once() {
    let store = TempStore::new();
    let data = tempfile::tempdir().unwrap();
    let origin = start_origin(
        &store.url(),
        &format!(
            "data_dir = \"{}\"\n[fleet]\nregistration_secret = \"{SECRET}\"\n",
            data.path().display()
        ),
    );
    let api = origin.url("api_addr");
    let admin = origin.url("admin_addr");
    let events_url = format!("{api}/v1/events");

    // Refusals, each naming what is wrong; nothing of a refused batch is published.
    let mut bad_br = session("bad");
    bad_br[3]["br"] = json!(-5);
    let mut unknown = session("bad");
    unknown[0]["cid"] = json!("mandelbrot");
    let too_many: Vec<Value> = (0..501)
        .map(|i| {
            let mut e = session("many")[2].clone();
            e["id"] = json!(format!("many-{i}"));
            e
        })
        .collect();
    let mut huge = session("huge");
    huge[5]["message"] = json!("x".repeat(500));
    let huge: Vec<Value> = (0..499)
        .map(|i| {
            let mut e = huge[5].clone();
            e["id"] = json!(format!("huge-{i}"));
            e
        })
        .collect();
    for (body, status, error, reason) in [
        (
            b"{\"events\": [".to_vec(),
            400,
            "bad_request",
            "the body is not JSON",
        ),
        (
            batch(&bad_br),
            400,
            "bad_request",
            "events[3].br: must be a non-negative integer",
        ),
        (
            batch(&unknown),
            400,
            "bad_request",
            "events[0].cid: unknown field (not a field of `start` events)",
        ),
        (
            batch(&too_many),
            413,
            "too_many_events",
            "events: 501 events, a batch holds 500 at most: split it",
        ),
        (
            batch(&huge),
            413,
            "too_large",
            "the request body is larger than 262144 bytes",
        ),
    ] {
        let r = post(&events_url, &body, None);
        assert_eq!(r.status, status, "{}", r.text());
        let answer = json(&r);
        assert_eq!(answer["error"], error, "{answer}");
        let got = answer["reason"].as_str().unwrap();
        assert!(got.starts_with(reason), "{got:?} is not {reason:?}");
    }

    // The QoE consumer starts at the latest records: probe until it counts one (it joins its group as the
    // server starts).
    let mut probe = 0;
    eventually("the QoE consumer to count a probe", || {
        probe += 1;
        let event = json!({"id": format!("probe-{probe}"), "kind": "heartbeat", "session": "probe",
                           "title": "probe", "ts": 1, "position_ms": 0});
        assert_eq!(post(&events_url, &batch(&[event]), None).status, 200);
        std::thread::sleep(Duration::from_millis(300));
        metric(&admin, "qoe_events_total", &[]) > 0.0
    });
    let events_before = metric(&admin, "qoe_events_total", &[]);

    // A good batch: 200 with the count, on the bus, in the metrics.
    let viewer = session("6e2f1c3a-0b7d-4c55-9a51-2f0c9e1d7a10");
    let r = post(&events_url, &batch(&viewer), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r), json!({"accepted": 7}));

    let title = [
        "title=\"mandelbrot\"",
        "edge=\"edge1.example-8443\"",
        "region=\"eu-west\"",
    ];
    eventually("the session's events in qoe_events_total", || {
        metric(&admin, "qoe_events_total", &[]) == events_before + 7.0
    });
    let completed = [title[0], title[1], title[2], "outcome=\"completed\""];
    eventually("the session closed", || {
        metric(&admin, "qoe_sessions_total", &completed) == 1.0
    });
    let counters = |admin: &str| {
        [
            ("qoe_startup_seconds_count", 1.0),
            ("qoe_watch_seconds_total", 30.0),
            ("qoe_stall_seconds_total", 3.0),
            ("qoe_stalls_total", 1.0),
            ("qoe_bitrate_switches_total", 1.0),
            ("qoe_errors_total", 1.0),
            ("qoe_error_sessions_total", 1.0),
            ("qoe_bitrate_kbps_count", 1.0),
            ("qoe_sessions_total", 1.0),
        ]
        .map(|(name, want)| (name, metric(admin, name, &title), want))
    };
    for (name, got, want) in counters(&admin) {
        assert_eq!(got, want, "{name}");
    }
    assert!(metric(&admin, "qoe_events_total", &["kind=\"heartbeat\""]) >= 2.0);

    // Sent again (a retry): duplicates, and no counter moves twice.
    let duplicates_before = metric(&admin, "qoe_events_duplicate_total", &[]);
    assert_eq!(post(&events_url, &batch(&viewer), None).status, 200);
    eventually("the retry counted as duplicates", || {
        metric(&admin, "qoe_events_duplicate_total", &[]) == duplicates_before + 7.0
    });
    for (name, got, want) in counters(&admin) {
        assert_eq!(got, want, "{name} after the retry");
    }
    assert_eq!(metric(&admin, "qoe_events_total", &[]), events_before + 7.0);

    // The records on the bus, read by a consumer in this process (another process than the server's).
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let records = runtime.block_on(async {
        let bus = Bus::open(&BusConfig::default(), data.path()).await.unwrap();
        let mut consumer = bus
            .subscribe("events-test", &[TOPIC_PLAYBACK], StartAt::Earliest)
            .await
            .unwrap();
        let mut records = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while records.len() < probe + 14 && Instant::now() < deadline {
            records.extend(
                consumer
                    .poll(1000, Duration::from_millis(200))
                    .await
                    .unwrap(),
            );
        }
        records
    });
    let viewer_records: Vec<Value> = records
        .iter()
        .filter(|r| &r.key[..] == b"mandelbrot")
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    // Both sends are on the bus (delivery is at least once; counting is once).
    assert_eq!(viewer_records.len(), 14, "{viewer_records:?}");
    assert!(records.iter().all(|r| r.topic == TOPIC_PLAYBACK));
    let start = viewer_records
        .iter()
        .find(|r| r["kind"] == "start")
        .unwrap();
    assert_eq!(start["id"], "6e2f1c3a-0b7d-4c55-9a51-2f0c9e1d7a10-0");
    assert_eq!(start["startup_ms"], 1500);
    assert_eq!(start["su"], true);
    assert_eq!(start["client"], "127.0.0.1");
    assert_eq!(
        start["edge"], "edge1.example:8443",
        "the path and token are not kept"
    );
    assert_eq!(start["edge_name"], "edge1.example-8443");
    assert_eq!(start["viewer_region"], "eu-west");
    assert!(start["received_ms"].as_i64().unwrap() > 1_700_000_000_000);

    // An edge's summary: the fleet secret, then checked, then counted.
    let stats_url = format!("{api}/v1/edges/edge-t/stats");
    let summary = serde_json::to_vec(&json!({"interval_secs": 5, "titles": [
        {"title": "mandelbrot", "requests": {"hit": 40, "miss": 2}, "bytes": 123_456, "errors": 1,
         "ttfb_ms": {"p50": 3, "p90": 9, "p99": 30}}
    ]}))
    .unwrap();
    assert_eq!(post(&stats_url, &summary, None).status, 401);
    let bad = post(
        &stats_url,
        br#"{"interval_secs": 5, "titles": [{"title": "t", "requests": {"hot": 1}, "bytes": 0, "errors": 0}]}"#,
        Some(SECRET),
    );
    assert_eq!(bad.status, 400);
    assert!(
        json(&bad)["reason"]
            .as_str()
            .unwrap()
            .starts_with("titles[0].requests.hot: not a cache status"),
        "{}",
        bad.text()
    );
    let r = post(&stats_url, &summary, Some(SECRET));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r), json!({"accepted": 1}));
    let hits = ["edge=\"edge-t\"", "cache_status=\"hit\""];
    eventually("the edge's summary in the QoE metrics", || {
        metric(&admin, "qoe_edge_requests_total", &hits) == 40.0
    });
    assert_eq!(
        metric(
            &admin,
            "qoe_edge_response_bytes_total",
            &["edge=\"edge-t\""]
        ),
        123_456.0
    );
    assert_eq!(
        metric(&admin, "qoe_edge_ttfb_requests_total", &["edge=\"edge-t\""]),
        42.0
    );

    assert!(origin.stop(), "the origin exits cleanly");
}

#[test]
fn the_report_reads_the_history_of_the_bus() {
    let data = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let text = runtime.block_on(async {
        let bus = Bus::open(&BusConfig::default(), data.path()).await.unwrap();
        let known: Vec<origin::control::events::KnownEdge> = Vec::new();
        for (who, reason) in [("a", "completed"), ("b", "abandoned")] {
            let mut events = session(who);
            events[6]["reason"] = json!(reason);
            let events =
                origin::control::events::parse_batch(&batch(&events)).expect("a good batch");
            let records = origin::control::events::playback_records(
                events,
                origin::bus::now_ms(),
                None,
                &known,
                |hint| hint.map(str::to_string),
            );
            bus.publish(TOPIC_PLAYBACK, records).await.unwrap();
        }
        origin::control::qoe::report(&bus, Duration::from_secs(3600))
            .await
            .unwrap()
    });
    println!("{text}");
    assert!(
        text.starts_with("QoE over the last 1h: 14 events"),
        "{text}"
    );
    let row = text
        .lines()
        .find(|l| l.starts_with("mandelbrot"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    // title, sessions, startup p50, p90, stall, bitrate (2 cells), switches/session, errors, abandoned
    assert_eq!(cells[1], "2", "{text}");
    assert_eq!(cells[4], "9.1%", "{text}"); // 3 s / (30 + 3) s
    assert_eq!(cells[7], "1.00", "{text}");
    assert_eq!(cells[8], "100.0%", "{text}");
    assert_eq!(cells[9], "50.0%", "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("edge1.example-8443")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("eu-west")), "{text}");
}
