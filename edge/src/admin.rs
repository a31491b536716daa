//! The edge's admin listener: `/healthz` (open), `/metrics` (Prometheus; behind the bearer token when one is
//! configured). Later issues add the purge API here, always behind the token.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::pipeline::{Body, Edge};

pub struct AdminService {
    pub edge: Arc<Edge>,
    pub bearer_token: Option<String>,
}

impl AdminService {
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => plain(StatusCode::OK, "ok\n".into()),
            "/metrics" if !self.authorized(req) => {
                let mut response = plain(
                    StatusCode::UNAUTHORIZED,
                    "a bearer token is required\n".into(),
                );
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            "/metrics" => {
                let metrics = &self.edge.metrics;
                metrics
                    .memory_bytes
                    .set(self.edge.storage().memory_usage() as i64);
                let (content_type, body) = shared::metrics::encode(&metrics.registry);
                let mut response = plain(StatusCode::OK, body);
                if let Ok(value) = HeaderValue::from_str(&content_type) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                response
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /healthz and /metrics\n".into(),
            ),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        shared::auth::bearer_ok(req.headers(), self.bearer_token.as_deref())
    }
}

fn plain(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
