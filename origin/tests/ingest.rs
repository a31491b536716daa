//! `origin ingest`: every sample title uploads and registers (and again, idempotently); the origin then lists
//! and serves it; a folder missing one segment is refused with the file named, and nothing is written.

use std::path::Path;
use std::process::Command;

use shared::testkit::{TempStore, binary, curl, start_origin};

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
            "[store]\nurl = \"{}\"\n[catalog]\nurl = \"sqlite://{}\"\n",
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
    assert_eq!(slugs, ["mandelbrot-copy", "test-pattern-copy"]);
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
