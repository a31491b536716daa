//! A synthetic, deterministic VOD request trace: a catalogue of titles with Zipf popularity, each cut into 4 s
//! segments in four video renditions and one audio rendition, watched by a fixed number of concurrent viewers
//! whose sessions start at the beginning or at a resume point, switch rendition now and then (ABR), and are
//! abandoned early more often than watched to the end. Every request is an object key and its size; the same key
//! always has the same size.
//!
//! Beside each request the trace keeps what a video edge can know when it serves it ([`RequestInfo`]): the trace
//! time, the session (one viewer's playback of one title: the edge learns it from CMCD `sid` or the playback
//! token), the title, the object (master playlist, media playlist, or segment N of a rendition) and the title's
//! segment count (from the media playlist or MPD the edge has served). A session's position is the segment it
//! requested last; nothing about a session's future (where it will stop, which rendition its bandwidth sustains) is
//! exposed. The extra fields are recorded alongside and draw nothing from the generator, so a seed gives exactly
//! the requests it gave before they existed.
//!
//! [`TraceParams::day`] draws another day of viewing of the same catalogue (same titles, lengths, object sizes and
//! popularity, other viewers and sessions): day 0 is the evaluated trace, an earlier day is the history a control
//! plane would predict tonight's fill from.

use benches::rng::unit_interval;
pub use benches::rng::{SplitMix64, mix64};
pub use shared::viewing::{Object, RequestInfo, Track};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Seconds of media per segment.
pub const SEGMENT_SECONDS: u64 = 4;
/// Video renditions of every title, lowest first (bit/s).
pub const VIDEO_BITRATES_BPS: [u64; 4] = [400_000, 1_200_000, 3_000_000, 6_000_000];
/// The one audio rendition (bit/s).
pub const AUDIO_BITRATE_BPS: u64 = 128_000;
/// Size of a master playlist (bytes); each title's varies by up to ±25 % around it.
const MASTER_PLAYLIST_BYTES: u64 = 2_048;
/// Size of a media playlist (bytes); each one varies by up to ±25 % around it.
const MEDIA_PLAYLIST_BYTES: u64 = 8_192;
/// Title durations are uniform in this range (minutes).
const TITLE_MINUTES: std::ops::RangeInclusive<u64> = 20..=150;
/// Share of sessions that start at segment 0; the others resume somewhere in 5–90 % of the title.
const START_AT_BEGINNING: f64 = 0.8;
/// Players fill their buffer at start: this many segments are fetched 1 s apart, then one per 4 s.
const STARTUP_SEGMENTS: u32 = 3;
/// Mean pause between two sessions of one viewer (seconds).
const MEAN_IDLE_SECONDS: f64 = 60.0;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceParams {
    pub seed: u64,
    /// Number of titles in the catalogue.
    pub titles: u32,
    /// Zipf exponent of title popularity (rank r is chosen with weight 1/r^alpha).
    pub zipf_alpha: f64,
    /// Length of the trace, in requests.
    pub requests: usize,
    /// Viewers watching at the same time (each plays sessions back to back with a pause between them).
    pub viewers: u32,
    /// Which day of viewing of the catalogue: 0 is the trace the seed always gave; any other day keeps the catalogue,
    /// the object sizes and the popularity of the titles and draws other sessions.
    pub day: u64,
}

/// One request: which object, and how many bytes it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub key: u64,
    pub size: u32,
}

/// The generated trace and how it came about.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub requests: Vec<Request>,
    /// What the edge knows about each request, index for index with `requests`.
    pub info: Vec<RequestInfo>,
    /// Sessions started (the last ones are cut short by the end of the trace).
    pub sessions: u64,
    /// Simulated wall-clock time the trace covers (ms).
    pub span_ms: u64,
    /// The catalogue: segments per rendition of each title (what a control plane knows of every title, watched
    /// or not).
    pub title_segments: Vec<u32>,
}

/// 0–3 for the video renditions, 4 for audio.
pub fn track_code(track: Track) -> u64 {
    match track {
        Track::Video(rendition) => u64::from(rendition),
        Track::Audio => 4,
    }
}

/// The object's key: title in the high 32 bits, then an 8-bit kind, then a 24-bit segment index.
pub fn object_key(title: u32, object: Object) -> u64 {
    let (kind, index) = match object {
        Object::Segment(track, index) => (track_code(track), u64::from(index)),
        Object::MediaPlaylist(track) => (5 + track_code(track), 0),
        Object::MasterPlaylist => (10, 0),
    };
    (u64::from(title) << 32) | (kind << 24) | index
}

