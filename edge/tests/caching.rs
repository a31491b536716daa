//! HTTP caching semantics end to end (RFC 9111, 9213, 5861, 9211): a scripted origin sets the response headers
//! per request and counts what reaches it; curl talks to the edge over TLS with HTTP/1.1 and HTTP/2. Each
//! scenario runs once per protocol on its own paths (`/h1/…`, `/h2/…`), so both start cold.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use testkit::{
    CurlResponse, Scripted, ScriptedOrigin, SeenRequest, ServerProcess, TestCerts, curl, start_edge,
};

const PROTOCOLS: [(&str, &str); 2] = [("--http1.1", "h1"), ("--http2", "h2")];
const TOKEN: &str = "purge-token-0123456789";

struct Fixture {
    origin: ScriptedOrigin,
    certs: TestCerts,
    dir: tempfile::TempDir,
    edge: ServerProcess,
}

impl Fixture {
    fn start(
        script: impl Fn(&SeenRequest) -> Scripted + Send + Sync + 'static,
        extra: &str,
    ) -> Fixture {
        let origin = ScriptedOrigin::start(script);
        let certs = TestCerts::generate();
        let dir = tempfile::tempdir().unwrap();
        let extra = format!("[admin]\nbearer_token = \"{TOKEN}\"\ntest_clock = true\n{extra}")
            .replace("{upstream}", &origin.url());
        let edge = start_edge(&origin.url(), dir.path(), &certs, &extra);
        Fixture {
            origin,
            certs,
            dir,
            edge,
        }
    }

    /// Stops the edge and starts it again on the same cache and data folders.
    fn restart(self) -> Fixture {
        let Fixture {
            origin,
            certs,
            dir,
            edge,
        } = self;
        assert!(edge.stop(), "the edge stops cleanly");
        let extra = format!("[admin]\nbearer_token = \"{TOKEN}\"\n");
        let edge = start_edge(&origin.url(), dir.path(), &certs, &extra);
        Fixture {
            origin,
            certs,
            dir,
            edge,
        }
    }

    /// GET (or what `args` say) `path` over TLS with `proto` (`--http1.1`, `--http2`).
    fn get(&self, proto: &str, path: &str, args: &[&str]) -> CurlResponse {
        let ca = self.certs.ca();
        let url = format!(
            "https://localhost:{}{path}",
            self.edge.addr("tls_addr").port()
        );
        let mut all = vec![proto, "--cacert", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push(&url);
        let response = curl(&all);
        let want = if proto == "--http2" { "2" } else { "1.1" };
        assert_eq!(response.http_version, want, "{path}");
        response
    }

    fn admin(&self, args: &[&str], path: &str) -> CurlResponse {
        let url = format!("{}{path}", self.edge.url("admin_addr"));
        let mut all = args.to_vec();
        all.push(&url);
        curl(&all)
    }

    /// Moves the edge's clock forward: what it stored ages by `secs` (no sleeping).
    fn advance_clock(&self, secs: u64) {
        testkit::advance_clock(&self.edge, TOKEN, secs);
    }

    fn purge(&self, json: &str) -> CurlResponse {
        let auth = format!("Authorization: Bearer {TOKEN}");
        self.admin(&["-X", "POST", "-H", &auth, "-d", json], "/purge")
    }

    fn metrics(&self) -> String {
        let auth = format!("Authorization: Bearer {TOKEN}");
        self.admin(&["-H", &auth], "/metrics").text()
    }
}

/// The route of a test path: `/h1/p/x` → `/p/x`.
fn route(path: &str) -> &str {
    let rest = path.trim_start_matches('/');
    rest.find('/').map_or("/", |i| &rest[i..])
}

fn status(r: &CurlResponse) -> String {
    r.header("cache-status").unwrap_or("").to_string()
}

fn ttl(r: &CurlResponse) -> i64 {
    let status = status(r);
    let value = status
        .split("; ")
        .find_map(|p| p.strip_prefix("ttl="))
        .unwrap_or_else(|| panic!("no ttl in {status}"));
    value.parse().unwrap()
}

fn http_date(offset_secs: i64) -> String {
    let now = SystemTime::now();
    let t = if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    };
    shared::conditional::format_http_date(t)
}

/// A counter in every body, so a response from cache can be told from a new one.
fn counting() -> impl Fn() -> String + Send + Sync + Clone {
    let n = Arc::new(AtomicUsize::new(0));
    move || format!("body {}", n.fetch_add(1, Ordering::SeqCst))
}

