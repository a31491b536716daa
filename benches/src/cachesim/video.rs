//! Video-aware caching: eviction that uses what the edge knows about sessions ([`Knowledge`]), prefetch of the next
//! segments of a rendition, and a proactive fill before the trace. Pure and deterministic (a seeded sampler), no
//! I/O.
//!
//! Every policy here evicts by sampling: when room is needed it draws [`SAMPLES`] cached objects at random and
//! evicts the one that ranks lowest, until the new object fits (Redis's approximated LRU works this way; the
//! edge can rank a few candidates per eviction without keeping every object in an order that changes with every
//! session's step). The rankings:
//!
//! - [`Rule::PassedFirst`] ("passed-by-all"): a segment that no active session of its title can still fetch is
//!   evicted first, least recently used first; then the rest, least recently used first. A session can still
//!   fetch a segment if it is behind it (its position is lower) and on the same track (audio), or on a video
//!   rendition at most one step away. A title with no active session has every segment passed.
//! - [`Rule::AheadProtected`]: a segment at most [`AHEAD`] segments ahead of an active session that can fetch it
//!   (as above) is kept over every other object; least recently used first within each class.
//! - [`Rule::PassedAheadLru`]: both: passed segments first, then the unclassed ones, the protected ones last.
//! - [`Rule::Value`]: the estimated request rate of each object ([`Knowledge::rate`]): the active sessions behind
//!   it (each one's learned chance of getting there at that rendition, over the seconds until it does; a passed
//!   segment gets nothing from them), plus the title's session start rate × the learned requests per start at that
//!   track and index (what keeps the first minutes of popular titles). The lowest rate is evicted, and a missed
//!   object whose rate is below the lowest sampled one is not admitted (served without being cached).
//!
//! Playlists rank with their title (the value policy) or as unclassed (the rule-based ones); they are a few KiB.
//!
//! Prefetch (`prefetch = k`): after serving segment N of a track, segments N+1..N+k of the same track, if absent
//! and within the title, are fetched from upstream and cached. Prefetch is subordinate to demand: a prefetched
//! object may only evict objects that rank below it, and is dropped (not fetched) if it cannot make room that way;
//! under the rule-based rankings it enters as the least recently used object of its class. A prefetched object is
//! *used* when demand first hits it, *wasted* when it is evicted before that or the trace ends first.
//!
//! Proactive fill: before the trace, the cache is filled with the objects the knowledge of an earlier day rates
//! highest (the new-session part of the rate: start rate × requests per start), within the cache's capacity; the
//! knowledge then carries into the trace.

use super::HitCounts;
use super::reference::KeyMap;
use super::trace::{Object, Request, RequestInfo, SplitMix64, Track, object_key};
use shared::viewing::Knowledge;

/// Objects drawn per eviction.
pub const SAMPLES: usize = 32;
/// How far ahead of an active session a segment is protected ([`Rule::AheadProtected`]): 10 segments, 40 s.
pub const AHEAD: u32 = 10;

/// How the cache ranks objects for eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    PassedFirst,
    AheadProtected,
    PassedAheadLru,
    Value,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::PassedFirst => "passed-lru",
            Rule::AheadProtected => "ahead-lru",
            Rule::PassedAheadLru => "passed-ahead-lru",
            Rule::Value => "video-value",
        }
    }
}

/// One object to place in the cache before the trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FillObject {
    pub key: u64,
    pub size: u32,
    pub title: u32,
    pub object: Object,
}

/// A policy and its options.
#[derive(Debug, Clone, Copy)]
pub struct Config<'a> {
    pub rule: Rule,
    /// Segments prefetched after each segment served (0: none).
    pub prefetch: u32,
    /// What an earlier day taught (the knowledge starts from it instead of from nothing).
    pub history: Option<&'a History>,
    /// Fill the cache from the history's fill order before the trace.
    pub fill: bool,
}

/// Knowledge learned from an earlier day, and the fill order it gives.
#[derive(Debug, Clone)]
pub struct History {
    pub knowledge: Knowledge,
    /// Trace times of the evaluated day are shifted by this on the knowledge's clock.
    pub offset_ms: u64,
    pub fill: Vec<FillObject>,
}