/// The object's size: segments are bitrate × 4 s, video with ±25 % VBR variation (fixed per segment); playlists
/// vary around their nominal size. Derived from the key, so a key always has one size.
pub fn object_size(seed: u64, key: u64, object: Object) -> u32 {
    let variation = 0.75 + 0.5 * unit_interval(mix64(seed ^ mix64(key)));
    let bytes = match object {
        Object::Segment(Track::Video(rendition), _) => {
            let nominal = VIDEO_BITRATES_BPS[usize::from(rendition)] * SEGMENT_SECONDS / 8;
            (nominal as f64 * variation) as u64
        }
        Object::Segment(Track::Audio, _) => AUDIO_BITRATE_BPS * SEGMENT_SECONDS / 8,
        Object::MediaPlaylist(_) => (MEDIA_PLAYLIST_BYTES as f64 * variation) as u64,
        Object::MasterPlaylist => (MASTER_PLAYLIST_BYTES as f64 * variation) as u64,
    };
    bytes as u32
}

/// Draws title ranks 0.. with probability proportional to 1/(rank+1)^alpha, by binary search of the CDF.
#[derive(Debug, Clone)]
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    pub fn new(n: u32, alpha: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / f64::from(rank).powf(alpha);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    pub fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.next_f64() * total;
        let rank = self.cumulative.partition_point(|&c| c <= target);
        rank.min(self.cumulative.len() - 1) as u32
    }
}

/// One viewer's playback of one title.
#[derive(Debug, Clone)]
struct Session {
    id: u32,
    title: u32,
    next_segment: u32,
    /// Exclusive.
    end_segment: u32,
    /// The video rendition being fetched.
    rendition: u8,
    /// The rendition the viewer's bandwidth sustains; ABR climbs towards it.
    sustainable: u8,
    startup_left: u32,
}

/// How many segments a session plays from its start point: many viewers leave within the first minutes, most of
/// the rest after a while, and some watch to the end.
fn watched_segments(rng: &mut SplitMix64, remaining: u32) -> u32 {
    let seconds = match rng.next_f64() {
        p if p < 0.35 => rng.exponential(90.0), // sampling: gone within the first minutes
        p if p < 0.80 => rng.exponential(25.0 * 60.0), // watched a while
        _ => f64::INFINITY,                     // to the end
    };
    let segments = (seconds / SEGMENT_SECONDS as f64).ceil().max(1.0);
    if segments >= f64::from(remaining) {
        remaining
    } else {
        segments as u32
    }
}

/// The rendition a viewer's bandwidth sustains: mostly the top two.
fn sustainable_rendition(rng: &mut SplitMix64) -> u8 {
    match rng.next_f64() {
        p if p < 0.10 => 0,
        p if p < 0.30 => 1,
        p if p < 0.70 => 2,
        _ => 3,
    }
}

