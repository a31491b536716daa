//! Prefetch at the I/O rim. After a GET is answered ([`Edge::after_serving`]): a manifest's text teaches its
//! site's index its renditions (read from the cache once per stored version, never parsed on every request); a
//! single-file rendition's `sidx` is read once its file is asked for; and a media segment's next segments (the
//! player's CMCD `nor`/`nrr` first, then the index's next `k`) are warmed. A prefetch is an ordinary fill of the
//! segment's slices through the cache engine's coalescing, so a request for the segment while it runs joins it
//! (one upstream request), and it is started only when nothing of it is cached or filling, the edge's fills
//! leave room for demand, and the budget allows (`prefetch::budget`). What demand then uses, and what it never
//! asks for, is counted (`prefetch::ledger`); each prefetch writes an access-log line with `prefetch = true`.

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, header};
use shared::segments::{ByteRange, Segment};
use tokio::time::Instant;

use super::{Answer, Canonical, Edge};
use crate::cache::engine::{SliceSource, Warm};
use crate::cache::fill::{FillError, FillHead, Subscriber, concat};
use crate::cache::key::CacheKey;
use crate::cache::meta::ObjectMeta;
use crate::cache::storage::Valuer;
use crate::prefetch::budget::{Budget, Limits};
use crate::prefetch::ledger::{Ledger, Tally};
use crate::prefetch::{Index, from_cmcd};
use crate::status::CacheStatus;
use crate::viewers::{Tag, Viewers};

/// Slices one prefetch fills at most: a segment longer than this is warmed from its start.
const MAX_SLICES: u64 = 32;
/// The largest manifest read into the index.
const MAX_MANIFEST_BYTES: u64 = 8 << 20;
/// The largest `sidx` range read.
const MAX_SIDX_BYTES: u64 = 1 << 20;
/// Manifests whose stored version was read, remembered at most; a full map is cleared (each manifest then
/// costs one more read).
const MAX_MANIFESTS: usize = 16_384;
/// `sidx` reads running at once, at most.
const MAX_SIDX_READS: usize = 64;

/// What prefetch is built from (`[prefetch]` in the config; each site's `k` is on its [`super::Site`]).
#[derive(Debug, Clone, Copy)]
pub struct PrefetchSettings {
    pub limits: Limits,
    /// A prefetched object not asked for within this long is wasted.
    pub unused: Duration,
}

/// Prefetch's state: the index of renditions, the budget, and the ledger of what was prefetched.
pub struct Prefetch {
    unused: Duration,
    /// One index per site (by name): two sites may hold different objects at the same paths. Read on every
    /// GET, written when a manifest or `sidx` is learnt.
    indexes: RwLock<HashMap<String, Index>>,
    budget: Mutex<Budget>,
    ledger: Mutex<Ledger>,
    /// Manifest (site and path, [`scoped`]) → the version read into the index (its `ETag` or
    /// `Last-Modified`, else its generation).
    manifests: Mutex<HashMap<String, String>>,
    /// Files (site and path) whose `sidx` is being read.
    sidx_reading: Mutex<HashSet<String>>,
    /// The viewers' sessions and the model of what they ask for next, for eviction by value.
    viewers: Mutex<Viewers>,
    /// The viewers' clock starts here.
    started: Instant,
    /// Eviction by value reads the viewers' model ([`Edge::follow_viewers`]).
    following_viewers: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

/// What a learning task needs of the request that set it off, owned (the task outlives the request).
struct Asked {
    site: String,
    path: String,
    key: CacheKey,
    headers: HeaderMap,
    upstream: String,
}

impl Asked {
    fn of(parts: &Parts, request: &Canonical<'_>) -> Asked {
        Asked {
            site: request.site.name.clone(),
            path: request.path.clone(),
            key: request.key.clone(),
            headers: parts.headers.clone(),
            upstream: request.site.upstream.clone(),
        }
    }
}

/// A path within a site, as the maps of manifests read and `sidx` reads key it.
fn scoped(site: &str, path: &str) -> String {
    format!("{site}\n{path}")
}

impl Prefetch {
    pub fn new(settings: PrefetchSettings) -> Self {
        Prefetch {
            unused: settings.unused,
            indexes: RwLock::default(),
            budget: Mutex::new(Budget::new(settings.limits, Instant::now())),
            ledger: Mutex::default(),
            manifests: Mutex::default(),
            sidx_reading: Mutex::default(),
            viewers: Mutex::default(),
            started: Instant::now(),
            following_viewers: AtomicBool::new(false),
        }
    }
}

/// Why a next object was not prefetched although nothing held it back (the `edge_prefetch_skipped_total`
/// label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    Cached,
    Filling,
    Stale,
    NotCacheable,
}

