//! The control plane's JSON API (`[api] listen`, default 127.0.0.1:8000):
//! - `GET /v1/titles?genre=&year=&language=&limit=&cursor=`: a page of titles ordered by slug, with a stable
//!   cursor (`next_cursor`) for the next page;
//! - `GET /v1/titles/<slug>`: a title with its cast, renditions and asset totals;
//! - `GET /v1/titles/<slug>/assets`: the files of the title (store key, kind, bytes);
//! - `GET /v1/titles/<slug>/similar?limit=`: titles like it (the recommender's, else the popular ones of its
//!   genres);
//! - `GET /v1/search?q=&limit=`: titles ranked for a query typed so far (typos, prefixes, accents, CJK), with
//!   the matched words highlighted;
//! - `GET /v1/home`: the home page's rows for a visitor who is not signed in (trending, popular genres);
//! - `POST /v1/playback`, `GET /v1/steered/…`, `GET /v1/steering/…`: sending viewers to edges, with signed
//!   URLs and Content Steering (`control::playback`);
//! - `PUT /v1/edges/<name>` (bearer `fleet.registration_secret`): an edge registers or reports (its region,
//!   URLs, metrics address and load as JSON); `GET /v1/edges`: the fleet, each edge healthy or down;
//!   `GET /v1/edges/prometheus-sd`: the edges' metrics addresses in Prometheus's HTTP service discovery format;
//!   `GET /v1/edges/<name>/fill-plan?budget_bytes=N` (fleet secret): what the edge should hold (`control::fill`);
//! - the viewer's routes (accounts, sessions, profiles, the web front end): `control::viewer`.
//!
//! Which answers are shared ([`audience`]): the `GET`s of `/v1/titles…`, `/v1/search` and `/v1/home` (and the
//! player-events script) are the same for every caller, so the edge in front of the instances may keep them:
//! `Cache-Control: public, max-age=<api.browser_max_age_secs>` and `CDN-Cache-Control: max-age=<api.cdn_max_age_secs>,
//! stale-while-revalidate=<api.cdn_stale_while_revalidate_secs>` (RFC 9213: the edge obeys it first), a 404
//! `public, max-age=<api.not_found_max_age_secs>` on both. Their requests lose `Cookie` and `Authorization`
//! before they are answered, and their answers never carry `Set-Cookie`, so a shared answer cannot depend on who
//! asked. The web front end's files (`/`, `/web/…`) stay `no-cache` for browsers and get `CDN-Cache-Control:
//! max-age=<api.cdn_max_age_secs>`. Everything else — whatever reads the session, playback, steering, the fleet —
//! is `private, no-store`.
//!
//! JSON answers carry an `ETag` (a hash of the body, the same on every instance; 304 for a matching
//! `If-None-Match`); errors are JSON `{"error", "reason"}` with 400 for bad parameters, 404 for unknown titles and
//! paths.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use serde_json::json;
use shared::token::SigningKey;

use crate::control::catalog::{Catalog, ListQuery, TitleDetails};
use crate::control::fleet::{EdgeReports, Fleet, Saved};
pub use crate::control::playback::PlaybackEdges;
use crate::control::playback::{PlaybackRequest, Player, peer_ip};
use crate::control::steering::SteeringPolicy;
use crate::control::viewer::Credentials;
use crate::media::handler::Body;
use crate::metrics::OriginMetrics;
use std::net::IpAddr;

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
    /// This instance's copy of the fleet, read again from `edge_reports` every second.
    pub fleet: Arc<Fleet>,
    /// Where the edges' reports are kept for every instance (none: in this instance's fleet only).
    pub edge_reports: Option<EdgeReports>,
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
    /// How long shared answers may be kept (`[api]`).
    pub caching: SharedCaching,
    /// Proxies (the edge) whose `X-Forwarded-For` names the client (`api.trusted_proxies`).
    pub trusted_proxies: crate::control::forwarded::TrustedProxies,
}