/// Generates the trace: viewers interleaved in simulated time (a segment pair every 4 s per viewer).
pub fn generate(params: &TraceParams) -> Trace {
    let mut catalogue_rng = SplitMix64::new(params.seed ^ 0xc0ff_ee00_cafe_f00d);
    let title_segments: Vec<u32> = (0..params.titles)
        .map(|_| {
            let span = TITLE_MINUTES.end() - TITLE_MINUTES.start() + 1;
            let minutes = TITLE_MINUTES.start() + catalogue_rng.below(span);
            (minutes * 60 / SEGMENT_SECONDS) as u32
        })
        .collect();
    let popularity = Zipf::new(params.titles.max(1), params.zipf_alpha);
    // Day 0 keeps the generator the seed always had; other days draw other sessions of the same catalogue.
    let mut rng = SplitMix64::new(match params.day {
        0 => params.seed,
        day => mix64(params.seed ^ mix64(day ^ 0xda7a_da7a_da7a_da7a)),
    });
    let mut requests = Vec::with_capacity(params.requests);
    let mut info = Vec::with_capacity(params.requests);
    let push = |requests: &mut Vec<Request>,
                info: &mut Vec<RequestInfo>,
                (time_ms, session): (u64, u32),
                title: u32,
                object: Object| {
        let key = object_key(title, object);
        requests.push(Request {
            key,
            size: object_size(params.seed, key, object),
        });
        info.push(RequestInfo {
            time_ms,
            session,
            title,
            object,
            title_segments: title_segments[title as usize],
        });
    };

    // Next event time per viewer (ms); ties are broken by the viewer number, so the order is deterministic.
    let mut events: BinaryHeap<Reverse<(u64, u32)>> = (0..params.viewers)
        .map(|viewer| Reverse((rng.below(60_000), viewer)))
        .collect();
    let mut viewers: Vec<Option<Session>> = vec![None; params.viewers as usize];
    let (mut sessions, mut now_ms) = (0u64, 0u64);
    while requests.len() < params.requests {
        let Some(Reverse((at_ms, viewer))) = events.pop() else {
            break;
        };
        now_ms = at_ms;
        let slot = &mut viewers[viewer as usize];
        let next_ms = match slot.take() {
            None => {
                let id = sessions as u32;
                sessions += 1;
                let title = popularity.sample(&mut rng);
                let segments = title_segments[title as usize];
                let start = if rng.chance(START_AT_BEGINNING) {
                    0
                } else {
                    let from = segments / 20;
                    from + rng.below(u64::from(segments * 9 / 10 - from).max(1)) as u32
                };
                let sustainable = sustainable_rendition(&mut rng);
                // Players start low and climb: at most the second rendition first.
                let rendition = sustainable.min(1);
                let at = (at_ms, id);
                push(&mut requests, &mut info, at, title, Object::MasterPlaylist);
                push(
                    &mut requests,
                    &mut info,
                    at,
                    title,
                    Object::MediaPlaylist(Track::Video(rendition)),
                );
                push(
                    &mut requests,
                    &mut info,
                    at,
                    title,
                    Object::MediaPlaylist(Track::Audio),
                );
                *slot = Some(Session {
                    id,
                    title,
                    next_segment: start,
                    end_segment: start + watched_segments(&mut rng, segments - start),
                    rendition,
                    sustainable,
                    startup_left: STARTUP_SEGMENTS,
                });
                at_ms + 200
            }
            Some(mut session) => {
                let at = (at_ms, session.id);
                let before = session.rendition;
                adapt_bitrate(&mut rng, &mut session);
                if session.rendition != before {
                    let track = Track::Video(session.rendition);
                    let playlist = Object::MediaPlaylist(track);
                    push(&mut requests, &mut info, at, session.title, playlist);
                }
                let index = session.next_segment;
                let video = Object::Segment(Track::Video(session.rendition), index);
                push(&mut requests, &mut info, at, session.title, video);
                push(
                    &mut requests,
                    &mut info,
                    at,
                    session.title,
                    Object::Segment(Track::Audio, index),
                );
                session.next_segment += 1;
                if session.next_segment >= session.end_segment {
                    at_ms + (rng.exponential(MEAN_IDLE_SECONDS) * 1000.0) as u64
                } else {
                    let pace_ms = if session.startup_left > 0 {
                        session.startup_left -= 1;
                        1_000
                    } else {
                        SEGMENT_SECONDS * 1000
                    };
                    *slot = Some(session);
                    at_ms + pace_ms
                }
            }
        };
        events.push(Reverse((next_ms, viewer)));
    }
    requests.truncate(params.requests);
    info.truncate(params.requests);
    Trace {
        requests,
        info,
        sessions,
        span_ms: now_ms,
        title_segments,
    }
}

