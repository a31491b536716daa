//! Answering one media request: method and path checks, metadata from the store, preconditions, ranges,
//! Cache-Control by object class, and a streamed body. Errors become responses in [`error_response`] only.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use object_store::ObjectMeta;
use shared::conditional::{self, Preconditions, Validators};
use shared::media::{Liveness, ObjectClass};
use shared::range::{self, ByteRange, RangeOutcome};

use crate::config::CacheControlConfig;
use crate::media::error::{ErrorKind, OriginError};
use crate::media::hints::{self, HintBoard};
use crate::media::store::Store;
use crate::metrics::OriginMetrics;

/// Response bodies: streamed from the store, or small and in memory.
pub type Body = shared::body::BoxBody;

/// Everything a media request needs, shared by all connections.
pub struct MediaService {
    pub store: Store,
    pub cache_control: CacheControlConfig,
    pub cors_allow_origin: Option<HeaderValue>,
    pub metrics: Arc<OriginMetrics>,
    /// Slugs of titles taken down: their objects (`titles/<slug>/…`) answer 410. Kept by the catalog-change
    /// consumer when the control plane runs here.
    pub taken_down: TakenDown,
    /// The parts live playlists hint, and the requests held for them.
    pub hints: Hints,
}

/// Preload hints: the board and the room for held requests.
pub struct Hints {
    pub board: HintBoard,
    held: tokio::sync::Semaphore,
}

impl Default for Hints {
    fn default() -> Self {
        Hints {
            board: HintBoard::default(),
            held: tokio::sync::Semaphore::new(hints::MAX_HELD),
        }
    }
}

/// The slugs of titles taken down, shared with the consumer that keeps it.
pub type TakenDown = Arc<std::sync::RwLock<std::collections::HashSet<String>>>;

/// The object's bytes, as far as they have been read.
enum Source {
    /// Read whole (a manifest small enough to classify).
    Buffered(Bytes),
    /// Still in the store: streamed on demand.
    Store,
}