/// How long the answers that are the same for every caller may be kept, by browsers and by the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedCaching {
    pub browser_max_age_secs: u64,
    pub cdn_max_age_secs: u64,
    pub cdn_stale_while_revalidate_secs: u64,
    pub not_found_max_age_secs: u64,
}

impl Default for SharedCaching {
    fn default() -> Self {
        SharedCaching::from_config(&crate::config::ApiConfig::default())
    }
}

impl SharedCaching {
    pub fn from_config(api: &crate::config::ApiConfig) -> Self {
        SharedCaching {
            browser_max_age_secs: api.browser_max_age_secs,
            cdn_max_age_secs: api.cdn_max_age_secs,
            cdn_stale_while_revalidate_secs: api.cdn_stale_while_revalidate_secs,
            not_found_max_age_secs: api.not_found_max_age_secs,
        }
    }

    /// `Cache-Control` and `CDN-Cache-Control` of a shared answer with this status; `None`: not to be kept
    /// (a 400 or a 5xx stays `private, no-store`).
    pub fn headers(&self, status: StatusCode) -> Option<(String, String)> {
        match status {
            StatusCode::OK | StatusCode::NOT_MODIFIED => Some((
                format!("public, max-age={}", self.browser_max_age_secs),
                format!(
                    "max-age={}, stale-while-revalidate={}",
                    self.cdn_max_age_secs, self.cdn_stale_while_revalidate_secs
                ),
            )),
            StatusCode::NOT_FOUND => Some((
                format!("public, max-age={}", self.not_found_max_age_secs),
                format!("max-age={}", self.not_found_max_age_secs),
            )),
            _ => None,
        }
    }
}

/// `CDN-Cache-Control` (RFC 9213): how long the edge keeps an answer, obeyed before `Cache-Control`.
pub(crate) const CDN_CACHE_CONTROL: header::HeaderName =
    header::HeaderName::from_static("cdn-cache-control");

/// Who an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The same for every caller: catalog, titles, search, similar titles, anonymous home rows, artwork, the
    /// player-events script. Shared by the edge; the request's credentials are never read.
    Public,
    /// The web front end's files: the same for everyone, kept briefly by the edge, revalidated by browsers.
    WebFile,
    /// Everything else: what reads the session, playback, steering, the fleet, writes. Never shared.
    Personal,
}

/// Who the answer to `method path` is for (see the module's head).
pub fn audience(method: &Method, path: &str) -> Audience {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return Audience::Personal;
    }
    if path == "/" || path.starts_with("/web/") {
        return Audience::WebFile;
    }
    let public = path == "/v1/titles"
        || path.starts_with("/v1/titles/")
        || path == "/v1/search"
        || path == "/v1/home"
        || path == PLAYER_EVENTS_SCRIPT;
    if public {
        Audience::Public
    } else {
        Audience::Personal
    }
}

/// Titles' details by slug, shared with the task that drops them when the catalog changes.
pub type TitleCache = Arc<std::sync::RwLock<ReadCache<TitleDetails>>>;

/// What was last read from the catalog, by slug. Every drop moves the generation on, so a read that started
/// before a change cannot put what it read (maybe the old value) back after it.
pub struct ReadCache<V> {
    titles: std::collections::HashMap<String, Arc<V>>,
    generation: u64,
}

impl<V> Default for ReadCache<V> {
    fn default() -> Self {
        ReadCache {
            titles: std::collections::HashMap::new(),
            generation: 0,
        }
    }
}

