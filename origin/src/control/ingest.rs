//! `origin ingest DIR --title SLUG [--meta FILE]`: uploads a packaged title (HLS and DASH folders, single-file
//! MP4 renditions, subtitles, artwork) to the store under `titles/<slug>/` and registers it in the catalog.
//!
//! Before anything is written, every manifest is read and every file it references is checked to exist in the
//! folder (HLS: variant and media playlists, segments, `EXT-X-MAP` and rendition URIs; DASH: `BaseURL`s and
//! `SegmentTemplate` initialization and media files, expanded over the `SegmentTimeline` or the duration), so a
//! broken folder is refused with the missing file named and nothing half-registered. The packagings, renditions
//! and duration are derived from the manifests (`manifests`); descriptive metadata is optional. Uploads stream
//! from disk (multipart for large files on S3), with a progress bar, and the registered metadata is written
//! beside the title as `meta.json`. Running it again replaces the title: idempotent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::control::catalog::{AssetMeta, Catalog, PackagingMeta, TitleMeta};
use crate::control::manifests::{self, ManifestKind};

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
/// that are not there, or that holds no manifest. The packagings, renditions and duration come from the
/// manifests; the descriptive metadata from `meta_file`, else `meta.json` in the folder, else the slug alone.
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
    let mut read = BTreeMap::new();
    for name in files
        .keys()
        .filter(|f| f.ends_with(".m3u8") || f.ends_with(".mpd"))
    {
        let text = std::fs::read(dir.join(name)).map_err(|e| format!("reading {name}: {e}"))?;
        let manifest = manifests::read(name, &text).map_err(|e| format!("{name}: {e}"))?;
        for reference in &manifest.references {
            let resolved = resolve(folder_of(name), reference)
                .ok_or_else(|| format!("{name} references `{reference}` outside the folder"))?;
            if !files.contains_key(&resolved) {
                return Err(format!(
                    "{name} references {resolved}, which is not in {}",
                    dir.display()
                ));
            }
        }
        read.insert(name.clone(), manifest);
    }
    if read.is_empty() {
        return Err(format!("{} holds no .m3u8 or .mpd manifest", dir.display()));
    }
    let meta_path = meta_file.map(Path::to_path_buf).or_else(|| {
        let default = dir.join("meta.json");
        default.exists().then_some(default)
    });
    let mut meta = match &meta_path {
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("title metadata {}: {e}", path.display()))?;
            serde_json::from_slice::<TitleMeta>(&text)
                .map_err(|e| format!("{} is not valid title metadata: {e}", path.display()))?
        }
        None => TitleMeta::default(),
    };
    // The folder's own meta.json is replaced by the one written after the upload.
    files.remove("meta.json");
    meta.packagings = Vec::new();
    meta.relocate(slug);
    let prefix = format!("titles/{slug}/");
    match meta.poster.as_deref().and_then(|p| p.strip_prefix(&prefix)) {
        Some(poster) if !files.contains_key(poster) => {
            return Err(format!(
                "the metadata names poster {poster}, which is not in {}",
                dir.display()
            ));
        }
        Some(_) => {}
        None if meta.poster.is_none() => {
            meta.poster = ["poster.jpg", "poster.jpeg", "poster.png", "poster.webp"]
                .into_iter()
                .find(|p| files.contains_key(*p))
                .map(|p| format!("{prefix}{p}"));
        }
        None => {}
    }
    meta.assets = files
        .iter()
        .map(|(file, bytes)| AssetMeta {
            key: format!("{prefix}{file}"),
            kind: AssetMeta::kind_of(file).to_string(),
            bytes: *bytes as i64,
        })
        .collect();
    let (packagings, duration) = packagings(&read, &prefix);
    meta.packagings = packagings;
    meta.duration_secs = meta.duration_secs.or(duration.map(|d| d.round() as i64));
    Ok(Plan {
        slug: slug.to_string(),
        files,
        manifests: read.into_keys().collect(),
        meta,
    })
}

/// The packagings a player can start from (every HLS master playlist, every MPD, and any media playlist no
/// master references), each named after its folder (with the protocol when a folder holds two), and the
/// title's duration (the longest packaging's).
fn packagings(
    read: &BTreeMap<String, manifests::Manifest>,
    prefix: &str,
) -> (Vec<PackagingMeta>, Option<f64>) {
    let references = |name: &str| -> Vec<String> {
        read[name]
            .references
            .iter()
            .filter_map(|r| resolve(folder_of(name), r))
            .collect()
    };
    let under_a_master: BTreeSet<String> = read
        .iter()
        .filter(|(_, m)| m.kind == ManifestKind::HlsMaster)
        .flat_map(|(name, _)| references(name))
        .collect();
    let entry_points: Vec<&String> = read
        .iter()
        .filter(|(name, m)| m.kind != ManifestKind::HlsMedia || !under_a_master.contains(*name))
        .map(|(name, _)| name)
        .collect();
    let mut longest: Option<f64> = None;
    let mut out = Vec::new();
    for name in &entry_points {
        let manifest = &read[*name];
        let duration = match manifest.kind {
            ManifestKind::HlsMaster => references(name)
                .iter()
                .filter_map(|r| read.get(r).and_then(|m| m.duration_secs))
                .reduce(f64::max),
            _ => manifest.duration_secs,
        };
        longest = match (longest, duration) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let protocol = manifest.kind.protocol();
        let here = folder_of(name);
        let siblings = entry_points.iter().filter(|n| folder_of(n) == here).count();
        let base = if here.is_empty() {
            "main".to_string()
        } else {
            here.replace('/', "-")
        };
        let same_protocol = entry_points
            .iter()
            .filter(|n| folder_of(n) == here && read[**n].kind.protocol() == protocol)
            .count();
        let name_of = match (siblings, same_protocol) {
            (1, _) => base,
            (_, 1) => format!("{base}-{protocol}"),
            _ => {
                let stem = name.rsplit('/').next().unwrap_or(name);
                let stem = stem.rsplit_once('.').map_or(stem, |(s, _)| s);
                format!("{base}-{stem}")
            }
        };
        out.push(PackagingMeta {
            name: name_of,
            protocol: protocol.to_string(),
            manifest: format!("{prefix}{name}"),
            renditions: manifest.renditions.clone(),
        });
    }
    (out, longest)
}

