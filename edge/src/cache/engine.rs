//! The cache engine: one type that owns the storage, the in-flight fills and their coalescing, variants, bans,
//! hit-for-pass marks and retention. The pipeline asks it to look a request up, to fill or revalidate a version,
//! and to purge; it never touches the storage itself.

use std::collections::HashMap;
use std::io;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Response};
use shared::serve::on_drop;
use tokio::sync::Semaphore;

use super::bans::{Ban, BanKind, Bans, Verdict};
use super::fill::{Fill, FillError, FillHead, Fills, Handoff, Subscriber, concat};
use super::freshness::{Lifetime, NotStored, Policy, decide, joined, ttl_param};
use super::key::CacheKey;
use super::meta::{ObjectMeta, new_generation, unix_millis};
use super::storage::CacheStorage;
use super::vary::{apply_variant, variant_values, vary_fields};
use crate::clock::Clock;
use crate::error::EdgeError;
use crate::fields::{field_text, put, stored_response};
use crate::metrics::EdgeMetrics;
use crate::status::{CacheStatus, Fwd};
use crate::upstream::{Upstream, parse_content_range};

/// The cache: storage, fills, bans and marks, shared by every request.
pub struct Engine {
    storage: Arc<dyn CacheStorage>,
    fills: Fills,
    fill_permits: Semaphore,
    /// Fills waiting for a slot, and how many may wait.
    fills_waiting: AtomicUsize,
    max_waiting_fills: usize,
    /// `cache.max_fills` as applied (the slots `fill_permits` started with).
    max_fills: usize,
    /// The longest a whole fill may take.
    fill_deadline: Duration,
    upstream: Upstream,
    slice_bytes: u64,
    metrics: Arc<EdgeMetrics>,
    /// How lifetimes are computed (targeted fields, heuristics, negative caching, stale defaults).
    policy: Policy,
    max_variants: usize,
    retention_ms: u64,
    pub bans: Arc<Bans>,
    /// URLs whose last response was not storable, with when that expires (unix ms) and why: requests for them
    /// go straight upstream for a while instead of through a fill first ("hit-for-pass").
    pass_marks: Mutex<HashMap<String, (u64, &'static str)>>,
    /// Objects whose upstream failed when last asked: until when it is not asked again (unix ms), and how many
    /// failures in a row (the back-off doubles with each).
    failing: Mutex<HashMap<String, (u64, u32)>>,
    clock: Arc<Clock>,
}

/// What an [`Engine`] is built from.
pub struct EngineSetup {
    pub storage: Arc<dyn CacheStorage>,
    pub upstream: Upstream,
    pub slice_bytes: u64,
    pub max_fills: usize,
    pub fill_deadline: Duration,
    pub metrics: Arc<EdgeMetrics>,
    pub policy: Policy,
    pub max_variants: usize,
    pub retention_secs: u64,
    pub bans: Arc<Bans>,
    pub clock: Arc<Clock>,
}

/// Response fields whose values are tags for purging (space- or comma-separated).
const TAG_FIELDS: [&str; 2] = ["surrogate-key", "cache-tag"];

/// The first back-off after an upstream failure for an object; it doubles with each failure in a row.
const FIRST_BACKOFF_MS: u64 = 1_000;
/// The longest back-off.
const MAX_BACKOFF_MS: u64 = 30_000;

/// How long a URL whose response was not storable is passed straight upstream.
const PASS_MARK_MS: u64 = 30_000;
/// URLs remembered as not storable, at most.
const MAX_PASS_MARKS: usize = 100_000;

/// Before an insert into a bounded map of marks: once it holds [`SWEEP_MARKS_AT`] entries, drops those `live`
/// says are over, and if it is still full ([`MAX_PASS_MARKS`]) clears it. Expired marks of URLs never asked for
/// again (cache-busting queries, one-off paths) would otherwise stay until the map filled.
fn make_room<V>(marks: &mut HashMap<String, V>, key: &str, live: impl Fn(&V) -> bool) {
    let len = marks.len();
    let due = len >= MAX_PASS_MARKS || (len >= SWEEP_MARKS_AT && len.is_power_of_two());
    // Only a new key grows the map (and so sweeps at most once per size reached).
    if !due || marks.contains_key(key) {
        return;
    }
    marks.retain(|_, v| live(v));
    if marks.len() >= MAX_PASS_MARKS {
        marks.clear();
    }
}

/// Entries a map of marks holds before expired ones are swept (again at each power of two past it).
const SWEEP_MARKS_AT: usize = 1024;

/// The largest body of a whole (non-200) response that is stored.
const MAX_WHOLE_BODY_BYTES: usize = 64 * 1024;

/// The fills of the slices after the first that one upstream response carries, in order. Each is finished when
/// its slice is stored; those left when the response fails (or the fill is dropped) are failed, and every one
/// leaves the registry.
struct LaterSlices<'a> {
    fills: &'a Fills,
    /// Fill key and fill of each slice not finished yet, the next first.
    pending: std::collections::VecDeque<(super::key::FillKey, Arc<Fill>)>,
}

impl<'a> LaterSlices<'a> {
    fn register(
        fills: &'a Fills,
        key: &CacheKey,
        meta: &Arc<ObjectMeta>,
        indexes: std::ops::RangeInclusive<u64>,
    ) -> Self {
        let mut pending = std::collections::VecDeque::new();
        for index in indexes {
            let fill_key = key.slice_fill(meta.generation, index);
            // A new version's key: nobody else can have started a fill under it.
            let (fill, _) = fills.join_or_start(fill_key.as_str());
            fill.publish_head(Ok(FillHead::Slice(Arc::clone(meta))));
            pending.push_back((fill_key, fill));
        }
        LaterSlices { fills, pending }
    }

    /// The fill of the next slice to receive.
    fn next(&self) -> Option<Arc<Fill>> {
        self.pending.front().map(|(_, fill)| Arc::clone(fill))
    }

    /// The next slice is stored (or failed): its fill ends and leaves the registry.
    fn finish_next(&mut self, result: Result<(), FillError>) {
        if let Some((fill_key, fill)) = self.pending.pop_front() {
            self.fills.remove(fill_key.as_str());
            fill.finish(result);
        }
    }

    fn fail_all(&mut self, error: &FillError) {
        while !self.pending.is_empty() {
            self.finish_next(Err(error.clone()));
        }
    }
}

