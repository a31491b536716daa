//! Pass-through: requests the cache does not answer (bypassed paths, credentials, unsafe methods, answers that
//! may not be stored) go upstream for one client and their answer streams back with its header section intact.
//! A non-error answer to an unsafe method invalidates what the edge stored for the URL (RFC 9111 §4.4).

use std::io;
use std::sync::Arc;
use tokio::time::Instant;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::{Answer, Canonical, Edge, empty};
use crate::cache::key::CacheKey;
use crate::error::EdgeError;
use crate::fields::{Purpose, passed_response, upstream_request};
use crate::status::{CacheStatus, Fwd};

impl Edge {
    /// The fields of a client's request sent upstream for `purpose`, with the client's address appended to
    /// `X-Forwarded-For`, and `Early-Data: 1` when it arrived in 0-RTT (RFC 8470 §5.1: the upstream may answer
    /// 425).
    pub(super) fn upstream_fields(
        &self,
        parts: &Parts,
        request: &Canonical<'_>,
        purpose: Purpose,
    ) -> HeaderMap {
        let mut fields = upstream_request(&parts.headers, purpose, &request.site.forwarding);
        // Whatever the client's `Connection` or the site's deny list say, the hops a request carries go on with
        // it (the upstream client appends this CDN's): a loop must stay visible at the next tier.
        fields.remove(crate::shield::CDN_LOOP);
        for value in parts.headers.get_all(crate::shield::CDN_LOOP) {
            fields.append(crate::shield::CDN_LOOP, value.clone());
        }
        // The client's address for the upstream (an API binding tokens to it, say), after any the request
        // carried: the upstream trusts only the entries its own proxies added.
        if let Some(client) = parts.extensions.get::<super::ClientAddr>() {
            let forwarded = crate::fields::forwarded_for(&parts.headers, client.0.ip());
            crate::fields::put(&mut fields, crate::fields::X_FORWARDED_FOR, &forwarded);
        }
        if request.early_data {
            fields.insert(
                HeaderName::from_static("early-data"),
                HeaderValue::from_static("1"),
            );
        }
        fields
    }

    /// Forwards a GET or HEAD the cache does not answer, and streams the answer back as it is.
    pub(super) async fn pass(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        cache_status: CacheStatus,
    ) -> Answer {
        self.forward(parts, request, Bytes::new(), cache_status)
            .await
    }

    /// An unsafe request (POST, PUT, PATCH, DELETE): forwarded with its body, never answered from cache.
    pub(super) async fn forward_unsafe(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        body: Bytes,
    ) -> Answer {
        let status = CacheStatus::Pass {
            fwd: Fwd::Request,
            detail: Some("method"),
        };
        self.forward(parts, request, body, status).await
    }

    async fn forward(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        body: Bytes,
        cache_status: CacheStatus,
    ) -> Answer {
        // Counted from the request to the end of the answer's body.
        let Ok(slot) = Arc::clone(&request.site.passes).try_acquire_owned() else {
            let busy = EdgeError::Overloaded {
                reason: format!(
                    "too many requests are being passed to the upstream of site `{}`; try again shortly",
                    request.site.name
                ),
            };
            return self.error_answer(parts, busy, CacheStatus::Local);
        };
        let fields = self.upstream_fields(parts, request, Purpose::Pass);
        let started = Instant::now();
        let result = self
            .engine
            .upstream()
            .request_origin(
                &parts.method,
                &request.site.upstream,
                &request.path_and_query(),
                fields,
                body,
            )
            .await;
        let upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let response = match result {
            Ok((response, _)) => response,
            Err(e) => {
                let error = EdgeError::from(&e);
                if let Some(kind) = error.upstream_label() {
                    self.metrics
                        .upstream_errors
                        .with_label_values(&[kind])
                        .inc();
                }
                let mut answer = self.error_answer(parts, error, CacheStatus::Error);
                answer.upstream_ms = upstream_ms;
                return answer;
            }
        };
        self.metrics
            .upstream_requests
            .with_label_values(&[shared::metrics::status_class(response.status().as_u16())])
            .inc();
        if super::is_unsafe(&parts.method)
            && (response.status().is_success() || response.status().is_redirection())
        {
            self.invalidate(request, response.headers()).await;
        }
        let mut answer = self.stream_upstream(parts, response, cache_status, Some(slot));
        answer.upstream_ms = upstream_ms;
        answer
    }

    /// The client's answer from an upstream response it alone asked for: status and end-to-end fields as the
    /// upstream sent them, the body streamed (a body that breaks off aborts the response).
    pub(super) fn stream_upstream(
        self: &Arc<Self>,
        parts: &Parts,
        response: Response<Incoming>,
        cache_status: CacheStatus,
        slot: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Answer {
        let (head, body) = response.into_parts();
        let mut builder = Response::builder().status(head.status);
        let headers = builder.headers_mut().expect("fresh builder");
        *headers = passed_response(&head.headers);
        for targeted in self.engine.targeted_fields() {
            headers.remove(targeted);
        }
        super::add_cache_status(headers, cache_status.header_value(&self.name));
        self.cors_headers(parts, headers);
        let body = if parts.method == Method::HEAD {
            empty()
        } else {
            let edge = Arc::clone(self);
            // The pass's slot, if any, goes when the body does.
            let stream = futures::stream::unfold(Some((body, slot)), move |state| {
                let edge = Arc::clone(&edge);
                async move {
                    let (mut body, slot) = state?;
                    match edge.engine.upstream().next_chunk(&mut body).await {
                        Ok(Some(chunk)) => Some((Ok(Frame::data(chunk)), Some((body, slot)))),
                        Ok(None) => None,
                        Err(e) => Some((Err(io::Error::other(e)), None)),
                    }
                }
            });
            StreamBody::new(stream).boxed_unsync()
        };
        let response = builder
            .body(body)
            .unwrap_or_else(|_| Response::new(empty()));
        Answer {
            response,
            cache_status,
            error: None,
            upstream_ms: None,
            route: None,
        }
    }

    /// RFC 9111 §4.4: a non-error response to an unsafe request invalidates the target URI and the URIs in
    /// `Location` and `Content-Location` when they are on the same site (each in its canonical form).
    async fn invalidate(&self, request: &Canonical<'_>, response: &HeaderMap) {
        let mut targets = vec![request.key.clone()];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
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
                    .site_for_host(host)
                    .is_some_and(|site| site.name == request.site.name),
            };
            if let (true, Some(key)) = (same_site, canonical_key(&request.site.name, &uri, true)) {
                targets.push(key);
            }
        }
        for key in targets {
            self.engine.invalidate(&key).await;
            self.metrics.invalidations.inc();
        }
    }
}

/// The cache key of `uri` on `site`, spelled canonically (`None` when its path is not an object's); the query
/// (without CMCD, as admission keys it) is part of it when `with_query`.
pub(super) fn canonical_key(site: &str, uri: &http::Uri, with_query: bool) -> Option<CacheKey> {
    let path = shared::path::canonical_path(uri.path()).ok()?;
    let query = super::admit::canonical_query(uri.query().filter(|_| with_query));
    Some(CacheKey::new(site, &path, query.as_deref()))
}
