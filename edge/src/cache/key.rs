//! Cache keys: site name + path + normalised query (parameters sorted; empty query dropped), so the same object
//! requested with parameters in another order is one entry. Each stored version of an object has a generation
//! number, and its slices are keyed by (key, generation, index), so slices of two versions never mix. A response
//! that varies (`Vary`) is stored once per variant: the variant's normalised request values are part of its
//! metadata key; slices need no variant, as each version's generation is unique.

use std::fmt::Write;

/// The key of one object in one site.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    url: String,
    /// Empty for a URL's primary record; the variant's `name=value` lines otherwise.
    variant: String,
}

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
        CacheKey {
            url: key,
            variant: String::new(),
        }
    }

    /// The key of one variant of this URL, selected by the normalised values of the `Vary` fields.
    pub fn variant(&self, values: &[(String, String)]) -> Self {
        let mut variant = String::new();
        for (name, value) in values {
            let _ = write!(variant, "\n{name}={value}");
        }
        CacheKey {
            url: self.url.clone(),
            variant,
        }
    }

    /// The URL's primary key (no variant).
    pub fn primary(&self) -> Self {
        CacheKey {
            url: self.url.clone(),
            variant: String::new(),
        }
    }

    /// `site|path?query`: what bans match and fills are coalesced on.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The site's name and the path, without the query.
    pub fn site_and_path(&self) -> (&str, &str) {
        let (site, rest) = self.url.split_once('|').unwrap_or(("", "/"));
        (site, rest.split_once('?').map_or(rest, |(path, _)| path))
    }

    /// The path and query sent upstream.
    pub fn path_and_query(&self) -> &str {
        self.url.split_once('|').map_or("/", |(_, path)| path)
    }

    /// The fill that fetches slice `index` of a new object (or variant) under this key.
    pub fn new_fill(&self, index: u64) -> FillKey {
        FillKey(format!("{self}|new|{index}"))
    }

    /// The fill that fetches slice `index` of stored version `generation`.
    pub fn slice_fill(&self, generation: u64, index: u64) -> FillKey {
        FillKey(format!("{self}|{generation:x}|{index}"))
    }

    /// The fill that revalidates stored version `generation`.
    pub fn revalidation_fill(&self, generation: u64) -> FillKey {
        FillKey(format!("{self}|reval|{generation:x}"))
    }

    /// The storage key of the object's (or variant's) metadata record.
    pub fn meta_key(&self) -> String {
        let mut key = String::with_capacity(2 + self.url.len() + self.variant.len());
        key.push_str("m|");
        key.push_str(&self.url);
        key.push_str(&self.variant);
        key
    }

    /// The storage key of slice `index` of version `generation`.
    pub fn slice_key(&self, generation: u64, index: u64) -> String {
        let mut key = String::with_capacity(self.url.len() + 24);
        let _ = write!(key, "s|{generation:x}|{index}|{}", self.url);
        key
    }
}

/// What concurrent requests for the same bytes meet on: one in-flight fill per key. Made only by the methods of
/// [`CacheKey`], so two requests for the same thing always spell it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FillKey(String);

impl FillKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)?;
        f.write_str(&self.variant)
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

    #[test]
    fn fill_keys_differ_by_kind_version_and_slice() {
        let k = CacheKey::new("s", "/x", None);
        let keys = [
            k.new_fill(0),
            k.new_fill(1),
            k.slice_fill(1, 0),
            k.slice_fill(2, 0),
            k.slice_fill(1, 1),
            k.revalidation_fill(1),
            k.revalidation_fill(2),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            k.slice_fill(7, 3),
            CacheKey::new("s", "/x", None).slice_fill(7, 3)
        );
    }

    #[test]
    fn variants_have_their_own_metadata_but_share_the_url() {
        let k = CacheKey::new("s", "/x", Some("a=1"));
        let gzip = k.variant(&[("accept-encoding".into(), "gzip".into())]);
        let none = k.variant(&[("accept-encoding".into(), String::new())]);
        assert_ne!(gzip.meta_key(), k.meta_key());
        assert_ne!(gzip.meta_key(), none.meta_key());
        assert_eq!(gzip.as_str(), k.as_str());
        assert_eq!(gzip.path_and_query(), "/x?a=1");
        assert_eq!(gzip.primary(), k);
        assert_ne!(gzip.new_fill(0), k.new_fill(0), "each variant fills apart");
    }
}
