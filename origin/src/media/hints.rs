//! Blocking preload hints (LL-HLS): a live media playlist names the part that comes next
//! (`#EXT-X-PRELOAD-HINT:TYPE=PART,URI=…`) so that a client — a player, or an edge fetching ahead — can ask for
//! it before it exists, and the server holds that request until the part is written instead of answering 404.
//! The origin learns each playlist's hint when it serves the playlist, and holds a request for a hinted object
//! that is not in the store yet: it looks again every [`STEP`] for up to [`HOLD`], for at most [`MAX_HELD`]
//! requests at once (past that, or for an object no playlist hints, a missing object is a 404 at once).
//!
//! [`HintBoard`] remembers hints with the time passed in; the waiting is the handler's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a request for a hinted object is held at most: nine parts of 1/3 s, a 2 s segment and a half.
pub const HOLD: Duration = Duration::from_secs(3);
/// How often a held request looks in the store again.
pub const STEP: Duration = Duration::from_millis(20);
/// Requests held at once, at most.
pub const MAX_HELD: usize = 256;
/// How long a hint is remembered after the playlist naming it was last served.
const REMEMBERED: Duration = Duration::from_secs(10);
/// Hints remembered at most (one per live rendition served in the last [`REMEMBERED`]); a full board forgets
/// the expired ones, then all.
const MAX_HINTS: usize = 4096;

/// The objects live playlists served lately hint, by store key.
#[derive(Default)]
pub struct HintBoard {
    hinted: Mutex<HashMap<String, Instant>>,
}

impl HintBoard {
    /// Records the part `text` (the playlist stored at `playlist_key`) hints, if it hints one this origin can
    /// name: a relative URI, resolved against the playlist's folder.
    pub fn record(&self, playlist_key: &str, text: &str, now: Instant) {
        let Some(key) = shared::media::hls_preload_hint_part(text)
            .and_then(|uri| hinted_key(playlist_key, uri))
        else {
            return;
        };
        let mut hinted = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        if hinted.len() >= MAX_HINTS && !hinted.contains_key(&key) {
            hinted.retain(|_, at| now.saturating_duration_since(*at) < REMEMBERED);
            if hinted.len() >= MAX_HINTS {
                hinted.clear();
            }
        }
        hinted.insert(key, now);
    }

    /// Whether a playlist served in the last [`REMEMBERED`] hints `key`.
    pub fn is_hinted(&self, key: &str, now: Instant) -> bool {
        self.hinted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some_and(|at| now.saturating_duration_since(*at) < REMEMBERED)
    }
}

/// The store key a playlist's hint names: a relative URI (no scheme, no absolute path, no query) under the
/// playlist's folder, in its one checked spelling; `None` for anything else.
fn hinted_key(playlist_key: &str, uri: &str) -> Option<String> {
    if uri.is_empty() || uri.contains("://") || uri.starts_with('/') || uri.contains(['?', '#']) {
        return None;
    }
    let folder = playlist_key
        .rsplit_once('/')
        .map_or("", |(folder, _)| folder);
    let joined = if folder.is_empty() {
        format!("/{uri}")
    } else {
        format!("/{folder}/{uri}")
    };
    shared::path::object_key(&joined).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART:DURATION=0.33,URI=\"s8.1.m4s\"\n\
                            #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s8.2.m4s\"\n";

    #[test]
    fn a_hint_names_a_key_beside_its_playlist_for_a_while() {
        let board = HintBoard::default();
        let t0 = Instant::now();
        board.record("live/hls/v0.m3u8", PLAYLIST, t0);
        assert!(board.is_hinted("live/hls/s8.2.m4s", t0));
        assert!(board.is_hinted("live/hls/s8.2.m4s", t0 + Duration::from_secs(9)));
        assert!(!board.is_hinted("live/hls/s8.2.m4s", t0 + REMEMBERED));
        assert!(!board.is_hinted("live/hls/s8.1.m4s", t0));
        assert!(!board.is_hinted("s8.2.m4s", t0));
        board.record("top.m3u8", PLAYLIST, t0);
        assert!(board.is_hinted("s8.2.m4s", t0));
    }

    #[test]
    fn hints_the_origin_cannot_name_are_not_recorded() {
        for uri in [
            "https://elsewhere.example/p.m4s",
            "/abs/p.m4s",
            "../../etc/passwd",
            "p.m4s?x=1",
            "a/%2e%2e/%2e%2e/x",
            "",
        ] {
            let text = format!("#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{uri}\"\n");
            let board = HintBoard::default();
            board.record("live/hls/v0.m3u8", &text, Instant::now());
            assert!(
                board.hinted.lock().unwrap().is_empty(),
                "{uri}: {:?}",
                board.hinted.lock().unwrap()
            );
        }
        assert_eq!(
            hinted_key("live/hls/v0.m3u8", "sub/p.m4s").as_deref(),
            Some("live/hls/sub/p.m4s")
        );
    }

    #[test]
    fn a_full_board_forgets_the_expired_hints_first() {
        let board = HintBoard::default();
        let t0 = Instant::now();
        for i in 0..MAX_HINTS {
            let text = format!("#EXTM3U\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p{i}.m4s\"\n");
            board.record("old/v.m3u8", &text, t0);
        }
        let later = t0 + REMEMBERED;
        board.record("new/v.m3u8", PLAYLIST, later);
        assert!(board.is_hinted("new/s8.2.m4s", later));
        assert_eq!(board.hinted.lock().unwrap().len(), 1);
    }
}