impl Skip {
    fn as_str(self) -> &'static str {
        match self {
            Skip::Cached => "cached",
            Skip::Filling => "filling",
            Skip::Stale => "stale",
            Skip::NotCacheable => "not_cacheable",
        }
    }
}

/// Why an object is warmed: the next segment of a player's session (`prefetch`), or the control plane's
/// plan (`fill`, see `pipeline::fill`). They share the fill path; they differ in who paces them, what they
/// count, and the access log's mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// Paced by the prefetch budget here; counted as prefetches (issued, used, wasted).
    Prefetch,
    /// A prefetch of the part a live playlist hints (`EXT-X-PRELOAD-HINT`), asked for before it exists: an
    /// upstream that follows LL-HLS holds the request until the part is written; an error answer (one that
    /// does not) is not stored, so the requests after the part exists are not answered with it.
    Hint,
    /// Paced by its caller; counted in `edge_fill_*`. The plan is the control plane's, so it may name files
    /// under `signed_paths` (what is stored still needs a viewer's token to be served).
    Fill,
}

impl Purpose {
    /// Paced, counted and logged as a prefetch.
    fn is_prefetch(self) -> bool {
        self != Purpose::Fill
    }

    fn as_str(self) -> &'static str {
        match self {
            Purpose::Prefetch => "prefetch",
            Purpose::Hint => "hint",
            Purpose::Fill => "fill",
        }
    }
}

/// How one warm ended, as the metrics label it (`stored`, `failed`, a [`Skip`]'s reason, `shed`), and the
/// bytes it brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Warmed {
    pub result: &'static str,
    pub bytes: u64,
}

/// How one prefetch ended.
enum Ended {
    Stored,
    /// Another fill took it over between the checks and the start (nothing fetched).
    Skipped(Skip),
    Failed(String),
}

/// A prefetch's place in the budget, given back when dropped (also when its task ends early).
struct Place {
    edge: Arc<Edge>,
    upstream: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut budget = lock(&self.edge.prefetch.budget);
        budget.release(&self.upstream);
        self.edge
            .metrics
            .prefetch_in_flight
            .set(budget.in_flight() as i64);
    }
}

/// The byte range a request asks for (an open end reaches to the end), when it asks for one range.
fn asked_range(parts: &Parts) -> Option<ByteRange> {
    let value = parts.headers.get(header::RANGE)?.to_str().ok()?;
    let (start, end) = value.trim().strip_prefix("bytes=")?.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => u64::MAX,
        end => end.parse().ok()?,
    };
    (start <= end).then_some(ByteRange { start, end })
}

/// What the ledger calls an object: its cache key and where its bytes start (a whole object starts at 0).
fn object_id(key: &CacheKey, range: Option<ByteRange>) -> String {
    format!("{key}@{}", range.map_or(0, |r| r.start))
}

fn is_manifest(path: &str) -> bool {
    path.ends_with(".m3u8") || path.ends_with(".mpd")
}

/// The slices holding `range` of an object of `total` bytes (all of it without a range), at most
/// [`MAX_SLICES`] of them; `None` when the range lies past the end.
fn slices(total: u64, slice_bytes: u64, range: Option<ByteRange>) -> Option<RangeInclusive<u64>> {
    let last_byte = total.checked_sub(1)?;
    let (start, end) = match range {
        Some(r) => (r.start, r.end.min(last_byte)),
        None => (0, last_byte),
    };
    if start > end {
        return None;
    }
    let first = start / slice_bytes;
    Some(first..=(end / slice_bytes).min(first + MAX_SLICES - 1))
}

/// Reads a fill to its end; the bytes it brought.
async fn drain(mut subscriber: Subscriber) -> Result<u64, FillError> {
    let mut bytes = 0;
    while let Some(chunk) = subscriber.next_chunk().await {
        bytes += chunk?.len() as u64;
    }
    Ok(bytes)
}

/// Request fields a prefetch does not take from the request that caused it: the range and preconditions are
/// that request's own, and CMCD is never sent upstream.
const NOT_COPIED: [&str; 10] = [
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "cmcd-request",
    "cmcd-object",
    "cmcd-status",
    "cmcd-session",
];