#[test]
fn what_is_stored_follows_rfc9111_section_3() {
    let next = counting();
    let modified = http_date(-1000);
    let f = Fixture::start(
        move |req| {
            let body = next();
            let ok = || Scripted::ok(body.clone());
            match route(&req.path) {
                "/no-store" => ok().header("Cache-Control", "no-store, max-age=60"),
                "/private" => ok().header("Cache-Control", "private, max-age=60"),
                "/must-understand" => {
                    ok().header("Cache-Control", "no-store, must-understand, max-age=60")
                }
                "/heuristic" => ok().header("Last-Modified", &modified),
                "/no-freshness" => ok(),
                "/missing" => Scripted::status(404, format!("not here ({body})")),
                "/moved" => Scripted::status(301, body.clone())
                    .header("Location", "/elsewhere")
                    .header("Cache-Control", "max-age=60"),
                "/found" => Scripted::status(302, body.clone()).header("Location", "/x"),
                "/error" => {
                    Scripted::status(500, body.clone()).header("Cache-Control", "max-age=60")
                }
                "/link" => ok()
                    .header("Cache-Control", "max-age=60")
                    .header("Link", "</a.ts>; rel=preload"),
                "/no-cache-link" => ok()
                    .header("Cache-Control", "no-cache=\"Link\", max-age=60")
                    .header("Link", "</a.ts>; rel=preload"),
                _ => Scripted::status(400, "unknown route"),
            }
        },
        "",
    );
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        // (route, status, stored: second response from cache, Cache-Status of the first without ttl)
        let table: &[(&str, u16, bool, &str)] = &[
            (
                "/no-store",
                200,
                false,
                "edge-test; fwd=uri-miss; detail=no-store",
            ),
            (
                "/private",
                200,
                false,
                "edge-test; fwd=uri-miss; detail=private",
            ),
            (
                "/must-understand",
                200,
                true,
                "edge-test; fwd=uri-miss; stored",
            ),
            ("/heuristic", 200, true, "edge-test; fwd=uri-miss; stored"),
            (
                "/no-freshness",
                200,
                false,
                "edge-test; fwd=uri-miss; detail=no-freshness",
            ),
            ("/missing", 404, true, "edge-test; fwd=uri-miss; stored"),
            ("/moved", 301, true, "edge-test; fwd=uri-miss; stored"),
            (
                "/found",
                302,
                false,
                "edge-test; fwd=uri-miss; detail=no-freshness",
            ),
            (
                "/error",
                500,
                false,
                "edge-test; fwd=uri-miss; detail=status",
            ),
            ("/link", 200, true, "edge-test; fwd=uri-miss; stored"),
        ];
        for &(r, code, stored, first_status) in table {
            let first = f.get(proto, &path(r), &[]);
            assert_eq!(first.status, code, "{r}");
            assert_eq!(first.cache_status(), Some(first_status), "{r}");
            let second = f.get(proto, &path(r), &[]);
            assert_eq!(second.status, code, "{r}");
            let upstream = f.origin.count(&path(r));
            if stored {
                assert!(
                    status(&second).starts_with("edge-test; hit; ttl="),
                    "{r}: {}",
                    status(&second)
                );
                assert_eq!(second.body, first.body, "{r}: the stored body");
                assert_eq!(upstream, 1, "{r}");
            } else {
                assert_ne!(second.body, first.body, "{r}: a new response each time");
                // One upstream request per client request: the first learns from its fill's answer that it is
                // not storable and streams that answer; the next goes straight upstream ("hit-for-pass").
                assert_eq!(upstream, 2, "{r}");
                assert!(
                    status(&second).starts_with("edge-test; fwd=uri-miss; detail="),
                    "{r}"
                );
            }
        }
        // Stored responses keep their fields: Location on the 301, Link unless no-cache="Link" names it.
        assert_eq!(
            f.get(proto, &path("/moved"), &[]).header("location"),
            Some("/elsewhere")
        );
        assert!(
            f.get(proto, &path("/missing"), &[])
                .text()
                .starts_with("not here")
        );
        assert_eq!(
            f.get(proto, &path("/link"), &[]).header("link"),
            Some("</a.ts>; rel=preload")
        );
        f.get(proto, &path("/no-cache-link"), &[]);
        let hit = f.get(proto, &path("/no-cache-link"), &[]);
        assert!(status(&hit).contains("; hit;"), "{}", status(&hit));
        assert_eq!(
            hit.header("link"),
            None,
            "no-cache=\"Link\": stored without it"
        );
        // The heuristic: 10 % of the time since Last-Modified (1000 s when the test began, a little more now).
        let heuristic = f.get(proto, &path("/heuristic"), &[]);
        assert!(
            (95..=110).contains(&ttl(&heuristic)),
            "{}",
            status(&heuristic)
        );
    }
}

