//! What a video edge knows about its viewers at the moment it serves a request, learned only from the requests it
//! has served so far (no look at the future). Pure: time comes in with each request. The cache simulator
//! (`benches`, `cachesim`) and the edge's eviction (`edge::viewers`) both rank objects with it.
//!
//! - the active sessions of each title and each one's position (the last segment index it fetched), its video
//!   rendition, how many segments it has watched and whether its rendition has settled. A session is active while
//!   its last request is at most [`ACTIVE_SEGMENTS`] segment durations old ([`ACTIVE_MS`] at the default 4 s);
//!   the first request of a session is its start.
//! - title popularity: session starts per second of each title, an exponentially decayed count (time constant
//!   [`POPULARITY_TAU_MS`]);
//! - how far sessions go: of the sessions that watched `w` segments, the share that watched `w + Δ` (the survival
//!   curve of all sessions seen);
//! - how renditions move: of the sessions at rendition `a` (settled or still switching), the share at rendition `b`
//!   a few segments later;
//! - where new sessions go: requests per session start for each track and segment index (in buckets of
//!   [`INDEX_BUCKET`] segments), over the titles long enough to have that index.
//!
//! From these it estimates, for any object, the rate at which it will be requested next ([`Knowledge::rate`]), the
//! number the value policy ranks by. The learned tables are re-read every [`REFRESH_REQUESTS`] requests, so the
//! estimates are cheap and change in steps.
//!
//! Titles and sessions are numbered by the caller (dense numbers: the tables are vectors indexed by them); a caller
//! that reuses numbers forgets the old holder first ([`Knowledge::forget_session`], [`Knowledge::forget_title`]).

/// The media tracks of a title.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Track {
    /// A video rendition by its rank among the title's renditions (0 the lowest bitrate; ranks from
    /// [`VIDEO_RANKS`] − 1 on share the last row of the learned tables).
    Video(u8),
    Audio,
}

/// The objects a player fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Object {
    MasterPlaylist,
    MediaPlaylist(Track),
    Segment(Track, u32),
}

/// What a video edge knows about one request when it serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Time of the request (ms, from any fixed start; it must not go back).
    pub time_ms: u64,
    /// The session (a dense number, see the module's notes).
    pub session: u32,
    /// The title (a dense number; the simulator's is its popularity rank, which a policy must not assume).
    pub title: u32,
    pub object: Object,
    /// Segments in each rendition of the title (the manifest).
    pub title_segments: u32,
}

/// A session with no request for this long has ended (players fetch a segment every 4 s).
pub const ACTIVE_MS: u64 = 30_000;
/// [`ACTIVE_MS`] in segment durations: a title of shorter segments (a replay played faster than real time, say)
/// ends its sessions as many segments after their last request.
pub const ACTIVE_SEGMENTS: f64 = ACTIVE_MS as f64 / (DEFAULT_SEGMENT_SECONDS * 1000.0);
/// Time constant of the decayed count of session starts per title.
pub const POPULARITY_TAU_MS: f64 = 6.0 * 3_600_000.0;
/// Segment indices are grouped in buckets this wide for the new-session request rates.
pub const INDEX_BUCKET: u32 = 8;
/// The learned tables are snapshotted every this many requests.
pub const REFRESH_REQUESTS: u64 = 8_192;
/// Renditions a session remembers, for learning how renditions move.
const RING: usize = 32;
/// A rendition unchanged for this many segments is settled.
const SETTLED_AFTER: u32 = 4;
/// The distances (segments) at which rendition moves are learned, one table each; a distance uses the table of the
/// first of these it does not exceed (or the last).
const RENDITION_LAGS: [u32; 3] = [2, 8, 24];
/// Video ranks with rows of their own in the learned tables.
pub const VIDEO_RANKS: usize = 8;
/// Tracks: the video ranks, then audio.
pub const TRACKS: usize = VIDEO_RANKS + 1;
const RENDITIONS: usize = VIDEO_RANKS;
const LAST_RANK: u8 = (VIDEO_RANKS - 1) as u8;
/// The segment duration the rate assumes (seconds) unless told a title's ([`Knowledge::set_segment_seconds`]).
pub const DEFAULT_SEGMENT_SECONDS: f64 = 4.0;
/// The decayed counts are rebased when the clock has run this many time constants past their base, well before
/// `exp` overflows (an edge runs for months).
const REBASE_AFTER_TAUS: f64 = 64.0;
/// Index buckets and watched counts are learned up to these (a session playing a live channel for days would
/// grow the tables without end); beyond them the last row is used.
const MAX_INDEX_BUCKETS: u32 = 4_096;
const MAX_WATCHED: u32 = 1 << 16;
/// Sessions of one title read for one rate, at most (an even sample of a larger audience).
const MAX_RATED_SESSIONS: usize = 512;

