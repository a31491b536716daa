//! Media types and object classes of HLS/DASH content, decided from the key's extension, and the liveness of a
//! manifest decided from its text. Both the origin (Cache-Control by class) and the edge (prefetch, TTLs) use them.

/// What kind of object a key names, for cache policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectClass {
    /// Media segments, init segments, single-file renditions, subtitles: never change once published.
    Segment,
    /// HLS playlists and DASH MPDs: VOD ones are stable; live ones change every segment.
    Manifest,
    /// Everything else (keys, JSON, artwork, unknown types).
    Other,
}

impl ObjectClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectClass::Segment => "segment",
            ObjectClass::Manifest => "manifest",
            ObjectClass::Other => "other",
        }
    }
}

/// The media type and class of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaKind {
    pub content_type: &'static str,
    pub class: ObjectClass,
}

/// `application/octet-stream`, for keys with no known extension.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The media type and class for a key, from its extension (case-insensitive).
pub fn classify(key: &str) -> MediaKind {
    let file = key.rsplit('/').next().unwrap_or(key);
    let ext = file
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    let (content_type, class) = match ext.as_str() {
        "m3u8" => ("application/vnd.apple.mpegurl", ObjectClass::Manifest),
        "mpd" => ("application/dash+xml", ObjectClass::Manifest),
        "ts" => ("video/mp2t", ObjectClass::Segment),
        "m4s" => ("video/iso.segment", ObjectClass::Segment),
        "mp4" => ("video/mp4", ObjectClass::Segment),
        "m4v" => ("video/mp4", ObjectClass::Segment),
        "m4a" => ("audio/mp4", ObjectClass::Segment),
        "aac" => ("audio/aac", ObjectClass::Segment),
        "vtt" => ("text/vtt; charset=utf-8", ObjectClass::Segment),
        "key" => ("application/octet-stream", ObjectClass::Other),
        "json" => ("application/json", ObjectClass::Other),
        "jpg" | "jpeg" => ("image/jpeg", ObjectClass::Other),
        "png" => ("image/png", ObjectClass::Other),
        _ => (DEFAULT_CONTENT_TYPE, ObjectClass::Other),
    };
    MediaKind {
        content_type,
        class,
    }
}

/// Whether a manifest describes finished (VOD) or still-growing (live) content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    Vod,
    /// Live; `max_age_secs` is how long a copy may be reused, when the manifest says: half the HLS target
    /// duration (the playlist reload floor of RFC 8216 §6.3.4), or the DASH `minimumUpdatePeriod`.
    Live {
        max_age_secs: Option<u64>,
    },
}

/// Decides liveness from a manifest's text: an HLS media playlist is live unless it has `#EXT-X-ENDLIST` or
/// `#EXT-X-PLAYLIST-TYPE:VOD` (a master playlist lists renditions and does not change); a DASH MPD is live when
/// `type="dynamic"`. For live content the refresh period is the HLS target duration or the DASH
/// `minimumUpdatePeriod`; see [`Liveness::Live`].
pub fn manifest_liveness(text: &str) -> Liveness {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with("#EXTM3U") {
        return hls_liveness(trimmed);
    }
    if trimmed.starts_with('<') {
        return dash_liveness(trimmed);
    }
    Liveness::Vod
}

fn hls_liveness(text: &str) -> Liveness {
    let mut target_duration = None;
    for line in text.lines().map(str::trim) {
        if line.starts_with("#EXT-X-STREAM-INF")
            || line == "#EXT-X-ENDLIST"
            || line == "#EXT-X-PLAYLIST-TYPE:VOD"
        {
            return Liveness::Vod;
        }
        if let Some(value) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target_duration = value.trim().parse::<f64>().ok().filter(|d| *d > 0.0);
        }
    }
    Liveness::Live {
        max_age_secs: target_duration.map(|d| ((d / 2.0).ceil() as u64).max(1)),
    }
}