#[test]
fn freshness_age_and_stale_serving_follow_section_4() {
    let next = counting();
    let failing = Arc::new(AtomicUsize::new(0));
    let failing_script = Arc::clone(&failing);
    let f = Fixture::start(
        move |req| {
            let body = next();
            let ok = || Scripted::ok(body.clone()).header("ETag", "\"v1\"");
            let r = route(&req.path);
            if failing_script.load(Ordering::SeqCst) == 1 && r.starts_with("/short") {
                return Scripted::status(503, "down").raw();
            }
            match r {
                "/age" => ok()
                    .header("Cache-Control", "max-age=160")
                    .header("Age", "100"),
                "/expires" => ok()
                    .header("Expires", &http_date(60))
                    .header("Date", &http_date(0)),
                "/bad-expires" => ok().header("Expires", "0"),
                "/s-maxage" => ok().header("Cache-Control", "max-age=0, s-maxage=60"),
                "/cdn" => ok()
                    .header("Cache-Control", "no-store")
                    .header("CDN-Cache-Control", "max-age=60"),
                "/no-cache" => ok().header("Cache-Control", "no-cache"),
                "/short-must-revalidate" => {
                    ok().header("Cache-Control", "max-age=1, must-revalidate")
                }
                "/short-stale-if-error" => ok().header("Cache-Control", "max-age=1"),
                // After the first phase the same version (ETag v1) has new fields: a 304 brings them (§3.2).
                "/refresh" if failing_script.load(Ordering::SeqCst) == 0 => ok()
                    .header("Cache-Control", "max-age=1")
                    .header("Link", "</v1>"),
                "/refresh" => ok()
                    .header("Cache-Control", "max-age=600")
                    .header("Link", "</v2>"),
                _ => Scripted::status(400, "unknown route"),
            }
        },
        "",
    );
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        // Age: the upstream's Age counts (RFC 9111 §4.2.3), and the edge's Age header includes it.
        let first = f.get(proto, &path("/age"), &[]);
        let age: u64 = first.header("age").unwrap().parse().unwrap();
        assert!((100..=102).contains(&age), "age {age}");
        assert!((58..=60).contains(&ttl(&first)), "{}", status(&first));
        let hit = f.get(proto, &path("/age"), &[]);
        assert!(hit.header("age").unwrap().parse::<u64>().unwrap() >= 100);

        let expires = f.get(proto, &path("/expires"), &[]);
        assert!((58..=60).contains(&ttl(&expires)), "{}", status(&expires));
        // An invalid Expires means already stale: stored, but revalidated on the next request.
        f.get(proto, &path("/bad-expires"), &[]);
        let again = f.get(proto, &path("/bad-expires"), &[]);
        assert!(
            status(&again).starts_with("edge-test; fwd=stale; fwd-status=304"),
            "{}",
            status(&again)
        );
        assert_eq!(
            f.origin.requests_for(&path("/bad-expires"))[1].header("if-none-match"),
            Some("\"v1\"")
        );
        // s-maxage wins over max-age for a shared cache.
        f.get(proto, &path("/s-maxage"), &[]);
        assert!(status(&f.get(proto, &path("/s-maxage"), &[])).contains("; hit;"));
        // CDN-Cache-Control overrides Cache-Control for the edge and is not passed on.
        f.get(proto, &path("/cdn"), &[]);
        let cdn = f.get(proto, &path("/cdn"), &[]);
        assert!(status(&cdn).contains("; hit;"), "{}", status(&cdn));
        assert_eq!(cdn.header("cache-control"), Some("no-store"));
        assert_eq!(cdn.header("cdn-cache-control"), None);
        // no-cache: stored, validated before every use.
        f.get(proto, &path("/no-cache"), &[]);
        for _ in 0..2 {
            let r = f.get(proto, &path("/no-cache"), &[]);
            assert!(
                status(&r).starts_with("edge-test; fwd=stale; fwd-status=304"),
                "{}",
                status(&r)
            );
        }
        assert_eq!(f.origin.count(&path("/no-cache")), 3);
        f.get(proto, &path("/short-must-revalidate"), &[]);
        f.get(proto, &path("/short-stale-if-error"), &[]);
        f.get(proto, &path("/refresh"), &[]);
    }
    // Both versions go stale, and the upstream fails (503).
    f.advance_clock(2);
    failing.store(1, Ordering::SeqCst);
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        let fallback = f.get(proto, &path("/short-stale-if-error"), &[]);
        assert_eq!(fallback.status, 200);
        assert!(
            status(&fallback).ends_with("detail=stale-if-error"),
            "{}",
            status(&fallback)
        );
        // must-revalidate: never served stale, an error instead (RFC 9111 §5.2.2.2).
        let refused = f.get(proto, &path("/short-must-revalidate"), &[]);
        assert_eq!(refused.status, 502, "{}", refused.text());
        assert!(refused.text().contains("503"), "{}", refused.text());
        // A 304 updates the stored fields and freshness, and keeps the body.
        let refreshed = f.get(proto, &path("/refresh"), &[]);
        assert!(
            status(&refreshed).starts_with("edge-test; fwd=stale; fwd-status=304"),
            "{}",
            status(&refreshed)
        );
        let hit = f.get(proto, &path("/refresh"), &[]);
        assert!(
            status(&hit).contains("; hit;") && ttl(&hit) > 590,
            "{}",
            status(&hit)
        );
        assert_eq!(
            (hit.header("link"), hit.header("cache-control")),
            (Some("</v2>"), Some("max-age=600"))
        );
        assert_eq!(hit.body, refreshed.body);
        // …nor with a client's max-stale.
        let refused = f.get(
            proto,
            &path("/short-must-revalidate"),
            &["-H", "Cache-Control: max-stale=60"],
        );
        assert_eq!(refused.status, 502);
    }
}

