//! QoE analytics: the viewers' playback events (and the edges' summaries) turned into quality of experience per
//! title, edge and region, live as Prometheus metrics (`run`, consumer group `qoe`) and over a past window as a
//! table (`report`, for `origin report --since`).
//!
//! The core is [`Aggregator`], a state machine per session with no I/O and no clock: time comes from the records
//! (the server's receive time) and from the caller (`expire`). It emits [`Observation`]s, which
//! [`QoeMetrics`] adds to Prometheus and [`Report`] to a table, so both read the events the same way.
//!
//! What is measured, per (title, edge, region) of the session (the first event of a session names its edge, as
//! the fleet or its host names it, and the viewer's region, as the player or the steering table for the client's
//! address gives it; a session is a (`session`, `title`) pair, so a playlist's next title is a session of its
//! own):
//! - startup: a session's first `start` event's `startup_ms` (`qoe_startup_seconds`);
//! - stall ratio: stalled time / (watched time + stalled time), from `stall` events' `duration_ms` and the
//!   growth of `heartbeat` `played_ms` and `end` `watched_ms` (`qoe_stall_seconds_total`,
//!   `qoe_watch_seconds_total`); a heartbeat whose `played_ms` is not past the largest seen arrived late and
//!   adds nothing; a heartbeat without `played_ms` adds its playhead's progress since the previous heartbeat or
//!   seek (so the stretch before a session's first heartbeat waits for the `end` to be counted);
//! - average bitrate: a session's time-weighted mean of the bitrate playing (each stretch of played time
//!   weighed with the CMCD `br` of the heartbeat or end that closes it, else the last known: a `br` key or a
//!   switch's `to_kbps`), else the plain mean of the `br` values reported; one value per session when it
//!   closes (`qoe_bitrate_kbps`);
//! - bitrate switches (`qoe_bitrate_switches_total`), error events (`qoe_errors_total`) and the sessions with
//!   at least one error (`qoe_error_sessions_total`: error rate = that / sessions);
//! - sessions by outcome when they close (`qoe_sessions_total{outcome}`): `completed`, `error` (ended with
//!   reason `error`, or went silent with an error and without playing), `abandoned` (ended `abandoned` after
//!   playing), `exit_before_start` (ended `abandoned`, or went silent, without ever playing: no `start` and no
//!   played time), `timed_out` (played, then went silent without an `end`: a closed tab, mostly). Abandonment
//!   is `abandoned` + `exit_before_start` over all sessions; `timed_out` is counted apart because it is
//!   unknown whether the viewer finished.
//!
//! Processing is idempotent over redelivery: an event whose (`session`, `id`) was seen among the last 100,000
//! is counted once (`qoe_events_duplicate_total`); an edge summary by its (edge, title, receive time). A session
//! idle past 5 minutes is closed and forgotten; events of a closed session (remembered among the last 100,000)
//! are late and count only in `qoe_events_total` and `qoe_events_late_total`. At most 100,000 sessions are
//! held: a new one past that closes the least recently seen (`qoe_sessions_evicted_total`).
//!
//! Label values are bounded: at most 500 titles, 200 edges and 100 regions become label values, and 5,000
//! combinations of them; past those a value (or, past the combinations, the whole set) is `other`
//! (`qoe_labels_folded_total` counts the sessions and summaries so folded). A missing edge or region is `none`.
//!
//! The edges' summaries become `qoe_edge_requests_total{edge, cache_status}`, `qoe_edge_response_bytes_total`,
//! `qoe_edge_errors_total`, `qoe_edge_buffer_starvation_total` (requests whose CMCD said `bs`) and the TTFB
//! percentiles weighed by requests,
//! `qoe_edge_ttfb_weighted_seconds_total{edge, quantile}` over `qoe_edge_ttfb_requests_total{edge}` (the mean
//! over titles and intervals of each reported percentile, not a percentile of the whole).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    CounterVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

use crate::bus::{Bus, Record, StartAt, TOPIC_EDGE_STATS, TOPIC_PLAYBACK, now_ms};
use crate::control::events::{EdgeStatsRecord, EndReason, EventDetail, PlaybackRecord};

/// The consumer group of the live metrics.
pub const GROUP: &str = "qoe";
/// Records asked for per poll, and how long a poll waits for the first.
const POLL_MAX: usize = 1000;
const POLL_WAIT: Duration = Duration::from_millis(500);
/// How often the live consumer commits its offsets.
const COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Backoff after a bus failure: from the first to the last, doubling; after this many failed polls in a row
/// the consumer is dropped and the group joined again.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_LAST: Duration = Duration::from_secs(10);
const POLL_FAILURES_BEFORE_REJOIN: u32 = 5;
/// How long `report` reads the history at most before it reports what it read.
const REPORT_READ_LIMIT: Duration = Duration::from_secs(60);
/// `report` stops at the first empty poll after this much quiet once it holds partitions (or, holding none,
/// after the longer wait: a Kafka group may take seconds to assign them).
const REPORT_QUIET: Duration = Duration::from_secs(1);
const REPORT_QUIET_UNASSIGNED: Duration = Duration::from_secs(10);

/// Startup histogram buckets, seconds.
const STARTUP_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0,
];
/// Session average bitrate buckets, kbps.
const BITRATE_BUCKETS: &[f64] = &[
    100.0, 250.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 4500.0, 6000.0, 8000.0, 12000.0,
    16000.0, 25000.0, 40000.0,
];

/// The aggregator's limits.
#[derive(Debug, Clone)]
pub struct QoeConfig {
    /// A session not heard from for this long is closed, in ms. Default: 300,000 (5 minutes; a paused player
    /// should heartbeat at least that often).
    pub idle_timeout_ms: i64,
    /// Sessions held at once; each costs about 200 bytes. Default: 100,000.
    pub max_sessions: usize,
    /// Recent event ids remembered to drop duplicates (16 bytes each, hashed). Default: 100,000.
    pub max_seen_ids: usize,
    /// Recently closed sessions remembered to tell late events (16 bytes each, hashed). Default: 100,000.
    pub max_closed_sessions: usize,
    /// Distinct label values per dimension before `other`. Defaults: 500 titles, 200 edges, 100 regions.
    pub max_titles: usize,
    pub max_edges: usize,
    pub max_regions: usize,
    /// Distinct (title, edge, region) sets before the whole set is `other`. Default: 5,000.
    pub max_label_sets: usize,
}

impl Default for QoeConfig {
    fn default() -> Self {
        QoeConfig {
            idle_timeout_ms: 300_000,
            max_sessions: 100_000,
            max_seen_ids: 100_000,
            max_closed_sessions: 100_000,
            max_titles: 500,
            max_edges: 200,
            max_regions: 100,
            max_label_sets: 5_000,
        }
    }
}

/// The label values of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub title: String,
    pub edge: String,
    pub region: String,
}

/// How a session closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    Error,
    Abandoned,
    ExitBeforeStart,
    TimedOut,
    /// Still playing when a report ended (never a metric).
    Ongoing,
}

impl Outcome {
    /// The `outcome` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Error => "error",
            Outcome::Abandoned => "abandoned",
            Outcome::ExitBeforeStart => "exit_before_start",
            Outcome::TimedOut => "timed_out",
            Outcome::Ongoing => "ongoing",
        }
    }

    /// Whether it counts as abandonment: the viewer left, after playing or before.
    pub fn is_abandonment(self) -> bool {
        matches!(self, Outcome::Abandoned | Outcome::ExitBeforeStart)
    }
}

/// What the aggregator saw, for the metrics and the report.
#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// An event processed (not a duplicate), by kind.
    Event {
        kind: &'static str,
    },
    /// An event or summary seen before.
    Duplicate,
    /// An event of a session already closed.
    Late,
    /// A record that is not what its topic holds.
    Invalid {
        topic: &'static str,
    },
    /// An event whose labels were folded into `other`.
    Folded,
    Startup {
        labels: Arc<Labels>,
        seconds: f64,
    },
    Stall {
        labels: Arc<Labels>,
        seconds: f64,
    },
    Watch {
        labels: Arc<Labels>,
        seconds: f64,
    },
    Switch {
        labels: Arc<Labels>,
    },
    Error {
        labels: Arc<Labels>,
    },
    Closed(Closed),
    EdgeStats(EdgeStatsRecord),
}

/// A session as it closed.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub labels: Arc<Labels>,
    pub outcome: Outcome,
    pub had_error: bool,
    pub switches: u64,
    pub avg_bitrate_kbps: Option<f64>,
    /// Closed early to make room.
    pub evicted: bool,
}

/// The playback events' state: open sessions, recent ids, label values.
pub struct Aggregator {
    config: QoeConfig,
    seen: RecentSet,
    closed: RecentSet,
    sessions: HashMap<u64, Session>,
    /// (last seen, session key): the least recently seen first.
    idle_order: BTreeSet<(i64, u64)>,
    labels: LabelGuard,
}