fn dash_liveness(text: &str) -> Liveness {
    let Some(start) = text.find("<MPD") else {
        return Liveness::Vod;
    };
    let mpd_tag = &text[start
        ..text[start..]
            .find('>')
            .map_or(text.len(), |end| start + end)];
    if xml_attribute(mpd_tag, "type") != Some("dynamic") {
        return Liveness::Vod;
    }
    let max_age_secs = xml_attribute(mpd_tag, "minimumUpdatePeriod")
        .and_then(iso8601_duration_secs)
        .map(|s| s.max(1));
    Liveness::Live { max_age_secs }
}

/// The value of `name="…"` (or single-quoted) inside one XML start tag.
fn xml_attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let before_ok = at > 0 && rest.as_bytes()[at - 1].is_ascii_whitespace();
        let after = rest[at + name.len()..].trim_start();
        rest = &rest[at + name.len()..];
        let Some(after_eq) = after.strip_prefix('=') else {
            continue;
        };
        if !before_ok {
            continue;
        }
        let after_eq = after_eq.trim_start();
        let quote = after_eq.chars().next()?;
        if quote != '"' && quote != '\'' {
            return None;
        }
        let value = &after_eq[1..];
        return value.find(quote).map(|end| &value[..end]);
    }
    None
}

/// The value of `NAME=value` or `NAME="value"` in an HLS attribute list (RFC 8216 §4.2).
pub fn hls_attribute<'a>(list: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = list;
    loop {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], quoted[end + 1..].trim_start_matches(','))
        } else {
            match after.split_once(',') {
                Some((value, next)) => (value, next),
                None => (after, ""),
            }
        };
        if key == name {
            return Some(value);
        }
        if next.is_empty() {
            return None;
        }
        rest = next;
    }
}

/// The URI of the part an HLS media playlist hints (`#EXT-X-PRELOAD-HINT:TYPE=PART,URI=…`), as written.
pub fn hls_preload_hint_part(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .filter_map(|line| line.strip_prefix("#EXT-X-PRELOAD-HINT:"))
        .filter(|attributes| hls_attribute(attributes, "TYPE") == Some("PART"))
        .find_map(|attributes| hls_attribute(attributes, "URI"))
}

