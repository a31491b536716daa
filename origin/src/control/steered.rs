//! Steered manifests: a title's HLS multivariant playlist or DASH MPD rewritten for Content Steering, with one
//! pathway per ranked edge and the address of the steering server, so a player can move between edges on its
//! own when one fails and when the steering server says so.
//!
//! - HLS (RFC 8216bis §4.4.6.6): `#EXT-X-CONTENT-STEERING:SERVER-URI=…,PATHWAY-ID=<first>`, then every variant
//!   (`EXT-X-STREAM-INF`, `EXT-X-I-FRAME-STREAM-INF`) once per pathway with `PATHWAY-ID` and its URI made
//!   absolute on that edge; every rendition group (`EXT-X-MEDIA`) once per pathway under its own `GROUP-ID`
//!   (`<group>.<pathway>`), so audio and subtitles move with the video.
//! - DASH (ISO/IEC 23009-1 5th ed., DASH-IF Content Steering): `<ContentSteering defaultServiceLocation=…>` and
//!   one MPD-level `<BaseURL serviceLocation=…>` per pathway before the first `Period`; the relative segment
//!   addresses below resolve against whichever the player picks.
//!
//! Pure text in, text out; what cannot be steered faithfully (already steered, MPD-level `BaseURL`) is refused.

use quick_xml::events::Event;

/// The attribute list of `line` when it is the tag `name`.
fn tag<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.strip_prefix(name)?.strip_prefix(':')
}

/// One edge a steered manifest offers.
#[derive(Debug, Clone, PartialEq)]
pub struct Pathway {
    /// Its id (the edge's name: letters, digits, `-`, `_`, `.`).
    pub id: String,
    /// The manifest's folder on that edge, absolute and ending in `/`
    /// (`https://edge1:8443/t/<token>/titles/x/hls/`): relative URIs resolve against it.
    pub base: url::Url,
}

/// The HLS multivariant playlist `master` with one pathway per `pathways` (the first is the default).
pub fn hls(master: &str, pathways: &[Pathway], server_uri: &str) -> Result<String, String> {
    let lines: Vec<&str> = master.lines().collect();
    if lines.first().map(|l| l.trim_end()) != Some("#EXTM3U") {
        return Err("not an HLS playlist (no #EXTM3U)".into());
    }
    if pathways.is_empty() {
        return Err("no edge to steer to".into());
    }
    let mut head = Vec::new();
    let mut media = Vec::new();
    let mut iframes = Vec::new();
    let mut variants: Vec<(&str, &str)> = Vec::new();
    let mut pending: Option<&str> = None;
    for line in &lines[1..] {
        let line = line.trim_end();
        if line.starts_with("#EXT-X-CONTENT-STEERING") {
            return Err("the playlist is already steered".into());
        }
        if let Some(attrs) = pending {
            if line.is_empty() || (line.starts_with('#') && !line.starts_with("#EXT")) {
                continue;
            }
            if line.starts_with('#') {
                return Err(format!(
                    "a tag where a variant's URI should be: `{}`",
                    shown(line)
                ));
            }
            variants.push((attrs, line));
            pending = None;
        } else if let Some(attrs) = tag(line, "#EXT-X-STREAM-INF") {
            pending = Some(attrs);
        } else if let Some(attrs) = tag(line, "#EXT-X-MEDIA") {
            media.push(attrs);
        } else if let Some(attrs) = tag(line, "#EXT-X-I-FRAME-STREAM-INF") {
            iframes.push(attrs);
        } else if line.starts_with("#EXTINF") || line.starts_with("#EXT-X-TARGETDURATION") {
            return Err("a media playlist, not a multivariant playlist".into());
        } else if !line.is_empty() && !line.starts_with('#') {
            return Err(format!("a URI with no EXT-X-STREAM-INF: `{}`", shown(line)));
        } else if line.starts_with("#EXT") {
            // Comments are dropped: they would be repeated or misplaced once per pathway.
            head.push(line);
        }
    }
    if pending.is_some() || variants.is_empty() {
        return Err("no variant stream (EXT-X-STREAM-INF with its URI)".into());
    }
    let mut out = String::with_capacity(master.len() * (pathways.len() + 1));
    out.push_str("#EXTM3U\n");
    for line in head {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&format!(
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"{}\",PATHWAY-ID=\"{}\"\n",
        quoted(server_uri)?,
        pathways[0].id
    ));
    for pathway in pathways {
        let group = |value: &str| format!("\"{}.{}\"", unquote(value), pathway.id);
        let uri = |value: &str| -> Result<String, String> {
            Ok(format!("\"{}\"", absolute(&pathway.base, unquote(value))?))
        };
        for attrs in &media {
            let rewritten = rewrite_attributes(attrs, |name, value| match name {
                "GROUP-ID" => Ok(Some(group(value))),
                "URI" => uri(value).map(Some),
                _ => Ok(None),
            })?;
            out.push_str(&format!("#EXT-X-MEDIA:{rewritten}\n"));
        }
        let variant_attrs = |attrs: &str| {
            let rewritten = rewrite_attributes(attrs, |name, value| match name {
                "AUDIO" | "VIDEO" | "SUBTITLES" => Ok(Some(group(value))),
                "CLOSED-CAPTIONS" if value.starts_with('"') => Ok(Some(group(value))),
                "URI" => uri(value).map(Some),
                "PATHWAY-ID" => Ok(Some(String::new())),
                _ => Ok(None),
            })?;
            Ok::<_, String>(format!("{rewritten},PATHWAY-ID=\"{}\"", pathway.id))
        };
        for (attrs, target) in &variants {
            out.push_str(&format!(
                "#EXT-X-STREAM-INF:{}\n{}\n",
                variant_attrs(attrs)?,
                absolute(&pathway.base, target)?
            ));
        }
        for attrs in &iframes {
            out.push_str(&format!(
                "#EXT-X-I-FRAME-STREAM-INF:{}\n",
                variant_attrs(attrs)?
            ));
        }
    }
    Ok(out)
}