#[test]
fn client_request_directives_follow_the_documented_policy() {
    let next = counting();
    let script = move |req: &SeenRequest| {
        let body = next();
        let ok = || Scripted::ok(body.clone()).header("ETag", "\"v1\"");
        match route(&req.path) {
            "/obj" | "/fresh-miss" => ok().header("Cache-Control", "max-age=60"),
            "/short" => ok().header("Cache-Control", "max-age=1"),
            "/short-mr" => ok().header("Cache-Control", "max-age=1, must-revalidate"),
            _ => Scripted::status(404, "unknown route"),
        }
    };
    // Default policy, `ignore`: the edge protects the origin from no-cache and max-age=0.
    let f = Fixture::start(script.clone(), "");
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        f.get(proto, &path("/obj"), &[]);
        for directive in [
            "Cache-Control: no-cache",
            "Cache-Control: max-age=0",
            "Pragma: no-cache",
        ] {
            let r = f.get(proto, &path("/obj"), &["-H", directive]);
            assert!(status(&r).contains("; hit;"), "{directive}: {}", status(&r));
        }
        assert_eq!(f.origin.count(&path("/obj")), 1);
        // only-if-cached: from cache, or 504 without going upstream.
        let cached = f.get(
            proto,
            &path("/obj"),
            &["-H", "Cache-Control: only-if-cached"],
        );
        assert_eq!(cached.status, 200);
        let not_cached = f.get(
            proto,
            &path("/fresh-miss"),
            &["-H", "Cache-Control: only-if-cached"],
        );
        assert_eq!(not_cached.status, 504);
        assert_eq!(status(&not_cached), "edge-test; detail=only-if-cached");
        assert_eq!(f.origin.count(&path("/fresh-miss")), 0);
        f.get(proto, &path("/short"), &[]);
        f.get(proto, &path("/short-mr"), &[]);
    }
    f.advance_clock(2);
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        // max-stale: a stale copy is accepted without going upstream…
        let stale = f.get(
            proto,
            &path("/short"),
            &["-H", "Cache-Control: max-stale=60"],
        );
        assert!(
            status(&stale).ends_with("detail=max-stale"),
            "{}",
            status(&stale)
        );
        assert!(ttl(&stale) < 0);
        assert_eq!(f.origin.count(&path("/short")), 1);
        // …but not one that must be revalidated.
        let mr = f.get(
            proto,
            &path("/short-mr"),
            &["-H", "Cache-Control: max-stale"],
        );
        assert!(
            status(&mr).starts_with("edge-test; fwd=stale; fwd-status=304"),
            "{}",
            status(&mr)
        );
    }
    let log = f.edge.log_events("access");
    assert!(log.iter().any(|e| e["cache_status"] == "not_cached"));

    // Policy `honor`: no-cache and max-age=0 revalidate (fwd=request); no-store is not stored.
    let f = Fixture::start(script, "[cache]\nclient_directives = \"honor\"\n");
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        f.get(proto, &path("/obj"), &[]);
        for directive in [
            "Cache-Control: no-cache",
            "Cache-Control: max-age=0",
            "Pragma: no-cache",
        ] {
            let r = f.get(proto, &path("/obj"), &["-H", directive]);
            assert!(
                status(&r).starts_with("edge-test; fwd=request; fwd-status=304"),
                "{directive}: {}",
                status(&r)
            );
        }
        assert!(
            status(&f.get(proto, &path("/obj"), &["-H", "Cache-Control: max-age=30"]))
                .contains("; hit;")
        );
        let r = f.get(
            proto,
            &path("/fresh-miss"),
            &["-H", "Cache-Control: no-store"],
        );
        assert_eq!(status(&r), "edge-test; fwd=request; detail=no-store");
        let r = f.get(proto, &path("/fresh-miss"), &[]);
        assert_eq!(
            r.cache_status(),
            Some("edge-test; fwd=uri-miss; stored"),
            "not stored before"
        );
    }
    assert!(
        f.metrics()
            .contains("edge_cache_forwarded_total{fwd=\"request\"} 8"),
        "{}",
        f.metrics()
    );
}