/// Prefetch and fill accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Extra {
    pub prefetch_objects: u64,
    pub prefetch_bytes: u64,
    pub prefetch_used_objects: u64,
    pub prefetch_used_bytes: u64,
    pub prefetch_wasted_objects: u64,
    pub prefetch_wasted_bytes: u64,
    /// Prefetches not issued because the cache would not make room for them.
    pub prefetch_declined: u64,
    pub fill_objects: u64,
    pub fill_bytes: u64,
    /// Filled objects later hit by demand (first hit each).
    pub fill_used_bytes: u64,
    /// Missed objects not admitted (the value policy).
    pub bypassed: u64,
}

/// Where a cached object came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Demand,
    /// Prefetched, not hit by demand yet.
    Prefetch,
    /// Filled before the trace, not hit by demand yet.
    Fill,
}

#[derive(Debug, Clone)]
struct Entry {
    key: u64,
    size: u32,
    title: u32,
    object: Object,
    /// Sequence number of the last access (higher is more recent).
    last_used: u64,
    origin: Origin,
}

/// The cache: objects in a vector for sampling, indexed by key.
pub struct VideoCache {
    rule: Rule,
    capacity: u64,
    used: u64,
    entries: Vec<Entry>,
    index: KeyMap<usize>,
    rng: SplitMix64,
    clock: u64,
    pub extra: Extra,
}

impl VideoCache {
    pub fn new(rule: Rule, capacity: u64) -> Self {
        VideoCache {
            rule,
            capacity,
            used: 0,
            entries: Vec::new(),
            index: KeyMap::default(),
            rng: SplitMix64::new(0x5eed_cafe),
            clock: 0,
            extra: Extra::default(),
        }
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.contains_key(&key)
    }

    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Serves one demand request (the knowledge has already seen it); true on a hit.
    pub fn demand(&mut self, knowledge: &Knowledge, request: &Request, info: &RequestInfo) -> bool {
        self.clock += 1;
        if let Some(&slot) = self.index.get(&request.key) {
            let entry = &mut self.entries[slot];
            entry.last_used = self.clock;
            match entry.origin {
                Origin::Prefetch => {
                    self.extra.prefetch_used_objects += 1;
                    self.extra.prefetch_used_bytes += u64::from(entry.size);
                }
                Origin::Fill => self.extra.fill_used_bytes += u64::from(entry.size),
                Origin::Demand => {}
            }
            entry.origin = Origin::Demand;
            return true;
        }
        let entry = Entry {
            key: request.key,
            size: request.size,
            title: info.title,
            object: info.object,
            last_used: self.clock,
            origin: Origin::Demand,
        };
        if !self.admit(knowledge, entry) {
            self.extra.bypassed += 1;
        }
        false
    }

    /// Prefetches the `k` segments after `info`'s segment in its track; returns the keys fetched.
    pub fn prefetch(&mut self, knowledge: &Knowledge, info: &RequestInfo, k: u32, seed: u64) {
        let Object::Segment(track, index) = info.object else {
            return;
        };
        for next in (index + 1..=index.saturating_add(k)).take_while(|&i| i < info.title_segments) {
            let object = Object::Segment(track, next);
            let key = object_key(info.title, object);
            if self.contains(key) {
                continue;
            }
            let size = super::trace::object_size(seed, key, object);
            let entry = Entry {
                key,
                size,
                title: info.title,
                object,
                // The least recently used of its class: prefetch never outranks demand by recency.
                last_used: 0,
                origin: Origin::Prefetch,
            };
            if self.admit(knowledge, entry) {
                self.extra.prefetch_objects += 1;
                self.extra.prefetch_bytes += u64::from(size);
            } else {
                self.extra.prefetch_declined += 1;
            }
        }
    }