/// One session as the edge sees it.
#[derive(Debug, Clone, Default)]
pub struct SessionView {
    pub title: u32,
    /// The last segment index fetched (None before its first segment).
    pub position: Option<u32>,
    /// The video rendition of its last video segment.
    pub rendition: u8,
    /// Distinct segment indices fetched.
    pub watched: u32,
    /// `watched` when the rendition last changed.
    pub rendition_since: u32,
    pub last_ms: u64,
    /// In its title's active list.
    listed: bool,
    /// Renditions of its last video segments (and whether settled then), by `video_fetches % RING`.
    history: [(u8, bool); RING],
    video_fetches: u32,
}

impl SessionView {
    pub fn settled(&self) -> bool {
        self.watched >= self.rendition_since + SETTLED_AFTER
    }
}

/// The edge's knowledge, updated with every request it serves.
#[derive(Debug, Clone)]
pub struct Knowledge {
    sessions: Vec<SessionView>,
    /// Per title: sessions that may be active (stale ones are skipped and pruned).
    active: Vec<Vec<u32>>,
    /// Per title: the length of `active` after its last pruning.
    listed_after_prune: Vec<usize>,
    /// Per title: Σ exp((t_start − base) / τ) over its session starts (the decayed count, scaled by
    /// exp((now − base) / τ)).
    starts: Vec<f64>,
    /// The base of the decayed counts (ms): moved forward now and then so that `exp` stays finite.
    base_ms: u64,
    /// Trace time the knowledge began (ms), for the decayed count's normalisation.
    origin_ms: u64,
    now_ms: u64,
    /// Per second of the decayed count: exp(−now/τ) / (τ·(1 − exp(−(now − origin)/τ))).
    start_rate_scale: f64,
    /// `reached[w]`: sessions that watched at least `w` segments.
    reached: Vec<u64>,
    /// Segment requests per track and index bucket.
    index_requests: [Vec<u64>; TRACKS],
    /// Session starts per bucket of title length (for the titles long enough to have an index).
    starts_by_length: Vec<u64>,
    /// Rendition moves: [lag][settled][from][to].
    moves: [[[[u64; RENDITIONS]; RENDITIONS]; 2]; RENDITION_LAGS.len()],
    requests_seen: u64,
    snapshot: Snapshot,
    /// exp(−(now − base)/τ).
    decay_now: f64,
    /// Per title: its segment duration (seconds), which the rate and the activity window assume.
    segment_seconds: Vec<f64>,
}

/// The learned tables as last re-read.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    reached: Vec<f64>,
    /// Requests per session start for one segment of a track in an index bucket.
    per_start: [Vec<f64>; TRACKS],
    moves: [[[[f64; RENDITIONS]; RENDITIONS]; 2]; RENDITION_LAGS.len()],
}

impl Knowledge {
    pub fn new(titles: usize) -> Self {
        let mut knowledge = Knowledge {
            sessions: Vec::new(),
            active: vec![Vec::new(); titles],
            listed_after_prune: vec![0; titles],
            starts: vec![0.0; titles],
            base_ms: 0,
            origin_ms: 0,
            now_ms: 0,
            start_rate_scale: 0.0,
            reached: Vec::new(),
            index_requests: Default::default(),
            starts_by_length: Vec::new(),
            moves: [[[[0; RENDITIONS]; RENDITIONS]; 2]; RENDITION_LAGS.len()],
            requests_seen: 0,
            snapshot: Snapshot::default(),
            decay_now: 1.0,
            segment_seconds: vec![DEFAULT_SEGMENT_SECONDS; titles],
        };
        knowledge.refresh();
        knowledge
    }

    /// Forgets the sessions (they ended overnight) and keeps what was learned: the next trace's times start at
    /// `offset_ms` on this knowledge's clock.
    pub fn end_of_day(&mut self) -> u64 {
        for list in &mut self.active {
            list.clear();
        }
        self.listed_after_prune.fill(0);
        self.sessions.clear();
        self.refresh();
        self.now_ms + 1
    }

