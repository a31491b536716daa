//! CMCD (CTA-5004) at a real edge, and its per-title summaries (issue 16): a segment asked for with CMCD in the
//! query (any spelling of `CMCD=`) or in the `CMCD-*` header fields is the object asked for without it — one
//! cached copy, over HTTP/1.1, HTTP/2 and HTTP/3, signed URLs included; the upstream never sees CMCD, on fills or
//! passes; the access log carries the player's session, content, bitrate, buffer and stall; and every interval
//! the edge posts its per-title summary (requests by cache status, bytes, errors, TTFB percentiles, stalls,
//! sessions) to a control plane, sending nothing for an idle interval and dropping what a refusing one does not
//! take.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use shared::token::{Grant, SigningKey, sign};
use testkit::{
    H3Client, Scripted, ScriptedOrigin, ServerProcess, TestCerts, curl, h3_get, h3_request,
    start_edge,
};

const SIGNING_SECRET: &str = "edge-test signing secret, 32+ bytes long";
const FLEET_SECRET: &str = "fleet-secret-0123456789";
/// CTA-5004's query form: `br=3200,bl=21300,bs,sid="sess-q",cid="demo",ot=v`, percent-encoded.
const CMCD_QUERY: &str =
    "CMCD=br%3D3200%2Cbl%3D21300%2Cbs%2Csid%3D%22sess-q%22%2Ccid%3D%22demo%22%2Cot%3Dv";

/// A media origin: `/titles/nope/…` is 404, `…/broken.ts` 503, anything else a cacheable segment.
fn media_origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|req| {
        let path = req.path.split('?').next().unwrap_or_default();
        if path.starts_with("/titles/nope/") {
            return Scripted::status(404, "no such title");
        }
        if path.ends_with("/broken.ts") {
            return Scripted::status(503, "down").header("Cache-Control", "no-store");
        }
        Scripted::ok(format!("segment {}", req.path).repeat(50))
            .header("Cache-Control", "max-age=600")
            .header("Content-Type", "video/mp2t")
    })
}