struct Session {
    labels: Arc<Labels>,
    started: bool,
    /// The most played time reported (heartbeat `played_ms`, end `watched_ms`), or counted from the playhead.
    played_ms: u64,
    /// The playhead at the last heartbeat or seek, for heartbeats without `played_ms`.
    position_ms: Option<u64>,
    last_br: Option<u64>,
    /// Σ bitrate × time over the stretches with a known bitrate, and their time.
    kbps_ms: u128,
    br_ms: u64,
    /// Σ and count of the `br` values reported (the fallback mean).
    br_sum: u128,
    br_count: u64,
    switches: u64,
    had_error: bool,
    last_seen_ms: i64,
}

impl Session {
    fn new(labels: Arc<Labels>, now_ms: i64) -> Self {
        Session {
            labels,
            started: false,
            played_ms: 0,
            position_ms: None,
            last_br: None,
            kbps_ms: 0,
            br_ms: 0,
            br_sum: 0,
            br_count: 0,
            switches: 0,
            had_error: false,
            last_seen_ms: now_ms,
        }
    }

    fn played(&self) -> bool {
        self.started || self.played_ms > 0
    }

    /// Played time up to `played_ms`, at `br` if known (else the last known); a smaller value is late.
    fn advance(&mut self, played_ms: u64, br: Option<u64>, out: &mut Vec<Observation>) {
        if played_ms <= self.played_ms {
            return;
        }
        let stretch = played_ms - self.played_ms;
        self.played_ms = played_ms;
        if let Some(br) = br.or(self.last_br) {
            self.kbps_ms += u128::from(br) * u128::from(stretch);
            self.br_ms = self.br_ms.saturating_add(stretch);
        }
        out.push(Observation::Watch {
            labels: Arc::clone(&self.labels),
            seconds: stretch as f64 / 1000.0,
        });
    }

    fn note_br(&mut self, br: Option<u64>) {
        if let Some(br) = br {
            self.last_br = Some(br);
            self.br_sum += u128::from(br);
            self.br_count += 1;
        }
    }

    fn avg_bitrate_kbps(&self) -> Option<f64> {
        if self.br_ms > 0 {
            Some(self.kbps_ms as f64 / self.br_ms as f64)
        } else if self.br_count > 0 {
            Some(self.br_sum as f64 / self.br_count as f64)
        } else {
            None
        }
    }

    fn outcome(&self, reason: Option<EndReason>) -> Outcome {
        match reason {
            Some(EndReason::Completed) => Outcome::Completed,
            Some(EndReason::Error) => Outcome::Error,
            Some(EndReason::Abandoned) if self.played() => Outcome::Abandoned,
            Some(EndReason::Abandoned) => Outcome::ExitBeforeStart,
            None if self.played() => Outcome::TimedOut,
            None if self.had_error => Outcome::Error,
            None => Outcome::ExitBeforeStart,
        }
    }
}

impl Aggregator {
    pub fn new(config: QoeConfig) -> Self {
        Aggregator {
            seen: RecentSet::new(config.max_seen_ids),
            closed: RecentSet::new(config.max_closed_sessions),
            sessions: HashMap::new(),
            idle_order: BTreeSet::new(),
            labels: LabelGuard::new(&config),
            config,
        }
    }

    /// Sessions open now.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// A bus record of the playback or edge-stats topic (others are ignored).
    pub fn record(&mut self, topic: &str, value: &[u8], out: &mut Vec<Observation>) {
        if topic == TOPIC_PLAYBACK {
            match serde_json::from_slice::<PlaybackRecord>(value) {
                Ok(r) => self.playback(&r, out),
                Err(_) => out.push(Observation::Invalid {
                    topic: TOPIC_PLAYBACK,
                }),
            }
        } else if topic == TOPIC_EDGE_STATS {
            match serde_json::from_slice::<EdgeStatsRecord>(value) {
                Ok(r) => self.edge_stats(r, out),
                Err(_) => out.push(Observation::Invalid {
                    topic: TOPIC_EDGE_STATS,
                }),
            }
        }
    }

    /// A player event; its time is the server's receive time.
    pub fn playback(&mut self, r: &PlaybackRecord, out: &mut Vec<Observation>) {
        let e = &r.event;
        if !self
            .seen
            .insert(key(&[b"event", e.session.as_bytes(), e.id.as_bytes()]))
        {
            out.push(Observation::Duplicate);
            return;
        }
        out.push(Observation::Event {
            kind: e.detail.kind(),
        });
        let session_key = key(&[b"session", e.session.as_bytes(), e.title.as_bytes()]);
        if self.closed.contains(session_key) {
            out.push(Observation::Late);
            return;
        }
        let now = r.received_ms;
        if let Some(s) = self.sessions.get_mut(&session_key) {
            self.idle_order.remove(&(s.last_seen_ms, session_key));
            s.last_seen_ms = s.last_seen_ms.max(now);
        } else {
            if self.sessions.len() >= self.config.max_sessions.max(1)
                && let Some(&(_, oldest)) = self.idle_order.first()
            {
                self.close(oldest, None, true, out);
            }
            let (labels, folded) =
                self.labels
                    .resolve(&e.title, r.edge_name.as_deref(), r.viewer_region.as_deref());
            if folded {
                out.push(Observation::Folded);
            }
            self.sessions.insert(session_key, Session::new(labels, now));
        }
        let Some(session) = self.sessions.get_mut(&session_key) else {
            return;
        };
        self.idle_order.insert((session.last_seen_ms, session_key));
        let labels = Arc::clone(&session.labels);
        let br = e.cmcd.br;
        let mut end = None;
        match &e.detail {
            EventDetail::Start { startup_ms } => {
                if !session.started {
                    session.started = true;
                    out.push(Observation::Startup {
                        labels,
                        seconds: *startup_ms as f64 / 1000.0,
                    });
                }
                session.note_br(br);
            }
            EventDetail::Heartbeat {
                played_ms,
                position_ms,
            } => {
                match (played_ms, position_ms, session.position_ms) {
                    (Some(played), _, _) => session.advance(*played, br, out),
                    // The playhead's progress since the last heartbeat or seek (none backwards: a late
                    // heartbeat, or a seek the player did not report).
                    (None, Some(here), Some(before)) if *here > before => {
                        let played = session.played_ms.saturating_add(*here - before);
                        session.advance(played, br, out);
                    }
                    _ => {}
                }
                if let Some(position) = position_ms {
                    session.position_ms =
                        Some(session.position_ms.map_or(*position, |p| p.max(*position)));
                }
                session.note_br(br);
            }
            EventDetail::Seek { position_ms } => {
                session.position_ms = Some(*position_ms);
                session.note_br(br);
            }
            EventDetail::Stall { duration_ms } => {
                out.push(Observation::Stall {
                    labels,
                    seconds: *duration_ms as f64 / 1000.0,
                });
                session.note_br(br);
            }
            EventDetail::BitrateSwitch { to_kbps, .. } => {
                session.switches += 1;
                out.push(Observation::Switch { labels });
                session.note_br(br);
                session.last_br = Some(*to_kbps);
            }
            EventDetail::Error { .. } => {
                session.had_error = true;
                out.push(Observation::Error { labels });
                session.note_br(br);
            }
            EventDetail::End { reason, watched_ms } => {
                session.advance(*watched_ms, br, out);
                session.note_br(br);
                end = Some(*reason);
            }
        }
        if let Some(reason) = end {
            self.close(session_key, Some(reason), false, out);
        }
    }

    /// An edge's summary of one title.
    pub fn edge_stats(&mut self, mut r: EdgeStatsRecord, out: &mut Vec<Observation>) {
        let received = r.received_ms.to_le_bytes();
        if !self.seen.insert(key(&[
            b"edge-stats",
            r.edge.as_bytes(),
            r.stats.title.as_bytes(),
            &received,
        ])) {
            out.push(Observation::Duplicate);
            return;
        }
        let (edge, folded) = self.labels.edge(&r.edge);
        if folded {
            out.push(Observation::Folded);
        }
        r.edge = edge;
        out.push(Observation::EdgeStats(r));
    }

    /// Closes the sessions not heard from for the idle timeout as of `now_ms`.
    pub fn expire(&mut self, now_ms: i64, out: &mut Vec<Observation>) {
        while let Some(&(last_seen, session_key)) = self.idle_order.first() {
            if last_seen.saturating_add(self.config.idle_timeout_ms) > now_ms {
                break;
            }
            self.close(session_key, None, false, out);
        }
    }

