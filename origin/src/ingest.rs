//! `origin ingest DIR --title SLUG [--meta FILE]`: uploads a packaged title (HLS and DASH folders, single-file
//! MP4 renditions, subtitles, artwork) to the store under `titles/<slug>/` and registers it in the catalog.
//!
//! Before anything is written, every manifest is read and every file it references is checked to exist in the
//! folder (HLS: variant and media playlists, segments, `EXT-X-MAP` and rendition URIs; DASH: `BaseURL`s and
//! `SegmentTemplate` initialization and media files, expanded over the `SegmentTimeline` or the duration), so a
//! broken folder is refused with the missing file named and nothing half-registered. Uploads stream from disk
//! (multipart for large files on S3), with a progress bar. Running it again replaces the title: idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::catalog::{Catalog, TitleMeta};

/// Files of at least this size are uploaded in parts.
const MULTIPART_BYTES: u64 = 16 << 20;
const PART_BYTES: usize = 8 << 20;

/// What will be uploaded and registered.
#[derive(Debug)]
pub struct Plan {
    pub slug: String,
    /// Paths relative to the folder, `/`-separated, with their sizes.
    pub files: BTreeMap<String, u64>,
    pub manifests: Vec<String>,
    pub meta: TitleMeta,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.files.values().sum()
    }
}

/// Reads the folder and its manifests; refuses (naming the problem) a folder whose manifests reference files
/// that are not there, or that holds no manifest.
pub fn plan(dir: &Path, slug: &str, meta_file: Option<&Path>) -> Result<Plan, String> {
    if slug.is_empty()
        || !slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "--title `{slug}` must be a slug: lower-case letters, digits and '-'"
        ));
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files)?;
    let manifests: Vec<String> = files
        .keys()
        .filter(|f| f.ends_with(".m3u8") || f.ends_with(".mpd"))
        .cloned()
        .collect();
    if manifests.is_empty() {
        return Err(format!("{} holds no .m3u8 or .mpd manifest", dir.display()));
    }
    for manifest in &manifests {
        let text = std::fs::read_to_string(dir.join(manifest))
            .map_err(|e| format!("reading {manifest}: {e}"))?;
        let references = if manifest.ends_with(".m3u8") {
            hls_references(&text)
        } else {
            dash_references(&text).map_err(|e| format!("{manifest}: {e}"))?
        };
        let base = manifest.rsplit_once('/').map_or("", |(folder, _)| folder);
        for reference in references {
            let resolved = resolve(base, &reference)
                .ok_or_else(|| format!("{manifest} references `{reference}` outside the folder"))?;
            if !files.contains_key(&resolved) {
                return Err(format!(
                    "{manifest} references {resolved}, which is not in {}",
                    dir.display()
                ));
            }
        }
    }
    let meta_path = meta_file
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("meta.json"));
    let text = std::fs::read(&meta_path).map_err(|e| {
        format!(
            "title metadata {}: {e} (give --meta FILE or put meta.json in the folder)",
            meta_path.display()
        )
    })?;
    let mut meta: TitleMeta = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not valid title metadata: {e}", meta_path.display()))?;
    // Every manifest the metadata names must be in the folder; the keys then follow the slug ingested under.
    let prefix = format!("titles/{}/", meta.slug);
    for packaging in &meta.packagings {
        let rest = packaging
            .manifest
            .strip_prefix(&prefix)
            .unwrap_or(&packaging.manifest);
        if !files.contains_key(rest) {
            return Err(format!(
                "the metadata names manifest {rest}, which is not in {}",
                dir.display()
            ));
        }
    }
    meta.relocate(slug);
    Ok(Plan {
        slug: slug.to_string(),
        files,
        manifests,
        meta,
    })
}

fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, u64>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        if kind.is_dir() {
            walk(root, &path, files)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .expect("under the root")
                .to_string_lossy()
                .replace('\\', "/");
            let size = entry.metadata().map_err(|e| e.to_string())?.len();
            files.insert(relative, size);
        }
    }
    Ok(())
}

