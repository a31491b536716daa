//! `origin ingest`: every sample title uploads and registers (and again, idempotently); the origin then lists
//! and serves it; a folder missing one segment is refused with the file named, and nothing is written.

use std::path::Path;
use std::process::Command;

use testkit::{TempStore, binary, curl, start_origin};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn ingest(config: &Path, dir: &Path, slug: &str) -> (bool, String, String) {
    let out = Command::new(binary("origin"))
        .args(["ingest", "--quiet", "--config"])
        .arg(config)
        .arg(dir)
        .args(["--title", slug])
        .output()
        .expect("run origin ingest");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sample_titles_ingest_and_a_broken_folder_is_refused() {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-content/titles");
    let store = TempStore::new();
    let work = tempfile::tempdir().unwrap();
    let db = work.path().join("catalog.db");
    let config = work.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[store]\nurl = \"{}\"\n[catalog]\nurl = \"sqlite://{}\"\n",
            work.path().join("data").display(),
            store.url(),
            db.display()
        ),
    )
    .unwrap();

    // A broken copy first: one DASH segment missing. Refused, named, nothing written.
    let broken = work.path().join("broken");
    copy_dir(&samples.join("test-pattern"), &broken);
    std::fs::remove_file(broken.join("dash/chunk-1-00003.m4s")).unwrap();
    let (ok, _, stderr) = ingest(&config, &broken, "broken-title");
    assert!(!ok);
    assert!(
        stderr.contains("dash/manifest.mpd references dash/chunk-1-00003.m4s"),
        "{stderr}"
    );
    assert!(
        !store.path().join("titles/broken-title").exists(),
        "nothing uploaded"
    );
    // An HLS segment missing, likewise.
    copy_dir(&samples.join("test-pattern"), &broken);
    std::fs::remove_file(broken.join("hls/v1/seg_002.ts")).unwrap();
    let (ok, _, stderr) = ingest(&config, &broken, "broken-title");
    assert!(!ok);
    assert!(
        stderr.contains("hls/v1/index.m3u8 references hls/v1/seg_002.ts"),
        "{stderr}"
    );
    let (ok, _, stderr) = ingest(&config, &broken, "Not A Slug");
    assert!(!ok && stderr.contains("must be a slug"), "{stderr}");
    // A manifest that is not one.
    copy_dir(&samples.join("test-pattern"), &broken);
    std::fs::write(broken.join("dash/manifest.mpd"), "<MPD><Period>").unwrap();
    let (ok, _, stderr) = ingest(&config, &broken, "broken-title");
    assert!(!ok);
    assert!(
        stderr.contains("dash/manifest.mpd: not a valid MPD"),
        "{stderr}"
    );
    assert!(!store.path().join("titles/broken-title").exists());

    // A folder with no metadata at all: everything but the name comes from the manifests.
    let bare = work.path().join("bare");
    copy_dir(&samples.join("test-pattern"), &bare);
    std::fs::remove_file(bare.join("meta.json")).unwrap();
    let bare_dir = bare.clone();
    let (ok, _, stderr) = ingest(&config, &bare, "bare-pattern");
    assert!(ok, "{stderr}");

    // Every sample title, twice (idempotent).
    for round in 0..2 {
        for slug in ["test-pattern", "mandelbrot"] {
            let (ok, stdout, stderr) =
                ingest(&config, &samples.join(slug), &format!("{slug}-copy"));
            assert!(ok, "round {round} {slug}: {stderr}");
            assert!(stdout.contains("uploaded and registered"), "{stdout}");
        }
    }
    let original = std::fs::read(samples.join("test-pattern/hls/v0/seg_000.ts")).unwrap();
    let uploaded = std::fs::read(
        store
            .path()
            .join("titles/test-pattern-copy/hls/v0/seg_000.ts"),
    )
    .unwrap();
    assert!(original == uploaded);

    // The origin lists them (catalog from the ingest, nothing else registered) and serves them.
    let origin = start_origin(
        &store.url(),
        &format!("[catalog]\nurl = \"sqlite://{}\"\n", db.display()),
    );
    let api = origin.url("api_addr");
    let list: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("{api}/v1/titles")]).body).unwrap();
    let slugs: Vec<&str> = list["titles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        slugs,
        ["bare-pattern", "mandelbrot-copy", "test-pattern-copy"]
    );
    let bare: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("{api}/v1/titles/bare-pattern")]).body).unwrap();
    assert_eq!(bare["title"], "Bare Pattern");
    assert_eq!(bare["runtime_secs"], 24);
    assert_eq!(bare["artwork_key"], "titles/bare-pattern/poster.jpg");
    let packagings = bare["packagings"].as_array().unwrap();
    let names: Vec<&str> = packagings
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    for name in ["dash", "hls", "mp4-dash", "mp4-hls"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    let hls = packagings.iter().find(|p| p["name"] == "hls").unwrap();
    assert_eq!(hls["manifest_key"], "titles/bare-pattern/hls/master.m3u8");
    let video = &hls["renditions"][0];
    assert_eq!(video["kind"], "video");
    assert_eq!(video["bandwidth"], 361919);
    assert_eq!(video["resolution"], "640x360");
    assert_eq!(video["codecs"], "avc1.4d401e");
    // The store holds the metadata as registered, so a restart registers the same.
    let stored: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.path().join("titles/bare-pattern/meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["packagings"].as_array().unwrap().len(), 4);
    assert_eq!(stored["duration_secs"], 24);

    // Assets: every file of the folder, with its kind and size; totals in the details.
    let mut sizes = Vec::new();
    let mut stack = vec![bare_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                sizes.push(entry.metadata().unwrap().len() as i64);
            }
        }
    }
    assert_eq!(bare["assets"]["files"], sizes.len() as i64);
    assert_eq!(bare["assets"]["bytes"], sizes.iter().sum::<i64>());
    let assets: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("{api}/v1/titles/bare-pattern/assets")]).body)
            .unwrap();
    let assets = assets["assets"].as_array().unwrap();
    assert_eq!(assets.len(), sizes.len());
    let segment = assets
        .iter()
        .find(|a| a["key"] == "titles/bare-pattern/hls/v0/seg_000.ts")
        .unwrap();
    assert_eq!(segment["kind"], "segment");
    assert_eq!(segment["bytes"], original.len() as i64);
    let kinds: std::collections::BTreeSet<&str> =
        assets.iter().map(|a| a["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["artwork", "init", "manifest", "segment", "subtitles"].into()
    );
    assert_eq!(curl(&[&format!("{api}/v1/titles/nope/assets")]).status, 404);
    // Ids: one per title, kept when a title is ingested again.
    let id_of = |slug: &str| {
        let details: serde_json::Value =
            serde_json::from_slice(&curl(&[&format!("{api}/v1/titles/{slug}")]).body).unwrap();
        details["id"].as_i64().unwrap()
    };
    assert_eq!(id_of("bare-pattern"), 1, "ingested first");
    assert_ne!(id_of("mandelbrot-copy"), id_of("test-pattern-copy"));
    let details: serde_json::Value =
        serde_json::from_slice(&curl(&[&format!("{api}/v1/titles/test-pattern-copy")]).body)
            .unwrap();
    let manifest = details["packagings"][0]["manifest_key"].as_str().unwrap();
    assert!(
        manifest.starts_with("titles/test-pattern-copy/"),
        "{manifest}"
    );
    let served = curl(&[&format!("{}/{manifest}", origin.url("media_addr"))]);
    assert_eq!(served.status, 200);
}