    /// Sets a title's segment duration (a positive number of seconds; the default is
    /// [`DEFAULT_SEGMENT_SECONDS`]).
    pub fn set_segment_seconds(&mut self, title: u32, seconds: f64) {
        self.grow(title as usize);
        if seconds.is_finite() && seconds > 0.0 {
            self.segment_seconds[title as usize] = seconds;
        }
    }

    /// How long (ms) a session of `title` stays active after its last request.
    fn active_ms(&self, title: usize) -> u64 {
        let seconds = self
            .segment_seconds
            .get(title)
            .copied()
            .unwrap_or(DEFAULT_SEGMENT_SECONDS);
        (ACTIVE_SEGMENTS * seconds * 1000.0) as u64
    }

    /// Whether session `id` is active at `time_ms` (a request's time, as [`observe`](Self::observe) is given it
    /// with no offset).
    pub fn is_active(&self, id: u32, time_ms: u64) -> bool {
        self.session(id)
            .is_some_and(|s| s.last_ms + self.active_ms(s.title as usize) > time_ms)
    }

    fn grow(&mut self, title: usize) {
        if title >= self.starts.len() {
            self.starts.resize(title + 1, 0.0);
            self.active.resize(title + 1, Vec::new());
            self.listed_after_prune.resize(title + 1, 0);
            self.segment_seconds
                .resize(title + 1, DEFAULT_SEGMENT_SECONDS);
        }
    }

    /// The session numbered `id`, once it has made a request.
    pub fn session(&self, id: u32) -> Option<&SessionView> {
        self.sessions.get(id as usize).filter(|s| s.last_ms > 0)
    }

    /// Forgets sessions (they ended), so that their numbers can be given to new sessions.
    pub fn forget_sessions(&mut self, ids: &[u32]) {
        let mut titles = Vec::new();
        for &id in ids {
            if let Some(session) = self.sessions.get_mut(id as usize) {
                titles.push(session.title as usize);
                *session = SessionView::default();
            }
        }
        titles.sort_unstable();
        titles.dedup();
        for title in titles {
            let Some(list) = self.active.get_mut(title) else {
                continue;
            };
            let sessions = &self.sessions;
            list.retain(|&other| {
                let s = &sessions[other as usize];
                s.last_ms > 0 && s.title as usize == title
            });
            self.listed_after_prune[title] = list.len();
        }
    }

    /// Forgets title `id`'s popularity and sessions, so that its number can be given to another title.
    pub fn forget_title(&mut self, id: u32) {
        let sessions: Vec<u32> = self.active.get(id as usize).cloned().unwrap_or_default();
        self.forget_sessions(&sessions);
        if let Some(starts) = self.starts.get_mut(id as usize) {
            *starts = 0.0;
        }
    }

    /// The sessions of a title active now.
    pub fn active_sessions(&self, title: u32) -> impl Iterator<Item = &SessionView> {
        let now = self.now_ms;
        let window = self.active_ms(title as usize);
        self.active
            .get(title as usize)
            .into_iter()
            .flatten()
            .map(|&id| &self.sessions[id as usize])
            .filter(move |s| s.title == title && s.last_ms + window >= now)
    }