    /// Places objects before the trace, best first, as long as they fit.
    pub fn fill(&mut self, objects: &[FillObject]) {
        for o in objects {
            if self.used + u64::from(o.size) > self.capacity {
                break;
            }
            if self.contains(o.key) {
                continue;
            }
            self.insert(Entry {
                key: o.key,
                size: o.size,
                title: o.title,
                object: o.object,
                last_used: 0,
                origin: Origin::Fill,
            });
            self.extra.fill_objects += 1;
            self.extra.fill_bytes += u64::from(o.size);
        }
    }

    /// Counts the prefetched objects never used as wasted (at the end of the trace).
    pub fn finish(&mut self) {
        for e in &self.entries {
            if e.origin == Origin::Prefetch {
                self.extra.prefetch_wasted_objects += 1;
                self.extra.prefetch_wasted_bytes += u64::from(e.size);
            }
        }
        self.entries.retain(|e| e.origin != Origin::Prefetch);
    }

    /// Makes room for `entry` by evicting lower-ranked objects and stores it; false if it was not stored. Demand
    /// under the rule-based rankings always gets in (the victims are whatever ranks lowest); a prefetch, or any
    /// object under the value ranking, only displaces objects that rank below it.
    fn admit(&mut self, knowledge: &Knowledge, entry: Entry) -> bool {
        let size = u64::from(entry.size);
        if size > self.capacity {
            return false;
        }
        let selective = self.rule == Rule::Value || entry.origin == Origin::Prefetch;
        let own_rank = if selective {
            self.rank(knowledge, &entry)
        } else {
            Rank::MAX
        };
        while self.used + size > self.capacity {
            let victim = self.sample_lowest(knowledge);
            let (slot, rank) = victim.expect("over capacity with nothing cached");
            if rank >= own_rank {
                return false;
            }
            self.evict(slot);
        }
        self.insert(entry);
        true
    }

    fn insert(&mut self, entry: Entry) {
        self.used += u64::from(entry.size);
        self.index.insert(entry.key, self.entries.len());
        self.entries.push(entry);
    }

    fn evict(&mut self, slot: usize) {
        let entry = self.entries.swap_remove(slot);
        self.index.remove(&entry.key);
        if let Some(moved) = self.entries.get(slot) {
            self.index.insert(moved.key, slot);
        }
        self.used -= u64::from(entry.size);
        if entry.origin == Origin::Prefetch {
            self.extra.prefetch_wasted_objects += 1;
            self.extra.prefetch_wasted_bytes += u64::from(entry.size);
        }
    }

    /// The lowest-ranked of [`SAMPLES`] objects drawn at random (all of them if there are fewer).
    fn sample_lowest(&mut self, knowledge: &Knowledge) -> Option<(usize, Rank)> {
        let n = self.entries.len();
        let draws = n.min(SAMPLES);
        let mut lowest: Option<(usize, Rank)> = None;
        for i in 0..draws {
            let slot = if n <= SAMPLES {
                i
            } else {
                self.rng.below(n as u64) as usize
            };
            let rank = self.rank(knowledge, &self.entries[slot]);
            if lowest.is_none_or(|(_, r)| rank < r) {
                lowest = Some((slot, rank));
            }
        }
        lowest
    }

    fn rank(&self, knowledge: &Knowledge, entry: &Entry) -> Rank {
        match self.rule {
            Rule::Value => Rank {
                class: 0,
                value: knowledge.rate(entry.title, entry.object),
                last_used: entry.last_used,
            },
            rule => {
                let (passed, ahead) = classify(knowledge, entry.title, entry.object);
                let class = match rule {
                    Rule::PassedFirst => u8::from(!passed),
                    Rule::AheadProtected => u8::from(ahead),
                    _ => {
                        if passed {
                            0
                        } else if ahead {
                            2
                        } else {
                            1
                        }
                    }
                };
                Rank {
                    class,
                    value: 0.0,
                    last_used: entry.last_used,
                }
            }
        }
    }
}

/// An object's standing: compared by class, then value, then recency (all higher is kept longer).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Rank {
    class: u8,
    value: f64,
    last_used: u64,
}

impl Rank {
    const MAX: Rank = Rank {
        class: u8::MAX,
        value: f64::INFINITY,
        last_used: u64::MAX,
    };
}

