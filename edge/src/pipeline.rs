//! The request pipeline, in one place and in order: **admit** (method, host → site, safe path) → **key** →
//! **lookup** (metadata, then the slices the response needs) → **fill** (one coalesced upstream fill per missing
//! slice, streamed to every waiter) → **respond** (conditional requests, ranges, headers, `Cache-Status`) →
//! **log** (the listener wraps the body so the access log and metrics see its end). Every protocol's listener
//! calls [`Edge::handle`] with the request head; HTTP/3 plugs in the same way.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

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

use crate::cache::fill::{Fill, FillError, FillHead, Fills, Subscriber, concat};
use crate::cache::freshness::{initial_age, storable_ttl, targeted_ttl};
use crate::cache::key::CacheKey;
use crate::cache::meta::{Freshness, ObjectMeta, new_generation, unix_secs};
use crate::cache::slices::{Slicing, first_slice_hint};
use crate::cache::storage::CacheStorage;
use crate::metrics::EdgeMetrics;
use crate::status::{CacheStatus, Fwd, StaleReason};
use crate::upstream::{Upstream, parse_content_range};

/// Response bodies: cached slices and fill chunks as `Bytes`, never copied.
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// One configured site.
#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    /// `host:port` of the upstream.
    pub upstream: String,
}

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
    /// Targeted cache-control fields (RFC 9213), in priority order.
    targeted_fields: Vec<HeaderName>,
    /// RFC 5861 windows when the upstream gives none.
    stale_defaults: (u64, u64),
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
    /// Targeted cache-control fields (RFC 9213) that override `Cache-Control` for this edge.
    pub targeted_fields: Vec<HeaderName>,
    /// RFC 5861 windows, in seconds, when the upstream gives none: (stale-while-revalidate, stale-if-error).
    pub stale_defaults: (u64, u64),
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
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
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

