//! The shield tier (issue 15): child edges fill from parent edges chosen by rendezvous hashing of the cache key,
//! so a cold object asked for through every child costs the origin one fetch; a dead parent is skipped and left
//! out for a while, the children falling back to the other parent or the origin without a client error; and
//! `CDN-Loop` (RFC 8586) carries one hop per tier and stops a request that went round too often with 508.
//! Real processes: an origin, two parent edges, three child edges, all on 127.0.0.1 port 0.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use testkit::{
    CurlResponse, Scripted, ScriptedOrigin, ServerProcess, TempStore, TestCerts, curl, start_edge,
    start_origin,
};

/// Small edges: no disk tier, no HTTP/3, so five of them start fast on a small machine.
const SMALL: &str = "[cache]\ndisk_bytes = 0\n[h3]\nenabled = false\n";

struct Shield {
    origin: ServerProcess,
    /// `None` once a test stopped it.
    parents: Vec<Option<ServerProcess>>,
    parent_urls: Vec<String>,
    children: Vec<ServerProcess>,
    certs: TestCerts,
    _dirs: Vec<tempfile::TempDir>,
}

/// An origin over `store`, two parents in front of it, three children whose parents they are.
fn start_shield(store: &TempStore) -> Shield {
    let origin = start_origin(&store.url(), "");
    let certs = TestCerts::generate();
    let mut dirs = Vec::new();
    let mut edge = |upstream: &str, extra: String| {
        let dir = tempfile::tempdir().unwrap();
        let edge = start_edge(upstream, dir.path(), &certs, &format!("{extra}{SMALL}"));
        dirs.push(dir);
        edge
    };
    let media = origin.url("media_addr");
    let parents: Vec<ServerProcess> = (0..2)
        .map(|i| edge(&media, format!("name = \"parent-{i}\"\n")))
        .collect();
    let parent_urls: Vec<String> = parents.iter().map(|p| p.url("http_addr")).collect();
    let list = parent_urls
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let children = (0..3)
        .map(|i| {
            edge(
                &media,
                format!(
                    "name = \"child-{i}\"\n[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\n\
                     upstream = \"{media}\"\nparents = [{list}]\n"
                ),
            )
        })
        .collect();
    Shield {
        origin,
        parents: parents.into_iter().map(Some).collect(),
        parent_urls,
        children,
        certs,
        _dirs: dirs,
    }
}

impl Shield {
    /// GET `path` from child `i` over HTTPS (the player's way in).
    fn get(&self, i: usize, path: &str, extra: &[&str]) -> CurlResponse {
        let url = format!(
            "https://localhost:{}{path}",
            self.children[i].addr("tls_addr").port()
        );
        let ca = self.certs.ca();
        let mut args = vec!["--cacert", ca.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args)
    }

    /// GETs the origin's media listener answered so far.
    fn origin_gets(&self) -> u64 {
        self.origin.origin_gets()
    }

    /// Waits (up to 5 s: the origin counts a request when its body ends) for the origin's GET count to reach
    /// `expected`, then checks it did not pass it.
    fn assert_origin_gets(&self, expected: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.origin_gets() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(self.origin_gets(), expected, "GETs the origin answered");
    }

    /// The index of the parent that ranks first for `path` (what every child computes).
    fn owner(&self, path: &str) -> usize {
        let parents: Vec<edge::shield::Parent> = self
            .parent_urls
            .iter()
            .map(|u| edge::shield::Parent::new(u, u.trim_start_matches("http://")))
            .collect();
        let parents = edge::shield::Parents::new(parents, Duration::from_secs(10));
        parents.order(path, tokio::time::Instant::now())[0]
    }
}

/// A sample of an edge's metric `name` with these labels (others ignored); 0 when absent.
fn metric(edge: &ServerProcess, name: &str, labels: &[(&str, &str)]) -> f64 {
    curl(&[&format!("{}/metrics", edge.url("admin_addr"))])
        .text()
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

fn parent_up(child: &ServerProcess, parent: &str) -> f64 {
    metric(child, "edge_parent_up", &[("parent", parent)])
}

fn parent_requests(child: &ServerProcess, parent: &str, result: &str) -> f64 {
    metric(
        child,
        "edge_upstream_parent_requests_total",
        &[("parent", parent), ("result", result)],
    )
}

fn body(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + seed) % 251) as u8).collect()
}