/// The request a prefetch of `target` stands for: a GET with the fields of the request that caused it (so
/// the same site, variant and credentials rules apply), and the target's range.
pub(super) fn prefetch_request(parts: &Parts, target: &Segment) -> Option<Parts> {
    let uri = match (parts.uri.scheme_str(), parts.uri.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}{}", target.path),
        _ => target.path.clone(),
    };
    let uri: http::Uri = uri.parse().ok()?;
    let (mut next, ()) = http::Request::builder()
        .method(Method::GET)
        .uri(uri)
        .version(parts.version)
        .body(())
        .ok()?
        .into_parts();
    let mut headers = parts.headers.clone();
    for name in NOT_COPIED {
        headers.remove(name);
    }
    if let Some(range) = target.range {
        let value = format!("bytes={}-{}", range.start, range.end);
        headers.insert(header::RANGE, value.parse().ok()?);
    }
    next.headers = headers;
    if let Some(client) = parts.extensions.get::<super::ClientAddr>() {
        next.extensions.insert(*client);
    }
    Some(next)
}

impl Edge {
    /// After a GET was answered: counts a use of a prefetched object, learns from a manifest or a `sidx`, tells
    /// the viewers' model of a media segment, and warms the segments that follow it. A site without prefetch
    /// still learns and tells when eviction by value follows the viewers. Never waits: the work runs in tasks.
    /// Returns whether this answer was the first use of a prefetched object (CMSD-Static says so).
    pub(super) fn after_serving(
        self: &Arc<Self>,
        parts: &Parts,
        request: &Canonical<'_>,
        answer: &Answer,
    ) -> bool {
        let k = request.site.prefetch_segments;
        let following = self.prefetch.following_viewers.load(Ordering::Relaxed);
        if (k == 0 && !following) || !answer.response.status().is_success() {
            return false;
        }
        let range = asked_range(parts);
        let prefetched = self.note_demand(&request.key, range, answer.cache_status);
        if is_manifest(&request.path) {
            self.learn_manifest(parts, request, answer);
            return prefetched;
        }
        let site = request.site.name.as_str();
        let wants_sidx = read(&self.prefetch.indexes)
            .get(site)
            .and_then(|index| index.wants_sidx(&request.path));
        if let Some(index_range) = wants_sidx {
            self.learn_sidx(parts, request, index_range);
        }
        let cmcd = crate::cmcd::from_request(parts.uri.query(), &parts.headers);
        if following {
            self.note_viewer(parts, request, range, cmcd.as_ref());
        }
        if k == 0 {
            return prefetched;
        }
        let from_player = cmcd.and_then(|cmcd| {
            from_cmcd(
                &request.path,
                cmcd.next_object_request.as_deref(),
                cmcd.next_range_request.as_deref(),
            )
        });
        let targets = match read(&self.prefetch.indexes).get(site) {
            Some(index) => index.next_objects(from_player, &request.path, range, k),
            None => Index::default().next_objects(from_player, &request.path, range, k),
        };
        for target in targets {
            if let Some(next) = prefetch_request(parts, &target) {
                let edge = Arc::clone(self);
                tokio::spawn(async move { edge.warm(next, target.range, Purpose::Prefetch).await });
            }
        }
        prefetched
    }

    /// Turns eviction by value on: the cache's storage rates slices by the viewers' model, which every site
    /// feeds from then on (with or without prefetch).
    pub fn follow_viewers(self: &Arc<Self>) {
        self.prefetch
            .following_viewers
            .store(true, Ordering::Relaxed);
        let valuer = EdgeValuer(Arc::downgrade(self));
        self.storage().evict_by_value(Arc::new(valuer));
    }

    /// Tells the viewers' model that a player asked for a segment the index lists (a player is its CMCD session
    /// id, else its address).
    fn note_viewer(
        &self,
        parts: &Parts,
        request: &Canonical<'_>,
        range: Option<ByteRange>,
        cmcd: Option<&crate::cmcd::Cmcd>,
    ) {
        let site = request.site.name.as_str();
        let located = read(&self.prefetch.indexes).get(site).and_then(|index| {
            let at = index
                .locate(&request.path, range)
                .or_else(|| index.locate(&request.path, None))?;
            Some((
                at.rendition.to_string(),
                at.position,
                at.segments,
                at.seconds,
            ))
        });
        let Some((rendition, position, count, seconds)) = located else {
            return;
        };
        let address;
        let client = match cmcd.and_then(|c| c.session_id.as_deref()) {
            Some(sid) => sid,
            None => {
                address = parts
                    .extensions
                    .get::<super::ClientAddr>()
                    .map(|c| c.0.ip().to_string())
                    .unwrap_or_default();
                &address
            }
        };
        let now_ms = self.prefetch.started.elapsed().as_millis() as u64;
        let as_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut viewers = lock(&self.prefetch.viewers);
        viewers.observe(
            now_ms,
            client,
            site,
            &rendition,
            (as_u32(position), as_u32(count), seconds),
        );
        self.metrics.viewer_sessions.set(viewers.sessions() as i64);
    }

