//! The end of every request: a response body wrapper that counts the bytes that really left, and when the body
//! ends (or is dropped early) records the metrics and writes one structured access-log line.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

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

/// A body that reports itself when it ends.
pub struct Metered<B> {
    inner: B,
    record: Option<AccessRecord>,
    bytes: u64,
    finished: bool,
}

impl<B: Body> Metered<B> {
    pub fn new(inner: B, record: AccessRecord) -> Self {
        record.metrics.in_flight.inc();
        // HEAD, 304 and empty bodies may never be polled: they are complete from the start.
        let finished = inner.is_end_stream();
        Metered {
            inner,
            record: Some(record),
            bytes: 0,
            finished,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Metered<B>
where
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                // hyper stops polling once a body says it has ended.
                if self.inner.is_end_stream() {
                    self.finished = true;
                }
            }
            Poll::Ready(None) => self.finished = true,
            Poll::Ready(Some(Err(e))) => {
                if let Some(record) = self.record.as_mut() {
                    record
                        .error
                        .get_or_insert_with(|| format!("body aborted: {e}"));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        let Some(record) = self.record.take() else {
            return;
        };
        let complete = self.finished || record.expected_bytes == Some(self.bytes);
        let m = &record.metrics;
        m.in_flight.dec();
        let elapsed = record.started.elapsed();
        m.requests
            .with_label_values(&[
                method_label(&record.method),
                shared::metrics::status_class(record.status),
            ])
            .inc();
        m.response_bytes.inc_by(self.bytes);
        m.duration.observe(elapsed.as_secs_f64());
        if !complete {
            m.incomplete.inc();
        }
        tracing::info!(
            target: "access",
            method = %record.method,
            path = %record.path,
            protocol = record.protocol,
            peer = %record.peer,
            status = record.status,
            bytes = self.bytes,
            complete,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            range = record.range.as_deref(),
            user_agent = record.user_agent.as_deref(),
            error = record.error.as_deref(),
            "request"
        );
    }
}