/// The DASH MPD `mpd` with one `BaseURL` per `pathways` and the steering server (the first is the default).
pub fn dash(mpd: &str, pathways: &[Pathway], server_uri: &str) -> Result<String, String> {
    if pathways.is_empty() {
        return Err("no edge to steer to".into());
    }
    let mut reader = quick_xml::Reader::from_str(mpd);
    let mut depth = 0usize;
    let mut insert_at = None;
    let mut indent = String::from("\n  ");
    // A child of MPD: where the additions go (before the first Period), and what forbids them.
    let child = |name: &[u8], at: usize, insert_at: &mut Option<usize>| match name {
        b"BaseURL" => Err("the MPD has its own MPD-level BaseURL".to_string()),
        b"ContentSteering" => Err("the MPD is already steered".to_string()),
        b"Period" => {
            insert_at.get_or_insert(at);
            Ok(())
        }
        _ => Ok(()),
    };
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| format!("the MPD is not XML: {e}"))?;
        match event {
            Event::Start(e) => {
                if depth == 0 && e.local_name().as_ref() != b"MPD" {
                    return Err("not an MPD".into());
                }
                if depth == 1 {
                    child(e.local_name().as_ref(), before, &mut insert_at)?;
                }
                depth += 1;
            }
            Event::Empty(e) if depth == 1 => {
                child(e.local_name().as_ref(), before, &mut insert_at)?
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(text) if depth == 1 && insert_at.is_none() => {
                let text = String::from_utf8_lossy(&text);
                if let Some(at) = text.rfind('\n') {
                    indent = text[at..].to_string();
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let Some(at) = insert_at else {
        return Err("the MPD has no Period".into());
    };
    let mut added = format!(
        "<ContentSteering defaultServiceLocation=\"{}\" queryBeforeStart=\"true\">{}</ContentSteering>{indent}",
        pathways[0].id,
        escape_xml(server_uri)
    );
    for pathway in pathways {
        added.push_str(&format!(
            "<BaseURL serviceLocation=\"{}\">{}</BaseURL>{indent}",
            pathway.id,
            escape_xml(pathway.base.as_str())
        ));
    }
    Ok(format!("{}{added}{}", &mpd[..at], &mpd[at..]))
}

/// `attrs` (an HLS attribute list) with each attribute `rewrite` returns text for replaced by it (dropped when
/// the text is empty), the others kept as written.
fn rewrite_attributes(
    attrs: &str,
    mut rewrite: impl FnMut(&str, &str) -> Result<Option<String>, String>,
) -> Result<String, String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = attrs.trim();
    while !rest.is_empty() {
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("an attribute without a value in `{}`", shown(attrs)))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("an unterminated quoted string in `{}`", shown(attrs)))?;
            (&after[..end + 2], &quoted[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, r)| (v, r))
        };
        let after = after.strip_prefix(',').unwrap_or(after);
        let name = name.trim();
        match rewrite(name, value)? {
            Some(text) if text.is_empty() => {}
            Some(text) => out.push(format!("{name}={text}")),
            None => out.push(format!("{name}={value}")),
        }
        rest = after.trim_start();
    }
    Ok(out.join(","))
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

