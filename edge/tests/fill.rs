//! Proactive fill end to end (issue 19): the control plane's plan (`GET /v1/edges/<name>/fill-plan`) ranks
//! titles by viewers' plays, then by the catalog, and takes whole titles within the edge's budget; an edge
//! outside its quiet hours fetches nothing until `POST /fill` asks, then fills every file of the plan once, no
//! faster than `fill.bytes_per_sec`, after which players' requests are hits and a second run costs the origin
//! nothing; an edge whose quiet hours are open fills on its own.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use testkit::{TempStore, TestEdge, call_api, curl, start_origin};

const SECRET: &str = "fleet-secret-0123456789";
const ADMIN: &str = "edge-admin-token-0123";
const RATE: u64 = 1 << 20;

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The edge's metrics, read with the admin token.
fn metrics(edge: &TestEdge) -> String {
    call_api(
        &edge.process.url("admin_addr"),
        "GET",
        "/metrics",
        Some(ADMIN),
        None,
    )
    .text()
}

fn metric(edge: &TestEdge, name: &str, filters: &[&str]) -> f64 {
    testkit::metric_sum(&metrics(edge), name, filters)
}

fn plan(api: &str, budget: u64) -> Value {
    let r = call_api(
        api,
        "GET",
        &format!("/v1/edges/edge-test/fill-plan?budget_bytes={budget}"),
        Some(SECRET),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn slugs(plan: &Value) -> Vec<&str> {
    plan["titles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect()
}

/// A daily window that does not hold the present hour (UTC).
fn closed_window() -> String {
    let hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24;
    format!("{:02}:00-{:02}:00", (hour + 2) % 24, (hour + 3) % 24)
}

fn fill_config(api: &str, quiet_hours: &str, budget: u64) -> String {
    format!(
        "[admin]\nbearer_token = \"{ADMIN}\"\n\
         [control]\nurl = \"{api}\"\nregistration_secret = \"{SECRET}\"\nheartbeat_secs = 1\n\
         [fill]\nenabled = true\nquiet_hours = \"{quiet_hours}\"\nbudget_bytes = {budget}\n\
         bytes_per_sec = {RATE}\nmax_in_flight = 2\n\
         [prefetch]\nsegments = 0\n"
    )
}

#[test]
fn the_plan_follows_plays_and_the_edge_fills_it_at_its_pace_in_its_window() {
    let store = TempStore::with_samples();
    let origin = start_origin(
        &store.url(),
        &format!("[fleet]\nregistration_secret = \"{SECRET}\"\n[recs]\ntrain_secs = 3600\n"),
    );
    let api = origin.url("api_addr");
    let admin = origin.url("admin_addr");

    // The plan API: the fleet's secret, a budget, nothing else.
    let path = "/v1/edges/edge-test/fill-plan";
    assert_eq!(
        call_api(&api, "GET", &format!("{path}?budget_bytes=1"), None, None).status,
        401
    );
    assert_eq!(
        call_api(
            &api,
            "GET",
            &format!("{path}?budget_bytes=1"),
            Some("wrong-secret-0123456"),
            None
        )
        .status,
        401
    );
    for bad in [
        "",
        "?budget_bytes=0",
        "?budget_bytes=x",
        "?budget_bytes=1&x=1",
    ] {
        let r = call_api(&api, "GET", &format!("{path}{bad}"), Some(SECRET), None);
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = call_api(
        &api,
        "GET",
        "/v1/edges/a%20b/fill-plan?budget_bytes=1",
        Some(SECRET),
        None,
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // No plays yet: the catalog's order (equal popularity: by slug), every file a player fetches, no artwork.
    let everything = plan(&api, 1 << 30);
    assert_eq!(
        slugs(&everything),
        ["mandelbrot", "test-pattern"],
        "{everything}"
    );
    let objects = everything["objects"].as_array().unwrap();
    let total: u64 = objects.iter().map(|o| o["bytes"].as_u64().unwrap()).sum();
    assert_eq!(everything["bytes"].as_u64(), Some(total));
    assert!(objects.iter().all(|o| {
        let p = o["path"].as_str().unwrap();
        p.starts_with("/titles/") && !p.ends_with(".jpg") && !p.ends_with("meta.json")
    }));
    assert!(
        objects[0]["path"].as_str().unwrap().ends_with(".m3u8")
            || objects[0]["path"].as_str().unwrap().ends_with(".mpd"),
        "manifests first: {}",
        objects[0]
    );
    let title_bytes = |plan: &Value, slug: &str| {
        plan["titles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["slug"] == slug)
            .map(|t| t["bytes"].as_u64().unwrap())
            .unwrap()
    };
    let (mandelbrot, pattern) = (
        title_bytes(&everything, "mandelbrot"),
        title_bytes(&everything, "test-pattern"),
    );
    // A budget that holds test-pattern but not both.
    let budget = pattern + mandelbrot / 2;
    assert_eq!(
        slugs(&plan(&api, budget)),
        ["mandelbrot"],
        "catalog order, test-pattern too big after it"
    );

    // A viewer watches test-pattern; once the recommender has learnt it, test-pattern leads the plan.
    let (token, profile) = testkit::signed_up(&api, "fill@example.org");
    let r = call_api(
        &api,
        "POST",
        &format!("/v1/profiles/{profile}/progress"),
        Some(&token),
        Some(&json!({"title": "test-pattern", "position_secs": 20, "duration_secs": 40})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let trainings = || {
        testkit::metric_sum(
            &curl(&[&format!("{admin}/metrics")]).text(),
            "control_recommender_trainings_total",
            &["outcome=\"ok\""],
        )
    };
    let before = trainings();
    assert_eq!(
        call_api(&admin, "POST", "/recs/train", None, None).status,
        202
    );
    wait_until("trained", Duration::from_secs(30), || trainings() > before);
    let planned = plan(&api, budget);
    assert_eq!(
        slugs(&planned),
        ["test-pattern"],
        "plays first: {}",
        planned["titles"]
    );
    assert!(planned["titles"][0]["plays"].as_f64().unwrap() > 0.0);
    let planned_objects = planned["objects"].as_array().unwrap().len();
    assert_eq!(planned["bytes"].as_u64(), Some(pattern));

    // An edge outside its quiet hours fetches nothing on its own.
    let gets_before = origin.origin_gets();
    let edge = TestEdge::start(
        &origin.url("media_addr"),
        &fill_config(&api, &closed_window(), budget),
    );
    let edge_admin = edge.process.url("admin_addr");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        origin.origin_gets(),
        gets_before,
        "nothing filled outside the window"
    );
    assert_eq!(metric(&edge, "edge_fill_runs_total", &[]), 0.0);
    assert_eq!(
        call_api(&edge_admin, "POST", "/fill", None, None).status,
        401
    );
    assert_eq!(
        call_api(&edge_admin, "GET", "/fill", Some(ADMIN), None).status,
        405
    );

    // Asked: one run, every planned file fetched once, no faster than the rate.
    let started = Instant::now();
    assert_eq!(
        call_api(&edge_admin, "POST", "/fill", Some(ADMIN), None).status,
        202
    );
    let r = call_api(&edge_admin, "POST", "/fill", Some(ADMIN), None);
    assert_eq!(r.status, 409, "a run is going on: {}", r.text());
    let done = |edge: &TestEdge, trigger: &str| {
        metric(
            edge,
            "edge_fill_runs_total",
            &[&format!("trigger=\"{trigger}\""), "result=\"done\""],
        )
    };
    wait_until("the fill run", Duration::from_secs(60), || {
        done(&edge, "admin") == 1.0
    });
    let took = started.elapsed();
    let stored = metric(&edge, "edge_fill_objects_total", &["result=\"stored\""]) as usize;
    let filled_bytes = metric(&edge, "edge_fill_bytes_total", &[]) as u64;
    eprintln!(
        "fill: {stored} of {planned_objects} files, {filled_bytes} bytes in {took:?} at {RATE} bytes/s"
    );
    assert_eq!(stored, planned_objects, "{}", metrics(&edge));
    assert_eq!(filled_bytes, pattern);
    assert_eq!(
        origin.origin_gets() - gets_before,
        planned_objects as u64,
        "one origin GET a file"
    );
    assert_eq!(
        metric(&edge, "edge_fill_plan_objects", &[]) as usize,
        planned_objects
    );
    // The bucket starts with one second of the rate, and what is in flight when it runs dry is charged after
    // it: at most the files admitted last (two at once, and the one waiting behind them), so the run takes at
    // least what is left over the rate. Unpaced, these 5 MB take a tenth of a second on loopback.
    let mut sizes: Vec<u64> = planned["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["bytes"].as_u64().unwrap())
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    let overdraw: u64 = sizes.iter().take(3).sum();
    let floor =
        Duration::from_secs_f64(pattern.saturating_sub(RATE + overdraw) as f64 / RATE as f64);
    assert!(
        floor >= Duration::from_secs(2),
        "a floor that says something: {floor:?}"
    );
    assert!(
        took >= floor,
        "{took:?} for {pattern} bytes at {RATE}/s (at least {floor:?})"
    );
    let logged = edge
        .process
        .log_events("access")
        .iter()
        .filter(|e| e["fields"]["fill"] == true || e["fill"] == true)
        .count();
    assert_eq!(logged, planned_objects, "an access line per file");

    // Players now hit; the origin sees nothing more.
    let gets_after_fill = origin.origin_gets();
    for object in planned["objects"].as_array().unwrap().iter().step_by(7) {
        let r = edge.get_from("localhost", object["path"].as_str().unwrap(), &[]);
        assert_eq!(r.status, 200, "{object}");
        let status = r.cache_status().unwrap_or("").to_string();
        assert!(status.contains("hit"), "{object}: {status}");
    }
    assert_eq!(origin.origin_gets(), gets_after_fill);

    // A second run finds every file cached.
    assert_eq!(
        call_api(&edge_admin, "POST", "/fill", Some(ADMIN), None).status,
        202
    );
    wait_until("the second run", Duration::from_secs(30), || {
        done(&edge, "admin") == 2.0
    });
    assert_eq!(
        metric(&edge, "edge_fill_objects_total", &["result=\"cached\""]) as usize,
        planned_objects
    );
    assert_eq!(origin.origin_gets(), gets_after_fill);
    drop(edge);

    // An edge whose window is open fills on its own.
    let gets_before = origin.origin_gets();
    let edge = TestEdge::start(
        &origin.url("media_addr"),
        &fill_config(&api, "00:00-24:00", budget),
    );
    wait_until("the scheduled run", Duration::from_secs(60), || {
        done(&edge, "schedule") == 1.0
    });
    assert_eq!(
        metric(&edge, "edge_fill_objects_total", &["result=\"stored\""]) as usize,
        planned_objects
    );
    assert_eq!(origin.origin_gets() - gets_before, planned_objects as u64);
    let r = edge.get_from(
        "localhost",
        planned["objects"][0]["path"].as_str().unwrap(),
        &[],
    );
    assert!(r.cache_status().unwrap_or("").contains("hit"));
}
