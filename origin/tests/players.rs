//! ffmpeg, as a player, decodes every stream of every sample title's manifests (HLS and DASH) from the origin,
//! with no warning or error in its log: three video renditions with the expected number of frames, audio, and
//! the WebVTT subtitle cues. ffmpeg exits 0 even when
//! segments 404, so the log decides.

use testkit::{TempStore, ffmpeg_play, start_origin};

/// Every HLS master playlist and DASH MPD of the sample titles, as object keys.
fn sample_manifests(root: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![root.join("titles")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.file_name().and_then(|n| n.to_str()),
                Some("master.m3u8" | "manifest.mpd")
            ) {
                found.push(
                    path.strip_prefix(root)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found.sort();
    found
}

#[test]
fn ffmpeg_plays_every_sample_title_cleanly() {
    let store = TempStore::with_samples();
    let manifests = sample_manifests(store.path());
    let titles: std::collections::BTreeSet<_> = manifests
        .iter()
        .map(|k| k.split('/').nth(1).unwrap())
        .collect();
    assert!(titles.len() >= 2, "at least two sample titles: {titles:?}");
    assert!(
        manifests.iter().any(|k| k.ends_with(".m3u8"))
            && manifests.iter().any(|k| k.ends_with(".mpd"))
    );

    let origin = start_origin(&store.url(), "");
    let base = origin.url("media_addr");
    let mut failures = Vec::new();
    for key in &manifests {
        let report = ffmpeg_play(&format!("{base}/{key}"), None);
        // Three video renditions of about 24 s at 25 fps; the DASH demuxer may drop a last frame.
        let enough_frames =
            report.video_frames.len() >= 3 && report.video_frames.iter().all(|f| *f >= 500);
        let subtitles = report.subtitle_cues.len() == 1 && report.subtitle_cues[0] >= 3;
        if !report.is_clean() || !enough_frames || report.audio_streams == 0 || !subtitles {
            failures.push(format!(
                "{key}: exit_ok={} video_frames={:?} audio_streams={} subtitle_cues={:?} problems:\n{}",
                report.exit_ok,
                report.video_frames,
                report.audio_streams,
                report.subtitle_cues,
                report.problems.join("\n")
            ));
        } else {
            eprintln!(
                "{key}: video frames {:?}, {} audio stream(s), subtitle cues {:?}",
                report.video_frames, report.audio_streams, report.subtitle_cues
            );
        }
    }
    assert!(
        failures.is_empty(),
        "ffmpeg could not play cleanly:\n{}",
        failures.join("\n\n")
    );
    // The origin saw only successful requests.
    let errors: Vec<_> = origin
        .log_events("access")
        .into_iter()
        .filter(|e| e["status"].as_u64() >= Some(400))
        .collect();
    assert!(
        errors.is_empty(),
        "error responses while playing: {errors:?}"
    );
}