    /// A demand request for `key` (`range` of it) was answered with `status`: a prefetched object asked for is
    /// used (from the cache, or by joining the prefetch while it ran), or wasted when it had to be fetched
    /// again. Unused prefetches past `prefetch.unused_secs` are counted wasted on the way.
    /// Returns whether the object was prefetched and this answer used it.
    fn note_demand(&self, key: &CacheKey, range: Option<ByteRange>, status: CacheStatus) -> bool {
        let mut ledger = lock(&self.prefetch.ledger);
        if ledger.is_empty() {
            return false;
        }
        let mut used = false;
        let mut wasted = ledger.sweep(self.prefetch.unused, Instant::now());
        // Named only when something was prefetched: a request costs no allocation otherwise.
        if let Some(bytes) = ledger.use_object(&object_id(key, range)) {
            match status {
                CacheStatus::Miss { .. } | CacheStatus::Pass { .. } => {
                    wasted.count += 1;
                    wasted.bytes += bytes;
                }
                _ => {
                    self.metrics.prefetch_used.inc();
                    used = true;
                }
            }
        }
        self.count_wasted(wasted);
        used
    }

    fn count_wasted(&self, wasted: Tally) {
        if wasted.count > 0 {
            self.metrics.prefetch_wasted.inc_by(wasted.count);
            self.metrics.prefetch_wasted_bytes.inc_by(wasted.bytes);
        }
    }

    /// Counts the prefetches unused for `prefetch.unused_secs` as wasted (at scrape time, so that an idle edge
    /// reports them too).
    pub fn sweep_prefetches(&self) {
        let wasted = lock(&self.prefetch.ledger).sweep(self.prefetch.unused, Instant::now());
        self.count_wasted(wasted);
    }

    /// Reads a manifest's stored version into the index, unless that version was read already: a version the
    /// answer names (its `ETag`, else its `Last-Modified`) is checked here, without a lookup; otherwise the stored
    /// version's generation is, by the task.
    fn learn_manifest(self: &Arc<Self>, parts: &Parts, request: &Canonical<'_>, answer: &Answer) {
        let named = [header::ETAG, header::LAST_MODIFIED]
            .iter()
            .find_map(|name| answer.response.headers().get(name)?.to_str().ok())
            .map(str::to_string);
        let manifest = scoped(&request.site.name, &request.path);
        if named.is_some() && lock(&self.prefetch.manifests).get(&manifest) == named.as_ref() {
            return;
        }
        let (edge, asked) = (Arc::clone(self), Asked::of(parts, request));
        tokio::spawn(async move {
            // The version this task claimed (no other reads it meanwhile), once the stored copy qualifies.
            let mut claimed = None;
            let read = edge
                .read_asked(&asked, |meta| {
                    if meta.total_len == 0 || meta.total_len > MAX_MANIFEST_BYTES {
                        return None;
                    }
                    let version = named.unwrap_or_else(|| format!("{:x}", meta.generation));
                    let mut read = lock(&edge.prefetch.manifests);
                    if read.get(&manifest) == Some(&version) {
                        return None;
                    }
                    if read.len() >= MAX_MANIFESTS {
                        read.clear();
                    }
                    read.insert(manifest.clone(), version.clone());
                    claimed = Some(version);
                    Some(ByteRange {
                        start: 0,
                        end: meta.total_len - 1,
                    })
                })
                .await;
            let Some(version) = claimed else {
                return;
            };
            let Some(body) = read else {
                // Not readable whole now: read again next time.
                lock(&edge.prefetch.manifests).remove(&manifest);
                return;
            };
            lock(&edge.prefetch.viewers).learn_manifest_text(&asked.site, &asked.path, &body);
            let mut indexes = write(&edge.prefetch.indexes);
            let learnt =
                indexes
                    .entry(asked.site)
                    .or_default()
                    .learn_manifest(&asked.path, &version, &body);
            edge.index_gauges(&indexes);
            tracing::debug!(path = %asked.path, learnt, "prefetch index read a manifest");
        });
    }