#[test]
fn variants_are_selected_by_the_normalised_vary_fields() {
    let f = Fixture::start(
        |req| match route(&req.path) {
            "/encoded" => {
                let gzip = req.header("accept-encoding") == Some("gzip");
                let r = Scripted::ok(if gzip { "gzip bytes" } else { "plain bytes" })
                    .header("Cache-Control", "max-age=60")
                    .header("Vary", "Accept-Encoding");
                if gzip {
                    r.header("Content-Encoding", "gzip")
                } else {
                    r
                }
            }
            "/language" => {
                let lang = req.header("accept-language").unwrap_or("none").to_string();
                Scripted::ok(format!("in {lang}"))
                    .header("Cache-Control", "max-age=60")
                    .header("Vary", "Accept-Language")
            }
            "/star" => Scripted::ok("any")
                .header("Cache-Control", "max-age=60")
                .header("Vary", "*"),
            _ => Scripted::status(404, "unknown route"),
        },
        "[cache]\nmax_variants = 3\n",
    );
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        let get = |r: &str, args: &[&str]| f.get(proto, &path(r), args);
        let gzip = get("/encoded", &["-H", "Accept-Encoding: gzip, deflate"]);
        assert_eq!(
            (gzip.text().as_str(), gzip.header("content-encoding")),
            ("gzip bytes", Some("gzip"))
        );
        assert_eq!(gzip.cache_status(), Some("edge-test; fwd=uri-miss; stored"));
        // The same preferred coding, written differently: the same variant.
        let same = get("/encoded", &["-H", "Accept-Encoding: deflate, GZIP;q=0.8"]);
        assert!(status(&same).contains("; hit;"), "{}", status(&same));
        assert_eq!(same.text(), "gzip bytes");
        assert_eq!(same.header("vary"), Some("Accept-Encoding"));
        // Another coding preference: another variant.
        let plain = get("/encoded", &["-H", "Accept-Encoding: identity"]);
        assert_eq!(plain.text(), "plain bytes");
        assert_eq!(plain.header("content-encoding"), None);
        assert_eq!(
            plain.cache_status(),
            Some("edge-test; fwd=vary-miss; stored")
        );
        let plain = get("/encoded", &[]);
        assert!(
            status(&plain).contains("; hit;"),
            "no Accept-Encoding is identity too: {}",
            status(&plain)
        );
        assert_eq!(plain.text(), "plain bytes");
        assert_eq!(
            get("/encoded", &["-H", "Accept-Encoding: gzip"]).text(),
            "gzip bytes"
        );
        assert_eq!(f.origin.count(&path("/encoded")), 2);

        // A cap of 3 variants per URL: the oldest secondary one is dropped for a fourth.
        for lang in ["en", "fr", "de"] {
            let r = get("/language", &["-H", &format!("Accept-Language: {lang}")]);
            assert_eq!(r.text(), format!("in {lang}"));
        }
        for lang in ["en", "fr", "de"] {
            let r = get("/language", &["-H", &format!("Accept-Language: {lang}")]);
            assert!(status(&r).contains("; hit;"), "{lang}: {}", status(&r));
        }
        get("/language", &["-H", "Accept-Language: nl"]);
        let fr = get("/language", &["-H", "Accept-Language: fr"]);
        assert_eq!(
            fr.cache_status(),
            Some("edge-test; fwd=vary-miss; stored"),
            "dropped by the cap"
        );
        let en = get("/language", &["-H", "Accept-Language: en"]);
        assert!(
            status(&en).contains("; hit;"),
            "the primary stays: {}",
            status(&en)
        );

        // Vary: * never matches: not stored.
        get("/star", &[]);
        let star = get("/star", &[]);
        assert_eq!(status(&star), "edge-test; fwd=uri-miss; detail=vary-star");
    }
    assert!(
        f.metrics()
            .contains("edge_cache_forwarded_total{fwd=\"vary-miss\"} 10"),
        "{}",
        f.metrics()
    );
    let log = f.edge.log_events("access");
    assert!(log.iter().any(|e| e["fwd"] == "vary-miss"));
}

