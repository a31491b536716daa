//! The upstream client: pooled HTTP/1.1 connections to the origin and to parent edges (the shield tier), with a
//! connect timeout, a response-head timeout, and a body idle timeout per chunk. A site with parents is a
//! [`Route`]: its fills go to the parent the cache key ranks first among those not out, then the next, then the
//! origin; a parent that fails is out for a while (`shield.rs` decides, this module does the I/O). A site's path
//! route sends to a [`PoolRoute`]: one of several interchangeable instances (`pool.rs` decides which and judges
//! their health), with bounded retries on another instance and active health probes. Every request carries
//! this CDN's hop in `CDN-Loop` (RFC 8586).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::{IntCounterVec, IntGaugeVec};

use crate::cache::fill::FillError;
use crate::pool::{self, Pool};
use crate::shield::{self, Change, Parents, Verdict};

/// The client shared by every fill and pass-through request.
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    header_timeout: Duration,
    body_idle_timeout: Duration,
    via: HeaderValue,
    /// This CDN's `CDN-Loop` member.
    cdn_id: String,
    /// Sites that fill through parent edges, by the name their `Site::upstream` holds; any other name is an
    /// origin's `host:port`.
    routes: HashMap<String, Route>,
    parent_metrics: Option<ParentMetrics>,
    /// Path routes' pools, by the name their `Site::upstream` holds.
    pools: HashMap<String, Arc<PoolRoute>>,
}

/// A site's path route: a pool of interchangeable instances.
pub struct PoolRoute {
    /// `site/route`: the metric label and what logs name.
    pub label: String,
    pub pool: Pool,
    /// Other instances a failed idempotent request is sent to, at most.
    pub retries: u32,
    /// The active health check, if any.
    pub probe: Option<Probe>,
    pub metrics: PoolMetrics,
}

/// An active health check: `GET path` on each instance every `interval`, answered 2xx within `timeout`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// `edge_pool_requests_total`, `edge_pool_retries_total`, `edge_pool_member_up` and `edge_pool_probes_total`.
#[derive(Clone)]
pub struct PoolMetrics {
    pub requests: IntCounterVec,
    pub retries: IntCounterVec,
    pub up: IntGaugeVec,
    pub probes: IntCounterVec,
}

/// Why one request to one instance failed, and whether it reached it.
struct SendFailure {
    error: FillError,
    /// The connection was refused or never made: the request reached nobody, so sending it elsewhere is safe
    /// whatever its method.
    never_sent: bool,
    /// The request could not even be made (the edge's fault, not the upstream's): nothing to judge or retry.
    unsendable: bool,
}

/// A site that fills from parent edges before its origin.
pub struct Route {
    /// The origin's `host:port`: for passes, and for fills when no parent answers.
    pub origin: String,
    /// `Host` sent to parents: a host the site answers for, so the parent's site (and cache key) is the same.
    pub host: HeaderValue,
    pub parents: Parents,
}

/// `edge_upstream_parent_requests_total` and `edge_parent_up`.
struct ParentMetrics {
    requests: IntCounterVec,
    up: IntGaugeVec,
}

/// Who is asked for a request: the parents first (fills), or the origin alone (passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    ParentsFirst,
    OriginOnly,
}

impl Upstream {
    pub fn new(
        connect_timeout: Duration,
        header_timeout: Duration,
        body_idle_timeout: Duration,
        edge_name: &str,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .build(connector);
        let via = HeaderValue::from_str(&format!("1.1 {edge_name}"))
            .unwrap_or(HeaderValue::from_static("1.1 edge"));
        Upstream {
            client,
            header_timeout,
            body_idle_timeout,
            via,
            cdn_id: crate::config::defaults::CDN_ID.into(),
            routes: HashMap::new(),
            parent_metrics: None,
            pools: HashMap::new(),
        }
    }

    /// Sets this CDN's `CDN-Loop` member. Default: `video-cdn`.
    pub fn with_cdn_id(mut self, cdn_id: &str) -> Self {
        self.cdn_id = cdn_id.to_string();
        self
    }

    /// Adds the route of site number `site` (its index in the config), counted in `requests` and `up`; returns
    /// the name the site's requests give as their upstream.
    pub fn add_route(
        &mut self,
        site: usize,
        route: Route,
        requests: &IntCounterVec,
        up: &IntGaugeVec,
    ) -> String {
        for parent in route.parents.all() {
            up.with_label_values(&[&parent.url]).set(1);
        }
        self.parent_metrics.get_or_insert_with(|| ParentMetrics {
            requests: requests.clone(),
            up: up.clone(),
        });
        // Read in error messages ("… answered 503"): it says which site's tier was asked.
        let name = format!("{} via site[{site}].parents", route.origin);
        self.routes.insert(name.clone(), route);
        name
    }