/// Whether a segment is passed by every active session of its title (none can still fetch it), and whether it is
/// at most [`AHEAD`] segments ahead of one that can. Playlists are neither.
pub fn classify(knowledge: &Knowledge, title: u32, object: Object) -> (bool, bool) {
    let Object::Segment(track, index) = object else {
        return (false, false);
    };
    let mut passed = true;
    let mut ahead = false;
    for s in knowledge.active_sessions(title) {
        let Some(position) = s.position else {
            // Started, no segment yet: it may fetch anything from its start point on.
            passed = false;
            continue;
        };
        let reachable = match track {
            Track::Audio => true,
            Track::Video(r) => r.abs_diff(s.rendition) <= 1,
        };
        if reachable && index > position {
            passed = false;
            if index - position <= AHEAD {
                ahead = true;
                break;
            }
        }
    }
    (passed, ahead)
}

/// Replays the trace against a video-aware cache of `capacity` bytes. `seed` is the trace's (prefetched objects'
/// sizes come from it, as the manifest would give them).
pub fn replay(
    requests: &[Request],
    info: &[RequestInfo],
    titles: usize,
    seed: u64,
    capacity: u64,
    config: Config<'_>,
) -> (HitCounts, Extra) {
    assert_eq!(requests.len(), info.len());
    let (mut knowledge, offset_ms) = match config.history {
        Some(h) => (h.knowledge.clone(), h.offset_ms),
        None => (Knowledge::new(titles), 0),
    };
    let mut cache = VideoCache::new(config.rule, capacity);
    if let Some(h) = config.history
        && config.fill
    {
        cache.fill(&h.fill);
    }
    let mut counts = HitCounts::default();
    for (request, info) in requests.iter().zip(info) {
        knowledge.observe(info, offset_ms);
        let hit = cache.demand(&knowledge, request, info);
        counts.record(request.size, hit);
        if config.prefetch > 0 {
            cache.prefetch(&knowledge, info, config.prefetch, seed);
        }
    }
    cache.finish();
    (counts, cache.extra)
}

/// Learns from an earlier day's trace and orders the catalogue's objects by the rate new sessions will ask for
/// them: for each title (by its start rate), each track and index bucket, the start rate × requests per start.
/// Objects of titles never started that day are left out.
pub fn history(
    info: &[RequestInfo],
    title_segments: &[u32],
    seed: u64,
    fill_budget: u64,
) -> History {
    let mut knowledge = Knowledge::new(title_segments.len());
    for i in info {
        knowledge.observe(i, 0);
    }
    let offset_ms = knowledge.end_of_day();
    // Rate groups: (rate, title, track, first index of the bucket); playlists are one group per title.
    let bucket = shared::viewing::INDEX_BUCKET;
    let mut groups: Vec<(f64, u32, Option<Track>, u32)> = Vec::new();
    for (title, &segments) in title_segments.iter().enumerate() {
        let title = title as u32;
        let rate = knowledge.start_rate(title);
        if rate <= 0.0 {
            continue;
        }
        groups.push((f64::INFINITY, title, None, 0));
        for track in all_tracks() {
            for first in (0..segments).step_by(bucket as usize) {
                let r = rate * knowledge.per_start(track, first);
                if r > 0.0 {
                    groups.push((r, title, Some(track), first));
                }
            }
        }
    }
    groups.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.3).cmp(&(b.1, b.3))));
    let mut fill = Vec::new();
    let mut bytes = 0u64;
    'groups: for &(_, title, track, first) in &groups {
        let objects: Vec<Object> = match track {
            None => {
                let mut v = vec![Object::MasterPlaylist];
                v.extend(all_tracks().map(Object::MediaPlaylist));
                v
            }
            Some(track) => (first..(first + bucket).min(title_segments[title as usize]))
                .map(|i| Object::Segment(track, i))
                .collect(),
        };
        for object in objects {
            let key = object_key(title, object);
            let size = super::trace::object_size(seed, key, object);
            if bytes + u64::from(size) > fill_budget {
                break 'groups;
            }
            bytes += u64::from(size);
            fill.push(FillObject {
                key,
                size,
                title,
                object,
            });
        }
    }
    History {
        knowledge,
        offset_ms,
        fill,
    }
}

