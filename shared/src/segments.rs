//! What a player will ask for next: the ordered segments of every rendition a manifest describes, read without
//! I/O from an HLS media playlist or a DASH MPD, and from a single-file rendition's `sidx` box. Addressing modes:
//! HLS URIs with or without `EXT-X-BYTERANGE` (an offset left out continues the previous range of the same file),
//! `EXT-X-MAP` init sections and discontinuities; DASH `SegmentTemplate` (`$Number$` and `$Time$`, with and
//! without a `SegmentTimeline`, inherited from the adaptation set attribute by attribute), `SegmentList`
//! (`SegmentURL@media`/`@mediaRange`), and `SegmentBase` (one file whose segments are byte ranges its `sidx`
//! lists, read by [`sidx_segments`] once the index range is known). `BaseURL` is resolved at every level.
//!
//! Paths are the object paths a request for the segment names: absolute (`/titles/x/v0/seg_001.ts`), dot
//! segments resolved; a reference to another host (`https://…`) or above the root is left out, since nothing
//! here may ask another host for anything. The edge's prefetch finds a request's segment with
//! [`Rendition::position`] and warms [`Rendition::after`].

use serde::Deserialize;

/// Segments one rendition may list: a day of 100 ms parts, far past any title.
pub const MAX_SEGMENTS: usize = 1_000_000;
/// The widest `$Number%0Nd$` formatted.
const MAX_NUMBER_WIDTH: usize = 32;

/// An inclusive byte range (`start..=end`), as `Range: bytes=start-end` asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    /// The range of `length` bytes from `start`, if it has any and fits in 64 bits.
    pub fn of_length(start: u64, length: u64) -> Option<ByteRange> {
        let end = start.checked_add(length.checked_sub(1)?)?;
        Some(ByteRange { start, end })
    }

    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// `start-end`, as written in MPDs and CMCD's `nrr`.
    pub fn parse(text: &str) -> Option<ByteRange> {
        let (start, end) = text.trim().split_once('-')?;
        let (start, end) = (start.trim().parse().ok()?, end.trim().parse().ok()?);
        (start <= end).then_some(ByteRange { start, end })
    }
}

/// One object a player fetches: a path, and the part of it when it is a byte range of a larger file.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub path: String,
    pub range: Option<ByteRange>,
    /// Its media duration (0 when the manifest does not say, as for init sections).
    pub duration_secs: f64,
    /// A discontinuity comes before it (HLS `EXT-X-DISCONTINUITY`, a new DASH period).
    pub discontinuity: bool,
}

/// One rendition (an HLS media playlist, a DASH representation): its segments in play order.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// The playlist's path (HLS), or `<mpd path>#<period id>/<representation id>` (DASH).
    pub id: String,
    /// The first init section (HLS `EXT-X-MAP`, DASH `Initialization`), if any.
    pub init: Option<Segment>,
    pub segments: Vec<Segment>,
    /// No segment will be added (HLS `EXT-X-ENDLIST`, a static MPD).
    pub complete: bool,
    /// A DASH `SegmentBase` file whose segments its `sidx` box lists (`segments` is empty until
    /// [`sidx_segments`] reads it): the file's path and the index range.
    pub index: Option<(String, ByteRange)>,
    /// What it carries, when its manifest says (a DASH representation; an HLS media playlist does not, its master
    /// playlist does: [`hls_master`]).
    pub kind: Option<Kind>,
}

/// What a rendition carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Video, at this many bits per second (0 when not said).
    Video {
        bandwidth: u64,
    },
    Audio,
    /// Subtitles, captions, anything else.
    Other,
}

/// Checks that `text` is UTF-8 (RFC 8216 §4.1; and m3u8-rs takes time quadratic in a line's length otherwise) and
/// a playlist of the kind wanted.
fn check_playlist(text: &[u8], master: bool) -> Result<(), ReadError> {
    std::str::from_utf8(text).map_err(|e| format!("not UTF-8 at byte {}", e.valid_up_to()))?;
    match (m3u8_rs::is_master_playlist(text), master) {
        (true, false) => Err("a master playlist lists renditions, not segments".into()),
        (false, true) => Err("a media playlist lists segments, not renditions".into()),
        _ => Ok(()),
    }
}

/// Why m3u8-rs could not read a playlist, cut short.
fn unreadable(what: &str, error: impl std::fmt::Display) -> ReadError {
    let mut detail = error.to_string();
    detail.truncate(120);
    format!("not an HLS {what}: {detail}")
}

/// A rendition a master playlist names: its media playlist's path and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub path: String,
    pub kind: Kind,
}

/// The renditions an HLS master playlist at `master_path` names: its variant streams (video, by `BANDWIDTH`; an
/// audio-only variant, `CODECS` of audio alone, is audio) and its `EXT-X-MEDIA` renditions with a `URI`. I-frame
/// playlists are left out (players fetch them only to scrub).
pub fn hls_master(master_path: &str, text: &[u8]) -> Result<Vec<Listed>, ReadError> {
    check_playlist(text, true)?;
    let playlist =
        m3u8_rs::parse_master_playlist_res(text).map_err(|e| unreadable("master playlist", e))?;
    let mut listed = Vec::new();
    for variant in playlist.variants.iter().filter(|v| !v.is_i_frame) {
        let audio_only = variant.codecs.as_deref().is_some_and(|codecs| {
            codecs.split(',').all(|c| {
                c.trim().starts_with("mp4a")
                    || c.trim().starts_with("ac-3")
                    || c.trim().starts_with("ec-3")
            })
        });
        let kind = if audio_only {
            Kind::Audio
        } else {
            Kind::Video {
                bandwidth: variant.bandwidth,
            }
        };
        if let Some(path) = resolve(master_path, &variant.uri) {
            listed.push(Listed { path, kind });
        }
    }
    for media in &playlist.alternatives {
        let kind = match media.media_type {
            m3u8_rs::AlternativeMediaType::Audio => Kind::Audio,
            m3u8_rs::AlternativeMediaType::Video => Kind::Video { bandwidth: 0 },
            _ => Kind::Other,
        };
        if let Some(path) = media
            .uri
            .as_deref()
            .and_then(|uri| resolve(master_path, uri))
        {
            listed.push(Listed { path, kind });
        }
    }
    Ok(listed)
}