/// `reference` relative to the folder `base` (both `/`-separated), without `..` escaping the root; `None` for
/// absolute URLs and escapes.
fn resolve(base: &str, reference: &str) -> Option<String> {
    let reference = reference.split(['?', '#']).next().unwrap_or(reference);
    if reference.contains("://") || reference.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for part in reference.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// The URIs an HLS playlist references: URI lines, and `URI="…"` attributes of tags.
pub fn hls_references(text: &str) -> Vec<String> {
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if let Some(tag) = line.strip_prefix('#') {
            if let Some(start) = tag.find("URI=\"") {
                let rest = &tag[start + 5..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_string());
                }
            }
        } else {
            out.insert(line.to_string());
        }
    }
    out.into_iter().collect()
}

/// One XML start tag: name and attributes.
struct Tag<'a> {
    name: &'a str,
    attrs: BTreeMap<&'a str, String>,
    closing: bool,
    self_closing: bool,
    /// Text after the tag up to the next `<`.
    text: &'a str,
}

fn tags(xml: &str) -> Vec<Tag<'_>> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start + 1..];
        let Some(end) = rest.find('>') else { break };
        let inner = &rest[..end];
        rest = &rest[end + 1..];
        if inner.starts_with('?') || inner.starts_with('!') {
            continue;
        }
        let closing = inner.starts_with('/');
        let self_closing = inner.ends_with('/');
        let body = inner.trim_start_matches('/').trim_end_matches('/');
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        let mut attrs = BTreeMap::new();
        let mut a = &body[name_end..];
        while let Some(eq) = a.find('=') {
            let key = a[..eq].trim();
            let value_start = a[eq + 1..].trim_start();
            let Some(quote) = value_start
                .chars()
                .next()
                .filter(|c| *c == '"' || *c == '\'')
            else {
                break;
            };
            let value_rest = &value_start[1..];
            let Some(close) = value_rest.find(quote) else {
                break;
            };
            attrs.insert(key, value_rest[..close].replace("&amp;", "&"));
            a = &value_rest[close + 1..];
        }
        let text = &rest[..rest.find('<').unwrap_or(rest.len())];
        out.push(Tag {
            name: name.rsplit(':').next().unwrap_or(name),
            attrs,
            closing,
            self_closing,
            text,
        });
    }
    out
}

/// ISO 8601 duration (`PT1H2M3.5S`) in seconds.
fn iso_duration(text: &str) -> Option<f64> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut seconds = 0.0;
    if let Some(d) = days.strip_suffix('D') {
        seconds += d.parse::<f64>().ok()? * 86400.0;
    }
    let mut number = String::new();
    for c in time.chars() {
        match c {
            'H' | 'M' | 'S' => {
                let n: f64 = number.parse().ok()?;
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
    Some(seconds)
}

/// The files a DASH MPD references: `BaseURL`s, and for `SegmentTemplate`s their initialization and every media
/// segment (over the `SegmentTimeline`, or the presentation duration divided by `duration`).
pub fn dash_references(mpd: &str) -> Result<Vec<String>, String> {
    let tags = tags(mpd);
    let total_secs = tags
        .iter()
        .find(|t| t.name == "MPD" && !t.closing)
        .and_then(|t| t.attrs.get("mediaPresentationDuration"))
        .and_then(|d| iso_duration(d));
    let mut out = BTreeSet::new();
    // The SegmentTemplate in force (adaptation-set level, or representation level) and the representation.
    let mut set_template: Option<Template> = None;
    let mut rep: Option<(String, String)> = None; // (id, bandwidth)
    let mut rep_template: Option<Template> = None;
    let mut in_rep = false;
    let mut timeline: Vec<(u64, u64, i64)> = Vec::new();
    let mut template_attrs: Option<BTreeMap<&str, String>> = None;
    for tag in &tags {
        match (tag.name, tag.closing) {
            ("AdaptationSet", true) => set_template = None,
            ("Representation", false) => {
                in_rep = true;
                rep = Some((
                    tag.attrs.get("id").cloned().unwrap_or_default(),
                    tag.attrs.get("bandwidth").cloned().unwrap_or_default(),
                ));
                rep_template = None;
                if tag.self_closing {
                    expand(&rep, set_template.as_ref(), total_secs, &mut out)?;
                    in_rep = false;
                }
            }
            ("Representation", true) => {
                expand(
                    &rep,
                    rep_template.as_ref().or(set_template.as_ref()),
                    total_secs,
                    &mut out,
                )?;
                in_rep = false;
            }
            ("BaseURL", false) if in_rep => {
                let url = tag.text.trim();
                if !url.is_empty() && !url.ends_with('/') {
                    out.insert(url.to_string());
                }
            }
            ("SegmentTemplate", false) => {
                timeline.clear();
                let attrs = tag.attrs.clone();
                if tag.self_closing {
                    store_template(
                        in_rep,
                        (attrs, Vec::new()),
                        &mut rep_template,
                        &mut set_template,
                    );
                } else {
                    template_attrs = Some(attrs);
                }
            }
            ("S", false) => {
                let number = |k: &str| tag.attrs.get(k).and_then(|v| v.parse::<i64>().ok());
                let start = number("t").map(|t| t as u64).unwrap_or_else(|| {
                    timeline
                        .last()
                        .map_or(0, |(t, d, r)| t + d * (*r as u64 + 1))
                });
                timeline.push((
                    start,
                    number("d").unwrap_or(0) as u64,
                    number("r").unwrap_or(0),
                ));
            }
            ("SegmentTemplate", true) => {
                if let Some(attrs) = template_attrs.take() {
                    let template = (attrs, std::mem::take(&mut timeline));
                    store_template(in_rep, template, &mut rep_template, &mut set_template);
                }
            }
            _ => {}
        }
    }
    Ok(out.into_iter().collect())
}

type Template<'a> = (BTreeMap<&'a str, String>, Vec<(u64, u64, i64)>);

fn store_template<'a>(
    in_rep: bool,
    template: Template<'a>,
    rep_template: &mut Option<Template<'a>>,
    set_template: &mut Option<Template<'a>>,
) {
    if in_rep {
        *rep_template = Some(template);
    } else {
        *set_template = Some(template);
    }
}

