//! The request pipeline, read top to bottom in [`Edge::handle`]: **admit** (the canonical request: method,
//! host → site, normalised path, token checked and taken off; `admit.rs`) → **key** → **lookup** and **plan**
//! (the cache engine finds the stored version; the pure `cache::plan` decides) → **fill, revalidate or pass**
//! (`fetch.rs`, `pass.rs`) → **respond** (conditional requests, ranges, headers, `Cache-Status`, the slice
//! stream; `respond.rs`) → **log** (the listener wraps the body so the access log and metrics see its end).
//! Every protocol's listener calls [`Edge::handle`] with the request head.

mod admit;
mod cmsd;
mod fetch;
mod fill;
mod live;
mod pass;
mod prefetch;
mod purge;
mod respond;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::HeaderValue;
use http::request::Parts;
use http::{Method, Response, StatusCode};
use shared::token::SigningKey;

use crate::cache::engine::Engine;
use crate::cache::freshness::request_directives;
use crate::cache::plan::{Plan, PlanPolicy, plan};
use crate::cache::storage::CacheStorage;
use crate::config::ClientDirectives;
use crate::error::EdgeError;
use crate::metrics::EdgeMetrics;
use crate::status::{CacheStatus, Fwd, StaleReason};

pub use crate::fields::Forwarding;
use crate::fields::put;
pub use admit::{Canonical, ClientAddr, EarlyData, QueryPolicy, Site, SiteRoute};
pub use fill::{FillRefusal, FillSettings};
pub use prefetch::{Prefetch, PrefetchSettings};
pub use purge::PurgeError;

/// Response bodies: cached slices and fill chunks as `Bytes`, never copied.
pub type Body = shared::body::BoxBody;

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
    engine: Arc<Engine>,
    cors: Cors,
    pub metrics: Arc<EdgeMetrics>,
    /// `Alt-Svc` for TCP responses (HTTP/3 discovery).
    pub alt_svc: Option<HeaderValue>,
    plan_policy: PlanPolicy,
    /// Request bodies: their size, the memory they may hold at once, their deadline.
    pub bodies: BodyLimits,
    /// Keys that verify signed URLs.
    signing_keys: Vec<SigningKey>,
    loops: LoopGuard,
    /// The per-title counts of the interval being summarised (counting nothing until the poster starts it).
    pub title_stats: Arc<crate::stats::TitleStats>,
    /// Warming the segments players will ask for next.
    prefetch: Prefetch,
    /// Live playlists that blocking (LL-HLS) requests wait on, each with its one upstream poll.
    live: live::LiveWatchers,
    /// The proactive fill's state, for the admin API.
    fill: fill::FillControl,
    /// Which CMSD headers answers carry.
    cmsd: crate::config::CmsdConfig,
    /// The edge's name as `CMSD-Dynamic` quotes it.
    cmsd_name: String,
}

/// Loop prevention (RFC 8586): this CDN's `CDN-Loop` member, and how many times a request may already carry it.
#[derive(Debug, Clone)]
pub struct LoopGuard {
    pub cdn_id: String,
    pub max_hops: usize,
}

/// What request bodies (of unsafe methods, forwarded upstream) may cost: each at most `max_bytes`, read within
/// `timeout`, and all of them together at most a budget of bytes.
pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: std::time::Duration,
    /// Bytes not yet reserved, in KiB permits.
    budget: Arc<tokio::sync::Semaphore>,
}

/// A body's share of the budget, returned when dropped.
pub type BodyPermit = tokio::sync::OwnedSemaphorePermit;

impl BodyLimits {
    pub fn new(max_bytes: usize, budget_bytes: usize, timeout: std::time::Duration) -> Self {
        BodyLimits {
            max_bytes,
            timeout,
            budget: Arc::new(tokio::sync::Semaphore::new(budget_bytes.div_ceil(1024))),
        }
    }

    /// Reserves room for one body, or `None` when the budget is spent.
    fn reserve(&self) -> Option<BodyPermit> {
        let kib = u32::try_from(self.max_bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        Arc::clone(&self.budget).try_acquire_many_owned(kib).ok()
    }
}

/// What an [`Edge`] is built from.
pub struct EdgeSetup {
    pub name: String,
    /// Each site with the hosts it answers for.
    pub sites: Vec<(Site, Vec<String>)>,
    pub engine: Arc<Engine>,
    pub cors: Cors,
    pub metrics: Arc<EdgeMetrics>,
    /// `Alt-Svc` value advertising HTTP/3 on TCP responses, when it is served.
    pub alt_svc: Option<HeaderValue>,
    pub client_directives: ClientDirectives,
    pub bodies: BodyLimits,
    pub signing_keys: Vec<SigningKey>,
    pub loops: LoopGuard,
    pub prefetch: PrefetchSettings,
    pub cmsd: crate::config::CmsdConfig,
}

/// The outcome of one request, for the response and the access log.
pub struct Answer {
    pub response: Response<Body>,
    pub cache_status: CacheStatus,
    pub error: Option<String>,
    /// Time spent waiting for the upstream's response head, when this request waited for one.
    pub upstream_ms: Option<f64>,
    /// The site's path route that took the request (`site/route`), if one did.
    pub route: Option<Arc<str>>,
}

/// One pass through the cached path: an answer, or "run again" — and why — when what the lookup found turned
/// out not to be this request's before anything was sent.
// Returned once per pass and never stored: boxing the answer would cost an allocation per request instead.
#[allow(clippy::large_enum_variant)]
enum Outcome {
    Answer(Answer),
    RunAgain(Again),
}

/// Why a pass through the cached path is run again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Again {
    /// The stored version changed upstream (its validator moved between slices) and was dropped.
    VersionChanged,
    /// A coalesced fill brought another variant than this request selects.
    VariantChanged,
}

