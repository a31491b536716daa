//! cachesim: which eviction policy should the edge's memory cache use by default? It answers with byte hit
//! ratios on a synthetic but realistic VOD trace (Zipf-popular titles, 4 s segments in four video renditions and
//! one audio rendition, playlists, ABR switches, early abandonment), replayed against foyer's in-memory cache
//! with each eviction policy foyer offers, next to a plain byte-weighted LRU and Belady's OPT, at cache sizes
//! given as a fraction of the bytes of the distinct objects the trace requests.
//!
//! `cachesim [--quick] [--seed N] [--titles N] [--alpha A] [--requests N] [--viewers N] [--sizes 1,2,5,10,20]
//! [--json PATH]` prints the trace summary, one table of byte hit ratios, object hit ratios, and the recommended
//! default with the goals it meets (≥ LRU + 5 points, ≥ 0.9 × OPT at every size).

// The parts live in `cachesim/` beside this file (a binary's root looks for modules beside itself).
#[path = "cachesim/foyer_policies.rs"]
mod foyer_policies;
#[path = "cachesim/reference.rs"]
mod reference;
#[path = "cachesim/trace.rs"]
mod trace;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use serde::Serialize;

use foyer_policies::FoyerPolicy;
use trace::{Request, TraceParams};

/// Default trace: long enough that popular titles are watched by many sessions (each unique byte is requested about
/// twice), short enough for a full run (5 foyer policies + LRU + OPT at 5 sizes, 35 replays) to take under a minute
/// on two cores. The replay cost is linear in the number of requests.
const DEFAULT_REQUESTS: usize = 6_000_000;
const DEFAULT_TITLES: u32 = 2_000;
const DEFAULT_VIEWERS: u32 = 500;
const QUICK_REQUESTS: usize = 1_000_000;
const QUICK_TITLES: u32 = 500;
const QUICK_VIEWERS: u32 = 150;
/// The goals the default policy should meet at every size.
const GOAL_POINTS_OVER_LRU: f64 = 5.0;
const GOAL_FRACTION_OF_OPT: f64 = 0.9;

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

/// Every replayed policy: foyer's, and the two references.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Foyer(FoyerPolicy),
    ReferenceLru,
    Belady,
}

impl Policy {
    fn all() -> Vec<Policy> {
        let mut all: Vec<Policy> = FoyerPolicy::ALL.into_iter().map(Policy::Foyer).collect();
        all.extend([Policy::ReferenceLru, Policy::Belady]);
        all
    }

    fn name(self) -> &'static str {
        match self {
            Policy::Foyer(p) => p.name(),
            Policy::ReferenceLru => "lru",
            Policy::Belady => "opt",
        }
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
    policy: &'static str,
    byte_hit_ratio: f64,
    object_hit_ratio: f64,
    /// Byte hit ratio minus LRU's, in percentage points (foyer policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_lru_points: Option<f64>,
    /// Byte hit ratio over OPT's (foyer policies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_opt_ratio: Option<f64>,
    counts: HitCounts,
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

#[derive(Debug, Clone, Serialize)]
struct Report {
    trace: TraceSummary,
    opt_note: &'static str,
    sizes: Vec<SizeResult>,
    recommended: Recommendation,
}

const OPT_NOTE: &str = "OPT is Belady's greedy for variable sizes (evict the object next used farthest in the \
future, never admit an object not used again): exact OPT with variable sizes is NP-hard, and this greedy is the \
standard approximation of the upper bound.";

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
    let generate_secs = started.elapsed().as_secs_f64();
    print_summary(&summary, generate_secs);

    let replay_started = Instant::now();
    let sizes = replay_all(
        &generated.requests,
        &args.sizes,
        summary.unique_bytes,
        threads.max(1),
    );
    let replay_secs = replay_started.elapsed().as_secs_f64();
    let recommended = recommend(&sizes);
    print_table(&sizes);
    print_object_hit_ratios(&sizes);
    println!("\n{OPT_NOTE}");
    print_recommendation(&recommended);
    println!(
        "\ntime: trace {generate_secs:.1} s, replays {replay_secs:.1} s on {threads} threads, total {:.1} s",
        started.elapsed().as_secs_f64()
    );