    /// Learns from one request (its time shifted by `offset_ms`), before the cache serves it.
    pub fn observe(&mut self, info: &RequestInfo, offset_ms: u64) {
        let now = info.time_ms + offset_ms + 1; // + 1: a last_ms of 0 means "never seen"
        if now != self.now_ms {
            self.now_ms = now;
            let tau = POPULARITY_TAU_MS;
            let since_base = now.saturating_sub(self.base_ms) as f64;
            if since_base / tau > REBASE_AFTER_TAUS {
                let shift = (-since_base / tau).exp();
                self.starts.iter_mut().for_each(|s| *s *= shift);
                self.base_ms = now;
            }
            let elapsed = now.saturating_sub(self.origin_ms) as f64;
            self.decay_now = (-(now.saturating_sub(self.base_ms) as f64) / tau).exp();
            self.start_rate_scale = 1.0 / (tau / 1000.0 * (1.0 - (-elapsed / tau).exp()));
        }
        let id = info.session as usize;
        if id >= self.sessions.len() {
            self.sessions.resize(id + 1, SessionView::default());
        }
        let title = info.title as usize;
        self.grow(title);
        let new_session = self.sessions[id].last_ms == 0;
        if new_session {
            self.sessions[id].title = info.title;
            self.starts[title] +=
                (now.saturating_sub(self.base_ms) as f64 / POPULARITY_TAU_MS).exp();
            self.bump_reached(0);
            let bucket = (info.title_segments / INDEX_BUCKET).min(MAX_INDEX_BUCKETS) as usize;
            if bucket >= self.starts_by_length.len() {
                self.starts_by_length.resize(bucket + 1, 0);
            }
            self.starts_by_length[bucket] += 1;
        }
        let session = &mut self.sessions[id];
        session.last_ms = now;
        if let Object::Segment(track, index) = info.object {
            if session.position != Some(index) {
                session.watched += 1;
                session.position = Some(index);
                let watched = session.watched;
                self.bump_reached(watched);
            }
            let session = &mut self.sessions[id];
            if let Track::Video(rank) = track {
                let rendition = rank.min(LAST_RANK);
                if session.video_fetches > 0 && rendition != session.rendition {
                    session.rendition_since = session.watched;
                }
                session.rendition = rendition;
                let settled = session.settled();
                let n = session.video_fetches as usize;
                for (lag_index, &lag) in RENDITION_LAGS.iter().enumerate() {
                    if n >= lag as usize {
                        let (from, was_settled) = session.history[(n - lag as usize) % RING];
                        self.moves[lag_index][usize::from(was_settled)][usize::from(from)]
                            [usize::from(rendition)] += 1;
                    }
                }
                let session = &mut self.sessions[id];
                session.history[n % RING] = (rendition, settled);
                session.video_fetches += 1;
            }
            let bucket = (index / INDEX_BUCKET).min(MAX_INDEX_BUCKETS) as usize;
            let counts = &mut self.index_requests[track_index(track)];
            if bucket >= counts.len() {
                counts.resize(bucket + 1, 0);
            }
            counts[bucket] += 1;
        }
        let session = &mut self.sessions[id];
        if !session.listed {
            session.listed = true;
            self.active[title].push(info.session);
        }
        // Prune the title's ended sessions once its list has doubled since the last pruning: a cost per request
        // that does not grow with the title's audience.
        if self.active[title].len() >= 2 * self.listed_after_prune[title].max(8) {
            let window = self.active_ms(title);
            let sessions = &mut self.sessions;
            self.active[title].retain(|&other| {
                let s = &mut sessions[other as usize];
                if s.title as usize != title {
                    return false; // its number went to a session of another title
                }
                let live = s.last_ms + window >= now;
                s.listed = live;
                live
            });
            self.listed_after_prune[title] = self.active[title].len();
        }
        self.requests_seen += 1;
        if self.requests_seen.is_multiple_of(REFRESH_REQUESTS) {
            self.refresh();
        }
    }

    fn bump_reached(&mut self, watched: u32) {
        let w = watched.min(MAX_WATCHED) as usize;
        if w >= self.reached.len() {
            self.reached.resize(w + 1, 0);
        }
        self.reached[w] += 1;
    }

    /// Re-reads the learned tables.
    pub fn refresh(&mut self) {
        self.snapshot.reached = self.reached.iter().map(|&r| r as f64).collect();
        // Starts on titles at least as long as each bucket's first index: a suffix sum over title lengths.
        let mut eligible = vec![0u64; self.starts_by_length.len()];
        let mut running = 0;
        for (bucket, &starts) in self.starts_by_length.iter().enumerate().rev() {
            running += starts;
            eligible[bucket] = running;
        }
        for (track, counts) in self.index_requests.iter().enumerate() {
            self.snapshot.per_start[track] = counts
                .iter()
                .enumerate()
                .map(|(bucket, &requests)| {
                    let starts = eligible.get(bucket).copied().unwrap_or(0);
                    if starts == 0 {
                        0.0
                    } else {
                        requests as f64 / (starts as f64 * f64::from(INDEX_BUCKET))
                    }
                })
                .collect();
        }
        for (lag, table) in self.moves.iter().enumerate() {
            for (settled, rows) in table.iter().enumerate() {
                for (from, row) in rows.iter().enumerate() {
                    let total: u64 = row.iter().sum();
                    for (to, &count) in row.iter().enumerate() {
                        // Before anything is learned, a session is assumed to stay where it is.
                        self.snapshot.moves[lag][settled][from][to] = if total == 0 {
                            f64::from(u8::from(from == to))
                        } else {
                            count as f64 / total as f64
                        };
                    }
                }
            }
        }
    }

    /// Session starts per second of a title, now.
    pub fn start_rate(&self, title: u32) -> f64 {
        self.starts.get(title as usize).copied().unwrap_or(0.0)
            * self.decay_now
            * self.start_rate_scale
    }

