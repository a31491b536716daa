//! The admin listener: `/healthz` (open) and `/metrics` (Prometheus text; behind a bearer token when one is
//! configured). Later issues add the authenticated admin API here.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::media::handler::{Body, text_body};
use crate::metrics::OriginMetrics;

pub struct AdminService {
    pub metrics: Arc<OriginMetrics>,
    pub bearer_token: Option<String>,
    /// Wakes the recommender's trainer (`POST /recs/train`).
    pub train: Arc<tokio::sync::Notify>,
}

impl AdminService {
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Body> {
        match req.uri().path() {
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/metrics" | "/recs/train" if !self.authorized(req) => {
                let mut response = plain(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
            "/metrics" => {
                let (content_type, body) = shared::metrics::encode(&self.metrics.registry);
                let mut response = Response::new(text_body(&String::from_utf8_lossy(&body)));
                if let Ok(value) = HeaderValue::from_str(&content_type) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                response
            }
            "/recs/train" if req.method() == http::Method::POST => {
                self.train.notify_one();
                plain(
                    StatusCode::ACCEPTED,
                    "the recommender trains now; control_recommender_trainings_total counts it when done\n",
                )
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: the admin listener serves /healthz, /metrics and POST /recs/train\n",
            ),
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        shared::auth::bearer_ok(req.headers(), self.bearer_token.as_deref())
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(text_body(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