    if let Some(path) = &args.json {
        let report = Report {
            trace: summary,
            opt_note: OPT_NOTE,
            sizes,
            recommended,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing --json {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs every policy at every size, spreading the replays over `threads` threads (each replay is independent and
/// single-threaded, as foyer's cache is with one shard).
fn replay_all(
    trace: &[Request],
    percents: &[f64],
    unique_bytes: u64,
    threads: usize,
) -> Vec<SizeResult> {
    let next_use = reference::next_uses(trace);
    let policies = Policy::all();
    let capacities: Vec<u64> = percents
        .iter()
        .map(|p| (unique_bytes as f64 * p / 100.0) as u64)
        .collect();
    let jobs: Vec<(usize, Policy)> = (0..percents.len())
        .flat_map(|size| policies.iter().map(move |&p| (size, p)))
        .collect();
    let next_job = AtomicUsize::new(0);
    let mut done: Vec<(usize, Policy, HitCounts, f64)> = std::thread::scope(|scope| {
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
                        let capacity = capacities[size];
                        let started = Instant::now();
                        let counts = match policy {
                            Policy::Foyer(p) => foyer_policies::replay(p, trace, capacity),
                            Policy::ReferenceLru => reference::replay_lru(trace, capacity),
                            Policy::Belady => reference::replay_belady(trace, &next_use, capacity),
                        };
                        finished.push((size, policy, counts, started.elapsed().as_secs_f64()));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a replay panicked"))
            .collect()
    });
    done.sort_by_key(|&(size, policy, _, _)| {
        (
            size,
            policies.iter().position(|&p| p == policy).unwrap_or(0),
        )
    });

    percents
        .iter()
        .enumerate()
        .map(|(size, &percent)| {
            let of_size: Vec<_> = done.iter().filter(|d| d.0 == size).collect();
            let bhr = |wanted: Policy| {
                of_size
                    .iter()
                    .find(|d| d.1 == wanted)
                    .map_or(0.0, |d| d.2.byte_hit_ratio())
            };
            let (lru, opt) = (bhr(Policy::ReferenceLru), bhr(Policy::Belady));
            let results = of_size
                .iter()
                .map(|&&(_, policy, counts, seconds)| {
                    let byte_hit_ratio = counts.byte_hit_ratio();
                    let is_foyer = matches!(policy, Policy::Foyer(_));
                    PolicyResult {
                        policy: policy.name(),
                        byte_hit_ratio,
                        object_hit_ratio: counts.object_hit_ratio(),
                        vs_lru_points: is_foyer.then_some((byte_hit_ratio - lru) * 100.0),
                        vs_opt_ratio: is_foyer.then_some(ratio_or_zero(byte_hit_ratio, opt)),
                        counts,
                        seconds,
                    }
                })
                .collect();
            SizeResult {
                percent_of_unique_bytes: percent,
                capacity_bytes: capacities[size],
                results,
            }
        })
        .collect()
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
    let lru_goal = meeting(&|r| r.vs_lru_points.unwrap_or(0.0) >= GOAL_POINTS_OVER_LRU);
    let opt_goal = meeting(&|r| r.vs_opt_ratio.unwrap_or(0.0) >= GOAL_FRACTION_OF_OPT);
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

/// The one table: per size, LRU and OPT byte hit ratios, then each foyer policy's byte hit ratio, its distance
/// to LRU in points and its fraction of OPT.
fn print_table(sizes: &[SizeResult]) {
    println!("\nbyte hit ratio (%); per foyer policy: BHR, vs LRU (points), vs OPT (ratio)");
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
                r.vs_lru_points.unwrap_or(0.0),
                r.vs_opt_ratio.unwrap_or(0.0)
            ));
        }
        println!("{line}");
    }
}

fn print_object_hit_ratios(sizes: &[SizeResult]) {
    println!("\nobject hit ratio (%)");
    let names: Vec<&str> = Policy::all().into_iter().map(Policy::name).collect();
    let mut header = format!("{:>6} |", "size");
    for name in &names {
        header.push_str(&format!(" {name:>15}"));
    }
    println!("{header}");
    for s in sizes {
        let mut line = format!("{:>6} |", format!("{}%", s.percent_of_unique_bytes));
        for name in &names {
            line.push_str(&format!(" {:>15.2}", s.get(name).object_hit_ratio * 100.0));
        }
        println!("{line}");
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
            policy,
            byte_hit_ratio: bhr,
            object_hit_ratio: 0.0,
            vs_lru_points: Some((bhr - lru) * 100.0),
            vs_opt_ratio: Some(bhr / opt),
            counts: HitCounts::default(),
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
}
