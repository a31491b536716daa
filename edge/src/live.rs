//! Low-latency HLS at the edge, the pure part (RFC 8216bis §6.2.5.2 blocking playlist reload, §6.3.1 delivery
//! directives): what a request's `_HLS_msn`/`_HLS_part`/`_HLS_skip` ask for, what a live media playlist holds
//! (its next media sequence number, the parts of the segment being written, the newest part), whether that is
//! new enough for a request, and when the playlist's one upstream poll runs next. No I/O and no clock: time is
//! passed in. The I/O rim (holding requests, polling the upstream once per playlist) is `pipeline::live`.

use shared::media::hls_attribute;
use std::time::Duration;

/// How long a blocked playlist request is held at most, in target durations (§6.2.5.2: "at least three times
/// the Target Duration", then the server answers 503).
pub const HOLD_TARGET_DURATIONS: f64 = 3.0;
/// The shortest and longest gap between two polls of one playlist.
pub const MIN_POLL: Duration = Duration::from_millis(50);
pub const MAX_POLL: Duration = Duration::from_secs(1);
/// Parts a request may ask for beyond the newest one before it is refused (§6.2.5.2's Advance Part Limit).
pub const ADVANCE_PART_LIMIT: u64 = 3;

/// The delivery directives of a playlist request (§6.2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directives {
    /// `_HLS_msn`: hold until the playlist has this media sequence number (or, with `part`, that part of it).
    pub msn: Option<u64>,
    /// `_HLS_part`: the part index within `msn`.
    pub part: Option<u64>,
    /// `_HLS_skip=YES` or `v2`: a delta playlist is asked for (passed upstream with the request).
    pub skip: bool,
}

impl Directives {
    /// Whether the request is held until the playlist grows.
    pub fn blocks(&self) -> bool {
        self.msn.is_some()
    }
}

/// Reads the directives from a query; `Err` names the fault for a 400 (§6.2.5.2: `_HLS_part` without
/// `_HLS_msn`, or a value that is not a decimal integer; and a directive given twice).
pub fn directives(query: Option<&str>) -> Result<Directives, &'static str> {
    let mut found = Directives {
        msn: None,
        part: None,
        skip: false,
    };
    let mut seen = [false; 3];
    for param in query.unwrap_or_default().split('&') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        // A directive given twice could be read one way here and another way upstream.
        if let Some(i) = ["_HLS_msn", "_HLS_part", "_HLS_skip"]
            .iter()
            .position(|d| *d == name)
        {
            if seen[i] {
                return Err("an _HLS_ directive is given twice");
            }
            seen[i] = true;
        }
        match name {
            "_HLS_msn" => {
                found.msn = Some(value.parse().map_err(|_| "_HLS_msn is not an integer")?);
            }
            "_HLS_part" => {
                found.part = Some(value.parse().map_err(|_| "_HLS_part is not an integer")?);
            }
            "_HLS_skip" => found.skip = matches!(value, "YES" | "v2"),
            _ => {}
        }
    }
    if found.part.is_some() && found.msn.is_none() {
        return Err("_HLS_part without _HLS_msn");
    }
    Ok(found)
}

/// Whether a query parameter is an HLS delivery directive (kept in the cache key whatever the site's policy).
pub fn is_directive(name: &str) -> bool {
    matches!(name, "_HLS_msn" | "_HLS_part" | "_HLS_skip")
}

/// What one version of a live media playlist holds, as far as blocking reload cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Playlist {
    /// `EXT-X-TARGETDURATION`, seconds.
    pub target_duration: f64,
    /// `EXT-X-PART-INF:PART-TARGET`, seconds, when the playlist has parts.
    pub part_target: Option<f64>,
    /// The media sequence number of the segment after the last complete one (the one being written).
    pub next_msn: u64,
    /// Parts of that segment listed so far.
    pub next_parts: u64,
    /// The newest part's URI, as written.
    pub newest_part: Option<String>,
    /// `EXT-X-PRELOAD-HINT:TYPE=PART`'s URI.
    pub preload_hint: Option<String>,
    /// `EXT-X-ENDLIST`: the stream ended; nothing is held any more.
    pub ended: bool,
}

