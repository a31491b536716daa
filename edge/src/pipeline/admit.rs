//! Admission: the request made canonical once, before anything else looks at it. Method, host → site (the
//! edge is never an open proxy), the path checked as a safe object key and rewritten in its one canonical
//! spelling (percent-encoded unreserved characters decoded, `%2F`, NUL, dot segments and backslashes refused),
//! the signed-URL token verified and taken off, early data (0-RTT) judged. Every later step — the signed and
//! bypass prefixes, the cache key, purges and bans, the upstream request — uses [`Canonical`], never the raw
//! bytes, so no spelling of a path reaches what another spelling is refused.

use http::request::Parts;
use http::{Method, StatusCode, header};

use super::{Edge, is_unsafe};
use crate::cache::key::CacheKey;
use crate::cache::meta::unix_millis;
use crate::error::EdgeError;

/// One configured site.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// `host:port` of the upstream.
    pub upstream: String,
    /// Path prefixes the cache does not handle (`fwd=bypass`), compared with the canonical path.
    pub bypass_paths: Vec<String>,
    /// Path prefixes served only through signed URLs, compared with the canonical path.
    pub signed_paths: Vec<String>,
    /// Which request fields go upstream.
    pub forwarding: super::Forwarding,
    /// Which query parameters are part of the cache key.
    pub query_key: QueryPolicy,
    /// Passes to the upstream running at once, at most (its permits).
    pub passes: std::sync::Arc<tokio::sync::Semaphore>,
    /// For a path route's settings: its `site/route` label; `None` for the site's own.
    pub route: Option<std::sync::Arc<str>>,
    /// The site's path routes, each with the settings its requests use.
    pub routes: Vec<SiteRoute>,
    /// Segments warmed after each media segment served (0: no prefetch).
    pub prefetch_segments: usize,
}

/// A path route of a site: the canonical paths and prefixes it takes, and what its requests use instead of the
/// site's settings (same name, so the same cache keys and purges; another upstream).
#[derive(Debug, Clone)]
pub struct SiteRoute {
    pub paths: Vec<String>,
    pub prefixes: Vec<String>,
    pub site: Site,
}

impl Site {
    /// The settings a request for canonical `path` uses: the route with `path` among its exact paths, else the
    /// one with the longest prefix of it, else the site's own.
    pub fn route_for(&self, path: &str) -> &Site {
        if let Some(route) = self
            .routes
            .iter()
            .find(|r| r.paths.iter().any(|p| p == path))
        {
            return &route.site;
        }
        self.routes
            .iter()
            .filter_map(|r| {
                r.prefixes
                    .iter()
                    .filter(|p| path.starts_with(p.as_str()))
                    .map(String::len)
                    .max()
                    .map(|len| (len, &r.site))
            })
            .max_by_key(|(len, _)| *len)
            .map_or(self, |(_, site)| site)
    }
}

/// Which query parameters are part of a site's cache keys (the upstream always gets the whole query, less CMCD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryPolicy {
    All,
    None,
    /// Only these parameter names.
    Listed(Vec<String>),
}

impl QueryPolicy {
    /// The part of a canonical query that keys the cache. The LL-HLS delivery directives (`_HLS_msn`,
    /// `_HLS_part`, `_HLS_skip`) are always part of it: each asks for another playlist (a newer one, or a delta).
    pub fn key_part(&self, query: Option<&str>) -> Option<String> {
        let query = query?;
        let kept = |listed: &[String]| {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|param| {
                    let name = param.split_once('=').map_or(*param, |(name, _)| name);
                    crate::live::is_directive(name) || listed.iter().any(|n| n == name)
                })
                .collect();
            (!kept.is_empty()).then(|| kept.join("&"))
        };
        match self {
            QueryPolicy::All => Some(query.to_string()),
            QueryPolicy::None => kept(&[]),
            QueryPolicy::Listed(names) => kept(names),
        }
    }
}

/// The client's address, set by the listener in the request's extensions (signed URLs may be bound to it).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Set by the HTTP/3 listener on a request that arrived in 0-RTT early data (before the handshake completed),
/// which an attacker can replay (RFC 8470).
#[derive(Debug, Clone, Copy)]
pub struct EarlyData;

/// A request as the pipeline sees it after admission.
#[derive(Debug)]
pub struct Canonical<'a> {
    pub site: &'a Site,
    /// The canonical path, without a signed URL's token.
    pub path: String,
    /// The canonical query without CMCD, if anything is left.
    pub query: Option<String>,
    /// The cache key: site, canonical path and sorted query.
    pub key: CacheKey,
    /// It arrived in 0-RTT early data (only safe methods get this far).
    pub early_data: bool,
}

impl Canonical<'_> {
    /// The path and query sent upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}

