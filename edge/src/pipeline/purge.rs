//! Purges from the admin API: a URL or a prefix on one of this edge's sites (in its canonical spelling, so
//! that every spelling of the URL is covered), or a tag. Prefix and tag purges are bans, O(1) to issue.

use super::Edge;
use super::pass::canonical_key;
use crate::cache::bans::{Ban, BanKind};
use crate::cache::key::CacheKey;

impl Edge {
    /// A purge: `target` is a URL (`url`, `prefix`) on one of this edge's sites, or a tag; `soft` marks what it
    /// covers stale instead of dropping it.
    pub async fn purge(&self, kind: BanKind, target: &str, soft: bool) -> Result<Ban, PurgeError> {
        let invalid = |reason: String| PurgeError::Invalid(reason);
        let mut url_key = None;
        let pattern = match kind {
            BanKind::Tag => {
                let tag = target.trim();
                if tag.is_empty() || tag.len() > 256 || tag.contains([' ', ',']) {
                    return Err(invalid(format!(
                        "`{target}` is not a tag (1 to 256 characters, no space or comma)"
                    )));
                }
                tag.to_string()
            }
            BanKind::Url | BanKind::Prefix => {
                let uri: http::Uri = target
                    .parse()
                    .map_err(|e| invalid(format!("`{target}` is not a URL: {e}")))?;
                let host = uri.host().ok_or_else(|| {
                    invalid(format!(
                        "`{target}` must be absolute, such as https://host/path"
                    ))
                })?;
                let site = self
                    .site_for_host(host)
                    .ok_or_else(|| invalid(format!("no site for host `{host}` on this edge")))?;
                let mut pattern = match kind {
                    BanKind::Url => {
                        let key = canonical_key(&site.name, &uri, true).ok_or_else(|| {
                            invalid(format!("`{target}` does not name an object"))
                        })?;
                        let pattern = key.as_str().to_string();
                        url_key = Some(key);
                        pattern
                    }
                    _ => {
                        // A prefix need not be a whole object path (`/titles/` ends in a slash).
                        let path = shared::path::canonical_prefix(uri.path()).map_err(|e| {
                            invalid(format!("`{target}` is not a purgeable prefix: {e}"))
                        })?;
                        CacheKey::new(&site.name, &path, None).as_str().to_string()
                    }
                };
                if kind == BanKind::Prefix
                    && let Some(q) = uri.query()
                {
                    pattern.push('?');
                    pattern.push_str(&shared::path::canonical_query(q));
                }
                pattern
            }
        };
        self.engine
            .purge(kind, pattern, url_key.as_ref(), soft)
            .await
            .map_err(PurgeError::Io)
    }
}

impl Edge {
    /// A hard prefix purge of `path` (`/titles/<slug>/`) on every site of this edge: the control plane's
    /// takedowns name a path, not a host. Returns how many sites it covered.
    pub async fn purge_path_on_every_site(&self, path: &str) -> Result<usize, PurgeError> {
        let path = shared::path::canonical_prefix(path)
            .map_err(|e| PurgeError::Invalid(format!("`{path}` is not a purgeable prefix: {e}")))?;
        for site in &self.sites {
            let pattern = CacheKey::new(&site.name, &path, None).as_str().to_string();
            self.engine
                .purge(BanKind::Prefix, pattern, None, false)
                .await
                .map_err(PurgeError::Io)?;
        }
        Ok(self.sites.len())
    }
}

/// Why a purge was not recorded.
pub enum PurgeError {
    /// The request names nothing this edge serves (400).
    Invalid(String),
    /// The ban could not be saved (500).
    Io(std::io::Error),
}
