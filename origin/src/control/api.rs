//! The control plane's JSON API (`[api] listen`, default 127.0.0.1:8000):
//! - `GET /v1/titles?genre=&year=&language=&limit=&cursor=`: a page of titles ordered by slug, with a stable
//!   cursor (`next_cursor`) for the next page;
//! - `GET /v1/titles/<slug>`: a title with its cast, renditions and asset totals;
//! - `GET /v1/titles/<slug>/assets`: the files of the title (store key, kind, bytes);
//! - `GET /v1/search?q=&limit=`: titles ranked for a query typed so far (typos, prefixes, accents, CJK), with
//!   the matched words highlighted;
//! - `POST /v1/playback` `{"title": "<slug>", "protocol": "hls"|"dash", "client": "<address>"}`: the title's
//!   manifest URLs on each configured edge, in the title's own order (rendezvous hashing), each signed
//!   (`/t/<token>/titles/<slug>/…`) with the first `[[signing_key]]`, and the expiry.
//!
//! - `PUT /v1/edges/<name>` (bearer `fleet.registration_secret`): an edge registers or reports (its region,
//!   URLs, metrics address and load as JSON); `GET /v1/edges`: the fleet, each edge healthy or down;
//!   `GET /v1/edges/prometheus-sd`: the edges' metrics addresses in Prometheus's HTTP service discovery format.
//!
//! Responses carry an `ETag` (304 for a matching `If-None-Match`); errors are JSON `{"error", "reason"}` with
//! 400 for bad parameters, 404 for unknown titles and paths.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::token::{Grant, SigningKey};

use crate::control::catalog::{Catalog, ListQuery, TitleDetails};
use crate::media::handler::Body;

/// Largest request body read (playback requests are tiny), and the time it has to arrive.
const MAX_BODY_BYTES: usize = 16 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

pub struct ApiService {
    pub catalog: Arc<Catalog>,
    pub edges: PlaybackEdges,
    pub token_ttl_secs: u64,
    /// The first signs.
    pub signing_keys: Vec<SigningKey>,
    pub search: crate::control::search::SharedIndex,
    /// Titles' details as last read from the catalog; cleared when the catalog changes.
    pub details: TitleCache,
    pub fleet: Arc<crate::control::fleet::Fleet>,
    /// The bearer secret edges register with; none: registration is off.
    pub fleet_secret: Option<String>,
}

/// The edges playback URLs point to, with each one's rendezvous seed (weight 1) made once.
pub struct PlaybackEdges {
    urls: Vec<String>,
    nodes: Vec<(u64, f64)>,
}

impl PlaybackEdges {
    pub fn new(urls: Vec<String>) -> Self {
        let nodes = urls
            .iter()
            .map(|url| (shared::rendezvous::node_seed(url), 1.0))
            .collect();
        PlaybackEdges { urls, nodes }
    }

    /// The edges in `key`'s own order.
    fn ranked(&self, key: &str) -> impl Iterator<Item = &String> {
        shared::rendezvous::rank(key, &self.nodes)
            .into_iter()
            .map(|i| &self.urls[i])
    }
}

/// Titles' details by slug, shared with the task that clears it when the catalog changes.
pub type TitleCache = Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<TitleDetails>>>>;

/// Titles kept in the details cache at most (it is cleared when full).
const MAX_CACHED_TITLES: usize = 100_000;

