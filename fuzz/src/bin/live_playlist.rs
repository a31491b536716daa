//! LL-HLS at the edge (edge::live): the blocking-reload directives of any query are read or refused with a
//! reason; any text as a live media playlist is read or refused, never a panic; what is read has a positive
//! target duration; whether a request is answered now, held or refused follows the spec's rules whatever the
//! numbers (an ended stream answers now, a request for an older segment answers now); how long a request is held
//! and when the poller runs next stay within their bounds; a part's URI resolves to a path of the same site.
//!
//! Input: one line, the request's query; then the playlist. (Also: the rest as bytes gives the failures count
//! and the time since the last change for the poll delay.)

use std::time::Duration;

use edge::live::{MAX_POLL, MIN_POLL, Ready, directives, hold_limit, parse, poll_delay, ready, resolve};
use fuzz::{fields, take_u64, take_u8, text};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let (failures, rest) = take_u8(data);
        let (since_ms, rest) = take_u64(rest);
        let input = text(rest);
        let parts = fields(&input, '\n', 2);
        let (query, playlist_text) = (parts[0], parts[1]);
        let asked = match directives(Some(query)) {
            Ok(asked) => Some(asked),
            Err(reason) => {
                assert!(!reason.is_empty());
                None
            }
        };
        let playlist = parse(playlist_text);
        let since = Duration::from_millis(since_ms % 3_600_000);
        let delay = poll_delay(playlist.as_ref(), since, u32::from(failures));
        assert!((MIN_POLL..=MAX_POLL).contains(&delay), "{delay:?}");
        let Some(playlist) = playlist else {
            return;
        };
        assert!(playlist.target_duration > 0.0);
        let held = hold_limit(playlist.target_duration);
        assert!((Duration::from_secs(1)..=Duration::from_secs(60)).contains(&held));
        if let Some(asked) = asked {
            let answer = ready(&playlist, &asked);
            if !asked.blocks() || playlist.ended {
                assert_eq!(answer, Ready::Now);
            }
            if asked.msn.is_some_and(|msn| msn < playlist.next_msn) {
                assert_eq!(answer, Ready::Now);
            }
        }
        for uri in [&playlist.newest_part, &playlist.preload_hint].into_iter().flatten() {
            if let Some(path) = resolve("/live/ch/index.m3u8", uri) {
                assert!(path.starts_with('/'), "{path}");
                assert!(!path.contains('?'), "{path}");
            }
        }
    });
}
