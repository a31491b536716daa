//! cachesim: which eviction policy should the edge's memory cache use by default, and how much do eviction,
//! prefetch and proactive fill that know about video sessions gain? It answers with byte hit ratios on a synthetic
//! but realistic VOD trace (Zipf-popular titles, 4 s segments in four video renditions and one audio rendition,
//! playlists, ABR switches, early abandonment), replayed against foyer's in-memory cache with each eviction policy
//! foyer offers, a plain byte-weighted LRU, the video-aware policies of `cachesim/video.rs` (with and without
//! prefetch of the next k segments and a proactive fill from an earlier day), and Belady's OPT, at cache sizes
//! given as a fraction of the bytes of the distinct objects the trace requests. Beside each hit ratio stand the
//! bytes fetched from upstream: demand misses, prefetches (used or wasted) and the fill. OPT does not prefetch, so a
//! prefetching policy can serve more demand bytes from cache than OPT while fetching more from upstream.
//!
//! `cachesim [--quick] [--seed N] [--titles N] [--alpha A] [--requests N] [--viewers N] [--sizes 1,2,5,10,20]
//! [--prefetch 1,2,3] [--json PATH]` prints the trace summary, the foyer policies against LRU and OPT with the
//! recommended default for the memory tier (goals: ≥ LRU + 5 points, ≥ 0.9 × OPT at every size), then one table per
//! size with every policy, and the video goal (≥ 0.9 × OPT byte hit ratio at 10 % of the unique bytes).

// The parts live in `cachesim/` beside this file (a binary's root looks for modules beside itself).
#[path = "cachesim/foyer_policies.rs"]
mod foyer_policies;
#[path = "cachesim/reference.rs"]
mod reference;
#[path = "cachesim/trace.rs"]
mod trace;
#[path = "cachesim/video.rs"]
mod video;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use foyer_policies::FoyerPolicy;
use trace::{Request, RequestInfo, TraceParams};
use video::{Extra, History, Rule};

/// Default trace: long enough that popular titles are watched by many sessions (each unique byte is requested about
/// twice). The foyer policies, LRU and OPT at 5 sizes (35 replays) take about a minute on two cores; the video-aware
/// ones (70 more replays, each ranking sampled objects against the sessions of their title) bring a full run to
/// about 12 minutes. The replay cost is linear in the number of requests.
const DEFAULT_REQUESTS: usize = 6_000_000;
const DEFAULT_TITLES: u32 = 2_000;
const DEFAULT_VIEWERS: u32 = 500;
const QUICK_REQUESTS: usize = 1_000_000;
const QUICK_TITLES: u32 = 500;
const QUICK_VIEWERS: u32 = 150;
/// The goals the default policy should meet at every size.
const GOAL_POINTS_OVER_LRU: f64 = 5.0;
const GOAL_FRACTION_OF_OPT: f64 = 0.9;
/// The video goal (issue 19): ≥ 0.9 × OPT byte hit ratio at this size (percent of the unique bytes).
const VIDEO_GOAL_SIZE: f64 = 10.0;
/// The earlier day the +warm and +fill policies learn from: the same catalogue, other sessions.
const HISTORY_DAY: u64 = 1;

#[derive(Parser)]
#[command(
    about = "Trace-driven cache simulator: byte hit ratios of foyer's eviction policies vs LRU and OPT"
)]
struct Args {
    /// A smaller trace (500 titles, 1M requests, 150 viewers) for a run of about ten seconds.
    #[arg(long)]
    quick: bool,
    /// Seed of the trace generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Titles in the catalogue (default 2000; 500 with --quick).
    #[arg(long)]
    titles: Option<u32>,
    /// Zipf exponent of title popularity.
    #[arg(long, default_value_t = 0.9)]
    alpha: f64,
    /// Requests in the trace (default 6,000,000; 1,000,000 with --quick).
    #[arg(long)]
    requests: Option<usize>,
    /// Concurrent viewers (default 500; 150 with --quick).
    #[arg(long)]
    viewers: Option<u32>,
    /// Cache sizes, in percent of the trace's unique bytes.
    #[arg(long, value_delimiter = ',', default_value = "1,2,5,10,20")]
    sizes: Vec<f64>,
    /// Prefetch depths (segments) replayed with the value policy, with and without the fill.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    prefetch: Vec<u32>,
    /// Replay only these policies (by the names the tables print), with LRU and OPT.
    #[arg(long, value_delimiter = ',')]
    policies: Option<Vec<String>>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Replays run in parallel on this many threads (default: the number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

/// Requests and bytes served, and how many of them were hits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HitCounts {
    pub requests: u64,
    pub hits: u64,
    pub bytes: u64,
    pub hit_bytes: u64,
}

impl HitCounts {
    pub fn record(&mut self, size: u32, hit: bool) {
        self.requests += 1;
        self.bytes += u64::from(size);
        if hit {
            self.hits += 1;
            self.hit_bytes += u64::from(size);
        }
    }

