//! Steering players to edges in regions (issue 15), end to end on loopback: an origin whose control plane keeps
//! the fleet, and edges in two regions that report to it. Playback answers rank each viewer's own region first
//! (by the CIDR table or a hint), a title's viewers meet on one edge, and a stopped edge leaves the answers
//! within the heartbeat timeout; the Content Steering server keeps a player on a healthy pathway and moves it
//! off a dead one; and headless Chromium playing a steered manifest with hls.js, then with dash.js, keeps
//! playing when the edge it plays from is killed: the media moves to another edge and the steering server is
//! asked again.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{
    ServerProcess, TempStore, TestCerts, curl, repo_root, start_edge, start_origin, tool,
};

const SECRET: &str = "fleet-secret-0123456789";
const SIGNING: &str =
    "[[signing_key]]\nid = \"k1\"\nsecret = \"steering-test signing secret, 32+ bytes\"\n";

/// The origin (media and control plane) and the edges, by name, with their regions.
struct Fleet {
    origin: ServerProcess,
    _parents: Vec<ServerProcess>,
    edges: Vec<(String, String, Option<ServerProcess>)>,
    certs: TestCerts,
    _dirs: Vec<tempfile::TempDir>,
    _store: TempStore,
}

impl Fleet {
    /// Starts the origin and one edge per `(name, region)`, and waits until every edge is healthy.
    fn start(edges: &[(&str, &str)], steering: &str) -> Fleet {
        Fleet::start_with_parents(edges, steering, 0)
    }

    /// The same, the edges filling through `parents` parent edges (a shield tier) instead of the origin.
    fn start_with_parents(edges: &[(&str, &str)], steering: &str, parents: usize) -> Fleet {
        let store = TempStore::with_samples();
        let origin = start_origin(
            &store.url(),
            &format!(
                "{SIGNING}[fleet]\nregistration_secret = \"{SECRET}\"\nheartbeat_timeout_secs = 2\n{steering}"
            ),
        );
        let api = origin.url("api_addr");
        let certs = TestCerts::generate();
        let mut dirs = Vec::new();
        let mut started = Vec::new();
        let media = origin.url("media_addr");
        let mut shield = Vec::new();
        for i in 0..parents {
            let dir = tempfile::tempdir().unwrap();
            let parent = start_edge(
                &media,
                dir.path(),
                &certs,
                &format!("name = \"parent-{i}\"\n"),
            );
            shield.push(parent);
            dirs.push(dir);
        }
        let site = if parents == 0 {
            String::new()
        } else {
            let list: Vec<String> = shield
                .iter()
                .map(|p| format!("\"{}\"", p.url("http_addr")))
                .collect();
            format!(
                "[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{media}\"\nparents = [{}]\n",
                list.join(", ")
            )
        };
        for (name, region) in edges {
            let dir = tempfile::tempdir().unwrap();
            let extra = format!(
                "name = \"{name}\"\n{SIGNING}{site}[control]\nurl = \"{api}\"\nregistration_secret = \"{SECRET}\"\n\
                 region = \"{region}\"\nheartbeat_secs = 1\n"
            );
            let edge = start_edge(&origin.url("media_addr"), dir.path(), &certs, &extra);
            started.push((name.to_string(), region.to_string(), Some(edge)));
            dirs.push(dir);
        }
        let fleet = Fleet {
            origin,
            _parents: shield,
            edges: started,
            certs,
            _dirs: dirs,
            _store: store,
        };
        fleet.wait_until("every edge healthy", |listed| {
            listed.len() == edges.len() && listed.iter().all(|e| e["healthy"] == true)
        });
        fleet
    }

    fn api(&self) -> String {
        self.origin.url("api_addr")
    }

