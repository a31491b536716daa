//! The request pipeline, in one place and in order: **admit** (method, host → site, safe path) → **key** →
//! **lookup** (metadata, then the slices the response needs) → **fill** (one coalesced upstream fill per missing
//! slice, streamed to every waiter) → **respond** (conditional requests, ranges, headers, `Cache-Status`) →
//! **log** (the listener wraps the body so the access log and metrics see its end). Every protocol's listener
//! calls [`Edge::handle`] with the request head; HTTP/3 plugs in the same way.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use shared::conditional::{self, Preconditions, Validators};
use shared::range::{self, ByteRange, RangeOutcome};
use shared::serve::on_drop;
use tokio::sync::Semaphore;

use crate::admin::PurgeError;
use crate::cache::bans::{Ban, BanKind, Bans, Verdict};
use crate::cache::fill::{Fill, FillError, FillHead, Fills, Subscriber, concat};
use crate::cache::freshness::{
    Lifetime, NotStored, Policy, client_accepts_stale, decide, fresh_enough, joined,
    request_directives, ttl_param,
};
use crate::cache::key::CacheKey;
use crate::cache::meta::{ObjectMeta, new_generation, unix_millis};
use crate::cache::slices::{Slicing, first_slice_hint};
use crate::cache::storage::CacheStorage;
use crate::cache::vary::{upstream_fields, variant_values, vary_fields};
use crate::config::ClientDirectives;
use crate::metrics::EdgeMetrics;
use crate::status::{CacheStatus, Fwd, StaleReason};
use crate::upstream::{Upstream, parse_content_range};
use shared::token::SigningKey;

/// Response bodies: cached slices and fill chunks as `Bytes`, never copied.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// One configured site.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// `host:port` of the upstream.
    pub upstream: String,
    /// Path prefixes the cache does not handle (`fwd=bypass`).
    pub bypass_paths: Vec<String>,
    /// Path prefixes served only through signed URLs.
    pub signed_paths: Vec<String>,
}

/// The client's address, set by the listener in the request's extensions (signed URLs may be bound to it).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// Marks a request whose signed-URL token was verified (and stripped from its path).
#[derive(Debug, Clone, Copy)]
struct Signed;

/// The CORS policy for browser players.
pub struct Cors {
    pub any: bool,
    pub origins: Vec<String>,
}

/// The edge: everything the pipeline needs, shared by every connection and protocol.
pub struct Edge {
    pub name: String,
    sites: Vec<Site>,
    hosts: HashMap<String, usize>,
    storage: Arc<dyn CacheStorage>,
    fills: Fills,
    fill_permits: Semaphore,
    upstream: Upstream,
    slice_bytes: u64,
    cors: Cors,
    pub metrics: Arc<EdgeMetrics>,
    /// `Alt-Svc` for TCP responses (HTTP/3 discovery).
    pub alt_svc: Option<HeaderValue>,
    /// How lifetimes are computed (targeted fields, heuristics, negative caching, stale defaults).
    policy: Policy,
    client_directives: ClientDirectives,
    max_variants: usize,
    retention_ms: u64,
    pub bans: Bans,
    /// Request bodies (unsafe methods) larger than this are refused with 413.
    pub max_request_body_bytes: usize,
    /// Keys that verify signed URLs.
    signing_keys: Vec<SigningKey>,
    /// URLs whose last response was not storable, with when that expires (unix ms) and why: requests for them
    /// go straight upstream for a while instead of through a fill first ("hit-for-pass").
    pass_marks: Mutex<HashMap<String, (u64, &'static str)>>,
}

/// What an [`Edge`] is built from.
pub struct EdgeSetup {
    pub name: String,
    /// Each site with the hosts it answers for.
    pub sites: Vec<(Site, Vec<String>)>,
    pub storage: Arc<dyn CacheStorage>,
    pub upstream: Upstream,
    pub slice_bytes: u64,
    pub max_fills: usize,
    pub cors: Cors,
    pub metrics: Arc<EdgeMetrics>,
    /// `Alt-Svc` value advertising HTTP/3 on TCP responses, when it is served.
    pub alt_svc: Option<HeaderValue>,
    pub policy: Policy,
    pub client_directives: ClientDirectives,
    pub max_variants: usize,
    pub retention_secs: u64,
    pub bans: Bans,
    pub max_request_body_bytes: usize,
    pub signing_keys: Vec<SigningKey>,
}

/// The outcome of one request, for the response and the access log.
pub struct Answer {
    pub response: Response<Body>,
    pub cache_status: CacheStatus,
    pub error: Option<String>,
    /// Time spent waiting for the upstream's response head, when this request waited for one.
    pub upstream_ms: Option<f64>,
}

/// A refusal or failure answered with a status and a reason.
pub struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }

    fn from_fill(e: &FillError) -> Self {
        let status = match e {
            FillError::Upstream { timeout: true, .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        Refusal::new(status, e.to_string())
    }
}

/// Request headers forwarded on a pass-through GET or HEAD.
const PASS_HEADERS: [HeaderName; 10] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::AUTHORIZATION,
    header::COOKIE,
    header::ACCEPT,
    header::ACCEPT_ENCODING,
];

/// Request headers never forwarded with an unsafe request: hop-by-hop fields, and those the edge sets itself.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::HOST,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
    header::VIA,
    header::EXPECT,
];

/// Upstream response headers passed to the client on a pass-through.
const PASS_RESPONSE_HEADERS: [HeaderName; 15] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::CONTENT_ENCODING,
    header::CONTENT_LOCATION,
    header::LOCATION,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::ACCEPT_RANGES,
    header::EXPIRES,
    header::VARY,
    header::SET_COOKIE,
    header::WWW_AUTHENTICATE,
    header::ALLOW,
];

/// Response fields stored with an object and passed to clients from the cache (besides Content-Type, ETag,
/// Last-Modified and Cache-Control, which have their own fields).
const STORED_FIELDS: [HeaderName; 8] = [
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
    header::CONTENT_DISPOSITION,
    header::LOCATION,
    header::LINK,
    header::VARY,
    header::X_CONTENT_TYPE_OPTIONS,
];

/// Request fields sent upstream (normalised) when a URL is not yet known to vary: the ones responses most often
/// vary on, so that the first response is already the variant its request selects.
const NEGOTIATION_FIELDS: [&str; 4] = ["accept-encoding", "accept-language", "accept", "origin"];

/// Response fields whose values are tags for purging (space- or comma-separated).
const TAG_FIELDS: [&str; 2] = ["surrogate-key", "cache-tag"];

const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

/// How long a URL whose response was not storable is passed straight upstream.
const PASS_MARK_MS: u64 = 30_000;
/// URLs remembered as not storable, at most.
const MAX_PASS_MARKS: usize = 100_000;

/// The largest body of a whole (non-200) response that is stored.
const MAX_WHOLE_BODY_BYTES: usize = 64 * 1024;

/// Whether a request of this method has a body the edge reads and forwards.
pub fn has_body(method: &Method) -> bool {
    is_unsafe(method)
}