/// A refusal: status, machine-readable error, reason.
struct ApiError(StatusCode, &'static str, String);

impl ApiError {
    fn bad(reason: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", reason.into())
    }
    fn not_found(reason: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, "not_found", reason.into())
    }
    fn internal(e: anyhow::Error) -> Self {
        tracing::warn!(error = %e, "catalog request failed");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the catalog could not answer".into(),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlaybackRequest {
    title: String,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    client: Option<String>,
}

#[derive(Serialize)]
struct PlaybackEdge {
    edge: String,
    /// Packaging name (`hls-ts`, `dash`, …) → signed manifest URL.
    manifests: std::collections::BTreeMap<String, String>,
}

impl ApiService {
    pub async fn respond<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let if_none_match = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let result = self.route(req).await;
        match result {
            Ok(value) => json_response(StatusCode::OK, &value, if_none_match.as_deref()),
            Err(ApiError(status, error, reason)) => {
                let mut response =
                    json_response(status, &json!({ "error": error, "reason": reason }), None);
                if status == StatusCode::UNAUTHORIZED {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                }
                response
            }
        }
    }

    /// `PUT /v1/edges/<name>`: an edge's registration or report.
    async fn edge_report<B>(
        &self,
        name: &str,
        req: Request<B>,
    ) -> Result<serde_json::Value, ApiError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(secret) = &self.fleet_secret else {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                "registration_off",
                "edges cannot register: set fleet.registration_secret".into(),
            ));
        };
        if !shared::auth::bearer_ok(req.headers(), Some(secret)) {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the registration secret (Authorization: Bearer) is missing or wrong".into(),
            ));
        }
        let body = shared::body::read_limited(req.into_body(), MAX_BODY_BYTES, BODY_TIMEOUT)
            .await
            .map_err(|e| ApiError(e.status(), "bad_body", e.to_string()))?;
        let report: crate::control::fleet::EdgeReport = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad(format!("the body must be an edge's report: {e}")))?;
        let registered = self
            .fleet
            .report(name, report, std::time::Instant::now())
            .map_err(ApiError::bad)?;
        Ok(json!({ "name": name, "registered": registered }))
    }

    async fn route<B>(&self, req: Request<B>) -> Result<serde_json::Value, ApiError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/v1/titles") => self.list(req.uri().query()).await,
            (&Method::GET | &Method::HEAD, p) if p.starts_with("/v1/titles/") => {
                let slug = &p["/v1/titles/".len()..];
                if let Some(slug) = slug.strip_suffix("/assets") {
                    let assets = self
                        .catalog
                        .assets(slug)
                        .await
                        .map_err(ApiError::internal)?
                        .ok_or_else(|| {
                            ApiError::not_found(format!("no title `{}`", shown(slug)))
                        })?;
                    return Ok(json!({ "title": slug, "assets": assets }));
                }
                let details = self.title(slug).await?;
                Ok(serde_json::to_value(&*details).expect("serializable"))
            }
            (&Method::GET | &Method::HEAD, "/v1/search") => self.search(req.uri().query()),
            (&Method::POST, "/v1/playback") => {
                let body =
                    shared::body::read_limited(req.into_body(), MAX_BODY_BYTES, BODY_TIMEOUT)
                        .await
                        .map_err(|e| ApiError(e.status(), "bad_body", e.to_string()))?;
                let request: PlaybackRequest = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad(format!(
                        "the body must be JSON such as {{\"title\": \"test-pattern\"}}: {e}"
                    ))
                })?;
                self.playback(request).await
            }
            (&Method::PUT, p) if p.starts_with("/v1/edges/") => {
                let name = p["/v1/edges/".len()..].to_string();
                self.edge_report(&name, req).await
            }
            (&Method::GET | &Method::HEAD, "/v1/edges") => {
                let now = std::time::Instant::now();
                Ok(json!({ "edges": self.fleet.list(now) }))
            }
            (&Method::GET | &Method::HEAD, "/v1/edges/prometheus-sd") => {
                Ok(self.fleet.prometheus_targets(std::time::Instant::now()))
            }
            (_, "/healthz") => Ok(json!({ "status": "ok" })),
            _ => Err(ApiError::not_found(format!(
                "no route for {} {}",
                req.method(),
                shown(&path)
            ))),
        }
    }

    async fn list(&self, query: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let mut q = ListQuery {
            limit: DEFAULT_PAGE,
            ..ListQuery::default()
        };
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "genre" => q.genre = Some(value.into_owned()),
                "language" => q.language = Some(value.into_owned()),
                "year" => {
                    q.year = Some(value.parse().map_err(|_| {
                        ApiError::bad(format!("year must be a number, not `{}`", shown(&value)))
                    })?)
                }
                "limit" => {
                    q.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad(format!(
                                "limit must be 1 to {MAX_PAGE}, not `{}`",
                                shown(&value)
                            ))
                        })?
                }
                "cursor" => q.after = Some(decode_cursor(&value)?),
                other => {
                    return Err(ApiError::bad(format!(
                        "unknown parameter `{}`",
                        shown(other)
                    )));
                }
            }
        }
        let page = self.catalog.list(&q).await.map_err(ApiError::internal)?;
        Ok(json!({
            "titles": page.titles,
            "next_cursor": page.next_after.as_deref().map(encode_cursor),
        }))
    }

    /// A title's details, from the in-memory copy while the catalog has not changed.
    async fn title(&self, slug: &str) -> Result<Arc<TitleDetails>, ApiError> {
        if let Some(details) = self
            .details
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(slug)
        {
            return Ok(Arc::clone(details));
        }
        let details = self
            .catalog
            .get(slug)
            .await
            .map_err(ApiError::internal)?
            .map(Arc::new)
            .ok_or_else(|| ApiError::not_found(format!("no title `{}`", shown(slug))))?;
        let mut cache = self.details.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_TITLES {
            cache.clear();
        }
        cache.insert(slug.to_string(), Arc::clone(&details));
        Ok(details)
    }

    fn search(&self, query: Option<&str>) -> Result<serde_json::Value, ApiError> {
        let (mut q, mut limit) = (None, 10usize);
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match name.as_ref() {
                "q" => q = Some(value.into_owned()),
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=50).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad(format!("limit must be 1 to 50, not `{}`", shown(&value)))
                        })?
                }
                other => {
                    return Err(ApiError::bad(format!(
                        "unknown parameter `{}`",
                        shown(other)
                    )));
                }
            }
        }
        let q = q
            .filter(|q| !q.trim().is_empty() && q.len() <= 256)
            .ok_or_else(|| ApiError::bad("q must be 1 to 256 bytes of text"))?;
        let index = Arc::clone(&self.search.read().unwrap_or_else(|e| e.into_inner()));
        let hits = index
            .search(&q, limit)
            .map_err(|e| ApiError::internal(anyhow::anyhow!("search: {e}")))?;
        Ok(json!({ "query": q, "hits": hits }))
    }

    async fn playback(&self, request: PlaybackRequest) -> Result<serde_json::Value, ApiError> {
        let protocol = request.protocol.as_deref();
        if protocol.is_some_and(|p| p != "hls" && p != "dash") {
            return Err(ApiError::bad("protocol must be `hls` or `dash`"));
        }
        let title = self.title(&request.title).await?;
        let offered: Vec<_> = title
            .packagings
            .iter()
            .filter(|p| protocol.is_none_or(|want| p.protocol == want))
            .collect();
        if offered.is_empty() {
            // A catalogue entry with nothing (of this protocol) to play: not a list of zero URLs.
            let kind = protocol.map_or(String::new(), |p| format!("{} ", p.to_uppercase()));
            return Err(ApiError::not_found(format!(
                "title `{}` has no {kind}packaging to play",
                title.summary.slug
            )));
        }
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + self.token_ttl_secs;
        let prefix = format!("/titles/{}/", title.summary.slug);
        let token = self.signing_keys.first().map(|key| {
            shared::token::sign(
                key,
                &Grant {
                    key_id: key.id.clone(),
                    expires,
                    prefix: prefix.clone(),
                    client: request.client.clone().unwrap_or_default(),
                },
            )
        });
        // Each title prefers its own order of the edges (rendezvous hashing on the slug): its viewers meet in
        // one edge's cache, and titles spread evenly over the edges.
        let edges: Vec<PlaybackEdge> = self
            .edges
            .ranked(&title.summary.slug)
            .map(|edge| PlaybackEdge {
                edge: edge.clone(),
                manifests: offered
                    .iter()
                    .map(|p| {
                        let base = edge.trim_end_matches('/');
                        let url = match &token {
                            Some(token) => format!("{base}/t/{token}/{}", p.manifest_key),
                            None => format!("{base}/{}", p.manifest_key),
                        };
                        (p.name.clone(), url)
                    })
                    .collect(),
            })
            .collect();
        Ok(json!({
            "title": title.summary.slug,
            "signed": token.is_some(),
            "expires": expires,
            "edges": edges,
        }))
    }
}