#[test]
fn unsafe_requests_invalidate_the_uri_and_its_locations() {
    let next = counting();
    let f = Fixture::start(
        move |req| {
            let body = next();
            match (req.method.as_str(), route(&req.path)) {
                ("POST", "/items/a") => Scripted::status(201, "created")
                    .header("Location", "/h1/items/b")
                    .header("Content-Location", "https://localhost/h1/items/c"),
                ("POST", "/items/foreign") => Scripted::status(200, "ok")
                    .header("Location", "https://elsewhere.example/h1/items/d"),
                ("DELETE", "/items/e") => Scripted::status(500, "failed"),
                ("PUT", _) | ("DELETE", _) | ("PATCH", _) => Scripted::status(204, ""),
                ("GET", _) => Scripted::ok(body).header("Cache-Control", "max-age=60"),
                _ => Scripted::status(405, "no"),
            }
        },
        "",
    );
    for (proto, _) in PROTOCOLS {
        let get = |r: &str| f.get(proto, &format!("/h1{r}"), &[]);
        for r in [
            "/items/a", "/items/b", "/items/c", "/items/d", "/items/e", "/items/f",
        ] {
            get(r);
            assert!(status(&get(r)).contains("; hit;"), "{r}");
        }
        // A successful POST is forwarded with its body and invalidates the URI, Location and Content-Location.
        let post = f.get(
            proto,
            "/h1/items/a",
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: text/plain",
                "-d",
                "hello",
            ],
        );
        assert_eq!((post.status, post.text().as_str()), (201, "created"));
        assert_eq!(status(&post), "edge-test; fwd=request; detail=method");
        let seen = f
            .origin
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.method == "POST")
            .unwrap();
        assert_eq!(
            (seen.body.as_slice(), seen.header("content-type")),
            (&b"hello"[..], Some("text/plain"))
        );
        for r in ["/items/a", "/items/b", "/items/c"] {
            assert_eq!(
                get(r).cache_status(),
                Some("edge-test; fwd=uri-miss; stored"),
                "{r}"
            );
        }
        // A Location on another host invalidates nothing there; a failed unsafe request nothing at all.
        f.get(proto, "/h1/items/foreign", &["-X", "POST", "-d", "x"]);
        assert!(status(&get("/items/d")).contains("; hit;"));
        assert_eq!(f.get(proto, "/h1/items/e", &["-X", "DELETE"]).status, 500);
        assert!(status(&get("/items/e")).contains("; hit;"));
        for method in ["PUT", "PATCH", "DELETE"] {
            assert_eq!(
                f.get(proto, "/h1/items/f", &["-X", method, "-d", "x"])
                    .status,
                204
            );
            assert_eq!(
                get("/items/f").cache_status(),
                Some("edge-test; fwd=uri-miss; stored"),
                "{method}"
            );
        }
    }
    // A body over the limit is refused before anything goes upstream.
    let big = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(big.path(), vec![b'x'; 1_100_000]).unwrap();
    let data = format!("@{}", big.path().display());
    let before = f.origin.requests().len();
    let refused = f.get(
        "--http2",
        "/h1/items/a",
        &["-X", "POST", "--data-binary", &data],
    );
    assert_eq!(refused.status, 413);
    assert_eq!(f.origin.requests().len(), before);
    assert!(
        f.metrics().contains("edge_cache_invalidations_total 14"),
        "{}",
        f.metrics()
    );
}