/// The folder part of a `/`-separated path inside the title's folder (`""` at its top).
fn folder_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(folder, _)| folder)
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
    // The title's metadata as registered, so a restart (which registers what the store holds) agrees.
    let location = object_store::path::Path::parse(format!("titles/{}/meta.json", plan.slug))
        .map_err(|e| e.to_string())?;
    let json = serde_json::to_vec_pretty(&plan.meta).map_err(|e| e.to_string())?;
    object_store::ObjectStoreExt::put(store.as_ref(), &location, json.into())
        .await
        .map_err(|e| format!("meta.json: {e}"))?;
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
    use crate::control::catalog::RenditionMeta;

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

    fn sample(slug: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("sample-content/titles/{slug}"))
    }

    /// What ingest derives from the manifests agrees with what the packaging script wrote from ffprobe's and
    /// its own reading of them, for every packaging of both sample titles.
    #[test]
    fn packagings_are_derived_from_the_manifests() {
        for slug in ["test-pattern", "mandelbrot"] {
            let written: TitleMeta =
                serde_json::from_slice(&std::fs::read(sample(slug).join("meta.json")).unwrap())
                    .unwrap();
            let bare = tempfile::tempdir().unwrap();
            let empty = bare.path().join("empty.json");
            std::fs::write(&empty, "{}").unwrap();
            let derived = plan(&sample(slug), "copy", Some(&empty)).unwrap();
            assert_eq!(derived.meta.duration_secs, Some(24), "{slug}");
            assert_eq!(
                derived.meta.poster.as_deref(),
                Some("titles/copy/poster.jpg")
            );
            assert_eq!(derived.meta.title, "Copy");
            assert!(!derived.files.contains_key("meta.json"));
            let mut names: Vec<_> = derived.meta.packagings.iter().map(|p| &p.name).collect();
            names.sort();
            let mut expected_names: Vec<_> = written
                .packagings
                .iter()
                .map(|p| {
                    p.manifest
                        .rsplit_once('/')
                        .unwrap()
                        .0
                        .rsplit('/')
                        .next()
                        .unwrap()
                })
                .collect();
            expected_names.sort();
            assert_eq!(names.len(), expected_names.len(), "{slug}");
            for packaging in &written.packagings {
                let rest = packaging
                    .manifest
                    .strip_prefix(&format!("titles/{slug}/"))
                    .unwrap();
                let ours = derived
                    .meta
                    .packagings
                    .iter()
                    .find(|p| p.manifest == format!("titles/copy/{rest}"))
                    .unwrap_or_else(|| panic!("{slug}: no packaging for {rest}"));
                assert_eq!(ours.protocol, packaging.protocol, "{rest}");
                let kinds =
                    |r: &[RenditionMeta]| r.iter().map(|r| r.kind.clone()).collect::<Vec<_>>();
                assert_eq!(
                    kinds(&ours.renditions),
                    kinds(&packaging.renditions),
                    "{rest}"
                );
                for (ours, theirs) in ours.renditions.iter().zip(&packaging.renditions) {
                    assert_eq!(ours.resolution, theirs.resolution, "{rest}");
                    assert_eq!(ours.language, theirs.language, "{rest}");
                    if theirs.kind == "video" || packaging.protocol == "dash" {
                        assert_eq!(ours.bandwidth, theirs.bandwidth, "{rest}");
                    }
                    if theirs.kind == "video" || theirs.kind == "audio" {
                        assert_eq!(ours.codecs, theirs.codecs, "{rest}");
                    }
                }
            }
        }
    }

    #[test]
    fn descriptive_metadata_comes_from_the_folder_and_keys_follow_the_slug() {
        let derived = plan(&sample("mandelbrot"), "fractal", None).unwrap();
        assert_eq!(derived.meta.title, "Mandelbrot");
        assert_eq!(derived.meta.slug, "fractal");
        assert_eq!(derived.meta.year, Some(2025));
        assert_eq!(
            derived.meta.poster.as_deref(),
            Some("titles/fractal/poster.jpg")
        );
        assert!(derived.meta.extra.contains_key("subtitles"));
        let names: BTreeSet<_> = derived
            .meta
            .packagings
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, BTreeSet::from(["cmaf-dash", "cmaf-hls"]));
        assert!(
            derived
                .meta
                .packagings
                .iter()
                .all(|p| p.manifest.starts_with("titles/fractal/cmaf/"))
        );
    }
}