/// Reads a media playlist; `None` for text that is not one (no `#EXTM3U`, no target duration, a master
/// playlist).
pub fn parse(text: &str) -> Option<Playlist> {
    let text = text.trim_start_matches('\u{feff}');
    if !text.trim_start().starts_with("#EXTM3U") {
        return None;
    }
    let mut target_duration = None;
    let mut part_target = None;
    let mut media_sequence = 0u64;
    let mut segments = 0u64;
    let mut parts_since = 0u64;
    let mut newest_part = None;
    let mut preload_hint = None;
    let mut ended = false;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target_duration = v.trim().parse::<f64>().ok().filter(|d| *d > 0.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART-INF:") {
            part_target = hls_attribute(v, "PART-TARGET")
                .and_then(|t| t.parse::<f64>().ok())
                .filter(|t| *t > 0.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            media_sequence = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PART:") {
            parts_since += 1;
            newest_part = hls_attribute(v, "URI").map(str::to_string);
        } else if let Some(v) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            if hls_attribute(v, "TYPE") == Some("PART") {
                preload_hint = hls_attribute(v, "URI").map(str::to_string);
            }
        } else if line == "#EXT-X-ENDLIST" {
            ended = true;
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            return None;
        } else if !line.is_empty() && !line.starts_with('#') {
            // A segment's URI closes it: the parts listed before it were its own.
            segments += 1;
            parts_since = 0;
        }
    }
    Some(Playlist {
        target_duration: target_duration?,
        part_target,
        // An upstream's numbers may be anything: none of these sums may overflow.
        next_msn: media_sequence.saturating_add(segments),
        next_parts: parts_since,
        newest_part,
        preload_hint,
        ended,
    })
}

/// Whether a playlist answers a blocking request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// It holds the segment (or part) asked for, or the stream ended: answer now.
    Now,
    /// Not yet: hold the request.
    Wait,
    /// Asked for more than two segments, or more than [`ADVANCE_PART_LIMIT`] parts, past the newest: a 400
    /// (§6.2.5.2).
    TooFar,
}

/// Whether `playlist` holds what `asked` blocks for (§6.2.5.2): segment `msn` complete, or, with `part`, that
/// part of it listed. A request that does not block is always answered now.
pub fn ready(playlist: &Playlist, asked: &Directives) -> Ready {
    let Some(msn) = asked.msn else {
        return Ready::Now;
    };
    if playlist.ended || msn < playlist.next_msn {
        return Ready::Now;
    }
    // The newest complete segment's number is next_msn - 1; "plus two" allows next_msn + 1.
    if msn > playlist.next_msn.saturating_add(1) {
        return Ready::TooFar;
    }
    match asked.part {
        Some(part) if msn == playlist.next_msn => {
            if part < playlist.next_parts {
                Ready::Now
            } else if part >= playlist.next_parts.saturating_add(ADVANCE_PART_LIMIT) {
                Ready::TooFar
            } else {
                Ready::Wait
            }
        }
        _ => Ready::Wait,
    }
}

/// How long a request is held at most for a playlist of this target duration.
pub fn hold_limit(target_duration: f64) -> Duration {
    Duration::from_secs_f64((target_duration * HOLD_TARGET_DURATIONS).clamp(1.0, 60.0))
}

/// When the playlist's poll runs next, given how long ago its last change was seen (`since_change`): just
/// after the next part (or segment) is due, then every quarter of one until it comes; never sooner than
/// [`MIN_POLL`] nor later than [`MAX_POLL`]. Without a known playlist, soon. After `failures` polls in a row that
/// read no playlist (the upstream failing, or a path that is no live playlist), twice as long each time up to
/// [`MAX_POLL`]: held requests for a missing playlist must not become 20 upstream requests a second each.
pub fn poll_delay(playlist: Option<&Playlist>, since_change: Duration, failures: u32) -> Duration {
    if failures > 0 {
        return MIN_POLL.saturating_mul(1 << failures.min(8)).min(MAX_POLL);
    }
    let Some(playlist) = playlist else {
        return MIN_POLL;
    };
    let step = playlist.part_target.unwrap_or(playlist.target_duration);
    let step = Duration::from_secs_f64(step.clamp(0.01, 60.0));
    let due = step + step / 8;
    let delay = if since_change < due {
        due - since_change
    } else {
        step / 4
    };
    delay.clamp(MIN_POLL, MAX_POLL)
}

