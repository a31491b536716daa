//! Path canonicalisation (shared::path): a canonical path is canonical again (idempotent), names the same
//! object as the raw spelling, and starts with `/`; a refused path is refused by `object_key` alike; prefixes
//! and queries are canonical once.
//!
//! Input: the path (as text), optionally `?query`.

use shared::path::{canonical_path, canonical_prefix, canonical_query, object_key};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let (path, query) = text.split_once('?').unwrap_or((text, ""));
        match canonical_path(path) {
            Ok(canonical) => {
                assert!(canonical.starts_with('/'), "{canonical:?}");
                assert_eq!(
                    canonical_path(&canonical).as_ref(),
                    Ok(&canonical),
                    "idempotent: {path:?}"
                );
                assert_eq!(
                    object_key(&canonical),
                    object_key(path),
                    "the same object: {path:?}"
                );
                // Raw non-ASCII bytes may be percent-encoded (three bytes each); nothing else grows.
                assert!(canonical.len() <= 3 * path.len() + 1, "longer: {path:?}");
            }
            Err(e) => {
                assert!(object_key(path).is_err(), "refused alike: {path:?}");
                assert!(!e.reason().is_empty());
            }
        }
        if let Ok(prefix) = canonical_prefix(path) {
            assert!(prefix.starts_with('/'), "{prefix:?}");
            assert_eq!(
                canonical_prefix(&prefix).as_ref(),
                Ok(&prefix),
                "idempotent prefix: {path:?}"
            );
        }
        let once = canonical_query(query);
        assert_eq!(canonical_query(&once), once, "idempotent query: {query:?}");
    });
}