/// `text` fit for an HLS quoted-string (no `"`, CR or LF).
fn quoted(text: &str) -> Result<&str, String> {
    if text.contains(['"', '\r', '\n']) {
        return Err(format!("`{}` cannot be quoted in a playlist", shown(text)));
    }
    Ok(text)
}

/// `reference` resolved against `base`, as a quoted-string-safe URL.
fn absolute(base: &url::Url, reference: &str) -> Result<String, String> {
    let url = base
        .join(reference)
        .map_err(|e| format!("`{}` is not a URI: {e}", shown(reference)))?;
    quoted(url.as_str()).map(str::to_string)
}

fn escape_xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The start of a manifest's line for an error message.
fn shown(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-INDEPENDENT-SEGMENTS\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"English, stereo\",DEFAULT=YES,URI=\"audio/index.m3u8\"\n\
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"subs\",NAME=\"English\",URI=\"subs/en.m3u8\"\n\
#EXT-X-STREAM-INF:BANDWIDTH=361919,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"audio\",SUBTITLES=\"subs\"\n\
v0/index.m3u8\n\
# a comment\n\
#EXT-X-STREAM-INF:BANDWIDTH=189335,CODECS=\"avc1.4d400c,mp4a.40.2\",AUDIO=\"audio\",SUBTITLES=\"subs\",CLOSED-CAPTIONS=NONE\n\
\n\
v2/index.m3u8\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI=\"v0/iframes.m3u8\"\n";

    fn pathways() -> Vec<Pathway> {
        ["edge-a", "edge-b"]
            .iter()
            .enumerate()
            .map(|(i, id)| Pathway {
                id: id.to_string(),
                base: url::Url::parse(&format!(
                    "https://127.0.0.1:{}/t/TOKEN/titles/x/hls/",
                    9000 + i
                ))
                .unwrap(),
            })
            .collect()
    }

    #[test]
    fn an_hls_playlist_gets_one_pathway_per_edge_with_its_own_groups() {
        let out = hls(
            MASTER,
            &pathways(),
            "http://127.0.0.1:8000/v1/steering/x?region=eu",
        )
        .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "#EXTM3U",
                "#EXT-X-VERSION:6",
                "#EXT-X-INDEPENDENT-SEGMENTS",
                "#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://127.0.0.1:8000/v1/steering/x?region=eu\",PATHWAY-ID=\"edge-a\""
            ]
        );
        assert_eq!(
            lines[4],
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio.edge-a\",NAME=\"English, stereo\",DEFAULT=YES,URI=\"https://127.0.0.1:9000/t/TOKEN/titles/x/hls/audio/index.m3u8\""
        );
        assert_eq!(
            lines[6],
            "#EXT-X-STREAM-INF:BANDWIDTH=361919,CODECS=\"avc1.4d401e,mp4a.40.2\",AUDIO=\"audio.edge-a\",SUBTITLES=\"subs.edge-a\",PATHWAY-ID=\"edge-a\""
        );
        assert_eq!(
            lines[7],
            "https://127.0.0.1:9000/t/TOKEN/titles/x/hls/v0/index.m3u8"
        );
        assert!(
            lines[8].ends_with("CLOSED-CAPTIONS=NONE,PATHWAY-ID=\"edge-a\""),
            "{}",
            lines[8]
        );
        assert_eq!(
            lines[9],
            "https://127.0.0.1:9000/t/TOKEN/titles/x/hls/v2/index.m3u8"
        );
        assert_eq!(
            lines[10],
            "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=50000,URI=\"https://127.0.0.1:9000/t/TOKEN/titles/x/hls/v0/iframes.m3u8\",PATHWAY-ID=\"edge-a\""
        );
        // The second pathway: the same with its own groups and edge.
        let second: Vec<&str> = lines[11..].to_vec();
        assert_eq!(second.len(), 7);
        assert!(
            second
                .iter()
                .all(|l| !l.contains("edge-a") && !l.contains(":9000/"))
        );
        assert!(second[0].contains("GROUP-ID=\"audio.edge-b\""));
        assert_eq!(
            second[3],
            "https://127.0.0.1:9001/t/TOKEN/titles/x/hls/v0/index.m3u8"
        );
        // m3u8-rs, an independent parser, reads it as a multivariant playlist with every variant per pathway.
        match m3u8_rs::parse_playlist_res(out.as_bytes()).unwrap() {
            m3u8_rs::Playlist::MasterPlaylist(m) => {
                assert_eq!(m.variants.len(), 6);
                assert_eq!(m.alternatives.len(), 4);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn what_cannot_be_steered_is_refused() {
        let p = pathways();
        let server = "http://c/v1/steering/x";
        assert!(
            hls("#EXTM3U\n#EXTINF:4,\na.ts\n", &p, server)
                .unwrap_err()
                .contains("media playlist")
        );
        assert!(hls("hello", &p, server).unwrap_err().contains("#EXTM3U"));
        assert!(hls("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n", &p, server).is_err());
        assert!(hls(MASTER, &[], server).is_err());
        assert!(
            hls("#EXTM3U\nstray.m3u8\n", &p, server)
                .unwrap_err()
                .contains("no EXT-X-STREAM-INF")
        );
        let steered = hls(MASTER, &p, server).unwrap();
        assert!(
            hls(&steered, &p, server)
                .unwrap_err()
                .contains("already steered")
        );
        assert!(hls(MASTER, &p, "http://c/\"x").is_err());
        assert!(
            hls(
                "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"a\nv0.m3u8\n",
                &p,
                server
            )
            .is_err()
        );
    }

    const MPD: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT24.0S">
  <ProgramInformation>
    <Title>Test &amp; Pattern</Title>
  </ProgramInformation>
  <Period id="0" start="PT0.0S">
    <AdaptationSet id="0" contentType="video">
      <Representation id="0" bandwidth="249983">
        <SegmentTemplate media="chunk-$RepresentationID$-$Number%05d$.m4s" initialization="init-$RepresentationID$.m4s"/>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"#;

    #[test]
    fn an_mpd_gets_a_base_url_per_edge_and_the_steering_server() {
        let out = dash(
            MPD,
            &pathways(),
            "http://127.0.0.1:8000/v1/steering/x?a=1&b=2",
        )
        .unwrap();
        let expected = MPD.replace(
            "  <Period id=\"0\"",
            "  <ContentSteering defaultServiceLocation=\"edge-a\" queryBeforeStart=\"true\">http://127.0.0.1:8000/v1/steering/x?a=1&amp;b=2</ContentSteering>
  <BaseURL serviceLocation=\"edge-a\">https://127.0.0.1:9000/t/TOKEN/titles/x/hls/</BaseURL>
  <BaseURL serviceLocation=\"edge-b\">https://127.0.0.1:9001/t/TOKEN/titles/x/hls/</BaseURL>
  <Period id=\"0\"",
        );
        assert_eq!(out, expected);
        // Still XML, with the additions as MPD's children.
        let mut reader = quick_xml::Reader::from_str(&out);
        let mut base_urls = 0;
        loop {
            match reader.read_event().unwrap() {
                Event::Start(e) if e.local_name().as_ref() == b"BaseURL" => base_urls += 1,
                Event::Eof => break,
                _ => {}
            }
        }
        assert_eq!(base_urls, 2);
    }

    #[test]
    fn an_mpd_that_cannot_be_steered_is_refused() {
        let p = pathways();
        let server = "http://c/v1/steering/x";
        let with_base = MPD.replace("  <Period", "  <BaseURL>cdn/</BaseURL>\n  <Period");
        assert!(
            dash(&with_base, &p, server)
                .unwrap_err()
                .contains("BaseURL")
        );
        let steered = dash(MPD, &p, server).unwrap();
        assert!(dash(&steered, &p, server).unwrap_err().contains("steered"));
        assert!(
            dash("<html><Period/></html>", &p, server)
                .unwrap_err()
                .contains("not an MPD")
        );
        assert!(dash("<MPD><Period", &p, server).is_err());
        assert!(
            dash("<MPD></MPD>", &p, server)
                .unwrap_err()
                .contains("no Period")
        );
        assert!(dash(MPD, &[], server).is_err());
    }
}
