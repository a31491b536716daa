//! steersim: how should the control plane steer viewers to edges? It replays one simulated day of viewing
//! against four ways of picking a viewer's edge within the viewer's region, and compares what each costs in
//! cache hits, in load imbalance, and in disruption when an edge fails.
//!
//! The model. R regions of N edges each; each region's viewers go only to its edges. Every edge has a
//! byte-bounded LRU cache; a region's caches together hold `--cache-percent` of the catalogue's bytes. The
//! catalogue has `--titles` titles of 20-150 minutes at 1.5-8 Mb/s (one rendition each), cut into 4 s segments.
//! Sessions arrive as a Poisson process whose rate follows a diurnal curve in each region's local time (peak at
//! 21:00 three times the trough at 09:00; region r is at UTC+9-24r/R, so the first region peaks at noon UTC);
//! each plays a Zipf-chosen title (`--alpha`) from its start for an exponential time (`--watch-minutes`, cut
//! at the title's end), one segment request every 4 s, all on the edge it was steered to when it started. A
//! session is steered once, as `POST /v1/playback` does, with the title's slug as the key. At noon UTC (the
//! failing region's peak) its first edge fails for the rest of the day: its cache is lost and its sessions are
//! steered again among the survivors. Caches warm up for `--warmup-hours` before the day is measured.
//!
//! The policies: round-robin over the region's live edges; a consistent-hash ring (xxh3, `--vnodes` virtual
//! nodes per edge; the key goes to the next live point clockwise); plain rendezvous (`shared::rendezvous::rank`,
//! what the playback API uses today); and rendezvous with bounded loads (`shared::rendezvous::rank_bounded`, the
//! load being concurrent sessions, capacity 1 per edge, `--epsilon`). Each policy is run twice on the same
//! sessions, with and without the failure: a request "moved" is one after the failure that a different edge
//! serves than it would have without it.
//!
//! `cargo run -p benches --release --bin steersim [-- --help]` prints the model's sizes and one markdown table.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use benches::rng::{SplitMix64, mix64};
use clap::Parser;
use shared::rendezvous::{Load, node_seed, rank, rank_bounded};
use twox_hash::XxHash3_64;

/// Every session asks for one segment per tick, so the tick is the segment's duration.
const SEGMENT_SECS: u32 = 4;
const TICKS_PER_HOUR: u32 = 3600 / SEGMENT_SECS;
const TITLE_MINUTES: (f64, f64) = (20.0, 150.0);
const TITLE_MBPS: (f64, f64) = (1.5, 8.0);
/// The diurnal curve's peak and trough, local time; peak/trough = (1 + A) / (1 - A) = 3.
const PEAK_HOUR: f64 = 21.0;
const DIURNAL_AMPLITUDE: f64 = 0.5;
/// The hit ratio of the failed edge's region is also reported over this long after the failure, when the
/// moved sessions meet caches that never held their titles.
const AFTER_FAILURE_WINDOW_HOURS: u32 = 1;

#[derive(Parser, Clone)]
#[command(
    about = "Steering simulation: bounded-load rendezvous vs round-robin, plain rendezvous and a consistent-hash ring"
)]
struct Args {
    /// Seed of the catalogue and the sessions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 3)]
    regions: usize,
    #[arg(long, default_value_t = 4)]
    edges_per_region: usize,
    #[arg(long, default_value_t = 10_000)]
    titles: u32,
    /// Zipf exponent of title popularity.
    #[arg(long, default_value_t = 0.9)]
    alpha: f64,
    /// Sessions started over the measured day, all regions together.
    #[arg(long, default_value_t = 60_000)]
    sessions: u32,
    /// Mean of the exponential watch time (cut at the title's end).
    #[arg(long, default_value_t = 25.0)]
    watch_minutes: f64,
    /// The caches of one region together, in percent of the catalogue's bytes.
    #[arg(long, default_value_t = 5.0)]
    cache_percent: f64,
    /// Bounded-load rendezvous' ε: no edge takes a session past ⌈(1 + ε) × the region's mean⌉.
    #[arg(long, default_value_t = 0.25)]
    epsilon: f64,
    /// Virtual nodes per edge on the consistent-hash ring.
    #[arg(long, default_value_t = 100)]
    vnodes: usize,
    /// Hours simulated before the measured day, so caches start warm.
    #[arg(long, default_value_t = 3)]
    warmup_hours: u32,
    /// Hour of the measured day (UTC) at which the first region's first edge fails.
    #[arg(long, default_value_t = 12)]
    fail_hour: u32,
}