/// The sum of an edge's metric samples whose line starts with `prefix` (`name{labels`).
fn metric(edge: &ServerProcess, prefix: &str) -> f64 {
    let text = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cmcd_is_one_cached_object_never_sent_upstream_and_logged() {
    let origin = media_origin();
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let extra = format!(
        "[[signing_key]]\nid = \"k1\"\nsecret = \"{SIGNING_SECRET}\"\n\
         [[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{}\"\n\
         bypass_paths = [\"/live/\"]\nsigned_paths = [\"/titles/signed/\"]\n",
        origin.url()
    );
    let edge = start_edge(&origin.url(), cache.path(), &certs, &extra);
    let ca = certs.ca();
    let ca_arg = ca.to_str().unwrap();
    let plain = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());
    let tls = format!("https://localhost:{}", edge.addr("tls_addr").port());
    let h3 = format!("https://localhost:{}", edge.addr("h3_addr").port());
    let segment = "/titles/demo/v0/seg_001.ts";
    let want = format!("segment {segment}").repeat(50);

    // The plain URL fills the cache; every CMCD form of it, on every protocol, is a hit on that one copy.
    let first = curl(&[&format!("{plain}{segment}")]);
    assert_eq!(
        first.cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    let hits = [
        (
            "h1 query",
            curl(&[&format!("{plain}{segment}?{CMCD_QUERY}")]),
        ),
        (
            "h2 query, encoded name",
            curl(&[
                "--http2",
                "--cacert",
                ca_arg,
                &format!("{tls}{segment}?%43MCD=br%3D1600%2Csid%3D%22sess-2%22"),
            ]),
        ),
        (
            "h2 query, lower-case hex",
            curl(&[
                "--http2",
                "--cacert",
                ca_arg,
                &format!("{tls}{segment}?C%4dCD=br%3d800"),
            ]),
        ),
        (
            "h1 headers",
            curl(&[
                "--http1.1",
                "--cacert",
                ca_arg,
                "-H",
                "CMCD-Object: br=3200,ot=v",
                "-H",
                "CMCD-Session: sid=\"sess-h\",cid=\"demo\"",
                "-H",
                "CMCD-Request: bl=4000",
                "-H",
                "CMCD-Status: bs",
                &format!("{tls}{segment}"),
            ]),
        ),
    ];
    for (how, response) in &hits {
        assert_eq!(response.status, 200, "{how}");
        assert_eq!(response.cache_status(), Some("edge-test; hit"), "{how}");
        assert!(response.text() == want, "{how}: the same bytes");
    }
    assert_eq!(hits[1].1.http_version, "2");
    for (client, args) in [
        (H3Client::Curl, vec![]),
        (
            H3Client::Aioquic,
            vec![
                "-H",
                "cmcd-session: sid=\"sess-3\"",
                "-H",
                "cmcd-object: br=400",
            ],
        ),
    ] {
        let url = format!("{h3}{segment}?{CMCD_QUERY}");
        let response = match args.is_empty() {
            true => h3_get(client, &url, &ca, None),
            false => h3_request(client, &format!("{h3}{segment}"), &ca, &args),
        }
        .unwrap();
        assert_eq!(
            (response.status, response.protocol.as_str()),
            (200, "h3"),
            "{client:?}"
        );
        assert!(
            response.headers["cache-status"].starts_with("edge-test; hit"),
            "{client:?}: {:?}",
            response.headers
        );
        assert!(response.body == want.as_bytes());
    }

    // Other parameters still key the cache; CMCD beside them does not.
    let keyed = curl(&[&format!("{plain}{segment}?x=1")]);
    assert_eq!(
        keyed.cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    let keyed_cmcd = curl(&[&format!("{plain}{segment}?{CMCD_QUERY}&x=1")]);
    assert_eq!(keyed_cmcd.cache_status(), Some("edge-test; hit"));

    // A pass goes upstream without CMCD too.
    let passed = curl(&[
        "-H",
        "CMCD-Session: sid=\"sess-live\"",
        &format!("{plain}/live/x.ts?a=2&{CMCD_QUERY}"),
    ]);
    assert_eq!(passed.cache_status(), Some("edge-test; fwd=bypass"));

    // Players append CMCD to signed URLs: the token still opens the path, and the copy is shared.
    let key = SigningKey::new("k1", SIGNING_SECRET.as_bytes());
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let grant = Grant {
        key_id: "k1".into(),
        expires,
        prefix: "/titles/signed/".into(),
        client: String::new(),
    };
    let signed = format!("{plain}/t/{}/titles/signed/seg.ts", sign(&key, &grant));
    let with_cmcd = curl(&[&format!("{signed}?{CMCD_QUERY}")]);
    assert_eq!(
        (with_cmcd.status, with_cmcd.cache_status()),
        (200, Some("edge-test; fwd=uri-miss; stored"))
    );
    assert_eq!(curl(&[&signed]).cache_status(), Some("edge-test; hit"));
    let unsigned = curl(&[&format!("{plain}/titles/signed/seg.ts?{CMCD_QUERY}")]);
    assert_eq!(unsigned.status, 403, "CMCD opens nothing");

    // The upstream saw each object once, and never CMCD.
    let seen = origin.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(origin.count(segment), 1, "{paths:?}");
    assert_eq!(origin.count(&format!("{segment}?x=1")), 1, "{paths:?}");
    assert_eq!(origin.count("/live/x.ts?a=2"), 1, "{paths:?}");
    assert_eq!(origin.count("/titles/signed/seg.ts"), 1, "{paths:?}");
    for request in &seen {
        assert!(
            !request.path.to_ascii_lowercase().contains("cmcd"),
            "{}",
            request.path
        );
        assert!(
            !request
                .headers
                .iter()
                .any(|(name, _)| name.starts_with("cmcd-")),
            "{:?}",
            request.headers
        );
    }

    // The access log carries what the players said.
    let query = edge.wait_for_event("access", |e| {
        e["cmcd_sid"] == "sess-q" && e["protocol"] == "http/1.1"
    });
    assert_eq!(query["cmcd_cid"], "demo");
    assert_eq!(query["cmcd_br"], 3200);
    assert_eq!(query["cmcd_bl"], 21300);
    assert_eq!(query["cmcd_bs"], true);
    assert_eq!(query["cache_status"], "hit");
    assert_eq!(query["path"], segment, "the path logged has no query");
    let headers = edge.wait_for_event("access", |e| e["cmcd_sid"] == "sess-h");
    assert_eq!(
        (
            &headers["cmcd_br"],
            &headers["cmcd_bl"],
            &headers["cmcd_bs"]
        ),
        (&Value::from(3200), &Value::from(4000), &Value::from(true))
    );
    let encoded = edge.wait_for_event("access", |e| e["cmcd_sid"] == "sess-2");
    assert_eq!(
        (&encoded["protocol"], &encoded["cmcd_br"]),
        (&Value::from("h2"), &Value::from(1600))
    );
    edge.wait_for_event("access", |e| {
        e["cmcd_sid"] == "sess-3" && e["protocol"] == "h3"
    });
    let plain_line = edge.wait_for_event("access", |e| e["path"] == segment);
    assert!(
        plain_line.get("cmcd_sid").is_none(),
        "no CMCD, no CMCD fields"
    );

    // Counted by carrier and object type.
    let counted = |labels: &str| metric(&edge, &format!("edge_cmcd_requests_total{{{labels}"));
    assert!(counted("carrier=\"query\",object_type=\"v\"") >= 5.0);
    assert!(counted("carrier=\"headers\",object_type=\"v\"") >= 1.0);
    assert!(counted("carrier=\"headers\",object_type=\"none\"") >= 1.0);
    assert!(counted("carrier=\"both\",object_type=\"v\"") >= 1.0);
    assert_eq!(metric(&edge, "edge_cmcd_rejected_values_total"), 0.0);
}

/// A control plane that answers the summaries posted to it with `status` and keeps those it accepts.
struct ControlPlane {
    server: ScriptedOrigin,
    status: Arc<AtomicU16>,
    accepted: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl ControlPlane {
    fn start() -> ControlPlane {
        let status = Arc::new(AtomicU16::new(200));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (answer, keep) = (Arc::clone(&status), Arc::clone(&accepted));
        let server = ScriptedOrigin::start(move |req| {
            if req.method == "POST" && req.path == "/v1/edges/edge-test/stats" {
                assert_eq!(
                    req.header("authorization"),
                    Some(format!("Bearer {FLEET_SECRET}").as_str())
                );
                assert_eq!(req.header("content-type"), Some("application/json"));
                return match answer.load(Ordering::SeqCst) {
                    200 => {
                        keep.lock().unwrap().push(req.body.clone());
                        Scripted::status(202, "{\"accepted\": true}").raw()
                    }
                    status => Scripted::status(status, "wrong secret").raw(),
                };
            }
            if req.method == "PUT" {
                return Scripted::ok("{}").raw();
            }
            // The catalog-change feed: not here (the edge backs off).
            Scripted::status(404, "no feed").raw()
        });
        ControlPlane {
            server,
            status,
            accepted,
        }
    }

    /// The summaries accepted so far.
    fn summaries(&self) -> Vec<Value> {
        self.accepted
            .lock()
            .unwrap()
            .iter()
            .map(|body| serde_json::from_slice(body).expect("a summary is JSON"))
            .collect()
    }

    /// Every summary posted so far, accepted or not.
    fn posts(&self) -> usize {
        self.server
            .requests()
            .iter()
            .filter(|r| r.method == "POST")
            .count()
    }
}

/// Per title, the sums of the summaries' counts: requests by cache status, and `bytes`, `errors`, `stalls`,
/// `sessions`, `requests` (all statuses) as keys of their own.
fn totals(summaries: &[Value]) -> BTreeMap<String, BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for summary in summaries {
        assert!(summary["interval_secs"].as_u64().unwrap() >= 1);
        for title in summary["titles"].as_array().unwrap() {
            let sums = out
                .entry(title["title"].as_str().unwrap().to_string())
                .or_default();
            for (status, n) in title["requests"].as_object().unwrap() {
                *sums.entry(status.clone()).or_default() += n.as_u64().unwrap();
                *sums.entry("requests".into()).or_default() += n.as_u64().unwrap();
            }
            for field in ["bytes", "errors", "stalls", "sessions"] {
                if let Some(n) = title.get(field) {
                    *sums.entry(field.into()).or_default() += n.as_u64().unwrap();
                }
            }
            if let Some(ttfb) = title.get("ttfb_ms") {
                let (p50, p99) = (ttfb["p50"].as_f64().unwrap(), ttfb["p99"].as_f64().unwrap());
                assert!(0.0 < p50 && p50 <= ttfb["p90"].as_f64().unwrap() && p50 <= p99);
            }
        }
    }
    out
}

#[test]
fn per_title_summaries_reach_the_control_plane() {
    let origin = media_origin();
    let control = ControlPlane::start();
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let extra = format!(
        "[control]\nurl = \"{}\"\nregistration_secret = \"{FLEET_SECRET}\"\nheartbeat_secs = 60\nstats_secs = 1\n",
        control.server.url()
    );
    let edge = start_edge(&origin.url(), cache.path(), &certs, &extra);
    let base = format!("http://127.0.0.1:{}", edge.addr("http_addr").port());
    let get = |path: &str, args: &[&str]| {
        let url = format!("{base}{path}");
        let mut all: Vec<&str> = args.to_vec();
        all.push(&url);
        curl(&all)
    };

    // Nothing served yet: nothing posted (the interval passes idle).
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(control.posts(), 0, "an idle interval sends nothing");

    let alpha = "/titles/alpha/v0/seg_001.ts";
    let one = get(&format!("{alpha}?CMCD=sid%3D%22s1%22%2Cbr%3D800"), &[]);
    assert_eq!(one.cache_status(), Some("edge-test; fwd=uri-miss; stored"));
    let segment_bytes = one.body.len() as u64;
    get(&format!("{alpha}?CMCD=sid%3D%22s2%22%2Cbs"), &[]);
    get(alpha, &[]);
    assert_eq!(get("/titles/alpha/broken.ts", &[]).status, 503);
    get(
        "/titles/beta/v0/seg_001.ts",
        &["-H", "CMCD-Session: sid=\"s1\""],
    );
    get("/other/x.ts", &[]);
    assert_eq!(get("/titles/nope/x.ts", &[]).status, 404);

    let mut sums = BTreeMap::new();
    wait_until("the summaries of 7 requests", || {
        sums = totals(&control.summaries());
        sums.values()
            .map(|t| t.get("requests").copied().unwrap_or(0))
            .sum::<u64>()
            == 7
    });
    let alpha = &sums["alpha"];
    assert_eq!(
        (
            alpha["miss"],
            alpha["hit"],
            alpha["pass"],
            alpha["requests"]
        ),
        (1, 2, 1, 4)
    );
    assert_eq!(alpha["errors"], 1, "the 503 (no-store: passed)");
    assert_eq!(alpha["stalls"], 1);
    // Distinct per interval: two sessions, one request each, whether in one interval or two.
    assert_eq!(alpha["sessions"], 2, "{alpha:?}");
    assert!(alpha["bytes"] >= 3 * segment_bytes);
    let beta = &sums["beta"];
    assert_eq!(
        (beta["miss"], beta["requests"], beta["sessions"]),
        (1, 1, 1)
    );
    assert_eq!(beta["stalls"], 0);
    let other = &sums["other"];
    assert_eq!(
        other["requests"], 2,
        "another path and a title that is not there"
    );
    assert!(!other.contains_key("stalls"), "no CMCD, no CMCD counts");
    assert!(!sums.contains_key("nope"));
    let posted = control.posts();
    assert!(metric(&edge, "edge_stats_posts_total{outcome=\"sent\"}") >= 1.0);

    // Idle again: nothing more is posted.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(control.posts(), posted, "idle intervals send nothing");

    // A control plane that refuses: each interval's numbers are dropped, and said once.
    control.status.store(401, Ordering::SeqCst);
    wait_until("three refused posts", || {
        get("/titles/gamma/v0/seg_001.ts", &[]);
        std::thread::sleep(Duration::from_millis(400));
        metric(&edge, "edge_stats_posts_total{outcome=\"refused\"}") >= 3.0
    });
    // The last request's interval is posted (and refused) too before the control plane takes posts again.
    std::thread::sleep(Duration::from_millis(2500));
    let refusals = edge
        .log_lines()
        .iter()
        .filter(|l| l.contains("refused this edge's per-title summary"))
        .count();
    assert_eq!(refusals, 1, "logged once per spell");
    control.status.store(200, Ordering::SeqCst);
    get("/titles/delta/v0/seg_001.ts", &[]);
    wait_until("the summary after the refusals", || {
        totals(&control.summaries()).contains_key("delta")
    });
    let sums = totals(&control.summaries());
    assert!(
        !sums.contains_key("gamma"),
        "refused intervals are dropped, never sent again: {sums:?}"
    );
    assert!(
        edge.log_lines()
            .iter()
            .any(|l| l.contains("takes this edge's summaries again"))
    );
}
