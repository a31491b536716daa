//! What a packaged title's manifests say: the files each one references (so ingest can refuse a folder with a
//! missing file before writing anything) and the renditions a master playlist or MPD offers, with bandwidth,
//! resolution, codecs, language and duration (so ingest registers them without hand-written metadata).
//!
//! HLS is parsed by `m3u8-rs`, DASH MPDs by `quick-xml`'s serde deserializer into the subset of the MPD schema
//! that addresses files: `BaseURL` at every level (resolved down the hierarchy), `SegmentBase` single files, and
//! `SegmentTemplate` (inherited from the adaptation set, attribute by attribute) expanded over its
//! `SegmentTimeline` or over the presentation duration divided by `@duration`.

use std::collections::BTreeSet;

use m3u8_rs::{AlternativeMediaType, Playlist};
use serde::Deserialize;
use shared::segments::{SegmentTemplate, iso_duration};

use crate::control::catalog::RenditionMeta;

/// One manifest, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub kind: ManifestKind,
    /// Referenced files as written, relative to the manifest's folder (`..` allowed), deduplicated and sorted.
    pub references: Vec<String>,
    /// Masters and MPDs: what a player can choose from. A media playlist: itself, its kind told by its
    /// segments' file type (bandwidth and resolution are a master playlist's to say).
    pub renditions: Vec<RenditionMeta>,
    /// MPDs: the presentation duration; media playlists: the sum of the segment durations; masters: unknown
    /// until a variant's media playlist is read.
    pub duration_secs: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    HlsMaster,
    HlsMedia,
    Dash,
}

impl ManifestKind {
    pub fn protocol(self) -> &'static str {
        match self {
            ManifestKind::HlsMaster | ManifestKind::HlsMedia => "hls",
            ManifestKind::Dash => "dash",
        }
    }
}

/// Reads a manifest by its file name (`.m3u8` or `.mpd`); an error says what is wrong with it.
pub fn read(name: &str, text: &[u8]) -> Result<Manifest, String> {
    if name.ends_with(".mpd") {
        read_mpd(text)
    } else {
        read_hls(text)
    }
}

fn read_hls(text: &[u8]) -> Result<Manifest, String> {
    // RFC 8216 §4.1: playlists are UTF-8. Checked first because m3u8-rs 6 takes time quadratic in a line's
    // length when the line holds a byte that is not UTF-8 (found by fuzzing: 0.7 s for one 28 KB line, 2.8 s
    // for 56 KB), so such a playlist must never reach it.
    if let Err(e) = std::str::from_utf8(text) {
        return Err(format!(
            "not a valid HLS playlist: not UTF-8 (RFC 8216 §4.1) at byte {}",
            e.valid_up_to()
        ));
    }
    let playlist = m3u8_rs::parse_playlist_res(text).map_err(|e| {
        let mut detail = e.to_string();
        detail.truncate(120);
        format!("not a valid HLS playlist: {detail}")
    })?;
    let mut references = BTreeSet::new();
    Ok(match playlist {
        Playlist::MasterPlaylist(master) => {
            // CODECS lists video and audio together; a rendition gets the codecs of its own kind.
            let audio_codecs: BTreeSet<&str> = master
                .variants
                .iter()
                .filter_map(|v| v.codecs.as_deref())
                .flat_map(|c| c.split(','))
                .map(str::trim)
                .filter(|c| codec_kind(c) == "audio")
                .collect();
            let mut renditions = Vec::new();
            for variant in &master.variants {
                references.insert(variant.uri.clone());
                if variant.is_i_frame {
                    continue;
                }
                let codecs = variant.codecs.as_deref().map(|c| {
                    c.split(',')
                        .map(str::trim)
                        .filter(|c| codec_kind(c) == "video")
                        .collect::<Vec<_>>()
                        .join(",")
                });
                renditions.push(RenditionMeta {
                    kind: "video".into(),
                    bandwidth: Some(variant.bandwidth as i64),
                    resolution: variant
                        .resolution
                        .map(|r| format!("{}x{}", r.width, r.height)),
                    codecs: codecs.filter(|c| !c.is_empty()),
                    language: None,
                });
            }
            for media in &master.alternatives {
                references.extend(media.uri.iter().cloned());
                let kind = match media.media_type {
                    AlternativeMediaType::Audio => "audio",
                    AlternativeMediaType::Subtitles => "subtitles",
                    _ => continue,
                };
                renditions.push(RenditionMeta {
                    kind: kind.into(),
                    bandwidth: None,
                    resolution: None,
                    codecs: (kind == "audio" && audio_codecs.len() == 1)
                        .then(|| audio_codecs.iter().next().map(|c| c.to_string()))
                        .flatten(),
                    language: media.language.clone(),
                });
            }
            Manifest {
                kind: ManifestKind::HlsMaster,
                references: references.into_iter().collect(),
                renditions: sorted(renditions),
                duration_secs: None,
            }
        }
        Playlist::MediaPlaylist(media) => {
            for segment in &media.segments {
                references.insert(segment.uri.clone());
                references.extend(segment.map.iter().map(|m| m.uri.clone()));
                references.extend(segment.key.iter().filter_map(|k| k.uri.clone()));
            }
            let duration: f64 = media.segments.iter().map(|s| s.duration as f64).sum();
            let extension = media
                .segments
                .first()
                .and_then(|s| s.uri.split(['?', '#']).next())
                .and_then(|uri| uri.rsplit_once('.'))
                .map(|(_, ext)| ext.to_ascii_lowercase());
            let kind = match extension.as_deref() {
                Some("vtt" | "webvtt" | "srt" | "ttml") => "subtitles",
                Some("aac" | "m4a" | "mp3" | "ac3" | "ec3" | "opus" | "flac") => "audio",
                _ => "video",
            };
            Manifest {
                kind: ManifestKind::HlsMedia,
                references: references.into_iter().collect(),
                renditions: vec![RenditionMeta {
                    kind: kind.into(),
                    bandwidth: None,
                    resolution: None,
                    codecs: None,
                    language: None,
                }],
                duration_secs: Some(duration),
            }
        }
    })
}