/// Title ranks 0.. with probability proportional to 1/(rank+1)^alpha, by binary search of the CDF.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: u32, alpha: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / f64::from(rank).powf(alpha);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut SplitMix64) -> u32 {
        let target = rng.next_f64() * self.cumulative.last().copied().unwrap_or(0.0);
        let rank = self.cumulative.partition_point(|&c| c <= target);
        rank.min(self.cumulative.len().saturating_sub(1)) as u32
    }
}

struct Title {
    slug: String,
    segments: u32,
    segment_bytes: u64,
}

struct Session {
    start_tick: u32,
    region: usize,
    title: u32,
    segments: u32,
}

struct Workload {
    titles: Vec<Title>,
    catalogue_bytes: u64,
    /// In order of `start_tick`.
    sessions: Vec<Session>,
    ticks: u32,
    measure_from: u32,
    fail_tick: u32,
}

fn generate(args: &Args) -> Workload {
    let mut rng = SplitMix64::new(args.seed);
    let titles: Vec<Title> = (0..args.titles)
        .map(|i| {
            let minutes = TITLE_MINUTES.0 + rng.next_f64() * (TITLE_MINUTES.1 - TITLE_MINUTES.0);
            let mbps = TITLE_MBPS.0 * (TITLE_MBPS.1 / TITLE_MBPS.0).powf(rng.next_f64());
            Title {
                slug: format!("title-{i}"),
                segments: (minutes * 60.0 / f64::from(SEGMENT_SECS)).ceil() as u32,
                segment_bytes: (mbps * 1e6 / 8.0 * f64::from(SEGMENT_SECS)) as u64,
            }
        })
        .collect();
    let catalogue_bytes = titles
        .iter()
        .map(|t| u64::from(t.segments) * t.segment_bytes)
        .sum();
    let zipf = Zipf::new(args.titles, args.alpha);
    let measure_from = args.warmup_hours * TICKS_PER_HOUR;
    let ticks = measure_from + 24 * TICKS_PER_HOUR;
    // The diurnal multiplier averages 1 over a day, so the measured day gets `--sessions` on average.
    let mean_per_tick =
        f64::from(args.sessions) / args.regions as f64 / f64::from(24 * TICKS_PER_HOUR);
    let mut sessions = Vec::new();
    for tick in 0..ticks {
        let utc_hours = (f64::from(tick) - f64::from(measure_from)) / f64::from(TICKS_PER_HOUR);
        for region in 0..args.regions {
            let local = utc_hours + 9.0 - 24.0 * region as f64 / args.regions as f64;
            let phase = (local - PEAK_HOUR) / 24.0 * std::f64::consts::TAU;
            let rate = mean_per_tick * (1.0 + DIURNAL_AMPLITUDE * phase.cos());
            for _ in 0..rng.poisson(rate) {
                let title = zipf.sample(&mut rng);
                let watched = rng.exponential(args.watch_minutes * 60.0) / f64::from(SEGMENT_SECS);
                sessions.push(Session {
                    start_tick: tick,
                    region,
                    title,
                    segments: (watched.ceil() as u32).clamp(1, titles[title as usize].segments),
                });
            }
        }
    }
    Workload {
        titles,
        catalogue_bytes,
        sessions,
        ticks,
        measure_from,
        fail_tick: measure_from + args.fail_hour * TICKS_PER_HOUR,
    }
}

/// Hashes the u64 segment keys with one mix instead of SipHash: the keys are not attacker-chosen, and the
/// replay spends most of its time in map lookups.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 ^= key;
    }
}

const NIL: u32 = u32::MAX;

struct LruNode {
    key: u64,
    size: u64,
    newer: u32,
    older: u32,
}

/// LRU by bytes, over a slab of nodes linked from newest to oldest.
struct ByteLru {
    capacity: u64,
    used: u64,
    index: HashMap<u64, u32, BuildHasherDefault<KeyHasher>>,
    nodes: Vec<LruNode>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
}

