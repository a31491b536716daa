//! CMSD out (CTA-5006, issue 19) at a real edge over TLS with curl: `CMSD-Static` names the object type (from
//! the path, or the player's CMCD `ot`), the streaming format, a live stream type for blocking playlist
//! requests, and `cdn-prefetched` on the first use of a segment the edge prefetched; `CMSD-Dynamic` carries the
//! edge's name with its throughput and round-trip estimate from the TCP connection (over HTTP/3, aioquic: from the
//! QUIC path); `[cmsd]` turns each off.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use testkit::TestEdge as Edge;
use testkit::{CurlResponse, H3Client, Scripted, ScriptedOrigin, h3_get};

const PLAYLIST: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
    #EXTINF:2.0,\nseg0.m4s\n#EXTINF:2.0,\nseg1.m4s\n#EXTINF:2.0,\nseg2.m4s\n#EXT-X-ENDLIST\n";

fn origin() -> ScriptedOrigin {
    ScriptedOrigin::start(|req| {
        let path = req.path.split('?').next().unwrap_or_default();
        let body: Vec<u8> = if path.ends_with(".m3u8") {
            PLAYLIST.into()
        } else {
            vec![b'x'; 40_000]
        };
        Scripted::ok(body)
            .header("Cache-Control", "max-age=600")
            .header("ETag", &format!("\"{}\"", path.len()))
    })
}

/// The edge under test, and how this file asks it things.
trait Asking {
    fn get(&self, path_and_query: &str) -> CurlResponse;
    fn wait_metric(&self, name: &str, at_least: f64);
}

impl Asking for Edge {
    fn get(&self, path_and_query: &str) -> CurlResponse {
        let r = self.get_from("localhost", path_and_query, &[]);
        assert_eq!(r.status, 200, "{path_and_query}: {}", r.text());
        r
    }

    fn wait_metric(&self, name: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metric(name, &[]) < at_least {
            assert!(Instant::now() < deadline, "{name} never reached {at_least}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The parameter `name=value` of a CMSD-Dynamic item, as a number.
fn param(value: &str, name: &str) -> Option<u64> {
    value
        .split(';')
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
}

#[test]
fn cmsd_static_and_dynamic_on_answers() {
    let origin = origin();
    let edge = Edge::start(&origin.url(), "");

    let manifest = edge.get("/v/index.m3u8");
    assert_eq!(manifest.header("cmsd-static"), Some("ot=m,sf=h"));
    let dynamic = manifest.header("cmsd-dynamic").expect("CMSD-Dynamic");
    assert!(dynamic.starts_with("\"edge-test\""), "{dynamic}");
    assert!(
        param(dynamic, "etp").is_some_and(|etp| etp > 0),
        "an estimated throughput from TCP_INFO: {dynamic}"
    );
    assert!(param(dynamic, "rtt").is_some(), "{dynamic}");
    assert!(
        !dynamic.contains(";du"),
        "an idle edge is not in duress: {dynamic}"
    );

    // Over HTTP/3 (aioquic): the estimate comes from the QUIC stack's view of the path.
    let url = format!(
        "https://localhost:{}/v/index.m3u8",
        edge.process.addr("tls_addr").port()
    );
    let over_h3 = h3_get(H3Client::Aioquic, &url, &edge.certs.ca(), None).unwrap();
    assert_eq!((over_h3.status, over_h3.protocol.as_str()), (200, "h3"));
    let dynamic = &over_h3.headers["cmsd-dynamic"];
    assert!(dynamic.starts_with("\"edge-test\""), "{dynamic}");
    assert!(
        param(dynamic, "etp").is_some_and(|etp| etp > 0),
        "an estimated throughput from the QUIC path: {dynamic}"
    );
    assert!(param(dynamic, "rtt").is_some(), "{dynamic}");

    // The segment after seg0 is prefetched once the playlist is learnt; its first use says so, later ones not.
    edge.wait_metric("edge_prefetch_renditions", 1.0);
    let first = edge.get("/v/seg0.m4s");
    assert_eq!(first.header("cmsd-static"), Some("ot=av"));
    edge.wait_metric("edge_prefetch_bytes_total", 40_000.0);
    let prefetched = edge.get("/v/seg1.m4s");
    assert_eq!(
        prefetched.header("cmsd-static"),
        Some("ot=av,cdn-prefetched"),
        "cache status {:?}",
        prefetched.cache_status()
    );
    let again = edge.get("/v/seg1.m4s");
    assert_eq!(again.header("cmsd-static"), Some("ot=av"));

    // The player's CMCD says what a segment holds and that it plays live (seg2 was prefetched after seg1).
    edge.wait_metric("edge_prefetch_bytes_total", 80_000.0);
    let with_cmcd = edge.get("/v/seg2.m4s?CMCD=ot%3Da%2Cst%3Dl");
    assert_eq!(
        with_cmcd.header("cmsd-static"),
        Some("ot=a,st=l,cdn-prefetched")
    );
}

#[test]
fn cmsd_headers_turned_off() {
    let origin = origin();
    let edge = Edge::start(&origin.url(), "[cmsd]\nstatic = false\ndynamic = false\n");
    let r = edge.get("/v/index.m3u8");
    assert_eq!(r.header("cmsd-static"), None);
    assert_eq!(r.header("cmsd-dynamic"), None);
    let only_static = Edge::start(&origin.url(), "[cmsd]\ndynamic = false\n");
    let r = only_static.get("/v/seg0.m4s");
    assert_eq!(r.header("cmsd-static"), Some("ot=av"));
    assert_eq!(r.header("cmsd-dynamic"), None);
}