/// `video`, `audio`, `subtitles` or `other` for an RFC 6381 codec string.
fn codec_kind(codec: &str) -> &'static str {
    let family = codec.split('.').next().unwrap_or(codec);
    match family {
        "avc1" | "avc3" | "hvc1" | "hev1" | "av01" | "vp09" | "vp8" | "vp9" | "dvh1" | "dvhe" => {
            "video"
        }
        "mp4a" | "ac-3" | "ec-3" | "ac-4" | "opus" | "Opus" | "flac" | "fLaC" | "mp3" => "audio",
        "wvtt" | "stpp" => "subtitles",
        _ => "other",
    }
}

fn sorted(mut renditions: Vec<RenditionMeta>) -> Vec<RenditionMeta> {
    let order = |kind: &str| match kind {
        "video" => 0,
        "audio" => 1,
        _ => 2,
    };
    // Stable: within a kind the manifest's own order (usually best first) is kept.
    renditions.sort_by_key(|r| order(&r.kind));
    renditions
}

#[derive(Debug, Deserialize)]
struct Mpd {
    #[serde(rename = "@mediaPresentationDuration")]
    duration: Option<String>,
    #[serde(rename = "@type")]
    kind: Option<String>,
    #[serde(rename = "BaseURL", default)]
    base_urls: Vec<String>,
    #[serde(rename = "Period", default)]
    periods: Vec<Period>,
}

#[derive(Debug, Deserialize)]
struct Period {
    #[serde(rename = "@duration")]
    duration: Option<String>,
    #[serde(rename = "BaseURL", default)]
    base_urls: Vec<String>,
    #[serde(rename = "AdaptationSet", default)]
    sets: Vec<AdaptationSet>,
}

#[derive(Debug, Deserialize)]
struct AdaptationSet {
    #[serde(rename = "@contentType")]
    content_type: Option<String>,
    #[serde(rename = "@mimeType")]
    mime_type: Option<String>,
    #[serde(rename = "@codecs")]
    codecs: Option<String>,
    #[serde(rename = "@lang")]
    lang: Option<String>,
    #[serde(rename = "@width")]
    width: Option<u32>,
    #[serde(rename = "@height")]
    height: Option<u32>,
    #[serde(rename = "BaseURL", default)]
    base_urls: Vec<String>,
    #[serde(rename = "SegmentTemplate")]
    template: Option<SegmentTemplate>,
    #[serde(rename = "Representation", default)]
    representations: Vec<Representation>,
}

#[derive(Debug, Deserialize)]
struct Representation {
    #[serde(rename = "@id", default)]
    id: String,
    #[serde(rename = "@bandwidth")]
    bandwidth: Option<u64>,
    #[serde(rename = "@width")]
    width: Option<u32>,
    #[serde(rename = "@height")]
    height: Option<u32>,
    #[serde(rename = "@codecs")]
    codecs: Option<String>,
    #[serde(rename = "@mimeType")]
    mime_type: Option<String>,
    #[serde(rename = "BaseURL", default)]
    base_urls: Vec<String>,
    #[serde(rename = "SegmentTemplate")]
    template: Option<SegmentTemplate>,
}

