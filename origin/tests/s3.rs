//! The S3 path against a real S3-compatible server (moto) on loopback: objects under a prefix, ranged reads,
//! validators, not-found, keys outside the prefix, and the store going away (503 with a reason, no panic).

use testkit::{S3Server, TempStore, curl, start_origin};

fn s3_extra(s3: &S3Server) -> String {
    format!(
        "[store]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"test\"\nsecret_access_key = \"test\"\n\
         allow_http = true\n",
        s3.endpoint
    )
}

#[test]
fn serves_objects_from_s3_with_ranges() {
    let s3 = S3Server::start("media");
    let local = TempStore::new();
    let segment: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let seg_path = local.put("seg.m4s", &segment);
    let playlist = local.put(
        "index.m3u8",
        b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nseg.m4s\n#EXT-X-ENDLIST\n",
    );
    s3.put_file("vod/titles/a/seg.m4s", &seg_path);
    s3.put_file("vod/titles/a/index.m3u8", &playlist);
    s3.put_file("private/secret.m4s", &seg_path);

    let origin = start_origin("s3://media/vod", &s3_extra(&s3));
    let base = origin.url("media_addr");
    let url = format!("{base}/titles/a/seg.m4s");

    let full = curl(&[&url]);
    assert_eq!(full.status, 200, "{}", full.text());
    assert_eq!(full.body, segment);
    assert_eq!(full.header("content-type"), Some("video/iso.segment"));
    let etag = full.header("etag").expect("ETag from S3").to_string();
    assert!(etag.starts_with('"'));

    let ranged = curl(&["--http2-prior-knowledge", "-r", "1000-1999", &url]);
    assert_eq!(ranged.status, 206);
    assert_eq!(ranged.body, segment[1000..2000]);
    assert_eq!(
        ranged.header("content-range"),
        Some("bytes 1000-1999/300000")
    );
    let suffix = curl(&["-r", "-100", &url]);
    assert_eq!(suffix.body, segment[segment.len() - 100..]);
    assert_eq!(curl(&["-r", "400000-", &url]).status, 416);

    let not_modified = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(not_modified.status, 304);

    let manifest = curl(&[&format!("{base}/titles/a/index.m3u8")]);
    assert_eq!(manifest.status, 200);
    assert!(manifest.text().starts_with("#EXTM3U"));
    assert_eq!(
        manifest.header("cache-control"),
        Some("public, max-age=86400")
    );

    let missing = curl(&[&format!("{base}/titles/a/missing.m4s")]);
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("no object"));
    // Keys outside the prefix cannot be named.
    assert_eq!(curl(&[&format!("{base}/private/secret.m4s")]).status, 404);
    assert_eq!(
        curl(&["--path-as-is", &format!("{base}/../private/secret.m4s")]).status,
        400
    );
    assert_eq!(
        curl(&[&format!("{base}/%2e%2e/private/secret.m4s")]).status,
        400
    );

    // The store goes away: 503 with a reason and Retry-After, the origin keeps running.
    drop(s3);
    let unavailable = curl(&[&url]);
    assert_eq!(unavailable.status, 503, "{}", unavailable.text());
    assert!(
        unavailable.text().contains("unreachable"),
        "{}",
        unavailable.text()
    );
    assert_eq!(unavailable.header("retry-after"), Some("1"));
    let admin = origin.url("admin_addr");
    let metrics = curl(&[&format!("{admin}/metrics")]).text();
    assert!(
        metrics.contains("origin_store_errors_total{kind=\"store_unavailable\"}"),
        "{metrics}"
    );
    assert_eq!(curl(&[&format!("{admin}/healthz")]).status, 200);
}

#[test]
fn ingest_uploads_large_files_to_s3_in_parts() {
    let s3 = S3Server::start("media");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("package");
    std::fs::create_dir_all(dir.join("hls")).unwrap();
    // A single-file rendition over the 16 MiB multipart threshold, addressed by byte ranges.
    let big: Vec<u8> = (0..(20u32 << 20) + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(dir.join("hls/rendition.mp4"), &big).unwrap();
    std::fs::write(
        dir.join("hls/index.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"rendition.mp4\",BYTERANGE=\"700@0\"\n\
         #EXTINF:4,\n#EXT-X-BYTERANGE:10000000@700\nrendition.mp4\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(dir.join("meta.json"), r#"{"title": "Big"}"#).unwrap();
    let db = work.path().join("catalog.db");
    let config = work.path().join("origin.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[store]\nurl = \"s3://media/vod\"\n{}[catalog]\nurl = \"sqlite://{}\"\n",
            work.path().join("data").display(),
            s3_extra(&s3).trim_start_matches("[store]\n"),
            db.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(testkit::binary("origin"))
        .args(["ingest", "--quiet", "--config"])
        .arg(&config)
        .arg(&dir)
        .args(["--title", "big-title"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let origin = start_origin(
        "s3://media/vod",
        &format!(
            "{}[catalog]\nurl = \"sqlite://{}\"\n",
            s3_extra(&s3),
            db.display()
        ),
    );
    let object = curl(&[&format!(
        "{}/titles/big-title/hls/rendition.mp4",
        origin.url("media_addr")
    )]);
    assert_eq!(object.status, 200);
    assert!(object.body == big, "the parts were joined in order");
    let details = curl(&[&format!("{}/v1/titles/big-title", origin.url("api_addr"))]);
    assert_eq!(details.status, 200, "{}", details.text());
    assert!(
        details.text().contains("titles/big-title/hls/index.m3u8"),
        "{}",
        details.text()
    );
}
