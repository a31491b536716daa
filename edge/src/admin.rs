//! The edge's admin listener: `/healthz` (open), `/metrics` (Prometheus; behind the bearer token when one is
//! configured), and the purge API, always behind the token:
//! - `POST /purge` with a JSON body `{"url": "https://host/path", "soft": false}`, `{"prefix": "https://host/dir/"}`
//!   or `{"tag": "title-42"}`: a hard purge makes matching stored versions unusable, a soft one marks them stale
//!   (the next request revalidates). Each is recorded as a ban (see `cache::bans`), so it costs O(1).
//! - `GET /bans`: the bans in force, as JSON.
//! - `POST /fill`: a proactive fill run now, whatever the hour (`pipeline::fill`; 409 without `control.url`
//!   or while one runs).
//! - `POST /clock` with `{"advance_secs": N}`, only with `admin.test_clock = true` (tests): moves the edge's
//!   clock forward (see `clock`).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use serde::Deserialize;

use crate::cache::bans::BanKind;
use crate::pipeline::{Body, Edge, FillRefusal, PurgeError};

/// The largest purge request body read.
const MAX_PURGE_BODY_BYTES: usize = 16 * 1024;

pub struct AdminService {
    pub edge: Arc<Edge>,
    pub bearer_token: Option<String>,
}

/// A purge request: exactly one of `url`, `prefix` and `tag`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    soft: bool,
}

