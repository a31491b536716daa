//! Going upstream for the cache: a fill of a new object (or variant), or a revalidation of a stored one, joined
//! with every other request for the same thing (one upstream request however many wait). The answer that comes
//! back is always used: a storable one streams to every waiter while it is stored; a 304 refreshes the stored
//! version; one that may not be stored streams to the request that asked for it (then the URL is marked
//! hit-for-pass); an upstream failure serves the stale version where RFC 5861 allows.

use std::sync::Arc;
use tokio::time::Instant;

use http::HeaderMap;
use http::header;
use http::request::Parts;
use hyper::body::Incoming;
use shared::range::{self, RangeOutcome};

use super::respond::Joined;
use super::{Again, Canonical, Edge, Outcome, Served};
use crate::cache::engine::{FillTarget, Found};
use crate::cache::fill::FillHead;
use crate::cache::freshness::ttl_param;
use crate::cache::slices::{first_fill_slices, first_slice_hint};
use crate::cache::vary::{apply_variant, variant_values};
use crate::error::EdgeError;
use crate::fields::Purpose;
use crate::status::{CacheStatus, Fwd, StaleReason};

/// Request fields sent (normalised) when a URL is not yet known to vary: the ones responses most often vary
/// on, so that the first response is already the variant its request selects.
const NEGOTIATION_FIELDS: [&str; 4] = ["accept-encoding", "accept-language", "accept", "origin"];

impl Edge {
    /// The fields a fill for this request sends upstream: the request's end-to-end fields (see `fields.rs`),
    /// with those the URL varies on (or, when that is not known yet, the usual negotiation fields) normalised.
    pub(super) fn fill_fields(
        &self,
        parts: &Parts,
        request: &Canonical<'_>,
        variant: Option<&[(String, String)]>,
    ) -> HeaderMap {
        let mut fields = self.upstream_fields(parts, request, Purpose::Fill);
        match variant {
            Some(values) => apply_variant(&mut fields, values),
            None => apply_variant(
                &mut fields,
                &variant_values(&NEGOTIATION_FIELDS.map(String::from), &parts.headers),
            ),
        }
        fields
    }

    /// Carries out a `Fill` or `Revalidate` plan.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        found: Found,
        revalidate: bool,
        fwd: Fwd,
        stale_if_error: bool,
    ) -> Outcome {
        let Found {
            key,
            meta: stored,
            variant,
            ..
        } = found;
        // An upstream that just failed for this object is not asked again until its back-off ends, while a
        // stale copy may answer (RFC 5861 stale-if-error): an origin brown-out costs it a request per
        // back-off period, not one per viewer.
        if let Some(stale) = stored.as_ref().filter(|_| stale_if_error)
            && self.engine.backing_off(&key, self.engine.clock().now())
        {
            let served = Served::Stale(StaleReason::IfError);
            let stale = Arc::clone(stale);
            return self.respond(parts, request, key, stale, None, served).await;
        }
        let fields = self.fill_fields(parts, request, variant.as_deref());
        let (target, index) = match (&stored, revalidate) {
            // A revalidation asks for the first slice: a 304 keeps the stored version, a 200 or 206 becomes the
            // new version's first slice.
            (Some(stored), true) => (FillTarget::Revalidate(Arc::clone(stored)), 0),
            _ => {
                let range_spec = parts
                    .headers
                    .get(header::RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| match range::parse(v) {
                        Ok(range::ParsedRange::Single(spec)) => Some(spec),
                        _ => None,
                    });
                let slice_bytes = self.engine.slice_bytes();
                let slices = first_fill_slices(range_spec, slice_bytes);
                let index = first_slice_hint(range_spec, slice_bytes);
                (
                    FillTarget::New {
                        slices,
                        keep_errors: true,
                    },
                    index,
                )
            }
        };
        let waited = Instant::now();
        let (fill, started) =
            self.engine
                .join_fill(&request.site.upstream, &key, index, target, fields);
        let mut subscriber = fill.subscribe();
        let head = subscriber.head().await;
        let upstream_ms = Some(waited.elapsed().as_secs_f64() * 1000.0);
        let with_time = |outcome: Outcome| match outcome {
            Outcome::Answer(mut answer) => {
                answer.upstream_ms = upstream_ms;
                Outcome::Answer(answer)
            }
            run_again => run_again,
        };
        let stale = stored.filter(|_| stale_if_error);
        let upstream_failed = match &head {
            // Only the upstream's failures back off and may be answered stale, not the edge's own limits.
            Err(e) => EdgeError::from(e).allows_stale(),
            // A 508 says the request looped (RFC 8586), not that the upstream is failing.
            Ok(FillHead::NotStorable { status, .. }) => *status >= 500 && *status != 508,
            Ok(_) => false,
        };
        if started {
            self.engine
                .note_upstream(&key, upstream_failed, self.engine.clock().now());
        }
        if upstream_failed && let Some(stale) = stale {
            let served = Served::Stale(StaleReason::IfError);
            return self.respond(parts, request, key, stale, None, served).await;
        }
        match head {
            Err(e) => with_time(Outcome::Answer(self.error_answer(
                parts,
                EdgeError::from(&e),
                CacheStatus::Error,
            ))),
            Ok(FillHead::Refreshed(meta)) => {
                let served = Served::Revalidated(fwd);
                with_time(self.respond(parts, request, key, meta, None, served).await)
            }
            Ok(FillHead::NotStorable {
                detail,
                remember,
                response,
                ..
            }) => {
                let pass = CacheStatus::Pass {
                    fwd,
                    detail: Some(detail),
                };
                // The answer this request caused is its own when it fits what the client asked for; a request
                // that joined another's fill, or one asking for other bytes, goes upstream by itself.
                let own = started
                    .then(|| response.and_then(|slot| slot.take()))
                    .flatten();
                let answer = match own.and_then(|response| fit_to_request(parts, response)) {
                    Some((response, cut)) => {
                        let mut answer = self.stream_upstream(parts, response, pass, None);
                        if let Some(cut) = cut {
                            answer = cut.apply(answer);
                        }
                        answer
                    }
                    None => self.pass(parts, request, pass).await,
                };
                if remember {
                    self.engine
                        .mark_pass(&key, detail, self.engine.clock().now());
                }
                with_time(Outcome::Answer(answer))
            }
            Ok(FillHead::Slice(meta)) => {
                if !meta.vary.is_empty()
                    && variant_values(&meta.vary, &parts.headers) != meta.variant
                {
                    // A coalesced fill brought another variant than this request selects.
                    return Outcome::RunAgain(Again::VariantChanged);
                }
                let ttl = ttl_param(meta.ttl_secs, meta.age(self.engine.clock().now()));
                let status = if started {
                    CacheStatus::Miss { fwd, ttl }
                } else {
                    CacheStatus::Coalesced { fwd, ttl }
                };
                // A whole response's body is slice 0, whatever slice the request started from.
                let index = if meta.status == 200 { index } else { 0 };
                let joined = Joined {
                    status,
                    index,
                    subscriber,
                };
                with_time(
                    self.respond(parts, request, key, meta, Some(joined), Served::Fresh)
                        .await,
                )
            }
        }
    }
}