    pub fn byte_hit_ratio(&self) -> f64 {
        ratio(self.hit_bytes, self.bytes)
    }

    pub fn object_hit_ratio(&self) -> f64 {
        ratio(self.hits, self.requests)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Every replayed policy: foyer's, the two references, and the video-aware ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Foyer(FoyerPolicy),
    ReferenceLru,
    Video {
        rule: Rule,
        prefetch: u32,
        prior: Prior,
    },
    Belady,
}

/// What a video-aware policy knows before the trace starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prior {
    /// Nothing: it learns from the trace's first request on.
    Cold,
    /// What it learned from the earlier day (popularity, how far sessions go, rendition moves, requests per start).
    Warm,
    /// That, and the cache is filled before the trace with the objects it rates highest.
    Fill,
}

impl Policy {
    fn all(prefetch: &[u32]) -> Vec<Policy> {
        let mut all: Vec<Policy> = FoyerPolicy::ALL.into_iter().map(Policy::Foyer).collect();
        all.push(Policy::ReferenceLru);
        let video = |rule, prefetch, prior| Policy::Video {
            rule,
            prefetch,
            prior,
        };
        for rule in [
            Rule::PassedFirst,
            Rule::AheadProtected,
            Rule::PassedAheadLru,
            Rule::Value,
        ] {
            all.push(video(rule, 0, Prior::Cold));
        }
        for &k in prefetch {
            all.push(video(Rule::Value, k, Prior::Cold));
        }
        all.push(video(Rule::Value, 0, Prior::Warm));
        all.push(video(Rule::Value, 0, Prior::Fill));
        for &k in prefetch {
            all.push(video(Rule::Value, k, Prior::Fill));
        }
        all.push(Policy::Belady);
        all
    }

    fn name(self) -> String {
        match self {
            Policy::Foyer(p) => p.name().to_string(),
            Policy::ReferenceLru => "lru".to_string(),
            Policy::Video {
                rule,
                prefetch,
                prior,
            } => {
                let mut name = rule.name().to_string();
                match prior {
                    Prior::Cold => {}
                    Prior::Warm => name.push_str("+warm"),
                    Prior::Fill => name.push_str("+fill"),
                }
                if prefetch > 0 {
                    name.push_str(&format!("+prefetch{prefetch}"));
                }
                name
            }
            Policy::Belady => "opt".to_string(),
        }
    }