impl Rendition {
    /// The index of the segment a request for `path` (and `range`, for a byte range of a file) asks for: the
    /// one whose range starts where the request's does, else the one holding the request's first byte.
    pub fn position(&self, path: &str, range: Option<ByteRange>) -> Option<usize> {
        self.position_from(0, path, range)
    }

    /// [`position`](Self::position), knowing that no segment before `first` is of `path` (an index that keeps
    /// each file's first position finds a whole-file segment at once).
    pub fn position_from(
        &self,
        first: usize,
        path: &str,
        range: Option<ByteRange>,
    ) -> Option<usize> {
        let same_file = |s: &Segment| s.path == path;
        let rest = self.segments.get(first..)?;
        let found = match range {
            None => rest.iter().position(|s| same_file(s) && s.range.is_none()),
            Some(asked) => rest
                .iter()
                .position(|s| same_file(s) && s.range.is_some_and(|r| r.start == asked.start))
                .or_else(|| {
                    rest.iter().position(|s| {
                        same_file(s)
                            && s.range
                                .is_some_and(|r| r.start <= asked.start && asked.start <= r.end)
                    })
                }),
        };
        found.map(|i| first + i)
    }

    /// Up to `k` segments after the one a request for `path` and `range` asks for.
    pub fn after(&self, path: &str, range: Option<ByteRange>, k: usize) -> &[Segment] {
        self.position(path, range)
            .map_or(&[], |i| self.following(i, k))
    }

    /// Up to `k` segments after the one at `position`.
    pub fn following(&self, position: usize, k: usize) -> &[Segment] {
        let from = (position + 1).min(self.segments.len());
        &self.segments[from..(from + k).min(self.segments.len())]
    }
}

/// Why a manifest could not be read.
pub type ReadError = String;