/// The part of a `206` answer a client asked for, when it asked for less than the fill fetched.
pub(super) struct Cut {
    pub skip: u64,
    pub len: u64,
    pub content_range: Option<String>,
}

/// Whether an upstream answer to a fill can be given, as it is or cut, to the client whose request caused it:
/// the client's preconditions were not sent upstream, so a request with any is not answered this way; a 206
/// must cover the bytes the client asked for (all of them when it asked for no range).
fn fit_to_request(
    parts: &Parts,
    response: http::Response<Incoming>,
) -> Option<(http::Response<Incoming>, Option<Cut>)> {
    if crate::fields::PRECONDITIONS
        .iter()
        .any(|name| parts.headers.contains_key(name))
    {
        return None;
    }
    if response.status() != http::StatusCode::PARTIAL_CONTENT {
        // A 200 is the whole representation (a server may ignore Range); other statuses take no range.
        return Some((response, None));
    }
    let (start, end, total) = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::upstream::parse_content_range)?;
    let asked = parts
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let (want, partial) = match range::evaluate(asked, total) {
        RangeOutcome::Full => (
            range::ByteRange {
                start: 0,
                end: total - 1,
            },
            false,
        ),
        RangeOutcome::Partial(r) => (r, true),
        RangeOutcome::Refused(_) => return None,
    };
    if want.start < start || want.end > end {
        return None;
    }
    let cut = Cut {
        skip: want.start - start,
        len: want.len(),
        content_range: partial.then(|| want.content_range(total)),
    };
    Some((response, Some(cut)))
}

impl Cut {
    /// The answer with only the cut's bytes: 206 with its `Content-Range`, or 200 when the client asked for all.
    fn apply(self, answer: super::Answer) -> super::Answer {
        let super::Answer {
            response,
            cache_status,
            error,
            upstream_ms,
            route,
        } = answer;
        let (mut head, body) = response.into_parts();
        match &self.content_range {
            Some(content_range) => {
                head.status = http::StatusCode::PARTIAL_CONTENT;
                super::put(&mut head.headers, header::CONTENT_RANGE, content_range);
            }
            None => {
                head.status = http::StatusCode::OK;
                head.headers.remove(header::CONTENT_RANGE);
            }
        }
        head.headers
            .insert(header::CONTENT_LENGTH, http::HeaderValue::from(self.len));
        let body = if http_body::Body::is_end_stream(&body) {
            body
        } else {
            cut_body(body, self.skip, self.len)
        };
        super::Answer {
            response: http::Response::from_parts(head, body),
            cache_status,
            error,
            upstream_ms,
            route,
        }
    }
}

/// `len` bytes of `body` after the first `skip`; a body that ends before them fails (never a short body).
fn cut_body(body: super::Body, skip: u64, len: u64) -> super::Body {
    use http_body_util::BodyExt;
    let stream =
        futures::stream::unfold((body, skip, len), |(mut body, mut skip, left)| async move {
            if left == 0 {
                return None;
            }
            loop {
                match body.frame().await {
                    None => {
                        let error = std::io::Error::other("the upstream body ended early");
                        return Some((Err(error), (body, skip, 0)));
                    }
                    Some(Err(e)) => return Some((Err(e), (body, skip, 0))),
                    Some(Ok(frame)) => {
                        let Ok(mut data) = frame.into_data() else {
                            continue;
                        };
                        if skip >= data.len() as u64 {
                            skip -= data.len() as u64;
                            continue;
                        }
                        let _ = data.split_to(skip as usize);
                        data.truncate(data.len().min(left as usize));
                        let left = left - data.len() as u64;
                        return Some((Ok(hyper::body::Frame::data(data)), (body, 0, left)));
                    }
                }
            }
        });
    http_body_util::StreamBody::new(stream).boxed_unsync()
}