impl Edge {
    /// Admits a request: its canonical form, or the reason it is refused.
    pub(super) fn admit(&self, parts: &Parts) -> Result<Canonical<'_>, EdgeError> {
        let refuse = |status, reason: String| Err(EdgeError::client(status, reason));
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
            && !is_unsafe(&parts.method)
        {
            return refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} is not served", parts.method),
            );
        }
        let early_data = parts.extensions.get::<super::EarlyData>().is_some();
        if early_data && is_unsafe(&parts.method) {
            // RFC 8470 §5.2: a replayable request with side effects waits for the handshake; the client retries.
            return refuse(
                StatusCode::TOO_EARLY,
                format!(
                    "{} in TLS early data (0-RTT) could be replayed; send it again after the handshake",
                    parts.method
                ),
            );
        }
        self.check_loop(parts)?;
        let site = self.site_for(parts)?;
        let mut path = match shared::path::canonical_path(parts.uri.path()) {
            Ok(path) => path,
            // A folder (`/`, `/v1/titles/`) names no stored object, but a path route's upstream (an API, a web
            // front end's page) may answer it: in its one canonical spelling, for a route only.
            Err(shared::path::PathError::Directory) => {
                shared::path::canonical_prefix(parts.uri.path())
                    .ok()
                    .filter(|folder| site.route_for(folder).route.is_some())
                    .map_or_else(|| canonical_path(parts.uri.path()), Ok)?
            }
            Err(_) => canonical_path(parts.uri.path())?,
        };
        let signed = self.take_token(parts, &mut path)?;
        if !signed
            && site
                .signed_paths
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
        {
            self.metrics
                .signed_url_refusals
                .with_label_values(&["missing"])
                .inc();
            return refuse(
                StatusCode::FORBIDDEN,
                "this path is served only through a signed URL (/t/<token>/...)".into(),
            );
        }
        // A path route's settings from here on (its upstream, its credentials and query policy).
        let site = site.route_for(&path);
        let query = canonical_query(parts.uri.query());
        let key = CacheKey::new(
            &site.name,
            &path,
            site.query_key.key_part(query.as_deref()).as_deref(),
        );
        Ok(Canonical {
            site,
            path,
            query,
            key,
            early_data,
        })
    }

    /// RFC 8586: a request that already passed this CDN more often than any legitimate chain of tiers would is
    /// going round in circles; it is refused, never forwarded again. The count covers every line and member of
    /// `CDN-Loop` in any case, so no spelling (nor naming the field in `Connection`) hides a hop.
    fn check_loop(&self, parts: &Parts) -> Result<(), EdgeError> {
        let cdn_id = &self.loops.cdn_id;
        match crate::shield::hops(&parts.headers, cdn_id) {
            None => Err(EdgeError::client(
                StatusCode::BAD_REQUEST,
                "CDN-Loop has a quoted string that never ends",
            )),
            Some(hops) if hops > self.loops.max_hops => {
                self.metrics.loops_refused.inc();
                // The request is at fault (it looped), but RFC 5842 gives it a 5xx: the chain of proxies
                // (maybe this CDN's own config) is broken, not the client's syntax.
                Err(EdgeError::Client {
                    status: StatusCode::LOOP_DETECTED,
                    reason: format!(
                        "loop detected: CDN-Loop names `{cdn_id}` {hops} times (at most {} allowed)",
                        self.loops.max_hops
                    ),
                })
            }
            Some(_) => Ok(()),
        }
    }

    /// The site for the request's host (the URI's authority, else `Host`): only configured sites are served.
    pub(super) fn site_for(&self, parts: &Parts) -> Result<&super::Site, EdgeError> {
        let authority = match parts.uri.authority() {
            Some(authority) => authority.as_str(),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    EdgeError::client(StatusCode::BAD_REQUEST, "a Host header is required")
                })?,
        };
        if let Some(scheme) = parts.uri.scheme_str()
            && scheme != "https"
            && scheme != "http"
        {
            return Err(EdgeError::client(
                StatusCode::BAD_REQUEST,
                format!("scheme `{scheme}` is not served"),
            ));
        }
        self.site_for_host(host_without_port(authority))
            .ok_or_else(|| {
                EdgeError::client(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!(
                        "no site for host `{}` on this edge; it is not an open proxy",
                        host_without_port(authority).to_ascii_lowercase()
                    ),
                )
            })
    }

    /// The site answering for `host` (any case, no port).
    pub(super) fn site_for_host(&self, host: &str) -> Option<&super::Site> {
        self.hosts
            .get(&host.to_ascii_lowercase())
            .map(|&i| &self.sites[i])
    }

    /// Verifies a signed URL's token (`/t/<token>/path`, in the canonical path) and takes it off `path`;
    /// `false` for a path without a token. Without signing keys configured, `/t/` is an ordinary path.
    fn take_token(&self, parts: &Parts, path: &mut String) -> Result<bool, EdgeError> {
        if self.signing_keys.is_empty() {
            return Ok(false);
        }
        let Some((token, rest)) = shared::token::split_path(path) else {
            return Ok(false);
        };
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map(|a| a.0.ip().to_string())
            .unwrap_or_default();
        let now = unix_millis(self.engine.clock().now()) / 1000;
        if let Err(e) = shared::token::verify(&self.signing_keys, token, rest, &client, now) {
            self.metrics
                .signed_url_refusals
                .with_label_values(&[e.label()])
                .inc();
            return Err(EdgeError::client(StatusCode::FORBIDDEN, e.reason()));
        }
        *path = canonical_path(rest)?;
        Ok(true)
    }
}