    /// Reads the `sidx` of a single-file rendition (`range` of the file this request asked for) into the index.
    fn learn_sidx(self: &Arc<Self>, parts: &Parts, request: &Canonical<'_>, range: ByteRange) {
        if range.len() > MAX_SIDX_BYTES {
            return;
        }
        let file = scoped(&request.site.name, &request.path);
        {
            let mut reading = lock(&self.prefetch.sidx_reading);
            if reading.len() >= MAX_SIDX_READS || !reading.insert(file.clone()) {
                return;
            }
        }
        let (edge, asked) = (Arc::clone(self), Asked::of(parts, request));
        tokio::spawn(async move {
            let read = edge
                .read_asked(&asked, |meta| (meta.total_len > range.end).then_some(range))
                .await;
            if let Some(bytes) = read {
                let mut indexes = write(&edge.prefetch.indexes);
                let learnt =
                    indexes
                        .entry(asked.site)
                        .or_default()
                        .learn_sidx(&asked.path, range, &bytes);
                edge.index_gauges(&indexes);
                tracing::debug!(path = %asked.path, learnt, "prefetch index read a sidx");
            }
            lock(&edge.prefetch.sidx_reading).remove(&file);
        });
    }

    /// The stored 200 of what `asked` names, read in the range `range_of` picks from its metadata (`None`:
    /// not wanted).
    async fn read_asked(
        &self,
        asked: &Asked,
        range_of: impl FnOnce(&ObjectMeta) -> Option<ByteRange>,
    ) -> Option<Bytes> {
        let now = self.engine.clock().now();
        let found = self.engine.lookup(&asked.key, &asked.headers, now).await;
        let meta = found.meta.filter(|m| m.status == 200)?;
        let range = range_of(&meta)?;
        self.read_stored(&asked.upstream, &found.key, &meta, range)
            .await
    }

    /// Sets the index gauges from every site's index.
    fn index_gauges(&self, indexes: &HashMap<String, Index>) {
        let renditions: usize = indexes.values().map(Index::len).sum();
        let segments: usize = indexes.values().map(Index::segment_count).sum();
        self.metrics.prefetch_renditions.set(renditions as i64);
        self.metrics.prefetch_segments.set(segments as i64);
    }

    /// `range` of a stored version, from its cached slices or the fills running for them (joined, or started
    /// as any request for them would).
    async fn read_stored(
        &self,
        upstream: &str,
        key: &CacheKey,
        meta: &Arc<ObjectMeta>,
        range: ByteRange,
    ) -> Option<Bytes> {
        let slice_bytes = meta.slice_bytes;
        let (first, last) = (range.start / slice_bytes, range.end / slice_bytes);
        let mut chunks = Vec::new();
        for index in first..=last {
            match self
                .engine
                .slice_source(upstream, key, meta, index)
                .await
                .ok()?
            {
                (SliceSource::Cached(bytes), _) => chunks.push(bytes),
                (SliceSource::Filling(mut subscriber), _) => {
                    while let Some(chunk) = subscriber.next_chunk().await {
                        chunks.push(chunk.ok()?);
                    }
                }
            }
        }
        let all = concat(&chunks);
        let from = usize::try_from(range.start - first * slice_bytes).ok()?;
        let to = from.checked_add(usize::try_from(range.len()).ok()?)?;
        (to <= all.len()).then(|| all.slice(from..to))
    }