/// A client's text as a reason quotes it: its first 32 characters at most, so a client's 10 KB of text is never
/// echoed whole (in a cursor, a year, a limit, a parameter's name, a slug or a path).
fn shown(text: &str) -> String {
    const SHOWN_CHARS: usize = 32;
    let mut shown: String = text.chars().take(SHOWN_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

fn encode_cursor(slug: &str) -> String {
    slug.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::bad(format!(
            "cursor `{}` is not one this API issued",
            shown(cursor)
        ))
    };
    if !cursor.len().is_multiple_of(2) || cursor.len() > 512 {
        return Err(bad());
    }
    // Pairs of bytes, not of characters: a cursor is ASCII hex, and anything else is refused, never sliced.
    let bytes = cursor
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn json_response(
    status: StatusCode,
    value: &serde_json::Value,
    if_none_match: Option<&str>,
) -> Response<Body> {
    let mut body = serde_json::to_vec(value).expect("serializable");
    body.push(b'\n');
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    let etag = format!("\"{:016x}\"", hasher.finish());
    let not_modified = status == StatusCode::OK
        && if_none_match.is_some_and(|inm| {
            inm.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else {
        (status, Bytes::from(body))
    };
    let mut response = Response::new(shared::body::full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if (status == StatusCode::OK || status == StatusCode::NOT_MODIFIED)
        && let Ok(value) = HeaderValue::from_str(&etag)
    {
        headers.insert(header::ETAG, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        assert_eq!(
            decode_cursor(&encode_cursor("test-pattern")).ok(),
            Some("test-pattern".into())
        );
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor("abc").is_err());
        // A multi-byte character where a hex pair was expected (it panicked, slicing inside the character).
        assert!(decode_cursor("a\u{e9}b").is_err());
        assert!(decode_cursor("\u{e9}\u{e9}").is_err());
        // A long cursor is refused without being echoed whole.
        let long = "é".repeat(5000);
        let Some(ApiError(status, _, reason)) = decode_cursor(&long).err() else {
            panic!("a 5,000-character cursor was accepted");
        };
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(reason.len() < 200, "{} bytes of reason", reason.len());
    }
}
