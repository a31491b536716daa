//! Answers from a stored version: preconditions (RFC 9110 §13), ranges (206/416), the stored header section,
//! `Age`, `Cache-Status`, CORS, and a body streamed slice by slice — cached slices as `Bytes` views, filling
//! ones chunk by chunk as they arrive (the slice stream). Also the edge's own answers: CORS preflights.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use shared::conditional::{self, Preconditions, Validators};
use shared::range::{self, ByteRange, RangeOutcome};

use super::{Again, Answer, Body, Canonical, Edge, Outcome, Served, empty, full, put};
use crate::cache::engine::{Engine, SliceSource};
use crate::cache::fill::{FillError, Subscriber};
use crate::cache::freshness::ttl_param;
use crate::cache::key::CacheKey;
use crate::cache::meta::ObjectMeta;
use crate::cache::slices::Slicing;
use crate::error::EdgeError;
use crate::status::{CacheStatus, Fwd};

pub(super) const ALLOWED_METHODS: &str = "GET, HEAD, OPTIONS, POST, PUT, PATCH, DELETE";

/// The fill a missing request started or joined for its first slice.
pub(super) struct Joined {
    pub status: CacheStatus,
    pub index: u64,
    pub subscriber: Subscriber,
}

impl Edge {
    /// Responds from a version's metadata: preconditions, range, headers, and a body streamed slice by slice.
    /// The cache status is the `joined` fill's when this request started or joined one for its first slice;
    /// otherwise whether the slices it needs are cached decides it.
    pub(super) async fn respond(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        key: CacheKey,
        meta: Arc<ObjectMeta>,
        joined: Option<Joined>,
        served: Served,
    ) -> Outcome {
        let now = self.engine.clock().now();
        let ttl = ttl_param(meta.ttl_secs, meta.age(now));
        let from_cache = match served {
            Served::Fresh => CacheStatus::Hit { ttl },
            Served::Revalidated(fwd) => CacheStatus::Revalidated { fwd, ttl },
            Served::Stale(reason) => CacheStatus::Stale {
                past: meta.staleness(now),
                reason,
            },
        };
        let prepared = meta.prepared();
        let validators = Validators {
            etag: meta.etag.as_deref(),
            last_modified: prepared.last_modified,
        };
        let text = |name: HeaderName| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let preconditions = Preconditions::from_headers(&parts.headers);
        let whole = meta.status != 200;
        // A stored non-2xx response is sent whole: preconditions and ranges apply to 2xx only (RFC 9110 §13.2.1).
        let range_header = text(header::RANGE).filter(|_| !whole);
        let outcome = if whole {
            conditional::Outcome::Proceed { apply_range: false }
        } else {
            conditional::evaluate(&preconditions, &validators, true, range_header.is_some())
        };
        let slicing = meta.slicing();
        let (http_status, part) = match outcome {
            conditional::Outcome::NotModified => (StatusCode::NOT_MODIFIED, None),
            conditional::Outcome::PreconditionFailed => (StatusCode::PRECONDITION_FAILED, None),
            conditional::Outcome::Proceed { apply_range } => {
                match range::evaluate(range_header.filter(|_| apply_range), meta.total_len) {
                    RangeOutcome::Full => (
                        StatusCode::from_u16(meta.status).unwrap_or(StatusCode::OK),
                        (meta.total_len > 0).then_some(ByteRange {
                            start: 0,
                            end: meta.total_len - 1,
                        }),
                    ),
                    RangeOutcome::Partial(r) => (StatusCode::PARTIAL_CONTENT, Some(r)),
                    RangeOutcome::Refused(e) => {
                        let status = joined.as_ref().map_or(from_cache, |j| j.status);
                        let refusal =
                            EdgeError::client(StatusCode::RANGE_NOT_SATISFIABLE, e.to_string());
                        let mut answer = self.error_answer(parts, refusal, status);
                        put(
                            answer.response.headers_mut(),
                            header::CONTENT_RANGE,
                            &range::unsatisfied_content_range(meta.total_len),
                        );
                        return Outcome::Answer(answer);
                    }
                }
            }
        };
        let sends_body = parts.method != Method::HEAD
            && (whole || matches!(http_status, StatusCode::OK | StatusCode::PARTIAL_CONTENT));
        let upstream = &request.site.upstream;

        // The first slice decides the cache status when this request did not fill; a hit that will fetch
        // later slices is a partial one (RFC 9211 `fwd=partial`).
        let mut first = None;
        let cache_status = match (joined.as_ref().map(|j| j.status), part) {
            (Some(status), _) => status,
            (None, Some(range)) if sends_body => {
                let index = slicing.index_of(range.start);
                match self.engine.slice_source(upstream, &key, &meta, index).await {
                    Ok((source, status)) => {
                        first = Some((index, source));
                        match (status, from_cache) {
                            (Some(status), _) => status,
                            (None, CacheStatus::Hit { ttl })
                                if !self.engine.holds_all(
                                    &key,
                                    &meta,
                                    index + 1..=*slicing.touched(range).end(),
                                ) =>
                            {
                                CacheStatus::Miss {
                                    fwd: Fwd::Partial,
                                    ttl,
                                }
                            }
                            (None, from_cache) => from_cache,
                        }
                    }
                    Err(FillError::ValidatorChanged) => {
                        return Outcome::RunAgain(Again::VersionChanged);
                    }
                    Err(e) => {
                        return Outcome::Answer(self.error_answer(
                            parts,
                            EdgeError::from(&e),
                            CacheStatus::Error,
                        ));
                    }
                }
            }
            (None, _) => from_cache,
        };
        if let (
            Some(Joined {
                index, subscriber, ..
            }),
            Some(range),
        ) = (joined, part)
            && slicing.touched(range).contains(&index)
            && first.is_none()
        {
            first = Some((index, SliceSource::Filling(subscriber)));
        }

        // Room for every field the answer gets (the stored ones, ours, CORS, CMSD, Alt-Svc): growing the map
        // as fields arrive rehashes it.
        let mut head = HeaderMap::with_capacity(prepared.fields.len() + 12);
        let headers = &mut head;
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        headers.insert(header::AGE, HeaderValue::from(meta.age(now)));
        for (name, value) in &prepared.fields {
            headers.append(name.clone(), value.clone());
        }
        super::add_cache_status(headers, cache_status.header_value(&self.name));
        self.cors_headers(parts, headers);
        let body = match (http_status, part) {
            (_, Some(range)) if whole => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len()));
                if sends_body {
                    let first = first.filter(|(index, _)| *index == 0);
                    self.body(upstream, key, meta, range, first)
                } else {
                    empty()
                }
            }
            (StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED, None) => empty(),
            (_, None) if whole => {
                put(headers, header::CONTENT_LENGTH, "0");
                empty()
            }
            (StatusCode::OK | StatusCode::PARTIAL_CONTENT, Some(range)) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(range.len()));
                if http_status == StatusCode::PARTIAL_CONTENT {
                    put(
                        headers,
                        header::CONTENT_RANGE,
                        &range.content_range(meta.total_len),
                    );
                }
                if sends_body {
                    let first_index = slicing.index_of(range.start);
                    let first = first.filter(|(index, _)| *index == first_index);
                    self.body(upstream, key, meta, range, first)
                } else {
                    empty()
                }
            }
            (StatusCode::OK, None) => {
                put(headers, header::CONTENT_LENGTH, "0");
                empty()
            }
            (StatusCode::PRECONDITION_FAILED, _) => {
                put(headers, header::CONTENT_TYPE, "text/plain; charset=utf-8");
                full("precondition failed\n")
            }
            _ => empty(),
        };
        let mut response = Response::new(body);
        *response.status_mut() = http_status;
        *response.headers_mut() = head;
        Outcome::Answer(Answer {
            response,
            cache_status,
            error: None,
            upstream_ms: None,
            route: None,
        })
    }

    /// The body for `range` of a version: one buffer when it lies in one cached slice (manifests, small
    /// segments: the protocol can then end the stream with its data), else the slices streamed in turn.
    fn body(
        &self,
        upstream: &str,
        key: CacheKey,
        meta: Arc<ObjectMeta>,
        range: ByteRange,
        first: Option<(u64, SliceSource)>,
    ) -> Body {
        let slicing = meta.slicing();
        if let Some((index, SliceSource::Cached(bytes))) = &first
            && slicing.touched(range) == (*index..=*index)
        {
            let cut = slicing.cut(*index, range);
            if bytes.len() >= cut.end {
                return shared::body::full(cut_of(bytes, cut));
            }
        }
        let engine = Arc::clone(&self.engine);
        SliceStream::new(engine, upstream, key, meta, range, first).into_body()
    }

    /// A CORS preflight for a configured site.
    pub(super) fn preflight(&self, parts: &Parts) -> Answer {
        let mut response = Response::new(empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        self.cors_headers(parts, headers);
        put(
            headers,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            ALLOWED_METHODS,
        );
        put(
            headers,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            "Range, If-None-Match, If-Modified-Since, If-Range",
        );
        put(headers, header::ACCESS_CONTROL_MAX_AGE, "86400");
        put(headers, header::ALLOW, ALLOWED_METHODS);
        Answer {
            response,
            cache_status: CacheStatus::Local,
            error: None,
            upstream_ms: None,
            route: None,
        }
    }

    /// The edge's CORS policy, when one is configured, replaces whatever the upstream said.
    pub(super) fn cors_headers(&self, parts: &Parts, headers: &mut HeaderMap) {
        if !self.cors.any && self.cors.origins.is_empty() {
            return;
        }
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        ] {
            headers.remove(name);
        }
        let allowed = if self.cors.any {
            Some(HeaderValue::from_static("*"))
        } else {
            parts
                .headers
                .get(header::ORIGIN)
                .filter(|origin| {
                    let origin = origin.as_bytes();
                    self.cors.origins.iter().any(|o| o.as_bytes() == origin)
                })
                .cloned()
        };
        if let Some(origin) = allowed {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(
                    "Content-Length, Content-Range, ETag, Age, Cache-Status, CMSD-Static, CMSD-Dynamic",
                ),
            );
            if !self.cors.any {
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
}

/// Cuts below this size are copied out of their cached slice rather than viewed in it.
const SMALL_CUT_BYTES: usize = 64 * 1024;

/// The part `cut` of a cached slice for a response. A view costs no copy, but keeps the whole slice (2 MiB by
/// default) alive for as long as the response is unsent — outside the cache's accounting, and for as long as a
/// client that never reads likes. A small part of a large slice is copied instead, so a 1-byte range pins one
/// byte.
fn cut_of(slice: &Bytes, cut: std::ops::Range<usize>) -> Bytes {
    if cut.len() < SMALL_CUT_BYTES && cut.len() * 4 < slice.len() {
        Bytes::copy_from_slice(&slice[cut])
    } else {
        slice.slice(cut)
    }
}

/// The body of a cached object's response: the needed part of each slice in turn, cached slices as `Bytes`
/// views, filling slices chunk by chunk as they arrive. A failed fill ends the stream with an error, which
/// aborts the response (never a short body passed off as complete).
struct SliceStream {
    engine: Arc<Engine>,
    upstream: String,
    key: CacheKey,
    meta: Arc<ObjectMeta>,
    slicing: Slicing,
    range: ByteRange,
    next: u64,
    last: u64,
    current: Option<(u64, SliceSource)>,
    /// Bytes of the current filling slice seen so far.
    offset: usize,
}

impl SliceStream {
    fn new(
        engine: Arc<Engine>,
        upstream: &str,
        key: CacheKey,
        meta: Arc<ObjectMeta>,
        range: ByteRange,
        first: Option<(u64, SliceSource)>,
    ) -> Self {
        let slicing = meta.slicing();
        let touched = slicing.touched(range);
        let next = if first.is_some() {
            touched.start() + 1
        } else {
            *touched.start()
        };
        SliceStream {
            engine,
            upstream: upstream.to_string(),
            key,
            meta,
            slicing,
            range,
            next,
            last: *touched.end(),
            current: first,
            offset: 0,
        }
    }

    fn into_body(self) -> Body {
        let stream = futures::stream::unfold(self, |mut s| async move {
            let item = s.next_bytes().await?;
            Some((item.map(Frame::data), s))
        });
        StreamBody::new(stream.boxed()).boxed_unsync()
    }

    async fn next_bytes(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            if self.current.is_none() {
                if self.next > self.last {
                    return None;
                }
                let index = self.next;
                self.next += 1;
                match self
                    .engine
                    .slice_source(&self.upstream, &self.key, &self.meta, index)
                    .await
                {
                    Ok((source, _)) => self.current = Some((index, source)),
                    Err(e) => return Some(Err(io::Error::other(e))),
                }
                self.offset = 0;
            }
            let (index, source) = self.current.as_mut().expect("set above");
            let index = *index;
            let cut = self.slicing.cut(index, self.range);
            match source {
                SliceSource::Cached(bytes) => {
                    let bytes = bytes.clone();
                    self.current = None;
                    if bytes.len() < cut.end {
                        return Some(Err(io::Error::other(format!(
                            "cached slice {index} is short"
                        ))));
                    }
                    return Some(Ok(cut_of(&bytes, cut)));
                }
                SliceSource::Filling(subscriber) => {
                    if self.offset == 0 && index < self.last {
                        self.engine
                            .read_ahead(&self.upstream, &self.key, &self.meta, index + 1);
                    }
                    match subscriber.next_chunk().await {
                        None => {
                            self.current = None;
                            if self.offset < cut.end {
                                return Some(Err(io::Error::other(format!(
                                    "slice {index} ended early"
                                ))));
                            }
                        }
                        Some(Err(e)) => return Some(Err(io::Error::other(e))),
                        Some(Ok(chunk)) => {
                            let (chunk_start, chunk_end) = (self.offset, self.offset + chunk.len());
                            self.offset = chunk_end;
                            if chunk_end >= cut.end {
                                self.current = None;
                            }
                            let (from, to) = (chunk_start.max(cut.start), chunk_end.min(cut.end));
                            if from < to {
                                return Some(Ok(chunk.slice(from - chunk_start..to - chunk_start)));
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `part` points into `whole`'s memory.
    fn shares(part: &Bytes, whole: &Bytes) -> bool {
        let range = whole.as_ptr_range();
        range.contains(&part.as_ptr())
    }

    #[test]
    fn small_parts_of_large_slices_are_copied_not_pinned() {
        let slice = Bytes::from(vec![7u8; 2 << 20]);
        let one_byte = cut_of(&slice, 100..101);
        assert_eq!(&one_byte[..], &[7]);
        assert!(
            !shares(&one_byte, &slice),
            "a 1-byte range pins its 2 MiB slice"
        );
        let large = cut_of(&slice, 0..(1 << 20));
        assert!(shares(&large, &slice), "a large part is a view, not a copy");
        let manifest = Bytes::from(vec![1u8; 4000]);
        let whole = cut_of(&manifest, 0..4000);
        assert!(
            shares(&whole, &manifest),
            "a small object's whole slice is a view"
        );
    }
}
