//! The cache key (edge::cache::key with the per-site query policy, edge::pipeline::QueryPolicy): the same object
//! asked with its parameters in another order is one key; the key names its site and path; the upstream gets
//! the path and the sorted query back; a listed policy keeps only listed parameters; two variants share a key
//! exactly when their values are equal.
//!
//! Input: lines `site`, `path`, `query`, `listed names (comma-separated)`, `variant value a`, `variant value b`.

use edge::cache::key::CacheKey;
use edge::pipeline::QueryPolicy;
use fuzz::{fields, text};
use shared::path::{canonical_path, canonical_query};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let text = text(data);
        let [site, path, query, listed, a, b] = fields(&text, '\n', 6)[..] else {
            unreachable!()
        };
        // A site name is a config token (no `|`), a path is admitted (canonical) first.
        if site.is_empty()
            || !site
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return;
        }
        let Ok(path) = canonical_path(path) else {
            return;
        };
        let query = canonical_query(query);
        let names: Vec<String> = listed.split(',').map(str::to_string).collect();
        for policy in [
            QueryPolicy::All,
            QueryPolicy::None,
            QueryPolicy::Listed(names.clone()),
        ] {
            let part = policy.key_part(Some(&query));
            match &policy {
                QueryPolicy::All => assert_eq!(part.as_deref(), Some(query.as_str())),
                QueryPolicy::None => assert_eq!(part, None),
                QueryPolicy::Listed(names) => {
                    for param in part.iter().flat_map(|p| p.split('&')) {
                        let name = param.split_once('=').map_or(param, |(n, _)| n);
                        assert!(names.iter().any(|n| n == name), "{param:?} kept");
                    }
                }
            }
            let key = CacheKey::new(site, &path, part.as_deref());
            // The parameters in reverse order: the same key.
            let reversed: Vec<&str> = part.iter().flat_map(|p| p.split('&')).rev().collect();
            let reversed = reversed.join("&");
            assert_eq!(
                key,
                CacheKey::new(site, &path, Some(&reversed)),
                "order: {part:?}"
            );
            assert!(key.as_str().starts_with(&format!("{site}|{path}")));
            let pq = key.path_and_query();
            assert!(pq.starts_with(&path), "{pq:?}");
            let mut params: Vec<&str> = part
                .iter()
                .flat_map(|p| p.split('&'))
                .filter(|p| !p.is_empty())
                .collect();
            params.sort_unstable();
            let want = if params.is_empty() {
                path.clone()
            } else {
                format!("{path}?{}", params.join("&"))
            };
            assert_eq!(pq, want);
            // Variants: equal values share a record, different ones do not; slices never depend on it.
            let va = vec![("accept-language".to_string(), a.to_string())];
            let vb = vec![("accept-language".to_string(), b.to_string())];
            if !a.contains('\n') && !b.contains('\n') {
                assert_eq!(
                    key.variant(&va).meta_key() == key.variant(&vb).meta_key(),
                    a == b
                );
            }
            assert_eq!(key.variant(&va).primary(), key);
            assert_eq!(key.variant(&va).slice_key(1, 2), key.slice_key(1, 2));
            assert_ne!(key.meta_key(), key.slice_key(1, 2));
        }
    });
}