fn all_tracks() -> impl Iterator<Item = Track> {
    (0..super::trace::VIDEO_BITRATES_BPS.len() as u8)
        .map(Track::Video)
        .chain([Track::Audio])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::object_size;

    const SEED: u64 = 9;

    /// One request of `session` for `object` of `title` (100 segments) at `ms`.
    fn at(ms: u64, session: u32, title: u32, object: Object) -> (Request, RequestInfo) {
        let key = object_key(title, object);
        (
            Request {
                key,
                size: object_size(SEED, key, object),
            },
            RequestInfo {
                time_ms: ms,
                session,
                title,
                object,
                title_segments: 100,
            },
        )
    }

    fn audio(i: u32) -> Object {
        Object::Segment(Track::Audio, i)
    }

    /// Audio segments are all 64,000 bytes: capacities in segments.
    const AUDIO: u64 = 64_000;

    /// Serves `requests` one by one; returns the cache and the hits.
    fn serve(
        rule: Rule,
        capacity: u64,
        requests: &[(Request, RequestInfo)],
    ) -> (VideoCache, Vec<bool>) {
        let mut knowledge = Knowledge::new(8);
        let mut cache = VideoCache::new(rule, capacity);
        let hits = requests
            .iter()
            .map(|(r, i)| {
                knowledge.observe(i, 0);
                cache.demand(&knowledge, r, i)
            })
            .collect();
        (cache, hits)
    }

    #[test]
    fn passed_by_all_is_evicted_before_the_least_recently_used() {
        // Room for three segments. Session 2 fetches title 1's segment 5 (Y), session 0 title 0's segment 3 (X),
        // session 1 title 1's segment 0 (W), then segment 1 (V): one must go. LRU would drop Y, the oldest; but
        // session 1 (now at 1) will still reach Y, while X (session 0 is at 3) and W (both sessions of title 1
        // are past 0) are passed by all: X, the older of the two, goes.
        let trace = [
            at(0, 2, 1, audio(5)),
            at(500, 0, 0, audio(3)),
            at(1_000, 1, 1, audio(0)),
            at(2_000, 1, 1, audio(1)),
        ];
        let (cache, hits) = serve(Rule::PassedFirst, 3 * AUDIO, &trace);
        assert_eq!(hits, [false; 4]);
        let cached = |i: usize| cache.contains(trace[i].0.key);
        assert!(cached(0) && !cached(1) && cached(2) && cached(3));
        assert_eq!(cache.used(), 3 * AUDIO);
        // Plain LRU drops Y.
        let mut lru = crate::reference::ByteLru::new(3 * AUDIO);
        for (r, _) in &trace {
            lru.access(r.key, u64::from(r.size));
        }
        assert!(!lru.access(trace[0].0.key, AUDIO));
    }

    #[test]
    fn a_title_without_active_sessions_is_passed_and_other_renditions_do_not_hold_segments() {
        let mut k = Knowledge::new(4);
        let video = |r, i| Object::Segment(Track::Video(r), i);
        let (_, i) = at(0, 0, 0, video(3, 10));
        k.observe(&i, 0);
        // Session 0 is at 10 on rendition 3: it may still fetch 11+ at renditions 2 and 3, and audio.
        assert_eq!(classify(&k, 0, video(3, 12)), (false, true));
        assert_eq!(classify(&k, 0, video(2, 12)), (false, true));
        assert_eq!(classify(&k, 0, video(1, 12)), (true, false));
        assert_eq!(classify(&k, 0, audio(30)), (false, false));
        assert_eq!(classify(&k, 0, video(3, 10)), (true, false));
        assert_eq!(classify(&k, 1, video(3, 10)), (true, false));
        assert_eq!(classify(&k, 0, Object::MasterPlaylist), (false, false));
        // 31 s later session 0 is gone: everything of title 0 is passed.
        let (_, i) = at(31_000, 1, 2, audio(0));
        k.observe(&i, 0);
        assert_eq!(classify(&k, 0, video(3, 12)), (true, false));
    }

    #[test]
    fn segments_just_ahead_of_a_session_are_kept() {
        // Room for three. Session 0 fetches title 0's segment `far` (A), session 1 title 0's segment 2 (B),
        // session 2 title 5's segment 0 (C), then segment 1 (D). LRU would drop A. Under ahead protection A is
        // kept while it is at most 10 segments ahead of session 1 (at 2); B and C are not ahead of anyone, so B,
        // the older, goes. At 13, A is not protected any more and goes, being the oldest.
        for (far, a_kept) in [(10, true), (12, true), (13, false)] {
            let trace = [
                at(0, 0, 0, audio(far)),
                at(500, 1, 0, audio(2)),
                at(1_000, 2, 5, audio(0)),
                at(2_000, 2, 5, audio(1)),
            ];
            let (cache, _) = serve(Rule::AheadProtected, 3 * AUDIO, &trace);
            let cached = |i: usize| cache.contains(trace[i].0.key);
            assert_eq!(cached(0), a_kept, "segment {far}");
            assert_eq!(cached(1), !a_kept, "segment {far}");
            assert!(cached(2) && cached(3));
        }
    }

    #[test]
    fn the_value_policy_evicts_the_lowest_rate_and_admits_only_above_it() {
        // Session 0 watched title 0's segments 0-11 and left; session 1 plays it and is at segment 2. The knowledge
        // is re-read after every request, so it has learned all of this.
        let mut knowledge = Knowledge::new(8);
        let mut see = |ms, session, title, object| {
            let (_, i) = at(ms, session, title, object);
            knowledge.observe(&i, 0);
            knowledge.refresh();
        };
        for i in 0..12 {
            see(4_000 * u64::from(i), 0, 0, audio(i));
        }
        for i in 0..3 {
            see(100_000 + 4_000 * u64::from(i), 1, 0, audio(i));
        }
        let mut knowledge = knowledge.clone();
        // Segment 5 is 3 ahead of session 1 (half the sessions that watched 3 segments watched 12), 11 is 9
        // ahead; 1 is passed: only new sessions of title 0 will want it.
        let rate = |k: &Knowledge, i| k.rate(0, audio(i));
        assert!(rate(&knowledge, 5) > rate(&knowledge, 11));
        assert!(rate(&knowledge, 11) > rate(&knowledge, 1));
        assert!(rate(&knowledge, 1) > 0.0);
        let fill = |i| FillObject {
            key: object_key(0, audio(i)),
            size: AUDIO as u32,
            title: 0,
            object: audio(i),
        };
        let mut cache = VideoCache::new(Rule::Value, 3 * AUDIO);
        cache.fill(&[fill(1), fill(5), fill(11)]);
        let (slot, _) = cache.sample_lowest(&knowledge).unwrap();
        assert_eq!(cache.entries[slot].key, fill(1).key);
        // A new session of title 1 (one start against title 0's two) fetches its segment 0: its rate is below
        // every cached object's, so it is served and not cached.
        let (r, i) = at(108_500, 2, 1, audio(0));
        knowledge.observe(&i, 0);
        knowledge.refresh();
        assert!(!cache.demand(&knowledge, &r, &i));
        assert!(!cache.contains(r.key));
        assert_eq!(cache.extra.bypassed, 1);
        // Session 1 fetches segment 3: now passed, it rates like segment 1 (same title, same index bucket) but
        // was used more recently: segment 1 goes.
        let (r, i) = at(112_000, 1, 0, audio(3));
        knowledge.observe(&i, 0);
        knowledge.refresh();
        assert!(!cache.demand(&knowledge, &r, &i));
        assert!(cache.contains(r.key));
        assert!(!cache.contains(fill(1).key));
        assert!(cache.contains(fill(5).key) && cache.contains(fill(11).key));
    }

    #[test]
    fn prefetch_counts_used_and_wasted() {
        // A big cache: session 0 fetches segments 0 and 1 of a 4-segment title with k = 2. Segment 0 prefetches 1
        // and 2; segment 1 hits (used) and prefetches 3 (2 is there; 4 is past the end). 2 and 3 are never
        // asked for: wasted when the trace ends.
        let video = |i| Object::Segment(Track::Video(1), i);
        let mut trace = [at(0, 0, 0, video(0)), at(4_000, 0, 0, video(1))];
        for (_, i) in &mut trace {
            i.title_segments = 4;
        }
        let size = |i| u64::from(object_size(SEED, object_key(0, video(i)), video(i)));
        let (requests, info): (Vec<_>, Vec<_>) = trace.into_iter().unzip();
        let config = Config {
            rule: Rule::Value,
            prefetch: 2,
            history: None,
            fill: false,
        };
        let (counts, extra) = replay(&requests, &info, 1, SEED, 1 << 30, config);
        assert_eq!((counts.requests, counts.hits), (2, 1));
        assert_eq!(counts.hit_bytes, size(1));
        assert_eq!(extra.prefetch_objects, 3);
        assert_eq!(extra.prefetch_bytes, size(1) + size(2) + size(3));
        assert_eq!(
            (extra.prefetch_used_objects, extra.prefetch_used_bytes),
            (1, size(1))
        );
        assert_eq!(
            (extra.prefetch_wasted_objects, extra.prefetch_wasted_bytes),
            (2, size(2) + size(3))
        );
    }

    #[test]
    fn prefetch_evicted_before_use_is_wasted_and_prefetch_never_displaces_what_ranks_higher() {
        // Room for three audio segments, passed-first ranking, k = 2.
        // 0 s: session 0, title 0, segment 0: miss; prefetch 1 and 2 (room).
        // 4 s: segment 1: hit (used); prefetch 3: it evicts segment 0, passed by session 0.
        // 60 s: session 0 is gone. Session 1, title 1, segment 0: miss; everything of title 0 is passed and
        //   2 (prefetched, least recently used) goes: wasted. Its prefetch of title 1's 1 and 2 evicts 3 (wasted),
        //   then title 0's 1.
        // End: title 1's 1 and 2 were never asked for: wasted.
        let trace = [
            at(0, 0, 0, audio(0)),
            at(4_000, 0, 0, audio(1)),
            at(60_000, 1, 1, audio(0)),
        ];
        let (requests, info): (Vec<_>, Vec<_>) = trace.into_iter().unzip();
        let config = Config {
            rule: Rule::PassedFirst,
            prefetch: 2,
            history: None,
            fill: false,
        };
        let (counts, extra) = replay(&requests, &info, 2, SEED, 3 * AUDIO, config);
        assert_eq!(counts.hits, 1);
        assert_eq!(extra.prefetch_objects, 5);
        assert_eq!(extra.prefetch_used_objects, 1);
        assert_eq!(extra.prefetch_wasted_objects, 4);
        assert_eq!(extra.prefetch_wasted_bytes, 4 * AUDIO);
        assert_eq!(extra.prefetch_declined, 0);

        // A prefetch is only fetched if it ranks above what it would evict. Ahead protection, room for three.
        // 0 s: session 1, title 0, segment 5: miss; prefetch 6 and 7 (room; both ahead of session 1).
        // 0.1 s: session 0, same title, segment 0: miss. Every cached object is ahead of a session (5 of session
        //   0 now): the least recently used, 6 (prefetched, unused: wasted), goes. Its prefetch of 1 evicts 0
        //   (passed by both); its prefetch of 2 ranks like 1 and 7 (ahead, never used): not fetched.
        // End: 7 and 1 never asked for: wasted.
        let trace = [at(0, 1, 0, audio(5)), at(100, 0, 0, audio(0))];
        let (requests, info): (Vec<_>, Vec<_>) = trace.into_iter().unzip();
        let config = Config {
            rule: Rule::AheadProtected,
            prefetch: 2,
            history: None,
            fill: false,
        };
        let (counts, extra) = replay(&requests, &info, 1, SEED, 3 * AUDIO, config);
        assert_eq!(counts.hits, 0);
        assert_eq!(extra.prefetch_objects, 3);
        assert_eq!(extra.prefetch_declined, 1);
        assert_eq!(extra.prefetch_used_objects, 0);
        assert_eq!(extra.prefetch_wasted_objects, 3);
    }
}