    /// Closes every session: idle ones as `expire` would, the others as `ongoing` (for a report's end).
    pub fn finish(&mut self, now_ms: i64, out: &mut Vec<Observation>) {
        self.expire(now_ms, out);
        let open: Vec<u64> = self.idle_order.iter().map(|&(_, k)| k).collect();
        for session_key in open {
            if let Some(s) = self.sessions.remove(&session_key) {
                self.idle_order.remove(&(s.last_seen_ms, session_key));
                out.push(Observation::Closed(Closed {
                    labels: s.labels.clone(),
                    outcome: Outcome::Ongoing,
                    had_error: s.had_error,
                    switches: s.switches,
                    avg_bitrate_kbps: s.avg_bitrate_kbps(),
                    evicted: false,
                }));
            }
        }
    }

    fn close(
        &mut self,
        session_key: u64,
        reason: Option<EndReason>,
        evicted: bool,
        out: &mut Vec<Observation>,
    ) {
        let Some(s) = self.sessions.remove(&session_key) else {
            return;
        };
        self.idle_order.remove(&(s.last_seen_ms, session_key));
        self.closed.insert(session_key);
        out.push(Observation::Closed(Closed {
            outcome: s.outcome(reason),
            had_error: s.had_error,
            switches: s.switches,
            avg_bitrate_kbps: s.avg_bitrate_kbps(),
            labels: s.labels,
            evicted,
        }));
    }
}

/// A 64-bit hash of byte strings (separated so that ("ab", "c") and ("a", "bc") differ). Ids are kept hashed:
/// 16 bytes each instead of the strings, and a collision among 100,000 is a chance in 10^9.
fn key(parts: &[&[u8]]) -> u64 {
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for part in parts {
        bytes.extend_from_slice(part);
        bytes.push(0xff); // never in UTF-8 text
    }
    twox_hash::XxHash3_64::oneshot(&bytes)
}

/// The last `cap` keys inserted, oldest evicted first.
struct RecentSet {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl RecentSet {
    fn new(cap: usize) -> Self {
        RecentSet {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Whether it is new (and now remembered).
    fn insert(&mut self, k: u64) -> bool {
        if self.set.contains(&k) {
            return false;
        }
        if self.order.len() >= self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.order.push_back(k);
        self.set.insert(k);
        true
    }

    fn contains(&self, k: u64) -> bool {
        self.set.contains(&k)
    }
}

/// Bounded label values: the first N values of each dimension, the first M combinations; the rest `other`.
struct LabelGuard {
    titles: HashSet<String>,
    edges: HashSet<String>,
    regions: HashSet<String>,
    sets: HashMap<Labels, Arc<Labels>>,
    max_titles: usize,
    max_edges: usize,
    max_regions: usize,
    max_sets: usize,
}

const OTHER: &str = "other";
const NONE: &str = "none";

impl LabelGuard {
    fn new(config: &QoeConfig) -> Self {
        LabelGuard {
            titles: HashSet::new(),
            edges: HashSet::new(),
            regions: HashSet::new(),
            sets: HashMap::new(),
            max_titles: config.max_titles,
            max_edges: config.max_edges,
            max_regions: config.max_regions,
            max_sets: config.max_label_sets,
        }
    }

    /// `value` if it is known or there is room, else `other`; and whether it was folded.
    fn fold(known: &mut HashSet<String>, max: usize, value: &str) -> (String, bool) {
        if known.contains(value) {
            return (value.to_string(), false);
        }
        if known.len() < max {
            known.insert(value.to_string());
            return (value.to_string(), false);
        }
        (OTHER.to_string(), true)
    }

    fn edge(&mut self, edge: &str) -> (String, bool) {
        Self::fold(&mut self.edges, self.max_edges, edge)
    }

    fn resolve(
        &mut self,
        title: &str,
        edge: Option<&str>,
        region: Option<&str>,
    ) -> (Arc<Labels>, bool) {
        let (title, a) = Self::fold(&mut self.titles, self.max_titles, title);
        let (edge, b) = self.edge(edge.unwrap_or(NONE));
        let (region, c) = Self::fold(&mut self.regions, self.max_regions, region.unwrap_or(NONE));
        let labels = Labels {
            title,
            edge,
            region,
        };
        if let Some(shared) = self.sets.get(&labels) {
            return (Arc::clone(shared), a || b || c);
        }
        let (labels, folded) = if self.sets.len() < self.max_sets {
            (labels, a || b || c)
        } else {
            let other = Labels {
                title: OTHER.into(),
                edge: OTHER.into(),
                region: OTHER.into(),
            };
            if let Some(shared) = self.sets.get(&other) {
                return (Arc::clone(shared), true);
            }
            (other, true)
        };
        let shared = Arc::new(labels.clone());
        self.sets.insert(labels, Arc::clone(&shared));
        (shared, folded)
    }
}

/// The QoE metrics, registered in the origin's registry.
pub struct QoeMetrics {
    events: IntCounterVec,
    duplicates: IntCounter,
    late: IntCounter,
    invalid: IntCounterVec,
    folded: IntCounter,
    startup: HistogramVec,
    stall_seconds: CounterVec,
    stalls: IntCounterVec,
    watch_seconds: CounterVec,
    switches: IntCounterVec,
    errors: IntCounterVec,
    error_sessions: IntCounterVec,
    sessions: IntCounterVec,
    bitrate: HistogramVec,
    active: IntGauge,
    evicted: IntCounter,
    edge_requests: IntCounterVec,
    edge_bytes: IntCounterVec,
    edge_errors: IntCounterVec,
    edge_stalls: IntCounterVec,
    edge_ttfb: CounterVec,
    edge_ttfb_requests: IntCounterVec,
}

const SESSION_LABELS: &[&str] = &["title", "edge", "region"];

impl QoeMetrics {
    /// Creates the metrics and registers them in `registry` (one that fails to register is logged and kept
    /// unexported).
    pub fn register(registry: &Registry) -> Self {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid metric");
        let int_vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let float_vec = |name: &str, help: &str, labels: &[&str]| {
            CounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                SESSION_LABELS,
            )
            .expect("valid metric")
        };
        let session_outcome = ["title", "edge", "region", "outcome"];
        let m = QoeMetrics {
            events: int_vec(
                "qoe_events_total",
                "Player events processed, by kind (duplicates not counted).",
                &["kind"],
            ),
            duplicates: counter(
                "qoe_events_duplicate_total",
                "Player events and edge summaries seen before (by id), not counted again.",
            ),
            late: counter(
                "qoe_events_late_total",
                "Player events of sessions already closed, counted only as events.",
            ),
            invalid: int_vec(
                "qoe_records_invalid_total",
                "Bus records that are not what their topic holds, by topic.",
                &["topic"],
            ),
            folded: counter(
                "qoe_labels_folded_total",
                "Sessions and summaries whose labels were folded into `other` (label limits).",
            ),
            startup: histogram(
                "qoe_startup_seconds",
                "Startup time of sessions (their first start event).",
                STARTUP_BUCKETS,
            ),
            stall_seconds: float_vec(
                "qoe_stall_seconds_total",
                "Time stalled (rebuffering), from stall events.",
                SESSION_LABELS,
            ),
            stalls: int_vec("qoe_stalls_total", "Stall events.", SESSION_LABELS),
            watch_seconds: float_vec(
                "qoe_watch_seconds_total",
                "Time played, from heartbeats and ends.",
                SESSION_LABELS,
            ),
            switches: int_vec(
                "qoe_bitrate_switches_total",
                "Bitrate switches.",
                SESSION_LABELS,
            ),
            errors: int_vec("qoe_errors_total", "Player error events.", SESSION_LABELS),
            error_sessions: int_vec(
                "qoe_error_sessions_total",
                "Sessions closed that had at least one error.",
                SESSION_LABELS,
            ),
            sessions: int_vec(
                "qoe_sessions_total",
                "Sessions closed, by outcome (completed, error, abandoned, exit_before_start, timed_out).",
                &session_outcome,
            ),
            bitrate: histogram(
                "qoe_bitrate_kbps",
                "Sessions' time-weighted average bitrate, kbps, when they close.",
                BITRATE_BUCKETS,
            ),
            active: IntGauge::new(
                "qoe_sessions_active",
                "Sessions open in the QoE aggregator.",
            )
            .expect("valid metric"),
            evicted: counter(
                "qoe_sessions_evicted_total",
                "Sessions closed early because the aggregator held its most.",
            ),
            edge_requests: int_vec(
                "qoe_edge_requests_total",
                "Requests the edges summarised, by edge and cache status.",
                &["edge", "cache_status"],
            ),
            edge_bytes: int_vec(
                "qoe_edge_response_bytes_total",
                "Response body bytes the edges summarised.",
                &["edge"],
            ),
            edge_errors: int_vec(
                "qoe_edge_errors_total",
                "Error responses the edges summarised.",
                &["edge"],
            ),
            edge_stalls: int_vec(
                "qoe_edge_buffer_starvation_total",
                "Requests the edges saw whose CMCD said the player's buffer ran dry (bs).",
                &["edge"],
            ),
            edge_ttfb: float_vec(
                "qoe_edge_ttfb_weighted_seconds_total",
                "Each summarised TTFB percentile times the requests it covers (divide by qoe_edge_ttfb_requests_total).",
                &["edge", "quantile"],
            ),
            edge_ttfb_requests: int_vec(
                "qoe_edge_ttfb_requests_total",
                "Requests covered by summarised TTFB percentiles.",
                &["edge"],
            ),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.events.clone()),
            Box::new(m.duplicates.clone()),
            Box::new(m.late.clone()),
            Box::new(m.invalid.clone()),
            Box::new(m.folded.clone()),
            Box::new(m.startup.clone()),
            Box::new(m.stall_seconds.clone()),
            Box::new(m.stalls.clone()),
            Box::new(m.watch_seconds.clone()),
            Box::new(m.switches.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.error_sessions.clone()),
            Box::new(m.sessions.clone()),
            Box::new(m.bitrate.clone()),
            Box::new(m.active.clone()),
            Box::new(m.evicted.clone()),
            Box::new(m.edge_requests.clone()),
            Box::new(m.edge_bytes.clone()),
            Box::new(m.edge_errors.clone()),
            Box::new(m.edge_stalls.clone()),
            Box::new(m.edge_ttfb.clone()),
            Box::new(m.edge_ttfb_requests.clone()),
        ];
        for collector in collectors {
            if let Err(e) = registry.register(collector) {
                tracing::warn!(error = %e, "a QoE metric could not be registered");
            }
        }
        m
    }