    /// The share of sessions that have watched `watched` segments and go on to watch `more` more.
    pub fn continues(&self, watched: u32, more: u32) -> f64 {
        let reached = &self.snapshot.reached;
        let at = reached.get(watched as usize).copied().unwrap_or(0.0);
        if at == 0.0 {
            return 0.0;
        }
        reached
            .get((watched + more) as usize)
            .copied()
            .unwrap_or(0.0)
            / at
    }

    /// The chance that a session at `from` (settled or not) fetches `to` `ahead` segments later.
    pub fn rendition_chance(&self, settled: bool, from: u8, to: u8, ahead: u32) -> f64 {
        let lag = RENDITION_LAGS
            .iter()
            .position(|&l| ahead <= l)
            .unwrap_or(RENDITION_LAGS.len() - 1);
        let (from, to) = (from.min(LAST_RANK), to.min(LAST_RANK));
        self.snapshot.moves[lag][usize::from(settled)][usize::from(from)][usize::from(to)]
    }

    /// Requests per session start for segment `index` of `track`, over titles that long.
    pub fn per_start(&self, track: Track, index: u32) -> f64 {
        self.snapshot.per_start[track_index(track)]
            .get((index / INDEX_BUCKET) as usize)
            .copied()
            .unwrap_or(0.0)
    }

    /// The chance that this session fetches segment `index` of `track` (0 if it has passed it or has no
    /// position yet), and how many segments ahead of it that is.
    pub fn follows(&self, session: &SessionView, track: Track, index: u32) -> Option<(u32, f64)> {
        let position = session.position?;
        if index <= position {
            return None;
        }
        let ahead = index - position;
        let mut chance = self.continues(session.watched, ahead);
        if let Track::Video(rendition) = track {
            chance *= self.rendition_chance(session.settled(), session.rendition, rendition, ahead);
        }
        Some((ahead, chance))
    }

    /// The estimated rate (requests per second) at which `object` of `title` will be asked for: by the active
    /// sessions behind it (each: the chance it gets there, over the seconds until it does) and by sessions not
    /// started yet (the title's start rate × requests per start at that index and track).
    pub fn rate(&self, title: u32, object: Object) -> f64 {
        let start_rate = self.start_rate(title);
        match object {
            // Every session fetches the master playlist and one or two media playlists: tiny, kept while the title
            // is watched at all.
            Object::MasterPlaylist | Object::MediaPlaylist(_) => start_rate,
            Object::Segment(track, index) => {
                // A title with a large audience is rated from an even sample of it, scaled up.
                let listed = self.active.get(title as usize).map_or(0, Vec::len);
                let step = listed.div_ceil(MAX_RATED_SESSIONS).max(1);
                let seconds = self
                    .segment_seconds
                    .get(title as usize)
                    .copied()
                    .unwrap_or(DEFAULT_SEGMENT_SECONDS);
                let followers: f64 = self
                    .active_sessions(title)
                    .step_by(step)
                    .filter_map(|s| self.follows(s, track, index))
                    .map(|(ahead, chance)| chance / (f64::from(ahead) * seconds))
                    .sum::<f64>()
                    * step as f64;
                followers + start_rate * self.per_start(track, index)
            }
        }
    }
}