/// The path a reference in the manifest at `manifest_path` names: relative references resolve against the
/// manifest's folder, dot segments are resolved; `None` for another host or a path above the root.
pub fn resolve(manifest_path: &str, reference: &str) -> Option<String> {
    let reference = reference.trim();
    if reference.is_empty() || reference.contains("://") || reference.starts_with("//") {
        return None;
    }
    let joined = if reference.starts_with('/') {
        reference.to_string()
    } else {
        let folder = manifest_path
            .rsplit_once('/')
            .map_or("", |(folder, _)| folder);
        format!("{folder}/{reference}")
    };
    let (path, query) = match joined.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (joined.as_str(), None),
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    let mut out = format!("/{}", parts.join("/"));
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// An HLS media playlist at `playlist_path`, read. A master playlist (no segments, variant streams) is an error.
pub fn hls_media(playlist_path: &str, text: &[u8]) -> Result<Rendition, ReadError> {
    check_playlist(text, false)?;
    let playlist =
        m3u8_rs::parse_media_playlist_res(text).map_err(|e| unreadable("media playlist", e))?;
    if playlist.segments.len() > MAX_SEGMENTS {
        return Err(format!("more than {MAX_SEGMENTS} segments"));
    }
    let mut segments = Vec::with_capacity(playlist.segments.len());
    let mut init = None;
    // Where the next range of each file starts when its offset is left out (RFC 8216 §4.3.2.2).
    let mut next_offset: Option<(String, u64)> = None;
    for segment in &playlist.segments {
        if let Some(map) = &segment.map
            && init.is_none()
            && let Some(path) = resolve(playlist_path, &map.uri)
        {
            init = Some(Segment {
                path,
                range: map
                    .byte_range
                    .as_ref()
                    .and_then(|r| ByteRange::of_length(r.offset.unwrap_or(0), r.length)),
                duration_secs: 0.0,
                discontinuity: false,
            });
        }
        let Some(path) = resolve(playlist_path, &segment.uri) else {
            next_offset = None;
            continue;
        };
        let range = match &segment.byte_range {
            None => None,
            Some(r) => {
                let start = match (r.offset, &next_offset) {
                    (Some(offset), _) => offset,
                    (None, Some((file, offset))) if *file == path => *offset,
                    // An offset left out after another file's segment: the range cannot be known.
                    (None, _) => {
                        next_offset = None;
                        continue;
                    }
                };
                let range = ByteRange::of_length(start, r.length)
                    .ok_or_else(|| format!("a byte range of {path} passes 2^64"))?;
                next_offset = Some((path.clone(), range.end + 1));
                Some(range)
            }
        };
        segments.push(Segment {
            path,
            range,
            duration_secs: f64::from(segment.duration).max(0.0),
            discontinuity: segment.discontinuity,
        });
    }
    Ok(Rendition {
        id: playlist_path.to_string(),
        init,
        segments,
        complete: playlist.end_list,
        index: None,
        kind: None,
    })
}

/// Every representation of a DASH MPD at `mpd_path`, period by period.
pub fn dash(mpd_path: &str, text: &[u8]) -> Result<Vec<Rendition>, ReadError> {
    let text = std::str::from_utf8(text).map_err(|_| "an MPD must be UTF-8".to_string())?;
    let mpd: Mpd = quick_xml::de::from_str(text).map_err(|e| {
        let mut detail = e.to_string();
        detail.truncate(160);
        format!("not a valid MPD: {detail}")
    })?;
    let complete = mpd.kind.as_deref() != Some("dynamic");
    let presentation = mpd.duration.as_deref().map(iso_duration).transpose()?;
    let mpd_base = base(Some(mpd_path.to_string()), &mpd.base_urls);
    let mut renditions = Vec::new();
    let single_period = mpd.periods.len() == 1;
    for (p, period) in mpd.periods.iter().enumerate() {
        let period_secs = period
            .duration
            .as_deref()
            .map(iso_duration)
            .transpose()?
            .or(if single_period { presentation } else { None });
        let period_base = base(mpd_base.clone(), &period.base_urls);
        let period_id = period.id.clone().unwrap_or_else(|| p.to_string());
        for set in &period.sets {
            let set_base = base(period_base.clone(), &set.base_urls);
            for rep in &set.representations {
                let mut rendition = Rendition {
                    id: format!("{mpd_path}#{period_id}/{}", rep.id),
                    init: None,
                    segments: Vec::new(),
                    complete,
                    index: None,
                    kind: Some(rep.kind(set)),
                };
                // Under a BaseURL of another host nothing is addressed here.
                let Some(rep_base) = base(set_base.clone(), &rep.base_urls) else {
                    renditions.push(rendition);
                    continue;
                };
                // The file a BaseURL chain names (none when it names a folder or nothing).
                let media_file =
                    (rep_base != mpd_path && !rep_base.ends_with('/')).then(|| rep_base.clone());
                let template =
                    SegmentTemplate::inherit(rep.template.as_ref(), set.template.as_ref());
                let list = rep.list.as_ref().or(set.list.as_ref());
                let segment_base = rep.segment_base.as_ref().or(set.segment_base.as_ref());
                if let Some(template) = template {
                    expand_template(&template, rep, period_secs, &rep_base, &mut rendition)?;
                } else if let Some(list) = list {
                    expand_list(list, &rep_base, media_file, &mut rendition)?;
                } else if let Some(path) = media_file {
                    match segment_base {
                        // One file, its segments listed by its sidx.
                        Some(segment_base) => {
                            rendition.init = segment_base
                                .initialization
                                .as_ref()
                                .and_then(|i| i.range.as_deref())
                                .and_then(ByteRange::parse)
                                .map(|range| Segment {
                                    path: path.clone(),
                                    range: Some(range),
                                    duration_secs: 0.0,
                                    discontinuity: false,
                                });
                            rendition.index = segment_base
                                .index_range
                                .as_deref()
                                .and_then(ByteRange::parse)
                                .map(|range| (path, range));
                        }
                        // A plain file (subtitles, say): one segment, the whole of it.
                        None => rendition.segments.push(Segment {
                            path,
                            range: None,
                            duration_secs: period_secs.unwrap_or(0.0),
                            discontinuity: false,
                        }),
                    }
                }
                if p > 0
                    && let Some(first) = rendition.segments.first_mut()
                {
                    first.discontinuity = true;
                }
                renditions.push(rendition);
            }
        }
    }
    Ok(renditions)
}

/// The segments of a single-file rendition from its `sidx` box (ISO/IEC 14496-12 §8.16.3): `bytes` are the
/// index range `index` of the file at `path`. Each reference is one segment; its bytes follow the box's end
/// plus `first_offset`. A hierarchical index (a reference to another `sidx`) is refused.
pub fn sidx_segments(
    path: &str,
    index: ByteRange,
    bytes: &[u8],
) -> Result<Vec<Segment>, ReadError> {
    let mut at = 0usize;
    // Skip boxes before the sidx (an index range may begin with a `styp`).
    loop {
        let size = read_u32(bytes, at)? as usize;
        let kind = bytes
            .get(at + 4..at + 8)
            .ok_or("the index ends inside a box header")?;
        if kind == b"sidx" {
            break;
        }
        if size < 8 {
            return Err("a box of fewer than 8 bytes".into());
        }
        at = at.checked_add(size).ok_or("a box past 2^64")?;
    }
    let box_size = read_u32(bytes, at)? as u64;
    let version = *bytes.get(at + 8).ok_or("the sidx box is cut short")?;
    let mut p = at + 12 + 4; // version+flags, reference_ID
    let timescale = u64::from(read_u32(bytes, p)?).max(1);
    p += 4;
    let first_offset = if version == 0 {
        p += 4; // earliest_presentation_time
        let offset = u64::from(read_u32(bytes, p)?);
        p += 4;
        offset
    } else {
        p += 8;
        let offset = read_u64(bytes, p)?;
        p += 8;
        offset
    };
    p += 2; // reserved
    let count = u16::from_be_bytes(read_be(bytes, p)?) as usize;
    p += 2;
    let box_end = index
        .start
        .checked_add(at as u64)
        .and_then(|s| s.checked_add(box_size))
        .ok_or("the sidx box ends past 2^64")?;
    let mut start = box_end
        .checked_add(first_offset)
        .ok_or("the first segment starts past 2^64")?;
    let mut segments = Vec::with_capacity(count);
    for _ in 0..count {
        let word = read_u32(bytes, p)?;
        let duration = read_u32(bytes, p + 4)?;
        p += 12;
        if word & 0x8000_0000 != 0 {
            return Err("a hierarchical sidx (a reference to another index) is not read".into());
        }
        let size = u64::from(word & 0x7fff_ffff);
        let range = ByteRange::of_length(start, size).ok_or("a segment past 2^64 or empty")?;
        segments.push(Segment {
            path: path.to_string(),
            range: Some(range),
            duration_secs: f64::from(duration) / timescale as f64,
            discontinuity: false,
        });
        start = range.end + 1;
    }
    Ok(segments)
}

/// `N` big-endian bytes of `bytes` at `at`, or an error when they run out.
fn read_be<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], ReadError> {
    bytes
        .get(at..at.checked_add(N).ok_or("past 2^64")?)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "the index is cut short".to_string())
}

fn read_u32(bytes: &[u8], at: usize) -> Result<u32, ReadError> {
    read_be(bytes, at).map(u32::from_be_bytes)
}

fn read_u64(bytes: &[u8], at: usize) -> Result<u64, ReadError> {
    read_be(bytes, at).map(u64::from_be_bytes)
}