impl Drop for LaterSlices<'_> {
    fn drop(&mut self) {
        self.fail_all(&FillError::Body(
            "the response carrying this slice failed before it".into(),
        ));
    }
}

impl Engine {
    pub fn new(setup: EngineSetup) -> Self {
        Engine {
            storage: setup.storage,
            fills: Fills::new(),
            fill_permits: Semaphore::new(setup.max_fills),
            fills_waiting: AtomicUsize::new(0),
            max_waiting_fills: setup.max_fills,
            max_fills: setup.max_fills,
            fill_deadline: setup.fill_deadline,
            upstream: setup.upstream,
            slice_bytes: setup.slice_bytes,
            metrics: setup.metrics,
            policy: setup.policy,
            max_variants: setup.max_variants,
            retention_ms: setup.retention_secs.saturating_mul(1000),
            bans: setup.bans,
            pass_marks: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
            clock: setup.clock,
        }
    }

    /// The clock every decision reads.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn storage(&self) -> &Arc<dyn CacheStorage> {
        &self.storage
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The targeted cache-control fields (RFC 9213) this cache obeys: they are for it, not for clients.
    pub fn targeted_fields(&self) -> &[HeaderName] {
        &self.policy.targeted_fields
    }

    pub fn slice_bytes(&self) -> u64 {
        self.slice_bytes
    }

    pub(crate) async fn lookup(
        &self,
        primary: &CacheKey,
        request: &HeaderMap,
        now: SystemTime,
    ) -> Found {
        let Some(meta) = self.lookup_record(primary, now).await else {
            return Found {
                key: primary.clone(),
                meta: None,
                miss_fwd: Fwd::UriMiss,
                variant: None,
            };
        };
        if meta.vary.is_empty() {
            return Found {
                key: primary.clone(),
                meta: Some(meta),
                miss_fwd: Fwd::UriMiss,
                variant: None,
            };
        }
        let values = variant_values(&meta.vary, request);
        if values == meta.variant {
            return Found {
                key: primary.clone(),
                meta: Some(meta),
                miss_fwd: Fwd::UriMiss,
                variant: Some(values),
            };
        }
        let key = primary.variant(&values);
        let variant = self
            .lookup_record(&key, now)
            .await
            .filter(|v| v.variant == values && v.vary == meta.vary);
        Found {
            key,
            meta: variant,
            miss_fwd: Fwd::VaryMiss,
            variant: Some(values),
        }
    }

    async fn lookup_record(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<ObjectMeta>> {
        let cached = self.storage.lookup_meta(key).await;
        let result = cached.as_ref().map_or("miss", |(_, tier)| tier.label());
        self.metrics
            .lookups
            .with_label_values(&["meta", result])
            .inc();
        self.record_in_force(key, cached?.0, now)
    }

    /// A stored record as it may be used at `now`: gone past its retention or under a dropping ban (and then
    /// removed), expired by a stale ban.
    fn record_in_force(
        &self,
        key: &CacheKey,
        mut meta: Arc<ObjectMeta>,
        now: SystemTime,
    ) -> Option<Arc<ObjectMeta>> {
        let now_ms = unix_millis(now);
        if meta.confirmed_ms.saturating_add(self.retention_ms) < now_ms {
            self.storage.remove(key);
            return None;
        }
        match self
            .bans
            .verdict(key.as_str(), &meta.tags, meta.confirmed_ms)
        {
            Verdict::Keep => Some(meta),
            Verdict::Stale(at_ms) => {
                self.metrics.ban_matches.with_label_values(&["stale"]).inc();
                Arc::make_mut(&mut meta).expire(UNIX_EPOCH + Duration::from_millis(at_ms));
                Some(meta)
            }
            Verdict::Drop => {
                self.metrics.ban_matches.with_label_values(&["drop"]).inc();
                self.storage.remove(key);
                None
            }
        }
    }

    /// Why requests for `key` go straight upstream, while its last response's "not storable" mark lasts.
    pub(crate) fn pass_mark(&self, key: &CacheKey, now: SystemTime) -> Option<&'static str> {
        let marks = self.pass_marks.lock().unwrap_or_else(|e| e.into_inner());
        if marks.is_empty() {
            return None;
        }
        let key = key.to_string();
        marks
            .get(&key)
            .filter(|(until, _)| *until > unix_millis(now))
            .map(|(_, detail)| *detail)
    }

    /// Remembers for [`PASS_MARK_MS`] that `key`'s response was not storable (the set is bounded: expired marks
    /// are swept as it grows, and when it is full of live ones it is cleared, which costs only a fill attempt
    /// per URL).
    pub(crate) fn mark_pass(&self, key: &CacheKey, detail: &'static str, now: SystemTime) {
        let now = unix_millis(now);
        let mut marks = self.pass_marks.lock().unwrap_or_else(|e| e.into_inner());
        let key = key.to_string();
        make_room(&mut marks, &key, |(until, _)| *until > now);
        marks.insert(key, (now + PASS_MARK_MS, detail));
    }