impl AdminService {
    pub async fn respond<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        match (req.method(), path.as_str()) {
            (_, "/healthz") => plain(StatusCode::OK, "ok\n"),
            (_, "/metrics") if !self.authorized(&req) => unauthorized(),
            (_, "/metrics") => self.metrics(),
            (_, "/purge" | "/bans" | "/clock" | "/fill") if self.bearer_token.is_none() => plain(
                StatusCode::FORBIDDEN,
                "the admin API needs admin.bearer_token to be configured\n",
            ),
            (_, "/purge" | "/bans" | "/clock" | "/fill") if !self.authorized(&req) => {
                unauthorized()
            }
            (&Method::POST, "/fill") => match self.edge.request_fill() {
                Ok(()) => plain(
                    StatusCode::ACCEPTED,
                    "a fill run starts: edge_fill_running and edge_fill_runs_total tell how it goes\n",
                ),
                Err(FillRefusal::NotConfigured) => plain(
                    StatusCode::CONFLICT,
                    "no fill: it needs control.url (the plan comes from the control plane)\n",
                ),
                Err(FillRefusal::Running) => {
                    plain(StatusCode::CONFLICT, "a fill run is going on already\n")
                }
            },
            (_, "/fill") => method_not_allowed("POST"),
            (&Method::POST, "/purge") => self.purge(req).await,
            (&Method::POST, "/clock") => self.advance_clock(req).await,
            (_, "/clock") => method_not_allowed("POST"),
            (&Method::GET, "/bans") => json(StatusCode::OK, &self.edge.engine().bans.list()),
            (_, "/purge") => method_not_allowed("POST"),
            (_, "/bans") => method_not_allowed("GET"),
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /healthz, /metrics, /purge, /bans and /fill\n",
            ),
        }
    }

    fn metrics(&self) -> Response<Body> {
        let metrics = &self.edge.metrics;
        metrics
            .memory_bytes
            .set(self.edge.storage().memory_usage() as i64);
        self.edge.sweep_prefetches();
        let (passing, failing) = self.edge.engine().mark_counts();
        metrics
            .marks
            .with_label_values(&["pass"])
            .set(passing as i64);
        metrics
            .marks
            .with_label_values(&["failing"])
            .set(failing as i64);
        if let Some(stats) = crate::allocator::stats() {
            for (state, bytes) in [
                ("allocated", stats.allocated),
                ("active", stats.active),
                ("resident", stats.resident),
                ("retained", stats.retained),
            ] {
                metrics
                    .allocator_bytes
                    .with_label_values(&[state])
                    .set(bytes as i64);
            }
        }
        for (kind, count) in self.edge.engine().bans.counts() {
            metrics
                .bans
                .with_label_values(&[kind.as_str()])
                .set(count as i64);
        }
        let (content_type, body) = shared::metrics::encode(&metrics.registry);
        let mut response = plain(StatusCode::OK, body);
        if let Ok(value) = HeaderValue::from_str(&content_type) {
            response.headers_mut().insert(header::CONTENT_TYPE, value);
        }
        response
    }

    async fn advance_clock<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Advance {
            advance_secs: u64,
        }
        let advance: Advance =
            match read_json(req, "{\"advance_secs\": 5}", self.edge.bodies.timeout).await {
                Ok(advance) => advance,
                Err(refused) => return refused,
            };
        let by = std::time::Duration::from_secs(advance.advance_secs);
        match self.edge.engine().clock().advance(by) {
            Ok(ahead) => {
                tracing::warn!(
                    ahead_secs = ahead.as_secs(),
                    "the test clock was moved forward"
                );
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "ahead_secs": ahead.as_secs() }),
                )
            }
            Err(reason) if self.edge.engine().clock().is_adjustable() => {
                plain(StatusCode::BAD_REQUEST, format!("{reason}\n"))
            }
            Err(reason) => plain(StatusCode::FORBIDDEN, format!("{reason}\n")),
        }
    }

    async fn purge<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let bad = |reason: String| plain(StatusCode::BAD_REQUEST, format!("{reason}\n"));
        let request: PurgeRequest = match read_json(
            req,
            "{\"url\": \"https://host/path\"}",
            self.edge.bodies.timeout,
        )
        .await
        {
            Ok(request) => request,
            Err(refused) => return refused,
        };
        let (kind, target) = match (request.url, request.prefix, request.tag) {
            (Some(url), None, None) => (BanKind::Url, url),
            (None, Some(prefix), None) => (BanKind::Prefix, prefix),
            (None, None, Some(tag)) => (BanKind::Tag, tag),
            _ => return bad("give exactly one of `url`, `prefix` and `tag`".into()),
        };
        match self.edge.purge(kind, &target, request.soft).await {
            Ok(ban) => {
                let mode = if ban.soft { "soft" } else { "hard" };
                self.edge
                    .metrics
                    .purges
                    .with_label_values(&[kind.as_str(), mode])
                    .inc();
                tracing::info!(kind = kind.as_str(), pattern = %ban.pattern, soft = ban.soft, "purge");
                json(StatusCode::OK, &ban)
            }
            Err(PurgeError::Invalid(reason)) => bad(reason),
            Err(PurgeError::Io(e)) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the purge could not be saved: {e}\n"),
            ),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        shared::auth::bearer_ok(req.headers(), self.bearer_token.as_deref())
    }
}

fn unauthorized() -> Response<Body> {
    let mut response = plain(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = plain(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("use {allow} here\n"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// A request's JSON body, read up to [`MAX_PURGE_BODY_BYTES`] within `timeout` (the players' request-body
/// deadline, so a trickled body cannot hold one of the admin listener's few connections); 413 when larger,
/// 408 when slower, and a 400 with the reason (and an `example` of what is expected) when it cannot be read or
/// parsed.
async fn read_json<T, B>(
    req: Request<B>,
    example: &str,
    timeout: std::time::Duration,
) -> Result<T, Response<Body>>
where
    T: serde::de::DeserializeOwned,
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let bad = |reason: String| plain(StatusCode::BAD_REQUEST, format!("{reason}\n"));
    let body = shared::body::read_limited(req.into_body(), MAX_PURGE_BODY_BYTES, timeout)
        .await
        .map_err(|e| plain(e.status(), format!("{e}\n")))?;
    serde_json::from_slice(&body)
        .map_err(|e| bad(format!("the body must be JSON such as {example}: {e}")))
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = plain(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(shared::body::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