    /// Whether it reads no more from upstream than its demand misses.
    fn demand_only(self) -> bool {
        !matches!(
            self,
            Policy::Video { prefetch, prior, .. } if prefetch > 0 || prior == Prior::Fill
        )
    }
}

/// What the trace holds.
#[derive(Debug, Clone, Serialize)]
struct TraceSummary {
    seed: u64,
    titles: u32,
    zipf_alpha: f64,
    viewers: u32,
    sessions: u64,
    simulated_hours: f64,
    requests: u64,
    unique_objects: u64,
    unique_bytes: u64,
    total_bytes: u64,
}

fn summarise(params: &TraceParams, trace: &trace::Trace) -> TraceSummary {
    let mut sizes: reference::KeyMap<u32> = reference::KeyMap::default();
    for r in &trace.requests {
        sizes.insert(r.key, r.size);
    }
    TraceSummary {
        seed: params.seed,
        titles: params.titles,
        zipf_alpha: params.zipf_alpha,
        viewers: params.viewers,
        sessions: trace.sessions,
        simulated_hours: trace.span_ms as f64 / 3_600_000.0,
        requests: trace.requests.len() as u64,
        unique_objects: sizes.len() as u64,
        unique_bytes: sizes.values().map(|&s| u64::from(s)).sum(),
        total_bytes: trace.requests.iter().map(|r| u64::from(r.size)).sum(),
    }
}

/// One policy at one cache size.
#[derive(Debug, Clone, Serialize)]
struct PolicyResult {
    policy: String,
    byte_hit_ratio: f64,
    object_hit_ratio: f64,
    /// Byte hit ratio minus LRU's, in percentage points.
    vs_lru_points: f64,
    /// Byte hit ratio over OPT's.
    vs_opt_ratio: f64,
    /// Bytes fetched from upstream: demand misses + prefetches + fill.
    upstream_bytes: u64,
    /// Upstream bytes over OPT's (OPT fetches only its misses).
    upstream_vs_opt: f64,
    counts: HitCounts,
    /// Prefetch and fill accounting (video-aware policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    extra: Option<Extra>,
    seconds: f64,
}

/// All policies at one cache size.
#[derive(Debug, Clone, Serialize)]
struct SizeResult {
    percent_of_unique_bytes: f64,
    capacity_bytes: u64,
    results: Vec<PolicyResult>,
}

impl SizeResult {
    fn get(&self, name: &str) -> &PolicyResult {
        self.results
            .iter()
            .find(|r| r.policy == name)
            .expect("every policy runs at every size")
    }
}

/// The recommended default and the goals it meets.
#[derive(Debug, Clone, Serialize)]
struct Recommendation {
    policy: &'static str,
    eviction_config: &'static str,
    mean_byte_hit_ratio: f64,
    /// Sizes (percent) where it is at least LRU + 5 points.
    sizes_meeting_lru_goal: Vec<f64>,
    /// Sizes (percent) where it is at least 0.9 × OPT.
    sizes_meeting_opt_goal: Vec<f64>,
    meets_lru_goal: bool,
    meets_opt_goal: bool,
}

/// The video goal: ≥ 0.9 × OPT byte hit ratio at 10 % of the unique bytes.
#[derive(Debug, Clone, Serialize)]
struct VideoGoal {
    percent_of_unique_bytes: f64,
    fraction_of_opt: f64,
    /// The policies that meet it, best first.
    met_by: Vec<String>,
    /// The best policy that fetches only its demand misses (no prefetch, no fill), and its fraction of OPT.
    best_demand_only: Option<(String, f64)>,
    /// The best policy of all, its fraction of OPT and its upstream bytes over OPT's.
    best: Option<(String, f64, f64)>,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    trace: TraceSummary,
    history_trace: Option<TraceSummary>,
    opt_note: &'static str,
    prefetch_note: &'static str,
    sizes: Vec<SizeResult>,
    /// The memory tier's default (when every foyer policy was replayed).
    recommended: Option<Recommendation>,
    video_goal: Option<VideoGoal>,
}

const OPT_NOTE: &str = "OPT is Belady's greedy for variable sizes (evict the object next used farthest in the \
future, never admit an object not used again): exact OPT with variable sizes is NP-hard, and this greedy is the \
standard approximation of the upper bound.";

const PREFETCH_NOTE: &str = "OPT does not prefetch or fill: it fetches exactly its demand misses. A policy that \
prefetches or fills can serve more demand bytes from cache than OPT (a fraction of OPT above 1) while fetching more \
from upstream, which is why the upstream bytes (demand misses + prefetches, used or wasted + fill) stand beside \
each hit ratio.";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.sizes.iter().all(|&s| s > 0.0 && s <= 100.0),
        "--sizes: each size is a percentage in (0, 100]"
    );
    anyhow::ensure!(
        args.alpha >= 0.0,
        "--alpha: the Zipf exponent must not be negative"
    );
    anyhow::ensure!(
        args.prefetch.iter().all(|&k| (1..=16).contains(&k)),
        "--prefetch: each depth is 1 to 16 segments"
    );
    let params = TraceParams {
        seed: args.seed,
        titles: args.titles.unwrap_or(if args.quick {
            QUICK_TITLES
        } else {
            DEFAULT_TITLES
        }),
        zipf_alpha: args.alpha,
        requests: args.requests.unwrap_or(if args.quick {
            QUICK_REQUESTS
        } else {
            DEFAULT_REQUESTS
        }),
        viewers: args.viewers.unwrap_or(if args.quick {
            QUICK_VIEWERS
        } else {
            DEFAULT_VIEWERS
        }),
        day: 0,
    };
    anyhow::ensure!(
        params.titles > 0 && params.viewers > 0 && params.requests > 0,
        "--titles, --viewers and --requests must be positive"
    );
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });

    let started = Instant::now();
    let generated = trace::generate(&params);
    let summary = summarise(&params, &generated);
    let mut policies = Policy::all(&args.prefetch);
    if let Some(only) = &args.policies {
        let unknown: Vec<&String> = only
            .iter()
            .filter(|o| !policies.iter().any(|p| p.name() == **o))
            .collect();
        anyhow::ensure!(
            unknown.is_empty(),
            "--policies: no policy named {unknown:?}"
        );
        policies.retain(|p| {
            only.contains(&p.name()) || matches!(p, Policy::ReferenceLru | Policy::Belady)
        });
    }
    let all_foyer = FoyerPolicy::ALL
        .iter()
        .all(|&f| policies.contains(&Policy::Foyer(f)));
    let capacities: Vec<u64> = args
        .sizes
        .iter()
        .map(|p| (summary.unique_bytes as f64 * p / 100.0) as u64)
        .collect();
    // The earlier day, only if a policy fills from it.
    let history_params = TraceParams {
        day: HISTORY_DAY,
        ..params.clone()
    };
    let (history, history_summary) = if policies
        .iter()
        .any(|p| matches!(p, Policy::Video { prior, .. } if *prior != Prior::Cold))
    {
        let earlier = trace::generate(&history_params);
        let budget = capacities.iter().copied().max().unwrap_or(0);
        let history = video::history(&earlier.info, &earlier.title_segments, params.seed, budget);
        (Some(history), Some(summarise(&history_params, &earlier)))
    } else {
        (None, None)
    };
    let generate_secs = started.elapsed().as_secs_f64();
    print_summary(&summary, generate_secs);
    if let Some(h) = &history_summary {
        println!(
            "history (+warm, +fill): day {HISTORY_DAY} of the same catalogue (other sessions), {} sessions, {} requests",
            h.sessions, h.requests
        );
    }

    let replay_started = Instant::now();
    let replay = Replay {
        trace: &generated.requests,
        info: &generated.info,
        titles: params.titles as usize,
        seed: params.seed,
        history: history.as_ref(),
    };
    let sizes = replay_all(&replay, &policies, &args.sizes, &capacities, threads.max(1));
    let replay_secs = replay_started.elapsed().as_secs_f64();
    // The memory tier's recommendation needs every foyer policy.
    let recommended = all_foyer.then(|| recommend(&sizes));
    if let Some(recommended) = &recommended {
        print_table(&sizes);
        println!("\n{OPT_NOTE}");
        print_recommendation(recommended);
    }
    print_size_tables(&sizes, &policies);
    println!("\n{PREFETCH_NOTE}");
    let video_goal = video_goal(&sizes, &policies);
    print_video_goal(video_goal.as_ref());
    println!(
        "\ntime: traces {generate_secs:.1} s, replays {replay_secs:.1} s on {threads} threads, total {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if let Some(path) = &args.json {
        let report = Report {
            trace: summary,
            history_trace: history_summary,
            opt_note: OPT_NOTE,
            prefetch_note: PREFETCH_NOTE,
            sizes,
            recommended,
            video_goal,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing --json {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// What every replay reads.
struct Replay<'a> {
    trace: &'a [Request],
    info: &'a [RequestInfo],
    titles: usize,
    seed: u64,
    history: Option<&'a History>,
}

impl Replay<'_> {
    fn run(&self, policy: Policy, next_use: &[u32], capacity: u64) -> (HitCounts, Option<Extra>) {
        match policy {
            Policy::Foyer(p) => (foyer_policies::replay(p, self.trace, capacity), None),
            Policy::ReferenceLru => (reference::replay_lru(self.trace, capacity), None),
            Policy::Belady => (
                reference::replay_belady(self.trace, next_use, capacity),
                None,
            ),
            Policy::Video {
                rule,
                prefetch,
                prior,
            } => {
                let config = video::Config {
                    rule,
                    prefetch,
                    history: if prior == Prior::Cold {
                        None
                    } else {
                        self.history
                    },
                    fill: prior == Prior::Fill,
                };
                let (counts, extra) = video::replay(
                    self.trace,
                    self.info,
                    self.titles,
                    self.seed,
                    capacity,
                    config,
                );
                (counts, Some(extra))
            }
        }
    }
}

/// Runs every policy at every size, spreading the replays over `threads` threads (each replay is independent and
/// single-threaded, as foyer's cache is with one shard). The longest replays (video-aware, OPT) go first.
fn replay_all(
    replay: &Replay<'_>,
    policies: &[Policy],
    percents: &[f64],
    capacities: &[u64],
    threads: usize,
) -> Vec<SizeResult> {
    let next_use = reference::next_uses(replay.trace);
    let mut jobs: Vec<(usize, Policy)> = (0..percents.len())
        .flat_map(|size| policies.iter().map(move |&p| (size, p)))
        .collect();
    jobs.sort_by_key(|&(size, p)| {
        (
            u8::from(!matches!(p, Policy::Video { .. } | Policy::Belady)),
            size,
        )
    });
    let next_job = AtomicUsize::new(0);
    type Done = (usize, Policy, HitCounts, Option<Extra>, f64);
    let done: Vec<Done> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(jobs.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut finished = Vec::new();
                    loop {
                        let Some(&(size, policy)) =
                            jobs.get(next_job.fetch_add(1, Ordering::Relaxed))
                        else {
                            return finished;
                        };
                        let started = Instant::now();
                        let (counts, extra) = replay.run(policy, &next_use, capacities[size]);
                        finished.push((
                            size,
                            policy,
                            counts,
                            extra,
                            started.elapsed().as_secs_f64(),
                        ));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a replay panicked"))
            .collect()
    });
    percents
        .iter()
        .enumerate()
        .map(|(size, &percent)| {
            let of_size = |wanted: Policy| {
                done.iter()
                    .find(|d| d.0 == size && d.1 == wanted)
                    .expect("every policy runs at every size")
            };
            let results = policies
                .iter()
                .map(|&policy| {
                    let (_, _, counts, extra, seconds) = *of_size(policy);
                    result(policy, counts, extra, seconds)
                })
                .collect();
            compare(SizeResult {
                percent_of_unique_bytes: percent,
                capacity_bytes: capacities[size],
                results,
            })
        })
        .collect()
}

fn result(policy: Policy, counts: HitCounts, extra: Option<Extra>, seconds: f64) -> PolicyResult {
    let extra_upstream = extra.map_or(0, |e| e.prefetch_bytes + e.fill_bytes);
    PolicyResult {
        policy: policy.name(),
        byte_hit_ratio: counts.byte_hit_ratio(),
        object_hit_ratio: counts.object_hit_ratio(),
        vs_lru_points: 0.0,
        vs_opt_ratio: 0.0,
        upstream_bytes: counts.bytes - counts.hit_bytes + extra_upstream,
        upstream_vs_opt: 0.0,
        counts,
        extra,
        seconds,
    }
}

/// Fills in each result's distance to LRU and fraction of OPT.
fn compare(mut size: SizeResult) -> SizeResult {
    let lru = size.get("lru").byte_hit_ratio;
    let (opt, opt_upstream) = {
        let opt = size.get("opt");
        (opt.byte_hit_ratio, opt.upstream_bytes)
    };
    for r in &mut size.results {
        r.vs_lru_points = (r.byte_hit_ratio - lru) * 100.0;
        r.vs_opt_ratio = ratio_or_zero(r.byte_hit_ratio, opt);
        r.upstream_vs_opt = ratio(r.upstream_bytes, opt_upstream);
    }
    size
}

fn ratio_or_zero(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 0.0 }
}