    /// Warms one object (`parts` asks for it), unless it is cached, filling, not cacheable, or (for a
    /// prefetch) the budget says no; then fills its slices and logs it.
    pub(super) async fn warm(
        self: Arc<Self>,
        parts: Parts,
        range: Option<ByteRange>,
        purpose: Purpose,
    ) -> Warmed {
        let skipped = |skip: Skip| self.skipped(skip, purpose);
        let Ok(site) = self.site_for(&parts) else {
            return skipped(Skip::NotCacheable);
        };
        let (path, query) = match parts.uri.path_and_query() {
            Some(pq) => (pq.path(), pq.query()),
            None => return skipped(Skip::NotCacheable),
        };
        let Ok(path) = shared::path::canonical_path(path) else {
            return skipped(Skip::NotCacheable);
        };
        let site = site.route_for(&path);
        if purpose.is_prefetch()
            && site
                .signed_paths
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
        {
            // Its viewers' tokens are theirs: a prefetch does not act on one viewer's behalf for others.
            return skipped(Skip::NotCacheable);
        }
        let query = super::admit::canonical_query(query);
        let key = CacheKey::new(
            &site.name,
            &path,
            site.query_key.key_part(query.as_deref()).as_deref(),
        );
        let request = Canonical {
            site,
            path,
            query,
            key,
            early_data: false,
        };
        if self.pass_before_lookup(&parts, &request).is_some() {
            return skipped(Skip::NotCacheable);
        }
        let engine = Arc::clone(&self.engine);
        let now = engine.clock().now();
        let found = engine.lookup(&request.key, &parts.headers, now).await;
        let skip = match &found.meta {
            Some(meta) if !meta.is_fresh(now) => Some(Skip::Stale),
            Some(meta) if meta.status != 200 => Some(Skip::Cached),
            Some(meta) => match slices(meta.total_len, meta.slice_bytes, range) {
                Some(indexes) if !engine.holds_all(&found.key, meta, indexes.clone()) => None,
                _ => Some(Skip::Cached),
            },
            None if engine.pass_mark(&found.key, now).is_some() => Some(Skip::NotCacheable),
            None => {
                let first = range.map_or(0, |r| r.start / engine.slice_bytes());
                engine
                    .filling_new(&found.key, first)
                    .then_some(Skip::Filling)
            }
        };
        if let Some(skip) = skip {
            return skipped(skip);
        }
        let upstream = request.site.upstream.clone();
        // A prefetch's place in its budget (a fill's caller paces it).
        let mut place = None;
        if purpose.is_prefetch() {
            let mut budget = lock(&self.prefetch.budget);
            if let Err(shed) = budget.admit(&upstream, engine.load(), Instant::now()) {
                drop(budget);
                self.metrics
                    .prefetch_shed
                    .with_label_values(&[shed.as_str()])
                    .inc();
                return Warmed {
                    result: "shed",
                    bytes: 0,
                };
            }
            self.metrics
                .prefetch_in_flight
                .set(budget.in_flight() as i64);
            self.metrics
                .prefetch_in_flight_peak
                .set(budget.peak() as i64);
            place = Some(Place {
                edge: Arc::clone(&self),
                upstream: upstream.clone(),
            });
        }
        let started = Instant::now();
        let object = object_id(&request.key, range);
        let (ended, bytes) = self
            .prefetch_fill(&parts, &request, found, range, &object, purpose)
            .await;
        if place.is_some() {
            lock(&self.prefetch.budget).charge(&upstream, bytes, Instant::now());
        }
        drop(place);
        let (result, error) = match &ended {
            Ended::Stored => ("stored", None),
            Ended::Skipped(skip) => (skip.as_str(), None),
            Ended::Failed(e) => ("failed", Some(e.as_str())),
        };
        match (&ended, purpose) {
            (Ended::Skipped(skip), _) => {
                self.skipped(*skip, purpose);
            }
            (Ended::Stored, Purpose::Prefetch | Purpose::Hint) => {
                self.metrics.prefetch_bytes.inc_by(bytes)
            }
            (Ended::Failed(_), Purpose::Prefetch | Purpose::Hint) => {
                self.metrics.prefetch_failed.inc();
                self.metrics.prefetch_bytes.inc_by(bytes);
            }
            (Ended::Stored | Ended::Failed(_), Purpose::Fill) => {
                self.metrics.fill_objects.with_label_values(&[result]).inc();
                self.metrics.fill_bytes.inc_by(bytes);
            }
        }
        tracing::info!(
            target: "access",
            prefetch = purpose.is_prefetch(),
            hint = purpose == Purpose::Hint,
            fill = purpose == Purpose::Fill,
            site = %request.site.name,
            path = %request.path,
            range = range.map(|r| format!("{}-{}", r.start, r.end)),
            result,
            bytes,
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            error,
            "{}",
            purpose.as_str()
        );
        Warmed { result, bytes }
    }