fn read_mpd(text: &[u8]) -> Result<Manifest, String> {
    let text = std::str::from_utf8(text).map_err(|_| "an MPD must be UTF-8".to_string())?;
    let mpd: Mpd = quick_xml::de::from_str(text).map_err(|e| format!("not a valid MPD: {e}"))?;
    if mpd.kind.as_deref() == Some("dynamic") {
        return Err("a dynamic (live) MPD cannot be ingested as a title".into());
    }
    let presentation = mpd.duration.as_deref().map(iso_duration).transpose()?;
    let period_sum: Option<f64> = mpd
        .periods
        .iter()
        .map(|p| p.duration.as_deref().map(iso_duration).transpose())
        .sum::<Result<Option<f64>, String>>()?;
    let mut references = BTreeSet::new();
    let mut renditions = Vec::new();
    let mpd_base = base("", &mpd.base_urls);
    for period in &mpd.periods {
        let period_secs = period
            .duration
            .as_deref()
            .map(iso_duration)
            .transpose()?
            .or(if mpd.periods.len() == 1 {
                presentation
            } else {
                None
            });
        let period_base = base(&mpd_base, &period.base_urls);
        for set in &period.sets {
            let set_base = base(&period_base, &set.base_urls);
            for rep in &set.representations {
                let rep_base = base(&set_base, &rep.base_urls);
                let template =
                    SegmentTemplate::inherit(rep.template.as_ref(), set.template.as_ref());
                match template {
                    Some(template) => {
                        for file in expand(&template, rep, period_secs)? {
                            references.insert(join(&rep_base, &file));
                        }
                    }
                    // SegmentBase or a plain file: the BaseURL itself is the media.
                    None => {
                        if !rep_base.is_empty() && !rep_base.ends_with('/') {
                            references.insert(rep_base.clone());
                        }
                    }
                }
                let codecs = rep.codecs.clone().or_else(|| set.codecs.clone());
                let mime = rep.mime_type.as_deref().or(set.mime_type.as_deref());
                let kind = set
                    .content_type
                    .as_deref()
                    .or_else(|| mime.and_then(|m| m.split('/').next()))
                    .map(|kind| match kind {
                        "text" => "subtitles",
                        "application" => codecs.as_deref().map(codec_kind).unwrap_or("other"),
                        "video" => "video",
                        "audio" => "audio",
                        _ => "other",
                    })
                    .unwrap_or("other");
                let width = rep.width.or(set.width);
                let height = rep.height.or(set.height);
                renditions.push(RenditionMeta {
                    kind: kind.into(),
                    bandwidth: rep.bandwidth.map(|b| b as i64),
                    resolution: width.zip(height).map(|(w, h)| format!("{w}x{h}")),
                    codecs,
                    language: set.lang.clone(),
                });
            }
        }
    }
    Ok(Manifest {
        kind: ManifestKind::Dash,
        references: references.into_iter().collect(),
        renditions: sorted(renditions),
        duration_secs: presentation.or(period_sum),
    })
}

/// A `BaseURL` level resolved against its parent: an absolute path or URL is kept whole (ingest then refuses
/// it as outside the folder), a relative one is appended to the parent's folder.
fn base(parent: &str, base_urls: &[String]) -> String {
    match base_urls.first().map(|b| b.trim()) {
        None | Some("") => parent.to_string(),
        Some(url) => join(parent, url),
    }
}

fn join(base: &str, reference: &str) -> String {
    if reference.contains("://") || reference.starts_with('/') {
        return reference.to_string();
    }
    match base.rsplit_once('/') {
        Some((folder, _)) => format!("{folder}/{reference}"),
        None => reference.to_string(),
    }
}