/// The foyer policy with the best mean byte hit ratio across the sizes, and the goals it meets.
fn recommend(sizes: &[SizeResult]) -> Recommendation {
    let mean = |policy: FoyerPolicy| {
        sizes
            .iter()
            .map(|s| s.get(policy.name()).byte_hit_ratio)
            .sum::<f64>()
            / sizes.len().max(1) as f64
    };
    let best = FoyerPolicy::ALL
        .into_iter()
        .max_by(|a, b| mean(*a).total_cmp(&mean(*b)))
        .expect("there are foyer policies");
    let meeting = |goal: &dyn Fn(&PolicyResult) -> bool| -> Vec<f64> {
        sizes
            .iter()
            .filter(|s| goal(s.get(best.name())))
            .map(|s| s.percent_of_unique_bytes)
            .collect()
    };
    let lru_goal = meeting(&|r| r.vs_lru_points >= GOAL_POINTS_OVER_LRU);
    let opt_goal = meeting(&|r| r.vs_opt_ratio >= GOAL_FRACTION_OF_OPT);
    Recommendation {
        policy: best.name(),
        eviction_config: best.config_name(),
        mean_byte_hit_ratio: mean(best),
        meets_lru_goal: lru_goal.len() == sizes.len(),
        meets_opt_goal: opt_goal.len() == sizes.len(),
        sizes_meeting_lru_goal: lru_goal,
        sizes_meeting_opt_goal: opt_goal,
    }
}