/// Request headers forwarded on a pass-through (uncacheable) request.
const PASS_HEADERS: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// Upstream response headers passed to the client on a pass-through.
const PASS_RESPONSE_HEADERS: [HeaderName; 8] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::ACCEPT_RANGES,
    header::EXPIRES,
];

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
            targeted_fields,
            stale_defaults,
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
            targeted_fields,
            stale_defaults,
        }
    }

    pub fn storage(&self) -> &Arc<dyn CacheStorage> {
        &self.storage
    }

    /// Answers one request.
    pub async fn handle(self: &Arc<Self>, parts: &Parts) -> Answer {
        if let Some(answer) = self.handle_attempt(parts, true).await {
            return answer;
        }
        // The object changed upstream since it was cached and that version was dropped: fetch it anew, once.
        match self.handle_attempt(parts, false).await {
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
    async fn handle_attempt(self: &Arc<Self>, parts: &Parts, refetch: bool) -> Option<Answer> {
        // Admit.
        let site = match self.admit(parts) {
            Ok(site) => site,
            Err(refusal) => return Some(self.refuse(parts, refusal, CacheStatus::Error)),
        };
        if parts.method == Method::OPTIONS {
            return Some(self.preflight(parts));
        }
        // Key.
        let key = CacheKey::new(&site.name, parts.uri.path(), parts.uri.query());
        // Look up.
        let now = SystemTime::now();
        let cached = self.storage.lookup_meta(&key).await;
        let lookup_result = cached.as_ref().map_or("miss", |(_, tier)| tier.label());
        self.metrics
            .lookups
            .with_label_values(&["meta", lookup_result])
            .inc();
        let attempt = |served| Attempt { refetch, served };
        let mut stale_fallback = None;
        let fwd = match cached {
            Some((meta, _)) if meta.is_fresh(now) => {
                let served = attempt(Served::Fresh);
                return self
                    .respond(parts, site, key, Arc::new(meta), None, served)
                    .await;
            }
            Some((meta, _)) => {
                let meta = Arc::new(meta);
                let staleness = meta.staleness(now);
                let validator = meta.etag.is_some() || meta.last_modified.is_some();
                let if_error = staleness <= meta.stale_if_error_secs;
                if validator && staleness <= meta.stale_while_revalidate_secs {
                    // RFC 5861: answer now from the stale copy; one background request revalidates it.
                    let (edge, site_bg, key_bg, meta_bg) = (
                        Arc::clone(self),
                        site.clone(),
                        key.clone(),
                        Arc::clone(&meta),
                    );
                    tokio::spawn(async move { edge.revalidate(&site_bg, &key_bg, meta_bg).await });
                    let served = attempt(Served::Stale(StaleReason::WhileRevalidate));
                    return self.respond(parts, site, key, meta, None, served).await;
                }
                if validator {
                    // One conditional request for the object, shared by every waiter.
                    match self.revalidate(site, &key, Arc::clone(&meta)).await {
                        Revalidation::NotModified(meta) => {
                            let served = attempt(Served::Revalidated);
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
                Fwd::Stale
            }
            None => Fwd::UriMiss,
        };
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
        let waited = Instant::now();
        let (fill, started) =
            self.join_fill(&format!("{key}|new|{index}"), site, &key, index, None);
        let mut subscriber = fill.subscribe();
        let head = subscriber.head().await;
        let upstream_ms = Some(waited.elapsed().as_secs_f64() * 1000.0);
        match head {
            Err(_) if stale_fallback.is_some() => {
                let meta = stale_fallback.expect("checked above");
                let served = attempt(Served::Stale(StaleReason::IfError));
                self.respond(parts, site, key, meta, None, served).await
            }
            Err(e) => {
                let mut answer = self.refuse(parts, Refusal::from_fill(&e), CacheStatus::Error);
                answer.upstream_ms = upstream_ms;
                Some(answer)
            }
            Ok(FillHead::NotStorable { .. }) => Some(self.pass(parts, site).await),
            Ok(FillHead::Slice(meta)) => {
                let status = if started {
                    CacheStatus::Miss { fwd }
                } else {
                    CacheStatus::Coalesced { fwd }
                };
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

    /// Method, host and path checks: the edge serves only its configured sites (never an open proxy) and only
    /// paths that are safe object keys.
    fn admit(&self, parts: &Parts) -> Result<&Site, Refusal> {
        if !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Err(Refusal::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "only GET, HEAD and OPTIONS are served",
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
        let from_cache = |ttl| match attempt.served {
            Served::Fresh => CacheStatus::Hit { ttl },
            Served::Revalidated => CacheStatus::Revalidated { ttl },
            Served::Stale(reason) => CacheStatus::Stale {
                past: meta.staleness(now),
                reason,
            },
        };
        let validators = Validators {
            etag: meta.etag.as_deref(),
            last_modified: meta
                .last_modified
                .as_deref()
                .and_then(conditional::parse_http_date),
        };
        let text = |name: HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let preconditions = Preconditions::from_headers(&parts.headers);
        let range_header = text(header::RANGE);
        let get_or_head = true;
        let outcome = conditional::evaluate(
            &preconditions,
            &validators,
            get_or_head,
            range_header.is_some(),
        );
        let slicing = Slicing {
            slice_bytes: meta.slice_bytes,
            total_len: meta.total_len,
        };
        let (http_status, part) = match outcome {
            conditional::Outcome::NotModified => (StatusCode::NOT_MODIFIED, None),
            conditional::Outcome::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, None),
            conditional::Outcome::Proceed { apply_range } => {
                match range::evaluate(range_header.filter(|_| apply_range), meta.total_len) {
                    RangeOutcome::Full => (
                        StatusCode::OK,
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
                            joined
                                .as_ref()
                                .map_or(from_cache(meta.ttl_left(now)), |j| j.status),
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
            && matches!(http_status, StatusCode::OK | StatusCode::PARTIAL_CONTENT);

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
                        status.unwrap_or(from_cache(meta.ttl_left(now)))
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
            (None, _) => from_cache(meta.ttl_left(now)),
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
        let content_type = meta
            .content_type
            .as_deref()
            .unwrap_or(shared::media::DEFAULT_CONTENT_TYPE);
        put(headers, header::CONTENT_TYPE, content_type);
        put(headers, header::ACCEPT_RANGES, "bytes");
        put(headers, header::AGE, &meta.age(now).to_string());
        put(
            headers,
            HeaderName::from_static("cache-status"),
            &cache_status.header_value(&self.name),
        );
        for (name, value) in [
            (header::ETAG, &meta.etag),
            (header::LAST_MODIFIED, &meta.last_modified),
            (header::CACHE_CONTROL, &meta.cache_control),
        ] {
            if let Some(value) = value {
                put(headers, name, value);
            }
        }
        self.cors_headers(parts, headers);
        let body = match (http_status, part) {
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
                    SliceStream::new(Arc::clone(self), site, key, meta, range, first).into_body()
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
        let (fill, started) = self.join_fill(&fill_key, site, key, index, Some(Arc::clone(meta)));
        let mut subscriber = fill.subscribe();
        match subscriber.head().await? {
            FillHead::Slice(_) => {
                let status = if started {
                    CacheStatus::Miss { fwd: Fwd::UriMiss }
                } else {
                    CacheStatus::Coalesced { fwd: Fwd::UriMiss }
                };
                Ok((SliceSource::Filling(subscriber), Some(status)))
            }
            FillHead::NotStorable { status } => Err(FillError::Upstream {
                timeout: false,
                message: format!("the upstream answered {status} for a slice of a cached object"),
            }),
        }
    }

    /// Revalidates a stale object with one conditional request (`If-None-Match`, else `If-Modified-Since`, for
    /// its first byte), shared by every request that finds it stale meanwhile. A 304 refreshes the stored
    /// metadata (freshness, age, Cache-Control, RFC 9111 §4.3.4) and keeps the slices; anything else drops the
    /// stored version.
    async fn revalidate(
        self: &Arc<Self>,
        site: &Site,
        key: &CacheKey,
        stale: Arc<ObjectMeta>,
    ) -> Revalidation {
        let fill_key = format!("{key}|reval|{:x}", stale.generation);
        let (fill, started) = self.fills.join_or_start(&fill_key);
        let mut subscriber = fill.subscribe();
        if started {
            let (edge, upstream, key) = (Arc::clone(self), site.upstream.clone(), key.clone());
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
        let mut headers = HeaderMap::new();
        put(&mut headers, header::RANGE, "bytes=0-0");
        match (&stale.etag, &stale.last_modified) {
            (Some(etag), _) => put(&mut headers, header::IF_NONE_MATCH, etag),
            (None, Some(date)) => put(&mut headers, header::IF_MODIFIED_SINCE, date),
            (None, None) => return Ok(FillHead::NotStorable { status: 0 }),
        }
        let request_time = SystemTime::now();
        let response = self.upstream_get(upstream, key, headers).await?;
        let status = response.status().as_u16();
        if status != 304 {
            self.storage.remove(key);
            return Ok(FillHead::NotStorable { status });
        }
        let now = SystemTime::now();
        let h = response.headers();
        let text = |name: HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let cache_control = text(header::CACHE_CONTROL).or_else(|| stale.cache_control.clone());
        let Some(freshness) = self.freshness(h, cache_control.as_deref(), request_time, now) else {
            // The 304 says the response may no longer be stored.
            self.storage.remove(key);
            return Ok(FillHead::NotStorable { status });
        };
        let mut refreshed = ObjectMeta {
            cache_control,
            last_modified: text(header::LAST_MODIFIED).or_else(|| stale.last_modified.clone()),
            ..stale.clone()
        };
        refreshed.refresh(freshness);
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
        let path = key.as_str().split_once('|').map_or("/", |(_, path)| path);
        let (response, took) = self
            .upstream
            .request(&Method::GET, upstream, path, headers)
            .await?;
        let class = shared::metrics::status_class(response.status().as_u16());
        self.metrics
            .upstream_requests
            .with_label_values(&[class])
            .inc();
        self.metrics.upstream_latency.observe(took.as_secs_f64());
        Ok(response)
    }

    /// The freshness of an upstream response: its lifetime from the first targeted field present (RFC 9213),
    /// else `cache_control` and `Expires`; its age when received (RFC 9111 §4.2.3); its RFC 5861 windows from
    /// the same field, else the configured defaults. `None` when it must not be stored.
    fn freshness(
        &self,
        headers: &HeaderMap,
        cache_control: Option<&str>,
        request_time: SystemTime,
        now: SystemTime,
    ) -> Option<Freshness> {
        let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let targeted: Vec<Option<&str>> = self.targeted_fields.iter().map(text).collect();
        let ttl = targeted_ttl(200, &targeted).unwrap_or_else(|| {
            storable_ttl(
                200,
                cache_control,
                text(&header::EXPIRES),
                text(&header::DATE),
                now,
            )
        })?;
        let governing = targeted.iter().flatten().next().copied().or(cache_control);
        let cc = crate::cache::freshness::CacheControl::parse(governing.unwrap_or(""));
        Some(Freshness {
            stored_at: unix_secs(now),
            initial_age: initial_age(text(&header::AGE), text(&header::DATE), request_time, now),
            ttl_secs: ttl.as_secs(),
            stale_while_revalidate_secs: cc.stale_while_revalidate.unwrap_or(self.stale_defaults.0),
            stale_if_error_secs: cc.stale_if_error.unwrap_or(self.stale_defaults.1),
        })
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
                let site = Site {
                    name: String::new(),
                    upstream,
                };
                let _ = edge.join_fill(&fill_key, &site, &key, index, Some(meta));
            }
        });
    }

    /// Joins the fill under `fill_key` or starts it; `true` when this call started it.
    fn join_fill(
        self: &Arc<Self>,
        fill_key: &str,
        site: &Site,
        key: &CacheKey,
        index: u64,
        known: Option<Arc<ObjectMeta>>,
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
            site.upstream.clone(),
            key.clone(),
        );
        tokio::spawn(async move {
            let _permit = edge.fill_permits.acquire().await;
            edge.metrics.fills_in_flight.inc();
            let result = edge
                .fill_slice(&fill_for_task, &upstream, &key, index, known)
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
    /// subscribers, and inserts the slice (and, for a new object, its metadata) when it is complete.
    async fn fill_slice(
        &self,
        fill: &Arc<Fill>,
        upstream: &str,
        key: &CacheKey,
        index: u64,
        known: Option<Arc<ObjectMeta>>,
    ) -> Result<(), FillError> {
        if let Some(meta) = &known
            && let Some((bytes, _)) = self.storage.read_slice(key, meta.generation, index).await
        {
            // Filled by a fill that ended between this request's lookup and its registration.
            fill.publish_head(Ok(FillHead::Slice(Arc::clone(meta))));
            fill.push(bytes);
            return Ok(());
        }
        let slice_bytes = known.as_ref().map_or(self.slice_bytes, |m| m.slice_bytes);
        let start = index * slice_bytes;
        let end = match &known {
            Some(meta) => (start + slice_bytes).min(meta.total_len) - 1,
            None => start + slice_bytes - 1,
        };
        let mut headers = HeaderMap::new();
        put(&mut headers, header::RANGE, &format!("bytes={start}-{end}"));
        let request_time = SystemTime::now();
        let response = self.upstream_get(upstream, key, headers).await?;
        let status = response.status().as_u16();
        let h = response.headers();
        let text = |name: HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
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
                fill.publish_head(Ok(FillHead::NotStorable { status }));
                return Ok(());
            }
        };
        let now = SystemTime::now();
        let freshness =
            self.freshness(h, text(header::CACHE_CONTROL).as_deref(), request_time, now);
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
                let Some(freshness) = freshness.filter(|_| total > 0) else {
                    fill.publish_head(Ok(FillHead::NotStorable { status }));
                    return Ok(());
                };
                let generation = new_generation(now);
                // Requests that find the new metadata before this slice is stored must join this fill, not
                // start a second one: register it under the version's fill key first.
                let alias = format!("{key}|{generation:x}|{index}");
                self.fills.alias(&alias, fill);
                alias_guard = Some(on_drop(move || self.fills.remove(&alias)));
                let mut meta = ObjectMeta {
                    generation,
                    total_len: total,
                    slice_bytes,
                    content_type: text(header::CONTENT_TYPE),
                    etag,
                    last_modified: text(header::LAST_MODIFIED),
                    cache_control: text(header::CACHE_CONTROL),
                    stored_at: 0,
                    initial_age: 0,
                    ttl_secs: 0,
                    stale_while_revalidate_secs: 0,
                    stale_if_error_secs: 0,
                };
                meta.refresh(freshness);
                let meta = Arc::new(meta);
                self.storage.insert_meta(key, &meta);
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

    /// Forwards a request whose response is not storable and streams the answer back as it is.
    async fn pass(self: &Arc<Self>, parts: &Parts, site: &Site) -> Answer {
        let mut headers = HeaderMap::new();
        for name in PASS_HEADERS {
            if let Some(value) = parts.headers.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let started = Instant::now();
        let result = self
            .upstream
            .request(&parts.method, &site.upstream, path, headers)
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
            if let Some(value) = response.headers().get(&name) {
                headers.insert(name, value.clone());
            }
        }
        put(
            headers,
            HeaderName::from_static("cache-status"),
            &CacheStatus::Pass.header_value(&self.name),
        );
        self.cors_headers(parts, headers);
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
            cache_status: CacheStatus::Pass,
            error: None,
            upstream_ms,
        }
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
            "GET, HEAD, OPTIONS",
        );
        put(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Range, If-None-Match, If-Modified-Since, If-Range",
        );
        put(headers, header::ACCESS_CONTROL_MAX_AGE, "86400");
        put(headers, header::ALLOW, "GET, HEAD, OPTIONS");
        Answer {
            response,
            cache_status: CacheStatus::Pass,
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

    fn refuse(&self, parts: &Parts, refusal: Refusal, cache_status: CacheStatus) -> Answer {
        let mut response = Response::new(full(&format!("{}\n", refusal.reason)));
        *response.status_mut() = refusal.status;
        let headers = response.headers_mut();
        put(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
        put(headers, header::CACHE_CONTROL, "no-store");
        if refusal.status == StatusCode::METHOD_NOT_ALLOWED {
            put(headers, header::ALLOW, "GET, HEAD, OPTIONS");
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
    /// Stale, revalidated just now with a 304.
    Revalidated,
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
        let slicing = Slicing {
            slice_bytes: meta.slice_bytes,
            total_len: meta.total_len,
        };
        let touched = slicing.touched(range);
        let next = if first.is_some() {
            touched.start() + 1
        } else {
            *touched.start()
        };
        let site = Site {
            name: site.name.clone(),
            upstream: site.upstream.clone(),
        };
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