/// Seconds of an ISO 8601 duration of the forms DASH uses (`PT2S`, `PT1M30.5S`, `P0Y0M0DT0H0M4S`), rounded up.
pub fn iso8601_duration_secs(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix('P')?;
    let (date_part, time_part) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = 0.0f64;
    let mut add = |part: &str, units: &[(char, f64)]| -> Option<()> {
        let mut number = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                number.push(c);
                continue;
            }
            let scale = units.iter().find(|(u, _)| *u == c)?.1;
            total += number.parse::<f64>().ok()? * scale;
            number.clear();
        }
        number.is_empty().then_some(())
    };
    add(
        date_part,
        &[
            ('Y', 365.0 * 86400.0),
            ('M', 30.0 * 86400.0),
            ('W', 7.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    add(time_part, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    Some(total.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_and_the_hinted_part() {
        let list = "DURATION=0.33,URI=\"a,b=c.m4s\",INDEPENDENT=YES";
        assert_eq!(hls_attribute(list, "URI"), Some("a,b=c.m4s"));
        assert_eq!(hls_attribute(list, "INDEPENDENT"), Some("YES"));
        assert_eq!(hls_attribute(list, "DURATION"), Some("0.33"));
        assert_eq!(hls_attribute(list, "BYTERANGE"), None);
        assert_eq!(hls_attribute("URI=\"unterminated", "URI"), None);
        let playlist = "#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init.mp4\"\n\
                        #EXT-X-PART:DURATION=0.3,URI=\"s8.1.m4s\"\n\
                        #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s8.2.m4s\"\n";
        assert_eq!(hls_preload_hint_part(playlist), Some("s8.2.m4s"));
        assert_eq!(hls_preload_hint_part("#EXTM3U\n#EXTINF:2,\ns1.m4s\n"), None);
    }

    #[test]
    fn media_types_by_extension() {
        let table = [
            (
                "a/master.m3u8",
                "application/vnd.apple.mpegurl",
                ObjectClass::Manifest,
            ),
            (
                "a/manifest.mpd",
                "application/dash+xml",
                ObjectClass::Manifest,
            ),
            ("a/seg_001.ts", "video/mp2t", ObjectClass::Segment),
            (
                "a/chunk-0-00001.m4s",
                "video/iso.segment",
                ObjectClass::Segment,
            ),
            ("a/init.mp4", "video/mp4", ObjectClass::Segment),
            ("a/video.M4V", "video/mp4", ObjectClass::Segment),
            ("a/audio.m4a", "audio/mp4", ObjectClass::Segment),
            ("a/audio.aac", "audio/aac", ObjectClass::Segment),
            (
                "a/subs/en.vtt",
                "text/vtt; charset=utf-8",
                ObjectClass::Segment,
            ),
            ("a/k.key", "application/octet-stream", ObjectClass::Other),
            ("a/meta.json", "application/json", ObjectClass::Other),
            ("a/poster.jpg", "image/jpeg", ObjectClass::Other),
            ("a/poster.png", "image/png", ObjectClass::Other),
            ("a/README", DEFAULT_CONTENT_TYPE, ObjectClass::Other),
            ("a.dir/README", DEFAULT_CONTENT_TYPE, ObjectClass::Other),
        ];
        for (key, content_type, class) in table {
            assert_eq!(
                classify(key),
                MediaKind {
                    content_type,
                    class
                },
                "{key}"
            );
        }
    }

    #[test]
    fn hls_liveness() {
        let vod = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg0.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(manifest_liveness(vod), Liveness::Vod);
        let event_vod =
            "#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg0.ts\n";
        assert_eq!(manifest_liveness(event_vod), Liveness::Vod);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv0/index.m3u8\n";
        assert_eq!(manifest_liveness(master), Liveness::Vod);
        let live =
            "#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:6,\nseg7.ts\n";
        assert_eq!(
            manifest_liveness(live),
            Liveness::Live {
                max_age_secs: Some(3)
            }
        );
        let live_fraction = "#EXTM3U\n#EXT-X-TARGETDURATION:2.5\n#EXTINF:2,\ns.ts\n";
        assert_eq!(
            manifest_liveness(live_fraction),
            Liveness::Live {
                max_age_secs: Some(2)
            }
        );
        let live_no_td = "#EXTM3U\n#EXTINF:6,\nseg7.ts\n";
        assert_eq!(
            manifest_liveness(live_no_td),
            Liveness::Live { max_age_secs: None }
        );
    }

    #[test]
    fn dash_liveness() {
        let vod = r#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period/></MPD>"#;
        assert_eq!(manifest_liveness(vod), Liveness::Vod);
        let live = r#"<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" profiles="x" type="dynamic" minimumUpdatePeriod="PT2S">
<Period type="static"/></MPD>"#;
        assert_eq!(
            manifest_liveness(live),
            Liveness::Live {
                max_age_secs: Some(2)
            }
        );
        let live_single = "<MPD mediaPresentationDuration='PT1M' type='dynamic'>";
        assert_eq!(
            manifest_liveness(live_single),
            Liveness::Live { max_age_secs: None }
        );
        // An attribute whose name only ends in "type" is not `type`.
        let tricky = r#"<MPD xmlns:x="u" x:mimetype="dynamic" type="static">"#;
        assert_eq!(manifest_liveness(tricky), Liveness::Vod);
        assert_eq!(manifest_liveness("not a manifest"), Liveness::Vod);
    }

    #[test]
    fn iso8601_durations() {
        let table = [
            ("PT2S", Some(2)),
            ("PT1M30.5S", Some(91)),
            ("P0Y0M0DT0H0M4S", Some(4)),
            ("PT0.5S", Some(1)),
            ("P1D", Some(86400)),
            ("PT1H", Some(3600)),
            ("2S", None),
            ("PTxS", None),
            ("PT5", None),
        ];
        for (value, want) in table {
            assert_eq!(iso8601_duration_secs(value), want, "{value}");
        }
    }
}
