//! searchcost: what a search costs the control plane, query by query (a benchmark, not a test). Reads a JSON
//! file `{"docs": [SearchDoc…], "queries": […]}` (written by `python3 benches/service_tier.py --dump-search
//! FILE`), builds the index the origin builds, runs every query `--rounds` times and prints the build time, the
//! median, p90, p99 and the slowest queries' CPU time (the thread's own, so that other work on a shared machine
//! counts less).

use std::time::Instant;

/// The calling thread's CPU time, in milliseconds.
fn thread_cpu_ms() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
}

use anyhow::Context;
use clap::Parser;
use origin::control::search::{SearchDoc, SearchIndex};

#[derive(Parser)]
struct Args {
    /// The dumped catalogue and queries.
    file: std::path::PathBuf,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// How many of the slowest queries to print.
    #[arg(long, default_value_t = 10)]
    slowest: usize,
}

#[derive(serde::Deserialize)]
struct Dump {
    docs: Vec<Doc>,
    queries: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Doc {
    slug: String,
    title: String,
    original_title: String,
    people_and_genres: String,
    description: String,
    popularity: i64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dump: Dump =
        serde_json::from_slice(&std::fs::read(&args.file).context("reading the dump")?)?;
    let docs: Vec<SearchDoc> = dump
        .docs
        .into_iter()
        .map(|d| SearchDoc {
            slug: d.slug,
            title: d.title,
            original_title: d.original_title,
            people_and_genres: d.people_and_genres,
            description: d.description,
            popularity: d.popularity,
        })
        .collect();
    let started = Instant::now();
    let index = SearchIndex::build(&docs)?;
    println!(
        "index: {} titles built in {:.2} s",
        docs.len(),
        started.elapsed().as_secs_f64()
    );
    let mut times: Vec<(f64, usize, &str)> = Vec::new();
    for _ in 0..args.rounds {
        for q in &dump.queries {
            let t = thread_cpu_ms();
            let hits = index.search(q, args.limit)?;
            times.push((thread_cpu_ms() - t, hits.len(), q));
        }
    }
    let mut sorted: Vec<f64> = times.iter().map(|t| t.0).collect();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)];
    let mean = sorted.iter().sum::<f64>() / sorted.len() as f64;
    let empty = times.iter().filter(|t| t.1 == 0).count();
    println!(
        "{} searches: mean {:.3} ms, median {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} with no hit",
        sorted.len(),
        mean,
        pct(0.5),
        pct(0.9),
        pct(0.99),
        sorted[sorted.len() - 1],
        empty
    );
    times.sort_by(|a, b| b.0.total_cmp(&a.0));
    times.dedup_by(|a, b| a.2 == b.2);
    for (ms, n, q) in times.iter().take(args.slowest) {
        println!("  {ms:8.3} ms  {n:3} hits  {q:?}");
    }
    Ok(())
}
