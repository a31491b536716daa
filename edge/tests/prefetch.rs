//! Prefetch at a real edge (issue 19): players fetch renditions segment by segment over TLS with curl, and the
//! segment after each one served is already cached when they ask for it — HLS, DASH `SegmentTemplate`, and a
//! single-file DASH rendition whose segments are the byte ranges of its `sidx` — or the object a player's CMCD
//! `nor` names. Prefetch is an ordinary fill: a player asking for a segment while it is prefetched joins it
//! (one upstream request), a budget of one prefetch at a time holds under many players, and
//! `prefetch_segments = 0` turns it off. Upstream requests are counted at the origin, per path.

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use shared::segments::{self, ByteRange};
use testkit::TestEdge as Edge;
use testkit::{CurlResponse, Scripted, ScriptedOrigin, curl, metric_sum, sample_content};

const WAIT: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An origin serving the committed sample titles as files (ranges honoured by the test kit), counting requests
/// per path.
fn sample_origin() -> ScriptedOrigin {
    let root = sample_content();
    ScriptedOrigin::start(move |req| {
        let path = req.path.split('?').next().unwrap_or_default();
        match std::fs::read(root.join(path.trim_start_matches('/'))) {
            Ok(bytes) => Scripted::ok(bytes)
                .header("Cache-Control", "max-age=600")
                .header("ETag", &format!("\"{}\"", path.len()))
                .header("Content-Type", "application/octet-stream"),
            Err(_) => Scripted::status(404, "no such object"),
        }
    })
}