/// The files of one representation under a template.
fn expand(
    rep: &Option<(String, String)>,
    template: Option<&Template>,
    total_secs: Option<f64>,
    out: &mut BTreeSet<String>,
) -> Result<(), String> {
    let (Some((id, bandwidth)), Some((attrs, timeline))) = (rep, template) else {
        return Ok(());
    };
    let fill = |pattern: &str, number: u64, time: u64| -> String {
        let mut s = pattern
            .replace("$RepresentationID$", id)
            .replace("$Bandwidth$", bandwidth);
        for (name, value) in [("Number", number), ("Time", time)] {
            while let Some(start) = s.find(&format!("${name}")) {
                let after = &s[start + name.len() + 1..];
                let Some(end) = after.find('$') else { break };
                let format = &after[..end];
                let width = format
                    .strip_prefix("%0")
                    .and_then(|f| f.strip_suffix('d'))
                    .and_then(|w| w.parse::<usize>().ok())
                    .unwrap_or(0);
                let replaced = format!("{value:0width$}");
                s.replace_range(start..start + name.len() + 2 + end, &replaced);
            }
        }
        s
    };
    if let Some(init) = attrs.get("initialization") {
        out.insert(fill(init, 0, 0));
    }
    let Some(media) = attrs.get("media") else {
        return Ok(());
    };
    let start_number: u64 = attrs
        .get("startNumber")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut times = Vec::new();
    if !timeline.is_empty() {
        for &(t, d, r) in timeline {
            if r < 0 {
                return Err("a SegmentTimeline repeat of -1 (open-ended) cannot be checked".into());
            }
            for i in 0..=r as u64 {
                times.push(t + d * i);
            }
        }
    } else {
        let timescale: f64 = attrs
            .get("timescale")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1.0);
        let duration: f64 = attrs
            .get("duration")
            .and_then(|v| v.parse().ok())
            .ok_or("a SegmentTemplate has neither a SegmentTimeline nor a duration")?;
        let total =
            total_secs.ok_or("a SegmentTemplate@duration needs MPD@mediaPresentationDuration")?;
        let count = (total / (duration / timescale)).ceil() as u64;
        times.extend((0..count).map(|i| (i as f64 * duration) as u64));
    }
    for (i, time) in times.into_iter().enumerate() {
        out.insert(fill(media, start_number + i as u64, time));
    }
    Ok(())
}

