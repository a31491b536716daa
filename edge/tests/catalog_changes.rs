//! Catalog changes over the bus, end to end (issue 16), on the embedded bus and on Kafka: `origin ingest` beside a running
//! control plane makes the title searchable within a second (no polling); `origin takedown` drops it from
//! search, details and playback, the media origin answers 410, and an edge that held the title purges it (its
//! next request misses). A control plane that was down while a title was ingested catches up from its group's
//! committed offset when it comes back. `restore` brings the title back.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{
    ServerProcess, TempStore, TestCerts, binary, curl, free_port, origin_config, sample_content,
    start_edge,
};

const SECRET: &str = "fleet-secret-0123456789";

/// Runs `origin <args> --config <config>`; panics with its output when it fails.
fn origin_cli(config: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("origin"))
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "origin {args:?}: {text}");
    text
}

/// Copies the sample title `test-pattern` under a new name and title, for ingest as `slug`.
fn packaged(work: &Path, slug: &str, title: &str) -> std::path::PathBuf {
    let dir = work.join(slug);
    testkit::copy_tree(&sample_content().join("titles/test-pattern"), &dir);
    let mut meta: Value =
        serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
    meta["title"] = title.into();
    meta["slug"] = slug.into();
    meta.as_object_mut().unwrap().remove("poster");
    std::fs::write(dir.join("meta.json"), meta.to_string()).unwrap();
    dir
}

fn search_slugs(api: &str, q: &str) -> Vec<String> {
    let found = curl(&[&format!("{api}/v1/search?q={q}")]);
    assert_eq!(found.status, 200, "{}", found.text());
    let found: Value = serde_json::from_slice(&found.body).unwrap();
    found["hits"]
        .as_array()
        .or_else(|| found["results"].as_array())
        .unwrap_or_else(|| panic!("search answer: {found}"))
        .iter()
        .map(|hit| hit["slug"].as_str().unwrap().to_string())
        .collect()
}

