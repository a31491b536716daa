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
//!   With `"region"` (a hint) or from the viewer's address (`client`, else the connection's) and the CIDR table,
//!   edges are ranked by `control::steering`: the viewer's region first, nearest regions next, bounded-load
//!   rendezvous hashing within a region; the healthy edges of the fleet when registration is on, else
//!   `playback.edges`. `steering` gives, per packaging, the steered manifest's URL on the control plane;
//! - `GET /v1/steered/<manifest key>?token=&region=`: the title's manifest with one Content Steering pathway per
//!   ranked edge (`control::steered`), for players to start from (the token is the playback answer's);
//! - `GET /v1/steering/<slug>?region=&_HLS_pathway=&_HLS_throughput=` (or `_DASH_pathway`, `_DASH_throughput`):
//!   the steering manifest (`VERSION`, `TTL`, `RELOAD-URI`, `PATHWAY-PRIORITY`) from the fleet's health and
//!   load now; a player stays on its pathway while that edge is healthy, has room and gives it at least the
//!   title's lowest bitrate.
//!
//! - `PUT /v1/edges/<name>` (bearer `fleet.registration_secret`): an edge registers or reports (its region,
//!   URLs, metrics address and load as JSON); `GET /v1/edges`: the fleet, each edge healthy or down;
//!   `GET /v1/edges/prometheus-sd`: the edges' metrics addresses in Prometheus's HTTP service discovery format.
//!
//! Responses carry an `ETag` (304 for a matching `If-None-Match`); errors are JSON `{"error", "reason"}` with
//! 400 for bad parameters, 404 for unknown titles and paths.

use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::token::{Grant, SigningKey};

use crate::control::catalog::{Catalog, ListQuery, TitleDetails};
use crate::control::fleet::{Fleet, is_name};
use crate::control::steering::{Candidate, SteeringPolicy};
use crate::media::handler::Body;
use crate::metrics::OriginMetrics;

/// Largest manifest steered (a multivariant playlist or an MPD).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

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
    pub fleet: Arc<Fleet>,
    /// The bearer secret edges register with; none: registration is off (and `edges` are the edges).
    pub fleet_secret: Option<String>,
    pub steering: SteeringPolicy,
    /// Where steered manifests are read from (the media store); none: `/v1/steered/` answers 404.
    pub store: Option<crate::media::store::Store>,
    pub metrics: Arc<OriginMetrics>,
}

/// The configured edges (`playback.edges`), used when registration is off: no region, always healthy, equal.
pub struct PlaybackEdges(Vec<Candidate>);

impl PlaybackEdges {
    pub fn new(urls: Vec<String>) -> Self {
        PlaybackEdges(
            urls.into_iter()
                .map(|url| Candidate {
                    name: pathway_name(&url),
                    region: String::new(),
                    url,
                    capacity: 1,
                    load: 0,
                })
                .collect(),
        )
    }
}

/// A configured edge's name (and pathway id): its URL's host and port in the letters a pathway id allows
/// (`https://edge1.example:8443` → `edge1.example-8443`).
fn pathway_name(url: &str) -> String {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/');
    let name: String = authority
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    name.trim_matches('-').to_string()
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
    /// The viewer's region, when the caller knows it better than the CIDR table.
    #[serde(default)]
    region: Option<String>,
}

#[derive(Serialize)]
struct PlaybackEdge {
    /// Its base URL.
    edge: String,
    /// Its name (the pathway id in steered manifests).
    name: String,
    /// Its region (empty for `playback.edges`).
    region: String,
    /// Packaging name (`hls-ts`, `dash`, …) → signed manifest URL.
    manifests: std::collections::BTreeMap<String, String>,
}

impl ApiService {
    /// A service over `catalog` and `search` with no edges, keys, registration, store or steering table; the
    /// server (and a test or a tool) sets what it needs.
    pub fn new(catalog: Arc<Catalog>, search: crate::control::search::SharedIndex) -> Self {
        ApiService {
            catalog,
            edges: PlaybackEdges::new(Vec::new()),
            token_ttl_secs: 3600,
            signing_keys: Vec::new(),
            search,
            details: TitleCache::default(),
            fleet: Arc::new(Fleet::new(std::time::Duration::from_secs(15))),
            fleet_secret: None,
            steering: SteeringPolicy::default(),
            store: None,
            metrics: Arc::new(OriginMetrics::new()),
        }
    }