/// A `BaseURL` level resolved against its parent (the MPD's own path at the top); `None` under a `BaseURL` of
/// another host, or one above the root.
fn base(parent: Option<String>, base_urls: &[String]) -> Option<String> {
    let parent = parent?;
    match base_urls.first().map(|b| b.trim()) {
        None | Some("") => Some(parent),
        Some(url) => {
            let resolved = resolve(&parent, url)?;
            // A folder keeps its slash: references resolve inside it.
            Some(if url.ends_with('/') && !resolved.ends_with('/') {
                format!("{resolved}/")
            } else {
                resolved
            })
        }
    }
}

/// `$Identifier$` substitution in a `SegmentTemplate` (ISO/IEC 23009-1 §5.3.9.4.4): `$RepresentationID$`,
/// `$Bandwidth$`, `$Number$` and `$Time$` (with `%0Nd` widths), `$$`; an unknown identifier is kept as written.
pub fn fill_template(
    pattern: &str,
    representation_id: &str,
    bandwidth: u64,
    number: u64,
    time: u64,
) -> String {
    let mut out = String::new();
    let mut parts = pattern.split('$');
    out.push_str(parts.next().unwrap_or(""));
    let mut inside = true;
    for part in parts {
        if inside {
            let (name, format) = part.split_once('%').unwrap_or((part, ""));
            // A width past what a file name needs is not formatted (the formatter panics past 65535).
            let width = format
                .strip_prefix('0')
                .and_then(|f| f.strip_suffix('d'))
                .and_then(|w| w.parse::<usize>().ok())
                .unwrap_or(0)
                .min(MAX_NUMBER_WIDTH);
            match name {
                "" => out.push('$'),
                "RepresentationID" => out.push_str(representation_id),
                "Bandwidth" => out.push_str(&format!("{bandwidth:0width$}")),
                "Number" => out.push_str(&format!("{number:0width$}")),
                "Time" => out.push_str(&format!("{time:0width$}")),
                other => {
                    out.push('$');
                    out.push_str(other);
                    out.push('$');
                }
            }
        } else {
            out.push_str(part);
        }
        inside = !inside;
    }
    out
}

fn expand_template(
    template: &SegmentTemplate,
    rep: &Representation,
    period_secs: Option<f64>,
    rep_base: &str,
    rendition: &mut Rendition,
) -> Result<(), ReadError> {
    let bandwidth = rep.bandwidth.unwrap_or(0);
    rendition.init = template
        .initialization_file(&rep.id, bandwidth)
        .and_then(|file| resolve(rep_base, &file))
        .map(|path| Segment {
            path,
            range: None,
            duration_secs: 0.0,
            discontinuity: false,
        });
    for (file, duration_secs) in template.media_files(&rep.id, bandwidth, period_secs)? {
        if let Some(path) = resolve(rep_base, &file) {
            rendition.segments.push(Segment {
                path,
                range: None,
                duration_secs,
                discontinuity: false,
            });
        }
    }
    Ok(())
}

fn expand_list(
    list: &SegmentList,
    rep_base: &str,
    own_file: Option<String>,
    rendition: &mut Rendition,
) -> Result<(), ReadError> {
    if list.urls.len() > MAX_SEGMENTS {
        return Err(format!(
            "a SegmentList lists more than {MAX_SEGMENTS} segments"
        ));
    }
    let timescale = list.timescale.unwrap_or(1).max(1) as f64;
    let duration_secs = list.duration.map_or(0.0, |d| d as f64 / timescale);
    // A SegmentURL without @media is the BaseURL's file itself (ranges of it).
    let target = |media: Option<&str>| match media {
        Some(media) => resolve(rep_base, media),
        None => own_file.clone(),
    };
    if let Some(init) = &list.initialization {
        rendition.init = target(init.source_url.as_deref()).map(|path| Segment {
            path,
            range: init.range.as_deref().and_then(ByteRange::parse),
            duration_secs: 0.0,
            discontinuity: false,
        });
    }
    for url in &list.urls {
        if let Some(path) = target(url.media.as_deref()) {
            rendition.segments.push(Segment {
                path,
                range: url.media_range.as_deref().and_then(ByteRange::parse),
                duration_secs,
                discontinuity: false,
            });
        }
    }
    Ok(())
}

/// ISO 8601 duration (`PT1H2M3.5S`) in seconds.
pub fn iso_duration(text: &str) -> Result<f64, ReadError> {
    let bad = || format!("`{text}` is not an ISO 8601 duration");
    let rest = text.trim().strip_prefix('P').ok_or_else(bad)?;
    let (days, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut seconds = 0.0;
    if let Some(d) = days.strip_suffix('D') {
        seconds += d.parse::<f64>().map_err(|_| bad())? * 86400.0;
    } else if !days.is_empty() {
        return Err(bad());
    }
    let mut number = String::new();
    for c in time.chars() {
        match c {
            'H' | 'M' | 'S' => {
                let n: f64 = number.parse().map_err(|_| bad())?;
                seconds += n * match c {
                    'H' => 3600.0,
                    'M' => 60.0,
                    _ => 1.0,
                };
                number.clear();
            }
            c => number.push(c),
        }
    }
    if !number.is_empty() || !seconds.is_finite() || seconds < 0.0 {
        return Err(bad());
    }
    Ok(seconds)
}

// The subset of the MPD schema (ISO/IEC 23009-1) that addresses segments.

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
    #[serde(rename = "@id")]
    id: Option<String>,
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
    #[serde(rename = "BaseURL", default)]
    base_urls: Vec<String>,
    #[serde(rename = "SegmentTemplate")]
    template: Option<SegmentTemplate>,
    #[serde(rename = "SegmentList")]
    list: Option<SegmentList>,
    #[serde(rename = "SegmentBase")]
    segment_base: Option<SegmentBase>,
    #[serde(rename = "Representation", default)]
    representations: Vec<Representation>,
}

