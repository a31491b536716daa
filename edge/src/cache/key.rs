//! Cache keys: site name + path + normalised query (parameters sorted; empty query dropped), so the same object
//! requested with parameters in another order is one entry. Each stored version of an object has a generation
//! number, and its slices are keyed by (key, generation, index), so slices of two versions never mix.

use std::fmt::Write;

/// The key of one object in one site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Builds the key from the site name, the request path (already validated) and the raw query, if any.
    pub fn new(site: &str, path: &str, query: Option<&str>) -> Self {
        let mut key = String::with_capacity(site.len() + path.len() + 16);
        key.push_str(site);
        key.push('|');
        key.push_str(path);
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            params.sort_unstable();
            if !params.is_empty() {
                key.push('?');
                key.push_str(&params.join("&"));
            }
        }
        CacheKey(key)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The storage key of the object's metadata record.
    pub fn meta_key(&self) -> String {
        format!("m|{}", self.0)
    }

    /// The storage key of slice `index` of version `generation`.
    pub fn slice_key(&self, generation: u64, index: u64) -> String {
        let mut key = String::with_capacity(self.0.len() + 24);
        let _ = write!(key, "s|{generation:x}|{index}|{}", self.0);
        key
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_normalised() {
        let a = CacheKey::new("s", "/t/a.ts", Some("b=2&a=1"));
        let b = CacheKey::new("s", "/t/a.ts", Some("a=1&b=2&"));
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "s|/t/a.ts?a=1&b=2");
        assert_eq!(
            CacheKey::new("s", "/x", Some("")),
            CacheKey::new("s", "/x", None)
        );
        assert_ne!(
            CacheKey::new("s", "/x", None),
            CacheKey::new("t", "/x", None)
        );
    }

    #[test]
    fn meta_and_slice_keys_differ_by_version_and_index() {
        let k = CacheKey::new("s", "/x", None);
        assert_ne!(k.meta_key(), k.slice_key(1, 0));
        assert_ne!(k.slice_key(1, 0), k.slice_key(2, 0));
        assert_ne!(k.slice_key(1, 0), k.slice_key(1, 1));
    }
}