impl ByteLru {
    fn new(capacity: u64) -> Self {
        ByteLru {
            capacity,
            used: 0,
            index: HashMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// Whether `key` was cached; it is cached (and newest) afterwards unless larger than the whole cache.
    fn access(&mut self, key: u64, size: u64) -> bool {
        if let Some(&node) = self.index.get(&key) {
            self.unlink(node);
            self.push_newest(node);
            return true;
        }
        if size > self.capacity {
            return false;
        }
        while self.used + size > self.capacity {
            let oldest = self.oldest;
            self.unlink(oldest);
            self.index.remove(&self.nodes[oldest as usize].key);
            self.used -= self.nodes[oldest as usize].size;
            self.free.push(oldest);
        }
        let fresh = LruNode {
            key,
            size,
            newer: NIL,
            older: NIL,
        };
        let node = match self.free.pop() {
            Some(node) => {
                self.nodes[node as usize] = fresh;
                node
            }
            None => {
                self.nodes.push(fresh);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(key, node);
        self.used += size;
        self.push_newest(node);
        false
    }

    fn clear(&mut self) {
        *self = ByteLru::new(self.capacity);
    }

    fn unlink(&mut self, node: u32) {
        let LruNode { newer, older, .. } = self.nodes[node as usize];
        match newer {
            NIL => self.newest = older,
            n => self.nodes[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.nodes[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, node: u32) {
        self.nodes[node as usize].newer = NIL;
        self.nodes[node as usize].older = self.newest;
        match self.newest {
            NIL => self.oldest = node,
            n => self.nodes[n as usize].newer = node,
        }
        self.newest = node;
    }
}

/// A consistent-hash ring (Karger et al.): each edge owns the arcs before its virtual nodes' points.
struct Ring {
    /// (point, edge), sorted by point.
    points: Vec<(u64, usize)>,
}

impl Ring {
    fn new(edges: &[(usize, &str)], vnodes: usize) -> Self {
        let mut points: Vec<(u64, usize)> = edges
            .iter()
            .flat_map(|&(edge, name)| {
                (0..vnodes)
                    .map(move |v| (XxHash3_64::oneshot(format!("{name}#{v}").as_bytes()), edge))
            })
            .collect();
        points.sort_unstable();
        Ring { points }
    }

    /// The edge owning `key`'s hash, passing over dead edges' points.
    fn lookup(&self, key: &str, alive: impl Fn(usize) -> bool) -> Option<usize> {
        let hash = XxHash3_64::oneshot(key.as_bytes());
        let start = self.points.partition_point(|&(point, _)| point < hash);
        let (before, after) = self.points.split_at(start);
        after
            .iter()
            .chain(before)
            .map(|&(_, edge)| edge)
            .find(|&edge| alive(edge))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Policy {
    RoundRobin,
    ConsistentHash,
    Rendezvous,
    BoundedRendezvous,
}

impl Policy {
    const ALL: [Policy; 4] = [
        Policy::RoundRobin,
        Policy::ConsistentHash,
        Policy::Rendezvous,
        Policy::BoundedRendezvous,
    ];

    fn label(self, args: &Args) -> String {
        match self {
            Policy::RoundRobin => "round-robin".into(),
            Policy::ConsistentHash => format!("consistent hash ({} vnodes)", args.vnodes),
            Policy::Rendezvous => "rendezvous".into(),
            Policy::BoundedRendezvous => format!("bounded-load rendezvous (ε {})", args.epsilon),
        }
    }
}

/// The edges of one region and what each policy keeps about them.
struct RegionEdges {
    /// Global edge indices.
    edges: Vec<usize>,
    seeds: Vec<u64>,
    ring: Ring,
    next_round_robin: usize,
}

struct Steering {
    policy: Policy,
    epsilon: f64,
    regions: Vec<RegionEdges>,
}

impl Steering {
    fn new(policy: Policy, args: &Args) -> Self {
        let regions = (0..args.regions)
            .map(|r| {
                let names: Vec<(usize, String)> = (0..args.edges_per_region)
                    .map(|e| {
                        (
                            r * args.edges_per_region + e,
                            format!("https://edge-{r}-{e}.example"),
                        )
                    })
                    .collect();
                let borrowed: Vec<(usize, &str)> =
                    names.iter().map(|(i, n)| (*i, n.as_str())).collect();
                RegionEdges {
                    edges: names.iter().map(|(i, _)| *i).collect(),
                    seeds: names.iter().map(|(_, n)| node_seed(n)).collect(),
                    ring: Ring::new(&borrowed, args.vnodes),
                    next_round_robin: 0,
                }
            })
            .collect();
        Steering {
            policy,
            epsilon: args.epsilon,
            regions,
        }
    }

    /// The edge for a new session of `slug` in `region`; `loads` are concurrent sessions by global edge.
    fn choose(&mut self, region: usize, slug: &str, alive: &[bool], loads: &[u32]) -> usize {
        let r = &mut self.regions[region];
        let live: Vec<usize> = (0..r.edges.len()).filter(|&i| alive[r.edges[i]]).collect();
        let nodes: Vec<(u64, f64)> = live.iter().map(|&i| (r.seeds[i], 1.0)).collect();
        let pick = match self.policy {
            Policy::RoundRobin => {
                r.next_round_robin = r.next_round_robin.wrapping_add(1);
                live[r.next_round_robin % live.len()]
            }
            Policy::ConsistentHash => {
                return r
                    .ring
                    .lookup(slug, |edge| alive[edge])
                    .expect("a live edge");
            }
            Policy::Rendezvous => live[rank(slug, &nodes)[0]],
            Policy::BoundedRendezvous => {
                let region_loads: Vec<Load> = live
                    .iter()
                    .map(|&i| Load {
                        current: f64::from(loads[r.edges[i]]),
                        capacity: 1.0,
                    })
                    .collect();
                live[rank_bounded(slug, &nodes, &region_loads, self.epsilon)[0]]
            }
        };
        r.edges[pick]
    }
}

#[derive(Default, Clone, Copy)]
struct Bytes {
    requested: u64,
    hit: u64,
}

impl Bytes {
    fn add(&mut self, size: u64, hit: bool) {
        self.requested += size;
        if hit {
            self.hit += size;
        }
    }

    fn ratio(self) -> f64 {
        self.hit as f64 / self.requested.max(1) as f64
    }
}

struct RunResult {
    bytes: Bytes,
    after_failure: Bytes,
    /// Σ over ticks and regions of the busiest live edge's sessions, and of the mean.
    sum_max: f64,
    sum_mean: f64,
    /// Per region: the most sessions any edge had at once, and the highest mean.
    peak_max: Vec<f64>,
    peak_mean: Vec<f64>,
    sessions_moved_at_failure: u32,
    /// The edge each session ended on (sessions move at most once, at the failure).
    final_edge: Vec<u32>,
}

/// Replays the day under `policy`; without `with_cache`, only the steering (for the run without the failure).
fn run(
    workload: &Workload,
    args: &Args,
    policy: Policy,
    fail: bool,
    with_cache: bool,
) -> RunResult {
    let edge_count = args.regions * args.edges_per_region;
    let per_edge = (args.cache_percent / 100.0 * workload.catalogue_bytes as f64
        / args.edges_per_region as f64) as u64;
    let mut caches: Vec<ByteLru> = (0..edge_count).map(|_| ByteLru::new(per_edge)).collect();
    let mut alive = vec![true; edge_count];
    let mut loads = vec![0u32; edge_count];
    let mut steering = Steering::new(policy, args);
    let failed_edge = 0;
    let mut result = RunResult {
        bytes: Bytes::default(),
        after_failure: Bytes::default(),
        sum_max: 0.0,
        sum_mean: 0.0,
        peak_max: vec![0.0; args.regions],
        peak_mean: vec![0.0; args.regions],
        sessions_moved_at_failure: 0,
        final_edge: vec![0; workload.sessions.len()],
    };
    // (session, next segment) of the sessions playing.
    let mut playing: Vec<(usize, u32)> = Vec::new();
    let mut next_session = 0;
    let after_failure_end = workload.fail_tick + AFTER_FAILURE_WINDOW_HOURS * TICKS_PER_HOUR;
    for tick in 0..workload.ticks {
        if fail && tick == workload.fail_tick {
            alive[failed_edge] = false;
            loads[failed_edge] = 0;
            caches[failed_edge].clear();
            for &(s, _) in &playing {
                if result.final_edge[s] as usize == failed_edge {
                    let session = &workload.sessions[s];
                    let slug = &workload.titles[session.title as usize].slug;
                    let edge = steering.choose(session.region, slug, &alive, &loads);
                    loads[edge] += 1;
                    result.final_edge[s] = edge as u32;
                    result.sessions_moved_at_failure += 1;
                }
            }
        }
        while let Some(session) = workload.sessions.get(next_session)
            && session.start_tick == tick
        {
            let slug = &workload.titles[session.title as usize].slug;
            let edge = steering.choose(session.region, slug, &alive, &loads);
            loads[edge] += 1;
            result.final_edge[next_session] = edge as u32;
            playing.push((next_session, 0));
            next_session += 1;
        }
        let measured = tick >= workload.measure_from;
        let mut i = 0;
        while i < playing.len() {
            let (s, segment) = playing[i];
            let session = &workload.sessions[s];
            let edge = result.final_edge[s] as usize;
            if with_cache {
                let title = &workload.titles[session.title as usize];
                let key = (u64::from(session.title) << 32) | u64::from(segment);
                let hit = caches[edge].access(key, title.segment_bytes);
                if measured {
                    result.bytes.add(title.segment_bytes, hit);
                }
                if fail
                    && session.region == 0
                    && (workload.fail_tick..after_failure_end).contains(&tick)
                {
                    result.after_failure.add(title.segment_bytes, hit);
                }
            }
            if segment + 1 == session.segments {
                loads[edge] -= 1;
                playing.swap_remove(i);
            } else {
                playing[i].1 += 1;
                i += 1;
            }
        }
        if measured {
            for (r, region) in steering.regions.iter().enumerate() {
                let live: Vec<f64> = region
                    .edges
                    .iter()
                    .filter(|&&e| alive[e])
                    .map(|&e| f64::from(loads[e]))
                    .collect();
                let max = live.iter().copied().fold(0.0, f64::max);
                let mean = live.iter().sum::<f64>() / live.len() as f64;
                result.sum_max += max;
                result.sum_mean += mean;
                result.peak_max[r] = result.peak_max[r].max(max);
                result.peak_mean[r] = result.peak_mean[r].max(mean);
            }
        }
    }
    result
}

/// Segment requests a session makes at or after `tick` (it asks for segment k at `start_tick + k`).
fn requests_from(session: &Session, tick: u32) -> u64 {
    let end = session.start_tick + session.segments;
    u64::from(end.saturating_sub(session.start_tick.max(tick)))
}

fn main() {
    let args = Args::parse();
    assert!(
        args.regions > 0 && args.edges_per_region > 1 && args.titles > 0 && args.fail_hour < 24,
        "needs a region, two edges per region, a title, and a failure hour within the day"
    );
    let started = Instant::now();
    let workload = generate(&args);
    let requests: u64 = workload
        .sessions
        .iter()
        .map(|s| u64::from(s.segments))
        .sum();
    println!(
        "{} regions × {} edges; {} titles, {:.1} TB, Zipf α {}; {} sessions ({} measured), {:.1} M segment \
         requests of {} s; caches {} % of the catalogue per region ({:.0} GB per edge); edge 0 of region 0 \
         fails at {}:00 UTC (its peak) for the rest of the day",
        args.regions,
        args.edges_per_region,
        args.titles,
        workload.catalogue_bytes as f64 / 1e12,
        args.alpha,
        workload.sessions.len(),
        workload
            .sessions
            .iter()
            .filter(|s| s.start_tick >= workload.measure_from)
            .count(),
        requests as f64 / 1e6,
        SEGMENT_SECS,
        args.cache_percent,
        args.cache_percent / 100.0 * workload.catalogue_bytes as f64
            / args.edges_per_region as f64
            / 1e9,
        args.fail_hour,
    );
    let results: Vec<(RunResult, RunResult)> = std::thread::scope(|scope| {
        let handles: Vec<_> = Policy::ALL
            .iter()
            .map(|&policy| {
                let (workload, args) = (&workload, &args);
                scope.spawn(move || {
                    (
                        run(workload, args, policy, true, true),
                        run(workload, args, policy, false, false),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a run panicked"))
            .collect()
    });
    let after_failure_requests: u64 = workload
        .sessions
        .iter()
        .filter(|s| s.region == 0)
        .map(|s| requests_from(s, workload.fail_tick))
        .sum();
    println!();
    println!(
        "| policy | byte hit ratio | hit ratio, failed region, {AFTER_FAILURE_WINDOW_HOURS} h after | max/mean load \
         (time-avg) | max/mean load (peak) | sessions moved at failure | requests moved by failure | titles moved |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (policy, (failing, steady)) in Policy::ALL.iter().zip(&results) {
        let mut moved_requests = 0;
        let mut moved_titles = HashSet::new();
        for (s, session) in workload.sessions.iter().enumerate() {
            if failing.final_edge[s] != steady.final_edge[s] {
                moved_requests += requests_from(session, workload.fail_tick);
                moved_titles.insert(session.title);
            }
        }
        let peak = (0..args.regions)
            .map(|r| failing.peak_max[r] / failing.peak_mean[r].max(1.0))
            .fold(0.0, f64::max);
        println!(
            "| {} | {:.1} % | {:.1} % | {:.2} | {:.2} | {} | {} ({:.0} % of the region's) | {} |",
            policy.label(&args),
            failing.bytes.ratio() * 100.0,
            failing.after_failure.ratio() * 100.0,
            failing.sum_max / failing.sum_mean.max(1.0),
            peak,
            failing.sessions_moved_at_failure,
            moved_requests,
            moved_requests as f64 / after_failure_requests.max(1) as f64 * 100.0,
            moved_titles.len(),
        );
    }
    println!();
    println!(
        "max/mean: the busiest live edge's concurrent sessions over its region's mean, summed over 4 s ticks \
         (time-avg) or at each region's peak (peak; the worst region). Requests moved: segment requests after \
         the failure served by another edge than in the same run without it, and their share of the failed \
         region's requests after the failure. {:.1} s.",
        started.elapsed().as_secs_f64()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_frequencies_follow_the_exponent() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = SplitMix64::new(7);
        let mut counts = [0u32; 3];
        for _ in 0..200_000 {
            if let Some(c) = counts.get_mut(zipf.sample(&mut rng) as usize) {
                *c += 1;
            }
        }
        // P(rank k) ∝ 1/(k+1): rank 0 is drawn twice as often as rank 1 and three times as often as rank 2.
        let ratio = |a: u32, b: u32| f64::from(a) / f64::from(b);
        assert!(
            (ratio(counts[0], counts[1]) - 2.0).abs() < 0.1,
            "{counts:?}"
        );
        assert!(
            (ratio(counts[0], counts[2]) - 3.0).abs() < 0.15,
            "{counts:?}"
        );
    }

    #[test]
    fn ring_spreads_keys_and_a_dead_edge_moves_only_its_own() {
        let names = ["a", "b", "c", "d"];
        let edges: Vec<(usize, &str)> = names.iter().copied().enumerate().collect();
        let ring = Ring::new(&edges, 100);
        let keys: Vec<String> = (0..20_000).map(|k| format!("title-{k}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| ring.lookup(k, |_| true).unwrap())
            .collect();
        for edge in 0..4 {
            let share = before.iter().filter(|&&e| e == edge).count() as f64 / keys.len() as f64;
            assert!((share - 0.25).abs() < 0.05, "edge {edge}: {share}");
        }
        let after: Vec<usize> = keys
            .iter()
            .map(|k| ring.lookup(k, |e| e != 2).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            assert_ne!(*a, 2);
            if *b != 2 {
                assert_eq!(a, b, "a key not on the dead edge moved");
            }
        }
        assert_eq!(ring.lookup("x", |_| false), None);
    }

    #[test]
    fn lru_evicts_the_least_recently_used_until_the_new_segment_fits() {
        let mut lru = ByteLru::new(10);
        assert!(!lru.access(1, 4));
        assert!(!lru.access(2, 4));
        assert!(lru.access(1, 4));
        assert!(!lru.access(3, 4)); // evicts 2, the older
        assert!(lru.access(1, 4));
        assert!(!lru.access(2, 4));
        assert!(!lru.access(4, 11)); // larger than the cache: not stored, nothing evicted
        assert!(lru.access(1, 4));
    }
}