    /// Fills the slices of `range` (all of the object without one) that are neither cached nor filling: first
    /// the new object's first slice, which also stores its metadata, then the rest one by one.
    async fn prefetch_fill(
        &self,
        parts: &Parts,
        request: &Canonical<'_>,
        found: crate::cache::engine::Found,
        range: Option<ByteRange>,
        object: &str,
        purpose: Purpose,
    ) -> (Ended, u64) {
        let engine = &self.engine;
        let upstream = request.site.upstream.as_str();
        let key = found.key.clone();
        let mut bytes = 0;
        let mut first_done = None;
        let meta = match found.meta {
            Some(meta) => meta,
            None => {
                let first = range.map_or(0, |r| r.start / engine.slice_bytes());
                let fields = self.fill_fields(parts, request, found.variant.as_deref());
                // One slice at a time: each counted as it is drained (the bytes a prefetch costs are metered).
                let target = crate::cache::engine::FillTarget::New {
                    slices: 1,
                    keep_errors: purpose != Purpose::Hint,
                };
                let (fill, started) = engine.join_fill(upstream, &key, first, target, fields);
                if !started {
                    return (Ended::Skipped(Skip::Filling), 0);
                }
                self.issued(object, purpose);
                let mut subscriber = fill.subscribe();
                let meta = match subscriber.head().await {
                    Ok(FillHead::Slice(meta)) if meta.status == 200 => meta,
                    Ok(FillHead::Slice(meta)) => {
                        return self.failed(
                            purpose,
                            object,
                            format!("answered {}", meta.status),
                            0,
                        );
                    }
                    Ok(FillHead::NotStorable { status, detail, .. }) => {
                        return self.failed(
                            purpose,
                            object,
                            format!("{status} not stored: {detail}"),
                            0,
                        );
                    }
                    Ok(FillHead::Refreshed(_)) => {
                        return self.failed(purpose, object, "a refresh, not a fill".into(), 0);
                    }
                    Err(e) => return self.failed(purpose, object, e.to_string(), 0),
                };
                match drain(subscriber).await {
                    Ok(n) => bytes += n,
                    Err(e) => return self.failed(purpose, object, e.to_string(), bytes),
                }
                first_done = Some(first);
                meta
            }
        };
        let Some(indexes) = slices(meta.total_len, meta.slice_bytes, range) else {
            return self.done(purpose, object, first_done.is_some(), bytes);
        };
        for index in indexes {
            if Some(index) == first_done {
                continue;
            }
            match engine.warm_slice(upstream, &key, &meta, index) {
                Warm::Cached => {}
                Warm::Started(fill) => {
                    if first_done.is_none() {
                        self.issued(object, purpose);
                        first_done = Some(index);
                    }
                    match drain(fill.subscribe()).await {
                        Ok(n) => bytes += n,
                        Err(e) => return self.failed(purpose, object, e.to_string(), bytes),
                    }
                }
                // Another request's fill (demand's, or read-ahead): waited for, so that the object is whole
                // when this prefetch ends; its failure is that request's to report.
                Warm::Running(fill) => {
                    let _ = drain(fill.subscribe()).await;
                }
            }
        }
        self.done(purpose, object, first_done.is_some(), bytes)
    }

    fn issued(&self, object: &str, purpose: Purpose) {
        if purpose.is_prefetch() {
            self.metrics.prefetch_issued.inc();
            let wasted = lock(&self.prefetch.ledger).enter(object.to_string(), 0, Instant::now());
            self.count_wasted(wasted);
        }
    }

    fn done(&self, purpose: Purpose, object: &str, issued: bool, bytes: u64) -> (Ended, u64) {
        if !issued {
            return (Ended::Skipped(Skip::Filling), 0);
        }
        if purpose.is_prefetch() {
            lock(&self.prefetch.ledger).add_bytes(object, bytes);
        }
        (Ended::Stored, bytes)
    }

    fn failed(&self, purpose: Purpose, object: &str, error: String, bytes: u64) -> (Ended, u64) {
        if purpose.is_prefetch() {
            lock(&self.prefetch.ledger).use_object(object);
        }
        (Ended::Failed(error), bytes)
    }

    /// Counts a warm that found nothing to do, and says so.
    fn skipped(&self, skip: Skip, purpose: Purpose) -> Warmed {
        let counter = match purpose {
            Purpose::Prefetch | Purpose::Hint => &self.metrics.prefetch_skipped,
            Purpose::Fill => &self.metrics.fill_objects,
        };
        counter.with_label_values(&[skip.as_str()]).inc();
        Warmed {
            result: skip.as_str(),
            bytes: 0,
        }
    }
}

/// The fields of a request (for tests of [`prefetch_request`]).
#[cfg(test)]
fn request_with(uri: &str, fields: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().uri(uri);
    for (name, value) in fields {
        builder = builder.header(*name, *value);
    }
    builder.body(()).unwrap().into_parts().0
}

/// Rates cached slices for eviction by value (`cache::storage`) from the index and the viewers' model.
struct EdgeValuer(std::sync::Weak<Edge>);