/// Uploads the plan's files under `titles/<slug>/` (streamed; multipart from 16 MiB), with a progress bar.
pub async fn upload(
    plan: &Plan,
    dir: &Path,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    show_progress: bool,
) -> Result<(), String> {
    use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
    use tokio::io::AsyncReadExt;
    let bar = indicatif::ProgressBar::new(plan.total_bytes());
    if show_progress {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {msg} {binary_bytes_per_sec} ETA {eta}",
            )
            .expect("valid template"),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let count = plan.files.len();
    for (i, (file, size)) in plan.files.iter().enumerate() {
        bar.set_message(format!("files {}/{count}", i + 1));
        let location = object_store::path::Path::parse(format!("titles/{}/{file}", plan.slug))
            .map_err(|e| format!("{file}: {e}"))?;
        let path: PathBuf = dir.join(file);
        let mut reader = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if *size >= MULTIPART_BYTES {
            let upload = store
                .put_multipart(&location)
                .await
                .map_err(|e| format!("{file}: {e}"))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| format!("{file}: {e}"))?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n]);
                bar.inc(n as u64);
            }
            writer.finish().await.map_err(|e| format!("{file}: {e}"))?;
        } else {
            let mut bytes = Vec::with_capacity(*size as usize);
            reader
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| format!("{file}: {e}"))?;
            store
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|e| format!("{file}: {e}"))?;
            bar.inc(*size);
        }
    }
    bar.finish_with_message(format!("{count} files"));
    Ok(())
}

/// Uploads and registers; the catalog row is written only once every file is in the store.
pub async fn run(
    plan: Plan,
    dir: &Path,
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    catalog: &Catalog,
    show_progress: bool,
) -> Result<(), String> {
    upload(&plan, dir, store, show_progress).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    catalog
        .upsert(&plan.meta, now)
        .await
        .map_err(|e| format!("registering {}: {e}", plan.slug))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_inside_the_folder_only() {
        assert_eq!(
            resolve("hls", "v0/index.m3u8").as_deref(),
            Some("hls/v0/index.m3u8")
        );
        assert_eq!(
            resolve("hls/v0", "../audio/seg.ts").as_deref(),
            Some("hls/audio/seg.ts")
        );
        assert_eq!(resolve("", "a.ts?x=1").as_deref(), Some("a.ts"));
        assert_eq!(resolve("hls", "../../etc/passwd"), None);
        assert_eq!(resolve("hls", "https://cdn.example/a.ts"), None);
        assert_eq!(resolve("hls", "/abs.ts"), None);
    }

    #[test]
    fn hls_references_include_tag_uris() {
        let playlist = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"700@0\"\n#EXTINF:4,\nseg_0.ts\n\n\
                        #EXT-X-MEDIA:TYPE=AUDIO,URI=\"audio/index.m3u8\"\n#EXTINF:4,\nseg_1.ts\n";
        assert_eq!(
            hls_references(playlist),
            ["audio/index.m3u8", "init.mp4", "seg_0.ts", "seg_1.ts"]
        );
    }

    #[test]
    fn dash_templates_expand_over_timelines_and_durations() {
        let mpd = r#"<?xml version="1.0"?><MPD mediaPresentationDuration="PT10S"><Period>
            <AdaptationSet><SegmentTemplate timescale="10" duration="40" initialization="i-$RepresentationID$.mp4"
              media="s-$RepresentationID$-$Number%03d$.m4s" startNumber="5"/>
              <Representation id="a" bandwidth="1"/></AdaptationSet>
            <AdaptationSet><Representation id="b" bandwidth="2"><SegmentTemplate media="t-$Time$.m4s"
              initialization="b.init"><SegmentTimeline><S t="0" d="4" r="1"/><S d="2"/></SegmentTimeline>
              </SegmentTemplate></Representation>
              <Representation id="c"><BaseURL>c.mp4</BaseURL><SegmentBase indexRange="1-2"/></Representation>
            </AdaptationSet></Period></MPD>"#;
        assert_eq!(
            dash_references(mpd).unwrap(),
            [
                "b.init",
                "c.mp4",
                "i-a.mp4",
                "s-a-005.m4s",
                "s-a-006.m4s",
                "s-a-007.m4s",
                "t-0.m4s",
                "t-4.m4s",
                "t-8.m4s"
            ]
        );
        assert_eq!(iso_duration("PT1H2M3.5S"), Some(3723.5));
        assert_eq!(iso_duration("P1DT1S"), Some(86401.0));
    }
}