/// Methods the edge forwards (never from cache) and that invalidate what it stored for the URL (§4.4).
fn is_unsafe(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl Edge {
    pub fn new(setup: EdgeSetup) -> Self {
        let EdgeSetup {
            name,
            sites,
            storage,
            upstream,
            slice_bytes,
            max_fills,
            cors,
            metrics,
            alt_svc,
            policy,
            client_directives,
            max_variants,
            retention_secs,
            bans,
            max_request_body_bytes,
            signing_keys,
        } = setup;
        let mut hosts = HashMap::new();
        let mut site_list = Vec::new();
        for (i, (site, site_hosts)) in sites.into_iter().enumerate() {
            for host in site_hosts {
                hosts.insert(host.to_ascii_lowercase(), i);
            }
            site_list.push(site);
        }
        Edge {
            name,
            sites: site_list,
            hosts,
            storage,
            fills: Fills::new(),
            fill_permits: Semaphore::new(max_fills),
            upstream,
            slice_bytes,
            cors,
            metrics,
            alt_svc,
            policy,
            client_directives,
            max_variants,
            retention_ms: retention_secs.saturating_mul(1000),
            bans,
            max_request_body_bytes,
            signing_keys,
            pass_marks: Mutex::new(HashMap::new()),
        }
    }

    pub fn storage(&self) -> &Arc<dyn CacheStorage> {
        &self.storage
    }

    /// Answers one request; `body` is the request body of an unsafe method (empty otherwise).
    pub async fn handle(self: &Arc<Self>, parts: &Parts, body: Bytes) -> Answer {
        let unsigned;
        let parts = match self.check_token(parts) {
            Ok(None) => parts,
            Ok(Some(stripped)) => {
                unsigned = stripped;
                &unsigned
            }
            Err(refusal) => return self.refuse(parts, refusal, CacheStatus::Local),
        };
        if let Some(answer) = self.handle_attempt(parts, &body, true).await {
            return answer;
        }
        // The object changed upstream since it was cached and that version was dropped (or a coalesced fill
        // brought another variant): look it up anew, once.
        match self.handle_attempt(parts, &body, false).await {
            Some(answer) => answer,
            None => self.refuse(
                parts,
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    "the object keeps changing upstream",
                ),
                CacheStatus::Error,
            ),
        }
    }

    /// One pass through the pipeline; `None` when the cached version turned out stale before anything was
    /// sent and `refetch` allows another pass.
    async fn handle_attempt(
        self: &Arc<Self>,
        parts: &Parts,
        body: &Bytes,
        refetch: bool,
    ) -> Option<Answer> {
        // Admit.
        let site = match self.admit(parts) {
            Ok(site) => site,
            Err(refusal) => return Some(self.refuse(parts, refusal, CacheStatus::Local)),
        };
        if parts.method == Method::OPTIONS {
            return Some(self.preflight(parts));
        }
        if parts.extensions.get::<Signed>().is_none()
            && site
                .signed_paths
                .iter()
                .any(|p| parts.uri.path().starts_with(p.as_str()))
        {
            self.metrics
                .signed_url_refusals
                .with_label_values(&["missing"])
                .inc();
            let refusal = Refusal::new(
                StatusCode::FORBIDDEN,
                "this path is served only through a signed URL (/t/<token>/...)",
            );
            return Some(self.refuse(parts, refusal, CacheStatus::Local));
        }
        // Key (a signed URL's token is not part of it: every viewer shares one copy).
        let primary = CacheKey::new(&site.name, parts.uri.path(), parts.uri.query());
        if is_unsafe(&parts.method) {
            return Some(self.forward_unsafe(parts, site, body).await);
        }
        let pass = |fwd, detail| CacheStatus::Pass { fwd, detail };
        if site
            .bypass_paths
            .iter()
            .any(|p| parts.uri.path().starts_with(p.as_str()))
        {
            return Some(self.pass(parts, site, None, pass(Fwd::Bypass, None)).await);
        }
        if parts.headers.contains_key(header::AUTHORIZATION) {
            // RFC 9111 §3.5 allows sharing some of these; the edge never does (its fills are shared by every
            // waiter, and it cannot tell what the credentials select).
            let status = pass(Fwd::Request, Some("authorization"));
            return Some(self.pass(parts, site, None, status).await);
        }
        let request_cc = request_directives(&parts.headers);
        let honor = self.client_directives == ClientDirectives::Honor;
        // Look up.
        let now = SystemTime::now();
        let Found {
            key,
            meta,
            miss_fwd,
            variant,
        } = self.lookup(&primary, &parts.headers, now).await;
        let attempt = |served| Attempt { refetch, served };
        let mut stale_fallback = None;
        let fwd = match meta {
            Some(meta) => {
                let fresh = meta.is_fresh(now);
                let forced = honor && !fresh_enough(&request_cc, meta.age(now), meta.ttl_secs);
                let staleness = meta.staleness(now);
                if fresh && (!forced || request_cc.only_if_cached) {
                    let served = attempt(Served::Fresh);
                    return self.respond(parts, site, key, meta, None, served).await;
                }
                if !fresh && client_accepts_stale(&request_cc, staleness, meta.no_stale) {
                    let served = attempt(Served::Stale(StaleReason::MaxStale));
                    return self.respond(parts, site, key, meta, None, served).await;
                }
                if request_cc.only_if_cached {
                    return Some(self.not_cached(parts));
                }
                let fwd = if fresh { Fwd::Request } else { Fwd::Stale };
                let validator = meta.etag.is_some() || meta.last_modified.is_some();
                let within = |window: u64| window > 0 && staleness <= window;
                let if_error = !meta.no_stale && within(meta.stale_if_error_secs);
                if !fresh && !forced && validator && within(meta.stale_while_revalidate_secs) {
                    // RFC 5861: answer now from the stale copy; one background request revalidates it.
                    let (edge, upstream, key_bg, meta_bg) = (
                        Arc::clone(self),
                        site.upstream.clone(),
                        key.clone(),
                        Arc::clone(&meta),
                    );
                    tokio::spawn(async move { edge.revalidate(&upstream, &key_bg, meta_bg).await });
                    let served = attempt(Served::Stale(StaleReason::WhileRevalidate));
                    return self.respond(parts, site, key, meta, None, served).await;
                }
                if validator {
                    // One conditional request for the object, shared by every waiter.
                    match self
                        .revalidate(&site.upstream, &key, Arc::clone(&meta))
                        .await
                    {
                        Revalidation::NotModified(meta) => {
                            let served = attempt(Served::Revalidated(fwd));
                            return self.respond(parts, site, key, meta, None, served).await;
                        }
                        Revalidation::Changed => {}
                        Revalidation::Failed(_) if if_error => {
                            let served = attempt(Served::Stale(StaleReason::IfError));
                            return self.respond(parts, site, key, meta, None, served).await;
                        }
                        Revalidation::Failed(e) => {
                            let refusal = Refusal::from_fill(&e);
                            return Some(self.refuse(parts, refusal, CacheStatus::Error));
                        }
                    }
                } else if if_error {
                    stale_fallback = Some(meta);
                }
                fwd
            }
            None if request_cc.only_if_cached => return Some(self.not_cached(parts)),
            None => miss_fwd,
        };
        if fwd == Fwd::UriMiss
            && let Some(detail) = self.pass_mark(&key, now)
        {
            return Some(self.pass(parts, site, None, pass(fwd, Some(detail))).await);
        }
        if honor && request_cc.no_store {
            let status = pass(Fwd::Request, Some("no-store"));
            return Some(self.pass(parts, site, None, status).await);
        }
        // Fill: the first slice this request needs, which also brings the object's metadata.
        let range_spec = parts
            .headers
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| match range::parse(v) {
                Ok(range::ParsedRange::Single(spec)) => Some(spec),
                _ => None,
            });
        let index = first_slice_hint(range_spec, self.slice_bytes);
        let forward = match &variant {
            Some(values) => upstream_fields(values),
            // For a URL not known to vary: the fields responses most often vary on, normalised.
            None => upstream_fields(&variant_values(
                &NEGOTIATION_FIELDS.map(String::from),
                &parts.headers,
            )),
        };
        let waited = Instant::now();
        let (fill, started) = self.join_fill(
            &format!("{key}|new|{index}"),
            &site.upstream,
            &key,
            index,
            FillTarget::New(forward),
        );
        let mut subscriber = fill.subscribe();
        let head = subscriber.head().await;
        let upstream_ms = Some(waited.elapsed().as_secs_f64() * 1000.0);
        let upstream_failed = match &head {
            Err(_) => true,
            Ok(FillHead::NotStorable { status, .. }) => *status >= 500,
            Ok(FillHead::Slice(_)) => false,
        };
        match head {
            _ if upstream_failed && stale_fallback.is_some() => {
                let meta = stale_fallback.expect("checked above");
                let served = attempt(Served::Stale(StaleReason::IfError));
                self.respond(parts, site, key, meta, None, served).await
            }
            Err(e) => {
                let mut answer = self.refuse(parts, Refusal::from_fill(&e), CacheStatus::Error);
                answer.upstream_ms = upstream_ms;
                Some(answer)
            }
            Ok(FillHead::NotStorable { detail, .. }) => {
                self.mark_pass(&key, detail, now);
                let status = pass(fwd, Some(detail));
                Some(self.pass(parts, site, None, status).await)
            }
            Ok(FillHead::Slice(meta)) => {
                if !meta.vary.is_empty()
                    && variant_values(&meta.vary, &parts.headers) != meta.variant
                {
                    // A coalesced fill brought another variant than this request selects.
                    if refetch {
                        return None;
                    }
                    let status = pass(Fwd::VaryMiss, Some("variant-changed"));
                    return Some(self.pass(parts, site, None, status).await);
                }
                let ttl = ttl_param(meta.ttl_secs, meta.age(SystemTime::now()));
                let status = if started {
                    CacheStatus::Miss { fwd, ttl }
                } else {
                    CacheStatus::Coalesced { fwd, ttl }
                };
                // A whole response's body is slice 0, whatever slice the request started from.
                let index = if meta.status == 200 { index } else { 0 };
                let mut answer = self
                    .respond(
                        parts,
                        site,
                        key,
                        meta,
                        Some(Joined {
                            status,
                            index,
                            subscriber,
                        }),
                        attempt(Served::Fresh),
                    )
                    .await?;
                answer.upstream_ms = upstream_ms;
                Some(answer)
            }
        }
    }

    /// Finds the stored version for a request: the URL's primary record, or the variant its `Vary` fields
    /// select. Versions the bans drop, or older than the retention limit, are misses; soft-banned ones stale.
    async fn lookup(&self, primary: &CacheKey, request: &HeaderMap, now: SystemTime) -> Found {
        let Some(meta) = self.lookup_record(primary, now).await else {
            return Found {
                key: primary.clone(),
                meta: None,
                miss_fwd: Fwd::UriMiss,
                variant: None,
            };
        };
        if meta.vary.is_empty() {
            return Found {
                key: primary.clone(),
                meta: Some(meta),
                miss_fwd: Fwd::UriMiss,
                variant: None,
            };
        }
        let values = variant_values(&meta.vary, request);
        if values == meta.variant {
            return Found {
                key: primary.clone(),
                meta: Some(meta),
                miss_fwd: Fwd::UriMiss,
                variant: Some(values),
            };
        }
        let key = primary.variant(&values);
        let variant = self
            .lookup_record(&key, now)
            .await
            .filter(|v| v.variant == values && v.vary == meta.vary);
        Found {
            key,
            meta: variant,
            miss_fwd: Fwd::VaryMiss,
            variant: Some(values),
        }
    }

    async fn lookup_record(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<ObjectMeta>> {
        let cached = self.storage.lookup_meta(key).await;
        let result = cached.as_ref().map_or("miss", |(_, tier)| tier.label());
        self.metrics
            .lookups
            .with_label_values(&["meta", result])
            .inc();
        let (mut meta, _) = cached?;
        let now_ms = unix_millis(now);
        if meta.confirmed_ms.saturating_add(self.retention_ms) < now_ms {
            self.storage.remove(key);
            return None;
        }
        match self
            .bans
            .verdict(key.as_str(), &meta.tags, meta.confirmed_ms)
        {
            Verdict::Keep => Some(meta),
            Verdict::Stale(at_ms) => {
                self.metrics.ban_matches.with_label_values(&["stale"]).inc();
                Arc::make_mut(&mut meta).expire(UNIX_EPOCH + Duration::from_millis(at_ms));
                Some(meta)
            }
            Verdict::Drop => {
                self.metrics.ban_matches.with_label_values(&["drop"]).inc();
                self.storage.remove(key);
                None
            }
        }
    }

    /// Why requests for `key` go straight upstream, while its last response's "not storable" mark lasts.
    fn pass_mark(&self, key: &CacheKey, now: SystemTime) -> Option<&'static str> {
        let marks = self.pass_marks.lock().unwrap_or_else(|e| e.into_inner());
        if marks.is_empty() {
            return None;
        }
        let key = key.to_string();
        marks
            .get(&key)
            .filter(|(until, _)| *until > unix_millis(now))
            .map(|(_, detail)| *detail)
    }

    /// Remembers for [`PASS_MARK_MS`] that `key`'s response was not storable (the set is bounded: when full, it
    /// is cleared, which costs only a fill attempt per URL).
    fn mark_pass(&self, key: &CacheKey, detail: &'static str, now: SystemTime) {
        let mut marks = self.pass_marks.lock().unwrap_or_else(|e| e.into_inner());
        if marks.len() >= MAX_PASS_MARKS {
            marks.clear();
        }
        marks.insert(key.to_string(), (unix_millis(now) + PASS_MARK_MS, detail));
    }

    fn forget_pass_mark(&self, key: &CacheKey) {
        let mut marks = self.pass_marks.lock().unwrap_or_else(|e| e.into_inner());
        marks.remove(&key.to_string());
    }

    /// `only-if-cached` without a usable stored response (RFC 9111 §5.2.1.7).
    fn not_cached(&self, parts: &Parts) -> Answer {
        self.refuse(
            parts,
            Refusal::new(
                StatusCode::GATEWAY_TIMEOUT,
                "only-if-cached: no usable response is stored",
            ),
            CacheStatus::NotCached,
        )
    }

    /// Verifies a signed URL's token (`/t/<token>/path`) and returns the request with the token stripped from its
    /// path; `None` for a path without a token; a 403 with the reason when the token does not grant the path.
    /// Without signing keys configured, `/t/` is an ordinary path.
    fn check_token(&self, parts: &Parts) -> Result<Option<Parts>, Refusal> {
        if self.signing_keys.is_empty() {
            return Ok(None);
        }
        let Some((token, rest)) = shared::token::split_path(parts.uri.path()) else {
            return Ok(None);
        };
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map(|a| a.0.ip().to_string())
            .unwrap_or_default();
        let now = unix_millis(SystemTime::now()) / 1000;
        if let Err(e) = shared::token::verify(&self.signing_keys, token, rest, &client, now) {
            self.metrics
                .signed_url_refusals
                .with_label_values(&[e.label()])
                .inc();
            return Err(Refusal::new(StatusCode::FORBIDDEN, e.reason()));
        }
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        let mut uri = http::uri::Builder::new().path_and_query(path_and_query);
        if let Some(scheme) = parts.uri.scheme() {
            uri = uri.scheme(scheme.clone());
        }
        if let Some(authority) = parts.uri.authority() {
            uri = uri.authority(authority.clone());
        }
        let uri = uri
            .build()
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, format!("bad path: {e}")))?;
        let mut request = http::Request::new(());
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        request.extensions_mut().insert(Signed);
        if let Some(addr) = parts.extensions.get::<ClientAddr>() {
            request.extensions_mut().insert(*addr);
        }
        Ok(Some(request.into_parts().0))
    }

    /// Method, host and path checks: the edge serves only its configured sites (never an open proxy) and only
    /// paths that are safe object keys.
    fn admit(&self, parts: &Parts) -> Result<&Site, Refusal> {
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS)
            && !is_unsafe(&parts.method)
        {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} is not served", parts.method),
            ));
        }
        let authority = match parts.uri.authority() {
            Some(authority) => authority.as_str().to_string(),
            None => parts
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| {
                    Refusal::new(StatusCode::BAD_REQUEST, "a Host header is required")
                })?,
        };
        if let Some(scheme) = parts.uri.scheme_str()
            && scheme != "https"
            && scheme != "http"
        {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("scheme `{scheme}` is not served"),
            ));
        }
        let host = host_without_port(&authority).to_ascii_lowercase();
        let site = self
            .hosts
            .get(&host)
            .map(|&i| &self.sites[i])
            .ok_or_else(|| {
                Refusal::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    format!("no site for host `{host}` on this edge; it is not an open proxy"),
                )
            })?;
        shared::path::object_key(parts.uri.path()).map_err(|e| {
            let status = if e.is_bad_request() {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::NOT_FOUND
            };
            Refusal::new(status, e.reason())
        })?;
        Ok(site)
    }

    /// Respond from an object's metadata: preconditions, range, headers, and a body streamed slice by slice.
    /// The cache status is the `joined` fill's when this request started or joined one for its first slice;
    /// otherwise whether that slice is cached decides it.
    async fn respond(
        self: &Arc<Self>,
        parts: &Parts,
        site: &Site,
        key: CacheKey,
        meta: Arc<ObjectMeta>,
        joined: Option<Joined>,
        attempt: Attempt,
    ) -> Option<Answer> {
        let now = SystemTime::now();
        let ttl = ttl_param(meta.ttl_secs, meta.age(now));
        let from_cache = match attempt.served {
            Served::Fresh => CacheStatus::Hit { ttl },
            Served::Revalidated(fwd) => CacheStatus::Revalidated { fwd, ttl },
            Served::Stale(reason) => CacheStatus::Stale {
                past: meta.staleness(now),
                reason,
            },
        };
        let prepared = meta.prepared();
        let validators = Validators {
            etag: meta.etag.as_deref(),
            last_modified: prepared.last_modified,
        };
        let text = |name: HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let preconditions = Preconditions::from_headers(&parts.headers);
        let whole = meta.status != 200;
        // A stored non-2xx response is sent whole: preconditions and ranges apply to 2xx only (RFC 9110 §13.2.1).
        let range_header = text(header::RANGE).filter(|_| !whole);
        let get_or_head = true;
        let outcome = if whole {
            conditional::Outcome::Proceed { apply_range: false }
        } else {
            conditional::evaluate(
                &preconditions,
                &validators,
                get_or_head,
                range_header.is_some(),
            )
        };
        let slicing = meta.slicing();
        let (http_status, part) = match outcome {
            conditional::Outcome::NotModified => (StatusCode::NOT_MODIFIED, None),
            conditional::Outcome::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, None),
            conditional::Outcome::Proceed { apply_range } => {
                match range::evaluate(range_header.filter(|_| apply_range), meta.total_len) {
                    RangeOutcome::Full => (
                        StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK),
                        (meta.total_len > 0).then_some(ByteRange {
                            start: 0,
                            end: meta.total_len - 1,
                        }),
                    ),
                    RangeOutcome::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
                    RangeOutcome::Refused(e) => {
                        let mut answer = self.refuse(
                            parts,
                            Refusal::new(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string()),
                            joined.as_ref().map_or(from_cache, |j| j.status),
                        );
                        if let Ok(v) =
                            HeaderValue::from_str(&range::unsatisfied_content_range(meta.total_len))
                        {
                            answer
                                .response
                                .headers_mut()
                                .insert(header::CONTENT_RANGE, v);
                        }
                        return Some(answer);
                    }
                }
            }
        };
        let sends_body = parts.method != Method::HEAD
            && (whole || matches!(http_status, StatusCode::OK | StatusCode::PARTIAL_CONTENT));

        // The first slice decides the cache status when this request did not fill.
        let mut first = None;
        let mut error = None;
        let cache_status = match (joined.as_ref().map(|j| j.status), part) {
            (Some(status), _) => status,
            (None, Some(range)) if sends_body => {
                let index = slicing.index_of(range.start);
                match self.slice_source(site, &key, &meta, index).await {
                    Ok((source, status)) => {
                        first = Some((index, source));
                        status.unwrap_or(from_cache)
                    }
                    Err(FillError::ValidatorChanged) if attempt.refetch => return None,
                    Err(e) => {
                        return Some(self.refuse(
                            parts,
                            Refusal::from_fill(&e),
                            CacheStatus::Error,
                        ));
                    }
                }
            }
            (None, _) => from_cache,
        };
        if let (
            Some(Joined {
                index, subscriber, ..
            }),
            Some(range),
        ) = (joined, part)
            && slicing.touched(range).contains(&index)
            && first.is_none()
        {
            first = Some((index, SliceSource::Filling(subscriber)));
        }

        let mut response = Response::builder().status(http_status);
        let headers = response.headers_mut().expect("fresh builder");
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(header::AGE, HeaderValue::from(meta.age(now)));
        put(
            headers,
            HeaderName::from_static("cache-status"),
            &cache_status.header_value(&self.name),
        );
        for (name, value) in &prepared.fields {
            headers.append(name.clone(), value.clone());
        }
        self.cors_headers(parts, headers);
        let body = match (http_status, part) {
            (_, Some(range)) if whole => {
                put(headers, header::CONTENT_LENGTH, &range.len().to_string());
                if sends_body {
                    let first = first.filter(|(index, _)| *index == 0);
                    self.body(site, key, meta, range, first)
                } else {
                    empty()
                }
            }
            (StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED, None) => empty(),
            (_, None) if whole => {
                put(headers, header::CONTENT_LENGTH, "0");
                empty()
            }
            (StatusCode::OK | StatusCode::PARTIAL_CONTENT, Some(range)) => {
                put(headers, header::CONTENT_LENGTH, &range.len().to_string());
                if http_status == StatusCode::PARTIAL_CONTENT {
                    put(
                        headers,
                        header::CONTENT_RANGE,
                        &range.content_range(meta.total_len),
                    );
                }
                if sends_body {
                    let first_index = slicing.index_of(range.start);
                    let first = first.filter(|(index, _)| *index == first_index);
                    self.body(site, key, meta, range, first)
                } else {
                    empty()
                }
            }
            (StatusCode::OK, None) => {
                put(headers, header::CONTENT_LENGTH, "0");
                empty()
            }
            (StatusCode::PRECONDITION_FAILED, _) => {
                put(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
                full("precondition failed\n")
            }
            _ => empty(),
        };
        let response = response.body(body).unwrap_or_else(|e| {
            error = Some(format!("response: {e}"));
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        });
        Some(Answer {
            response,
            cache_status,
            error,
            upstream_ms: None,
        })
    }

    /// The body for `range` of a version: one buffer when it lies in one cached slice (manifests, small
    /// segments: the protocol can then end the stream with its data), else the slices streamed in turn.
    fn body(
        self: &Arc<Self>,
        site: &Site,
        key: CacheKey,
        meta: Arc<ObjectMeta>,
        range: ByteRange,
        first: Option<(u64, SliceSource)>,
    ) -> Body {
        let slicing = meta.slicing();
        if let Some((index, SliceSource::Cached(bytes))) = &first
            && slicing.touched(range) == (*index..=*index)
        {
            let cut = slicing.cut(*index, range);
            if bytes.len() >= cut.end {
                return Full::new(bytes.slice(cut))
                    .map_err(|never| match never {})
                    .boxed_unsync();
            }
        }
        SliceStream::new(Arc::clone(self), site, key, meta, range, first).into_body()
    }

    /// Where slice `index` of this version comes from: the cache, or a (possibly shared) fill. The status is
    /// `None` for a cache hit, `Miss`/`Coalesced` for a fill.
    async fn slice_source(
        self: &Arc<Self>,
        site: &Site,
        key: &CacheKey,
        meta: &Arc<ObjectMeta>,
        index: u64,
    ) -> Result<(SliceSource, Option<CacheStatus>), FillError> {
        if let Some((bytes, tier)) = self.storage.read_slice(key, meta.generation, index).await {
            self.metrics
                .lookups
                .with_label_values(&["slice", tier.label()])
                .inc();
            return Ok((SliceSource::Cached(bytes), None));
        }
        self.metrics
            .lookups
            .with_label_values(&["slice", "miss"])
            .inc();
        let fill_key = format!("{key}|{:x}|{index}", meta.generation);
        let target = FillTarget::Known(Arc::clone(meta));
        let (fill, started) = self.join_fill(&fill_key, &site.upstream, key, index, target);
        let mut subscriber = fill.subscribe();
        match subscriber.head().await? {
            FillHead::Slice(_) => {
                let (fwd, ttl) = (
                    Fwd::UriMiss,
                    ttl_param(meta.ttl_secs, meta.age(SystemTime::now())),
                );
                let status = if started {
                    CacheStatus::Miss { fwd, ttl }
                } else {
                    CacheStatus::Coalesced { fwd, ttl }
                };
                Ok((SliceSource::Filling(subscriber), Some(status)))
            }
            FillHead::NotStorable { status, .. } => Err(FillError::Upstream {
                timeout: false,
                message: format!("the upstream answered {status} for a slice of a cached object"),
            }),
        }
    }

    /// Revalidates a stale object with one conditional request (`If-None-Match`, else `If-Modified-Since`, for
    /// its first byte), shared by every request that finds it stale meanwhile. A 304 refreshes the stored
    /// metadata (freshness, age, stored fields, RFC 9111 §3.2 and §4.3.4) and keeps the slices; anything else
    /// drops the stored version.
    async fn revalidate(
        self: &Arc<Self>,
        upstream: &str,
        key: &CacheKey,
        stale: Arc<ObjectMeta>,
    ) -> Revalidation {
        let fill_key = format!("{key}|reval|{:x}", stale.generation);
        let (fill, started) = self.fills.join_or_start(&fill_key);
        let mut subscriber = fill.subscribe();
        if started {
            let (edge, upstream, key) = (Arc::clone(self), upstream.to_string(), key.clone());
            tokio::spawn(async move {
                let head = edge.revalidate_upstream(&upstream, &key, &stale).await;
                edge.fills.remove(&fill_key);
                match head {
                    Ok(head) => {
                        fill.publish_head(Ok(head));
                        fill.finish(Ok(()));
                    }
                    Err(e) => fill.finish(Err(e)),
                }
            });
        } else {
            self.metrics.fill_waiters.inc();
        }
        match subscriber.head().await {
            Ok(FillHead::Slice(meta)) => Revalidation::NotModified(meta),
            Ok(FillHead::NotStorable { .. }) => Revalidation::Changed,
            Err(e) => Revalidation::Failed(e),
        }
    }

    async fn revalidate_upstream(
        &self,
        upstream: &str,
        key: &CacheKey,
        stale: &ObjectMeta,
    ) -> Result<FillHead, FillError> {
        let changed = |status| FillHead::NotStorable {
            status,
            detail: "changed",
        };
        let mut headers = HeaderMap::new();
        if stale.status == 200 {
            put(&mut headers, header::RANGE, "bytes=0-0");
        }
        for (name, value) in upstream_fields(&stale.variant) {
            headers.insert(name, value);
        }
        match (&stale.etag, &stale.last_modified) {
            (Some(etag), _) => put(&mut headers, header::IF_NONE_MATCH, etag),
            (None, Some(date)) => put(&mut headers, header::IF_MODIFIED_SINCE, date),
            (None, None) => return Ok(changed(0)),
        }
        let request_time = SystemTime::now();
        let response = self.upstream_get(upstream, key, headers).await?;
        let status = response.status().as_u16();
        if status >= 500 {
            // An upstream error, not a new version: the stored one stays, stale-if-error may serve it.
            return Err(FillError::Upstream {
                timeout: false,
                message: format!("{upstream} answered {status}"),
            });
        }
        if status != 304 {
            self.storage.remove(key);
            return Ok(changed(status));
        }
        let now = SystemTime::now();
        // §3.2: the 304's fields replace the stored ones; the freshness is computed from the result.
        let mut merged = stored_head(stale);
        for (name, value) in response.headers() {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_RANGE {
                merged.insert(name.clone(), value.clone());
            }
        }
        let lifetime = match decide(
            &self.policy,
            stale.status,
            &merged,
            false,
            request_time,
            now,
        ) {
            Ok(lifetime) => lifetime,
            Err(_) => {
                // The 304 says the response may no longer be stored.
                self.storage.remove(key);
                return Ok(changed(status));
            }
        };
        let text = |name: HeaderName| {
            merged
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut refreshed = ObjectMeta {
            cache_control: text(header::CACHE_CONTROL),
            last_modified: text(header::LAST_MODIFIED),
            headers: stored_fields(&merged, &lifetime.strip_fields),
            tags: tags(&merged),
            ..stale.clone()
        };
        refreshed.refresh(&lifetime, now);
        let refreshed = Arc::new(refreshed);
        self.storage.insert_meta(key, &refreshed);
        Ok(FillHead::Slice(refreshed))
    }

    /// GET `key`'s path from `upstream` with `headers`, counted in the upstream metrics.
    async fn upstream_get(
        &self,
        upstream: &str,
        key: &CacheKey,
        headers: HeaderMap,
    ) -> Result<Response<hyper::body::Incoming>, FillError> {
        let (response, took) = self
            .upstream
            .request(
                &Method::GET,
                upstream,
                key.path_and_query(),
                headers,
                Bytes::new(),
            )
            .await?;
        let class = shared::metrics::status_class(response.status().as_u16());
        self.metrics
            .upstream_requests
            .with_label_values(&[class])
            .inc();
        self.metrics.upstream_latency.observe(took.as_secs_f64());
        Ok(response)
    }

    /// Starts slice `index` in the background if it is neither cached nor being filled (read-ahead while a
    /// client streams the slice before it).
    fn prefetch(self: &Arc<Self>, site: &Site, key: &CacheKey, meta: &Arc<ObjectMeta>, index: u64) {
        let fill_key = format!("{key}|{:x}|{index}", meta.generation);
        if self.fills.get(&fill_key).is_some() {
            return;
        }
        let (edge, upstream, key, meta) = (
            Arc::clone(self),
            site.upstream.clone(),
            key.clone(),
            Arc::clone(meta),
        );
        tokio::spawn(async move {
            if edge
                .storage
                .read_slice(&key, meta.generation, index)
                .await
                .is_none()
            {
                let _ = edge.join_fill(&fill_key, &upstream, &key, index, FillTarget::Known(meta));
            }
        });
    }

    /// Joins the fill under `fill_key` or starts it; `true` when this call started it.
    fn join_fill(
        self: &Arc<Self>,
        fill_key: &str,
        upstream: &str,
        key: &CacheKey,
        index: u64,
        target: FillTarget,
    ) -> (Arc<Fill>, bool) {
        let (fill, started) = self.fills.join_or_start(fill_key);
        if !started {
            self.metrics.fill_waiters.inc();
            return (fill, false);
        }
        let (edge, fill_for_task, fill_key, upstream, key) = (
            Arc::clone(self),
            Arc::clone(&fill),
            fill_key.to_string(),
            upstream.to_string(),
            key.clone(),
        );
        tokio::spawn(async move {
            let _permit = edge.fill_permits.acquire().await;
            edge.metrics.fills_in_flight.inc();
            let result = edge
                .fill_slice(&fill_for_task, &upstream, &key, index, target)
                .await;
            // Insert (inside fill_slice) → unregister → wake: a request arriving in between finds the slice cached.
            edge.fills.remove(&fill_key);
            edge.metrics.fills_in_flight.dec();
            if let Err(e) = &result {
                let kind = match e {
                    FillError::Upstream { timeout: true, .. } => "timeout",
                    FillError::Upstream { .. } => "connect",
                    FillError::Body(_) => "body",
                    FillError::ValidatorChanged => "validator_changed",
                };
                edge.metrics
                    .upstream_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::warn!(key = %key, slice = index, error = %e, "fill failed");
                if *e == FillError::ValidatorChanged {
                    edge.storage.remove(&key);
                }
            }
            fill_for_task.finish(result);
        });
        (fill, true)
    }

    /// Fetches slice `index` with a slice-aligned Range request, publishes the head, streams chunks to the fill's
    /// subscribers, and inserts the slice (and, for a new object, its metadata) when it is complete. A storable
    /// response of another status is read whole and stored as slice 0.
    async fn fill_slice(
        &self,
        fill: &Arc<Fill>,
        upstream: &str,
        key: &CacheKey,
        index: u64,
        target: FillTarget,
    ) -> Result<(), FillError> {
        let (known, forward) = match target {
            FillTarget::Known(meta) => {
                if let Some((bytes, _)) = self.storage.read_slice(key, meta.generation, index).await
                {
                    // Filled by a fill that ended between this request's lookup and its registration.
                    fill.publish_head(Ok(FillHead::Slice(Arc::clone(&meta))));
                    fill.push(bytes);
                    return Ok(());
                }
                let forward = upstream_fields(&meta.variant);
                (Some(meta), forward)
            }
            FillTarget::New(forward) => (None, forward),
        };
        let slice_bytes = known.as_ref().map_or(self.slice_bytes, |m| m.slice_bytes);
        let start = index * slice_bytes;
        let end = match &known {
            Some(meta) => (start + slice_bytes).min(meta.total_len) - 1,
            None => start + slice_bytes - 1,
        };
        let mut headers = HeaderMap::new();
        put(&mut headers, header::RANGE, &format!("bytes={start}-{end}"));
        for (name, value) in &forward {
            headers.insert(name.clone(), value.clone());
        }
        let request_time = SystemTime::now();
        let response = self.upstream_get(upstream, key, headers).await?;
        let status = response.status().as_u16();
        let now = SystemTime::now();
        let h = response.headers();
        let text = |name: HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let lifetime = decide(&self.policy, status, h, false, request_time, now);
        let (total, body_start, body_end) = match status {
            206 => match text(header::CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range)
            {
                Some((s, e, total)) if s == start => (total, s, e),
                _ => {
                    return Err(FillError::Body(
                        "a 206 without a usable Content-Range".into(),
                    ));
                }
            },
            200 if index == 0 => {
                let total: u64 = text(header::CONTENT_LENGTH)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| {
                        FillError::Body("a 200 without Content-Length cannot be sliced".into())
                    })?;
                (total, 0, slice_bytes.min(total).max(1) - 1)
            }
            _ => {
                return match (known, lifetime) {
                    (None, Ok(lifetime)) if status != 200 && status != 206 => {
                        self.fill_whole(fill, key, status, response, lifetime, &forward, now)
                            .await
                    }
                    (_, lifetime) => {
                        let detail = lifetime.err().map_or("status", NotStored::as_str);
                        fill.publish_head(Ok(FillHead::NotStorable { status, detail }));
                        Ok(())
                    }
                };
            }
        };
        let etag = text(header::ETAG);
        let mut alias_guard = None;
        let meta = match known {
            Some(meta) => {
                if meta.etag != etag || meta.total_len != total {
                    return Err(FillError::ValidatorChanged);
                }
                meta
            }
            None => {
                let lifetime = match lifetime {
                    Ok(lifetime) if total > 0 => lifetime,
                    result => {
                        let detail = result.err().map_or("empty", NotStored::as_str);
                        fill.publish_head(Ok(FillHead::NotStorable { status, detail }));
                        return Ok(());
                    }
                };
                let generation = new_generation(now);
                // Requests that find the new metadata before this slice is stored must join this fill, not
                // start a second one: register it under the version's fill key first.
                let alias = format!("{key}|{generation:x}|{index}");
                self.fills.alias(&alias, fill);
                alias_guard = Some(on_drop(move || self.fills.remove(&alias)));
                let mut meta = ObjectMeta {
                    content_type: text(header::CONTENT_TYPE),
                    etag,
                    ..ObjectMeta::new(generation, 200, total, slice_bytes)
                };
                self.describe(&mut meta, h, &lifetime, &forward, now);
                let meta = Arc::new(meta);
                self.store_meta(key, &meta).await;
                meta
            }
        };
        fill.publish_head(Ok(FillHead::Slice(Arc::clone(&meta))));
        let expected = body_end - body_start + 1;
        let mut received = 0u64;
        let mut body = response.into_body();
        while received < expected {
            let Some(mut chunk) = self.upstream.next_chunk(&mut body).await? else {
                break;
            };
            let room = expected - received;
            if chunk.len() as u64 > room {
                if status == 206 {
                    return Err(FillError::Body(format!(
                        "more than the {expected} bytes announced"
                    )));
                }
                chunk.truncate(room as usize); // a 200 for a large object: keep the first slice only
            }
            received += chunk.len() as u64;
            fill.push(chunk);
        }
        if received < expected {
            return Err(FillError::Body(format!(
                "ended after {received} of {expected} bytes"
            )));
        }
        self.storage
            .insert_slice(key, meta.generation, index, concat(&fill.chunks()));
        self.metrics.slices_stored.inc();
        // Unregister the alias only now that the slice is in the cache.
        drop(alias_guard);
        Ok(())
    }

    /// Stores a small response of another status than 200 (404, 301, …) whole: its body becomes slice 0, stored
    /// before the head is published so that every waiter can read it.
    #[allow(clippy::too_many_arguments)]
    async fn fill_whole(
        &self,
        fill: &Arc<Fill>,
        key: &CacheKey,
        status: u16,
        response: Response<hyper::body::Incoming>,
        lifetime: Lifetime,
        forward: &[(HeaderName, HeaderValue)],
        now: SystemTime,
    ) -> Result<(), FillError> {
        let (head, mut body) = response.into_parts();
        let mut chunks = Vec::new();
        let mut received = 0usize;
        while let Some(chunk) = self.upstream.next_chunk(&mut body).await? {
            received += chunk.len();
            if received > MAX_WHOLE_BODY_BYTES {
                fill.publish_head(Ok(FillHead::NotStorable {
                    status,
                    detail: "too-large",
                }));
                return Ok(());
            }
            chunks.push(chunk);
        }
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|len| len != received) {
            return Err(FillError::Body(format!(
                "ended after {received} of {} bytes",
                declared.unwrap_or_default()
            )));
        }
        let text = |name: HeaderName| {
            head.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut meta = ObjectMeta {
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            ..ObjectMeta::new(
                new_generation(now),
                status,
                received as u64,
                self.slice_bytes,
            )
        };
        self.describe(&mut meta, &head.headers, &lifetime, forward, now);
        let meta = Arc::new(meta);
        let body = concat(&chunks);
        self.storage
            .insert_slice(key, meta.generation, 0, body.clone());
        self.store_meta(key, &meta).await;
        fill.publish_head(Ok(FillHead::Slice(meta)));
        fill.push(body);
        Ok(())
    }

    /// Fills a new version's metadata from its response head: freshness, stored fields, tags, and the variant
    /// it is (the values of its `Vary` fields as sent upstream).
    fn describe(
        &self,
        meta: &mut ObjectMeta,
        head: &HeaderMap,
        lifetime: &Lifetime,
        forward: &[(HeaderName, HeaderValue)],
        now: SystemTime,
    ) {
        meta.last_modified = head
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        meta.cache_control = joined(head, &header::CACHE_CONTROL);
        meta.headers = stored_fields(head, &lifetime.strip_fields);
        meta.tags = tags(head);
        meta.vary = vary_fields(head);
        meta.variant = meta
            .vary
            .iter()
            .map(|name| {
                let sent = forward
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .and_then(|(_, v)| v.to_str().ok())
                    .unwrap_or("");
                (name.clone(), sent.to_string())
            })
            .collect();
        meta.refresh(lifetime, now);
    }

    /// Stores a new version's metadata: under the URL's primary key, or, for a variant other than the primary
    /// record's, under the variant's key, listed on the primary record (the oldest beyond the cap dropped).
    async fn store_meta(&self, key: &CacheKey, meta: &Arc<ObjectMeta>) {
        let primary = key.primary();
        if meta.vary.is_empty() {
            self.storage.insert_meta(&primary, meta);
            return;
        }
        let current = self.storage.lookup_meta(&primary).await.map(|(m, _)| m);
        let Some(current) = current.filter(|c| c.vary == meta.vary && c.variant != meta.variant)
        else {
            self.storage.insert_meta(&primary, meta);
            return;
        };
        self.storage
            .insert_meta(&primary.variant(&meta.variant), meta);
        if !current.variants.contains(&meta.variant) {
            let mut current = (*current).clone();
            current.variants.push(meta.variant.clone());
            while current.variants.len() >= self.max_variants {
                let oldest = current.variants.remove(0);
                self.storage.remove(&primary.variant(&oldest));
            }
            self.storage.insert_meta(&primary, &Arc::new(current));
        }
    }

    /// Forwards a request the cache does not answer and streams the upstream's answer back as it is; `body` is
    /// sent with unsafe methods.
    async fn pass(
        self: &Arc<Self>,
        parts: &Parts,
        site: &Site,
        body: Option<&Bytes>,
        cache_status: CacheStatus,
    ) -> Answer {
        let mut headers = HeaderMap::new();
        if body.is_some() {
            for (name, value) in &parts.headers {
                if !HOP_BY_HOP.contains(name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        } else {
            for name in PASS_HEADERS {
                for value in parts.headers.get_all(&name) {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let started = Instant::now();
        let result = self
            .upstream
            .request(
                &parts.method,
                &site.upstream,
                path,
                headers,
                body.cloned().unwrap_or_default(),
            )
            .await;
        let upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let (response, _) = match result {
            Ok(ok) => ok,
            Err(e) => {
                let mut answer = self.refuse(parts, Refusal::from_fill(&e), CacheStatus::Error);
                answer.upstream_ms = upstream_ms;
                return answer;
            }
        };
        let status = response.status();
        self.metrics
            .upstream_requests
            .with_label_values(&[shared::metrics::status_class(status.as_u16())])
            .inc();
        let mut builder = Response::builder().status(status);
        let headers = builder.headers_mut().expect("fresh builder");
        for name in PASS_RESPONSE_HEADERS {
            for value in response.headers().get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        put(
            headers,
            HeaderName::from_static("cache-status"),
            &cache_status.header_value(&self.name),
        );
        self.cors_headers(parts, headers);
        if is_unsafe(&parts.method) && (status.is_success() || status.is_redirection()) {
            self.invalidate(parts, site, response.headers());
        }
        let edge = Arc::clone(self);
        let body = futures::stream::unfold(Some(response.into_body()), move |body| {
            let edge = Arc::clone(&edge);
            async move {
                let mut body = body?;
                match edge.upstream.next_chunk(&mut body).await {
                    Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some(body))),
                    Ok(None) => None,
                    Err(e) => Some((Err(io::Error::other(e)), None)),
                }
            }
        });
        let body = if parts.method == Method::HEAD {
            empty()
        } else {
            StreamBody::new(body).boxed_unsync()
        };
        let response = builder
            .body(body)
            .unwrap_or_else(|_| Response::new(empty()));
        Answer {
            response,
            cache_status,
            error: None,
            upstream_ms,
        }
    }

    /// An unsafe request (POST, PUT, PATCH, DELETE): forwarded with its body, never answered from cache.
    async fn forward_unsafe(self: &Arc<Self>, parts: &Parts, site: &Site, body: &Bytes) -> Answer {
        let status = CacheStatus::Pass {
            fwd: Fwd::Request,
            detail: Some("method"),
        };
        self.pass(parts, site, Some(body), status).await
    }

    /// RFC 9111 §4.4: a non-error response to an unsafe request invalidates the target URI and the URIs in
    /// `Location` and `Content-Location` when they are on the same site.
    fn invalidate(&self, parts: &Parts, site: &Site, response: &HeaderMap) {
        let mut targets = vec![CacheKey::new(
            &site.name,
            parts.uri.path(),
            parts.uri.query(),
        )];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = response
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_site = match uri.host() {
                None => true,
                Some(host) => self
                    .hosts
                    .get(&host.to_ascii_lowercase())
                    .is_some_and(|&i| self.sites[i].name == site.name),
            };
            if same_site && uri.path().starts_with('/') {
                targets.push(CacheKey::new(&site.name, uri.path(), uri.query()));
            }
        }
        for key in targets {
            // A ban covers every variant of the URL; removing the primary record frees it at once.
            self.storage.remove(&key);
            self.forget_pass_mark(&key);
            if let Err(e) = self.record_ban(BanKind::Url, key.as_str().to_string(), false) {
                tracing::warn!(key = %key, error = %e, "could not save the invalidation");
            }
            self.metrics.invalidations.inc();
        }
    }

    /// A purge from the admin API: `target` is a URL (`url`, `prefix`) on one of this edge's sites, or a tag.
    pub fn purge(&self, kind: BanKind, target: &str, soft: bool) -> Result<Ban, PurgeError> {
        let invalid = |reason: String| PurgeError::Invalid(reason);
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
                    .hosts
                    .get(&host.to_ascii_lowercase())
                    .map(|&i| &self.sites[i])
                    .ok_or_else(|| invalid(format!("no site for host `{host}` on this edge")))?;
                let query = if kind == BanKind::Url {
                    uri.query()
                } else {
                    None
                };
                let key = CacheKey::new(&site.name, uri.path(), query);
                if kind == BanKind::Url {
                    self.forget_pass_mark(&key);
                    if !soft {
                        self.storage.remove(&key);
                    }
                }
                let mut pattern = key.as_str().to_string();
                if kind == BanKind::Prefix
                    && let Some(q) = uri.query()
                {
                    pattern.push('?');
                    pattern.push_str(q);
                }
                pattern
            }
        };
        self.record_ban(kind, pattern, soft).map_err(PurgeError::Io)
    }

    /// Records a ban issued now, saved for restarts.
    pub fn record_ban(&self, kind: BanKind, pattern: String, soft: bool) -> io::Result<Ban> {
        let now_ms = unix_millis(SystemTime::now());
        // One millisecond ahead: a version stored in the same millisecond, before the ban, is covered too.
        let ban = Ban {
            kind,
            pattern,
            at_ms: now_ms + 1,
            soft,
        };
        self.bans
            .add(ban.clone(), now_ms.saturating_sub(self.retention_ms))?;
        Ok(ban)
    }

    /// A CORS preflight for a configured site.
    fn preflight(&self, parts: &Parts) -> Answer {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.cors_headers(parts, headers);
        put(
            headers,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            ALLOWED_METHODS,
        );
        put(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Range, If-None-Match, If-Modified-Since, If-Range",
        );
        put(headers, header::ACCESS_CONTROL_MAX_AGE, "86400");
        put(headers, header::ALLOW, ALLOWED_METHODS);
        Answer {
            response,
            cache_status: CacheStatus::Local,
            error: None,
            upstream_ms: None,
        }
    }

    fn cors_headers(&self, parts: &Parts, headers: &mut HeaderMap) {
        let allowed = if self.cors.any {
            Some("*")
        } else {
            parts
                .headers
                .get(header::ORIGIN)
                .and_then(|v| v.to_str().ok())
                .filter(|origin| self.cors.origins.iter().any(|o| o == origin))
        };
        if let Some(origin) = allowed {
            put(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            put(
                headers,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                "Content-Length, Content-Range, ETag, Age, Cache-Status",
            );
            if !self.cors.any {
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }

    /// A request refused before the pipeline (a body too large, unreadable).
    pub fn refuse_request(&self, parts: &Parts, refusal: Refusal) -> Answer {
        self.refuse(parts, refusal, CacheStatus::Local)
    }

    fn refuse(&self, parts: &Parts, refusal: Refusal, cache_status: CacheStatus) -> Answer {
        let mut response = Response::new(full(&format!("{}\n", refusal.reason)));
        *response.status_mut() = refusal.status;
        let headers = response.headers_mut();
        put(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
        put(headers, header::CACHE_CONTROL, "no-store");
        if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
            put(headers, header::ALLOW, ALLOWED_METHODS);
        }
        put(
            headers,
            HeaderName::from_static("cache-status"),
            &cache_status.header_value(&self.name),
        );
        self.cors_headers(parts, headers);
        Answer {
            response,
            cache_status,
            error: Some(refusal.reason),
            upstream_ms: None,
        }
    }
}

/// How this pass through the pipeline came about.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    /// Another pass is allowed if the cached version turns out to have changed upstream.
    refetch: bool,
    /// How a response from the cache is labelled.
    served: Served,
}

/// What a response from the cache is.
#[derive(Debug, Clone, Copy)]
enum Served {
    Fresh,
    /// Revalidated just now with a 304 (it was stale, or the request asked for it).
    Revalidated(Fwd),
    /// Stale, served as RFC 5861 allows.
    Stale(StaleReason),
}

/// What revalidating a stale object found.
enum Revalidation {
    /// 304: the refreshed metadata; the slices stay.
    NotModified(Arc<ObjectMeta>),
    /// The object changed (or can no longer be validated): the stored version was dropped.
    Changed,
    Failed(FillError),
}

/// What a lookup found.
struct Found {
    /// The URL's primary key, or the key of the variant the request selects.
    key: CacheKey,
    meta: Option<Arc<ObjectMeta>>,
    /// Why a miss is one: nothing for the URL, or not this variant.
    miss_fwd: Fwd,
    /// The variant's normalised `Vary` values, when the URL is known to vary.
    variant: Option<Vec<(String, String)>>,
}

/// What a fill fetches.
enum FillTarget {
    /// A slice of a stored version.
    Known(Arc<ObjectMeta>),
    /// A new object (or variant), requested with these fields besides `Range`.
    New(Vec<(HeaderName, HeaderValue)>),
}

/// The fill a missing request started or joined for its first slice.
struct Joined {
    status: CacheStatus,
    index: u64,
    subscriber: Subscriber,
}

/// Where a slice's bytes come from.
enum SliceSource {
    Cached(Bytes),
    Filling(Subscriber),
}

/// The body of a cached object's response: the needed part of each slice in turn, cached slices as `Bytes`
/// views, filling slices chunk by chunk as they arrive. A failed fill ends the stream with an error, which
/// aborts the response (never a short body passed off as complete).
struct SliceStream {
    edge: Arc<Edge>,
    site: Site,
    key: CacheKey,
    meta: Arc<ObjectMeta>,
    slicing: Slicing,
    range: ByteRange,
    next: u64,
    last: u64,
    current: Option<(u64, SliceSource)>,
    /// Bytes of the current filling slice seen so far.
    offset: usize,
}

impl SliceStream {
    fn new(
        edge: Arc<Edge>,
        site: &Site,
        key: CacheKey,
        meta: Arc<ObjectMeta>,
        range: ByteRange,
        first: Option<(u64, SliceSource)>,
    ) -> Self {
        let slicing = meta.slicing();
        let touched = slicing.touched(range);
        let next = if first.is_some() {
            touched.start() + 1
        } else {
            *touched.start()
        };
        let site = site.clone();
        SliceStream {
            edge,
            site,
            key,
            meta,
            slicing,
            range,
            next,
            last: *touched.end(),
            current: first,
            offset: 0,
        }
    }

    fn into_body(self) -> Body {
        let stream = futures::stream::unfold(self, |mut s| async move {
            let item = s.next_bytes().await?;
            Some((item.map(Frame::data), s))
        });
        StreamBody::new(stream.boxed()).boxed_unsync()
    }

    async fn next_bytes(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.current.is_none() {
                if self.next > self.last {
                    return None;
                }
                let index = self.next;
                self.next += 1;
                match self
                    .edge
                    .slice_source(&self.site, &self.key, &self.meta, index)
                    .await
                {
                    Ok((source, _)) => self.current = Some((index, source)),
                    Err(e) => return Some(Err(io::Error::other(e))),
                }
                self.offset = 0;
            }
            let (index, source) = self.current.as_mut().expect("set above");
            let index = *index;
            let cut = self.slicing.cut(index, self.range);
            match source {
                SliceSource::Cached(bytes) => {
                    let bytes = bytes.clone();
                    self.current = None;
                    if bytes.len() < cut.end {
                        return Some(Err(io::Error::other(format!(
                            "cached slice {index} is short"
                        ))));
                    }
                    return Some(Ok(bytes.slice(cut)));
                }
                SliceSource::Filling(subscriber) => {
                    if self.offset == 0 && index < self.last {
                        self.edge
                            .prefetch(&self.site, &self.key, &self.meta, index + 1);
                    }
                    match subscriber.next_chunk().await {
                        None => {
                            self.current = None;
                            if self.offset < cut.end {
                                return Some(Err(io::Error::other(format!(
                                    "slice {index} ended early"
                                ))));
                            }
                        }
                        Some(Err(e)) => return Some(Err(io::Error::other(e))),
                        Some(Ok(chunk)) => {
                            let (chunk_start, chunk_end) = (self.offset, self.offset + chunk.len());
                            self.offset = chunk_end;
                            if chunk_end >= cut.end {
                                self.current = None;
                            }
                            let (from, to) = (chunk_start.max(cut.start), chunk_end.min(cut.end));
                            if from < to {
                                return Some(Ok(chunk.slice(from - chunk_start..to - chunk_start)));
                            }
                        }
                    }
                }
            }
        }
    }
}

fn host_without_port(authority: &str) -> &str {
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

/// A stored version's head as the upstream sent it (the fields a 304 may update, RFC 9111 §3.2).
fn stored_head(meta: &ObjectMeta) -> HeaderMap {
    let mut head = HeaderMap::new();
    for (name, value) in &meta.prepared().fields {
        head.append(name.clone(), value.clone());
    }
    head
}

/// The fields of a response head kept with the stored version, without those `no-cache="…"` names.
fn stored_fields(head: &HeaderMap, strip: &[String]) -> Vec<(String, String)> {
    STORED_FIELDS
        .iter()
        .filter(|name| !strip.iter().any(|s| s == name.as_str()))
        .flat_map(|name| {
            head.get_all(name)
                .iter()
                .filter_map(|v| Some((name.as_str().to_string(), v.to_str().ok()?.to_string())))
        })
        .collect()
}

/// The purge tags of a response (`Surrogate-Key` space-separated, `Cache-Tag` comma-separated).
fn tags(head: &HeaderMap) -> Vec<String> {
    let mut tags = Vec::new();
    for field in TAG_FIELDS {
        for value in head.get_all(field).iter().filter_map(|v| v.to_str().ok()) {
            for tag in value
                .split([' ', ','])
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_string());
                }
            }
        }
    }
    tags
}

fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

fn full(text: &str) -> Body {
    Full::new(Bytes::copy_from_slice(text.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::host_without_port;

    #[test]
    fn hosts_without_ports() {
        assert_eq!(host_without_port("localhost:8443"), "localhost");
        assert_eq!(host_without_port("localhost"), "localhost");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("127.0.0.1:1"), "127.0.0.1");
    }
}