/// ABR: climb one rendition per segment (half the time) towards what the bandwidth sustains; now and then drop
/// one for a congestion dip, and rarely see the sustainable rendition itself change.
fn adapt_bitrate(rng: &mut SplitMix64, session: &mut Session) {
    let top = (VIDEO_BITRATES_BPS.len() - 1) as u8;
    if rng.chance(0.005) {
        session.sustainable = if rng.chance(0.5) {
            session.sustainable.saturating_sub(1)
        } else {
            (session.sustainable + 1).min(top)
        };
    }
    let above_sustainable = session.rendition > session.sustainable;
    if above_sustainable || (session.rendition > 0 && rng.chance(0.01)) {
        session.rendition -= 1;
    } else if session.rendition < session.sustainable && rng.chance(0.5) {
        session.rendition += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FINGERPRINT: u64 = 0xa2ad_11bd_2910_ff65;

    fn params(seed: u64) -> TraceParams {
        TraceParams {
            seed,
            titles: 200,
            zipf_alpha: 0.9,
            requests: 50_000,
            viewers: 50,
            day: 0,
        }
    }

    #[test]
    fn same_seed_same_trace_other_seed_other_trace() {
        let a = generate(&params(7));
        assert_eq!(a, generate(&params(7)));
        assert_eq!(a.requests.len(), 50_000);
        assert_ne!(a.requests, generate(&params(8)).requests);
    }

    /// A fingerprint of the requests (keys and sizes) of `params(1)`, taken from the generator before the trace
    /// recorded anything beside them: the same seed must keep giving the same requests.
    #[test]
    fn the_requests_of_a_seed_never_change() {
        let trace = generate(&params(1));
        let fingerprint = trace.requests.iter().fold(0u64, |acc, r| {
            mix64(acc ^ r.key).wrapping_add(u64::from(r.size))
        });
        assert_eq!(fingerprint, FINGERPRINT, "{fingerprint:#x}");
        assert_eq!(trace.sessions, 152);
    }

    #[test]
    fn the_info_says_what_each_request_is() {
        let trace = generate(&params(2));
        assert_eq!(trace.info.len(), trace.requests.len());
        let mut last_ms = 0;
        // Per session: its title and the last segment index it fetched.
        let mut sessions: HashMap<u32, (u32, Option<u32>)> = HashMap::new();
        for (r, i) in trace.requests.iter().zip(&trace.info) {
            assert_eq!(r.key, object_key(i.title, i.object));
            assert_eq!(r.size, object_size(2, r.key, i.object));
            assert!(i.time_ms >= last_ms, "time goes forward");
            last_ms = i.time_ms;
            assert_eq!(i.title_segments, trace.title_segments[i.title as usize]);
            let (title, position) = sessions.entry(i.session).or_insert((i.title, None));
            assert_eq!(*title, i.title, "a session plays one title");
            if let Object::Segment(_, index) = i.object {
                assert!(index < i.title_segments);
                // Video and audio of one index, then the next index.
                if let Some(p) = *position {
                    assert!(index == p || index == p + 1, "{p} then {index}");
                }
                *position = Some(index);
            } else if let Object::MasterPlaylist = i.object {
                assert_eq!(*position, None, "the master playlist opens a session");
            }
        }
        assert_eq!(sessions.len() as u64, trace.sessions);
    }

    #[test]
    fn another_day_keeps_the_catalogue_and_draws_other_sessions() {
        let today = generate(&params(3));
        let other = generate(&TraceParams {
            day: 1,
            ..params(3)
        });
        assert_eq!(today.title_segments, other.title_segments);
        assert_ne!(today.requests, other.requests);
        let mut sizes = HashMap::new();
        for r in today.requests.iter().chain(&other.requests) {
            assert_eq!(*sizes.entry(r.key).or_insert(r.size), r.size);
        }
    }

    #[test]
    fn a_key_always_has_one_size() {
        let trace = generate(&params(1));
        let mut sizes = HashMap::new();
        for r in &trace.requests {
            assert_eq!(*sizes.entry(r.key).or_insert(r.size), r.size, "{:x}", r.key);
        }
    }

    #[test]
    fn sizes_follow_the_bitrates() {
        let seg = |track| object_size(3, 42, Object::Segment(track, 0));
        assert_eq!(seg(Track::Audio), 64_000);
        let top = seg(Track::Video(3));
        assert!((2_250_000..=3_750_000).contains(&top), "{top}");
        let low = seg(Track::Video(0));
        assert!((150_000..=250_000).contains(&low), "{low}");
        let master = object_size(3, 42, Object::MasterPlaylist);
        assert!((1_536..=2_560).contains(&master), "{master}");
    }

    #[test]
    fn keys_of_different_objects_differ() {
        let objects = [
            Object::MasterPlaylist,
            Object::MediaPlaylist(Track::Audio),
            Object::MediaPlaylist(Track::Video(0)),
            Object::Segment(Track::Audio, 0),
            Object::Segment(Track::Video(0), 0),
            Object::Segment(Track::Video(3), 0),
            Object::Segment(Track::Video(0), 1),
        ];
        let mut keys: Vec<u64> = objects.iter().map(|&o| object_key(1, o)).collect();
        keys.push(object_key(2, Object::MasterPlaylist));
        let before = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), before);
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let zipf = Zipf::new(100, 0.9);
        let mut rng = SplitMix64::new(5);
        let mut counts = [0u32; 100];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99]);
        // Rank 1 vs rank 10: 10^0.9 ≈ 7.9 times as likely.
        let ratio = f64::from(counts[0]) / f64::from(counts[9]);
        assert!((6.0..10.0).contains(&ratio), "{ratio}");
    }
}