    /// Answers a request; the connection's peer address, when the listener put it in the request's
    /// extensions, places the viewer.
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
        let path = req.uri().path();
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        let steering = if !get {
            None
        } else if let Some(key) = path.strip_prefix("/v1/steered/") {
            Some(self.steered_manifest(key, &req).await)
        } else if let Some(slug) = path.strip_prefix("/v1/steering/") {
            Some(self.steering_manifest(slug, req.uri().query()).await)
        } else {
            None
        };
        let result = match steering {
            Some(Ok(response)) => return response,
            Some(Err(e)) => Err(e),
            None => self.route(req).await,
        };
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
                let peer = peer_ip(&req);
                let control = self.control_base(&req);
                let body =
                    shared::body::read_limited(req.into_body(), MAX_BODY_BYTES, BODY_TIMEOUT)
                        .await
                        .map_err(|e| ApiError(e.status(), "bad_body", e.to_string()))?;
                let request: PlaybackRequest = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad(format!(
                        "the body must be JSON such as {{\"title\": \"test-pattern\"}}: {e}"
                    ))
                })?;
                self.playback(request, peer, control).await
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

    async fn playback(
        &self,
        request: PlaybackRequest,
        peer: Option<IpAddr>,
        control: Option<String>,
    ) -> Result<serde_json::Value, ApiError> {
        let protocol = request.protocol.as_deref();
        if protocol.is_some_and(|p| p != "hls" && p != "dash") {
            return Err(ApiError::bad("protocol must be `hls` or `dash`"));
        }
        if request.region.as_deref().is_some_and(|r| !is_name(r)) {
            return Err(ApiError::bad(
                "region must be 1 to 64 letters, digits, `-`, `_` or `.`",
            ));
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
        let slug = &title.summary.slug;
        let viewer = request
            .client
            .as_deref()
            .and_then(|c| c.parse::<IpAddr>().ok())
            .or(peer);
        let region = self
            .steering
            .viewer_region(request.region.as_deref(), viewer);
        let candidates = self.candidates();
        let ranked = self.steering.rank(slug, region.as_deref(), &candidates);
        let Some(&first) = ranked.first() else {
            return Err(no_edge());
        };
        let first = &candidates[first];
        if self.fleet_secret.is_some() {
            self.fleet.steered(&first.name);
        }
        // Only regions that have edges become label values: a client's hint cannot grow the metric.
        let known = |r: &str| candidates.iter().any(|c| c.region == r && !r.is_empty());
        let viewer_label = match region.as_deref() {
            Some(r) if known(r) => r,
            Some(_) => "other",
            None => "none",
        };
        let edge_label = if first.region.is_empty() {
            "none"
        } else {
            first.region.as_str()
        };
        self.metrics
            .playback_steered
            .with_label_values(&[viewer_label, edge_label])
            .inc();
        let expires = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + self.token_ttl_secs;
        let prefix = format!("/titles/{slug}/");
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
        let edges: Vec<PlaybackEdge> = ranked
            .iter()
            .map(|&i| {
                let edge = &candidates[i];
                PlaybackEdge {
                    edge: edge.url.clone(),
                    name: edge.name.clone(),
                    region: edge.region.clone(),
                    manifests: offered
                        .iter()
                        .map(|p| {
                            (
                                p.name.clone(),
                                edge_url(&edge.url, token.as_deref(), &p.manifest_key),
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        // The steered manifests on the control plane, for players that follow Content Steering.
        let steering: std::collections::BTreeMap<String, String> = control
            .map(|control| {
                offered
                    .iter()
                    .map(|p| {
                        let mut query = url::form_urlencoded::Serializer::new(String::new());
                        if let Some(token) = &token {
                            query.append_pair("token", token);
                        }
                        if let Some(region) = &region {
                            query.append_pair("region", region);
                        }
                        let query = query.finish();
                        let sep = if query.is_empty() { "" } else { "?" };
                        let url = format!("{control}/v1/steered/{}{sep}{query}", p.manifest_key);
                        (p.name.clone(), url)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({
            "title": slug,
            "signed": token.is_some(),
            "expires": expires,
            "region": region,
            "edges": edges,
            "steering": steering,
        }))
    }

    /// The edges steering chooses from now: the fleet's healthy edges when registration is on, else the
    /// configured ones.
    fn candidates(&self) -> Vec<Candidate> {
        if self.fleet_secret.is_some() {
            self.fleet.candidates(std::time::Instant::now())
        } else {
            self.edges.0.clone()
        }
    }

    /// Every edge's base URL by name, down ones included (a clone's base may be an edge that is down).
    fn edge_urls(&self) -> std::collections::HashMap<String, String> {
        if self.fleet_secret.is_some() {
            self.fleet
                .list(std::time::Instant::now())
                .into_iter()
                .map(|e| (e.name, e.report.urls[0].clone()))
                .collect()
        } else {
            self.edges
                .0
                .iter()
                .map(|c| (c.name.clone(), c.url.clone()))
                .collect()
        }
    }

    /// The control plane's base URL as this client reaches it: `steering.public_url`, else the request's
    /// host over http (only a plain host and port: it is written into manifests).
    fn control_base<B>(&self, req: &Request<B>) -> Option<String> {
        if let Some(url) = &self.steering.public_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
        let plain = !host.is_empty()
            && host.len() <= 255
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
        plain.then(|| format!("http://{host}"))
    }

    /// `GET /v1/steered/<manifest key>?token=&region=`: the title's manifest with one pathway per ranked edge.
    async fn steered_manifest<B>(
        &self,
        key: &str,
        req: &Request<B>,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(req.uri().query());
        let slug = key
            .strip_prefix("titles/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(slug, _)| slug)
            .ok_or_else(|| ApiError::not_found(format!("no manifest `{}`", shown(key))))?;
        let peer = peer_ip(req);
        let token = if self.signing_keys.is_empty() {
            None
        } else {
            let token = params.get("token").ok_or_else(|| {
                ApiError(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a steered manifest needs the playback answer's token".into(),
                )
            })?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let client = peer.map(|p| p.to_string()).unwrap_or_default();
            shared::token::verify(&self.signing_keys, token, &format!("/{key}"), &client, now)
                .map_err(|e| ApiError(StatusCode::FORBIDDEN, "forbidden", e.reason().into()))?;
            Some(token)
        };
        let title = self.title(slug).await?;
        let packaging = title
            .packagings
            .iter()
            .find(|p| p.manifest_key == key)
            .ok_or_else(|| ApiError::not_found(format!("no manifest `{}`", shown(key))))?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| ApiError::not_found("steered manifests are off (no store)"))?;
        let (_, text) = store
            .read_small(key, MAX_MANIFEST_BYTES)
            .await
            .map_err(|(e, _)| ApiError(e.status(), "store", e.to_string()))?;
        let text = text.ok_or_else(|| not_steerable("the manifest is larger than 1 MiB"))?;
        let text =
            std::str::from_utf8(&text).map_err(|_| not_steerable("the manifest is not UTF-8"))?;
        let region = params
            .get("region")
            .filter(|r| is_name(r))
            .map(str::to_string)
            .or_else(|| self.steering.viewer_region(None, peer));
        let candidates = self.candidates();
        let ranked = self.steering.rank(slug, region.as_deref(), &candidates);
        if ranked.is_empty() {
            return Err(no_edge());
        }
        let folder = &key[..key.rfind('/').map_or(0, |i| i + 1)];
        let pathways = ranked
            .iter()
            .take(self.steering.max_pathways)
            .map(|&i| {
                let edge = &candidates[i];
                let base = edge_url(&edge.url, token, folder);
                url::Url::parse(&base)
                    .map(|base| crate::control::steered::Pathway {
                        id: edge.name.clone(),
                        base,
                    })
                    .map_err(|e| not_steerable(&format!("edge `{}`: {e}", edge.name)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let control = self
            .control_base(req)
            .ok_or_else(|| ApiError::bad("no Host to name the steering server by"))?;
        let ids: Vec<&str> = pathways.iter().map(|p| p.id.as_str()).collect();
        let server = format!("{control}{}", steering_path(slug, region.as_deref(), &ids));
        let (body, content_type) = match packaging.protocol.as_str() {
            "hls" => (
                crate::control::steered::hls(text, &pathways, &server),
                "application/vnd.apple.mpegurl",
            ),
            _ => (
                crate::control::steered::dash(text, &pathways, &server),
                "application/dash+xml",
            ),
        };
        let body = body.map_err(|e| not_steerable(&e))?;
        Ok(steering_response(Bytes::from(body), content_type))
    }

    /// `GET /v1/steering/<slug>?…`: the steering manifest a player reloads every `TTL` seconds.
    async fn steering_manifest(
        &self,
        slug: &str,
        query: Option<&str>,
    ) -> Result<Response<Body>, ApiError> {
        let params = Params::parse(query);
        let title = self.title(slug).await?;
        let (protocol, current, throughput) =
            match (params.get("_HLS_pathway"), params.get("_DASH_pathway")) {
                (Some(pathway), _) => (
                    "hls",
                    Some(pathway.to_string()),
                    params.get("_HLS_throughput"),
                ),
                // dash.js lists the locations used since its last request, the one in use last.
                (None, Some(list)) => (
                    "dash",
                    list.trim_matches('"')
                        .rsplit(',')
                        .next()
                        .map(str::to_string),
                    params
                        .get("_DASH_throughput")
                        .and_then(|t| t.rsplit(',').next()),
                ),
                (None, None) => ("other", None, None),
            };
        let throughput: Option<f64> = throughput.and_then(|t| t.parse().ok());
        let region = params.get("region").filter(|r| is_name(r));
        let candidates = self.candidates();
        let ranked: Vec<String> = self
            .steering
            .rank(slug, region, &candidates)
            .into_iter()
            .take(16)
            .map(|i| candidates[i].name.clone())
            .collect();
        if ranked.is_empty() {
            return Err(no_edge());
        }
        // A pathway too slow for the title's lowest bitrate is not worth staying on.
        let lowest = title
            .packagings
            .iter()
            .flat_map(|p| &p.renditions)
            .filter(|r| r.kind == "video")
            .filter_map(|r| r.bandwidth)
            .min();
        let fast_enough = match (throughput, lowest) {
            (Some(t), Some(lowest)) if t > 0.0 => t >= lowest as f64,
            _ => true,
        };
        // Staying is for an edge as near as the best one: a viewer sent out of region while its region was
        // down goes back when it is up.
        let best_region = candidates
            .iter()
            .find(|c| c.name == ranked[0])
            .map(|c| c.region.as_str());
        let may_stay = |name: &str| {
            fast_enough
                && candidates.iter().find(|c| c.name == name).is_some_and(|c| {
                    Some(c.region.as_str()) == best_region && self.steering.has_room(c, &candidates)
                })
        };
        let priority = SteeringPolicy::priority(&ranked, current.as_deref(), may_stay);
        let decision = match current.as_deref() {
            None => "first",
            Some(c) if priority.first().is_some_and(|p| p == c) => "stay",
            Some(_) => "move",
        };
        self.metrics
            .steering_requests
            .with_label_values(&[protocol, decision])
            .inc();
        // The manifest's own pathways (its steering URL lists them): healthy edges beyond them become clones.
        let in_manifest: Vec<&str> = params
            .get("pathways")
            .map(|list| list.split(',').filter(|p| is_name(p)).take(16).collect())
            .unwrap_or_default();
        let known = self.edge_urls();
        let with_url = |name: &str| {
            let url = known.get(name)?;
            url::Url::parse(url).ok().map(|u| (name.to_string(), u))
        };
        let manifest: Vec<_> = in_manifest.iter().filter_map(|p| with_url(p)).collect();
        let wanted: Vec<_> = priority.iter().filter_map(|p| with_url(p)).collect();
        let clones = match protocol {
            "hls" | "dash" if !manifest.is_empty() => {
                crate::control::steering::clones(&manifest, &wanted, protocol == "hls")
            }
            _ => Vec::new(),
        };
        let mut answer = json!({
            "VERSION": 1,
            "TTL": self.steering.ttl_secs,
            "RELOAD-URI": steering_path(slug, region, &in_manifest),
            "PATHWAY-PRIORITY": priority,
        });
        if !clones.is_empty() {
            answer["PATHWAY-CLONES"] = json!(clones);
        }
        let mut body = serde_json::to_vec(&answer).expect("serializable");
        body.push(b'\n');
        Ok(steering_response(Bytes::from(body), "application/json"))
    }
}

/// The steering server's path for a title, a viewer's region and the pathways its manifest names.
fn steering_path(slug: &str, region: Option<&str>, pathways: &[&str]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(region) = region {
        query.append_pair("region", region);
    }
    if !pathways.is_empty() {
        query.append_pair("pathways", &pathways.join(","));
    }
    let query = query.finish();
    let sep = if query.is_empty() { "" } else { "?" };
    format!("/v1/steering/{slug}{sep}{query}")
}

/// The URL of `key` on the edge at `base`, with the token path element when signed.
fn edge_url(base: &str, token: Option<&str>, key: &str) -> String {
    let base = base.trim_end_matches('/');
    match token {
        Some(token) => format!("{base}/t/{token}/{key}"),
        None => format!("{base}/{key}"),
    }
}

/// The connection's peer address, which the listener puts in a request's extensions.
fn peer_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    req.extensions().get::<SocketAddr>().map(|a| a.ip())
}

fn no_edge() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "no_edge",
        "no healthy edge to send the viewer to".into(),
    )
}

fn not_steerable(reason: &str) -> ApiError {
    ApiError(
        StatusCode::UNPROCESSABLE_ENTITY,
        "not_steerable",
        reason.to_string(),
    )
}

/// A steered manifest or a steering answer: personal (a token, a live ranking), so never stored, and open to
/// players on any site.
fn steering_response(body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(shared::body::full(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// A query string's parameters, decoded; the first of each name counts.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Self {
        Params(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .take(32)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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