#[derive(Debug, Deserialize)]
struct Representation {
    #[serde(rename = "@id", default)]
    id: String,
    #[serde(rename = "@bandwidth")]
    bandwidth: Option<u64>,
    #[serde(rename = "@mimeType")]
    mime_type: Option<String>,
    #[serde(rename = "BaseURL", default)]
    base_urls: Vec<String>,
    #[serde(rename = "SegmentTemplate")]
    template: Option<SegmentTemplate>,
    #[serde(rename = "SegmentList")]
    list: Option<SegmentList>,
    #[serde(rename = "SegmentBase")]
    segment_base: Option<SegmentBase>,
}

impl Representation {
    /// What it carries: the set's `contentType`, else the representation's or the set's `mimeType`.
    fn kind(&self, set: &AdaptationSet) -> Kind {
        let said = set
            .content_type
            .as_deref()
            .or(self.mime_type.as_deref())
            .or(set.mime_type.as_deref())
            .unwrap_or("video");
        match said.split('/').next().unwrap_or_default() {
            "video" => Kind::Video {
                bandwidth: self.bandwidth.unwrap_or(0),
            },
            "audio" => Kind::Audio,
            _ => Kind::Other,
        }
    }
}

/// A `SegmentTemplate` (ISO/IEC 23009-1 §5.3.9.4), as an MPD's serde model may hold it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SegmentTemplate {
    #[serde(rename = "@media")]
    media: Option<String>,
    #[serde(rename = "@initialization")]
    initialization: Option<String>,
    #[serde(rename = "@startNumber")]
    start_number: Option<u64>,
    #[serde(rename = "@timescale")]
    timescale: Option<u64>,
    #[serde(rename = "@duration")]
    duration: Option<u64>,
    #[serde(rename = "SegmentTimeline")]
    timeline: Option<SegmentTimeline>,
}

impl SegmentTemplate {
    /// A representation's template over its adaptation set's, attribute by attribute (§5.3.9.1).
    pub fn inherit(own: Option<&Self>, set: Option<&Self>) -> Option<Self> {
        match (own, set) {
            (None, None) => None,
            (Some(t), None) | (None, Some(t)) => Some(t.clone()),
            (Some(own), Some(set)) => Some(SegmentTemplate {
                media: own.media.clone().or_else(|| set.media.clone()),
                initialization: own
                    .initialization
                    .clone()
                    .or_else(|| set.initialization.clone()),
                start_number: own.start_number.or(set.start_number),
                timescale: own.timescale.or(set.timescale),
                duration: own.duration.or(set.duration),
                timeline: own.timeline.clone().or_else(|| set.timeline.clone()),
            }),
        }
    }
}

impl SegmentTemplate {
    /// Whether its timeline repeats an entry to an end it does not say (`r="-1"`).
    pub fn repeats_open_ended(&self) -> bool {
        self.timeline
            .as_ref()
            .is_some_and(|t| t.entries.iter().any(|e| e.r < 0))
    }

    /// The init section's file name for a representation, as written (relative to its `BaseURL`).
    pub fn initialization_file(&self, representation_id: &str, bandwidth: u64) -> Option<String> {
        let init = self.initialization.as_ref()?;
        Some(fill_template(init, representation_id, bandwidth, 0, 0))
    }