    pub fn apply(&self, observation: &Observation) {
        fn set(l: &Labels) -> [&str; 3] {
            [l.title.as_str(), l.edge.as_str(), l.region.as_str()]
        }
        match observation {
            Observation::Event { kind } => self.events.with_label_values(&[*kind]).inc(),
            Observation::Duplicate => self.duplicates.inc(),
            Observation::Late => self.late.inc(),
            Observation::Invalid { topic } => self.invalid.with_label_values(&[*topic]).inc(),
            Observation::Folded => self.folded.inc(),
            Observation::Startup { labels, seconds } => self
                .startup
                .with_label_values(&set(labels))
                .observe(*seconds),
            Observation::Stall { labels, seconds } => {
                self.stall_seconds
                    .with_label_values(&set(labels))
                    .inc_by(*seconds);
                self.stalls.with_label_values(&set(labels)).inc();
            }
            Observation::Watch { labels, seconds } => self
                .watch_seconds
                .with_label_values(&set(labels))
                .inc_by(*seconds),
            Observation::Switch { labels } => self.switches.with_label_values(&set(labels)).inc(),
            Observation::Error { labels } => self.errors.with_label_values(&set(labels)).inc(),
            Observation::Closed(c) => {
                if c.outcome == Outcome::Ongoing {
                    return;
                }
                let [title, edge, region] = set(&c.labels);
                self.sessions
                    .with_label_values(&[title, edge, region, c.outcome.label()])
                    .inc();
                if c.had_error {
                    self.error_sessions.with_label_values(&set(&c.labels)).inc();
                }
                if let Some(kbps) = c.avg_bitrate_kbps {
                    self.bitrate
                        .with_label_values(&set(&c.labels))
                        .observe(kbps);
                }
                if c.evicted {
                    self.evicted.inc();
                }
            }
            Observation::EdgeStats(r) => {
                let edge = r.edge.as_str();
                for (status, &n) in &r.stats.requests {
                    self.edge_requests
                        .with_label_values(&[edge, status.as_str()])
                        .inc_by(n);
                }
                self.edge_bytes
                    .with_label_values(&[edge])
                    .inc_by(r.stats.bytes);
                self.edge_errors
                    .with_label_values(&[edge])
                    .inc_by(r.stats.errors);
                if let Some(stalls) = r.stats.stalls {
                    self.edge_stalls.with_label_values(&[edge]).inc_by(stalls);
                }
                let requests: u64 = r.stats.requests.values().sum();
                if let Some(t) = r.stats.ttfb_ms
                    && requests > 0
                {
                    for (q, ms) in [("0.5", t.p50), ("0.9", t.p90), ("0.99", t.p99)] {
                        self.edge_ttfb
                            .with_label_values(&[edge, q])
                            .inc_by(ms / 1000.0 * requests as f64);
                    }
                    self.edge_ttfb_requests
                        .with_label_values(&[edge])
                        .inc_by(requests);
                }
            }
        }
    }

    fn set_active(&self, sessions: usize) {
        self.active.set(sessions as i64);
    }
}

/// Consumes the playback (and edge-stats) topics in group `qoe` and keeps the QoE metrics in `registry`.
/// Starts at the latest records (metrics are live; `report` reads the history), commits every second, and
/// outlives bus failures: they are logged and retried with backoff.
pub async fn run(bus: Bus, registry: Registry) {
    let metrics = QoeMetrics::register(&registry);
    let mut aggregator = Aggregator::new(QoeConfig::default());
    let mut out = Vec::new();
    let mut backoff = BACKOFF_FIRST;
    loop {
        let mut consumer = match bus
            .subscribe(GROUP, &[TOPIC_PLAYBACK, TOPIC_EDGE_STATS], StartAt::Latest)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "QoE: joining the bus group failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_LAST);
                continue;
            }
        };
        let mut failures = 0;
        let mut last_commit = tokio::time::Instant::now();
        // Sessions expire on the records' clock while catching up (a backlog's sessions are not idle), on the
        // wall clock once caught up.
        let mut clock_ms = 0;
        loop {
            match consumer.poll(POLL_MAX, POLL_WAIT).await {
                Ok(records) => {
                    failures = 0;
                    backoff = BACKOFF_FIRST;
                    if records.is_empty() {
                        clock_ms = clock_ms.max(now_ms());
                    }
                    for r in &records {
                        aggregator.record(&r.topic, &r.value, &mut out);
                        clock_ms = clock_ms.max(r.timestamp_ms);
                    }
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, retry_in = ?backoff, "QoE: reading the bus failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_LAST);
                    if failures >= POLL_FAILURES_BEFORE_REJOIN {
                        break;
                    }
                    continue;
                }
            }
            aggregator.expire(clock_ms, &mut out);
            for o in out.drain(..) {
                metrics.apply(&o);
            }
            metrics.set_active(aggregator.sessions());
            if last_commit.elapsed() >= COMMIT_EVERY {
                last_commit = tokio::time::Instant::now();
                if let Err(e) = consumer.commit().await {
                    tracing::warn!(error = %e, "QoE: committing offsets failed");
                }
            }
        }
    }
}

/// `origin report --since`: a summary table of the playback events of the last `since` (and the edges'
/// summaries). Reads the topics from their oldest records in a consumer group of its own (unique per call,
/// never committed), up to the records published when it started, for a minute at most.
pub async fn report(bus: &Bus, since: Duration) -> anyhow::Result<String> {
    let started_ms = now_ms();
    let since_ms = i64::try_from(since.as_millis()).unwrap_or(i64::MAX);
    let from_ms = started_ms.saturating_sub(since_ms);
    let group = format!(
        "qoe-report-{}-{started_ms}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut consumer = bus
        .subscribe(
            &group,
            &[TOPIC_PLAYBACK, TOPIC_EDGE_STATS],
            StartAt::Earliest,
        )
        .await?;
    let mut aggregator = Aggregator::new(QoeConfig {
        max_titles: 100_000,
        max_edges: 10_000,
        max_regions: 10_000,
        max_label_sets: 1_000_000,
        ..QoeConfig::default()
    });
    let mut report = Report::default();
    let mut out = Vec::new();
    let reading = tokio::time::Instant::now();
    let mut quiet_since: Option<tokio::time::Instant> = None;
    let mut clock_ms = from_ms;
    let complete = loop {
        if reading.elapsed() >= REPORT_READ_LIMIT {
            break false;
        }
        let records: Vec<Record> = consumer.poll(POLL_MAX, Duration::from_millis(200)).await?;
        if records.is_empty() {
            let quiet = quiet_since
                .get_or_insert_with(tokio::time::Instant::now)
                .elapsed();
            let assigned = !consumer.assignment().is_empty();
            if (assigned && quiet >= REPORT_QUIET) || quiet >= REPORT_QUIET_UNASSIGNED {
                break true;
            }
            continue;
        }
        quiet_since = None;
        for r in records {
            report.read += 1;
            if r.timestamp_ms < from_ms || r.timestamp_ms > started_ms {
                continue;
            }
            aggregator.record(&r.topic, &r.value, &mut out);
            clock_ms = clock_ms.max(r.timestamp_ms);
        }
        aggregator.expire(clock_ms, &mut out);
        for o in out.drain(..) {
            report.add(&o);
        }
    };
    aggregator.finish(started_ms, &mut out);
    for o in out.drain(..) {
        report.add(&o);
    }
    Ok(report.render(since, complete))
}

/// The report's sums, per title, edge and region.
#[derive(Default)]
pub struct Report {
    /// Records read from the bus (in the window or not).
    pub read: u64,
    pub events: u64,
    pub duplicates: u64,
    pub late: u64,
    pub invalid: u64,
    pub by_title: BTreeMap<String, Stats>,
    pub by_edge: BTreeMap<String, Stats>,
    pub by_region: BTreeMap<String, Stats>,
    /// Per edge: requests by cache status, bytes, errors.
    pub edges: BTreeMap<String, EdgeTotals>,
}

/// One row of the report.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Stats {
    /// Sessions closed, and those still going when the report ended.
    pub sessions: u64,
    pub startup: LogHistogram,
    pub stall_seconds: f64,
    pub watch_seconds: f64,
    pub switches: u64,
    pub error_sessions: u64,
    pub abandoned: u64,
    pub bitrate_sum: f64,
    pub bitrate_sessions: u64,
}