#[test]
fn bypass_paths_and_authorization_go_upstream() {
    let next = counting();
    let origin_script = move |req: &SeenRequest| {
        Scripted::ok(format!("{} for {:?}", next(), req.header("authorization")))
            .header("Cache-Control", "public, max-age=60")
    };
    let site = "[[site]]\nhosts = [\"localhost\"]\nupstream = \"{upstream}\"\nbypass_paths = [\"/api/\"]\n";
    let f = Fixture::start(origin_script, site);
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        let bypassed = format!("/api/{tag}");
        for _ in 0..2 {
            let r = f.get(proto, &bypassed, &[]);
            assert_eq!(status(&r), "edge-test; fwd=bypass");
        }
        assert_eq!(f.origin.count(&bypassed), 2);
        // RFC 9111 §3.5 lets a shared cache store some answers to requests with Authorization; this edge
        // never does, and forwards the credentials.
        f.get(proto, &path("/doc"), &[]);
        for _ in 0..2 {
            let r = f.get(proto, &path("/doc"), &["-H", "Authorization: Bearer abc"]);
            assert_eq!(status(&r), "edge-test; fwd=request; detail=authorization");
            assert!(
                r.text().ends_with("for Some(\"Bearer abc\")"),
                "{}",
                r.text()
            );
        }
        assert!(
            status(&f.get(proto, &path("/doc"), &[])).contains("; hit;"),
            "the stored copy is untouched"
        );
    }
    assert!(
        f.metrics()
            .contains("edge_cache_forwarded_total{fwd=\"bypass\"} 4")
    );
}