    /// The media segments' file names for a representation, as written, with their durations in seconds: over
    /// the timeline (an `r="-1"` repeats to the next entry's time or the period's end), or the period's
    /// duration divided by `@duration`.
    pub fn media_files(
        &self,
        representation_id: &str,
        bandwidth: u64,
        period_secs: Option<f64>,
    ) -> Result<Vec<(String, f64)>, ReadError> {
        let Some(media) = &self.media else {
            return Ok(Vec::new());
        };
        let timescale = self.timescale.unwrap_or(1).max(1) as f64;
        let start_number = self.start_number.unwrap_or(1);
        let too_many = || format!("a representation lists more than {MAX_SEGMENTS} segments");
        let overflow = || "a SegmentTimeline's times pass 2^64".to_string();
        // (time, duration) of each segment, in the timescale.
        let mut times: Vec<(u64, u64)> = Vec::new();
        if let Some(timeline) = self.timeline.as_ref().filter(|t| !t.entries.is_empty()) {
            let mut next = 0u64;
            for (i, entry) in timeline.entries.iter().enumerate() {
                let start = entry.t.unwrap_or(next);
                let repeats = if entry.r >= 0 {
                    entry.r as u64
                } else {
                    let until = timeline
                        .entries
                        .get(i + 1)
                        .and_then(|e| e.t)
                        .or_else(|| period_secs.map(|secs| (secs * timescale) as u64));
                    match until {
                        Some(until) if entry.d > 0 && until > start => {
                            (until - start).div_ceil(entry.d).saturating_sub(1)
                        }
                        _ => 0,
                    }
                };
                if times.len() as u64 + repeats >= MAX_SEGMENTS as u64 {
                    return Err(too_many());
                }
                for k in 0..=repeats {
                    let time = entry.d.checked_mul(k).and_then(|d| start.checked_add(d));
                    times.push((time.ok_or_else(overflow)?, entry.d));
                }
                next = entry
                    .d
                    .checked_mul(repeats + 1)
                    .and_then(|d| start.checked_add(d))
                    .ok_or_else(overflow)?;
            }
        } else {
            let duration = self
                .duration
                .filter(|d| *d > 0)
                .ok_or("a SegmentTemplate has neither a SegmentTimeline nor a duration")?;
            let total = period_secs
                .ok_or("a SegmentTemplate@duration needs the period's or the MPD's duration")?;
            let count = (total / (duration as f64 / timescale)).ceil();
            if !(0.0..MAX_SEGMENTS as f64).contains(&count) {
                return Err(too_many());
            }
            for i in 0..count as u64 {
                times.push((i.checked_mul(duration).ok_or_else(overflow)?, duration));
            }
        }
        times
            .into_iter()
            .enumerate()
            .map(|(i, (time, duration))| {
                let number = start_number
                    .checked_add(i as u64)
                    .ok_or("a SegmentTemplate's numbers pass 2^64")?;
                Ok((
                    fill_template(media, representation_id, bandwidth, number, time),
                    duration as f64 / timescale,
                ))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SegmentTimeline {
    #[serde(rename = "S", default)]
    entries: Vec<TimelineEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TimelineEntry {
    #[serde(rename = "@t")]
    t: Option<u64>,
    #[serde(rename = "@d")]
    d: u64,
    #[serde(rename = "@r", default)]
    r: i64,
}

#[derive(Debug, Deserialize)]
struct SegmentList {
    #[serde(rename = "@timescale")]
    timescale: Option<u64>,
    #[serde(rename = "@duration")]
    duration: Option<u64>,
    #[serde(rename = "Initialization")]
    initialization: Option<Initialization>,
    #[serde(rename = "SegmentURL", default)]
    urls: Vec<SegmentUrl>,
}

#[derive(Debug, Deserialize)]
struct SegmentUrl {
    #[serde(rename = "@media")]
    media: Option<String>,
    #[serde(rename = "@mediaRange")]
    media_range: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SegmentBase {
    #[serde(rename = "@indexRange")]
    index_range: Option<String>,
    #[serde(rename = "Initialization")]
    initialization: Option<Initialization>,
}

#[derive(Debug, Deserialize)]
struct Initialization {
    #[serde(rename = "@sourceURL")]
    source_url: Option<String>,
    #[serde(rename = "@range")]
    range: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(path: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../origin/sample-content/titles")
                .join(path),
        )
        .unwrap()
    }

    fn paths(segments: &[Segment]) -> Vec<String> {
        segments
            .iter()
            .map(|s| match s.range {
                Some(r) => format!("{}@{}-{}", s.path, r.start, r.end),
                None => s.path.clone(),
            })
            .collect()
    }

    #[test]
    fn references_resolve_against_the_manifest_and_never_leave_the_host_or_the_root() {
        let table = [
            (
                "/t/x/hls/v0/index.m3u8",
                "seg_001.ts",
                Some("/t/x/hls/v0/seg_001.ts"),
            ),
            (
                "/t/x/hls/v0/index.m3u8",
                "../subs/en.vtt",
                Some("/t/x/hls/subs/en.vtt"),
            ),
            (
                "/t/x/hls/v0/index.m3u8",
                "./a/./b.ts",
                Some("/t/x/hls/v0/a/b.ts"),
            ),
            ("/t/x/m.mpd", "/other/seg.m4s", Some("/other/seg.m4s")),
            (
                "/t/x/m.mpd",
                "seg.m4s?token=1",
                Some("/t/x/seg.m4s?token=1"),
            ),
            ("/a/m.mpd", "../../../etc/passwd", None),
            ("/a/m.mpd", "https://elsewhere.example/seg.ts", None),
            ("/a/m.mpd", "//elsewhere.example/seg.ts", None),
            ("/a/m.mpd", "", None),
        ];
        for (manifest, reference, want) in table {
            assert_eq!(resolve(manifest, reference).as_deref(), want, "{reference}");
        }
    }

    #[test]
    fn an_hls_playlist_of_files_gives_each_file_in_order() {
        let text = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:0\n\
            #EXTINF:4.0,\nseg_000.ts\n#EXTINF:4.0,\nseg_001.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2.5,\nad/seg_000.ts\n\
            #EXTINF:4.0,\nhttps://elsewhere.example/x.ts\n#EXTINF:4.0,\nseg_002.ts\n";
        let r = hls_media("/t/x/hls/v0/index.m3u8", text).unwrap();
        assert_eq!(
            paths(&r.segments),
            [
                "/t/x/hls/v0/seg_000.ts",
                "/t/x/hls/v0/seg_001.ts",
                "/t/x/hls/v0/ad/seg_000.ts",
                "/t/x/hls/v0/seg_002.ts"
            ]
        );
        assert!(r.segments[2].discontinuity && !r.segments[1].discontinuity);
        assert_eq!(r.segments[2].duration_secs, 2.5);
        assert!(!r.complete, "no EXT-X-ENDLIST: more may come");
        // Next segments: across the discontinuity, none past the end, none for a file not listed.
        assert_eq!(
            paths(r.after("/t/x/hls/v0/seg_001.ts", None, 2)),
            ["/t/x/hls/v0/ad/seg_000.ts", "/t/x/hls/v0/seg_002.ts"]
        );
        assert!(r.after("/t/x/hls/v0/seg_002.ts", None, 3).is_empty());
        assert!(r.after("/t/x/hls/v0/seg_009.ts", None, 3).is_empty());
    }

    #[test]
    fn an_hls_playlist_of_byte_ranges_continues_each_range_where_the_last_ended() {
        let text = b"#EXTM3U\n#EXT-X-VERSION:6\n#EXT-X-TARGETDURATION:4\n\
            #EXT-X-MAP:URI=\"v0.mp4\",BYTERANGE=\"760@0\"\n\
            #EXTINF:4.0,\n#EXT-X-BYTERANGE:100@872\nv0.mp4\n\
            #EXTINF:4.0,\n#EXT-X-BYTERANGE:200\nv0.mp4\n\
            #EXTINF:4.0,\n#EXT-X-BYTERANGE:300\nv0.mp4\n#EXT-X-ENDLIST\n";
        let r = hls_media("/t/x/mp4/v0.m3u8", text).unwrap();
        assert_eq!(
            paths(&r.segments),
            [
                "/t/x/mp4/v0.mp4@872-971",
                "/t/x/mp4/v0.mp4@972-1171",
                "/t/x/mp4/v0.mp4@1172-1471"
            ]
        );
        assert_eq!(
            r.init.as_ref().map(|i| i.range),
            Some(ByteRange::of_length(0, 760))
        );
        assert!(r.complete);
        let first = Some(ByteRange {
            start: 872,
            end: 971,
        });
        assert_eq!(
            paths(r.after("/t/x/mp4/v0.mp4", first, 1)),
            ["/t/x/mp4/v0.mp4@972-1171"]
        );
        // A player asking for a part of a segment (hls.js asks exact ranges; others cut them) is placed by its
        // first byte.
        let inside = Some(ByteRange {
            start: 1000,
            end: 1099,
        });
        assert_eq!(r.position("/t/x/mp4/v0.mp4", inside), Some(1));
        assert_eq!(
            r.position("/t/x/mp4/v0.mp4", None),
            None,
            "the whole file is no segment"
        );
    }

    #[test]
    fn the_sample_playlists_list_every_segment() {
        let ts = hls_media(
            "/titles/test-pattern/hls/v0/index.m3u8",
            &sample("test-pattern/hls/v0/index.m3u8"),
        )
        .unwrap();
        assert_eq!(ts.segments.len(), 6);
        assert!(
            ts.segments
                .iter()
                .all(|s| s.path.starts_with("/titles/test-pattern/hls/v0/"))
        );
        let ranges = hls_media(
            "/titles/test-pattern/mp4/v0.m3u8",
            &sample("test-pattern/mp4/v0.m3u8"),
        )
        .unwrap();
        assert_eq!(ranges.segments.len(), 6);
        assert_eq!(ranges.segments[0].range.map(|r| r.start), Some(872));
        for pair in ranges.segments.windows(2) {
            assert_eq!(pair[1].range.unwrap().start, pair[0].range.unwrap().end + 1);
        }
    }

    #[test]
    fn a_template_over_a_timeline_numbers_each_segment_and_repeats() {
        let mpd = sample("mandelbrot/cmaf/manifest.mpd");
        let all = dash("/titles/mandelbrot/cmaf/manifest.mpd", &mpd).unwrap();
        let video = &all[0];
        assert_eq!(video.id, "/titles/mandelbrot/cmaf/manifest.mpd#0/0");
        assert_eq!(video.segments.len(), 6, "r=5: six segments");
        assert_eq!(
            video.init.as_ref().unwrap().path,
            "/titles/mandelbrot/cmaf/init-0.m4s"
        );
        assert_eq!(
            paths(video.after("/titles/mandelbrot/cmaf/chunk-0-00002.m4s", None, 2)),
            [
                "/titles/mandelbrot/cmaf/chunk-0-00003.m4s",
                "/titles/mandelbrot/cmaf/chunk-0-00004.m4s"
            ]
        );
        assert_eq!(video.segments[0].duration_secs, 4.0);
        // Audio: an S with t, one with r, one alone.
        let audio = &all[3];
        assert_eq!(audio.segments.len(), 6);
        assert_eq!(
            audio.segments[5].path,
            "/titles/mandelbrot/cmaf/chunk-3-00006.m4s"
        );
        // Subtitles: a BaseURL file, one segment.
        assert_eq!(paths(&all[4].segments), ["/titles/mandelbrot/subs/en.vtt"]);
    }

    #[test]
    fn a_master_playlist_names_its_renditions_and_what_they_carry() {
        let master = b"#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"audio/en.m3u8\"
#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"s\",NAME=\"en\",URI=\"subs/en.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=3000000,CODECS=\"avc1.64001f,mp4a.40.2\",AUDIO=\"a\"
v1/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\"
v0/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=64000,CODECS=\"mp4a.40.2\"
audio-only.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=90000,URI=\"v0/iframes.m3u8\"
";
        let listed = hls_master("/t/hls/master.m3u8", master).unwrap();
        let find = |path: &str| listed.iter().find(|l| l.path == path).map(|l| l.kind);
        assert_eq!(
            find("/t/hls/v1/index.m3u8"),
            Some(Kind::Video {
                bandwidth: 3_000_000
            })
        );
        assert_eq!(
            find("/t/hls/v0/index.m3u8"),
            Some(Kind::Video { bandwidth: 800_000 })
        );
        assert_eq!(find("/t/hls/audio-only.m3u8"), Some(Kind::Audio));
        assert_eq!(find("/t/hls/audio/en.m3u8"), Some(Kind::Audio));
        assert_eq!(find("/t/hls/subs/en.m3u8"), Some(Kind::Other));
        assert_eq!(find("/t/hls/v0/iframes.m3u8"), None, "scrubbing only");
        assert_eq!(listed.len(), 5);
        // A media playlist names no renditions.
        assert!(
            hls_master(
                "/t/v0.m3u8",
                b"#EXTM3U\n#EXTINF:4,\ns0.ts\n#EXT-X-ENDLIST\n"
            )
            .is_err()
        );
    }

    #[test]
    fn dash_representations_say_what_they_carry() {
        let mpd = br#"<MPD type="static" mediaPresentationDuration="PT8S"><Period>
            <AdaptationSet contentType="video"><SegmentTemplate duration="4" media="$RepresentationID$/$Number$.m4s"/>
              <Representation id="v" bandwidth="5000"/></AdaptationSet>
            <AdaptationSet mimeType="audio/mp4"><SegmentTemplate duration="4" media="$RepresentationID$/$Number$.m4s"/>
              <Representation id="a" bandwidth="128"/></AdaptationSet>
            <AdaptationSet><Representation id="t" mimeType="text/vtt"><BaseURL>en.vtt</BaseURL></Representation>
            </AdaptationSet></Period></MPD>"#;
        let kinds: Vec<_> = dash("/m.mpd", mpd)
            .unwrap()
            .iter()
            .map(|r| r.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                Some(Kind::Video { bandwidth: 5000 }),
                Some(Kind::Audio),
                Some(Kind::Other)
            ]
        );
    }

    #[test]
    fn a_template_with_time_and_duration_addressing() {
        let mpd = br#"<MPD type="static" mediaPresentationDuration="PT10S"><Period id="p0">
            <AdaptationSet><SegmentTemplate timescale="1000" duration="4000" startNumber="7"
                media="$RepresentationID$/$Bandwidth$/n$Number%03d$.m4s" initialization="$RepresentationID$/init.mp4"/>
              <Representation id="hi" bandwidth="5000"/>
            </AdaptationSet>
            <AdaptationSet><BaseURL>audio/</BaseURL>
              <Representation id="a"><SegmentTemplate timescale="10" media="t$Time$.m4s">
                <SegmentTimeline><S t="100" d="40" r="-1"/></SegmentTimeline></SegmentTemplate></Representation>
            </AdaptationSet></Period></MPD>"#;
        let all = dash("/v/m.mpd", mpd).unwrap();
        assert_eq!(
            paths(&all[0].segments),
            [
                "/v/hi/5000/n007.m4s",
                "/v/hi/5000/n008.m4s",
                "/v/hi/5000/n009.m4s"
            ],
            "ceil(10 s / 4 s) segments from startNumber"
        );
        assert_eq!(all[0].init.as_ref().unwrap().path, "/v/hi/init.mp4");
        // r = -1 repeats to the end of the period: t = 100 (10 s) .. the period's 10 s end is before it, so one.
        assert_eq!(paths(&all[1].segments), ["/v/audio/t100.m4s"]);
        let open = br#"<MPD type="static" mediaPresentationDuration="PT10S"><Period>
            <AdaptationSet><Representation id="a"><SegmentTemplate timescale="10" media="t$Time$.m4s">
              <SegmentTimeline><S t="0" d="40" r="-1"/></SegmentTimeline></SegmentTemplate></Representation>
            </AdaptationSet></Period></MPD>"#;
        assert_eq!(
            paths(&dash("/v/m.mpd", open).unwrap()[0].segments),
            ["/v/t0.m4s", "/v/t40.m4s", "/v/t80.m4s"]
        );
    }

    #[test]
    fn a_segment_list_gives_files_or_ranges_of_the_base_file() {
        let mpd = br#"<MPD type="static"><Period><AdaptationSet>
            <Representation id="files"><SegmentList timescale="10" duration="20">
              <Initialization sourceURL="init.mp4"/>
              <SegmentURL media="s1.m4s"/><SegmentURL media="s2.m4s"/></SegmentList></Representation>
            <Representation id="ranges"><BaseURL>whole.mp4</BaseURL><SegmentList>
              <Initialization range="0-99"/>
              <SegmentURL mediaRange="100-199"/><SegmentURL mediaRange="200-399"/></SegmentList></Representation>
            </AdaptationSet></Period></MPD>"#;
        let all = dash("/v/m.mpd", mpd).unwrap();
        assert_eq!(paths(&all[0].segments), ["/v/s1.m4s", "/v/s2.m4s"]);
        assert_eq!(all[0].segments[0].duration_secs, 2.0);
        assert_eq!(
            paths(&all[1].segments),
            ["/v/whole.mp4@100-199", "/v/whole.mp4@200-399"]
        );
        assert_eq!(
            all[1].init.as_ref().unwrap().range,
            ByteRange::parse("0-99")
        );
    }

    #[test]
    fn a_segment_base_file_is_indexed_by_its_sidx() {
        let mpd = sample("test-pattern/mp4/manifest.mpd");
        let all = dash("/titles/test-pattern/mp4/manifest.mpd", &mpd).unwrap();
        let video = &all[0];
        assert!(video.segments.is_empty(), "known once the sidx is read");
        let (file, index) = video.index.clone().unwrap();
        assert_eq!(file, "/titles/test-pattern/mp4/v0.mp4");
        assert_eq!(
            index,
            ByteRange {
                start: 760,
                end: 871
            }
        );
        let bytes = sample("test-pattern/mp4/v0.mp4");
        let segments = sidx_segments(
            &file,
            index,
            &bytes[index.start as usize..=index.end as usize],
        )
        .unwrap();
        // The same segments the HLS playlist of the same file lists by byte range.
        let hls = hls_media(
            "/titles/test-pattern/mp4/v0.m3u8",
            &sample("test-pattern/mp4/v0.m3u8"),
        )
        .unwrap();
        assert_eq!(paths(&segments), paths(&hls.segments));
        assert!((segments[0].duration_secs - 4.0).abs() < 0.01);
        // Cut short, or a box that is not an index: an error, never a panic.
        for cut in [0, 7, 20, 40, 100] {
            assert!(
                sidx_segments(&file, index, &bytes[760..760 + cut]).is_err(),
                "{cut}"
            );
        }
    }

    #[test]
    fn another_hosts_base_url_addresses_nothing_and_bad_manifests_are_errors() {
        let mpd = br#"<MPD><Period><AdaptationSet><BaseURL>https://cdn.example/x/</BaseURL>
            <Representation id="a"><SegmentList><SegmentURL media="s1.m4s"/></SegmentList></Representation>
            </AdaptationSet></Period></MPD>"#;
        assert!(dash("/v/m.mpd", mpd).unwrap()[0].segments.is_empty());
        assert!(dash("/v/m.mpd", b"<MPD><Period>").is_err());
        assert!(dash("/v/m.mpd", &[0xff, 0xfe]).is_err());
        assert!(hls_media("/v/i.m3u8", b"not a playlist").is_err());
        let master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000\nv0/index.m3u8\n";
        assert!(
            hls_media("/v/master.m3u8", master)
                .unwrap_err()
                .contains("master")
        );
        assert!(hls_media("/v/i.m3u8", b"#EXTM3U\n#EXTINF:4,\n\xfe.ts\n").is_err());
        let huge = br#"<MPD mediaPresentationDuration="PT100000H"><Period><AdaptationSet><Representation id="a">
            <SegmentTemplate duration="1" timescale="1000" media="$Number$.m4s"/></Representation></AdaptationSet>
            </Period></MPD>"#;
        assert!(dash("/v/m.mpd", huge).unwrap_err().contains("more than"));
    }
}
