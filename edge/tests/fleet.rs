//! Edges report themselves to the control plane (issue 15, registration and health): an edge with `[control]`
//! registers at start and reports its load every heartbeat; `GET /v1/edges` lists it healthy with its region,
//! URLs and load, Prometheus's service discovery finds its metrics, the control plane counts it per region; a
//! stopped edge is down within the heartbeat timeout; a wrong secret is refused with the reason.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{TempStore, TestCerts, curl, start_edge, start_origin};

const SECRET: &str = "fleet-secret-0123456789";

fn edges(api: &str) -> Vec<Value> {
    let listed = curl(&[&format!("{api}/v1/edges")]);
    assert_eq!(listed.status, 200, "{}", listed.text());
    let listed: Value = serde_json::from_slice(&listed.body).unwrap();
    listed["edges"].as_array().unwrap().clone()
}

/// Waits (up to 15 s) until an edge named `name` satisfies `pred`.
fn wait_for_edge(api: &str, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = edges(api);
        if let Some(edge) = listed.iter().find(|e| e["name"] == name && pred(e)) {
            return edge.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no such edge `{name}`: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn edges_register_report_their_load_and_go_down_when_stopped() {
    let store = TempStore::new();
    store.put("v/seg.ts", &[7u8; 10_000]);
    let origin = start_origin(
        &store.url(),
        &format!("[fleet]\nregistration_secret = \"{SECRET}\"\nheartbeat_timeout_secs = 2\n"),
    );
    let api = origin.url("api_addr");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let control = |secret: &str| {
        format!(
            "[control]\nurl = \"{api}\"\nregistration_secret = \"{secret}\"\nregion = \"eu-west\"\nheartbeat_secs = 1\n"
        )
    };
    let edge = start_edge(
        &origin.url("media_addr"),
        cache.path(),
        &certs,
        &control(SECRET),
    );
    let admin = edge.addr("admin_addr").to_string();

    let listed = wait_for_edge(&api, "edge-test", |e| e["healthy"] == true);
    assert_eq!(listed["region"], "eu-west");
    assert_eq!(
        listed["urls"],
        serde_json::json!([format!("https://{}", edge.addr("tls_addr"))])
    );
    assert_eq!(listed["metrics_target"], admin.as_str());

    // Its load arrives with the next reports.
    let url = format!(
        "http://127.0.0.1:{}/v/seg.ts",
        edge.addr("http_addr").port()
    );
    for _ in 0..4 {
        assert_eq!(curl(&[&url]).status, 200);
    }
    let loaded = wait_for_edge(&api, "edge-test", |e| e["load"]["requests_total"] == 4);
    assert_eq!(loaded["load"]["response_bytes_total"], 40_000);

    // Prometheus finds its metrics; the control plane counts it.
    let sd: Value =
        serde_json::from_slice(&curl(&[&format!("{api}/v1/edges/prometheus-sd")]).body).unwrap();
    assert_eq!(
        sd,
        serde_json::json!([{
            "targets": [admin],
            "labels": {"edge": "edge-test", "region": "eu-west", "healthy": "true"}
        }])
    );
    let metrics = format!("{}/metrics", origin.url("admin_addr"));
    let counted = |state: &str| {
        curl(&[&metrics]).text().contains(&format!(
            "control_fleet_edges{{region=\"eu-west\",state=\"{state}\"}} 1"
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !counted("healthy") {
        assert!(Instant::now() < deadline, "{}", curl(&[&metrics]).text());
        std::thread::sleep(Duration::from_millis(100));
    }

    // Stopped: down within the heartbeat timeout (2 s), and counted so.
    assert!(edge.stop());
    let since = Instant::now();
    wait_for_edge(&api, "edge-test", |e| e["healthy"] == false);
    assert!(
        since.elapsed() < Duration::from_secs(6),
        "{:?}",
        since.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !counted("down") {
        assert!(Instant::now() < deadline, "{}", curl(&[&metrics]).text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = origin.log_lines().join("\n");
    assert!(log.contains("edge down"), "{log}");

    // A wrong secret is refused with the reason, and the edge says so; it is never listed.
    let cache2 = tempfile::tempdir().unwrap();
    let impostor = start_edge(
        &origin.url("media_addr"),
        cache2.path(),
        &certs,
        &format!("name = \"impostor\"\n{}", control("not-the-fleet-secret")),
    );
    let refused = impostor.wait_for_event("edge::report", |e| {
        e["message"] == "the control plane refused this edge's report"
    });
    assert_eq!(refused["status"], 401);
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("registration secret"),
        "{refused}"
    );
    assert!(edges(&api).iter().all(|e| e["name"] != "impostor"));
    let anonymous = curl(&[
        "-X",
        "PUT",
        "-d",
        "{}",
        &format!("{api}/v1/edges/anonymous"),
    ]);
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    // A report that is not one gets 400 with the reason.
    let bad = curl(&[
        "-X",
        "PUT",
        "-H",
        &format!("Authorization: Bearer {SECRET}"),
        "-d",
        "{\"region\": \"eu west\", \"urls\": [\"https://e.example\"]}",
        &format!("{api}/v1/edges/e1"),
    ]);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("region"), "{}", bad.text());
}