/// The files of one representation under its template, as written: its init section, then its segments. An
/// open-ended repeat (`r="-1"`) is refused: ingest checks a title whose files it can count.
fn expand(
    template: &SegmentTemplate,
    rep: &Representation,
    period_secs: Option<f64>,
) -> Result<Vec<String>, String> {
    if template.repeats_open_ended() {
        return Err("a SegmentTimeline repeat of -1 (open-ended) cannot be checked".into());
    }
    let bandwidth = rep.bandwidth.unwrap_or(0);
    let mut files: Vec<String> = template
        .initialization_file(&rep.id, bandwidth)
        .into_iter()
        .collect();
    files.extend(
        template
            .media_files(&rep.id, bandwidth, period_secs)?
            .into_iter()
            .map(|(file, _)| file),
    );
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_playlist_that_is_not_utf8_is_refused_before_the_parser_sees_it() {
        // The fuzzer's slow input, minimised: a long comment line with one byte that is not UTF-8.
        let mut text = b"#EXTM3U\n".to_vec();
        text.extend(std::iter::repeat_n(b'#', 28_000));
        text.push(0xfe);
        text.extend(std::iter::repeat_n(b'#', 28_000));
        text.push(b'\n');
        let refused = read("master.m3u8", &text).unwrap_err();
        assert!(
            refused.contains("not UTF-8") && refused.contains("28008"),
            "{refused}"
        );
        // The same line in UTF-8 is an ordinary comment.
        let fine = text
            .iter()
            .map(|&b| if b == 0xfe { b'#' } else { b })
            .collect::<Vec<_>>();
        assert!(
            read(
                "master.m3u8",
                &[fine.as_slice(), b"#EXTINF:4,\na.ts\n"].concat()
            )
            .is_ok()
        );
    }

    fn rendition(
        kind: &str,
        bandwidth: Option<i64>,
        resolution: Option<&str>,
        codecs: Option<&str>,
        language: Option<&str>,
    ) -> RenditionMeta {
        RenditionMeta {
            kind: kind.into(),
            bandwidth,
            resolution: resolution.map(Into::into),
            codecs: codecs.map(Into::into),
            language: language.map(Into::into),
        }
    }

    #[test]
    fn hls_master_renditions_and_references() {
        let master = b"#EXTM3U\n#EXT-X-VERSION:6\n\
            #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"English\",LANGUAGE=\"en\",URI=\"audio/index.m3u8\"\n\
            #EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"s\",NAME=\"Deutsch\",LANGUAGE=\"de\",URI=\"subs/de.m3u8\"\n\
            #EXT-X-STREAM-INF:BANDWIDTH=361919,CODECS=\"avc1.4d401e,mp4a.40.2\",RESOLUTION=640x360,AUDIO=\"a\"\n\
            v0/index.m3u8\n\
            #EXT-X-STREAM-INF:BANDWIDTH=189335,CODECS=\"avc1.4d400c,mp4a.40.2\",RESOLUTION=320x180,AUDIO=\"a\"\n\
            v2/index.m3u8\n\
            #EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=9000,URI=\"v0/iframes.m3u8\"\n";
        let manifest = read("hls/master.m3u8", master).unwrap();
        assert_eq!(manifest.kind, ManifestKind::HlsMaster);
        assert_eq!(
            manifest.references,
            [
                "audio/index.m3u8",
                "subs/de.m3u8",
                "v0/iframes.m3u8",
                "v0/index.m3u8",
                "v2/index.m3u8"
            ]
        );
        assert_eq!(
            manifest.renditions,
            [
                rendition(
                    "video",
                    Some(361919),
                    Some("640x360"),
                    Some("avc1.4d401e"),
                    None
                ),
                rendition(
                    "video",
                    Some(189335),
                    Some("320x180"),
                    Some("avc1.4d400c"),
                    None
                ),
                rendition("audio", None, None, Some("mp4a.40.2"), Some("en")),
                rendition("subtitles", None, None, None, Some("de")),
            ]
        );
        assert_eq!(manifest.duration_secs, None);
    }

    #[test]
    fn hls_media_playlist_references_segments_maps_and_keys() {
        let media = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"700@0\"\n\
            #EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\"\n#EXTINF:4.0,\n#EXT-X-BYTERANGE:100@700\nall.mp4\n\
            #EXTINF:3.5,\n#EXT-X-BYTERANGE:100@800\nall.mp4\n#EXTINF:2,\nseg_2.ts\n#EXT-X-ENDLIST\n";
        let manifest = read("v0/index.m3u8", media).unwrap();
        assert_eq!(manifest.kind, ManifestKind::HlsMedia);
        assert_eq!(
            manifest.references,
            ["all.mp4", "init.mp4", "key.bin", "seg_2.ts"]
        );
        assert_eq!(manifest.duration_secs, Some(9.5));
        assert_eq!(
            manifest.renditions,
            [rendition("video", None, None, None, None)]
        );
        let subtitles =
            b"#EXTM3U\n#EXT-X-TARGETDURATION:24\n#EXTINF:24,\n../en.vtt\n#EXT-X-ENDLIST\n";
        assert_eq!(
            read("subs/en.m3u8", subtitles).unwrap().renditions[0].kind,
            "subtitles"
        );
        assert!(read("x.m3u8", b"not a playlist").is_err());
    }

    #[test]
    fn dash_templates_expand_over_timelines_and_durations() {
        let mpd = br#"<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"
            mediaPresentationDuration="PT10S"><Period>
            <AdaptationSet contentType="video" codecs="avc1.64001f" width="1280" height="720">
              <SegmentTemplate timescale="10" duration="40" initialization="i-$RepresentationID$.mp4"
              media="s-$RepresentationID$-$Number%03d$.m4s" startNumber="5"/>
              <Representation id="a" bandwidth="1000"/></AdaptationSet>
            <AdaptationSet mimeType="audio/mp4" lang="fr"><BaseURL>audio/</BaseURL>
              <Representation id="b" bandwidth="2" codecs="mp4a.40.2"><SegmentTemplate media="t-$Time$-$$.m4s"
              initialization="b.init"><SegmentTimeline><S t="0" d="4" r="1"/><S d="2"/></SegmentTimeline>
              </SegmentTemplate></Representation>
              <Representation id="c" bandwidth="3"><BaseURL>c.mp4</BaseURL><SegmentBase indexRange="1-2"/>
              </Representation></AdaptationSet>
            <AdaptationSet contentType="text" lang="en"><Representation id="s"><BaseURL>../subs/en.vtt</BaseURL>
              </Representation></AdaptationSet>
            </Period></MPD>"#;
        let manifest = read("dash/manifest.mpd", mpd).unwrap();
        assert_eq!(manifest.kind, ManifestKind::Dash);
        assert_eq!(
            manifest.references,
            [
                "../subs/en.vtt",
                "audio/b.init",
                "audio/c.mp4",
                "audio/t-0-$.m4s",
                "audio/t-4-$.m4s",
                "audio/t-8-$.m4s",
                "i-a.mp4",
                "s-a-005.m4s",
                "s-a-006.m4s",
                "s-a-007.m4s",
            ]
        );
        assert_eq!(
            manifest.renditions,
            [
                rendition(
                    "video",
                    Some(1000),
                    Some("1280x720"),
                    Some("avc1.64001f"),
                    None
                ),
                rendition("audio", Some(2), None, Some("mp4a.40.2"), Some("fr")),
                rendition("audio", Some(3), None, None, Some("fr")),
                rendition("subtitles", None, None, None, Some("en")),
            ]
        );
        assert_eq!(manifest.duration_secs, Some(10.0));
    }

    #[test]
    fn unusable_mpds_are_refused_with_the_reason() {
        let refused = |mpd: &str| read("m.mpd", mpd.as_bytes()).unwrap_err();
        assert!(refused("<MPD type=\"dynamic\"><Period/></MPD>").contains("dynamic"));
        assert!(refused("<MPD><Period><AdaptationSet>").contains("not a valid MPD"));
        assert!(
            refused("<MPD mediaPresentationDuration=\"10 seconds\"/>")
                .contains("not an ISO 8601 duration")
        );
        assert!(
            refused(
                "<MPD><Period><AdaptationSet><SegmentTemplate media=\"$Number$.m4s\" duration=\"4\"/>\
                 <Representation id=\"a\"/></AdaptationSet></Period></MPD>"
            )
            .contains("needs the period's or the MPD's duration")
        );
        assert!(
            refused(
                "<MPD mediaPresentationDuration=\"PT8S\"><Period><AdaptationSet><SegmentTemplate \
                 media=\"$Time$.m4s\"><SegmentTimeline><S d=\"4\" r=\"-1\"/></SegmentTimeline>\
                 </SegmentTemplate><Representation id=\"a\"/></AdaptationSet></Period></MPD>"
            )
            .contains("open-ended")
        );
    }

    /// Hostile MPDs (from the panic audit): huge repeats and durations, infinite durations, times and numbers
    /// past 2^64, a formatting width past what the formatter takes: refused or read, never a panic or an
    /// allocation without bound.
    #[test]
    fn hostile_mpds_are_refused_not_a_panic() {
        let mpd = |duration: &str, template: &str, timeline: &str| {
            format!(
                "<MPD mediaPresentationDuration=\"{duration}\"><Period><AdaptationSet><SegmentTemplate {template}>\
                 {timeline}</SegmentTemplate><Representation id=\"a\"/></AdaptationSet></Period></MPD>"
            )
        };
        let timeline = |s: &str| format!("<SegmentTimeline>{s}</SegmentTimeline>");
        for (text, reason) in [
            (
                mpd(
                    "PT8S",
                    "media=\"$Time$.m4s\"",
                    &timeline("<S d=\"1\" r=\"100000000000\"/>"),
                ),
                "more than",
            ),
            (
                mpd("PTinfS", "media=\"$Number$.m4s\" duration=\"1\"", ""),
                "ISO 8601",
            ),
            (
                mpd("PT100000000H", "media=\"$Number$.m4s\" duration=\"1\"", ""),
                "more than",
            ),
            (
                mpd(
                    "PT8S",
                    "media=\"$Time$.m4s\"",
                    &timeline("<S t=\"18446744073709551615\" d=\"4\" r=\"1\"/>"),
                ),
                "2^64",
            ),
            (
                mpd(
                    "PT8S",
                    "media=\"$Number$.m4s\" duration=\"4\" startNumber=\"18446744073709551615\"",
                    "",
                ),
                "2^64",
            ),
        ] {
            let refused = read("m.mpd", text.as_bytes()).unwrap_err();
            assert!(refused.contains(reason), "{text}: {refused}");
        }
        let wide = mpd(
            "PT8S",
            "media=\"s-$Number%070000d$.m4s\" duration=\"4\"",
            "",
        );
        let read = read("m.mpd", wide.as_bytes()).expect("read, its width capped");
        assert!(format!("{read:?}").contains(&format!("s-{}2.m4s", "0".repeat(31))));
    }

    #[test]
    fn iso_durations() {
        assert_eq!(iso_duration("PT1H2M3.5S"), Ok(3723.5));
        assert_eq!(iso_duration("P1DT1S"), Ok(86401.0));
        assert_eq!(iso_duration("PT24.0S"), Ok(24.0));
        assert!(iso_duration("PT5").is_err());
        assert!(iso_duration("1H").is_err());
    }

    #[test]
    fn codec_kinds() {
        assert_eq!(codec_kind("avc1.4d401e"), "video");
        assert_eq!(codec_kind("hvc1.2.4.L120.B0"), "video");
        assert_eq!(codec_kind("mp4a.40.2"), "audio");
        assert_eq!(codec_kind("ec-3"), "audio");
        assert_eq!(codec_kind("wvtt"), "subtitles");
        assert_eq!(codec_kind("xyz"), "other");
    }

    proptest::proptest! {
        /// Whatever a packaged folder's manifest holds (HLS or DASH, broken, hostile), reading it answers: a
        /// manifest or a reason, never a panic.
        #[test]
        fn any_manifest_text_is_read_or_refused(
            text in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just("#EXTM3U".to_string()),
                    "#EXT-X-STREAM-INF:BANDWIDTH=[0-9]{0,12},RESOLUTION=[0-9x]{0,9},CODECS=\"[a-z0-9.,]{0,12}\"",
                    "#EXT-X-MAP:URI=\"[a-z0-9_./%-]{0,16}\"(,BYTERANGE=\"[0-9@]{0,12}\")?",
                    "#EXT-X-BYTERANGE:[0-9@]{0,24}",
                    "#EXTINF:[0-9.,]{0,10}",
                    "[a-z0-9_./%-]{0,20}",
                    "<MPD mediaPresentationDuration=\"[PTHMS0-9.]{0,14}\"><Period><AdaptationSet>",
                    "<SegmentTemplate media=\"[a-z$%0-9_.]{0,20}\" initialization=\"[a-z$0-9_.]{0,12}\" duration=\"[0-9]{0,20}\" timescale=\"[0-9]{0,20}\"( startNumber=\"[0-9]{0,20}\")?/>",
                    "<S t=\"[0-9]{0,20}\" d=\"[0-9]{0,20}\"( r=\"-?[0-9]{0,20}\")?/>",
                    "<Representation id=\"[a-z0-9$]{0,6}\" bandwidth=\"[0-9]{0,20}\">",
                    "</[A-Za-z]{0,14}>",
                    "[ -~]{0,30}",
                ],
                0..14,
            ),
            dash in proptest::bool::ANY,
        ) {
            let name = if dash { "manifest.mpd" } else { "master.m3u8" };
            let _ = read(name, text.join("\n").as_bytes());
        }
    }
}
