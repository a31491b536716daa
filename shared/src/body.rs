//! Response bodies that report their end: [`Metered`] counts the bytes that really left and, when the body ends
//! or is dropped early, calls its reporter once with the count and whether the body was complete. Access logs
//! and byte metrics hang off this one place.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// A response body of either server: `Bytes` chunks, an I/O error when it breaks off.
pub type BoxBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// An empty body.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of one buffer.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The body length a response promises, for [`Metered`]: none for HEAD and 304, else its `Content-Length`
/// (unknown without one).
pub fn promised_len(
    method: &http::Method,
    status: http::StatusCode,
    headers: &http::HeaderMap,
) -> Option<u64> {
    if *method == http::Method::HEAD || status == http::StatusCode::NOT_MODIFIED {
        return Some(0);
    }
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// A body of one text.
pub fn text(text: &str) -> BoxBody {
    full(Bytes::copy_from_slice(text.as_bytes()))
}

/// Called once at the end of a body: bytes sent, whether the body was complete, and the body error if any.
pub type Reporter = Box<dyn FnOnce(BodyEnd) + Send>;

/// How a body ended.
#[derive(Debug, Clone)]
pub struct BodyEnd {
    pub bytes: u64,
    /// When the first body byte was handed to the connection (time to first byte), if any was.
    pub first_byte_at: Option<std::time::Instant>,
    pub complete: bool,
    pub error: Option<String>,
}

/// A body that reports itself when it ends.
pub struct Metered<B> {
    inner: B,
    reporter: Option<Reporter>,
    expected: Option<u64>,
    bytes: u64,
    first_byte_at: Option<std::time::Instant>,
    finished: bool,
    error: Option<String>,
}

impl<B: Body> Metered<B> {
    /// `expected` is the length the response promised (Content-Length; 0 for HEAD and 304), when known:
    /// hyper stops polling a body once it has sent that many bytes.
    pub fn new(inner: B, expected: Option<u64>, reporter: Reporter) -> Self {
        // HEAD, 304 and empty bodies may never be polled: they are complete from the start.
        let finished = inner.is_end_stream();
        Metered {
            inner,
            reporter: Some(reporter),
            expected,
            bytes: 0,
            first_byte_at: None,
            finished,
            error: None,
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
                    if self.first_byte_at.is_none() && !data.is_empty() {
                        self.first_byte_at = Some(std::time::Instant::now());
                    }
                }
                if self.inner.is_end_stream() {
                    self.finished = true;
                }
            }
            Poll::Ready(None) => self.finished = true,
            Poll::Ready(Some(Err(e))) => {
                let message = format!("body aborted: {e}");
                self.error.get_or_insert(message);
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
        if let Some(reporter) = self.reporter.take() {
            let complete =
                self.error.is_none() && (self.finished || self.expected == Some(self.bytes));
            reporter(BodyEnd {
                bytes: self.bytes,
                first_byte_at: self.first_byte_at,
                complete,
                error: self.error.take(),
            });
        }
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyReadError {
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    TooSlow(std::time::Duration),
    #[error("the request body could not be read: {0}")]
    Broken(String),
}

impl BodyReadError {
    /// 413, 408 or 400.
    pub fn status(&self) -> http::StatusCode {
        match self {
            BodyReadError::TooLarge(_) => http::StatusCode::PAYLOAD_TOO_LARGE,
            BodyReadError::TooSlow(_) => http::StatusCode::REQUEST_TIMEOUT,
            BodyReadError::Broken(_) => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a request body of at most `max_bytes` within `timeout`: what the small JSON APIs (purges, playback)
/// accept, so that no client holds a connection with a trickled or endless body.
pub async fn read_limited<B>(
    body: B,
    max_bytes: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyReadError>
where
    B: Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let read = http_body_util::Limited::new(body, max_bytes).collect();
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(BodyReadError::TooLarge(max_bytes))
        }
        Ok(Err(e)) => Err(BodyReadError::Broken(e.to_string())),
        Err(_) => Err(BodyReadError::TooSlow(timeout)),
    }
}