#[derive(Default, Debug, Clone, PartialEq)]
pub struct EdgeTotals {
    pub requests: BTreeMap<String, u64>,
    pub bytes: u64,
    pub errors: u64,
}

impl Report {
    pub fn add(&mut self, o: &Observation) {
        let labels = match o {
            Observation::Event { .. } => {
                self.events += 1;
                return;
            }
            Observation::Duplicate => {
                self.duplicates += 1;
                return;
            }
            Observation::Late => {
                self.late += 1;
                return;
            }
            Observation::Invalid { .. } => {
                self.invalid += 1;
                return;
            }
            Observation::Folded | Observation::Switch { .. } | Observation::Error { .. } => return,
            Observation::EdgeStats(r) => {
                let totals = self.edges.entry(r.edge.clone()).or_default();
                for (status, n) in &r.stats.requests {
                    *totals.requests.entry(status.clone()).or_default() += n;
                }
                totals.bytes += r.stats.bytes;
                totals.errors += r.stats.errors;
                return;
            }
            Observation::Startup { labels, .. }
            | Observation::Stall { labels, .. }
            | Observation::Watch { labels, .. } => labels,
            Observation::Closed(c) => &c.labels,
        };
        for stats in [
            self.by_title.entry(labels.title.clone()).or_default(),
            self.by_edge.entry(labels.edge.clone()).or_default(),
            self.by_region.entry(labels.region.clone()).or_default(),
        ] {
            match o {
                Observation::Startup { seconds, .. } => stats.startup.add(seconds * 1000.0),
                Observation::Stall { seconds, .. } => stats.stall_seconds += seconds,
                Observation::Watch { seconds, .. } => stats.watch_seconds += seconds,
                Observation::Closed(c) => {
                    stats.sessions += 1;
                    stats.switches += c.switches;
                    stats.error_sessions += u64::from(c.had_error);
                    stats.abandoned += u64::from(c.outcome.is_abandonment());
                    if let Some(kbps) = c.avg_bitrate_kbps {
                        stats.bitrate_sum += kbps;
                        stats.bitrate_sessions += 1;
                    }
                }
                _ => {}
            }
        }
    }

    /// The table.
    pub fn render(&self, since: Duration, complete: bool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "QoE over the last {}: {} events ({} duplicates, {} late, {} invalid records) of {} records read{}",
            duration_text(since),
            self.events,
            self.duplicates,
            self.late,
            self.invalid,
            self.read,
            if complete {
                ""
            } else {
                "; reading stopped at its time limit, the history is not all here"
            }
        );
        let _ = writeln!(
            s,
            "startup in seconds; stall = stalled / (watched + stalled); bitrate = mean of sessions' time-weighted \
             averages; errors and abandoned (left after or before starting) are shares of sessions"
        );
        for (heading, rows) in [
            ("title", &self.by_title),
            ("edge", &self.by_edge),
            ("region", &self.by_region),
        ] {
            s.push('\n');
            table(&mut s, heading, rows);
        }
        if !self.edges.is_empty() {
            let width = self
                .edges
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0)
                .max(4);
            let _ = writeln!(
                s,
                "\n{:<width$}  {:>10}  {:>6}  {:>14}  {:>8}",
                "edge", "requests", "hits", "bytes", "errors"
            );
            for (edge, t) in &self.edges {
                let total: u64 = t.requests.values().sum();
                let hits: u64 = ["hit", "stale", "revalidated"]
                    .iter()
                    .filter_map(|k| t.requests.get(*k))
                    .sum();
                let _ = writeln!(
                    s,
                    "{edge:<width$}  {total:>10}  {:>6}  {:>14}  {:>8}",
                    percent(hits as f64, total as f64),
                    t.bytes,
                    t.errors
                );
            }
        }
        s
    }
}

fn table(s: &mut String, heading: &str, rows: &BTreeMap<String, Stats>) {
    let width = rows
        .keys()
        .map(|k| k.chars().count())
        .max()
        .unwrap_or(0)
        .max(heading.len());
    let _ = writeln!(
        s,
        "{heading:<width$}  {:>8}  {:>11}  {:>11}  {:>6}  {:>12}  {:>14}  {:>6}  {:>9}",
        "sessions",
        "startup p50",
        "startup p90",
        "stall",
        "bitrate",
        "switches/sess",
        "errors",
        "abandoned"
    );
    if rows.is_empty() {
        let _ = writeln!(s, "(no sessions)");
    }
    for (name, st) in rows {
        let seconds = |q: f64| {
            st.startup
                .quantile(q)
                .map_or("-".to_string(), |ms| format!("{:.2}", ms / 1000.0))
        };
        let bitrate = if st.bitrate_sessions > 0 {
            format!("{:.0} kbps", st.bitrate_sum / st.bitrate_sessions as f64)
        } else {
            "-".into()
        };
        let per_session = if st.sessions > 0 {
            format!("{:.2}", st.switches as f64 / st.sessions as f64)
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "{name:<width$}  {:>8}  {:>11}  {:>11}  {:>6}  {:>12}  {:>14}  {:>6}  {:>9}",
            st.sessions,
            seconds(0.5),
            seconds(0.9),
            percent(st.stall_seconds, st.watch_seconds + st.stall_seconds),
            bitrate,
            per_session,
            percent(st.error_sessions as f64, st.sessions as f64),
            percent(st.abandoned as f64, st.sessions as f64),
        );
    }
}

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.1}%", 100.0 * part / whole)
    } else {
        "-".into()
    }
}

/// `90s`, `15m`, `24h`, `2d`, or seconds.
fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Values (ms) in buckets 5 % wide, for percentiles in bounded memory: bucket 0 holds up to 1, bucket i
/// (1.05^(i-1), 1.05^i]; the last (past 1.05^400 ≈ 3 × 10^8) holds the rest. A percentile is its bucket's
/// upper bound: at most 5 % above the true value.
#[derive(Default, Debug, Clone, PartialEq)]
pub struct LogHistogram {
    counts: Vec<u64>,
    total: u64,
}

const LOG_STEP: f64 = 1.05;
const LOG_BUCKETS: usize = 401;

impl LogHistogram {
    pub fn add(&mut self, value: f64) {
        let i = if value.is_nan() || value <= 1.0 {
            0
        } else {
            ((value.ln() / LOG_STEP.ln()).ceil() as usize).min(LOG_BUCKETS - 1)
        };
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
    }

    /// The `q` quantile (0 to 1), or none without values.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(LOG_STEP.powi(i as i32));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::events::{Cmcd, PlayerEvent, TitleStats};

    /// A little script of events for one session.
    struct Player {
        session: &'static str,
        title: &'static str,
        edge: Option<&'static str>,
        region: Option<&'static str>,
        next_id: u32,
    }

    fn player(session: &'static str) -> Player {
        Player {
            session,
            title: "mandelbrot",
            edge: Some("edge-1"),
            region: Some("eu"),
            next_id: 0,
        }
    }