/// The `Cache-Status` entries of a response, each without `ttl=`, nearest the origin first.
fn cache_statuses(r: &CurlResponse) -> Vec<String> {
    r.header("cache-status")
        .unwrap_or_default()
        .split(", ")
        .map(|e| e.split("; ttl=").next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_cold_object_through_every_child_costs_the_origin_one_fetch() {
    let store = TempStore::new();
    let (one, two) = (body(700_000, 1), body(900_000, 2));
    store.put("v/seg-1.ts", &one);
    store.put("v/seg-2.ts", &two);
    let shield = start_shield(&store);
    assert_eq!(shield.origin_gets(), 0);

    // One after another: the first child misses, its parent misses and fetches; the others' parent is the same
    // parent (the same rendezvous ranking in every child), which now hits.
    let owner = format!("parent-{}", shield.owner("/v/seg-1.ts"));
    for child in 0..3 {
        let r = shield.get(child, "/v/seg-1.ts", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body == one, "child {child}: the object's bytes");
        let parent_entry = if child == 0 {
            format!("{owner}; fwd=uri-miss; stored")
        } else {
            format!("{owner}; hit")
        };
        // RFC 9211: the parent's entry first, then the child's.
        assert_eq!(
            cache_statuses(&r),
            [parent_entry, format!("child-{child}; fwd=uri-miss; stored")]
        );
    }
    shield.assert_origin_gets(1);
    // A child's hit keeps the parent's entry it stored with the object.
    let again = shield.get(1, "/v/seg-1.ts", &[]);
    assert_eq!(cache_statuses(&again)[1], "child-1; hit");
    assert!(again.body == one);

    // At once through all three: one fetch as well (the parent coalesces the children's fills).
    let bodies: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|child| {
                let shield = &shield;
                s.spawn(move || {
                    let r = shield.get(child, "/v/seg-2.ts", &[]);
                    assert_eq!(r.status, 200, "{}", r.text());
                    r.body
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(bodies.iter().all(|b| *b == two), "byte-identical bodies");
    shield.assert_origin_gets(2);

    // Every child counted its requests to that parent as answered, and both parents are up.
    let parent = &shield.parent_urls[shield.owner("/v/seg-2.ts")];
    for child in &shield.children {
        assert!(parent_requests(child, parent, "ok") >= 1.0);
        for url in &shield.parent_urls {
            assert_eq!(parent_up(child, url), 1.0);
        }
    }
}

/// Paths whose first-ranked parent is `parent`.
fn paths_owned_by(shield: &Shield, parent: usize, count: usize) -> Vec<String> {
    (0..)
        .map(|k| format!("/v/obj-{k}.ts"))
        .filter(|p| shield.owner(p) == parent)
        .take(count)
        .collect()
}

#[test]
fn a_dead_parent_is_skipped_and_left_out_then_the_origin_answers() {
    let store = TempStore::new();
    for k in 0..40 {
        store.put(&format!("v/obj-{k}.ts"), &body(50_000, k));
    }
    let mut shield = start_shield(&store);
    let dead = 0;
    let owned = paths_owned_by(&shield, dead, 3);
    let dead_url = shield.parent_urls[dead].clone();
    let other = format!("parent-{}", 1 - dead);
    assert!(shield.parents[dead].take().unwrap().stop(), "a clean stop");

    // The first request for a dead parent's key finds it gone and takes the other parent, with no client error.
    let expected = |path: &str| {
        let k: usize = path["/v/obj-".len()..path.len() - 3].parse().unwrap();
        body(50_000, k)
    };
    let r = shield.get(0, &owned[0], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == expected(&owned[0]));
    assert_eq!(
        cache_statuses(&r)[0],
        format!("{other}; fwd=uri-miss; stored")
    );
    let connects = |child: usize| parent_requests(&shield.children[child], &dead_url, "connect");
    assert_eq!(connects(0), 1.0);
    assert_eq!(parent_up(&shield.children[0], &dead_url), 0.0, "out");
    // Out for a while: the next of its keys goes to the other parent without trying it again.
    let r = shield.get(0, &owned[1], &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == expected(&owned[1]));
    assert_eq!(connects(0), 1.0, "not tried again");
    // Another child learns it by itself, and the other parent already holds the object: no origin fetch.
    let before = shield.origin_gets();
    let r = shield.get(1, &owned[0], &[]);
    assert_eq!(cache_statuses(&r)[0], format!("{other}; hit"));
    assert_eq!(parent_up(&shield.children[1], &dead_url), 0.0);
    shield.assert_origin_gets(before);

    // Both parents gone: the children fill from the origin itself.
    assert!(shield.parents[1 - dead].take().unwrap().stop());
    let r = shield.get(2, &owned[2], &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == expected(&owned[2]));
    assert_eq!(cache_statuses(&r), ["child-2; fwd=uri-miss; stored"]);
    for url in &shield.parent_urls {
        assert_eq!(parent_up(&shield.children[2], url), 0.0);
    }
}

#[test]
fn cdn_loop_counts_hops_and_stops_loops() {
    let store = TempStore::new();
    store.put("v/seg.ts", &body(10_000, 3));
    let shield = start_shield(&store);

    // Four hops of this CDN already: refused with the reason, never forwarded, however it is spelled.
    let spellings: [&[&str]; 3] = [
        &["-H", "CDN-Loop: video-cdn, video-cdn, video-cdn, video-cdn"],
        &[
            "-H",
            "CDN-Loop: Video-CDN; a=1",
            "-H",
            "cdn-loop: other, VIDEO-CDN",
            "-H",
            "CDN-LOOP: video-cdn;b=\"x, y\" ,video-cdn",
        ],
        &[
            "-H",
            "CDN-Loop: video-cdn, video-cdn, video-cdn, video-cdn",
            "-H",
            "Connection: cdn-loop",
        ],
    ];
    for spelling in spellings {
        let r = shield.get(0, "/v/seg.ts", spelling);
        assert_eq!(r.status, 508, "{spelling:?}: {}", r.text());
        assert!(r.text().contains("loop detected"), "{}", r.text());
        assert_eq!(cache_statuses(&r), ["child-0; detail=local"]);
    }
    let refused = metric(&shield.children[0], "edge_loops_refused_total", &[]);
    assert_eq!(refused, 3.0);
    // A quoted string left open would hide the hops appended after it: refused too.
    let open = shield.get(0, "/v/seg.ts", &["-H", "CDN-Loop: other; x=\"a, video-cdn"]);
    assert_eq!(open.status, 400, "{}", open.text());
    shield.assert_origin_gets(0);

    // Three hops pass the child, which adds its own: the parent refuses that one request with 508, which the
    // client gets — and the parent is not taken out for it (a client cannot switch the shield off).
    let r = shield.get(
        1,
        "/v/seg.ts",
        &["-H", "CDN-Loop: video-cdn, video-cdn, video-cdn"],
    );
    assert_eq!(r.status, 508, "{}", r.text());
    for url in &shield.parent_urls {
        assert_eq!(parent_up(&shield.children[1], url), 1.0);
    }
    shield.assert_origin_gets(0);
    // Two hops are fine: child and parent add theirs on the way.
    let r = shield.get(1, "/v/seg.ts", &["-H", "CDN-Loop: video-cdn, video-cdn"]);
    assert_eq!(r.status, 200, "{}", r.text());
    shield.assert_origin_gets(1);
}

#[test]
fn each_tier_adds_its_hop_on_the_way_to_the_origin() {
    let origin = ScriptedOrigin::start(|_| {
        Scripted::ok(b"segment".to_vec()).header("Cache-Control", "public, max-age=60")
    });
    let certs = TestCerts::generate();
    let (pdir, cdir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let parent = start_edge(
        &origin.url(),
        pdir.path(),
        &certs,
        &format!("name = \"parent\"\n{SMALL}"),
    );
    let child = start_edge(
        &origin.url(),
        cdir.path(),
        &certs,
        &format!(
            "name = \"child\"\n{SMALL}[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{}\"\n\
             parents = [\"{}\"]\n",
            origin.url(),
            parent.url("http_addr")
        ),
    );
    let base = child.url("http_addr");
    // Naming the field in `Connection` does not take the client's hops off.
    let r = curl(&[
        "-H",
        "CDN-Loop: other-cdn; v=2",
        "-H",
        "Connection: keep-alive, cdn-loop",
        &format!("{base}/a.ts"),
    ]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = origin.requests_for("/a.ts");
    assert_eq!(seen.len(), 1, "one fetch");
    // The client's hop, the child's, then the parent's (RFC 8586: each appends its own).
    assert_eq!(
        seen[0].header("cdn-loop"),
        Some("other-cdn; v=2, video-cdn, video-cdn")
    );
    // The parent answered it as the same site (the child sent the site's host), and the origin was asked
    // for its own address.
    assert_eq!(
        seen[0].header("host"),
        Some(origin.addr.to_string().as_str())
    );
    let parent_misses = [("method", "GET"), ("cache_status", "miss")];
    assert_eq!(
        metric(&parent, "edge_http_requests_total", &parent_misses),
        1.0
    );
    // A pass (a request with credentials) goes to the origin directly, with the child's hop only.
    let r = curl(&["-H", "Authorization: Bearer x", &format!("{base}/b.ts")]);
    assert_eq!(r.status, 200);
    let seen = origin.requests_for("/b.ts");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("cdn-loop"), Some("video-cdn"));
    assert_eq!(
        cache_statuses(&r),
        ["child; fwd=request; detail=authorization"]
    );
}