impl MediaService {
    /// Answers a request; an `Err` carries the status and reason to send.
    pub async fn respond(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Body>, OriginError> {
        if method != Method::GET && method != Method::HEAD {
            return Err(OriginError::new(
                ErrorKind::MethodNotAllowed,
                "only GET and HEAD are served",
            ));
        }
        let key = shared::path::object_key(path).map_err(|e| {
            let kind = match e {
                shared::path::PathError::TooLong => ErrorKind::UriTooLong,
                e if e.is_bad_request() => ErrorKind::BadRequest,
                _ => ErrorKind::NotFound,
            };
            OriginError::new(kind, e.reason())
        })?;
        if let Some(slug) = key
            .strip_prefix("titles/")
            .and_then(|rest| rest.split('/').next())
            && self
                .taken_down
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains(slug)
        {
            return Err(OriginError::new(
                ErrorKind::Gone,
                format!("the title `{slug}` was taken down"),
            ));
        }
        let kind = shared::media::classify(&key);
        let (meta, source) = match self.lookup(&key, kind.class).await {
            Err(missing)
                if missing.kind == ErrorKind::NotFound
                    && self.hints.board.is_hinted(&key, Instant::now()) =>
            {
                self.hold_for_hinted(&key, kind.class, missing).await?
            }
            found => found?,
        };
        if let Source::Buffered(bytes) = &source
            && let Ok(text) = std::str::from_utf8(bytes)
            && text.contains("#EXT-X-PRELOAD-HINT")
        {
            self.hints.board.record(&key, text, Instant::now());
        }

        let etag = meta.e_tag.as_deref().map(conditional::normalize_etag);
        let last_modified = SystemTime::from(meta.last_modified);
        let validators = Validators {
            etag: etag.as_deref(),
            last_modified: Some(last_modified),
        };
        let cache_control = self.cache_control_for(kind.class, &source);

        let mut response = Response::builder()
            .header(header::CONTENT_TYPE, kind.content_type)
            .header(header::ACCEPT_RANGES, "bytes")
            .header(
                header::LAST_MODIFIED,
                conditional::format_http_date(last_modified),
            )
            .header(header::CACHE_CONTROL, cache_control)
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
        if let Some(etag) = &etag {
            response = response.header(header::ETAG, etag);
        }
        if let Some(origin) = &self.cors_allow_origin {
            response = response
                .header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin)
                .header(
                    header::ACCESS_CONTROL_EXPOSE_HEADERS,
                    "Content-Length, Content-Range, ETag, Age",
                );
        }

        let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let preconditions = Preconditions::from_headers(headers);
        let range_header = text(header::RANGE);
        let apply_range = match conditional::evaluate(
            &preconditions,
            &validators,
            true,
            range_header.is_some(),
        ) {
            conditional::Outcome::NotModified => {
                return response
                    .status(StatusCode::NOT_MODIFIED)
                    .body(empty())
                    .map_err(internal);
            }
            conditional::Outcome::PreconditionFailed => {
                return response
                    .status(StatusCode::PRECONDITION_FAILED)
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(text_body(
                        "precondition failed: the object does not match If-Match/If-Unmodified-Since\n",
                    ))
                    .map_err(internal);
            }
            conditional::Outcome::Proceed { apply_range } => apply_range,
        };

        let (status, part) = match range::evaluate(range_header.filter(|_| apply_range), meta.size)
        {
            RangeOutcome::Full => (StatusCode::OK, None),
            RangeOutcome::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
            RangeOutcome::Refused(e) => {
                let mut refused = Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(
                        header::CONTENT_RANGE,
                        range::unsatisfied_content_range(meta.size),
                    )
                    .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .header(header::ACCEPT_RANGES, "bytes");
                if let Some(origin) = &self.cors_allow_origin {
                    refused = refused.header(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                }
                return refused.body(text_body(&format!("{e}\n"))).map_err(internal);
            }
        };
        let length = part.map_or(meta.size, |r| r.len());
        response = response
            .status(status)
            .header(header::CONTENT_LENGTH, length);
        if let Some(r) = part {
            response = response.header(header::CONTENT_RANGE, r.content_range(meta.size));
        }
        let body = if method == Method::HEAD || length == 0 {
            empty()
        } else {
            self.body(&key, &meta, source, part).await?
        };
        response.body(body).map_err(internal)
    }

    /// A request for a part a live playlist hints, not stored yet: held until it is (looked for every
    /// `hints::STEP`), at most `hints::HOLD`; then, or without room to hold it, the 404 it had.
    async fn hold_for_hinted(
        &self,
        key: &str,
        class: ObjectClass,
        missing: OriginError,
    ) -> Result<(ObjectMeta, Source), OriginError> {
        let count = |result: &str| {
            self.metrics
                .preload_hint_holds
                .with_label_values(&[result])
                .inc()
        };
        let Ok(_held) = self.hints.held.try_acquire() else {
            count("busy");
            return Err(missing);
        };
        let deadline = tokio::time::Instant::now() + hints::HOLD;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(hints::STEP).await;
            match self.lookup(key, class).await {
                Err(e) if e.kind == ErrorKind::NotFound => continue,
                Ok(found) => {
                    count("ready");
                    return Ok(found);
                }
                Err(failed) => return Err(failed),
            }
        }
        count("timeout");
        Err(missing)
    }

    /// Metadata, plus the bytes of manifests small enough to read whole (one store request either way).
    async fn lookup(
        &self,
        key: &str,
        class: ObjectClass,
    ) -> Result<(ObjectMeta, Source), OriginError> {
        let result = if class == ObjectClass::Manifest {
            self.store
                .read_small(key, self.cache_control.manifest_sniff_limit_bytes)
                .await
                .map(|(meta, bytes)| match bytes {
                    Some(bytes) => (meta, Source::Buffered(bytes)),
                    None => (meta, Source::Store),
                })
        } else {
            self.store.head(key).await.map(|meta| (meta, Source::Store))
        };
        result.map_err(|(err, cause)| self.store_failure(err, &cause))
    }