impl<V> ReadCache<V> {
    pub fn get(&self, slug: &str) -> Option<Arc<V>> {
        self.titles.get(slug).cloned()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Keeps `details`, read when the cache was at `generation`, unless something was dropped since; a full
    /// cache is emptied first.
    pub fn keep(&mut self, generation: u64, slug: &str, details: Arc<V>) {
        if generation != self.generation {
            return;
        }
        if self.titles.len() >= MAX_CACHED_TITLES {
            self.titles.clear();
        }
        self.titles.insert(slug.to_string(), details);
    }

    /// Drops the details of `slugs`, or of every title when `slugs` is empty.
    pub fn drop_titles(&mut self, slugs: &[String]) {
        self.generation += 1;
        if slugs.is_empty() {
            self.titles.clear();
        } else {
            for slug in slugs {
                self.titles.remove(slug);
            }
        }
    }
}

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
            edge_reports: Some(EdgeReports::new(
                catalog.pool().clone(),
                catalog.queries().clone(),
            )),
            fleet_secret: None,
            steering: SteeringPolicy::default(),
            store: None,
            metrics: Arc::new(OriginMetrics::new()),
            bus: None,
            changes: crate::control::changes::ChangeFeed::default(),
            accounts: Arc::new(crate::control::accounts::Accounts::new(
                catalog.docs(),
                30 * 24 * 3600,
                crate::control::accounts::SigninLimits::default(),
            )),
            service_tokens: Vec::new(),
            secure_cookies: true,
            web_dir: None,
            recommender: Default::default(),
            caching: SharedCaching::default(),
            trusted_proxies: Default::default(),
            catalog,
        }
    }

    /// Answers a request; the connection's peer address, when the listener put it in the request's
    /// extensions, places the viewer. A shared answer ([`audience`]) is made without the request's
    /// credentials and leaves with its lifetimes for browsers and for the edge.
    pub async fn respond<B>(&self, mut req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let audience = audience(req.method(), req.uri().path());
        if audience != Audience::Personal {
            // What every caller gets must not depend on who this caller is.
            let headers = req.headers_mut();
            headers.remove(header::COOKIE);
            headers.remove(header::AUTHORIZATION);
        }
        let mut response = self.respond_to(req).await;
        let status = response.status();
        let headers = response.headers_mut();
        match audience {
            Audience::Personal => {}
            Audience::Public => {
                headers.remove(header::SET_COOKIE);
                // Artwork and the events script name their own, longer, public lifetimes.
                let own_public_lifetime = status.is_success()
                    && headers
                        .get(header::CACHE_CONTROL)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.starts_with("public"));
                if !own_public_lifetime {
                    let policy = self.caching.headers(status);
                    if let Some((browser, cdn)) = policy
                        && let (Ok(browser), Ok(cdn)) =
                            (HeaderValue::from_str(&browser), HeaderValue::from_str(&cdn))
                    {
                        headers.insert(header::CACHE_CONTROL, browser);
                        headers.insert(CDN_CACHE_CONTROL, cdn);
                    }
                }
            }
            Audience::WebFile => {
                headers.remove(header::SET_COOKIE);
                let revalidated = headers
                    .get(header::CACHE_CONTROL)
                    .is_some_and(|v| v.as_bytes() == b"no-cache");
                let cdn = format!("max-age={}", self.caching.cdn_max_age_secs);
                if status == StatusCode::OK
                    && revalidated
                    && let Ok(cdn) = HeaderValue::from_str(&cdn)
                {
                    headers.insert(CDN_CACHE_CONTROL, cdn);
                }
            }
        }
        response
    }

    /// The client's address: the connection's peer, or behind a trusted proxy the address it forwarded
    /// (`control::forwarded`). Everything that binds, places or limits a client asks this, never the peer.
    pub(crate) fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        let peer = peer_ip(req)?;
        Some(self.trusted_proxies.client(peer, req.headers()))
    }

    async fn respond_to<B>(&self, req: Request<B>) -> Response<Body>
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
        crate::control::fleet::check_report(name, &report).map_err(ApiError::bad)?;
        let now = crate::bus::now_ms();
        let Some(reports) = &self.edge_reports else {
            let registered = self
                .fleet
                .report(name, report, now)
                .map_err(ApiError::bad)?;
            return Ok(json!({ "name": name, "registered": registered }));
        };
        // Kept where every instance reads it, then in this instance's copy at once (the others within a second).
        let saved = reports
            .save(name, &report, now)
            .await
            .map_err(ApiError::internal)?;
        if saved == Saved::Full {
            return Err(ApiError::bad(format!(
                "the fleet holds {} edges at most",
                crate::control::fleet::MAX_EDGES
            )));
        }
        let _ = self.fleet.report(name, report, now);
        Ok(json!({ "name": name, "registered": saved == Saved::New }))
    }

    async fn route<B>(&self, req: Request<B>) -> Result<serde_json::Value, ApiError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (&Method::GET | &Method::HEAD, "/v1/titles") => self.list(req.uri().query()).await,
            (&Method::GET | &Method::HEAD, "/v1/home") => {
                let rows = crate::control::home::anonymous_rows(self).await?;
                Ok(json!({ "rows": rows }))
            }
            (&Method::GET | &Method::HEAD, p) if p.starts_with("/v1/titles/") => {
                let slug = &p["/v1/titles/".len()..];
                if let Some(slug) = slug.strip_suffix("/similar") {
                    let limit = crate::control::viewer::limit_param(req.uri().query(), 12, 50)?;
                    self.title(slug).await?;
                    let similar = self.similar_titles(slug, limit).await;
                    return Ok(json!({ "title": slug, "similar": similar }));
                }
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
                let peer = self.client_ip(&req);
                let control = self.control_base(&req);
                let credentials = self.credentials(&req);
                if matches!(&credentials, Credentials::Tokens(tokens) if tokens.is_empty()) {
                    // Refused before the body is read.
                    return self
                        .playback(PlaybackRequest::default(), Player::Anonymous, peer, control)
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
                let player = self.player(credentials, &request).await?;
                self.playback(request, player, peer, control).await
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
                self.authorize_edge(&req)?;
                edge_name(p, "/changes")?;
                crate::control::changes::feed(self, req.uri().query()).await
            }
            (&Method::GET, p) if p.starts_with("/v1/edges/") && p.ends_with("/fill-plan") => {
                self.authorize_edge(&req)?;
                let name = edge_name(p, "/fill-plan")?;
                crate::control::fill::plan(self, name, req.uri().query()).await
            }
            (&Method::PUT, p) if p.starts_with("/v1/edges/") => {
                let name = p["/v1/edges/".len()..].to_string();
                self.edge_report(&name, req).await
            }
            (&Method::GET | &Method::HEAD, "/v1/edges") => {
                Ok(json!({ "edges": self.fleet.list(crate::bus::now_ms()) }))
            }
            (&Method::GET | &Method::HEAD, "/v1/edges/prometheus-sd") => {
                Ok(self.fleet.prometheus_targets(crate::bus::now_ms()))
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
        let generation = {
            let cache = self.details.read().unwrap_or_else(|e| e.into_inner());
            if let Some(details) = cache.get(slug) {
                return Ok(details);
            }
            cache.generation()
        };
        let details = self
            .catalog
            .get(slug)
            .await
            .map_err(ApiError::internal)?
            .map(Arc::new)
            .ok_or_else(|| ApiError::not_found(format!("no title `{}`", shown(slug))))?;
        self.details
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .keep(generation, slug, Arc::clone(&details));
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
/// The `<name>` of `/v1/edges/<name><suffix>`, when it is an edge's name.
fn edge_name<'a>(path: &'a str, suffix: &str) -> Result<&'a str, ApiError> {
    let name = &path["/v1/edges/".len()..path.len() - suffix.len()];
    if !crate::control::fleet::is_name(name) {
        return Err(ApiError::bad(
            "an edge name is 1 to 64 letters, digits, `-`, `_` or `.`",
        ));
    }
    Ok(name)
}

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
    // A hash fixed across builds and instances: the edge revalidates an answer from one instance with another.
    let etag = format!("\"{:016x}\"", twox_hash::XxHash3_64::oneshot(&body));
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
    // Private unless `ApiService::respond` finds the route shared.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
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
    fn a_read_that_started_before_a_change_is_not_kept_after_it() {
        let mut cache = ReadCache::<u32>::default();
        let before = cache.generation();
        cache.keep(before, "a", Arc::new(1));
        assert_eq!(cache.get("a").as_deref(), Some(&1));
        // A read starts, the title changes, the read ends: what it read is not kept.
        let started = cache.generation();
        cache.drop_titles(&["a".to_string()]);
        cache.keep(started, "a", Arc::new(1));
        assert_eq!(cache.get("a"), None);
        // A read after the change is.
        cache.keep(cache.generation(), "a", Arc::new(2));
        assert_eq!(cache.get("a").as_deref(), Some(&2));
        cache.drop_titles(&[]);
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn the_answers_the_same_for_everyone_are_public() {
        for path in [
            "/v1/titles",
            "/v1/titles/test-pattern",
            "/v1/titles/test-pattern/assets",
            "/v1/titles/test-pattern/similar",
            "/v1/titles/test-pattern/artwork",
            "/v1/search",
            "/v1/home",
            "/v1/player-events.js",
        ] {
            assert_eq!(audience(&Method::GET, path), Audience::Public, "{path}");
            assert_eq!(audience(&Method::HEAD, path), Audience::Public, "{path}");
            assert_eq!(
                audience(&Method::POST, path),
                Audience::Personal,
                "POST {path}"
            );
        }
        for path in ["/", "/web/app.js", "/web/vendor/hls.js"] {
            assert_eq!(audience(&Method::GET, path), Audience::WebFile, "{path}");
        }
        for path in [
            "/v1/me",
            "/v1/profiles/p1",
            "/v1/profiles/p1/home",
            "/v1/profiles/p1/history",
            "/v1/sessions",
            "/v1/accounts",
            "/v1/playback",
            "/v1/steered/titles/x/hls/master.m3u8",
            "/v1/steering/x",
            "/v1/edges",
            "/v1/edges/e1/changes",
            "/v1/edges/e1/fill-plan",
            "/v1/titlesx",
            "/v1/homes",
            "/healthz",
        ] {
            assert_eq!(audience(&Method::GET, path), Audience::Personal, "{path}");
        }
    }

    #[test]
    fn shared_lifetimes_by_status() {
        let caching = SharedCaching {
            browser_max_age_secs: 10,
            cdn_max_age_secs: 30,
            cdn_stale_while_revalidate_secs: 60,
            not_found_max_age_secs: 5,
        };
        let ok = Some((
            "public, max-age=10".to_string(),
            "max-age=30, stale-while-revalidate=60".to_string(),
        ));
        assert_eq!(caching.headers(StatusCode::OK), ok);
        assert_eq!(caching.headers(StatusCode::NOT_MODIFIED), ok);
        assert_eq!(
            caching.headers(StatusCode::NOT_FOUND),
            Some(("public, max-age=5".to_string(), "max-age=5".to_string()))
        );
        for status in [
            StatusCode::BAD_REQUEST,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            assert_eq!(caching.headers(status), None, "{status}");
        }
    }

    /// An API over a SQLite catalog with one title, `test-pattern`.
    async fn service(dir: &std::path::Path) -> ApiService {
        let catalog = Catalog::open(&format!("sqlite://{}/catalog.db", dir.display()))
            .await
            .unwrap();
        let meta: crate::control::catalog::TitleMeta = serde_json::from_value(json!({
            "slug": "test-pattern", "title": "Test Pattern", "genres": ["Test"], "popularity": 3,
        }))
        .unwrap();
        catalog.upsert(&meta, 0).await.unwrap();
        let index =
            crate::control::search::SearchIndex::build(&catalog.search_docs().await.unwrap())
                .unwrap();
        ApiService::new(
            Arc::new(catalog),
            Arc::new(std::sync::RwLock::new(Arc::new(index))),
        )
    }

    async fn get(api: &ApiService, path: &str, headers: &[(&str, &str)]) -> Response<Body> {
        let mut req = Request::get(path);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        api.respond(req.body(String::new()).unwrap()).await
    }

    fn header<'a>(response: &'a Response<Body>, name: &str) -> Option<&'a str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    async fn body_of(response: Response<Body>) -> Bytes {
        use http_body_util::BodyExt;
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn public_answers_are_shared_and_personal_ones_private() {
        let dir = tempfile::tempdir().unwrap();
        let api = service(dir.path()).await;
        let credentials = [
            ("cookie", "cdn_session=someone"),
            ("authorization", "Bearer someone-else"),
        ];
        for path in [
            "/v1/titles",
            "/v1/titles/test-pattern",
            "/v1/titles/test-pattern/assets",
            "/v1/titles/test-pattern/similar",
            "/v1/search?q=test",
            "/v1/home",
        ] {
            let anonymous = get(&api, path, &[]).await;
            assert_eq!(anonymous.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&anonymous, "cache-control"),
                Some("public, max-age=10"),
                "{path}"
            );
            assert_eq!(
                header(&anonymous, "cdn-cache-control"),
                Some("max-age=30, stale-while-revalidate=30"),
                "{path}"
            );
            assert_eq!(header(&anonymous, "vary"), None, "{path}");
            assert_eq!(header(&anonymous, "set-cookie"), None, "{path}");
            let etag = header(&anonymous, "etag").expect("an ETag").to_string();
            // With credentials: the very same answer.
            let signed = get(&api, path, &credentials).await;
            assert_eq!(header(&signed, "etag"), Some(etag.as_str()), "{path}");
            assert_eq!(body_of(signed).await, body_of(anonymous).await, "{path}");
            let again = get(&api, path, &[("if-none-match", &etag)]).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(
                header(&again, "cache-control"),
                Some("public, max-age=10"),
                "{path}"
            );
        }
        let home: serde_json::Value =
            serde_json::from_slice(&body_of(get(&api, "/v1/home", &[]).await).await).unwrap();
        assert_eq!(home["rows"][0]["id"], "trending", "{home}");
        assert_eq!(
            home["rows"][0]["items"][0]["slug"], "test-pattern",
            "{home}"
        );

        for path in [
            "/v1/titles/no-such-title",
            "/v1/titles/no-such-title/similar",
        ] {
            let missing = get(&api, path, &[]).await;
            assert_eq!(missing.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(
                header(&missing, "cache-control"),
                Some("public, max-age=10")
            );
            assert_eq!(header(&missing, "cdn-cache-control"), Some("max-age=10"));
        }
        let bad = get(&api, "/v1/titles?limit=0", &[]).await;
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
        assert_eq!(header(&bad, "cache-control"), Some("private, no-store"));
        assert_eq!(header(&bad, "cdn-cache-control"), None);

        for path in [
            "/v1/me",
            "/v1/profiles/p1/home",
            "/v1/edges",
            "/v1/steering/test-pattern",
        ] {
            let personal = get(&api, path, &credentials).await;
            assert_eq!(
                header(&personal, "cache-control"),
                Some("private, no-store"),
                "{path}"
            );
            assert_eq!(header(&personal, "cdn-cache-control"), None, "{path}");
        }
        let signin = api
            .respond(
                Request::post("/v1/sessions")
                    .body(r#"{"email": "a@b.org", "password": "long enough"}"#.to_string())
                    .unwrap(),
            )
            .await;
        assert_eq!(signin.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(header(&signin, "cache-control"), Some("private, no-store"));
    }

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
