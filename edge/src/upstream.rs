//! The upstream client: pooled HTTP/1.1 connections to the origin (or a parent edge), with a connect timeout,
//! a response-head timeout, and a body idle timeout per chunk.

use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::cache::fill::FillError;

/// The client shared by every fill and pass-through request.
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    header_timeout: Duration,
    body_idle_timeout: Duration,
    via: HeaderValue,
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
        }
    }

    /// Sends `method` for `path_and_query` to `authority` with `headers` and `body` (empty for GET and HEAD);
    /// returns the response head and how long it took. Errors are classified for the client: unreachable (502)
    /// or timed out (504).
    pub async fn request(
        &self,
        method: &http::Method,
        authority: &str,
        path_and_query: &str,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<(Response<Incoming>, Duration), FillError> {
        let started = Instant::now();
        let uri = format!("http://{authority}{path_and_query}");
        headers.insert(header::VIA, self.via.clone());
        let build = || {
            let mut request = Request::builder().method(method).uri(&uri);
            if let Some(h) = request.headers_mut() {
                *h = headers.clone();
                if let Ok(host) = HeaderValue::from_str(authority) {
                    h.insert(header::HOST, host);
                }
            }
            request
                .body(Full::new(body.clone()))
                .map_err(|e| FillError::Upstream {
                    timeout: false,
                    message: format!("bad upstream request: {e}"),
                })
        };
        // A safe request that fails before any response (a pooled connection the upstream had just closed) is
        // sent once more, on a new connection.
        let attempts = if method.is_safe() { 2 } else { 1 };
        let mut last_error = String::new();
        for _ in 0..attempts {
            let deadline = self.header_timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(deadline, self.client.request(build()?)).await {
                Ok(Ok(response)) => return Ok((response, started.elapsed())),
                Ok(Err(e)) => last_error = error_chain(&e),
                Err(_) => {
                    return Err(FillError::Upstream {
                        timeout: true,
                        message: format!(
                            "{authority} sent no response head within {:?}",
                            self.header_timeout
                        ),
                    });
                }
            }
        }
        Err(FillError::Upstream {
            timeout: false,
            message: format!("{authority} unreachable: {last_error}"),
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