    async fn body(
        &self,
        key: &str,
        meta: &ObjectMeta,
        source: Source,
        part: Option<ByteRange>,
    ) -> Result<Body, OriginError> {
        match source {
            Source::Buffered(bytes) => {
                let bytes = match part {
                    // The range was resolved against the stored size; a body that is not that size changed
                    // under us.
                    Some(r) => match bytes.get(r.start as usize..=r.end as usize) {
                        Some(_) => bytes.slice(r.start as usize..=r.end as usize),
                        None => {
                            return Err(OriginError::new(
                                ErrorKind::StoreUnavailable,
                                "the object changed during the request",
                            ));
                        }
                    },
                    None => bytes,
                };
                Ok(shared::body::full(bytes))
            }
            Source::Store => {
                let stream = self
                    .store
                    .stream(key, part, meta.e_tag.clone())
                    .await
                    .map_err(|(err, cause)| self.store_failure(err, &cause))?;
                let metrics = Arc::clone(&self.metrics);
                let key = key.to_string();
                let frames = stream.map(move |chunk| {
                    chunk.map(Frame::data).inspect_err(|e| {
                        metrics.store_errors.with_label_values(&["stream_aborted"]).inc();
                        tracing::warn!(key = %key, error = %e, "store read failed mid-body; response aborted");
                    })
                });
                Ok(StreamBody::new(frames).boxed_unsync())
            }
        }
    }

    /// The response for an error on `path`: [`error_response`], and a short lifetime for a segment that is not
    /// there (yet).
    pub fn error_response(&self, path: &str, err: &OriginError) -> Response<Body> {
        let mut response = error_response(err);
        if err.kind == ErrorKind::NotFound
            && shared::media::classify(path).class == ObjectClass::Segment
            && let Ok(value) = HeaderValue::from_str(&self.cache_control.segment_not_found)
        {
            response.headers_mut().insert(header::CACHE_CONTROL, value);
        }
        response
    }

    fn cache_control_for(&self, class: ObjectClass, source: &Source) -> String {
        let cc = &self.cache_control;
        match class {
            ObjectClass::Segment => cc.segment.clone(),
            ObjectClass::Other => cc.other.clone(),
            ObjectClass::Manifest => {
                let liveness = match source {
                    Source::Buffered(bytes) => {
                        shared::media::manifest_liveness(&String::from_utf8_lossy(bytes))
                    }
                    Source::Store => Liveness::Vod,
                };
                match liveness {
                    Liveness::Vod => cc.vod_manifest.clone(),
                    Liveness::Live { max_age_secs } => {
                        format!(
                            "public, max-age={}",
                            max_age_secs.unwrap_or(cc.live_manifest_max_age_secs)
                        )
                    }
                }
            }
        }
    }

    /// Counts and logs a store failure; the client gets the mapped error only.
    fn store_failure(&self, err: OriginError, cause: &object_store::Error) -> OriginError {
        if err.is_store_error() {
            self.metrics
                .store_errors
                .with_label_values(&[err.label()])
                .inc();
            tracing::warn!(error = %cause, status = err.status().as_u16(), "store request failed");
        }
        err
    }
}

/// The response for an error: its status, a one-line reason, never cached.
pub fn error_response(err: &OriginError) -> Response<Body> {
    let mut response = Response::new(text_body(&format!("{}\n", err.reason)));
    *response.status_mut() = err.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if err.kind == ErrorKind::MethodNotAllowed {
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    if err.kind == ErrorKind::StoreUnavailable {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if err.kind != ErrorKind::NotFound {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

fn empty() -> Body {
    shared::body::empty()
}

pub fn text_body(text: &str) -> Body {
    shared::body::text(text)
}

fn internal(e: http::Error) -> OriginError {
    OriginError::new(
        ErrorKind::Internal,
        format!("cannot build the response: {e}"),
    )
}