pub fn track_index(track: Track) -> usize {
    match track {
        Track::Video(rank) => usize::from(rank).min(RENDITIONS - 1),
        Track::Audio => RENDITIONS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn info(time_ms: u64, session: u32, title: u32, object: Object) -> RequestInfo {
        RequestInfo {
            time_ms,
            session,
            title,
            object,
            title_segments: 100,
        }
    }

    #[test]
    fn positions_and_activity() {
        let mut k = Knowledge::new(3);
        let v = |r, i| Object::Segment(Track::Video(r), i);
        k.observe(&info(0, 0, 1, Object::MasterPlaylist), 0);
        assert_eq!(k.session(0).unwrap().position, None);
        k.observe(&info(1_000, 0, 1, v(1, 5)), 0);
        k.observe(&info(1_000, 0, 1, Object::Segment(Track::Audio, 5)), 0);
        k.observe(&info(5_000, 0, 1, v(2, 6)), 0);
        let s = k.session(0).unwrap();
        assert_eq!((s.position, s.rendition, s.watched), (Some(6), 2, 2));
        assert!(!s.settled());
        assert_eq!(k.active_sessions(1).count(), 1);
        // 30 s later another title's request moves the clock: session 0 is no longer active.
        k.observe(&info(35_001, 1, 2, v(0, 0)), 0);
        assert_eq!(k.active_sessions(1).count(), 0);
        assert_eq!(k.active_sessions(2).count(), 1);
    }

    #[test]
    fn survival_and_start_rates_are_learned() {
        let mut k = Knowledge::new(2);
        // Four sessions of title 0 start; two watch 1 segment, one 2, one 4.
        let mut t = 0;
        for (session, watched) in [(0, 1), (1, 1), (2, 2), (3, 4)] {
            k.observe(&info(t, session, 0, Object::MasterPlaylist), 0);
            for i in 0..watched {
                t += 4_000;
                k.observe(&info(t, session, 0, Object::Segment(Track::Audio, i)), 0);
            }
        }
        k.refresh();
        assert_eq!(k.continues(0, 1), 1.0);
        assert_eq!(k.continues(1, 1), 0.5);
        assert_eq!(k.continues(2, 2), 0.5);
        assert_eq!(k.continues(4, 1), 0.0);
        assert!(k.start_rate(0) > 0.0);
        assert_eq!(k.start_rate(1), 0.0);
        // 8 audio requests for indices 0-3 (bucket 0), 4 starts on 100-segment titles: 8 / (4 × 8) per segment.
        assert_eq!(k.per_start(Track::Audio, 3), 0.25);
        assert_eq!(k.per_start(Track::Audio, 8), 0.0);
    }

    #[test]
    fn rate_adds_the_sessions_behind_and_the_new_ones() {
        let mut k = Knowledge::new(2);
        let audio = |i| Object::Segment(Track::Audio, i);
        // As above: four sessions of title 0 watched 1, 1, 2 and 4 segments (reached = 4, 4, 2, 1, 1).
        let mut t = 0;
        for (session, watched) in [(0, 1), (1, 1), (2, 2), (3, 4)] {
            k.observe(&info(t, session, 0, Object::MasterPlaylist), 0);
            for i in 0..watched {
                t += 4_000;
                k.observe(&info(t, session, 0, audio(i)), 0);
            }
        }
        // A fifth is playing segment 0 now.
        k.observe(&info(t + 100_000, 4, 0, Object::MasterPlaylist), 0);
        k.observe(&info(t + 100_000, 4, 0, audio(0)), 0);
        k.refresh();
        assert_eq!(k.active_sessions(0).count(), 1);
        // reached[1] = 5 now (the fifth watched 1), reached[3] = 1: it gets to segment 2 with chance 1/5, in 8 s.
        let followers = 0.2 / 8.0;
        // Bucket 0 of audio: 9 requests over 5 starts of 8 segments.
        let new_ones = k.start_rate(0) * 9.0 / 40.0;
        assert!((k.rate(0, audio(2)) - (followers + new_ones)).abs() < 1e-12);
        // Segment 0 is passed: only new sessions will ask for it.
        assert!((k.rate(0, audio(0)) - new_ones).abs() < 1e-12);
        // An unwatched title: nothing.
        assert_eq!(k.rate(1, audio(2)), 0.0);
        // Video: the rendition must match; before any video is learned a session is assumed to stay where it is.
        assert_eq!(k.rendition_chance(true, 2, 2, 5), 1.0);
        assert_eq!(k.rendition_chance(true, 2, 3, 5), 0.0);
    }

    #[test]
    fn rendition_moves_are_learned() {
        let mut k = Knowledge::new(1);
        k.observe(&info(0, 0, 0, Object::MasterPlaylist), 0);
        // Renditions 1, 2, then 3 for the rest: from rendition 1, two segments later it is at 3.
        for (i, r) in [1, 2, 3, 3, 3, 3, 3, 3].into_iter().enumerate() {
            k.observe(
                &info(
                    4_000 * i as u64 + 1,
                    0,
                    0,
                    Object::Segment(Track::Video(r), i as u32),
                ),
                0,
            );
        }
        k.refresh();
        assert_eq!(k.rendition_chance(false, 1, 3, 2), 1.0);
        assert_eq!(k.rendition_chance(false, 1, 1, 2), 0.0);
        // Not settled at 3 yet two segments later: learned from segments 2 to 4 and 3 to 5, it stays.
        assert_eq!(k.rendition_chance(false, 3, 3, 2), 1.0);
        assert_eq!(k.rendition_chance(false, 2, 3, 2), 1.0);
        let s = k.session(0).unwrap();
        assert!(s.settled());
        assert_eq!((s.rendition, s.position), (3, Some(7)));
    }
}