    impl Player {
        fn event(&mut self, at_ms: i64, detail: EventDetail, br: Option<u64>) -> PlaybackRecord {
            self.next_id += 1;
            PlaybackRecord {
                event: PlayerEvent {
                    id: format!("{}", self.next_id),
                    session: self.session.into(),
                    title: self.title.into(),
                    ts: at_ms as u64,
                    detail,
                    cmcd: Cmcd {
                        br,
                        ..Cmcd::default()
                    },
                    edge: None,
                    region: None,
                },
                received_ms: at_ms,
                client: None,
                edge_name: self.edge.map(str::to_string),
                edge_region: None,
                viewer_region: self.region.map(str::to_string),
            }
        }
        fn start(&mut self, at: i64, startup_ms: u64, br: u64) -> PlaybackRecord {
            self.event(at, EventDetail::Start { startup_ms }, Some(br))
        }
        fn beat(&mut self, at: i64, played_ms: u64, br: Option<u64>) -> PlaybackRecord {
            self.event(
                at,
                EventDetail::Heartbeat {
                    played_ms: Some(played_ms),
                    position_ms: None,
                },
                br,
            )
        }
        fn at(&mut self, at: i64, position_ms: u64, br: Option<u64>) -> PlaybackRecord {
            self.event(
                at,
                EventDetail::Heartbeat {
                    played_ms: None,
                    position_ms: Some(position_ms),
                },
                br,
            )
        }
        fn seek(&mut self, at: i64, position_ms: u64) -> PlaybackRecord {
            self.event(at, EventDetail::Seek { position_ms }, None)
        }
        fn stall(&mut self, at: i64, duration_ms: u64) -> PlaybackRecord {
            self.event(at, EventDetail::Stall { duration_ms }, None)
        }
        fn switch(&mut self, at: i64, from_kbps: u64, to_kbps: u64) -> PlaybackRecord {
            self.event(at, EventDetail::BitrateSwitch { from_kbps, to_kbps }, None)
        }
        fn error(&mut self, at: i64) -> PlaybackRecord {
            self.event(
                at,
                EventDetail::Error {
                    code: "E".into(),
                    message: None,
                },
                None,
            )
        }
        fn end(&mut self, at: i64, reason: EndReason, watched_ms: u64) -> PlaybackRecord {
            self.event(at, EventDetail::End { reason, watched_ms }, None)
        }
    }

    fn run(agg: &mut Aggregator, records: &[PlaybackRecord]) -> Vec<Observation> {
        let mut out = Vec::new();
        for r in records {
            agg.playback(r, &mut out);
        }
        out
    }

