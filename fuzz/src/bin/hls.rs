//! HLS playlists (origin::control::manifests, shared::media): any bytes as a playlist are read or refused with a
//! reason, never a panic; what is read is HLS, its references sorted and deduplicated; the
//! liveness sniffed from the text never panics.
//!
//! Input: the playlist.

use origin::control::manifests::{ManifestKind, read};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        match read("master.m3u8", data) {
            Ok(manifest) => {
                assert!(matches!(
                    manifest.kind,
                    ManifestKind::HlsMaster | ManifestKind::HlsMedia
                ));
                assert_eq!(manifest.kind.protocol(), "hls");
                assert!(
                    manifest.references.windows(2).all(|w| w[0] < w[1]),
                    "{:?}",
                    manifest.references
                );
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
        let text = String::from_utf8_lossy(data);
        let _ = shared::media::manifest_liveness(&text);
    });
}