/// A URI of the playlist at `playlist_path`, as a path on the same site (a relative URI resolves against the
/// playlist's folder); `None` for another host or a URI the edge cannot name.
pub fn resolve(playlist_path: &str, uri: &str) -> Option<String> {
    if uri.contains("://") || uri.starts_with("//") {
        return None;
    }
    let uri = uri.split('?').next()?;
    if uri.starts_with('/') {
        return Some(uri.to_string());
    }
    let folder = playlist_path
        .rsplit_once('/')
        .map_or("", |(folder, _)| folder);
    Some(format!("{folder}/{uri}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numbers at the top of the range (an upstream's, a client's): read and decided without overflow.
    #[test]
    fn numbers_at_the_top_of_the_range() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:18446744073709551615\n\
                    #EXTINF:1,\na.ts\n#EXT-X-PART:DURATION=1,URI=\"b.0.ts\"\n";
        let playlist = parse(text).expect("a media playlist");
        assert_eq!(playlist.next_msn, u64::MAX);
        let asked = |query: &str| directives(Some(query)).unwrap();
        let top = "_HLS_msn=18446744073709551615&_HLS_part=";
        // One part listed: the highest part number is more than three ahead.
        let far = asked(&format!("{top}18446744073709551615"));
        assert_eq!(ready(&playlist, &far), Ready::TooFar);
        let near = Playlist {
            next_parts: u64::MAX - 1,
            ..playlist
        };
        let next = asked(&format!("{top}18446744073709551614"));
        assert_eq!(ready(&near, &next), Ready::Wait);
        assert_eq!(ready(&near, &asked(&format!("{top}0"))), Ready::Now);
    }

    const LIVE: &str = "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n\
        #EXT-X-PART-INF:PART-TARGET=0.3334\n\
        #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.000\n\
        #EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-MAP:URI=\"init.mp4\"\n\
        #EXTINF:2.0,\nseg7.m4s\n\
        #EXT-X-PART:DURATION=0.33333,URI=\"seg8.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.33333,URI=\"seg8.1.m4s\"\n\
        #EXTINF:2.0,\nseg8.m4s\n\
        #EXT-X-PART:DURATION=0.33333,URI=\"seg9.0.m4s\",INDEPENDENT=YES\n\
        #EXT-X-PART:DURATION=0.33333,URI=\"seg9.1.m4s\"\n\
        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg9.2.m4s\"\n";

    #[test]
    fn directives_from_queries() {
        let d = |msn, part, skip| Directives { msn, part, skip };
        let table: [(Option<&str>, Result<Directives, &str>); 10] = [
            (None, Ok(d(None, None, false))),
            (Some("a=1"), Ok(d(None, None, false))),
            (Some("_HLS_msn=9"), Ok(d(Some(9), None, false))),
            (
                Some("_HLS_msn=9&_HLS_part=2"),
                Ok(d(Some(9), Some(2), false)),
            ),
            (Some("_HLS_skip=YES&_HLS_msn=9"), Ok(d(Some(9), None, true))),
            (Some("_HLS_skip=v2"), Ok(d(None, None, true))),
            (Some("_HLS_part=2"), Err("_HLS_part without _HLS_msn")),
            (
                Some("_HLS_msn=9&_HLS_msn=10"),
                Err("an _HLS_ directive is given twice"),
            ),
            (
                Some("_HLS_msn=9&_HLS_part=1&_HLS_part=2"),
                Err("an _HLS_ directive is given twice"),
            ),
            (Some("_HLS_msn=x"), Err("_HLS_msn is not an integer")),
        ];
        for (query, expected) in table {
            assert_eq!(directives(query), expected, "{query:?}");
        }
        assert!(is_directive("_HLS_skip") && !is_directive("_HLS_other"));
    }

    #[test]
    fn a_live_playlist_read() {
        let p = parse(LIVE).unwrap();
        assert_eq!(
            p,
            Playlist {
                target_duration: 2.0,
                part_target: Some(0.3334),
                next_msn: 9,
                next_parts: 2,
                newest_part: Some("seg9.1.m4s".into()),
                preload_hint: Some("seg9.2.m4s".into()),
                ended: false,
            }
        );
        let plain = parse("#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:3\n#EXTINF:6,\na.ts\n#EXTINF:6,\nb.ts\n#EXT-X-ENDLIST\n").unwrap();
        assert_eq!(
            (
                plain.next_msn,
                plain.next_parts,
                plain.part_target,
                plain.ended
            ),
            (5, 0, None, true)
        );
        assert_eq!(
            parse("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n"),
            None
        );
        assert_eq!(parse("<MPD/>"), None);
        assert_eq!(
            parse("#EXTM3U\n#EXTINF:2,\na.ts\n"),
            None,
            "no target duration"
        );
    }

    #[test]
    fn is_it_new_enough() {
        // LIVE: segments 7 and 8 complete, parts 0 and 1 of segment 9 listed.
        let p = parse(LIVE).unwrap();
        let ask = |msn, part| Directives {
            msn,
            part,
            skip: false,
        };
        let table = [
            (ask(None, None), Ready::Now),
            (ask(Some(3), None), Ready::Now),
            (ask(Some(8), None), Ready::Now),
            (ask(Some(8), Some(5)), Ready::Now),
            (ask(Some(9), None), Ready::Wait),
            (ask(Some(9), Some(0)), Ready::Now),
            (ask(Some(9), Some(1)), Ready::Now),
            (ask(Some(9), Some(2)), Ready::Wait),
            (ask(Some(9), Some(4)), Ready::Wait),
            (ask(Some(9), Some(5)), Ready::TooFar),
            (ask(Some(10), None), Ready::Wait),
            (ask(Some(10), Some(0)), Ready::Wait),
            (ask(Some(11), None), Ready::TooFar),
        ];
        for (asked, expected) in table {
            assert_eq!(ready(&p, &asked), expected, "{asked:?}");
        }
        let ended = Playlist { ended: true, ..p };
        assert_eq!(ready(&ended, &ask(Some(40), None)), Ready::Now);
    }

    #[test]
    fn when_to_poll() {
        let p = parse(LIVE).unwrap();
        let ms = Duration::from_millis;
        let table = [
            // Just changed: the next part is due a part target (+1/8) later.
            (Some(&p), ms(0), ms(375)),
            (Some(&p), ms(300), ms(75)),
            // Overdue: every quarter of a part, at least MIN_POLL.
            (Some(&p), ms(400), ms(83)),
            (Some(&p), ms(5000), ms(83)),
            (None, ms(0), MIN_POLL),
        ];
        for (playlist, since, expected) in table {
            let got = poll_delay(playlist, since, 0);
            assert!(
                got.abs_diff(expected) < ms(2),
                "{since:?}: {got:?} != {expected:?}"
            );
        }
        let slow = Playlist {
            part_target: None,
            target_duration: 6.0,
            ..p.clone()
        };
        assert_eq!(poll_delay(Some(&slow), ms(0), 0), MAX_POLL);
        // Polls that read no playlist back off, whatever was read before.
        for (failures, expected) in [
            (1, ms(100)),
            (2, ms(200)),
            (4, ms(800)),
            (5, MAX_POLL),
            (40, MAX_POLL),
        ] {
            assert_eq!(poll_delay(None, ms(0), failures), expected, "{failures}");
            assert_eq!(
                poll_delay(Some(&p), ms(0), failures),
                expected,
                "{failures}"
            );
        }
        assert_eq!(hold_limit(2.0), Duration::from_secs(6));
        assert_eq!(hold_limit(0.1), Duration::from_secs(1));
    }

    proptest::proptest! {
        #[test]
        fn hostile_playlists_never_panic(text in "#EXTM3U\n(#EXT-X-[A-Z-]{0,20}:?[A-Z0-9=\",.\\- ]{0,40}\n|[a-z0-9.]{0,8}\n){0,20}") {
            if let Some(p) = parse(&text) {
                let asked = Directives { msn: Some(p.next_msn), part: Some(p.next_parts), skip: false };
                // What is not listed yet is never ready (unless the stream ended).
                proptest::prop_assert!(p.ended || ready(&p, &asked) != Ready::Now);
            }
        }

        /// A generated live playlist: `segments` complete from `first`, then `parts` of the next.
        #[test]
        fn generated_playlists_are_read_back(first in 0u64..1_000_000, segments in 0u64..10, parts in 0u64..8) {
            let mut text = format!("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.33\n#EXT-X-MEDIA-SEQUENCE:{first}\n");
            for n in first..first + segments {
                text.push_str(&format!("#EXT-X-PART:DURATION=0.33,URI=\"s{n}.0.m4s\"\n#EXTINF:2.0,\ns{n}.m4s\n"));
            }
            for p in 0..parts {
                text.push_str(&format!("#EXT-X-PART:DURATION=0.33,URI=\"s{}.{p}.m4s\"\n", first + segments));
            }
            let p = parse(&text).unwrap();
            proptest::prop_assert_eq!((p.next_msn, p.next_parts), (first + segments, parts));
            let ask = |msn, part| Directives { msn: Some(msn), part, skip: false };
            if segments > 0 {
                proptest::prop_assert_eq!(ready(&p, &ask(first + segments - 1, None)), Ready::Now);
            }
            proptest::prop_assert_eq!(ready(&p, &ask(first + segments, None)), Ready::Wait);
            proptest::prop_assert_eq!(ready(&p, &ask(first + segments + 2, None)), Ready::TooFar);
            if parts > 0 {
                proptest::prop_assert_eq!(ready(&p, &ask(first + segments, Some(parts - 1))), Ready::Now);
            }
            proptest::prop_assert_eq!(ready(&p, &ask(first + segments, Some(parts))), Ready::Wait);
        }
    }

    #[test]
    fn uris_resolved() {
        let table = [
            (
                "/live/hls/live.m3u8",
                "seg9.2.m4s",
                Some("/live/hls/seg9.2.m4s"),
            ),
            ("/live/hls/live.m3u8", "/other/p.m4s", Some("/other/p.m4s")),
            (
                "/live/hls/live.m3u8",
                "sub/p.m4s?x=1",
                Some("/live/hls/sub/p.m4s"),
            ),
            ("/live/hls/live.m3u8", "https://cdn.example/p.m4s", None),
            ("/live/hls/live.m3u8", "//cdn.example/p.m4s", None),
        ];
        for (playlist, uri, expected) in table {
            assert_eq!(resolve(playlist, uri).as_deref(), expected, "{uri}");
        }
    }
}
