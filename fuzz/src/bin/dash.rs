//! DASH MPDs (origin::control::manifests, shared::media): any bytes as an MPD are read or refused with a reason,
//! never a panic; what is read is DASH, its references sorted and deduplicated; ISO 8601
//! durations and the liveness sniffed from the text never panic.
//!
//! Input: the MPD.

use origin::control::manifests::{ManifestKind, read};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        match read("manifest.mpd", data) {
            Ok(manifest) => {
                assert_eq!(manifest.kind, ManifestKind::Dash);
                assert!(
                    manifest.references.windows(2).all(|w| w[0] < w[1]),
                    "{:?}",
                    manifest.references
                );
                if let Some(d) = manifest.duration_secs {
                    assert!(!d.is_nan() && d >= 0.0, "duration {d}");
                }
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
        let text = String::from_utf8_lossy(data);
        let _ = shared::media::manifest_liveness(&text);
        for line in text.lines().take(4) {
            let _ = shared::media::iso8601_duration_secs(line.trim());
        }
    });
}