    /// How many URLs are marked to pass and how many back off after upstream failures (for `/metrics`).
    pub fn mark_counts(&self) -> (usize, usize) {
        let passing = self
            .pass_marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner()).len();
        (passing, failing)
    }

    /// Whether the upstream failed for `key` so recently that it is not asked again yet.
    pub(crate) fn backing_off(&self, key: &CacheKey, now: SystemTime) -> bool {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        !failing.is_empty()
            && failing
                .get(key.as_str())
                .is_some_and(|(until, _)| *until > unix_millis(now))
    }

    /// Records how the upstream answered a fill or revalidation of `key`: a failure starts or doubles its
    /// back-off (1 s, 2 s, 4 s … at most [`MAX_BACKOFF_MS`]), a success ends it. The map is bounded: when full
    /// it is cleared, which costs at most one more upstream request per object.
    pub(crate) fn note_upstream(&self, key: &CacheKey, failed: bool, now: SystemTime) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            if !failing.is_empty() {
                failing.remove(key.as_str());
            }
            return;
        }
        let at = unix_millis(now);
        // A key's failure count matters until a back-off could still be running from it.
        make_room(&mut failing, key.as_str(), |(until, _)| {
            until.saturating_add(MAX_BACKOFF_MS) > at
        });
        let (until, failures) = failing.entry(key.as_str().to_string()).or_insert((0, 0));
        *failures = failures.saturating_add(1);
        let backoff = (FIRST_BACKOFF_MS << (*failures - 1).min(16)).min(MAX_BACKOFF_MS);
        *until = unix_millis(now) + backoff;
    }

    fn forget_pass_mark(&self, key: &CacheKey) {
        let mut marks = self.pass_marks.lock().unwrap_or_else(|e| e.into_inner());
        marks.remove(&key.to_string());
    }

    /// Where slice `index` of a stored version comes from: the cache, or a (possibly shared) fill. The status is
    /// `None` for a cache hit, `Miss`/`Coalesced` for a fill.
    pub(crate) async fn slice_source(
        self: &Arc<Self>,
        upstream: &str,
        key: &CacheKey,
        meta: &Arc<ObjectMeta>,
        index: u64,
    ) -> Result<(SliceSource, Option<CacheStatus>), FillError> {
        if let Some((bytes, tier)) = self.cached_slice(key, meta, index).await {
            self.metrics
                .lookups
                .with_label_values(&["slice", tier.label()])
                .inc();
            return Ok((SliceSource::Cached(bytes), None));
        }
        self.metrics
            .lookups
            .with_label_values(&["slice", "miss"])
            .inc();
        let target = FillTarget::Known(Arc::clone(meta));
        let fields = variant_fields(&meta.variant);
        let (fill, started) = self.join_fill(upstream, key, index, target, fields);
        let mut subscriber = fill.subscribe();
        match subscriber.head().await? {
            FillHead::Slice(_) | FillHead::Refreshed(_) => {
                let (fwd, ttl) = (
                    Fwd::UriMiss,
                    ttl_param(meta.ttl_secs, meta.age(self.clock.now())),
                );
                let status = if started {
                    CacheStatus::Miss { fwd, ttl }
                } else {
                    CacheStatus::Coalesced { fwd, ttl }
                };
                Ok((SliceSource::Filling(subscriber), Some(status)))
            }
            FillHead::NotStorable { status, .. } => Err(FillError::Upstream {
                timeout: false,
                message: format!("the upstream answered {status} for a slice of a cached object"),
            }),
        }
    }

    /// Slice `index` of a stored version as the storage holds it, when it is whole: a slice of another length
    /// (a disk tier that lost or mangled part of it) is never served; it is fetched again, and counted.
    async fn cached_slice(
        &self,
        key: &CacheKey,
        meta: &ObjectMeta,
        index: u64,
    ) -> Option<(Bytes, super::storage::Tier)> {
        let (bytes, tier) = self.storage.read_slice(key, meta.generation, index).await?;
        let expected = match meta.total_len {
            0 => 0,
            _ => meta.slicing().span(index).len(),
        };
        if bytes.len() as u64 == expected {
            return Some((bytes, tier));
        }
        self.metrics
            .lookups
            .with_label_values(&["slice", "wrong_length"])
            .inc();
        tracing::warn!(key = %key, slice = index, stored = bytes.len(), expected, "a cached slice has the wrong length; fetching it again");
        None
    }

    /// Whether every slice in `indexes` of a stored version is held (an empty range is: a one-slice answer
    /// costs no lookup).
    pub(crate) fn holds_all(
        &self,
        key: &CacheKey,
        meta: &ObjectMeta,
        mut indexes: std::ops::RangeInclusive<u64>,
    ) -> bool {
        indexes.all(|index| self.storage.contains_slice(key, meta.generation, index))
    }

    /// Starts the revalidation of a stale version in the background (RFC 5861 `stale-while-revalidate`),
    /// unless one is already running.
    pub(crate) fn revalidate_in_background(
        self: &Arc<Self>,
        upstream: &str,
        key: &CacheKey,
        stale: &Arc<ObjectMeta>,
        fields: HeaderMap,
    ) {
        let target = FillTarget::Revalidate(Arc::clone(stale));
        let _ = self.join_fill(upstream, key, 0, target, fields);
    }

    /// GET `key`'s path from `upstream` with `headers`, counted in the upstream metrics.
    async fn upstream_get(
        &self,
        upstream: &str,
        key: &CacheKey,
        headers: HeaderMap,
    ) -> Result<Response<hyper::body::Incoming>, FillError> {
        let (response, took) = self
            .upstream
            .request(
                &Method::GET,
                upstream,
                key.path_and_query(),
                headers,
                Bytes::new(),
            )
            .await?;
        let class = shared::metrics::status_class(response.status().as_u16());
        self.metrics
            .upstream_requests
            .with_label_values(&[class])
            .inc();
        self.metrics.upstream_latency.observe(took.as_secs_f64());
        Ok(response)
    }

    /// Starts slice `index` in the background if it is neither cached nor being filled (read-ahead while a
    /// client streams the slice before it).
    pub(crate) fn read_ahead(
        self: &Arc<Self>,
        upstream: &str,
        key: &CacheKey,
        meta: &Arc<ObjectMeta>,
        index: u64,
    ) {
        if self
            .fills
            .get(key.slice_fill(meta.generation, index).as_str())
            .is_some()
        {
            return;
        }
        let (engine, upstream, key, meta) = (
            Arc::clone(self),
            upstream.to_string(),
            key.clone(),
            Arc::clone(meta),
        );
        tokio::spawn(async move {
            if !engine.storage.contains_slice(&key, meta.generation, index) {
                let fields = variant_fields(&meta.variant);
                let target = FillTarget::Known(meta);
                let _ = engine.join_fill(&upstream, &key, index, target, fields);
            }
        });
    }

    /// The fills as prefetch's budget weighs them: running, queued, and the slots there are.
    pub(crate) fn load(&self) -> crate::prefetch::budget::Load {
        let free = self.fill_permits.available_permits();
        crate::prefetch::budget::Load {
            fills_in_flight: self.max_fills.saturating_sub(free),
            fills_waiting: self.fills_waiting.load(Ordering::Relaxed),
            max_fills: self.max_fills,
        }
    }

    /// Whether a fill of slice `index` of a new object (or variant) under `key` is running.
    pub(crate) fn filling_new(&self, key: &CacheKey, index: u64) -> bool {
        self.fills.get(key.new_fill(index).as_str()).is_some()
    }

    /// Slice `index` of a stored version, for prefetch: cached already, or the fill that brings it — started
    /// now, or already running (a demand fill is joined, never raced).
    pub(crate) fn warm_slice(
        self: &Arc<Self>,
        upstream: &str,
        key: &CacheKey,
        meta: &Arc<ObjectMeta>,
        index: u64,
    ) -> Warm {
        if self.storage.contains_slice(key, meta.generation, index) {
            return Warm::Cached;
        }
        if let Some(fill) = self
            .fills
            .get(key.slice_fill(meta.generation, index).as_str())
        {
            return Warm::Running(fill);
        }
        let fields = variant_fields(&meta.variant);
        let target = FillTarget::Known(Arc::clone(meta));
        match self.join_fill(upstream, key, index, target, fields) {
            (fill, true) => Warm::Started(fill),
            (fill, false) => Warm::Running(fill),
        }
    }

    /// Joins the fill of `target`'s slice `index` or starts it with these request `fields`; `true` when this
    /// call started it. Every request for the same thing meets in one fill (the fill's key is the cache key's).
    pub(crate) fn join_fill(
        self: &Arc<Self>,
        upstream: &str,
        key: &CacheKey,
        index: u64,
        target: FillTarget,
        fields: HeaderMap,
    ) -> (Arc<Fill>, bool) {
        let fill_key = match &target {
            FillTarget::Known(meta) => key.slice_fill(meta.generation, index),
            FillTarget::New { .. } => key.new_fill(index),
            FillTarget::Revalidate(stale) => key.revalidation_fill(stale.generation),
        };
        let (fill, started) = self.fills.join_or_start(fill_key.as_str());
        if !started {
            self.metrics.fill_waiters.inc();
            return (fill, false);
        }
        let (engine, fill_for_task, upstream, key) = (
            Arc::clone(self),
            Arc::clone(&fill),
            upstream.to_string(),
            key.clone(),
        );
        tokio::spawn(async move {
            // A slot, or a place in a bounded queue for one, or 503 (RFC 9110 15.6.4) at once.
            let permit = match engine.fill_permits.try_acquire() {
                Ok(permit) => Some(permit),
                Err(_)
                    if engine.fills_waiting.load(Ordering::Relaxed) >= engine.max_waiting_fills =>
                {
                    None
                }
                Err(_) => {
                    engine.fills_waiting.fetch_add(1, Ordering::Relaxed);
                    engine.metrics.fills_waiting.inc();
                    let permit = engine.fill_permits.acquire().await.ok();
                    engine.metrics.fills_waiting.dec();
                    engine.fills_waiting.fetch_sub(1, Ordering::Relaxed);
                    permit
                }
            };
            let result = match permit {
                None => Err(FillError::Overloaded),
                Some(_permit) => {
                    engine.metrics.fills_in_flight.inc();
                    let fill =
                        engine.fill_slice(&fill_for_task, &upstream, &key, index, target, fields);
                    // The whole fill has a deadline (the upstream's body has one per chunk besides), and a
                    // panic inside it still answers its waiters (and frees its key).
                    let deadline = engine.fill_deadline;
                    let result =
                        tokio::time::timeout(deadline, AssertUnwindSafe(fill).catch_unwind())
                            .await
                            .unwrap_or_else(|_| {
                                Ok(Err(FillError::Upstream {
                                    timeout: true,
                                    message: format!("the fill took longer than {deadline:?}"),
                                }))
                            })
                            .unwrap_or_else(|panic| {
                                let message = panic
                                    .downcast_ref::<&str>()
                                    .map(|s| s.to_string())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_default();
                                Err(FillError::Internal(message))
                            });
                    engine.metrics.fills_in_flight.dec();
                    result
                }
            };
            // Insert (inside fill_slice) → unregister → wake: a request arriving in between finds the slice cached.
            engine.fills.remove(fill_key.as_str());
            if let Err(e) = &result {
                let kind = EdgeError::from(e).upstream_label().unwrap_or("internal");
                engine
                    .metrics
                    .upstream_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::warn!(key = %key, slice = index, error = %e, "fill failed");
                if *e == FillError::ValidatorChanged {
                    engine.storage.remove(&key);
                }
            }
            fill_for_task.finish(result);
        });
        (fill, true)
    }

    /// Fetches slice `index` with a slice-aligned Range request (conditional when revalidating), publishes the
    /// head, streams chunks to the fill's subscribers, and inserts the slice (and, for a new version, its
    /// metadata) when it is complete. A 304 refreshes the stored version. A storable response of another
    /// status is read whole and stored as slice 0. An answer that may not be stored is handed, unread, to the
    /// request that started the fill.
    async fn fill_slice(
        &self,
        fill: &Arc<Fill>,
        upstream: &str,
        key: &CacheKey,
        index: u64,
        target: FillTarget,
        mut fields: HeaderMap,
    ) -> Result<(), FillError> {
        let known = match &target {
            FillTarget::Known(meta) => {
                if let Some((bytes, _)) = self.cached_slice(key, meta, index).await {
                    // Filled by a fill that ended between this request's lookup and its registration.
                    fill.publish_head(Ok(FillHead::Slice(Arc::clone(meta))));
                    fill.push(bytes);
                    return Ok(());
                }
                Some(Arc::clone(meta))
            }
            FillTarget::New { .. } => {
                // Stored by a fill that ended between this request's lookup and its registration: the request
                // found nothing, the fill it would have joined was gone, and the object is here now.
                // Not a request's lookup: not counted as one.
                let now = self.clock.now();
                if let Some((stored, _)) = self.storage.lookup_meta(key).await
                    && let Some(meta) = self.record_in_force(key, stored, now)
                    && meta.is_fresh(now)
                    && let Some((bytes, _)) = self.cached_slice(key, &meta, index).await
                {
                    fill.publish_head(Ok(FillHead::Slice(meta)));
                    fill.push(bytes);
                    return Ok(());
                }
                None
            }
            FillTarget::Revalidate(stale) => {
                match (&stale.etag, &stale.last_modified) {
                    (Some(etag), _) => put(&mut fields, header::IF_NONE_MATCH, etag),
                    (None, Some(date)) => put(&mut fields, header::IF_MODIFIED_SINCE, date),
                    (None, None) => {}
                }
                None
            }
        };
        let slice_bytes = known.as_ref().map_or(self.slice_bytes, |m| m.slice_bytes);
        // A new object's first fill may ask for a few slices at once (`slices::first_fill_slices`).
        let span = match &target {
            FillTarget::New { slices, .. } => (*slices).max(1),
            _ => 1,
        };
        // A client's range can start anywhere up to 2^64 - 1: no sum here may overflow.
        let start = index * slice_bytes;
        let end = match &known {
            Some(meta) => start.saturating_add(slice_bytes).min(meta.total_len) - 1,
            None => start.saturating_add(slice_bytes.saturating_mul(span) - 1),
        };
        let whole_stored = matches!(&target, FillTarget::Revalidate(stale) if stale.status != 200);
        let keep_errors = !matches!(
            &target,
            FillTarget::New {
                keep_errors: false,
                ..
            }
        );
        if !whole_stored {
            put(&mut fields, header::RANGE, &format!("bytes={start}-{end}"));
        }
        // The exchange is timed by the wall clock (the upstream's Date is compared with it); what is stored
        // is dated by the edge's clock.
        let request_time = self.clock.wall();
        let response = self.upstream_get(upstream, key, fields.clone()).await?;
        let status = response.status().as_u16();
        let response_time = self.clock.wall();
        let now = self.clock.now();
        if let FillTarget::Revalidate(stale) = &target {
            if status == 304 {
                let times = (request_time, response_time);
                return self.refresh(fill, key, stale, response.headers(), times, now);
            }
            if status >= 500 {
                // An upstream error, not a new version: the stored one stays, and stale-if-error may serve it
                // (RFC 9111 §4.3.3 lets a cache act as if the server had not answered).
                return Err(FillError::Upstream {
                    timeout: false,
                    message: format!("{upstream} answered {status}"),
                });
            }
            // A new answer: the stored version is replaced by it (or dropped, if it may not be stored).
            self.storage.remove(key);
        }
        let h = response.headers();
        let text = |name: HeaderName| field_text(h, &name);
        let lifetime = decide(&self.policy, status, h, false, request_time, response_time);
        let (total, body_start, body_end) = match status {
            206 => match text(header::CONTENT_RANGE)
                .as_deref()
                .and_then(parse_content_range)
            {
                // Exactly the range asked for (or its part up to the object's end): a shorter answer would be
                // stored as a short slice.
                Some((s, e, total)) if s == start && e == end.min(total - 1) => (total, s, e),
                other => {
                    let got = other.map_or("none".into(), |(s, e, t)| format!("{s}-{e}/{t}"));
                    return Err(FillError::Body(format!(
                        "a 206 for bytes {start}-{end} came with Content-Range {got}"
                    )));
                }
            },
            200 if index == 0 => {
                let Some(total) = text(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
                else {
                    // A length known only at its end (chunked) cannot be sliced: the answer is handed on to
                    // the request that asked, cut to its range, and not stored.
                    let handoff = known.is_none().then(|| Handoff::new(response));
                    fill.publish_head(Ok(FillHead::NotStorable {
                        status,
                        detail: "unknown-length",
                        remember: false,
                        response: handoff,
                    }));
                    return Ok(());
                };
                (
                    total,
                    0,
                    slice_bytes.saturating_mul(span).min(total).max(1) - 1,
                )
            }
            _ => {
                return match (known, lifetime) {
                    (None, Ok(lifetime)) if status != 200 && status != 206 && keep_errors => {
                        self.fill_whole(fill, key, status, response, lifetime, &fields, now)
                            .await
                    }
                    (known, lifetime) => {
                        let reason = lifetime.err();
                        // Only a new object's answer is handed on: a slice of a stored one is not an answer.
                        let handoff = known.is_none().then(|| Handoff::new(response));
                        fill.publish_head(Ok(FillHead::NotStorable {
                            status,
                            detail: reason.map_or("status", NotStored::as_str),
                            remember: reason.is_some_and(NotStored::is_never_shared),
                            response: handoff,
                        }));
                        Ok(())
                    }
                };
            }
        };
        let etag = text(header::ETAG);
        let mut alias_guard = None;
        let meta = match known {
            Some(meta) => {
                if meta.etag != etag || meta.total_len != total {
                    return Err(FillError::ValidatorChanged);
                }
                meta
            }
            None => {
                let lifetime = match lifetime {
                    Ok(lifetime) if total > 0 => lifetime,
                    result => {
                        let reason = result.err();
                        fill.publish_head(Ok(FillHead::NotStorable {
                            status,
                            detail: reason.map_or("empty", NotStored::as_str),
                            remember: reason.is_some_and(NotStored::is_never_shared),
                            response: Some(Handoff::new(response)),
                        }));
                        return Ok(());
                    }
                };
                let generation = new_generation(now);
                // Requests that find the new metadata before this slice is stored must join this fill, not
                // start a second one: register it under the version's fill key first.
                let alias = key.slice_fill(generation, index);
                self.fills.alias(alias.as_str(), fill);
                alias_guard = Some(on_drop(move || self.fills.remove(alias.as_str())));
                let mut meta = ObjectMeta {
                    content_type: text(header::CONTENT_TYPE),
                    etag,
                    ..ObjectMeta::new(generation, 200, total, slice_bytes)
                };
                self.describe(&mut meta, h, &lifetime, &fields, now);
                let meta = Arc::new(meta);
                self.store_meta(key, &meta).await;
                meta
            }
        };
        // The slices after the first that this response carries (a new object's first fill): each a fill of its
        // own, registered under the version's key before anyone can know the version, fed from this response.
        let last_index = index + (body_end - body_start) / slice_bytes;
        let mut later = LaterSlices::register(&self.fills, key, &meta, index + 1..=last_index);
        fill.publish_head(Ok(FillHead::Slice(Arc::clone(&meta))));
        let expected = body_end - body_start + 1;
        // The later slices' waiters learn why the response failed (a cancelled fill fails them on drop).
        let streamed = async {
            let mut received = 0u64;
            let mut body = response.into_body();
            // The slice being received, and the fill its chunks go to.
            let (mut current, mut current_fill) = (index, Arc::clone(fill));
            let mut slice_end = (current + 1) * slice_bytes - body_start;
            while received < expected {
                let Some(mut chunk) = self.upstream.next_chunk(&mut body).await? else {
                    break;
                };
                let room = expected - received;
                if chunk.len() as u64 > room {
                    if status == 206 {
                        return Err(FillError::Body(format!(
                            "more than the {expected} bytes announced"
                        )));
                    }
                    chunk.truncate(room as usize); // a 200 for a large object: keep the slices asked for only
                }
                while !chunk.is_empty() {
                    let in_slice = (slice_end.min(expected) - received).min(chunk.len() as u64);
                    if in_slice == 0 {
                        break; // every slice asked for is complete (and the chunk was cut to them)
                    }
                    let part = chunk.split_to(in_slice as usize);
                    received += part.len() as u64;
                    current_fill.push(part);
                    if received == slice_end.min(expected) {
                        self.storage.insert_slice(
                            key,
                            meta.generation,
                            current,
                            concat(&current_fill.chunks()),
                        );
                        self.metrics.slices_stored.inc();
                        if current == index {
                            // Unregister the alias only now that the slice is in the cache.
                            drop(alias_guard.take());
                        } else {
                            later.finish_next(Ok(()));
                        }
                        if let Some(next) = later.next() {
                            (current, current_fill) = (current + 1, next);
                            slice_end += slice_bytes;
                        }
                    }
                }
            }
            if received < expected {
                return Err(FillError::Body(format!(
                    "ended after {received} of {expected} bytes"
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = &streamed {
            later.fail_all(e);
        }
        streamed
    }

    /// A 304 for a stored version: its fields replace the stored ones and the freshness is computed from the
    /// result (RFC 9111 §3.2, §4.3.4); the slices stay. A 304 saying the response may no longer be stored drops
    /// the version (the requests waiting go upstream by themselves: a 304 has no body to give them).
    fn refresh(
        &self,
        fill: &Arc<Fill>,
        key: &CacheKey,
        stale: &ObjectMeta,
        head: &HeaderMap,
        (request_time, response_time): (SystemTime, SystemTime),
        now: SystemTime,
    ) -> Result<(), FillError> {
        // Each field the 304 carries replaces every stored line of it (§3.2).
        let mut merged = stored_head(stale);
        for name in head.keys() {
            merged.remove(name);
        }
        for (name, value) in head {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_RANGE {
                merged.append(name.clone(), value.clone());
            }
        }
        let lifetime = match decide(
            &self.policy,
            stale.status,
            &merged,
            false,
            request_time,
            response_time,
        ) {
            Ok(lifetime) => lifetime,
            Err(reason) => {
                self.storage.remove(key);
                fill.publish_head(Ok(FillHead::NotStorable {
                    status: 304,
                    detail: reason.as_str(),
                    remember: reason.is_never_shared(),
                    response: None,
                }));
                return Ok(());
            }
        };
        let text = |name: HeaderName| field_text(&merged, &name);
        let mut refreshed = ObjectMeta {
            cache_control: text(header::CACHE_CONTROL),
            last_modified: text(header::LAST_MODIFIED),
            headers: self.stored_fields(&merged, &lifetime),
            tags: tags(&merged),
            ..stale.clone()
        };
        refreshed.refresh(&lifetime, now);
        let refreshed = Arc::new(refreshed);
        self.storage.insert_meta(key, &refreshed);
        fill.publish_head(Ok(FillHead::Refreshed(refreshed)));
        Ok(())
    }

    /// Stores a small response of another status than 200 (404, 301, …) whole: its body becomes slice 0, stored
    /// before the head is published so that every waiter can read it.
    #[allow(clippy::too_many_arguments)]
    async fn fill_whole(
        &self,
        fill: &Arc<Fill>,
        key: &CacheKey,
        status: u16,
        response: Response<hyper::body::Incoming>,
        lifetime: Lifetime,
        fields: &HeaderMap,
        now: SystemTime,
    ) -> Result<(), FillError> {
        let (head, mut body) = response.into_parts();
        let mut chunks = Vec::new();
        let mut received = 0usize;
        while let Some(chunk) = self.upstream.next_chunk(&mut body).await? {
            received += chunk.len();
            if received > MAX_WHOLE_BODY_BYTES {
                // Too large to keep whole: the part read so far is lost, so waiters go upstream by themselves.
                fill.publish_head(Ok(FillHead::NotStorable {
                    status,
                    detail: "too-large",
                    remember: false,
                    response: None,
                }));
                return Ok(());
            }
            chunks.push(chunk);
        }
        let declared = head
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|len| len != received) {
            return Err(FillError::Body(format!(
                "ended after {received} of {} bytes",
                declared.unwrap_or_default()
            )));
        }
        let text = |name: HeaderName| field_text(&head.headers, &name);
        let mut meta = ObjectMeta {
            content_type: text(header::CONTENT_TYPE),
            etag: text(header::ETAG),
            ..ObjectMeta::new(
                new_generation(now),
                status,
                received as u64,
                self.slice_bytes,
            )
        };
        self.describe(&mut meta, &head.headers, &lifetime, fields, now);
        let meta = Arc::new(meta);
        let body = concat(&chunks);
        self.storage
            .insert_slice(key, meta.generation, 0, body.clone());
        self.store_meta(key, &meta).await;
        fill.publish_head(Ok(FillHead::Slice(meta)));
        fill.push(body);
        Ok(())
    }

    /// Fills a new version's metadata from its response head: freshness, stored fields, tags, and the variant
    /// it is (the normalised values of its `Vary` fields as sent upstream in `sent`).
    fn describe(
        &self,
        meta: &mut ObjectMeta,
        head: &HeaderMap,
        lifetime: &Lifetime,
        sent: &HeaderMap,
        now: SystemTime,
    ) {
        meta.last_modified = head
            .get(header::LAST_MODIFIED)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        meta.cache_control = joined(head, &header::CACHE_CONTROL);
        meta.headers = self.stored_fields(head, lifetime);
        meta.tags = tags(head);
        meta.vary = vary_fields(head);
        meta.variant = variant_values(&meta.vary, sent);
        meta.refresh(lifetime, now);
    }

    /// The fields of a response head kept with its stored version: less those `no-cache="…"` names and the
    /// targeted fields, which speak to this cache and are not passed on (RFC 9213 §2.1).
    fn stored_fields(&self, head: &HeaderMap, lifetime: &Lifetime) -> Vec<(String, String)> {
        let mut strip = lifetime.strip_fields.clone();
        strip.extend(
            self.policy
                .targeted_fields
                .iter()
                .map(|f| f.as_str().to_string()),
        );
        stored_response(head, &strip)
    }

    /// Stores a new version's metadata: under the URL's primary key, or, for a variant other than the primary
    /// record's, under the variant's key, listed on the primary record (the oldest beyond the cap dropped).
    pub(crate) async fn store_meta(&self, key: &CacheKey, meta: &Arc<ObjectMeta>) {
        let primary = key.primary();
        if meta.vary.is_empty() {
            self.storage.insert_meta(&primary, meta);
            return;
        }
        let current = self.storage.lookup_meta(&primary).await.map(|(m, _)| m);
        let Some(current) = current.filter(|c| c.vary == meta.vary && c.variant != meta.variant)
        else {
            self.storage.insert_meta(&primary, meta);
            return;
        };
        self.storage
            .insert_meta(&primary.variant(&meta.variant), meta);
        if !current.variants.contains(&meta.variant) {
            let mut current = (*current).clone();
            current.variants.push(meta.variant.clone());
            while current.variants.len() >= self.max_variants {
                let oldest = current.variants.remove(0);
                self.storage.remove(&primary.variant(&oldest));
            }
            self.storage.insert_meta(&primary, &Arc::new(current));
        }
    }

    /// A purge, recorded as a durable ban on `pattern` (saved for restarts); a URL purge (`url_key`) also
    /// lifts the URL's hit-for-pass mark and, unless soft, drops its stored version at once.
    pub(crate) async fn purge(
        &self,
        kind: BanKind,
        pattern: String,
        url_key: Option<&CacheKey>,
        soft: bool,
    ) -> io::Result<Ban> {
        if let Some(key) = url_key {
            self.forget_pass_mark(key);
            if !soft {
                self.storage.remove(key);
            }
        }
        let now_ms = unix_millis(self.clock.now());
        // One millisecond ahead: a version stored in the same millisecond, before the ban, is covered too.
        let ban = Ban {
            kind,
            pattern,
            at_ms: now_ms + 1,
            soft,
        };
        self.bans
            .add(ban.clone(), now_ms.saturating_sub(self.retention_ms))
            .await?;
        Ok(ban)
    }

    /// Invalidates a URL (RFC 9111 §4.4): its primary record and every variant listed on it are removed now,
    /// and a short-lived ban in memory covers a fill already under way. Nothing is written to disk: an API
    /// behind the edge may see thousands of POSTs.
    pub(crate) async fn invalidate(&self, key: &CacheKey) {
        let primary = key.primary();
        self.forget_pass_mark(&primary);
        if let Some((meta, _)) = self.storage.lookup_meta(&primary).await {
            for variant in &meta.variants {
                self.storage.remove(&primary.variant(variant));
            }
        }
        self.storage.remove(&primary);
        let now_ms = unix_millis(self.clock.now());
        self.bans
            .invalidate(primary.as_str().to_string(), now_ms + 1);
    }
}

/// What a lookup found.
pub(crate) struct Found {
    /// The URL's primary key, or the key of the variant the request selects.
    pub(crate) key: CacheKey,
    pub(crate) meta: Option<Arc<ObjectMeta>>,
    /// Why a miss is one: nothing for the URL, or not this variant.
    pub(crate) miss_fwd: Fwd,
    /// The variant's normalised `Vary` values, when the URL is known to vary.
    pub(crate) variant: Option<Vec<(String, String)>>,
}

/// What a fill fetches.
pub(crate) enum FillTarget {
    /// A slice of a stored version.
    Known(Arc<ObjectMeta>),
    /// A new object (or variant): `slices` from the first, in one request (see `slices::first_fill_slices`).
    /// `keep_errors` false: an error answer (a 404, a 410) is not stored as the object — for an object asked
    /// for before it exists (an LL-HLS hinted part), whose 404 must not answer the requests after it does.
    New { slices: u64, keep_errors: bool },
    /// The first slice of a stored version, asked for conditionally: a 304 keeps it, a 200 or 206 replaces it.
    Revalidate(Arc<ObjectMeta>),
}

/// A slice as prefetch finds it.
pub(crate) enum Warm {
    Cached,
    /// Its fill, started by the prefetch.
    Started(Arc<Fill>),
    /// Its fill, started by another request.
    Running(Arc<Fill>),
}

/// Where a slice's bytes come from.
pub(crate) enum SliceSource {
    Cached(Bytes),
    Filling(Subscriber),
}
/// A stored version's head as the upstream sent it (the fields a 304 may update, RFC 9111 §3.2).
fn stored_head(meta: &ObjectMeta) -> HeaderMap {
    let mut head = HeaderMap::new();
    for (name, value) in &meta.prepared().fields {
        head.append(name.clone(), value.clone());
    }
    head
}

/// The purge tags of a response (`Surrogate-Key` space-separated, `Cache-Tag` comma-separated).
fn tags(head: &HeaderMap) -> Vec<String> {
    let mut tags = Vec::new();
    for field in TAG_FIELDS {
        for value in head.get_all(field).iter().filter_map(|v| v.to_str().ok()) {
            for tag in value
                .split([' ', ','])
                .map(str::trim)
                .filter(|t| !t.is_empty())
            {
                if !tags.iter().any(|t| t == tag) {
                    tags.push(tag.to_string());
                }
            }
        }
    }
    tags
}

/// The request fields that select a stored variant, as sent upstream for its later slices.
fn variant_fields(values: &[(String, String)]) -> HeaderMap {
    let mut fields = HeaderMap::new();
    apply_variant(&mut fields, values);
    fields
}

#[cfg(test)]
mod mark_tests {
    use super::*;

    #[test]
    fn expired_marks_are_swept_as_the_map_grows_and_live_ones_kept() {
        let mut marks: HashMap<String, u64> = HashMap::new();
        // One-off URLs marked over time: marks older than 100 are over by the time 2,000 more arrive.
        for i in 0..10_000u64 {
            let key = format!("/bust?{i}");
            make_room(&mut marks, &key, |until| *until > i);
            marks.insert(key, i + 100);
        }
        assert!(
            marks.len() <= 2 * SWEEP_MARKS_AT,
            "{} marks kept",
            marks.len()
        );
        assert!(marks.contains_key("/bust?9999") && marks.contains_key("/bust?9950"));
        // Live marks are never swept; a map full of them is cleared rather than grown past the bound.
        let mut live: HashMap<String, u64> = HashMap::new();
        for i in 0..MAX_PASS_MARKS + 10 {
            let key = format!("/k{i}");
            make_room(&mut live, &key, |_| true);
            live.insert(key, 0);
        }
        assert!(live.len() <= MAX_PASS_MARKS, "{}", live.len());
        // Re-marking a key already there never sweeps.
        let mut one: HashMap<String, u64> = (0..SWEEP_MARKS_AT as u64)
            .map(|i| (format!("{i}"), 0))
            .collect();
        make_room(&mut one, "0", |_| false);
        assert_eq!(one.len(), SWEEP_MARKS_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::storage::{BoxFuture, Tier};

    /// Storage in a map, for the engine's own tests.
    #[derive(Default)]
    struct MapStorage {
        entries: Mutex<HashMap<String, Bytes>>,
        metas: Mutex<HashMap<String, Arc<ObjectMeta>>>,
    }

    impl CacheStorage for MapStorage {
        fn lookup_meta<'a>(
            &'a self,
            key: &'a CacheKey,
        ) -> BoxFuture<'a, Option<(Arc<ObjectMeta>, Tier)>> {
            let found = self.metas.lock().unwrap().get(&key.meta_key()).cloned();
            Box::pin(async move { found.map(|m| (m, Tier::Memory)) })
        }
        fn read_slice<'a>(
            &'a self,
            key: &'a CacheKey,
            generation: u64,
            index: u64,
        ) -> BoxFuture<'a, Option<(Bytes, Tier)>> {
            let found = self
                .entries
                .lock()
                .unwrap()
                .get(&key.slice_key(generation, index))
                .cloned();
            Box::pin(async move { found.map(|b| (b, Tier::Disk)) })
        }
        fn insert_meta(&self, key: &CacheKey, meta: &Arc<ObjectMeta>) {
            self.metas
                .lock()
                .unwrap()
                .insert(key.meta_key(), Arc::clone(meta));
        }
        fn insert_slice(&self, key: &CacheKey, generation: u64, index: u64, data: Bytes) {
            self.entries
                .lock()
                .unwrap()
                .insert(key.slice_key(generation, index), data);
        }
        fn contains_slice(&self, key: &CacheKey, generation: u64, index: u64) -> bool {
            self.entries
                .lock()
                .unwrap()
                .contains_key(&key.slice_key(generation, index))
        }
        fn remove(&self, key: &CacheKey) {
            self.metas.lock().unwrap().remove(&key.meta_key());
        }
        fn memory_usage(&self) -> u64 {
            0
        }
        fn close(&self) -> BoxFuture<'_, ()> {
            Box::pin(async {})
        }
    }

    fn engine(storage: Arc<MapStorage>) -> Arc<Engine> {
        let second = Duration::from_secs(1);
        Arc::new(Engine::new(EngineSetup {
            storage,
            upstream: Upstream::new(second, second, second, "test"),
            slice_bytes: 1000,
            max_fills: 4,
            fill_deadline: second,
            metrics: Arc::new(EdgeMetrics::new()),
            policy: Policy::default(),
            max_variants: 4,
            retention_secs: 3600,
            bans: Arc::new(Bans::open(None).unwrap()),
            clock: Arc::new(Clock::new(false)),
        }))
    }

    /// A request that found nothing, then found no fill to join because the one it would have joined had just
    /// stored the object and ended, starts a fill of a new object: that fill answers with what is stored now,
    /// not with a second upstream request (here an upstream that refuses connections would make it an error).
    #[tokio::test]
    async fn a_new_fill_started_just_after_another_stored_the_object_answers_from_the_cache() {
        let storage = Arc::new(MapStorage::default());
        let engine = engine(Arc::clone(&storage));
        let key = CacheKey::new("s", "/v1/titles/a", None);
        let now = engine.clock.now();
        let mut stored = ObjectMeta::new(9, 200, 600, 1000);
        stored.stored_at = unix_millis(now) / 1000;
        stored.confirmed_ms = unix_millis(now);
        stored.ttl_secs = 60;
        let stored = Arc::new(stored);
        storage.insert_meta(&key, &stored);
        storage.insert_slice(&key, 9, 0, Bytes::from(vec![7u8; 600]));
        let nowhere = "127.0.0.1:9";
        let target = FillTarget::New {
            slices: 1,
            keep_errors: true,
        };
        let (fill, started) = engine.join_fill(nowhere, &key, 0, target, HeaderMap::new());
        assert!(started);
        let mut subscriber = fill.subscribe();
        match subscriber.head().await {
            Ok(FillHead::Slice(meta)) => assert_eq!(meta.generation, 9),
            other => panic!("not the stored version: {:?}", other.map(|_| ())),
        }
        let chunk = subscriber.next_chunk().await.unwrap().unwrap();
        assert_eq!(chunk.len(), 600);
        assert!(subscriber.next_chunk().await.is_none());
        // Stale or absent, a new fill asks the upstream (here: refused).
        storage.remove(&key);
        let target = FillTarget::New {
            slices: 1,
            keep_errors: true,
        };
        let (fill, _) = engine.join_fill(nowhere, &key, 0, target, HeaderMap::new());
        assert!(fill.subscribe().head().await.is_err());
    }

    /// A slice the storage returns shorter or longer than its span (a damaged disk tier) is never served: it is
    /// fetched again (here from an upstream that refuses connections, so the answer is an error, not bytes).
    #[tokio::test]
    async fn a_cached_slice_of_the_wrong_length_is_fetched_again_not_served() {
        let storage = Arc::new(MapStorage::default());
        let engine = engine(Arc::clone(&storage));
        let key = CacheKey::new("s", "/v.mp4", None);
        let meta = Arc::new(ObjectMeta::new(7, 200, 2500, 1000));
        let nowhere = "127.0.0.1:9";
        for (index, stored) in [(0u64, 1000usize), (2, 500)] {
            storage.insert_slice(&key, 7, index, Bytes::from(vec![1u8; stored]));
        }
        let whole = engine.slice_source(nowhere, &key, &meta, 0).await;
        assert!(matches!(whole, Ok((SliceSource::Cached(b), None)) if b.len() == 1000));
        // The last slice spans 500 bytes: stored whole, it is served.
        let last = engine.slice_source(nowhere, &key, &meta, 2).await;
        assert!(matches!(last, Ok((SliceSource::Cached(b), None)) if b.len() == 500));
        // Damaged: slice 0 comes back 999 bytes long, slice 2 one byte too long.
        storage.insert_slice(&key, 7, 0, Bytes::from(vec![1u8; 999]));
        storage.insert_slice(&key, 7, 2, Bytes::from(vec![1u8; 501]));
        for index in [0, 2] {
            let refetched = engine.slice_source(nowhere, &key, &meta, index).await;
            assert!(
                matches!(refetched, Err(FillError::Upstream { .. })),
                "slice {index} was served from a damaged copy"
            );
        }
    }
}
