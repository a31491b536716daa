//! The control plane's JSON API (`[api] listen`, default 127.0.0.1:8000):
//! - `GET /v1/titles?genre=&year=&language=&limit=&cursor=`: a page of titles ordered by slug, with a stable
//!   cursor (`next_cursor`) for the next page;
//! - `GET /v1/titles/<slug>`: a title with its cast, renditions and asset totals;
//! - `GET /v1/titles/<slug>/assets`: the files of the title (store key, kind, bytes);
//! - `GET /v1/search?q=&limit=`: titles ranked for a query typed so far (typos, prefixes, accents, CJK), with
//!   the matched words highlighted;
//! - `POST /v1/playback`, `GET /v1/steered/…`, `GET /v1/steering/…`: sending viewers to edges, with signed
//!   URLs and Content Steering (`control::playback`);
//! - `PUT /v1/edges/<name>` (bearer `fleet.registration_secret`): an edge registers or reports (its region,
//!   URLs, metrics address and load as JSON); `GET /v1/edges`: the fleet, each edge healthy or down;
//!   `GET /v1/edges/prometheus-sd`: the edges' metrics addresses in Prometheus's HTTP service discovery format.
//!
//! Responses carry an `ETag` (304 for a matching `If-None-Match`); errors are JSON `{"error", "reason"}` with
//! 400 for bad parameters, 404 for unknown titles and paths.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use serde_json::json;
use shared::token::SigningKey;

use crate::control::catalog::{Catalog, ListQuery, TitleDetails};
use crate::control::fleet::Fleet;
pub use crate::control::playback::PlaybackEdges;
use crate::control::playback::{PlaybackRequest, peer_ip};
use crate::control::steering::SteeringPolicy;
use crate::media::handler::Body;
use crate::metrics::OriginMetrics;

/// Largest request body read (playback requests are tiny), and the time it has to arrive.
pub(crate) const MAX_BODY_BYTES: usize = 16 * 1024;
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const DEFAULT_PAGE: i64 = 20;
/// The script players load to report their events (`origin/web/player-events.js`).
const PLAYER_EVENTS_SCRIPT: &str = "/v1/player-events.js";
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
    /// The message bus events and catalog changes are published to; none: `POST /v1/events` answers 503.
    pub bus: Option<crate::bus::Bus>,
    /// Wakes the edges' change feeds (`GET /v1/edges/<name>/changes`) when the catalog changes.
    pub changes: crate::control::changes::ChangeFeed,
    /// Viewers' accounts, sessions and profiles (in the catalog's database).
    pub accounts: Arc<crate::control::accounts::Accounts>,
    /// Bearer credentials of servers that may ask for playback without a viewer's session.
    pub service_tokens: Vec<String>,
    /// Whether the session cookie says `Secure`.
    pub secure_cookies: bool,
    /// The web front end's folder (`web.dir`); none: `/` answers 404.
    pub web_dir: Option<std::path::PathBuf>,
    /// The recommender serving reads (`control::home`), swapped in by training.
    pub recommender: crate::control::home::SharedRecommender,
}

/// Titles' details by slug, shared with the task that clears it when the catalog changes.
pub type TitleCache = Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<TitleDetails>>>>;

/// Titles kept in the details cache at most (it is cleared when full).
const MAX_CACHED_TITLES: usize = 100_000;

/// A refusal: status, machine-readable error, reason.
pub(crate) struct ApiError(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
);

impl ApiError {
    pub(crate) fn bad(reason: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, "bad_request", reason.into())
    }
    pub(crate) fn not_found(reason: impl Into<String>) -> Self {
        ApiError(StatusCode::NOT_FOUND, "not_found", reason.into())
    }
    pub(crate) fn internal(e: anyhow::Error) -> Self {
        tracing::warn!(error = %e, "catalog request failed");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the catalog could not answer".into(),
        )
    }
}