/// An HTTP/1.1 origin of objects held in memory, one thread per connection and no lock held while answering,
/// whose answers for the paths a test holds wait until it lets them go: a prefetch can be caught in flight.
struct HeldOrigin {
    addr: std::net::SocketAddr,
    objects: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    seen: Arc<Mutex<Vec<String>>>,
    /// Paths held, and the signal that lets them go.
    held: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl HeldOrigin {
    fn start() -> HeldOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let origin = HeldOrigin {
            addr,
            objects: Arc::default(),
            seen: Arc::default(),
            held: Arc::default(),
        };
        let (objects, seen, held) = (
            Arc::clone(&origin.objects),
            Arc::clone(&origin.seen),
            Arc::clone(&origin.held),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (objects, seen, held) =
                    (Arc::clone(&objects), Arc::clone(&seen), Arc::clone(&held));
                std::thread::spawn(move || {
                    let mut writer = stream.try_clone().unwrap();
                    let mut reader = BufReader::new(stream);
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                        loop {
                            let mut header = String::new();
                            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                                return;
                            }
                            if header.trim_end().is_empty() {
                                break;
                            }
                        }
                        seen.lock().unwrap().push(path.clone());
                        let (paths, released) = &*held;
                        let deadline = Instant::now() + WAIT;
                        let mut guard = paths.lock().unwrap();
                        while guard.contains(&path) && Instant::now() < deadline {
                            guard = released
                                .wait_timeout(guard, Duration::from_millis(100))
                                .unwrap()
                                .0;
                        }
                        drop(guard);
                        let body = objects.lock().unwrap().get(&path).cloned();
                        let head = match &body {
                            Some(body) => format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nCache-Control: max-age=600\r\nETag: \"e\"\r\n\r\n",
                                body.len()
                            ),
                            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into(),
                        };
                        if writer.write_all(head.as_bytes()).is_err()
                            || writer
                                .write_all(body.as_deref().unwrap_or_default())
                                .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        origin
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn put(&self, path: &str, body: Vec<u8>) {
        self.objects.lock().unwrap().insert(path.into(), body);
    }

    /// An HLS VOD rendition at `/<title>/v0/index.m3u8` of `count` segments of 50 kB (`seg_N.ts`).
    fn put_rendition(&self, title: &str, count: usize) {
        self.put_rendition_of(title, count, 50_000);
    }

    /// An HLS VOD rendition of `count` segments of `len` bytes.
    fn put_rendition_of(&self, title: &str, count: usize, len: usize) {
        let mut playlist =
            String::from("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PLAYLIST-TYPE:VOD\n");
        for i in 0..count {
            playlist.push_str(&format!("#EXTINF:4.0,\nseg_{i}.ts\n"));
            self.put(&segment(title, i), vec![(i % 251) as u8; len]);
        }
        playlist.push_str("#EXT-X-ENDLIST\n");
        self.put(&format!("/{title}/v0/index.m3u8"), playlist.into_bytes());
    }

    fn hold(&self, path: &str) {
        self.held.0.lock().unwrap().push(path.into());
    }

    fn release(&self) {
        self.held.0.lock().unwrap().clear();
        self.held.1.notify_all();
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    }
}

fn segment(title: &str, i: usize) -> String {
    format!("/{title}/v0/seg_{i}.ts")
}

/// How this file asks the edge under test.
trait Asking {
    /// GET `path` over TLS (HTTP/2) with extra curl arguments; a 200 or 206.
    fn get(&self, path: &str, args: &[&str]) -> CurlResponse;
    /// GET `path` from `host` (`localhost` or `127.0.0.1`); a 200 or 206.
    fn get_ok_from(&self, host: &str, path: &str, args: &[&str]) -> CurlResponse;
    fn prefetches(&self) -> Vec<Value>;
    fn wait_prefetched(&self, path: &str, range: Option<&str>) -> Value;
    fn wait_indexed(&self, segments: f64);
}

impl Asking for Edge {
    fn get(&self, path: &str, args: &[&str]) -> CurlResponse {
        self.get_ok_from("localhost", path, args)
    }

    fn get_ok_from(&self, host: &str, path: &str, args: &[&str]) -> CurlResponse {
        let response = self.get_from(host, path, args);
        assert!(
            response.status == 200 || response.status == 206,
            "{path}: {}",
            response.status
        );
        response
    }

    /// The prefetch log lines so far.
    fn prefetches(&self) -> Vec<Value> {
        self.process
            .log_events("access")
            .into_iter()
            .filter(|e| e["prefetch"] == true)
            .collect()
    }

    /// Waits until a prefetch of `path` (and `range`, `start-end`) has been stored, and returns its log line.
    fn wait_prefetched(&self, path: &str, range: Option<&str>) -> Value {
        let mut found = None;
        wait_until(&format!("the prefetch of {path} {range:?}"), || {
            found = self.prefetches().into_iter().find(|e| {
                e["path"] == path && e["range"].as_str() == range && e["result"] == "stored"
            });
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits until the prefetch index lists at least `segments` segments.
    fn wait_indexed(&self, segments: f64) {
        wait_until("the prefetch index to learn the manifest", || {
            self.metric("edge_prefetch_indexed_segments", &[]) >= segments
        });
    }
}

fn is_hit(response: &CurlResponse) -> bool {
    response
        .cache_status()
        .is_some_and(|s| s == "edge-test; hit")
}

/// Plays a rendition listed as `paths`, one segment after another: the first is a miss, and after each one is
/// served the next is prefetched, so every later one is a plain hit.
fn play_with_prefetch(edge: &Edge, paths: &[String]) {
    let first = edge.get(&paths[0], &[]);
    assert_eq!(
        first.cache_status(),
        Some("edge-test; fwd=uri-miss; stored"),
        "{}",
        paths[0]
    );
    for next in &paths[1..] {
        edge.wait_prefetched(next, None);
        let response = edge.get(next, &[]);
        assert!(is_hit(&response), "{next}: {:?}", response.cache_status());
    }
}

#[test]
fn hls_vod_played_segment_by_segment_finds_each_next_segment_cached() {
    let origin = sample_origin();
    let edge = Edge::start(&origin.url(), "");
    let root = "/titles/test-pattern/hls/v0";
    let playlist = edge.get(&format!("{root}/index.m3u8"), &[]);
    assert!(playlist.text().contains("seg_005.ts"));
    edge.wait_indexed(6.0);
    let paths: Vec<String> = (0..6).map(|i| format!("{root}/seg_{i:03}.ts")).collect();
    play_with_prefetch(&edge, &paths);
    for path in &paths {
        assert_eq!(origin.count(path), 1, "{path} fetched once");
        let want = std::fs::read(sample_content().join(path.trim_start_matches('/'))).unwrap();
        assert_eq!(edge.get(path, &[]).body, want, "{path}");
    }
    // Five prefetches, each then used by the player; the manifest was read once.
    let metrics = edge.metrics();
    assert_eq!(metric_sum(&metrics, "edge_prefetch_issued_total", &[]), 5.0);
    wait_until("five prefetches used", || {
        edge.metric("edge_prefetch_used_total", &[]) == 5.0
    });
    assert_eq!(metric_sum(&metrics, "edge_prefetch_failed_total", &[]), 0.0);
    assert_eq!(metric_sum(&metrics, "edge_prefetch_renditions", &[]), 1.0);
    assert!(metric_sum(&metrics, "edge_prefetch_bytes_total", &[]) > 500_000.0);
    assert_eq!(origin.count(&format!("{root}/index.m3u8")), 1);
    // The last segment has no next one; the one before the first was never asked for.
    assert_eq!(edge.prefetches().len(), 5, "{:?}", edge.prefetches());
}

#[test]
fn dash_segment_template_played_segment_by_segment_finds_each_next_segment_cached() {
    let origin = sample_origin();
    let edge = Edge::start(&origin.url(), "");
    let root = "/titles/test-pattern/dash";
    edge.get(&format!("{root}/manifest.mpd"), &[]);
    // Four representations of six segments each.
    edge.wait_indexed(24.0);
    edge.get(&format!("{root}/init-0.m4s"), &[]);
    let paths: Vec<String> = (1..=6)
        .map(|i| format!("{root}/chunk-0-{i:05}.m4s"))
        .collect();
    play_with_prefetch(&edge, &paths);
    for path in &paths {
        assert_eq!(origin.count(path), 1, "{path} fetched once");
    }
    // Only the representation played was warmed.
    assert_eq!(origin.count(&format!("{root}/chunk-1-00002.m4s")), 0);
    assert_eq!(edge.metric("edge_prefetch_issued_total", &[]), 5.0);
}

#[test]
fn a_single_file_rendition_is_prefetched_by_the_byte_ranges_of_its_sidx() {
    let origin = sample_origin();
    // Slices smaller than a segment: a segment's bytes are cached only if they were fetched for it.
    let edge = Edge::start(&origin.url(), "[cache]\nslice_bytes = 65536\n");
    let root = "/titles/test-pattern/mp4";
    let file = format!("{root}/v0.mp4");
    let mpd = edge.get(&format!("{root}/manifest.mpd"), &[]);
    // The segments the player will ask for: what the MPD and the file's sidx say.
    let renditions = segments::dash(&format!("{root}/manifest.mpd"), &mpd.body).unwrap();
    let (_, index) = renditions
        .iter()
        .find_map(|r| r.index.clone().filter(|(path, _)| *path == file))
        .expect("v0.mp4 is a SegmentBase rendition");
    let bytes = std::fs::read(sample_content().join(file.trim_start_matches('/'))).unwrap();
    let listed = segments::sidx_segments(
        &file,
        index,
        &bytes[index.start as usize..=index.end as usize],
    )
    .unwrap();
    assert!(listed.len() >= 4, "{listed:?}");
    wait_until("the MPD read", || {
        edge.metric("edge_prefetch_renditions", &[]) >= 1.0
    });
    // The player reads the init section and the index first; the edge reads the sidx from what it cached.
    let head = edge.get(&file, &["-r", &format!("0-{}", index.end)]);
    assert_eq!(head.body, bytes[..=index.end as usize]);
    edge.wait_indexed(listed.len() as f64);
    let range = |r: ByteRange| format!("{}-{}", r.start, r.end);
    let first = listed[0].range.unwrap();
    let response = edge.get(&file, &["-r", &range(first)]);
    assert_eq!(response.status, 206);
    for segment in &listed[1..] {
        let r = segment.range.unwrap();
        edge.wait_prefetched(&file, Some(&range(r)));
        let response = edge.get(&file, &["-r", &range(r)]);
        assert_eq!(response.status, 206);
        assert!(
            is_hit(&response),
            "{}: {:?}",
            range(r),
            response.cache_status()
        );
        assert_eq!(
            response.body,
            bytes[r.start as usize..=r.end as usize],
            "{}",
            range(r)
        );
    }
    // No slice of the file was asked for twice.
    let ranges: Vec<String> = origin
        .requests_for(&file)
        .iter()
        .map(|r| r.header("range").unwrap_or("none").to_string())
        .collect();
    let mut unique = ranges.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ranges.len(), "{ranges:?}");
    assert_eq!(
        edge.metric("edge_prefetch_issued_total", &[]),
        (listed.len() - 1) as f64
    );
}

#[test]
fn the_players_cmcd_next_object_is_prefetched_without_a_manifest() {
    let origin = HeldOrigin::start();
    origin.put_rendition("c", 10);
    let edge = Edge::start(&origin.url(), "");
    // CMCD in the header fields, and in the query: no manifest was served, so only CMCD says what comes next.
    edge.get(&segment("c", 1), &["-H", "CMCD-Request: nor=\"seg_7.ts\""]);
    edge.wait_prefetched(&segment("c", 7), None);
    edge.get(
        &format!(
            "{}?CMCD=nor%3D%22..%252Fv0%252Fseg_9.ts%22",
            segment("c", 2)
        ),
        &[],
    );
    edge.wait_prefetched(&segment("c", 9), None);
    for i in [7, 9] {
        let response = edge.get(&segment("c", i), &[]);
        assert!(is_hit(&response), "{:?}", response.cache_status());
        assert_eq!(origin.count(&segment("c", i)), 1);
    }
    // Nothing else was warmed.
    assert_eq!(origin.count(&segment("c", 2 + 1)), 0);
    assert_eq!(edge.metric("edge_prefetch_issued_total", &[]), 2.0);
}

#[test]
fn a_player_asking_for_a_segment_being_prefetched_joins_that_fill() {
    let origin = HeldOrigin::start();
    origin.put_rendition("j", 4);
    let edge = Edge::start(&origin.url(), "");
    edge.get("/j/v0/index.m3u8", &[]);
    edge.wait_indexed(4.0);
    let next = segment("j", 1);
    origin.hold(&next);
    edge.get(&segment("j", 0), &[]);
    wait_until("the prefetch to reach the origin", || {
        origin.count(&next) == 1
    });
    assert_eq!(edge.metric("edge_prefetch_in_flight", &[]), 1.0);
    let waiters = edge.metric("edge_cache_fill_waiters_total", &[]);
    let player = {
        let url = format!(
            "https://localhost:{}{next}",
            edge.process.addr("tls_addr").port()
        );
        let ca = edge.certs.ca();
        std::thread::spawn(move || curl(&["--http2", "--cacert", ca.to_str().unwrap(), &url]))
    };
    wait_until("the player to join the prefetch", || {
        edge.metric("edge_cache_fill_waiters_total", &[]) > waiters
    });
    origin.release();
    let response = player.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body, vec![1u8; 50_000]);
    assert_eq!(
        response.cache_status(),
        Some("edge-test; fwd=uri-miss; collapsed; stored")
    );
    assert_eq!(origin.count(&next), 1, "one upstream request for both");
    wait_until("the joined prefetch counted as used", || {
        edge.metric("edge_prefetch_used_total", &[]) == 1.0
    });
    assert!(is_hit(&edge.get(&next, &[])));
}

#[test]
fn a_prefetch_no_player_asks_for_in_time_is_counted_wasted() {
    let origin = HeldOrigin::start();
    origin.put_rendition("w", 3);
    let edge = Edge::start(&origin.url(), "[prefetch]\nunused_secs = 1\n");
    edge.get("/w/v0/index.m3u8", &[]);
    edge.wait_indexed(3.0);
    edge.get(&segment("w", 0), &[]);
    edge.wait_prefetched(&segment("w", 1), None);
    // Counted when the metrics are read (or the next request comes) a second later.
    wait_until("the unused prefetch counted wasted", || {
        edge.metric("edge_prefetch_wasted_total", &[]) == 1.0
    });
    assert_eq!(
        edge.metric("edge_prefetch_wasted_bytes_total", &[]),
        50_000.0
    );
    // Still cached; asked for too late to count as used.
    assert!(is_hit(&edge.get(&segment("w", 1), &[])));
    assert_eq!(edge.metric("edge_prefetch_used_total", &[]), 0.0);
}

#[test]
fn a_budget_of_one_prefetch_holds_under_many_players() {
    const PLAYERS: usize = 6;
    let origin = HeldOrigin::start();
    origin.put_rendition("b", 2 * PLAYERS);
    let edge = Edge::start(
        &origin.url(),
        "[prefetch]\nmax_in_flight = 1\nmax_in_flight_per_upstream = 1\n",
    );
    edge.get("/b/v0/index.m3u8", &[]);
    edge.wait_indexed((2 * PLAYERS) as f64);
    // Each player asks for an even segment; the odd one after it is held at the origin once asked for.
    for i in 0..PLAYERS {
        origin.hold(&segment("b", 2 * i + 1));
    }
    let port = edge.process.addr("tls_addr").port();
    let players: Vec<_> = (0..PLAYERS)
        .map(|i| {
            let url = format!("https://localhost:{port}{}", segment("b", 2 * i));
            let ca = edge.certs.ca();
            std::thread::spawn(move || curl(&["--http2", "--cacert", ca.to_str().unwrap(), &url]))
        })
        .collect();
    for player in players {
        assert_eq!(player.join().unwrap().status, 200);
    }
    // One prefetch runs (held at the origin); every other player's was shed.
    let shed = || {
        edge.metric("edge_prefetch_shed_total", &["reason=\"in_flight\""])
            + edge.metric(
                "edge_prefetch_shed_total",
                &["reason=\"upstream_in_flight\""],
            )
    };
    wait_until("the other prefetches shed", || {
        shed() >= (PLAYERS - 1) as f64
    });
    assert_eq!(edge.metric("edge_prefetch_in_flight", &[]), 1.0);
    let held: usize = (0..PLAYERS)
        .map(|i| origin.count(&segment("b", 2 * i + 1)))
        .sum();
    assert_eq!(held, 1, "one prefetch reached the origin");
    origin.release();
    wait_until("the prefetch to end", || {
        edge.metric("edge_prefetch_in_flight", &[]) == 0.0
    });
    assert_eq!(edge.metric("edge_prefetch_in_flight_peak", &[]), 1.0);
    assert_eq!(edge.metric("edge_prefetch_issued_total", &[]), 1.0);
    assert_eq!(shed(), (PLAYERS - 1) as f64);
}

#[test]
fn a_byte_rate_budget_holds_the_next_prefetch_back_until_its_debt_is_paid() {
    let origin = HeldOrigin::start();
    // 2 MB segments (one slice each) against 64 KiB/s: the first prefetch leaves about 30 s of debt.
    origin.put_rendition_of("r", 4, 2_000_000);
    let edge = Edge::start(
        &origin.url(),
        "[prefetch]\nbytes_per_sec = 65536\nbytes_per_sec_per_upstream = 65536\n",
    );
    edge.get("/r/v0/index.m3u8", &[]);
    edge.wait_indexed(4.0);
    edge.get(&segment("r", 0), &[]);
    edge.wait_prefetched(&segment("r", 1), None);
    assert!(is_hit(&edge.get(&segment("r", 1), &[])));
    wait_until("the next prefetch shed for the rate", || {
        edge.metric("edge_prefetch_shed_total", &["reason=\"rate\""]) == 1.0
    });
    assert_eq!(edge.metric("edge_prefetch_issued_total", &[]), 1.0);
    assert_eq!(edge.metric("edge_prefetch_bytes_total", &[]), 2_000_000.0);
    let response = edge.get(&segment("r", 2), &[]);
    assert_eq!(
        response.cache_status(),
        Some("edge-test; fwd=uri-miss; stored")
    );
    assert_eq!(origin.count(&segment("r", 2)), 1);
}

#[test]
fn prefetch_is_shed_while_demand_holds_the_fill_slots() {
    let origin = HeldOrigin::start();
    origin.put_rendition("l", 8);
    // Two fill slots: one demand fill running is half of them, past the 75 % prefetch leaves to demand.
    let edge = Edge::start(&origin.url(), "[cache]\nmax_fills = 2\n");
    edge.get("/l/v0/index.m3u8", &[]);
    edge.wait_indexed(8.0);
    // One player's segment is slow to come.
    let slow = segment("l", 6);
    origin.hold(&slow);
    let waiting = {
        let url = format!(
            "https://localhost:{}{slow}",
            edge.process.addr("tls_addr").port()
        );
        let ca = edge.certs.ca();
        std::thread::spawn(move || curl(&["--http2", "--cacert", ca.to_str().unwrap(), &url]))
    };
    wait_until("the slow fill to reach the origin", || {
        origin.count(&slow) == 1
    });
    // Another player's segment is served meanwhile; the prefetch after it gives way.
    edge.get(&segment("l", 0), &[]);
    wait_until("the prefetch shed for load", || {
        edge.metric("edge_prefetch_shed_total", &["reason=\"load\""]) == 1.0
    });
    assert_eq!(edge.metric("edge_prefetch_issued_total", &[]), 0.0);
    assert_eq!(origin.count(&segment("l", 1)), 0);
    origin.release();
    assert_eq!(waiting.join().unwrap().status, 200);
    // A miss's own fill is one of the two slots, so a prefetch after it is shed too; with the slots free
    // again, the next segment served (a hit) warms the one after it.
    edge.get(&segment("l", 2), &[]);
    wait_until("the fills to end", || {
        edge.metric("edge_cache_fills_in_flight", &[]) == 0.0
    });
    assert!(is_hit(&edge.get(&segment("l", 2), &[])));
    edge.wait_prefetched(&segment("l", 3), None);
}

#[test]
fn what_one_site_s_manifest_lists_is_not_prefetched_on_another() {
    let (a, b) = (HeldOrigin::start(), HeldOrigin::start());
    a.put_rendition("s", 4);
    b.put_rendition("s", 4);
    let extra = format!(
        "[[site]]\nname = \"a\"\nhosts = [\"localhost\"]\nupstream = \"{}\"\n\
         [[site]]\nname = \"b\"\nhosts = [\"127.0.0.1\"]\nupstream = \"{}\"\n",
        a.url(),
        b.url()
    );
    let edge = Edge::start(&a.url(), &extra);
    edge.get_ok_from("localhost", "/s/v0/index.m3u8", &[]);
    edge.wait_indexed(4.0);
    // Site b never served the manifest: its player's segment warms nothing; site a's does.
    edge.get_ok_from("127.0.0.1", &segment("s", 0), &[]);
    edge.get_ok_from("localhost", &segment("s", 0), &[]);
    edge.wait_prefetched(&segment("s", 1), None);
    assert_eq!(a.count(&segment("s", 1)), 1);
    assert_eq!(b.count(&segment("s", 1)), 0);
    assert_eq!(edge.metric("edge_prefetch_issued_total", &[]), 1.0);
}

#[test]
fn prefetch_segments_zero_turns_prefetch_off_for_the_site() {
    let origin = HeldOrigin::start();
    origin.put_rendition("z", 4);
    // Three by default, none for this site.
    let extra = format!(
        "[prefetch]\nsegments = 3\n[[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{}\"\nprefetch_segments = 0\n",
        origin.url()
    );
    let edge = Edge::start(&origin.url(), &extra);
    edge.get("/z/v0/index.m3u8", &[]);
    // The rendition is still learnt, for eviction by value.
    wait_until("the rendition learnt", || {
        edge.metric("edge_prefetch_renditions", &[]) == 1.0
    });
    for i in 0..4 {
        let response = edge.get(&segment("z", i), &["-H", "CMCD-Request: nor=\"seg_3.ts\""]);
        assert_eq!(
            response.cache_status(),
            Some("edge-test; fwd=uri-miss; stored"),
            "segment {i}"
        );
    }
    for i in 0..4 {
        assert_eq!(origin.count(&segment("z", i)), 1);
    }
    let metrics = edge.metrics();
    for name in [
        "edge_prefetch_issued_total",
        "edge_prefetch_skipped_total",
        "edge_prefetch_shed_total",
    ] {
        assert_eq!(metric_sum(&metrics, name, &[]), 0.0, "{name}");
    }
    assert!(edge.prefetches().is_empty());
    // The player is followed, for eviction by value.
    assert_eq!(edge.metric("edge_viewer_sessions", &[]), 1.0);
}

/// ffmpeg (which asks for every segment with `Range: bytes=0-`) decodes every rendition of a title through the
/// edge: its segments come from prefetches (hits, or joined while they ran), and each object is fetched from
/// the origin once, prefetched or not.
#[test]
fn ffmpeg_playing_through_the_edge_uses_prefetched_segments_and_fetches_each_object_once() {
    let store = testkit::TempStore::with_samples();
    let origin = testkit::start_origin(&store.url(), "");
    let edge = Edge::start(&origin.url("media_addr"), "");
    let url = format!(
        "https://localhost:{}/titles/test-pattern/hls/master.m3u8",
        edge.process.addr("tls_addr").port()
    );
    let report = testkit::ffmpeg_play(&url, Some(&edge.certs.ca()));
    assert!(report.is_clean(), "{:?}\n{}", report.problems, report.log);
    let metrics = edge.metrics();
    let (issued, used) = (
        metric_sum(&metrics, "edge_prefetch_issued_total", &[]),
        metric_sum(&metrics, "edge_prefetch_used_total", &[]),
    );
    eprintln!("ffmpeg through the edge: prefetches used {used} of {issued}");
    assert!(issued >= 4.0 && used >= 4.0, "used {used} of {issued}");
    assert_eq!(metric_sum(&metrics, "edge_prefetch_failed_total", &[]), 0.0);
    let mut objects: Vec<String> = edge
        .process
        .log_events("access")
        .iter()
        .filter_map(|e| e["path"].as_str().map(String::from))
        .collect();
    objects.sort();
    objects.dedup();
    assert_eq!(
        origin.origin_gets(),
        objects.len() as u64,
        "one origin request per object: {objects:?}"
    );
}

/// hls.js in headless Chromium plays a VOD title through an edge in front of the real origin, keeping a short
/// buffer as a player in its steady state does (one segment ahead): with prefetch most segment requests are
/// hits, without it (almost) none is. Prints the hit ratios and prefetch's used/issued.
#[test]
fn hls_js_in_chromium_finds_most_segments_cached_with_prefetch_and_none_without() {
    let store = testkit::TempStore::with_samples();
    let origin = testkit::start_origin(&store.url(), "");
    let mut ratios = Vec::new();
    for (label, extra) in [("on", ""), ("off", "[prefetch]\nsegments = 0\n")] {
        let edge = Edge::start(&origin.url("media_addr"), extra);
        let url = format!(
            "https://127.0.0.1:{}/titles/test-pattern/hls/master.m3u8",
            edge.process.addr("tls_addr").port()
        );
        let result = testkit::browser_play(
            &url,
            &[
                "--player",
                "hls",
                "--proto",
                "h2",
                "--min-time",
                "14",
                "--max-buffer",
                "4",
                "--timeout",
                "60",
            ],
            edge.certs.cert(),
        )
        .unwrap_or_else(|e| panic!("prefetch {label}: {e}"));
        let line = result.to_string();
        assert_eq!(result["pass"], true, "prefetch {label}: {line}");
        let segments: Vec<String> = edge
            .process
            .log_events("access")
            .into_iter()
            .filter(|e| e["prefetch"] != true)
            .filter(|e| e["path"].as_str().is_some_and(|p| p.ends_with(".ts")))
            .map(|e| e["cache_status"].as_str().unwrap_or_default().to_string())
            .collect();
        // A request that joined a prefetch still running (a loaded machine's slow fill) found it under way:
        // served by prefetch too. A lone sequential player cannot coalesce without one.
        let hits = segments
            .iter()
            .filter(|s| *s == "hit" || *s == "coalesced")
            .count();
        let ratio = hits as f64 / segments.len().max(1) as f64;
        let metrics = edge.metrics();
        let (issued, used) = (
            metric_sum(&metrics, "edge_prefetch_issued_total", &[]),
            metric_sum(&metrics, "edge_prefetch_used_total", &[]),
        );
        eprintln!(
            "prefetch {label}: {hits} of {} segment requests hits ({ratio:.2}); prefetches used {used} of {issued}; {:?}",
            segments.len(),
            segments
        );
        ratios.push((ratio, issued, used));
    }
    let (on, off) = (ratios[0], ratios[1]);
    assert!(on.0 >= 0.5, "hit ratio with prefetch {:.2}", on.0);
    assert!(off.0 < on.0, "hit ratio without prefetch {:.2}", off.0);
    assert!(
        on.1 > 0.0 && on.2 >= on.1 * 0.5,
        "used {} of {} issued",
        on.2,
        on.1
    );
    assert_eq!(off.1, 0.0);
}

/// Eviction by value at a real edge: with a memory tier smaller than three renditions played by two players
/// (CMCD session ids), the viewers' model learns the title and ranks from the master playlist, follows both
/// sessions and evicts by value, keeping the tier under its size; every answer is whole and right.
#[test]
fn eviction_by_value_follows_the_players_and_holds_the_memory_tier() {
    let origin = sample_origin();
    let edge = Edge::start(
        &origin.url(),
        "[cache]\nmemory_bytes = 1048576\ndisk_bytes = 0\n",
    );
    let root = "/titles/test-pattern/hls";
    edge.get(&format!("{root}/master.m3u8"), &[]);
    // 1.1 MB of segments for a tier held at 14/16 MiB.
    for rendition in ["v1", "v2", "audio"] {
        edge.get(&format!("{root}/{rendition}/index.m3u8"), &[]);
    }
    edge.wait_indexed(18.0);
    for i in 0..6 {
        for (rendition, sid) in [("v1", "a"), ("audio", "a"), ("v2", "b")] {
            let path = format!("{root}/{rendition}/seg_{i:03}.ts");
            let cmcd = format!("CMCD-Session: sid=\"{sid}\"");
            let response = edge.get(&path, &["-H", &cmcd]);
            let want = std::fs::read(sample_content().join(path.trim_start_matches('/'))).unwrap();
            assert!(response.body == want, "{path}");
        }
    }
    let metrics = edge.metrics();
    assert_eq!(metric_sum(&metrics, "edge_viewer_sessions", &[]), 2.0);
    assert!(
        metric_sum(&metrics, "edge_cache_value_evictions_total", &[]) > 0.0,
        "{metrics}"
    );
    assert!(metric_sum(&metrics, "edge_cache_value_resident_slices", &[]) > 0.0);
    assert!(metrics.contains("foyer_memory_usage{"), "{metrics}");
    let usage = metric_sum(&metrics, "foyer_memory_usage", &[]);
    assert!(usage > 0.0 && usage <= 1_048_576.0, "{usage}");
}