    /// Waits (up to 15 s) until `GET /v1/edges` satisfies `pred`.
    fn wait_until(&self, what: &str, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let listed = curl(&[&format!("{}/v1/edges", self.api())]);
            let listed: Value = serde_json::from_slice(&listed.body).unwrap();
            let listed = listed["edges"].as_array().cloned().unwrap_or_default();
            if pred(&listed) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {listed:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GETs the origin's media listener answered so far.
    fn origin_gets(&self) -> u64 {
        self.origin.origin_gets()
    }

    /// `POST /v1/playback` with `body`; the answer.
    fn playback(&self, body: &str) -> Value {
        let answer = curl(&[
            "-H",
            testkit::SERVICE_AUTH,
            "-d",
            body,
            &format!("{}/v1/playback", self.api()),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.text());
        serde_json::from_slice(&answer.body).unwrap()
    }

    /// The regions of the edges a playback answer ranks, best first.
    fn regions(&self, answer: &Value) -> Vec<String> {
        ranked(answer)
            .iter()
            .map(|n| self.region_of(n).to_string())
            .collect()
    }

    fn region_of(&self, name: &str) -> &str {
        &self.edges.iter().find(|(n, ..)| n == name).unwrap().1
    }

    fn kill(&mut self, name: &str) {
        let edge = self.edges.iter_mut().find(|(n, ..)| n == name).unwrap();
        let process = edge.2.take().expect("running");
        process.signal("KILL");
        drop(process);
    }
}

/// The names of the edges a playback answer ranks, best first.
fn ranked(answer: &Value) -> Vec<String> {
    answer["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect()
}

/// `[steering]` with `scalars` (its own fields, which must come before its sub-tables), two regions by CIDR
/// block and their distance.
fn steering_config(scalars: &str) -> String {
    format!(
        "[steering]\nepsilon = 10\n{scalars}\
         [[steering.network]]\ncidr = \"10.1.0.0/16\"\nregion = \"eu-west\"\n\
         [[steering.network]]\ncidr = \"10.2.0.0/16\"\nregion = \"us-east\"\n\
         [steering.distances.eu-west]\nus-east = 80\n"
    )
}

#[test]
fn viewers_land_on_their_regions_edges_and_a_stopped_edge_leaves_the_answers() {
    // Three edges in two regions, filling through two parent edges.
    let mut fleet = Fleet::start_with_parents(
        &[
            ("eu-1", "eu-west"),
            ("eu-2", "eu-west"),
            ("us-1", "us-east"),
        ],
        &steering_config(""),
        2,
    );
    let cert = fleet.certs.cert().display().to_string();
    // By the CIDR table: the viewer's region first, the other one after.
    let eu = fleet.playback(r#"{"title": "test-pattern", "client": "10.1.0.7"}"#);
    assert_eq!(eu["region"], "eu-west");
    assert_eq!(fleet.regions(&eu), ["eu-west", "eu-west", "us-east"]);
    let us = fleet.playback(r#"{"title": "test-pattern", "client": "10.2.0.7"}"#);
    assert_eq!(us["region"], "us-east");
    assert_eq!(fleet.regions(&us), ["us-east", "eu-west", "eu-west"]);
    // A hint outranks the table; an address in no block and no hint: one ranking over every edge.
    let hinted =
        fleet.playback(r#"{"title": "test-pattern", "client": "10.1.0.7", "region": "us-east"}"#);
    assert_eq!(fleet.regions(&hinted)[0], "us-east");
    let anywhere = fleet.playback(r#"{"title": "test-pattern"}"#);
    assert_eq!(anywhere["region"], Value::Null);
    assert_eq!(ranked(&anywhere).len(), 3);
    // Every answer's URLs are on the edge it names, signed, and the edge serves them.
    let first = &anywhere["edges"][0];
    let manifest = first["manifests"]["hls-ts"].as_str().unwrap();
    assert!(manifest.starts_with(first["edge"].as_str().unwrap()));
    assert!(manifest.contains("/t/"), "{manifest}");
    let served = curl(&["--cacert", &cert, manifest]);
    assert_eq!(served.status, 200, "{}", served.text());
    assert!(served.text().starts_with("#EXTM3U"));

    // A cold object fetched through every edge costs the origin one request (the parents shield it).
    let before = fleet.origin_gets();
    for (_, _, edge) in &fleet.edges {
        let port = edge.as_ref().unwrap().addr("tls_addr").port();
        let url = format!("https://127.0.0.1:{port}/titles/test-pattern/hls/v1/seg_003.ts");
        let got = curl(&["--cacert", &cert, &url]);
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while fleet.origin_gets() < before + 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        fleet.origin_gets(),
        before + 1,
        "origin GETs for one cold object"
    );

    // A title's viewers meet on one edge of their region; titles spread.
    let title_edges = |title: &str| -> std::collections::BTreeSet<String> {
        (0..8)
            .map(|i| {
                let body = format!(r#"{{"title": "{title}", "client": "10.1.3.{i}"}}"#);
                ranked(&fleet.playback(&body))[0].clone()
            })
            .collect()
    };
    let pattern = title_edges("test-pattern");
    assert_eq!(pattern.len(), 1, "{pattern:?}");
    assert_eq!(title_edges("mandelbrot").len(), 1);

    // The steering server: a player stays on its healthy pathway, and one on another region's edge moves home.
    let api = fleet.api();
    let steering = |query: &str| -> Value {
        let answer = curl(&[&format!("{api}/v1/steering/test-pattern?{query}")]);
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        serde_json::from_slice(&answer.body).unwrap()
    };
    let eu_order = ranked(&eu);
    let second = &eu_order[1];
    let kept = steering(&format!(
        "region=eu-west&_HLS_pathway={second}&_HLS_throughput=5000000"
    ));
    assert_eq!(kept["VERSION"], 1);
    assert_eq!(kept["TTL"], 10);
    assert_eq!(kept["PATHWAY-PRIORITY"][0], second.as_str());
    // Edges the manifest did not name come as clones of one it did (DASH: host and port replaced).
    let cloned = steering(&format!(
        "region=eu-west&pathways={}&_DASH_pathway=%22{}%22",
        eu_order[0], eu_order[0]
    ));
    let clones = cloned["PATHWAY-CLONES"].as_array().unwrap();
    assert_eq!(clones.len(), 2, "{cloned}");
    assert_eq!(clones[0]["BASE-ID"], eu_order[0].as_str());
    assert_eq!(clones[0]["ID"], eu_order[1].as_str());
    let second_url = &eu["edges"][1]["edge"];
    assert_eq!(
        format!(
            "https://{}",
            clones[0]["URI-REPLACEMENT"]["HOST"].as_str().unwrap()
        ),
        second_url.as_str().unwrap()
    );
    assert!(
        cloned["RELOAD-URI"]
            .as_str()
            .unwrap()
            .contains(&format!("pathways={}", eu_order[0])),
        "{cloned}"
    );
    let home = steering("region=eu-west&_HLS_pathway=us-1");
    assert_eq!(home["PATHWAY-PRIORITY"], serde_json::json!(eu_order));
    // Too slow for the title's lowest bitrate where it is: not kept there.
    let slow = steering(&format!(
        "region=eu-west&_DASH_pathway=%22{second}%22&_DASH_throughput=1000"
    ));
    assert_eq!(slow["PATHWAY-PRIORITY"][0], eu_order[0].as_str());

    // The title's edge stops: within the heartbeat timeout it is out of every answer, and the steering server
    // moves its players.
    let gone = pattern.into_iter().next().unwrap();
    fleet.kill(&gone);
    let stopped = Instant::now();
    fleet.wait_until("the killed edge down", |listed| {
        listed
            .iter()
            .any(|e| e["name"] == gone.as_str() && e["healthy"] == false)
    });
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    let after = fleet.playback(r#"{"title": "test-pattern", "client": "10.1.0.7"}"#);
    assert!(!ranked(&after).contains(&gone), "{after}");
    assert_eq!(fleet.regions(&after), ["eu-west", "us-east"]);
    let moved = steering(&format!("region=eu-west&_HLS_pathway={gone}"));
    assert!(
        !moved["PATHWAY-PRIORITY"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == gone.as_str())
    );

    let metrics = curl(&[&format!("{}/metrics", fleet.origin.url("admin_addr"))]).text();
    for line in [
        "control_steering_requests_total{decision=\"stay\",protocol=\"hls\"} 1",
        "control_steering_requests_total{decision=\"move\",protocol=\"hls\"} 2",
        "control_steering_requests_total{decision=\"move\",protocol=\"dash\"} 1",
        "control_steering_requests_total{decision=\"stay\",protocol=\"dash\"} 1",
        "control_playback_steered_total{edge_region=\"eu-west\",region=\"eu-west\"}",
    ] {
        assert!(metrics.contains(line), "no `{line}` in:\n{metrics}");
    }
}

/// Plays the title's steered manifest for `player` in Chromium, kills the edge it plays from once playback
/// has started, and checks that it plays on from another edge. With `max_pathways` 1 the manifest names only
/// the first edge, and the others reach the player as pathway clones in the steering answers.
fn keeps_playing_when_its_edge_is_killed(player: &str, max_pathways: usize) {
    let mut fleet = Fleet::start(
        &[
            ("eu-1", "eu-west"),
            ("eu-2", "eu-west"),
            ("us-1", "us-east"),
        ],
        &steering_config(&format!("ttl_secs = 2\nmax_pathways = {max_pathways}\n")),
    );
    let answer = fleet.playback(r#"{"title": "test-pattern", "region": "eu-west"}"#);
    let first = ranked(&answer)[0].clone();
    let first_port = answer["edges"][0]["edge"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let packaging = if player == "hls" { "hls-ts" } else { "dash" };
    let steered = answer["steering"][packaging]
        .as_str()
        .unwrap_or_else(|| panic!("no steered `{packaging}` manifest: {answer}"))
        .to_string();
    // What the player starts from names every edge, the first one first.
    let manifest = curl(&[&steered]);
    assert_eq!(manifest.status, 200, "{}", manifest.text());
    assert!(manifest.text().contains(&first), "{}", manifest.text());
    if player == "dash" {
        let named = manifest.text().matches("<BaseURL serviceLocation=").count();
        assert_eq!(named, max_pathways.min(3), "{}", manifest.text());
    }

    let mut child = Command::new(tool("node"))
        .arg(repo_root().join("edge/tests/browser/play.mjs"))
        .arg(&steered)
        .args([
            "--player",
            player,
            "--proto",
            "h2",
            "--min-time",
            "14",
            "--timeout",
            "75",
        ])
        .args([
            "--max-buffer",
            "4",
            "--progress",
            "--tolerate-failures",
            "--cert",
        ])
        .arg(fleet.certs.cert())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node");
    let mut killed_at = None;
    let mut result = Value::Null;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(t) = value["progress"].as_f64() {
            if killed_at.is_none() && t >= 3.0 {
                eprintln!("killing {first} at playback time {t:.1} s");
                fleet.kill(&first);
                killed_at = Some(t);
            }
        } else {
            result = value;
        }
    }
    let _ = child.wait();
    eprintln!("{player} through Content Steering: {result}");
    assert!(killed_at.is_some(), "playback never started: {result}");
    assert_eq!(result["pass"], true, "{result}");
    assert!(result["currentTime"].as_f64().unwrap() >= 14.0, "{result}");
    // The media came from the first edge, then from another one.
    let hosts: Vec<String> = result["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_string())
        .collect();
    assert!(hosts[0].ends_with(&format!(":{first_port}")), "{result}");
    let last = hosts.last().unwrap();
    assert!(
        !last.ends_with(&format!(":{first_port}")),
        "still on the killed edge: {result}"
    );
    assert!(result["steering"].as_u64().unwrap() >= 1, "{result}");
}

#[test]
fn chromium_with_hls_js_keeps_playing_through_content_steering_when_its_edge_is_killed() {
    keeps_playing_when_its_edge_is_killed("hls", 4);
}

/// dash.js from an MPD naming one edge: the others come as pathway clones (DASH's `HOST` carries the port, so
/// loopback edges can be cloned; HLS's cannot, see `control::steering::clones`).
#[test]
fn chromium_with_dash_js_keeps_playing_through_content_steering_clones_when_its_edge_is_killed() {
    keeps_playing_when_its_edge_is_killed("dash", 1);
}