impl ApiService {
    /// A service over `catalog` and `search` with no edges, keys, registration, store or steering table; the
    /// server (and a test or a tool) sets what it needs.
    pub fn new(catalog: Arc<Catalog>, search: crate::control::search::SharedIndex) -> Self {
        ApiService {
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
            bus: None,
            changes: crate::control::changes::ChangeFeed::default(),
            accounts: Arc::new(crate::control::accounts::Accounts::new(
                crate::control::docs::DocStore::new(catalog.pool().clone(), catalog.backend),
                30 * 24 * 3600,
                crate::control::accounts::SigninLimits::default(),
            )),
            service_tokens: Vec::new(),
            secure_cookies: true,
            web_dir: None,
            recommender: Default::default(),
            catalog,
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
        // Players post their events from their own page's origin, anonymously (no cookies, no credentials), so
        // any origin may, and the script that collects them may be loaded from anywhere.
        if path == "/v1/events" || path == PLAYER_EVENTS_SCRIPT {
            let mut response = if *req.method() == Method::OPTIONS {
                let mut preflight = Response::new(shared::body::full(Bytes::new()));
                *preflight.status_mut() = StatusCode::NO_CONTENT;
                let headers = preflight.headers_mut();
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("content-type"),
                );
                headers.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("86400"),
                );
                preflight
            } else if get && path == PLAYER_EVENTS_SCRIPT {
                let mut script = Response::new(shared::body::full(Bytes::from_static(
                    include_bytes!("../../web/player-events.js"),
                )));
                let headers = script.headers_mut();
                headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                );
                headers.insert(
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
                script
            } else {
                self.answer(req, if_none_match).await
            };
            response.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            return response;
        }
        self.answer(req, if_none_match).await
    }

    async fn answer<B>(&self, req: Request<B>, if_none_match: Option<String>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path();
        if crate::control::viewer::handles(path) {
            return self.viewer(req).await;
        }
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
            Err(e) => error_response(e),
        }
    }

    /// Counts a batch posted to an events route by what became of it.
    fn count_events(&self, source: &str, answer: &Result<serde_json::Value, ApiError>) {
        let outcome = match answer {
            Ok(value) => {
                let n = value["accepted"].as_u64().unwrap_or(0);
                self.metrics
                    .events_accepted
                    .with_label_values(&[source])
                    .inc_by(n);
                "accepted"
            }
            Err(ApiError(status, _, _)) if status.is_server_error() => "unavailable",
            Err(_) => "refused",
        };
        self.metrics
            .event_batches
            .with_label_values(&[source, outcome])
            .inc();
    }

    /// The fleet's bearer secret on a request from an edge: registration on and the secret right.
    fn authorize_edge<B>(&self, req: &Request<B>) -> Result<(), ApiError> {
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
        Ok(())
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
        self.authorize_edge(&req)?;
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
                let caller = self.caller(&req).await?;
                if matches!(caller, crate::control::viewer::Caller::Anonymous) {
                    // Refused before the body is read.
                    return self
                        .playback(PlaybackRequest::default(), caller, peer, control)
                        .await;
                }
                let body =
                    shared::body::read_limited(req.into_body(), MAX_BODY_BYTES, BODY_TIMEOUT)
                        .await
                        .map_err(|e| ApiError(e.status(), "bad_body", e.to_string()))?;
                let request: PlaybackRequest = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::bad(format!(
                        "the body must be JSON such as {{\"title\": \"test-pattern\"}}: {e}"
                    ))
                })?;
                self.playback(request, caller, peer, control).await
            }
            (&Method::POST, "/v1/events") => {
                let accepted = crate::control::events::accept(self, req).await;
                self.count_events("player", &accepted);
                accepted
            }
            (&Method::POST, p) if p.starts_with("/v1/edges/") && p.ends_with("/stats") => {
                let name = p["/v1/edges/".len()..p.len() - "/stats".len()].to_string();
                self.authorize_edge(&req)?;
                let accepted = crate::control::events::accept_edge_stats(self, &name, req).await;
                self.count_events("edge", &accepted);
                accepted
            }
            (&Method::GET, p) if p.starts_with("/v1/edges/") && p.ends_with("/changes") => {
                let name = p["/v1/edges/".len()..p.len() - "/changes".len()].to_string();
                self.authorize_edge(&req)?;
                crate::control::changes::feed(self, &name, req.uri().query()).await
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
    pub(crate) async fn title(&self, slug: &str) -> Result<Arc<TitleDetails>, ApiError> {
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
}

/// A client's text as a reason quotes it: its first 32 characters at most, so a client's 10 KB of text is never
/// echoed whole (in a cursor, a year, a limit, a parameter's name, a slug or a path).
pub(crate) fn shown(text: &str) -> String {
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

/// A refusal as JSON `{"error", "reason"}`; a 401 says which scheme to answer with.
pub(crate) fn error_response(ApiError(status, error, reason): ApiError) -> Response<Body> {
    let mut response = json_response(status, &json!({ "error": error, "reason": reason }), None);
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

pub(crate) fn json_response(
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