/// The canonical spelling of a request's query, without CMCD (`None` when nothing is left): what keys the cache
/// and goes upstream. CMCD describes the player, not the object: it keys nothing and is not sent upstream (the
/// access log and the per-title summaries read it from the request as received). Dropped after
/// canonicalisation, so every spelling of its name that means `CMCD` (`%43MCD`, `C%4dCD`) is dropped.
pub(super) fn canonical_query(raw: Option<&str>) -> Option<String> {
    let query = shared::path::canonical_query(raw.filter(|q| !q.is_empty())?);
    crate::cmcd::query_without_cmcd(&query).map(std::borrow::Cow::into_owned)
}

/// The canonical spelling of a request path, or a 400 (414 for a long one, 404 for a directory) with the
/// reason.
fn canonical_path(path: &str) -> Result<String, EdgeError> {
    shared::path::canonical_path(path).map_err(|e| {
        let status = if e == shared::path::PathError::TooLong {
            StatusCode::URI_TOO_LONG
        } else if e.is_bad_request() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::NOT_FOUND
        };
        EdgeError::client(status, e.reason())
    })
}

pub(super) fn host_without_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority
        .rsplit_once(':')
        .map_or(authority, |(host, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else {
                authority
            }
        })
}

#[cfg(test)]
mod tests {
    use super::{QueryPolicy, Site, SiteRoute, canonical_query, host_without_port};

    fn site(upstream: &str, routes: Vec<SiteRoute>) -> Site {
        Site {
            name: "default".into(),
            upstream: upstream.into(),
            bypass_paths: Vec::new(),
            signed_paths: Vec::new(),
            forwarding: Default::default(),
            query_key: QueryPolicy::All,
            passes: std::sync::Arc::new(tokio::sync::Semaphore::new(1)),
            route: None,
            routes,
            prefetch_segments: 0,
        }
    }

    fn route(name: &str, paths: &[&str], prefixes: &[&str]) -> SiteRoute {
        SiteRoute {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            site: Site {
                route: Some(name.into()),
                ..site(name, Vec::new())
            },
        }
    }

    #[test]
    fn exact_paths_win_then_the_longest_prefix_then_the_site() {
        let s = site(
            "media",
            vec![
                route("api", &["/"], &["/v1/", "/web/"]),
                route("search", &["/v1/search/"], &["/v1/search"]),
            ],
        );
        let table = [
            ("/", "api"),
            ("/v1/titles", "api"),
            ("/v1/search", "search"),
            ("/v1/searches", "search"),
            ("/v1/search/", "search"),
            ("/web/app.js", "api"),
            ("/titles/x/master.m3u8", "media"),
            ("/v1", "media"),
            ("/index.html", "media"),
        ];
        for (path, upstream) in table {
            assert_eq!(s.route_for(path).upstream, upstream, "{path}");
        }
        assert!(s.route_for("/titles/a").route.is_none());
    }

    #[test]
    fn the_query_is_canonical_and_cmcd_free() {
        let table = [
            (None, None),
            (Some(""), None),
            (Some("CMCD=br%3D3200"), None),
            (Some("%43MCD=br%3D3200"), None),
            (Some("C%4dCD=br%3d1&a=%31"), Some("a=1")),
            (Some("b=2&CMCD=x&a=1"), Some("b=2&a=1")),
            (Some("cmcd=1"), Some("cmcd=1")),
            (Some("a=%7e"), Some("a=~")),
        ];
        for (raw, want) in table {
            assert_eq!(canonical_query(raw).as_deref(), want, "{raw:?}");
        }
    }

    #[test]
    fn query_policies_choose_what_keys_the_cache() {
        let q = Some("b=2&utm_source=x&a=1&cb=12345");
        assert_eq!(QueryPolicy::All.key_part(q).as_deref(), q);
        assert_eq!(QueryPolicy::None.key_part(q), None);
        let listed = QueryPolicy::Listed(vec!["a".into(), "b".into()]);
        assert_eq!(listed.key_part(q).as_deref(), Some("b=2&a=1"));
        assert_eq!(listed.key_part(Some("utm=1")), None);
        assert_eq!(listed.key_part(None), None);
        assert_eq!(listed.key_part(Some("a")).as_deref(), Some("a"));
    }

    #[test]
    fn ll_hls_directives_stay_in_every_key() {
        let q = Some("_HLS_msn=9&_HLS_part=2&_HLS_skip=YES&utm=1");
        let directives = Some("_HLS_msn=9&_HLS_part=2&_HLS_skip=YES");
        assert_eq!(QueryPolicy::None.key_part(q).as_deref(), directives);
        let listed = QueryPolicy::Listed(vec!["utm".into()]);
        assert_eq!(listed.key_part(q).as_deref(), q);
        assert_eq!(QueryPolicy::None.key_part(Some("utm=1")), None);
    }

    #[test]
    fn hosts_without_ports() {
        assert_eq!(host_without_port("localhost:8443"), "localhost");
        assert_eq!(host_without_port("localhost"), "localhost");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("127.0.0.1:1"), "127.0.0.1");
    }
}