fn print_summary(s: &TraceSummary, generate_secs: f64) {
    println!(
        "trace: seed {}, {} titles, Zipf alpha {}, {} viewers, {} sessions over {:.1} simulated hours (generated in {:.1} s)",
        s.seed, s.titles, s.zipf_alpha, s.viewers, s.sessions, s.simulated_hours, generate_secs
    );
    println!(
        "       {} requests, {} unique objects, unique bytes {}, total bytes {} (each unique byte requested {:.1}x)",
        s.requests,
        s.unique_objects,
        human_bytes(s.unique_bytes),
        human_bytes(s.total_bytes),
        ratio(s.total_bytes, s.unique_bytes),
    );
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The memory tier's table: per size, LRU and OPT byte hit ratios, then each foyer policy's byte hit ratio, its
/// distance to LRU in points and its fraction of OPT.
fn print_table(sizes: &[SizeResult]) {
    println!(
        "\nfoyer's policies: byte hit ratio (%); per foyer policy: BHR, vs LRU (points), vs OPT (ratio)"
    );
    let mut header = format!(
        "{:>6} {:>10} | {:>6} {:>6} |",
        "size", "capacity", "LRU", "OPT"
    );
    let mut units = format!("{:>6} {:>10} | {:>6} {:>6} |", "%uniq", "", "", "");
    for policy in FoyerPolicy::ALL {
        header.push_str(&format!(" {:<20}|", policy.name()));
        units.push_str(&format!(" {:>6} {:>6} {:>5} |", "BHR", "vsLRU", "vsOPT"));
    }
    println!("{header}\n{units}");
    for s in sizes {
        let mut line = format!(
            "{:>6} {:>10} | {:>6.2} {:>6.2} |",
            format!("{}%", s.percent_of_unique_bytes),
            human_bytes(s.capacity_bytes),
            s.get("lru").byte_hit_ratio * 100.0,
            s.get("opt").byte_hit_ratio * 100.0,
        );
        for policy in FoyerPolicy::ALL {
            let r = s.get(policy.name());
            line.push_str(&format!(
                " {:>6.2} {:>+6.2} {:>5.3} |",
                r.byte_hit_ratio * 100.0,
                r.vs_lru_points,
                r.vs_opt_ratio
            ));
        }
        println!("{line}");
    }
}

/// One table per size: every policy's byte hit ratio, fraction of OPT, object hit ratio, upstream bytes (GiB and
/// over OPT's), and its prefetch and fill bytes.
fn print_size_tables(sizes: &[SizeResult], policies: &[Policy]) {
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    for s in sizes {
        let goal_size = s.percent_of_unique_bytes == VIDEO_GOAL_SIZE;
        println!(
            "\ncache {}% of the unique bytes ({}){}",
            s.percent_of_unique_bytes,
            human_bytes(s.capacity_bytes),
            if goal_size {
                format!(": the goal size, * marks >= {GOAL_FRACTION_OF_OPT} x OPT")
            } else {
                String::new()
            }
        );
        println!(
            "{:<34} {:>7} {:>7} {:>7} | {:>10} {:>6} | {:>9} {:>9} {:>9} {:>9}",
            "policy",
            "BHR %",
            "xOPT",
            "OHR %",
            "upstr GiB",
            "xOPT",
            "pf GiB",
            "pf used",
            "pf waste",
            "fill GiB"
        );
        for policy in policies {
            let r = s.get(&policy.name());
            let e = r.extra.unwrap_or_default();
            let mark =
                if goal_size && r.vs_opt_ratio >= GOAL_FRACTION_OF_OPT && *policy != Policy::Belady
                {
                    "*"
                } else {
                    " "
                };
            let dash_or = |show: bool, v: u64| {
                if show {
                    format!("{:.1}", gib(v))
                } else {
                    "-".to_string()
                }
            };
            let prefetching = matches!(policy, Policy::Video { prefetch, .. } if *prefetch > 0);
            let filling = matches!(
                policy,
                Policy::Video {
                    prior: Prior::Fill,
                    ..
                }
            );
            println!(
                "{:<34} {:>7.2} {:>6.3}{mark} {:>7.2} | {:>10.1} {:>6.2} | {:>9} {:>9} {:>9} {:>9}",
                r.policy,
                r.byte_hit_ratio * 100.0,
                r.vs_opt_ratio,
                r.object_hit_ratio * 100.0,
                gib(r.upstream_bytes),
                r.upstream_vs_opt,
                dash_or(prefetching, e.prefetch_bytes),
                dash_or(prefetching, e.prefetch_used_bytes),
                dash_or(prefetching, e.prefetch_wasted_bytes),
                dash_or(filling, e.fill_bytes),
            );
        }
    }
}

/// Who meets the video goal at its size (None if that size was not replayed).
fn video_goal(sizes: &[SizeResult], policies: &[Policy]) -> Option<VideoGoal> {
    let s = sizes
        .iter()
        .find(|s| s.percent_of_unique_bytes == VIDEO_GOAL_SIZE)?;
    let mut ranked: Vec<(&PolicyResult, Policy)> = policies
        .iter()
        .filter(|&&p| p != Policy::Belady)
        .map(|&p| (s.get(&p.name()), p))
        .collect();
    ranked.sort_by(|a, b| b.0.byte_hit_ratio.total_cmp(&a.0.byte_hit_ratio));
    Some(VideoGoal {
        percent_of_unique_bytes: VIDEO_GOAL_SIZE,
        fraction_of_opt: GOAL_FRACTION_OF_OPT,
        met_by: ranked
            .iter()
            .filter(|(r, _)| r.vs_opt_ratio >= GOAL_FRACTION_OF_OPT)
            .map(|(r, _)| r.policy.clone())
            .collect(),
        best_demand_only: ranked
            .iter()
            .find(|(_, p)| p.demand_only())
            .map(|(r, _)| (r.policy.clone(), r.vs_opt_ratio)),
        best: ranked
            .first()
            .map(|(r, _)| (r.policy.clone(), r.vs_opt_ratio, r.upstream_vs_opt)),
    })
}

fn print_video_goal(goal: Option<&VideoGoal>) {
    let Some(g) = goal else {
        println!("\nvideo goal: size {VIDEO_GOAL_SIZE}% not replayed");
        return;
    };
    println!(
        "\nvideo goal >= {} x OPT byte hit ratio at {}% of the unique bytes: {}",
        g.fraction_of_opt,
        g.percent_of_unique_bytes,
        if g.met_by.is_empty() {
            "NOT MET".to_string()
        } else {
            format!("MET by {}", g.met_by.join(", "))
        }
    );
    if let Some((name, fraction)) = &g.best_demand_only {
        println!(
            "  best without prefetch or fill (upstream = its misses): {name}, {fraction:.3} x OPT"
        );
    }
    if let Some((name, fraction, upstream)) = &g.best {
        println!("  best of all: {name}, {fraction:.3} x OPT, upstream {upstream:.2} x OPT's");
    }
}

fn print_recommendation(r: &Recommendation) {
    let verdict = |met: bool, sizes: &[f64]| {
        let list: Vec<String> = sizes.iter().map(|s| format!("{s}%")).collect();
        format!(
            "{} (met at: {})",
            if met { "MET" } else { "NOT MET" },
            if list.is_empty() {
                "no size".to_string()
            } else {
                list.join(", ")
            }
        )
    };
    println!(
        "\nrecommended default: {} (EvictionConfig::{}), the best foyer policy by mean byte hit ratio across sizes ({:.2} %)",
        r.policy,
        r.eviction_config,
        r.mean_byte_hit_ratio * 100.0
    );
    println!(
        "  goal >= LRU + {GOAL_POINTS_OVER_LRU} points at every size: {}",
        verdict(r.meets_lru_goal, &r.sizes_meeting_lru_goal)
    );
    println!(
        "  goal >= {GOAL_FRACTION_OF_OPT} x OPT at every size:       {}",
        verdict(r.meets_opt_goal, &r.sizes_meeting_opt_goal)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(policy: &'static str, bhr: f64, lru: f64, opt: f64) -> PolicyResult {
        PolicyResult {
            policy: policy.to_string(),
            byte_hit_ratio: bhr,
            object_hit_ratio: 0.0,
            vs_lru_points: (bhr - lru) * 100.0,
            vs_opt_ratio: bhr / opt,
            upstream_bytes: 0,
            upstream_vs_opt: 0.0,
            counts: HitCounts::default(),
            extra: None,
            seconds: 0.0,
        }
    }

    fn size(percent: f64, lru: f64, opt: f64, foyer: [f64; 5]) -> SizeResult {
        let mut results: Vec<PolicyResult> = FoyerPolicy::ALL
            .iter()
            .zip(foyer)
            .map(|(p, bhr)| result(p.name(), bhr, lru, opt))
            .collect();
        results.push(result("lru", lru, lru, opt));
        results.push(result("opt", opt, lru, opt));
        SizeResult {
            percent_of_unique_bytes: percent,
            capacity_bytes: 0,
            results,
        }
    }

    #[test]
    fn hit_counts_weigh_bytes() {
        let mut counts = HitCounts::default();
        counts.record(900, true);
        counts.record(100, false);
        counts.record(0, false);
        assert_eq!(counts.byte_hit_ratio(), 0.9);
        assert!((counts.object_hit_ratio() - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(HitCounts::default().byte_hit_ratio(), 0.0);
    }

    #[test]
    fn recommendation_is_the_best_mean_and_goals_are_checked_per_size() {
        // Order: lru, w-tinylfu, s3fifo, fifo, sieve.
        let sizes = [
            size(1.0, 0.10, 0.20, [0.10, 0.16, 0.19, 0.09, 0.15]),
            size(10.0, 0.30, 0.40, [0.30, 0.33, 0.37, 0.28, 0.33]),
        ];
        let r = recommend(&sizes);
        assert_eq!(r.policy, "foyer-s3fifo");
        assert_eq!(r.eviction_config, "S3Fifo");
        assert_eq!(r.sizes_meeting_lru_goal, [1.0, 10.0]); // +9 and +7 points
        assert_eq!(r.sizes_meeting_opt_goal, [1.0, 10.0]); // 0.95 and 0.925 of OPT
        assert!(r.meets_lru_goal && r.meets_opt_goal);
        let sizes = [
            size(1.0, 0.10, 0.20, [0.10, 0.16, 0.19, 0.09, 0.15]),
            size(10.0, 0.30, 0.50, [0.30, 0.33, 0.34, 0.28, 0.33]),
        ];
        let r = recommend(&sizes);
        assert_eq!(r.sizes_meeting_lru_goal, [1.0]);
        assert_eq!(r.sizes_meeting_opt_goal, [1.0]);
        assert!(!r.meets_lru_goal && !r.meets_opt_goal);
    }

    #[test]
    fn upstream_is_misses_plus_prefetch_plus_fill_and_the_goal_is_read_at_ten_percent() {
        let counts = |bytes, hit_bytes| HitCounts {
            requests: 10,
            hits: 5,
            bytes,
            hit_bytes,
        };
        let value = Policy::Video {
            rule: Rule::Value,
            prefetch: 0,
            prior: Prior::Cold,
        };
        let prefetching = Policy::Video {
            rule: Rule::Value,
            prefetch: 1,
            prior: Prior::Fill,
        };
        let extra = Extra {
            prefetch_bytes: 300,
            fill_bytes: 50,
            ..Extra::default()
        };
        let policies = [Policy::ReferenceLru, value, prefetching, Policy::Belady];
        let sizes = [2.0, 10.0].map(|percent| {
            compare(SizeResult {
                percent_of_unique_bytes: percent,
                capacity_bytes: 0,
                results: vec![
                    super::result(Policy::ReferenceLru, counts(1000, 200), None, 0.0),
                    super::result(value, counts(1000, 370), Some(Extra::default()), 0.0),
                    super::result(prefetching, counts(1000, 900), Some(extra), 0.0),
                    super::result(Policy::Belady, counts(1000, 400), None, 0.0),
                ],
            })
        });
        let at_ten = &sizes[1];
        let r = at_ten.get("video-value+fill+prefetch1");
        // 100 missed + 300 prefetched + 50 filled, against OPT's 600 missed.
        assert_eq!(r.upstream_bytes, 450);
        assert_eq!(r.upstream_vs_opt, 0.75);
        assert!((r.vs_opt_ratio - 2.25).abs() < 1e-12);
        assert!((at_ten.get("video-value").vs_opt_ratio - 0.925).abs() < 1e-12);
        assert!((at_ten.get("video-value").vs_lru_points - 17.0).abs() < 1e-9);
        let goal = video_goal(&sizes, &policies).unwrap();
        assert_eq!(goal.met_by, ["video-value+fill+prefetch1", "video-value"]);
        assert_eq!(
            goal.best_demand_only,
            Some((
                "video-value".to_string(),
                at_ten.get("video-value").vs_opt_ratio
            ))
        );
        assert_eq!(goal.best.as_ref().unwrap().0, "video-value+fill+prefetch1");
        assert!(video_goal(&sizes[..1], &policies).is_none());
    }

    #[test]
    fn policy_names_are_unique() {
        let all = Policy::all(&[1, 2, 3]);
        let mut names: Vec<String> = all.iter().map(|p| p.name()).collect();
        assert!(names.contains(&"video-value+fill+prefetch2".to_string()));
        assert!(names.contains(&"video-value+warm".to_string()));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
    }
}
