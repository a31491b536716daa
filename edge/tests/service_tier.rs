//! The service tier scaled out (issue 18): one edge in front of three control-plane instances sharing one
//! catalog database and one bus, through a site's path route (`/v1/`, `/web/`, `/`) with active health checks,
//! passive ejection, least-outstanding balancing and retries. Requests spread over the instances; one killed
//! under load costs no GET an error (only non-idempotent requests in flight may fail), leaves the pool within
//! the health checks' thresholds and comes back when it does; a popular catalog request reaches the database
//! once per lifetime, however many viewers (signed in or not) and instances; and two signed-in viewers asking
//! for the same personal URLs at once never receive each other's answers.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::{
    CurlResponse, ServerProcess, TempStore, TestCerts, binary, curl, free_port, metric_sum,
    origin_config, start_edge, try_curl,
};

const SIGNING: &str =
    "[[signing_key]]\nid = \"k1\"\nsecret = \"service tier test signing secret, 32+ bytes\"\n";
/// Probe interval and thresholds of the edge's health check.
const PROBE_MS: u64 = 200;
const THRESHOLD: u64 = 2;

fn metrics(server: &ServerProcess) -> String {
    curl(&[&format!("{}/metrics", server.url("admin_addr"))]).text()
}

fn json(r: &CurlResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

/// Three control-plane instances on fixed API ports (so one can come back on its own), sharing a data folder
/// (the SQLite catalog and the embedded bus), and the edge in front of them and of the first one's media.
struct Tier {
    _store: TempStore,
    _data: tempfile::TempDir,
    _cache: tempfile::TempDir,
    configs: Vec<String>,
    instances: Vec<Option<ServerProcess>>,
    api_urls: Vec<String>,
    edge: ServerProcess,
}

impl Tier {
    fn start() -> Tier {
        let store = TempStore::with_samples();
        let data = tempfile::tempdir().unwrap();
        let edge_port = free_port();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let configs: Vec<String> = ports
            .iter()
            .map(|port| {
                origin_config(
                    &store.url(),
                    &format!(
                        "data_dir = \"{data}\"\n{SIGNING}\
                         [api]\nlisten = \"127.0.0.1:{port}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
                         [playback]\nedges = [\"https://127.0.0.1:{edge_port}\"]\n",
                        data = data.path().display()
                    ),
                )
            })
            .collect();
        // The first creates the catalog; the others open it.
        let mut instances = Vec::new();
        for config in &configs {
            instances.push(Some(ServerProcess::start(&binary("origin"), config)));
        }
        let api_urls: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let upstreams = api_urls
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
        let media = instances[0].as_ref().unwrap().url("media_addr");
        let edge = start_edge(
            &media,
            cache.path(),
            &certs,
            &format!(
                "{SIGNING}[tls]\nlisten = \"127.0.0.1:{edge_port}\"\n\
                 [[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{media}\"\n\
                 [[site.route]]\nname = \"api\"\nprefixes = [\"/v1/\", \"/web/\"]\npaths = [\"/\"]\n\
                 upstreams = [{upstreams}]\nforward_credentials = true\n\
                 [site.route.health_check]\npath = \"/healthz\"\ninterval_ms = {PROBE_MS}\n\
                 timeout_ms = 500\nhealthy_threshold = {THRESHOLD}\nunhealthy_threshold = {THRESHOLD}\n"
            ),
        );
        Tier {
            _store: store,
            _data: data,
            _cache: cache,
            configs,
            instances,
            api_urls,
            edge,
        }
    }

    fn edge_url(&self, path: &str) -> String {
        format!("{}{path}", self.edge.url("http_addr"))
    }

    /// Requests the edge sent to instance `i`, whatever they got.
    fn sent_to(&self, i: usize) -> f64 {
        let member = format!("member=\"{}\"", self.api_urls[i]);
        metric_sum(&metrics(&self.edge), "edge_pool_requests_total", &[&member])
    }

    fn member_up(&self, i: usize) -> f64 {
        let member = format!("member=\"{}\"", self.api_urls[i]);
        metric_sum(&metrics(&self.edge), "edge_pool_member_up", &[&member])
    }

    /// A new account through the edge; its session cookie and first profile.
    fn sign_up(&self, email: &str) -> (String, String) {
        let body = format!("{{\"email\": \"{email}\", \"password\": \"correct horse battery\"}}");
        let post = |path: &str| {
            let url = self.edge_url(path);
            let answer = curl(&[
                "-X",
                "POST",
                "-H",
                "content-type: application/json",
                "-d",
                &body,
                &url,
            ]);
            assert_eq!(answer.status, 201, "{path}: {}", answer.text());
            answer
        };
        let created = post("/v1/accounts");
        let session = post("/v1/sessions");
        let cookie = session
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .expect("a session cookie")
            .to_string();
        let profile = json(&created)["profiles"][0]["id"]
            .as_str()
            .expect("a profile id")
            .to_string();
        (cookie, profile)
    }
}

/// Waits up to `limit` for `done`; how long it took.
fn wait_for(limit: Duration, what: &str, done: impl Fn() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn three_instances_share_the_load_survive_a_kill_and_never_mix_viewers() {
    let mut tier = Tier::start();
    let (cookie, profile) = tier.sign_up("ada@example.org");
    let cookie_header = format!("Cookie: {cookie}");

    // The front end and the API come through the edge; personal answers are passed, never stored.
    let page = curl(&[&tier.edge_url("/")]);
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("/web/app.js"), "{}", page.text());
    for _ in 0..60 {
        let me = curl(&["-H", &cookie_header, &tier.edge_url("/v1/me")]);
        assert_eq!(me.status, 200, "{}", me.text());
        assert_eq!(json(&me)["email"], "ada@example.org");
        let status = me.cache_status().unwrap_or_default().to_string();
        assert!(
            status.contains("fwd="),
            "a personal answer is never a hit: {status}"
        );
    }
    let spread: Vec<f64> = (0..3).map(|i| tier.sent_to(i)).collect();
    assert!(
        spread.iter().all(|&n| n >= 8.0),
        "60 personal requests spread over the three instances: {spread:?}"
    );
    let edge_metrics = metrics(&tier.edge);
    assert!(
        metric_sum(
            &edge_metrics,
            "edge_route_requests_total",
            &["route=\"default/api\""]
        ) >= 60.0,
        "{edge_metrics}"
    );

    // A popular catalog answer under load, from many viewers (signed in or not) at once: one read of the
    // database in its lifetime (a title's details are 5 statements), whichever instances the edge uses.
    let title_queries = |tier: &Tier| -> f64 {
        tier.instances
            .iter()
            .flatten()
            .map(|i| metric_sum(&metrics(i), "control_db_queries_total", &["op=\"title\""]))
            .sum()
    };
    let before = title_queries(&tier);
    let sent_before: f64 = (0..3).map(|i| tier.sent_to(i)).sum();
    let answers: Vec<(String, Vec<u8>)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|c| {
                let (tier, cookie_header) = (&tier, &cookie_header);
                scope.spawn(move || {
                    (0..25)
                        .map(|_| {
                            let url = tier.edge_url("/v1/titles/mandelbrot");
                            let got = if c % 2 == 0 {
                                curl(&["-H", cookie_header, &url])
                            } else {
                                curl(&[&url])
                            };
                            assert_eq!(got.status, 200, "{}", got.text());
                            (got.cache_status().unwrap_or_default().to_string(), got.body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    let read = title_queries(&tier) - before;
    assert!(
        (1.0..=5.0).contains(&read),
        "100 requests for one title read its details once: {read} statements"
    );
    assert!(answers.iter().all(|(_, body)| body == &answers[0].1));
    let statuses: Vec<&str> = answers.iter().map(|(status, _)| status.as_str()).collect();
    let sent: f64 = (0..3).map(|i| tier.sent_to(i)).sum::<f64>() - sent_before;
    assert_eq!(sent, 1.0, "the edge asked an instance once: {statuses:?}");
    assert!(
        statuses.iter().filter(|s| s.ends_with("; hit")).count() >= 90,
        "{statuses:?}"
    );

    // Two viewers at once on the same personal URLs, and each on the other's: never the other's answer.
    let (bob_cookie, bob_profile) = tier.sign_up("bob@example.org");
    let bob_header = format!("Cookie: {bob_cookie}");
    let viewers = [
        ("ada@example.org", cookie_header.clone(), profile.clone()),
        ("bob@example.org", bob_header.clone(), bob_profile.clone()),
    ];
    std::thread::scope(|scope| {
        for (email, header, own) in &viewers {
            for _ in 0..2 {
                let (tier, viewers) = (&tier, &viewers);
                scope.spawn(move || {
                    for round in 0..15 {
                        let me = curl(&["-H", header, &tier.edge_url("/v1/me")]);
                        assert_eq!(me.status, 200, "{}", me.text());
                        assert_eq!(json(&me)["email"], *email, "round {round}");
                        for (_, _, profile) in viewers {
                            let home = curl(&[
                                "-H",
                                header,
                                &tier.edge_url(&format!("/v1/profiles/{profile}/home")),
                            ]);
                            if profile == own {
                                assert_eq!(home.status, 200, "{}", home.text());
                            } else {
                                assert_eq!(
                                    home.status,
                                    404,
                                    "another viewer's home is not theirs: {}",
                                    home.text()
                                );
                            }
                        }
                    }
                });
            }
        }
    });

    // Load: GETs (personal, and searches the cache has not seen) and playback POSTs from four clients while
    // instance 0 is killed and, later, started again on its port.
    let stop = Arc::new(AtomicBool::new(false));
    let results = Arc::new(std::sync::Mutex::new(Vec::<(Instant, &str, u16)>::new()));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, results) = (Arc::clone(&stop), Arc::clone(&results));
            let (base, cookie_header, profile) = (
                tier.edge.url("http_addr"),
                cookie_header.clone(),
                profile.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 2_000 {
                    n += 1;
                    let (kind, args): (&str, Vec<String>) = match n % 3 {
                        0 => (
                            "GET me",
                            vec!["-H".into(), cookie_header.clone(), format!("{base}/v1/me")],
                        ),
                        1 => (
                            "GET search",
                            vec![format!("{base}/v1/search?q=test+{c}x{n}")],
                        ),
                        _ => (
                            "POST playback",
                            vec![
                                "-X".into(),
                                "POST".into(),
                                "-H".into(),
                                cookie_header.clone(),
                                "-H".into(),
                                "content-type: application/json".into(),
                                "-d".into(),
                                format!(
                                    "{{\"title\": \"test-pattern\", \"profile\": \"{profile}\"}}"
                                ),
                                format!("{base}/v1/playback"),
                            ],
                        ),
                    };
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let status = try_curl(&args).map_or(0, |r| r.status);
                    results.lock().unwrap().push((Instant::now(), kind, status));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let killed_at = Instant::now();
    let victim = tier.instances[0].take().expect("instance 0 runs");
    victim.signal("KILL");
    drop(victim);
    let left = wait_for(
        Duration::from_millis(PROBE_MS * (THRESHOLD + 2) + 1000),
        "the killed instance leaves the pool",
        || tier.member_up(0) == 0.0,
    );
    let sent_when_out = tier.sent_to(0);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        tier.sent_to(0),
        sent_when_out,
        "nothing is sent to an instance out of the pool"
    );
    // Back on its port: the probes bring it back and requests reach it again.
    tier.instances[0] = Some(ServerProcess::start(&binary("origin"), &tier.configs[0]));
    let restarted_at = Instant::now();
    let back = wait_for(
        Duration::from_millis(PROBE_MS * (THRESHOLD + 2) + 2000),
        "the instance comes back",
        || tier.member_up(0) == 1.0,
    );
    wait_for(
        Duration::from_secs(5),
        "requests reach the instance again",
        || tier.sent_to(0) > sent_when_out,
    );
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let results = results.lock().unwrap();
    let failed: Vec<_> = results
        .iter()
        .filter(|(_, _, status)| !(200..300).contains(status))
        .collect();
    let failed_gets = failed
        .iter()
        .filter(|(_, kind, _)| kind.starts_with("GET"))
        .count();
    let failed_posts: Vec<_> = failed
        .iter()
        .filter(|(_, kind, _)| kind.starts_with("POST"))
        .collect();
    assert_eq!(
        failed_gets, 0,
        "no GET fails while an instance dies: {failed:?}"
    );
    // Only a request in flight on the killed instance may fail: one per client at most, right at the kill.
    assert!(
        failed_posts.len() <= 4
            && failed_posts
                .iter()
                .all(|(at, _, _)| at.duration_since(killed_at) < Duration::from_secs(2)),
        "{failed_posts:?}"
    );
    eprintln!(
        "{} requests under load; instance out of the pool {left:?} after the kill, back {back:?} after its \
         restart ({:?} after the kill); {} POSTs in flight failed",
        results.len(),
        restarted_at.duration_since(killed_at),
        failed_posts.len()
    );
}