impl Valuer for EdgeValuer {
    fn tag(&self, key: &CacheKey, index: u64) -> Option<Tag> {
        let edge = self.0.upgrade()?;
        let (site, path) = key.site_and_path();
        let offset = index.saturating_mul(edge.engine.slice_bytes());
        let at = ByteRange {
            start: offset,
            end: offset,
        };
        let (rendition, position) = {
            let indexes = read(&edge.prefetch.indexes);
            let index = indexes.get(site)?;
            let found = index
                .locate(path, Some(at))
                .or_else(|| index.locate(path, None))?;
            (found.rendition.to_string(), found.position)
        };
        let now_ms = edge.prefetch.started.elapsed().as_millis() as u64;
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        lock(&edge.prefetch.viewers).tag(site, &rendition, position, now_ms)
    }

    fn rates(&self, tags: &[Tag]) -> Vec<f64> {
        let Some(edge) = self.0.upgrade() else {
            return vec![0.0; tags.len()];
        };
        let viewers = lock(&edge.prefetch.viewers);
        tags.iter().map(|&tag| viewers.rate(tag)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slices_of_a_range_or_of_the_whole_object() {
        let r = |start, end| Some(ByteRange { start, end });
        let table = [
            (1000, 100, None, Some(0..=9)),
            (1000, 100, r(150, 420), Some(1..=4)),
            (1000, 100, r(150, u64::MAX), Some(1..=9)),
            (1000, 100, r(1000, 1200), None),
            (0, 100, None, None),
            (1 << 30, 1024, None, Some(0..=MAX_SLICES - 1)),
            (
                1 << 30,
                1024,
                r(10_240, 1 << 29),
                Some(10..=10 + MAX_SLICES - 1),
            ),
        ];
        for (total, slice_bytes, range, want) in table {
            assert_eq!(slices(total, slice_bytes, range), want, "{total} {range:?}");
        }
    }

    #[test]
    fn a_prefetch_asks_like_its_player_for_the_next_object_only() {
        let parts = request_with(
            "https://cdn.example/t/v0/seg_1.ts?CMCD=nor%3D%22seg_2.ts%22",
            &[
                ("accept-encoding", "gzip"),
                ("range", "bytes=0-99"),
                ("if-none-match", "\"x\""),
                ("cmcd-request", "nor=\"seg_2.ts\""),
                ("cmcd-session", "sid=\"s\""),
            ],
        );
        let target = Segment {
            path: "/t/v0/seg_2.ts".into(),
            range: None,
            duration_secs: 4.0,
            discontinuity: false,
        };
        let next = prefetch_request(&parts, &target).unwrap();
        assert_eq!(next.method, Method::GET);
        assert_eq!(next.uri.to_string(), "https://cdn.example/t/v0/seg_2.ts");
        assert_eq!(next.headers["accept-encoding"], "gzip");
        for gone in ["range", "if-none-match", "cmcd-request", "cmcd-session"] {
            assert!(!next.headers.contains_key(gone), "{gone}");
        }
        let ranged = Segment {
            path: "/t/v0.mp4".into(),
            range: Some(ByteRange {
                start: 100,
                end: 199,
            }),
            ..target
        };
        let next = prefetch_request(&request_with("/t/v0.mp4", &[]), &ranged).unwrap();
        assert_eq!(next.uri.to_string(), "/t/v0.mp4");
        assert_eq!(next.headers["range"], "bytes=100-199");
    }

    #[test]
    fn the_range_a_request_asks_for_and_the_object_it_names() {
        let table = [
            (None, None),
            (Some("bytes=0-99"), Some((0, 99))),
            (Some("bytes=872-"), Some((872, u64::MAX))),
            (Some("bytes=-500"), None),
            (Some("bytes=5-1"), None),
            (Some("bytes=0-1,5-6"), None),
        ];
        for (range, want) in table {
            let fields: Vec<(&str, &str)> = range.iter().map(|r| ("range", *r)).collect();
            let got = asked_range(&request_with("/a", &fields)).map(|r| (r.start, r.end));
            assert_eq!(got, want, "{range:?}");
        }
        let key = CacheKey::new("s", "/a.mp4", None);
        assert_eq!(
            object_id(&key, None),
            object_id(
                &key,
                asked_range(&request_with("/a", &[("range", "bytes=0-")]))
            )
        );
        assert_ne!(
            object_id(&key, None),
            object_id(&key, Some(ByteRange { start: 1, end: 2 }))
        );
    }
}
