//! One request of any protocol through the pipeline, logged: the TCP listeners (HTTP/1.1, HTTP/2) and the
//! QUIC listener (HTTP/3) hand each request here; the answer's body is wrapped so that its end writes the
//! access log line, the request metrics and the per-title summary's count, whatever the protocol. The request's
//! CMCD (as received: the pipeline keeps it out of the cache key and the upstream request) is read here.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use shared::body::{BodyEnd, Metered};
use shared::serve::protocol_name;
use tokio::time::Instant;

use crate::error::EdgeError;
use crate::pipeline::{Answer, Body, Edge};
use crate::status::CacheStatus;

/// One HTTP/1.1 or HTTP/2 request: the shared pipeline, plus the `Alt-Svc` advertisement of HTTP/3.
pub async fn handle(
    edge: &Arc<Edge>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Metered<Body>> {
    let started = Instant::now();
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(crate::pipeline::ClientAddr(peer));
    let (body, _permit) = if crate::pipeline::is_unsafe(&parts.method) {
        let read = edge.admit_body(&parts).map(|permit| async {
            let limits = &edge.bodies;
            let body = within(limits.timeout, read_body(body, limits.max_bytes)).await?;
            Ok::<_, EdgeError>((body, Some(permit)))
        });
        let read = match read {
            Ok(read) => read.await,
            Err(refusal) => Err(refusal),
        };
        match read {
            Ok(read) => read,
            Err(refusal) => {
                let answer = edge.error_answer(&parts, refusal, CacheStatus::Local);
                return log_answer(edge, parts, answer, peer, started);
            }
        }
    } else {
        (bytes::Bytes::new(), None)
    };
    let mut response = respond_logged(edge, parts, body, peer, started).await;
    if let Some(alt_svc) = &edge.alt_svc {
        response
            .headers_mut()
            .insert(http::header::ALT_SVC, alt_svc.clone());
    }
    response
}

/// One request of any protocol: the pipeline, then the body wrapped so that its end is logged and counted.
pub async fn respond_logged(
    edge: &Arc<Edge>,
    parts: http::request::Parts,
    body: bytes::Bytes,
    peer: SocketAddr,
    started: Instant,
) -> Response<Metered<Body>> {
    let answer = edge.handle(&parts, body).await;
    log_answer(edge, parts, answer, peer, started)
}

/// `read`, or a 408 when it takes longer than `timeout` (a request body trickled to hold memory and a slot).
pub async fn within<T>(
    timeout: std::time::Duration,
    read: impl std::future::Future<Output = Result<T, EdgeError>>,
) -> Result<T, EdgeError> {
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or_else(|_| {
            Err(EdgeError::client(
                http::StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {timeout:?}"),
            ))
        })
}

/// A request body, read whole up to `limit` bytes (413 beyond, 400 when it breaks off).
async fn read_body(body: Incoming, limit: usize) -> Result<bytes::Bytes, EdgeError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(EdgeError::client(
                http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {limit} bytes"),
            ))
        }
        Err(e) => Err(EdgeError::client(
            http::StatusCode::BAD_REQUEST,
            format!("the request body could not be read: {e}"),
        )),
    }
}

/// The access log line and metrics of one answer, written when its body ends.
pub fn log_answer(
    edge: &Arc<Edge>,
    parts: http::request::Parts,
    answer: Answer,
    peer: SocketAddr,
    started: Instant,
) -> Response<Metered<Body>> {
    let Answer {
        response,
        cache_status,
        error,
        upstream_ms,
        route,
    } = answer;
    if let Some(fwd) = cache_status.fwd() {
        edge.metrics
            .forwarded
            .with_label_values(&[fwd.as_str()])
            .inc();
    }
    let status = response.status().as_u16();
    let expected = shared::body::promised_len(&parts.method, response.status(), response.headers());
    let protocol = protocol_name(parts.version);
    let range = parts
        .headers
        .get(http::header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cmcd = crate::cmcd::from_request(parts.uri.query(), &parts.headers);
    if let Some(cmcd) = &cmcd {
        edge.metrics
            .cmcd_requests
            .with_label_values(&[cmcd.carrier.as_str(), cmcd.object_type_label()])
            .inc();
        if cmcd.rejected > 0 {
            edge.metrics.cmcd_rejected.inc_by(u64::from(cmcd.rejected));
        }
    }
    let metrics = Arc::clone(&edge.metrics);
    let title_stats = Arc::clone(&edge.title_stats);
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let reporter = Box::new(move |end: BodyEnd| {
        let elapsed = started.elapsed().as_secs_f64();
        let ttfb = end
            .first_byte_at
            .map(|t| t.duration_since(started.into_std()).as_secs_f64());
        let label = cache_status.label();
        let method_label = shared::metrics::method_label(&method);
        let series = metrics.request_series(
            protocol,
            method_label,
            shared::metrics::status_class(status),
            label,
        );
        series.requests.inc();
        if let Some(route) = &route {
            metrics
                .route_requests
                .with_label_values(&[route, label])
                .inc();
        }
        series.response_bytes.inc_by(end.bytes);
        series.duration.observe(elapsed);
        if let Some(ttfb) = ttfb {
            series.ttfb.observe(ttfb);
        }
        if !end.complete {
            metrics.incomplete.inc();
        }
        let ttfb_ms = ttfb.map(|t| t * 1000.0);
        title_stats.record(&crate::stats::Observation {
            path: &path,
            status,
            cache_status: label,
            bytes: end.bytes,
            ttfb_ms,
            cmcd: cmcd.as_ref(),
        });
        let cmcd = cmcd.as_ref();
        tracing::info!(
            target: "access",
            client = %peer,
            protocol,
            method = %method,
            path = %path,
            route = route.as_deref(),
            range = range.as_deref(),
            status,
            bytes = end.bytes,
            complete = end.complete,
            cache_status = label,
            fwd = cache_status.fwd().map(|f| f.as_str()),
            ttfb_ms,
            duration_ms = elapsed * 1000.0,
            upstream_ms,
            error = error.as_deref().or(end.error.as_deref()),
            cmcd_sid = cmcd.and_then(|c| c.session_id.as_deref()),
            cmcd_cid = cmcd.and_then(|c| c.content_id.as_deref()),
            cmcd_br = cmcd.and_then(|c| c.encoded_bitrate_kbps),
            cmcd_bl = cmcd.and_then(|c| c.buffer_length_ms),
            cmcd_bs = cmcd.and_then(|c| c.buffer_starvation),
            cmcd_rejected = cmcd.map(|c| c.rejected).filter(|&n| n > 0),
            "request"
        );
    });
    response.map(|body| Metered::new(body, expected, reporter))
}