#[test]
fn purges_by_url_prefix_and_tag_are_bans_that_survive_a_restart() {
    let f = Fixture::start(
        |req| {
            let tag = if req.path.contains("/t1/") {
                "title-1 all"
            } else {
                "all"
            };
            Scripted::ok(format!("{} at {:?}", req.path, SystemTime::now()))
                .header("Cache-Control", "max-age=600")
                .header("ETag", "\"v1\"")
                .header("Surrogate-Key", tag)
        },
        "",
    );
    let host = format!("https://localhost:{}", f.edge.addr("tls_addr").port());
    for (proto, tag) in PROTOCOLS {
        let path = |r: &str| format!("/{tag}{r}");
        let hit = |r: &str| status(&f.get(proto, &path(r), &[])).contains("; hit;");
        for r in ["/t1/a.ts", "/t1/b.ts", "/t2/a.ts", "/t2/b.ts", "/t3/a.ts"] {
            f.get(proto, &path(r), &[]);
            assert!(hit(r));
        }
        // Hard, by URL: the next request is a miss.
        let purge = f.purge(&format!("{{\"url\": \"{host}{}\"}}", path("/t2/a.ts")));
        assert_eq!(purge.status, 200, "{}", purge.text());
        assert!(
            purge.text().contains("\"kind\":\"url\""),
            "{}",
            purge.text()
        );
        assert_eq!(
            f.get(proto, &path("/t2/a.ts"), &[]).cache_status(),
            Some("edge-test; fwd=uri-miss; stored")
        );
        // Soft, by URL: stale, so the next request revalidates (304) and keeps the body.
        let before = f.get(proto, &path("/t2/b.ts"), &[]).text();
        let purge = f.purge(&format!(
            "{{\"url\": \"{host}{}\", \"soft\": true}}",
            path("/t2/b.ts")
        ));
        assert_eq!(purge.status, 200);
        let soft = f.get(proto, &path("/t2/b.ts"), &[]);
        assert!(
            status(&soft).starts_with("edge-test; fwd=stale; fwd-status=304"),
            "{}",
            status(&soft)
        );
        assert_eq!(soft.text(), before);
        assert!(hit("/t2/b.ts"));
        // By tag (Surrogate-Key): only the versions carrying it.
        assert_eq!(f.purge("{\"tag\": \"title-1\"}").status, 200);
        assert!(!hit("/t1/a.ts") && hit("/t1/a.ts"));
        assert!(hit("/t3/a.ts"));
        // By prefix.
        assert_eq!(
            f.purge(&format!("{{\"prefix\": \"{host}{}\"}}", path("/t3/")))
                .status,
            200
        );
        assert!(!hit("/t3/a.ts"));
        assert!(hit("/t2/a.ts"));
    }
    // Bad or unauthenticated purges are refused with a reason.
    let refused = f.admin(&["-X", "POST", "-d", "{\"tag\": \"x\"}"], "/purge");
    assert_eq!(refused.status, 401);
    let wrong = f.admin(
        &[
            "-X",
            "POST",
            "-H",
            "Authorization: Bearer wrong-token-xxxxxxxx",
            "-d",
            "{}",
        ],
        "/purge",
    );
    assert_eq!(wrong.status, 401);
    for (body, reason) in [
        ("not json", "must be JSON"),
        ("{}", "exactly one of"),
        ("{\"url\": \"/relative\"}", "must be absolute"),
        (
            "{\"url\": \"https://unknown.example/x\"}",
            "no site for host `unknown.example`",
        ),
        ("{\"tag\": \"two words\"}", "is not a tag"),
        (
            "{\"tag\": \"x\", \"prefix\": \"https://localhost/\"}",
            "exactly one of",
        ),
        (
            "{\"url\": \"https://localhost/x\", \"mode\": \"soft\"}",
            "unknown field `mode`",
        ),
    ] {
        let r = f.purge(body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.text().contains(reason), "{body}: {}", r.text());
    }
    let auth = format!("Authorization: Bearer {TOKEN}");
    let bans = f.admin(&["-H", &auth], "/bans").text();
    assert!(bans.contains("\"pattern\":\"title-1\""), "{bans}");
    let metrics = f.metrics();
    for line in [
        "edge_cache_purges_total{kind=\"url\",mode=\"hard\"} 2",
        "edge_cache_purges_total{kind=\"url\",mode=\"soft\"} 2",
        "edge_cache_purges_total{kind=\"tag\",mode=\"hard\"} 2",
        "edge_cache_purges_total{kind=\"prefix\",mode=\"hard\"} 2",
        "edge_cache_bans{kind=\"prefix\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }

    // A prefix ban issued before a restart: the stored versions it covers are still not served after it.
    let get = |f: &Fixture, r: &str| f.get("--http1.1", r, &[]);
    get(&f, "/h1/t4/a.ts");
    assert!(status(&get(&f, "/h1/t4/a.ts")).contains("; hit;"));
    assert!(status(&get(&f, "/h1/t5/a.ts")).contains("; fwd=uri-miss"));
    assert_eq!(
        f.purge(&format!("{{\"prefix\": \"{host}/h1/t4/\"}}"))
            .status,
        200
    );
    let f = f.restart();
    assert!(
        status(&get(&f, "/h1/t5/a.ts")).contains("; hit;"),
        "the disk cache survived the restart"
    );
    assert_eq!(
        get(&f, "/h1/t4/a.ts").cache_status(),
        Some("edge-test; fwd=uri-miss; stored"),
        "so did the ban"
    );
}

#[test]
fn client_conditionals_are_answered_from_cache() {
    let f = Fixture::start(
        |_| {
            Scripted::ok("0123456789")
                .header("Cache-Control", "max-age=600")
                .header("ETag", "\"v1\"")
                .header("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")
        },
        "",
    );
    for (proto, tag) in PROTOCOLS {
        let path = format!("/{tag}/c.ts");
        let get = |args: &[&str]| f.get(proto, &path, args);
        get(&[]);
        let table: &[(&[&str], u16, &str)] = &[
            (&["-H", "If-None-Match: W/\"v1\""], 304, ""), // weak comparison
            (&["-H", "If-None-Match: \"v0\", \"v1\""], 304, ""),
            (&["-H", "If-None-Match: \"v2\""], 200, "0123456789"),
            (
                &["-H", "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT"],
                304,
                "",
            ),
            (
                &["-H", "If-Modified-Since: Sun, 06 Nov 1994 08:49:36 GMT"],
                200,
                "0123456789",
            ),
            (&["-H", "If-Range: \"v1\"", "-r", "2-4"], 206, "234"),
            (&["-H", "If-Range: \"v0\"", "-r", "2-4"], 200, "0123456789"),
            (
                &["-H", "If-Range: W/\"v1\"", "-r", "2-4"],
                200,
                "0123456789",
            ), // If-Range needs a strong match
            (&["-H", "If-Match: \"v2\""], 412, "precondition failed\n"),
        ];
        for (args, code, body) in table {
            let r = get(args);
            assert_eq!((r.status, r.text().as_str()), (*code, *body), "{args:?}");
            assert!(status(&r).contains("; hit;"), "{args:?}: {}", status(&r));
        }
        assert_eq!(f.origin.count(&path), 1, "all from cache");
    }
}