/// Waits up to `limit` for `pred`, returning how long it took.
fn within(limit: Duration, what: &str, mut pred: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !pred() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

#[test]
fn on_the_embedded_bus() {
    the_loop("", Patience::LOCAL);
}

/// The same over a Kafka-protocol broker (tansu): the control plane, `origin ingest` and `origin takedown` all
/// talk to it.
#[test]
fn on_kafka() {
    let broker = testkit::KafkaBroker::start();
    the_loop(
        &format!("[bus]\nurl = \"{}\"\npartitions = 4\n", broker.url()),
        Patience::BROKER,
    );
}

/// How long each step may take: on Kafka a restarted member waits for the group to rebalance.
struct Patience {
    apply: Duration,
    rejoin: Duration,
}

impl Patience {
    const LOCAL: Patience = Patience {
        apply: Duration::from_secs(1),
        rejoin: Duration::from_secs(2),
    };
    const BROKER: Patience = Patience {
        apply: Duration::from_secs(2),
        rejoin: Duration::from_secs(30),
    };
}

fn the_loop(bus: &str, patience: Patience) {
    let store = TempStore::new();
    let work = tempfile::tempdir().unwrap();
    let api_port = free_port();
    // A fixed API port: the instance's consumer group (`derived.<host>-<port>`) is the same after a restart.
    let config = origin_config(
        &store.url(),
        &format!(
            "data_dir = \"{data}\"\n[api]\nlisten = \"127.0.0.1:{api_port}\"\n\
             [catalog]\nurl = \"sqlite://{data}/catalog.db\"\n\
             [fleet]\nregistration_secret = \"{SECRET}\"\n{bus}",
            data = work.path().join("data").display()
        ),
    );
    let config_path = work.path().join("origin.toml");
    std::fs::write(&config_path, &config).unwrap();
    let origin = ServerProcess::start(&binary("origin"), &config);
    let api = origin.url("api_addr");

    // Ingest beside the running server: searchable within a second.
    let first = packaged(work.path(), "quokka-sunrise", "Quokka Sunrise");
    origin_cli(
        &config_path,
        &[
            "ingest",
            "--quiet",
            "--title",
            "quokka-sunrise",
            first.to_str().unwrap(),
        ],
    );
    let took = within(patience.apply, "searchable", || {
        search_slugs(&api, "quokka") == ["quokka-sunrise"]
    });
    eprintln!("ingest → searchable in {took:?}");

    // An edge that reports to the control plane and follows its changes holds a segment of the title.
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(
        &origin.url("media_addr"),
        cache.path(),
        &certs,
        &format!(
            "[control]\nurl = \"{api}\"\nregistration_secret = \"{SECRET}\"\nheartbeat_secs = 1\n"
        ),
    );
    let segment = format!(
        "http://127.0.0.1:{}/titles/quokka-sunrise/hls/v0/seg_000.ts",
        edge.addr("http_addr").port()
    );
    let status = |url: &str| {
        let r = curl(&[url]);
        (r.status, r.cache_status().unwrap_or("").to_string())
    };
    let (code, _) = status(&segment);
    assert_eq!(code, 200);
    let (code, cache_status) = status(&segment);
    assert_eq!(code, 200);
    assert!(cache_status.contains("hit"), "held: {cache_status}");

    // Taken down: gone from search and details, 410 at the origin, purged at the edge.
    let said = origin_cli(
        &config_path,
        &["takedown", "quokka-sunrise", "--reason", "licence ended"],
    );
    assert!(said.contains("taken down"), "{said}");
    let took = within(patience.apply, "dropped from search", || {
        search_slugs(&api, "quokka").is_empty()
    });
    eprintln!("takedown → out of search in {took:?}");
    assert_eq!(
        curl(&[&format!("{api}/v1/titles/quokka-sunrise")]).status,
        404
    );
    let playback = curl(&[
        "-X",
        "POST",
        "-H",
        testkit::SERVICE_AUTH,
        "-d",
        r#"{"title": "quokka-sunrise"}"#,
        &format!("{api}/v1/playback"),
    ]);
    assert_eq!(playback.status, 404, "{}", playback.text());
    let direct = curl(&[&format!(
        "{}/titles/quokka-sunrise/hls/v0/seg_000.ts",
        origin.url("media_addr")
    )]);
    assert_eq!(direct.status, 410, "{}", direct.text());
    let took = within(Duration::from_secs(5), "purged at the edge", || {
        let (code, cache_status) = status(&segment);
        code == 410 && !cache_status.contains("hit")
    });
    eprintln!("takedown → edge purged in {took:?}");
    edge.wait_for_event("edge::changes", |e| {
        e["fields"]["message"] == "takedown purged" || e["message"] == "takedown purged"
    });

    // The control plane down while another title is ingested: back, it catches up from its committed offset
    // (only the new change is applied; the ones before were committed).
    assert!(origin.stop());
    let second = packaged(work.path(), "wombat-dusk", "Wombat Dusk");
    origin_cli(
        &config_path,
        &[
            "ingest",
            "--quiet",
            "--title",
            "wombat-dusk",
            second.to_str().unwrap(),
        ],
    );
    let origin = ServerProcess::start(&binary("origin"), &config);
    let api = origin.url("api_addr");
    within(patience.rejoin, "caught up", || {
        search_slugs(&api, "wombat") == ["wombat-dusk"]
    });
    // The start reads the catalog whole anyway; the group's consumer then gets exactly what came after its
    // last commit.
    let applied = || -> Vec<String> {
        origin
            .log_events("origin::control::changes")
            .iter()
            .filter(|e| {
                e["fields"]["message"] == "catalog change" || e["message"] == "catalog change"
            })
            .map(|e| e.to_string())
            .collect()
    };
    within(
        patience.rejoin,
        "the change made while down consumed",
        || !applied().is_empty(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let applied = applied();
    assert!(
        applied.len() == 1 && applied[0].contains("wombat-dusk"),
        "only the change made while down: {applied:?}"
    );
    assert!(
        search_slugs(&api, "quokka").is_empty(),
        "the takedown holds after a restart"
    );
    assert_eq!(
        curl(&[&format!(
            "{}/titles/quokka-sunrise/hls/v0/seg_000.ts",
            origin.url("media_addr")
        )])
        .status,
        410
    );

    // Restored: back in search and served.
    origin_cli(&config_path, &["takedown", "quokka-sunrise", "--restore"]);
    within(patience.apply, "restored", || {
        search_slugs(&api, "quokka") == ["quokka-sunrise"]
    });
    assert_eq!(
        curl(&[&format!(
            "{}/titles/quokka-sunrise/hls/v0/seg_000.ts",
            origin.url("media_addr")
        )])
        .status,
        200
    );
}
