//! The end of every origin request: when its body ends (or is dropped early) the metrics are recorded and one
//! structured access-log line is written, through `shared::body::Metered`.

use std::sync::Arc;
use std::time::Instant;

use shared::body::{BodyEnd, Metered, Reporter};

use crate::metrics::{OriginMetrics, method_label};

/// What the access log says about one request, filled in before the body starts.
pub struct AccessRecord {
    pub method: http::Method,
    pub path: String,
    pub protocol: &'static str,
    pub peer: std::net::SocketAddr,
    pub status: u16,
    /// Body bytes the response promised (`Content-Length`; 0 for HEAD and 304), when known.
    pub expected_bytes: Option<u64>,
    pub range: Option<String>,
    pub user_agent: Option<String>,
    /// Why the request failed, when it did.
    pub error: Option<String>,
    pub started: Instant,
    pub metrics: Arc<OriginMetrics>,
}

impl AccessRecord {
    /// Wraps a response body so that this record is reported when the body ends.
    pub fn meter<B: http_body::Body>(self, body: B) -> Metered<B> {
        self.metrics.in_flight.inc();
        let expected = self.expected_bytes;
        let reporter: Reporter = Box::new(move |end| self.report(end));
        Metered::new(body, expected, reporter)
    }

    fn report(self, end: BodyEnd) {
        let m = &self.metrics;
        m.in_flight.dec();
        let elapsed = self.started.elapsed();
        let status_class = shared::metrics::status_class(self.status);
        m.requests
            .with_label_values(&[method_label(&self.method), status_class])
            .inc();
        m.response_bytes.inc_by(end.bytes);
        m.duration.observe(elapsed.as_secs_f64());
        if !end.complete {
            m.incomplete.inc();
        }
        let error = self.error.as_deref().or(end.error.as_deref());
        tracing::info!(
            target: "access",
            method = %self.method,
            path = %self.path,
            protocol = self.protocol,
            peer = %self.peer,
            status = self.status,
            bytes = end.bytes,
            complete = end.complete,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            range = self.range.as_deref(),
            user_agent = self.user_agent.as_deref(),
            error,
            "request"
        );
    }
}