/// What a response from the cache is.
#[derive(Debug, Clone, Copy)]
enum Served {
    Fresh,
    /// Revalidated just now with a 304 (it was stale, or the request asked for it).
    Revalidated(Fwd),
    /// Stale, served as RFC 5861 or the client's `max-stale` allows.
    Stale(StaleReason),
}

/// Methods the edge forwards (never from cache) and that invalidate what it stored for the URL (§4.4).
pub fn is_unsafe(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl Edge {
    pub fn new(setup: EdgeSetup) -> Self {
        let mut hosts = HashMap::new();
        let mut sites = Vec::new();
        for (i, (site, site_hosts)) in setup.sites.into_iter().enumerate() {
            for host in site_hosts {
                hosts.insert(host.to_ascii_lowercase(), i);
            }
            sites.push(site);
        }
        Edge {
            cmsd_name: crate::cmsd::quoted_name(&setup.name),
            name: setup.name,
            sites,
            hosts,
            engine: setup.engine,
            cors: setup.cors,
            metrics: setup.metrics,
            alt_svc: setup.alt_svc,
            plan_policy: PlanPolicy {
                honor_client: setup.client_directives == ClientDirectives::Honor,
            },
            bodies: setup.bodies,
            signing_keys: setup.signing_keys,
            loops: setup.loops,
            title_stats: Arc::default(),
            prefetch: Prefetch::new(setup.prefetch),
            live: live::LiveWatchers::default(),
            fill: fill::FillControl::default(),
            cmsd: setup.cmsd,
        }
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn storage(&self) -> &Arc<dyn CacheStorage> {
        self.engine.storage()
    }

    /// Answers one request; `body` is the request body of an unsafe method (empty otherwise).
    pub async fn handle(self: &Arc<Self>, parts: &Parts, body: Bytes) -> Answer {
        // Admit: one canonical request that every later step uses, or a refusal.
        let request = match self.admit(parts) {
            Ok(request) => request,
            Err(e) => return self.error_answer(parts, e, CacheStatus::Local),
        };
        let route = request.site.route.clone();
        let mut answer = self.handle_admitted(parts, &request, body).await;
        let prefetched =
            parts.method == Method::GET && self.after_serving(parts, &request, &answer);
        if parts.method == Method::GET || parts.method == Method::HEAD {
            self.cmsd_headers(parts, &request, &mut answer, prefetched);
        }
        answer.route = route;
        answer
    }

    async fn handle_admitted(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        body: Bytes,
    ) -> Answer {
        if parts.method == Method::OPTIONS {
            return self.preflight(parts);
        }
        if is_unsafe(&parts.method) {
            return self.forward_unsafe(parts, request, body).await;
        }
        if let Some(status) = self.pass_before_lookup(parts, request) {
            return self.pass(parts, request, status).await;
        }
        // LL-HLS: a playlist request with `_HLS_msn` waits until the playlist holds what it asks for.
        if let Some(answer) = self.hold_for_playlist(parts, request).await {
            return answer;
        }
        // LL-HLS: a part a watched playlist hints waits until the playlist lists it.
        self.hold_for_hinted_part(parts, request).await;
        // Key, lookup, plan, and what the plan says; once more if the stored version changed meanwhile.
        let mut again = Again::VersionChanged;
        for _ in 0..2 {
            match self.cached(parts, request).await {
                Outcome::Answer(answer) => return answer,
                Outcome::RunAgain(why) => again = why,
            }
        }
        match again {
            // Other variants keep arriving first: this request is forwarded by itself.
            Again::VariantChanged => {
                let status = CacheStatus::Pass {
                    fwd: Fwd::VaryMiss,
                    detail: Some("variant-changed"),
                };
                self.pass(parts, request, status).await
            }
            Again::VersionChanged => {
                let changing = EdgeError::Upstream {
                    kind: crate::error::UpstreamFault::Changed,
                    reason: "the object keeps changing upstream".into(),
                };
                self.error_answer(parts, changing, CacheStatus::Error)
            }
        }
    }

    /// Before a request body is read: the request must be admitted (host, path, token — a body for nowhere is
    /// never read) and room for the body reserved; the permit is held until the request is answered.
    pub fn admit_body(&self, parts: &Parts) -> Result<BodyPermit, EdgeError> {
        self.admit(parts)?;
        self.bodies.reserve().ok_or_else(|| EdgeError::Overloaded {
            reason: "too many request bodies are being received; try again shortly".into(),
        })
    }

    /// Requests the cache does not handle at all: bypassed paths and requests with credentials.
    fn pass_before_lookup(&self, parts: &Parts, request: &Canonical<'_>) -> Option<CacheStatus> {
        let pass = |fwd, detail| Some(CacheStatus::Pass { fwd, detail });
        if request
            .site
            .bypass_paths
            .iter()
            .any(|p| request.path.starts_with(p.as_str()))
        {
            return pass(Fwd::Bypass, None);
        }
        if parts.headers.contains_key(http::header::AUTHORIZATION) {
            // RFC 9111 §3.5 allows sharing some of these; the edge never does (its fills are shared by every
            // waiter, and it cannot tell what the credentials select).
            return pass(Fwd::Request, Some("authorization"));
        }
        None
    }

    /// The cached path: look the request up, plan, and carry out the plan.
    async fn cached(self: &Arc<Self>, parts: &Parts, request: &Canonical<'_>) -> Outcome {
        let now = self.engine.clock().now();
        let directives = request_directives(&parts.headers);
        let found = self.engine.lookup(&request.key, &parts.headers, now).await;
        let stored = found.meta.as_ref().map(|meta| meta.state(now));
        let pass_mark = match &found.meta {
            None => self.engine.pass_mark(&found.key, now),
            Some(_) => None,
        };
        let decided = plan(
            stored.as_ref(),
            found.miss_fwd,
            &directives,
            self.plan_policy,
            pass_mark,
        );
        match decided {
            Plan::ServeFresh => {
                let meta = found.meta.expect("planned from a stored version");
                self.respond(parts, request, found.key, meta, None, Served::Fresh)
                    .await
            }
            Plan::ServeStale(reason) => {
                let meta = found.meta.expect("planned from a stored version");
                if reason == StaleReason::WhileRevalidate {
                    // RFC 5861: answer now from the stale copy; one background request revalidates it.
                    self.engine.revalidate_in_background(
                        &request.site.upstream,
                        &found.key,
                        &meta,
                        self.fill_fields(parts, request, found.variant.as_deref()),
                    );
                }
                self.respond(parts, request, found.key, meta, None, Served::Stale(reason))
                    .await
            }
            Plan::NotCached => Outcome::Answer(self.error_answer(
                parts,
                EdgeError::NotCached,
                CacheStatus::NotCached,
            )),
            Plan::Pass { fwd, detail } => {
                let status = CacheStatus::Pass {
                    fwd,
                    detail: Some(detail),
                };
                Outcome::Answer(self.pass(parts, request, status).await)
            }
            Plan::Revalidate {
                fwd,
                stale_if_error,
            } => {
                self.fetch(parts, request, found, true, fwd, stale_if_error)
                    .await
            }
            Plan::Fill {
                fwd,
                stale_if_error,
            } => {
                self.fetch(parts, request, found, false, fwd, stale_if_error)
                    .await
            }
        }
    }

    /// Answers with an error: the status the error's kind decides, its reason in a short text body.
    pub fn error_answer(
        &self,
        parts: &Parts,
        error: EdgeError,
        cache_status: CacheStatus,
    ) -> Answer {
        let status = error.status();
        let reason = error.reason().to_string();
        let mut response = Response::new(full(&format!("{reason}\n")));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        put(
            headers,
            http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        );
        put(headers, http::header::CACHE_CONTROL, "no-store");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            put(headers, http::header::ALLOW, respond::ALLOWED_METHODS);
        }
        if let EdgeError::Overloaded { .. } = error {
            put(headers, http::header::RETRY_AFTER, "1");
        }
        put(
            headers,
            http::header::HeaderName::from_static("cache-status"),
            &cache_status.header_value(&self.name),
        );
        self.cors_headers(parts, headers);
        Answer {
            response,
            cache_status,
            error: Some(reason),
            upstream_ms: None,
            route: None,
        }
    }
}

/// Adds this edge's `Cache-Status` entry after those the response already carries, as one list: RFC 9211
/// orders it from the cache nearest the origin (a parent edge's entry, kept with the stored response) to the
/// one nearest the client.
fn add_cache_status(headers: &mut http::HeaderMap, ours: String) {
    let name = http::header::HeaderName::from_static("cache-status");
    if !headers.contains_key(&name) {
        // The usual case: the value as made, no copy.
        if let Ok(value) = HeaderValue::try_from(ours) {
            headers.insert(name, value);
        }
        return;
    }
    let mut list: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    list.push(&ours);
    let value = list.join(", ");
    put(headers, name, &value);
}

fn empty() -> Body {
    shared::body::empty()
}

fn full(text: &str) -> Body {
    shared::body::text(text)
}