    /// Adds a path route's pool; returns the name the route's requests give as their upstream.
    pub fn add_pool(&mut self, route: PoolRoute) -> String {
        for member in route.pool.members() {
            route
                .metrics
                .up
                .with_label_values(&[&route.label, &member.url])
                .set(1);
        }
        let name = format!("pool {}", route.label);
        self.pools.insert(name.clone(), Arc::new(route));
        name
    }

    /// The health-keeping task of every pool, for the caller to spawn: probes (when configured) and the
    /// `edge_pool_member_up` gauge.
    pub fn pool_tasks(&self) -> Vec<impl std::future::Future<Output = ()> + Send + 'static> {
        self.pools
            .values()
            .map(|route| keep_pool_health(self.client.clone(), Arc::clone(route)))
            .collect()
    }

    /// Sends `method` for `path_and_query` to `upstream` (a route's name, or an origin's `host:port`) with
    /// `headers` and `body` (empty for GET and HEAD); returns the response head and how long it took. A route's
    /// safe requests try its parents first. Errors are classified for the client: unreachable (502) or timed
    /// out (504).
    pub async fn request(
        &self,
        method: &http::Method,
        upstream: &str,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(Response<Incoming>, Duration), FillError> {
        self.request_via(
            method,
            upstream,
            path_and_query,
            headers,
            body,
            Tier::ParentsFirst,
        )
        .await
    }

    /// As [`Upstream::request`], to a route's origin only: for passes, which no parent could cache.
    pub async fn request_origin(
        &self,
        method: &http::Method,
        upstream: &str,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(Response<Incoming>, Duration), FillError> {
        self.request_via(
            method,
            upstream,
            path_and_query,
            headers,
            body,
            Tier::OriginOnly,
        )
        .await
    }

    async fn request_via(
        &self,
        method: &http::Method,
        upstream: &str,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
        tier: Tier,
    ) -> Result<(Response<Incoming>, Duration), FillError> {
        let started = Instant::now();
        headers.insert(header::VIA, self.via.clone());
        if let Some(hops) = shield::append_hop(&headers, &self.cdn_id) {
            headers.insert(shield::CDN_LOOP, hops);
        }
        if let Some(pool) = self.pools.get(upstream) {
            let response = self
                .send_to_pool(pool, method, path_and_query, &headers, &body)
                .await?;
            return Ok((response, started.elapsed()));
        }
        let Some(route) = self.routes.get(upstream) else {
            let response = self
                .send(method, upstream, None, path_and_query, &headers, &body)
                .await
                .map_err(|f| f.error)?;
            return Ok((response, started.elapsed()));
        };
        // Only safe requests go to parents: an unsafe one is never sent to two places.
        if tier == Tier::ParentsFirst && method.is_safe() {
            for index in route.parents.order(path_and_query, Instant::now()) {
                let parent = route.parents.get(index);
                let result = self
                    .send(
                        method,
                        &parent.authority,
                        Some(&route.host),
                        path_and_query,
                        &headers,
                        &body,
                    )
                    .await;
                let result = result.map_err(|f| f.error);
                let (verdict, label) = match &result {
                    Ok(response) => match shield::verdict(response.status()) {
                        Verdict::Up => (Verdict::Up, "ok"),
                        Verdict::Failed => (Verdict::Failed, "5xx"),
                    },
                    Err(FillError::Upstream { timeout: true, .. }) => (Verdict::Failed, "timeout"),
                    Err(_) => (Verdict::Failed, "connect"),
                };
                self.note_parent(route, index, verdict, label, &result);
                match result {
                    Ok(response) if verdict == Verdict::Up => {
                        return Ok((response, started.elapsed()));
                    }
                    // A failed parent's answer is dropped unread (its connection with it): the next is asked.
                    _ => continue,
                }
            }
        }
        let response = self
            .send(method, &route.origin, None, path_and_query, &headers, &body)
            .await
            .map_err(|f| f.error)?;
        Ok((response, started.elapsed()))
    }

    /// One request to a pool: to the instance [`Pool::choose`] picks, and after a failure to another, as long
    /// as retries are left and the request may be sent again: an idempotent one after no answer or a 502, 503
    /// or 504, any one whose connection was refused. A failed instance's answer is dropped unread.
    async fn send_to_pool(
        &self,
        route: &PoolRoute,
        method: &http::Method,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response<Incoming>, FillError> {
        let idempotent = method.is_idempotent();
        let mut tried = Vec::new();
        loop {
            let Some(index) = route.pool.choose(Instant::now(), &tried, pool::random()) else {
                // Not reached: retries stop before every instance was tried.
                return Err(FillError::Upstream {
                    timeout: false,
                    message: format!("every instance of {} failed", route.label),
                });
            };
            tried.push(index);
            let member = route.pool.get(index);
            let result = {
                let _outstanding = route.pool.start(index);
                self.send(
                    method,
                    &member.authority,
                    None,
                    path_and_query,
                    headers,
                    body,
                )
                .await
            };
            if let Err(SendFailure {
                unsendable: true, ..
            }) = &result
            {
                return result.map_err(|f| f.error);
            }
            let (verdict, label, again) = match &result {
                Ok(response) => {
                    let status = response.status();
                    let gateway = matches!(status.as_u16(), 502..=504);
                    match pool::verdict(status) {
                        pool::Verdict::Good => (pool::Verdict::Good, "ok", false),
                        pool::Verdict::Bad => (pool::Verdict::Bad, "5xx", idempotent && gateway),
                    }
                }
                Err(f) if f.never_sent => (pool::Verdict::Bad, "connect", true),
                Err(SendFailure {
                    error: FillError::Upstream { timeout: true, .. },
                    ..
                }) => (pool::Verdict::Bad, "timeout", idempotent),
                Err(_) => (pool::Verdict::Bad, "connect", idempotent),
            };
            route
                .metrics
                .requests
                .with_label_values(&[route.label.as_str(), member.url.as_str(), label])
                .inc();
            if let Some(change) = route.pool.record_answer(index, verdict, Instant::now()) {
                note_member_change(route, index, change, label);
            }
            let left =
                tried.len() <= route.retries as usize && tried.len() < route.pool.members().len();
            if !again || !left {
                return result.map_err(|f| f.error);
            }
            route
                .metrics
                .retries
                .with_label_values(&[&route.label])
                .inc();
        }
    }

    /// Counts a parent's answer and records its health; a change is logged and shown in `edge_parent_up`.
    fn note_parent(
        &self,
        route: &Route,
        index: usize,
        verdict: Verdict,
        label: &str,
        result: &Result<Response<Incoming>, FillError>,
    ) {
        let parent = route.parents.get(index);
        if let Some(metrics) = &self.parent_metrics {
            metrics
                .requests
                .with_label_values(&[&parent.url, label])
                .inc();
        }
        let Some(change) = route.parents.record(index, verdict, Instant::now()) else {
            return;
        };
        if let Some(metrics) = &self.parent_metrics {
            let up = i64::from(change == Change::CameBack);
            metrics.up.with_label_values(&[&parent.url]).set(up);
        }
        match change {
            Change::WentOut => {
                let reason = match result {
                    Ok(response) => format!("answered {}", response.status()),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(parent = %parent.url, %reason, "parent edge out; its keys go to the next parent or the origin for a while");
            }
            Change::CameBack => tracing::info!(parent = %parent.url, "parent edge back"),
        }
    }

    /// One request to one `authority`, with `host` as `Host` (the authority itself when `None`).
    async fn send(
        &self,
        method: &http::Method,
        authority: &str,
        host: Option<&HeaderValue>,
        path_and_query: &str,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Response<Incoming>, SendFailure> {
        let started = Instant::now();
        let uri = format!("http://{authority}{path_and_query}");
        let host = match host {
            Some(host) => Some(host.clone()),
            None => HeaderValue::from_str(authority).ok(),
        };
        let build = || {
            let mut request = Request::builder().method(method).uri(&uri);
            if let Some(h) = request.headers_mut() {
                *h = headers.clone();
                if let Some(host) = &host {
                    h.insert(header::HOST, host.clone());
                }
            }
            request
                .body(Full::new(body.clone()))
                .map_err(|e| SendFailure {
                    error: FillError::Upstream {
                        timeout: false,
                        message: format!("bad upstream request: {e}"),
                    },
                    never_sent: true,
                    unsendable: true,
                })
        };
        // A safe request that fails before any response (a pooled connection the upstream had just closed) is
        // sent once more, on a new connection.
        let attempts = if method.is_safe() { 2 } else { 1 };
        let mut last_error = String::new();
        let mut never_sent = true;
        for _ in 0..attempts {
            let deadline = self.header_timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(deadline, self.client.request(build()?)).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(e)) => {
                    never_sent = e.is_connect();
                    last_error = error_chain(&e);
                }
                Err(_) => {
                    return Err(SendFailure {
                        error: FillError::Upstream {
                            timeout: true,
                            message: format!(
                                "{authority} sent no response head within {:?}",
                                self.header_timeout
                            ),
                        },
                        never_sent: false,
                        unsendable: false,
                    });
                }
            }
        }
        Err(SendFailure {
            error: FillError::Upstream {
                timeout: false,
                message: format!("{authority} unreachable: {last_error}"),
            },
            never_sent,
            unsendable: false,
        })
    }

    /// The next data chunk of an upstream body; `None` at its end. A stall longer than the idle timeout fails.
    pub async fn next_chunk(&self, body: &mut Incoming) -> Result<Option<Bytes>, FillError> {
        loop {
            let frame = match tokio::time::timeout(self.body_idle_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(e))) => return Err(FillError::Body(error_chain(&e))),
                Ok(None) => return Ok(None),
                Err(_) => {
                    return Err(FillError::Body(format!(
                        "stalled for {:?}",
                        self.body_idle_timeout
                    )));
                }
            };
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }
}

/// Logs a pool instance going out or coming back, and sets its `edge_pool_member_up`.
fn note_member_change(route: &PoolRoute, index: usize, change: pool::Change, why: &str) {
    let member = route.pool.get(index);
    let up = i64::from(change == pool::Change::CameBack);
    route
        .metrics
        .up
        .with_label_values(&[&route.label, &member.url])
        .set(up);
    match change {
        pool::Change::WentDown => {
            tracing::warn!(route = %route.label, member = %member.url, why, "pool instance out; requests go to the others")
        }
        pool::Change::CameBack => {
            tracing::info!(route = %route.label, member = %member.url, why, "pool instance back")
        }
    }
}

/// Keeps a pool's health for as long as the process runs: probes every instance each interval (when the route
/// has a health check) and refreshes `edge_pool_member_up`, which an ejection's end changes without an event.
async fn keep_pool_health(client: Client<HttpConnector, Full<Bytes>>, route: Arc<PoolRoute>) {
    let interval = route
        .probe
        .as_ref()
        .map_or(Duration::from_secs(1), |p| p.interval);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(probe) = &route.probe {
            let probes = route.pool.members().iter().map(|member| {
                let client = client.clone();
                async move {
                    let request =
                        Request::get(format!("http://{}{}", member.authority, probe.path))
                            .header(header::USER_AGENT, "edge-health-check")
                            .body(Full::new(Bytes::new()));
                    let Ok(request) = request else { return false };
                    match tokio::time::timeout(probe.timeout, client.request(request)).await {
                        Ok(Ok(response)) => {
                            let ok = response.status().is_success();
                            // Read to the end so the connection goes back to the pool.
                            let _ =
                                tokio::time::timeout(probe.timeout, response.into_body().collect())
                                    .await;
                            ok
                        }
                        _ => false,
                    }
                }
            });
            let results = futures::future::join_all(probes).await;
            for (index, ok) in results.into_iter().enumerate() {
                let member = route.pool.get(index);
                route
                    .metrics
                    .probes
                    .with_label_values(&[
                        route.label.as_str(),
                        member.url.as_str(),
                        if ok { "ok" } else { "failed" },
                    ])
                    .inc();
                let verdict = if ok {
                    pool::Verdict::Good
                } else {
                    pool::Verdict::Bad
                };
                if let Some(change) = route.pool.record_probe(index, verdict, Instant::now()) {
                    note_member_change(&route, index, change, "health check");
                }
            }
        }
        let now = Instant::now();
        for (index, member) in route.pool.members().iter().enumerate() {
            route
                .metrics
                .up
                .with_label_values(&[&route.label, &member.url])
                .set(i64::from(route.pool.is_usable(index, now)));
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Parses `Content-Range: bytes START-END/TOTAL` of a 206.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let (start, end, total) = (start.parse().ok()?, end.parse().ok()?, total.parse().ok()?);
    (start <= end && end < total).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range() {
        assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
        assert_eq!(parse_content_range("bytes 0-99/*"), None);
        assert_eq!(parse_content_range("bytes */1000"), None);
        assert_eq!(parse_content_range("bytes 5-4/1000"), None);
        assert_eq!(parse_content_range("bytes 0-1000/1000"), None);
    }
}