    fn closed(out: &[Observation]) -> Vec<Closed> {
        out.iter()
            .filter_map(|o| match o {
                Observation::Closed(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }

    fn sum(out: &[Observation], which: fn(&Observation) -> Option<f64>) -> f64 {
        out.iter().filter_map(which).sum()
    }

    fn watch(o: &Observation) -> Option<f64> {
        match o {
            Observation::Watch { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }

    fn stall(o: &Observation) -> Option<f64> {
        match o {
            Observation::Stall { seconds, .. } => Some(*seconds),
            _ => None,
        }
    }

    fn labels(title: &str, edge: &str, region: &str) -> Arc<Labels> {
        Arc::new(Labels {
            title: title.into(),
            edge: edge.into(),
            region: region.into(),
        })
    }

    #[test]
    fn a_whole_session_gives_startup_watch_stalls_switches_and_a_time_weighted_bitrate() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s1");
        let out = run(
            &mut agg,
            &[
                p.start(0, 1200, 1000),
                p.beat(10_000, 10_000, Some(1000)),
                p.stall(12_000, 500),
                p.switch(15_000, 1000, 3000),
                p.beat(20_000, 20_000, None), // the last 10 s at 3000 (the switch's), unreported br
                p.beat(30_000, 30_000, Some(3000)),
                p.end(31_000, EndReason::Completed, 30_000),
            ],
        );
        let l = labels("mandelbrot", "edge-1", "eu");
        assert_eq!(
            out[1],
            Observation::Startup {
                labels: l.clone(),
                seconds: 1.2
            }
        );
        assert_eq!(sum(&out, watch), 30.0);
        assert_eq!(sum(&out, stall), 0.5);
        assert!(out.contains(&Observation::Switch { labels: l.clone() }));
        assert_eq!(
            closed(&out),
            vec![Closed {
                labels: l,
                outcome: Outcome::Completed,
                had_error: false,
                switches: 1,
                // 10 s at 1000, 20 s at 3000.
                avg_bitrate_kbps: Some((10.0 * 1000.0 + 20.0 * 3000.0) / 30.0),
                evicted: false,
            }]
        );
        assert_eq!(agg.sessions(), 0);
        let kinds: Vec<&str> = out
            .iter()
            .filter_map(|o| match o {
                Observation::Event { kind } => Some(*kind),
                _ => None,
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "start",
                "heartbeat",
                "stall",
                "bitrate_switch",
                "heartbeat",
                "heartbeat",
                "end"
            ]
        );
    }

    #[test]
    fn a_redelivered_event_counts_once() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s1");
        let (start, beat, stall) = (
            p.start(0, 800, 2000),
            p.beat(5_000, 5_000, None),
            p.stall(6_000, 250),
        );
        let first = run(&mut agg, &[start.clone(), beat.clone(), stall.clone()]);
        let again = run(&mut agg, &[start, beat, stall]);
        assert_eq!(again, vec![Observation::Duplicate; 3]);
        assert_eq!(sum(&first, watch), 5.0);
        // The same id in another session is another event.
        let mut q = player("s2");
        let other = run(&mut agg, &[q.start(0, 800, 2000)]);
        assert!(matches!(other[1], Observation::Startup { .. }));
    }

    #[test]
    fn duplicates_are_remembered_only_among_the_last_ids() {
        let mut agg = Aggregator::new(QoeConfig {
            max_seen_ids: 2,
            ..QoeConfig::default()
        });
        let mut p = player("s1");
        let events = [p.stall(0, 100), p.stall(1, 100), p.stall(2, 100)];
        run(&mut agg, &events);
        // The first id was evicted by the third: counted again; the last two are still known.
        let out = run(&mut agg, &events[1..]);
        assert_eq!(out, vec![Observation::Duplicate; 2]);
        let out = run(&mut agg, &events[..1]);
        assert_eq!(sum(&out, stall), 0.1);
    }

    #[test]
    fn late_heartbeats_add_no_watch_time_and_order_does_not_change_the_total() {
        let mut p = player("s1");
        let events = [
            p.start(0, 500, 1000),
            p.beat(10_000, 10_000, Some(1000)),
            p.beat(20_000, 20_000, Some(1000)),
            p.beat(30_000, 30_000, Some(1000)),
        ];
        let mut in_order = Aggregator::new(QoeConfig::default());
        let mut shuffled = Aggregator::new(QoeConfig::default());
        let a = run(&mut in_order, &events);
        let b = run(
            &mut shuffled,
            &[
                events[0].clone(),
                events[3].clone(),
                events[1].clone(),
                events[2].clone(),
            ],
        );
        assert_eq!(sum(&a, watch), 30.0);
        assert_eq!(sum(&b, watch), 30.0);
        assert_eq!(b.iter().filter(|o| watch(o).is_some()).count(), 1);
        // A heartbeat before its start (out of order) still counts as playing; the start still gives startup.
        let mut q = player("s2");
        let mut agg = Aggregator::new(QoeConfig::default());
        let out = run(
            &mut agg,
            &[q.beat(10_000, 10_000, None), q.start(0, 700, 1000)],
        );
        assert!(out.contains(&Observation::Startup {
            labels: labels("mandelbrot", "edge-1", "eu"),
            seconds: 0.7
        }));
        let mut out = Vec::new();
        agg.expire(10_000 + 300_000, &mut out);
        assert_eq!(closed(&out)[0].outcome, Outcome::TimedOut);
    }

    #[test]
    fn without_played_time_the_playheads_progress_counts_between_heartbeats_and_seeks() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s1");
        let out = run(
            &mut agg,
            &[
                p.start(0, 500, 1000),
                p.at(10_000, 10_000, Some(1000)), // the first: a baseline only
                p.at(20_000, 20_000, Some(2000)), // 10 s at 2000
                p.seek(21_000, 600_000),          // forward: not played
                p.at(30_000, 609_000, Some(2000)), // 9 s
                p.seek(31_000, 5_000),            // backward
                p.at(40_000, 14_000, None),       // 9 s, at the last known 2000
                p.at(41_000, 13_000, None),       // behind the playhead: late, nothing
            ],
        );
        assert_eq!(sum(&out, watch), 28.0);
        // The end's watched time tops up what the heartbeats could not see.
        let out = run(&mut agg, &[p.end(45_000, EndReason::Completed, 40_000)]);
        assert_eq!(sum(&out, watch), 12.0);
        let c = &closed(&out)[0];
        assert_eq!(c.outcome, Outcome::Completed);
        // 28 s at 2000 and the 12 s topped up at the last known 2000.
        assert_eq!(c.avg_bitrate_kbps, Some(2000.0));
    }

    #[test]
    fn an_end_past_the_last_heartbeat_adds_the_rest_and_one_before_it_adds_nothing() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s1");
        let out = run(
            &mut agg,
            &[
                p.start(0, 1, 1),
                p.beat(1, 10_000, None),
                p.end(2, EndReason::Abandoned, 12_500),
            ],
        );
        assert_eq!(sum(&out, watch), 12.5);
        assert_eq!(closed(&out)[0].outcome, Outcome::Abandoned);
        let mut q = player("s2");
        let out = run(
            &mut agg,
            &[
                q.start(0, 1, 1),
                q.beat(1, 10_000, None),
                q.end(2, EndReason::Completed, 9_000),
            ],
        );
        assert_eq!(sum(&out, watch), 10.0);
    }

    /// A session's events, written by a player.
    type Script = Box<dyn Fn(&mut Player) -> Vec<PlaybackRecord>>;

    #[test]
    fn outcomes_follow_the_end_reason_and_whether_the_session_played() {
        let cases: Vec<(Script, Outcome, bool)> = vec![
            (
                Box::new(|p: &mut Player| {
                    vec![p.start(0, 1, 1), p.end(1, EndReason::Completed, 1)]
                }),
                Outcome::Completed,
                false,
            ),
            (
                Box::new(|p: &mut Player| {
                    vec![p.start(0, 1, 1), p.end(1, EndReason::Abandoned, 1)]
                }),
                Outcome::Abandoned,
                false,
            ),
            (
                Box::new(|p: &mut Player| vec![p.end(1, EndReason::Abandoned, 0)]),
                Outcome::ExitBeforeStart,
                false,
            ),
            (
                Box::new(|p: &mut Player| {
                    vec![p.beat(0, 1, None), p.end(1, EndReason::Abandoned, 1)]
                }),
                Outcome::Abandoned,
                false,
            ),
            (
                Box::new(|p: &mut Player| {
                    vec![p.start(0, 1, 1), p.error(1), p.end(2, EndReason::Error, 1)]
                }),
                Outcome::Error,
                true,
            ),
            (
                Box::new(|p: &mut Player| vec![p.error(1), p.end(2, EndReason::Error, 0)]),
                Outcome::Error,
                true,
            ),
            (
                Box::new(|p: &mut Player| {
                    vec![
                        p.start(0, 1, 1),
                        p.error(1),
                        p.end(2, EndReason::Completed, 1),
                    ]
                }),
                Outcome::Completed,
                true,
            ),
        ];
        for (script, outcome, had_error) in cases {
            let mut agg = Aggregator::new(QoeConfig::default());
            let out = run(&mut agg, &script(&mut player("s")));
            let c = closed(&out);
            assert_eq!(
                (c.len(), c[0].outcome, c[0].had_error),
                (1, outcome, had_error)
            );
            assert!(
                out.iter()
                    .filter(|o| matches!(o, Observation::Error { .. }))
                    .count()
                    == usize::from(had_error)
            );
        }
    }

    #[test]
    fn idle_sessions_close_by_whether_they_played_and_later_events_are_late() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let (mut never, mut failed, mut played) = (player("a"), player("b"), player("c"));
        run(
            &mut agg,
            &[
                never.stall(0, 100),
                failed.error(0),
                played.start(0, 1, 1),
                played.beat(60_000, 50_000, None),
            ],
        );
        assert_eq!(agg.sessions(), 3);
        let mut out = Vec::new();
        agg.expire(299_999, &mut out);
        assert!(out.is_empty(), "none idle for 5 minutes yet");
        agg.expire(300_000, &mut out);
        let outcomes: Vec<Outcome> = closed(&out).iter().map(|c| c.outcome).collect();
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.contains(&Outcome::ExitBeforeStart) && outcomes.contains(&Outcome::Error));
        assert_eq!(agg.sessions(), 1);
        out.clear();
        agg.expire(360_000, &mut out);
        assert_eq!(closed(&out)[0].outcome, Outcome::TimedOut);
        assert_eq!(agg.sessions(), 0);
        // An event of a closed session does not reopen it (which would count a session that never started).
        let late = run(
            &mut agg,
            &[played.end(400_000, EndReason::Completed, 90_000)],
        );
        assert_eq!(
            late,
            vec![Observation::Event { kind: "end" }, Observation::Late]
        );
        assert_eq!(agg.sessions(), 0);
    }

    #[test]
    fn each_event_keeps_its_session_awake() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s");
        run(
            &mut agg,
            &[p.start(0, 1, 1), p.beat(200_000, 100_000, None)],
        );
        let mut out = Vec::new();
        agg.expire(400_000, &mut out);
        assert!(out.is_empty());
        agg.expire(500_000, &mut out);
        assert_eq!(closed(&out).len(), 1);
    }

    #[test]
    fn the_least_recently_seen_session_makes_room_when_full() {
        let mut agg = Aggregator::new(QoeConfig {
            max_sessions: 2,
            ..QoeConfig::default()
        });
        let (mut a, mut b, mut c) = (player("a"), player("b"), player("c"));
        run(
            &mut agg,
            &[a.start(0, 1, 1), b.start(10, 1, 1), a.beat(20, 5, None)],
        );
        let out = run(&mut agg, &[c.start(30, 1, 1)]);
        let evicted = closed(&out);
        assert_eq!(evicted.len(), 1);
        assert!(evicted[0].evicted);
        assert_eq!(agg.sessions(), 2);
        // b went: its next event is late, a's is not.
        assert!(run(&mut agg, &[b.beat(40, 5, None)]).contains(&Observation::Late));
        assert!(!run(&mut agg, &[a.beat(40, 10, None)]).contains(&Observation::Late));
    }

    #[test]
    fn a_session_is_a_session_id_and_a_title() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut first = player("s");
        let mut next = player("s");
        next.title = "test-pattern";
        next.next_id = 100;
        run(&mut agg, &[first.start(0, 1, 1), next.start(1, 1, 1)]);
        assert_eq!(agg.sessions(), 2);
    }

    #[test]
    fn labels_past_their_limits_are_other_and_missing_ones_none() {
        let mut agg = Aggregator::new(QoeConfig {
            max_titles: 1,
            max_label_sets: 3,
            ..QoeConfig::default()
        });
        let mut a = player("a");
        let mut b = player("b");
        b.title = "test-pattern";
        let mut c = player("c");
        c.edge = None;
        c.region = None;
        let out = run(
            &mut agg,
            &[
                a.start(0, 1000, 1),
                b.start(0, 1000, 1),
                c.start(0, 1000, 1),
            ],
        );
        let startups: Vec<Arc<Labels>> = out
            .iter()
            .filter_map(|o| match o {
                Observation::Startup { labels, .. } => Some(labels.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            startups,
            vec![
                labels("mandelbrot", "edge-1", "eu"),
                labels("other", "edge-1", "eu"),
                labels("mandelbrot", "none", "none"),
            ]
        );
        assert_eq!(out.iter().filter(|o| **o == Observation::Folded).count(), 1);
        // Past the sets: all other.
        let mut d = player("d");
        d.region = Some("us");
        let out = run(&mut agg, &[d.start(0, 1000, 1)]);
        assert!(out.contains(&Observation::Startup {
            labels: labels("other", "other", "other"),
            seconds: 1.0
        }));
    }

    #[test]
    fn bitrate_falls_back_to_the_mean_of_reported_values_without_played_time() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s");
        let out = run(
            &mut agg,
            &[
                p.start(0, 1, 1000),
                p.stall(1, 1),
                p.end(2, EndReason::Abandoned, 0),
            ],
        );
        assert_eq!(closed(&out)[0].avg_bitrate_kbps, Some(1000.0));
        let mut q = player("t");
        let mut r = p.stall(0, 1);
        r.event.session = "t".into();
        let out = run(&mut agg, &[r, q.end(1, EndReason::Abandoned, 0)]);
        assert_eq!(closed(&out)[0].avg_bitrate_kbps, None);
    }

    #[test]
    fn records_that_do_not_parse_are_invalid_and_other_topics_ignored() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut out = Vec::new();
        agg.record(TOPIC_PLAYBACK, b"{}", &mut out);
        agg.record(TOPIC_EDGE_STATS, b"[", &mut out);
        agg.record("catalog", b"{}", &mut out);
        assert_eq!(
            out,
            vec![
                Observation::Invalid {
                    topic: TOPIC_PLAYBACK
                },
                Observation::Invalid {
                    topic: TOPIC_EDGE_STATS
                }
            ]
        );
        let mut p = player("s");
        let good = serde_json::to_vec(&p.start(0, 1, 1)).unwrap();
        out.clear();
        agg.record(TOPIC_PLAYBACK, &good, &mut out);
        assert_eq!(out[0], Observation::Event { kind: "start" });
    }

    fn edge_record(edge: &str, received_ms: i64) -> EdgeStatsRecord {
        EdgeStatsRecord {
            edge: edge.into(),
            edge_region: None,
            received_ms,
            interval_secs: 10,
            stats: TitleStats {
                title: "mandelbrot".into(),
                requests: [("hit".to_string(), 9), ("miss".to_string(), 1)].into(),
                bytes: 100,
                errors: 1,
                ttfb_ms: Some(crate::control::events::Percentiles {
                    p50: 10.0,
                    p90: 20.0,
                    p99: 40.0,
                }),
                stalls: Some(2),
                sessions: Some(3),
            },
        }
    }

    #[test]
    fn edge_summaries_are_deduplicated_and_their_edges_bounded() {
        let mut agg = Aggregator::new(QoeConfig {
            max_edges: 1,
            ..QoeConfig::default()
        });
        let mut out = Vec::new();
        agg.edge_stats(edge_record("edge-1", 5), &mut out);
        agg.edge_stats(edge_record("edge-1", 5), &mut out);
        agg.edge_stats(edge_record("edge-2", 5), &mut out);
        assert_eq!(out[0], Observation::EdgeStats(edge_record("edge-1", 5)));
        assert_eq!(out[1], Observation::Duplicate);
        assert_eq!(out[2], Observation::Folded);
        assert_eq!(out[3], Observation::EdgeStats(edge_record("other", 5)));
    }

    /// The sum of a metric's series that carry the `want` labels (a histogram's: their counts).
    fn value(registry: &Registry, name: &str, want: &[(&str, &str)]) -> f64 {
        let mut total = 0.0;
        for family in registry.gather().iter().filter(|f| f.name() == name) {
            for m in family.get_metric() {
                let labelled = want.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                });
                if !labelled {
                    continue;
                }
                total += match family.get_field_type() {
                    prometheus::proto::MetricType::COUNTER => m.get_counter().get_value(),
                    prometheus::proto::MetricType::HISTOGRAM => {
                        m.get_histogram().get_sample_count() as f64
                    }
                    _ => m.get_gauge().get_value(),
                };
            }
        }
        total
    }

    #[test]
    fn observations_move_the_prometheus_metrics() {
        let registry = Registry::new();
        let metrics = QoeMetrics::register(&registry);
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s");
        let events = [
            p.start(0, 1500, 2000),
            p.beat(10_000, 10_000, Some(2000)),
            p.stall(11_000, 1000),
            p.switch(12_000, 2000, 4000),
            p.error(13_000),
            p.end(20_000, EndReason::Abandoned, 20_000),
        ];
        let mut out = run(&mut agg, &events);
        out.extend(run(&mut agg, &events[..2]));
        agg.edge_stats(edge_record("edge-1", 1), &mut out);
        for o in &out {
            metrics.apply(o);
        }
        metrics.set_active(agg.sessions());
        let l = [
            ("title", "mandelbrot"),
            ("edge", "edge-1"),
            ("region", "eu"),
        ];
        assert_eq!(value(&registry, "qoe_startup_seconds", &l), 1.0);
        assert_eq!(value(&registry, "qoe_watch_seconds_total", &l), 20.0);
        assert_eq!(value(&registry, "qoe_stall_seconds_total", &l), 1.0);
        assert_eq!(value(&registry, "qoe_stalls_total", &l), 1.0);
        assert_eq!(value(&registry, "qoe_bitrate_switches_total", &l), 1.0);
        assert_eq!(value(&registry, "qoe_errors_total", &l), 1.0);
        assert_eq!(value(&registry, "qoe_error_sessions_total", &l), 1.0);
        assert_eq!(value(&registry, "qoe_bitrate_kbps", &l), 1.0);
        assert_eq!(
            value(&registry, "qoe_sessions_total", &[("outcome", "abandoned")]),
            1.0
        );
        assert_eq!(value(&registry, "qoe_events_total", &[]), 6.0);
        assert_eq!(
            value(&registry, "qoe_events_total", &[("kind", "heartbeat")]),
            1.0
        );
        assert_eq!(value(&registry, "qoe_events_duplicate_total", &[]), 2.0);
        assert_eq!(value(&registry, "qoe_sessions_active", &[]), 0.0);
        assert_eq!(
            value(
                &registry,
                "qoe_edge_requests_total",
                &[("edge", "edge-1"), ("cache_status", "hit")]
            ),
            9.0
        );
        assert_eq!(
            value(&registry, "qoe_edge_response_bytes_total", &[]),
            100.0
        );
        assert_eq!(value(&registry, "qoe_edge_ttfb_requests_total", &[]), 10.0);
        let p90 = value(
            &registry,
            "qoe_edge_ttfb_weighted_seconds_total",
            &[("quantile", "0.9")],
        );
        assert!((p90 - 0.2).abs() < 1e-9, "{p90}");
        // Registering twice (a second run in one process) logs and does not panic.
        let _again = QoeMetrics::register(&registry);
    }

    #[test]
    fn the_report_sums_per_title_edge_and_region() {
        let mut agg = Aggregator::new(QoeConfig::default());
        let (mut a, mut b, mut c) = (player("a"), player("b"), player("c"));
        c.edge = Some("edge-2");
        let mut out = run(
            &mut agg,
            &[
                a.start(0, 1000, 1000),
                a.beat(10_000, 9_000, Some(1000)),
                a.stall(10_000, 1000),
                a.end(11_000, EndReason::Completed, 9_000),
                b.start(0, 3000, 3000),
                b.switch(1000, 3000, 1000),
                b.beat(5_000, 4_000, None),
                b.error(6_000),
                c.end(0, EndReason::Abandoned, 0),
            ],
        );
        agg.edge_stats(edge_record("edge-1", 1), &mut out);
        agg.finish(7_000, &mut out);
        let mut report = Report::default();
        for o in &out {
            report.add(o);
        }
        let t = &report.by_title["mandelbrot"];
        assert_eq!(t.sessions, 3);
        assert_eq!((t.stall_seconds, t.watch_seconds), (1.0, 13.0));
        assert_eq!((t.switches, t.error_sessions, t.abandoned), (1, 1, 1));
        assert_eq!(t.bitrate_sessions, 2);
        assert_eq!(report.by_edge["edge-1"].sessions, 2);
        assert_eq!(report.by_edge["edge-2"].sessions, 1);
        assert_eq!(report.by_region["eu"].sessions, 3);
        assert_eq!(report.events, 9);
        let text = report.render(Duration::from_secs(86_400), true);
        assert!(text.starts_with("QoE over the last 1d: 9 events"), "{text}");
        let row = text
            .lines()
            .find(|l| l.starts_with("mandelbrot"))
            .unwrap_or_else(|| panic!("{text}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        // sessions, p50, p90, stall, bitrate kbps, switches/session, errors, abandoned
        assert_eq!(cells[1], "3");
        assert_eq!(cells[4], "7.1%"); // 1 / (13 + 1)
        assert_eq!(cells[7], "0.33");
        assert_eq!(cells[8], "33.3%");
        assert_eq!(cells[9], "33.3%");
        assert!(text.contains("edge-2"));
        assert!(
            text.lines()
                .any(|l| l.starts_with("edge-1") && l.contains("90.0%")),
            "{text}"
        );
        assert!(
            Report::default()
                .render(Duration::from_secs(90), false)
                .contains("the history is not all here")
        );
    }

    /// Every `qoe_` metric the Grafana dashboard queries is one `QoeMetrics` exports.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        let dashboard = include_str!("../../../configs/grafana/qoe.json");
        let registry = Registry::new();
        let metrics = QoeMetrics::register(&registry);
        // A series of every family (vectors show none until one is used).
        let mut agg = Aggregator::new(QoeConfig::default());
        let mut p = player("s");
        let mut out = run(
            &mut agg,
            &[
                p.start(0, 1000, 1000),
                p.beat(1, 1000, None),
                p.stall(2, 1),
                p.switch(3, 1000, 2000),
                p.error(4),
                p.end(5, EndReason::Completed, 2000),
            ],
        );
        agg.record(TOPIC_PLAYBACK, b"{}", &mut out);
        agg.edge_stats(edge_record("edge-1", 1), &mut out);
        for o in &out {
            metrics.apply(o);
        }
        let exported: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        let mut queried = 0;
        for (at, _) in dashboard.match_indices("qoe_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name == "qoe_" {
                continue; // prose: `qoe_*`
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| exported.iter().any(|e| e == base))
                .unwrap_or(&name);
            assert!(
                exported.iter().any(|e| e == family),
                "the dashboard queries `{name}`, which is not exported"
            );
            queried += 1;
        }
        assert!(queried > 20, "{queried}");
    }

    #[test]
    fn log_histogram_percentiles_are_within_five_percent() {
        let mut h = LogHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=1000 {
            h.add(ms as f64);
        }
        for (q, want) in [(0.5, 500.0), (0.9, 900.0), (0.99, 990.0), (1.0, 1000.0)] {
            let got = h.quantile(q).unwrap();
            assert!(got >= want && got <= want * 1.05, "q{q}: {got}");
        }
        let mut tiny = LogHistogram::default();
        tiny.add(0.0);
        tiny.add(f64::NAN);
        tiny.add(1e300);
        assert_eq!(tiny.quantile(0.5), Some(1.0));
        assert!(tiny.quantile(1.0).unwrap() > 1e8);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        for (secs, want) in [
            (86_400 * 2, "2d"),
            (86_400, "1d"),
            (3600 * 5, "5h"),
            (900, "15m"),
            (90, "90s"),
        ] {
            assert_eq!(duration_text(Duration::from_secs(secs)), want);
        }
    }
}
