//! receval: the offline evaluation of `origin::recs` (a benchmark, not a test). How well does each model find
//! the title a viewer watched last, on MovieLens 100K and on a synthetic viewing log?
//!
//! The protocol. Every interaction is an implicit positive (ratings are ignored; a synthetic partial view is a
//! positive of its weight). Per user, the interactions are sorted by time, and a title seen again keeps its first
//! interaction only. MovieLens has many titles rated in the same second (in 415 of 943 users' last second more
//! than one), so the order within a second decides many test items: `--ties item-id` puts them in ascending item
//! id — the order that reproduces the published baselines of this protocol (popularity about 0.025 NDCG@10, EASE
//! about 1.6× that) — and `--ties file` in the file's order; both are reported, item-id first. Leave-last-out: a
//! user's last title is their test item, the one before it their validation item; users with fewer than 3 titles
//! are only trained on. The
//! hyperparameters (kNN's neighbours, EASE's λ, the sequential rules' window and depth, the linear transitions'
//! λ, steps and decay) and the blend's weights are chosen on the validation items, with the validation and test
//! items held out of training; each model is then trained again with every interaction but the test items and
//! measured once on them. A user's list ranks every
//! catalog title they did not interact with in training (full ranking, no sampled negatives); Recall@10 (hit
//! or not, one test item) and NDCG@10 (1/log2(rank + 1)) are averaged over users.
//!
//! The synthetic log: titles with one to three genres, about 40 % of them in series of 2-8 episodes; title appeal
//! Zipf-distributed; users with three favourite genres; sessions over 60 days in time order, each in one
//! mood (a favourite genre, most of the time) of 1-4 titles, the next episode of a series most of the time;
//! 40 % of views partial (weight 5-95 %, not finished), half of those ending the session. Seeded, deterministic.
//!
//! `cargo run --release -p benches --bin receval -- [--ml100k DIR] [--synthetic-users N]` prints one Markdown
//! table per dataset; `scripts/recs-eval.sh` fetches MovieLens 100K and runs it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use benches::rng::SplitMix64;
use clap::Parser;
use origin::recs::{BlendWeights, Interaction, ItemInfo, Model, ModelKind, TrainParams};

/// Recall and NDCG are measured at this depth.
const DEPTH: usize = 10;

#[derive(Parser)]
#[command(
    about = "Offline evaluation of the recommendation models: leave-last-out, full ranking, Recall@10 and NDCG@10"
)]
struct Args {
    /// A folder with MovieLens 100K as RecBole's atomic files (`ml-100k.inter`, `ml-100k.item`).
    #[arg(long)]
    ml100k: Option<PathBuf>,
    /// Users of the synthetic log (0: no synthetic log).
    #[arg(long, default_value_t = 5000)]
    synthetic_users: usize,
    /// Titles of the synthetic log.
    #[arg(long, default_value_t = 2000)]
    synthetic_titles: usize,
    /// Seed of the synthetic log.
    #[arg(long, default_value_t = 17)]
    seed: u64,
    /// Skip the hyperparameter search and use `TrainParams::default()` (quick).
    #[arg(long)]
    no_tuning: bool,
    /// Only the hyperparameter search on the validation items: no test item is looked at.
    #[arg(long)]
    validation_only: bool,
    /// How MovieLens interactions of the same second are ordered, which decides a user's last title when it
    /// shares its second with others (415 of 943 users): by item id (the protocol whose published baselines are
    /// popularity 0.025 NDCG@10 and EASE 1.6× that) and/or in the file's order; one table each.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Ties::ItemId, Ties::File])]
    ties: Vec<Ties>,
}

/// The order of one user's interactions that share a timestamp, which decides which of them is "last".
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Ties {
    /// Ascending MovieLens item id (the catalogue's order of addition).
    ItemId,
    /// The order of the lines in `ml-100k.inter`.
    File,
}

struct Dataset {
    name: String,
    /// In the order that breaks ties of time (see `Ties`).
    interactions: Vec<Interaction>,
    items: Vec<ItemInfo>,
}

/// Reads RecBole's atomic files: tab-separated, a header of `name:type` columns.
fn load_ml100k(dir: &Path, ties: Ties) -> Result<Dataset> {
    let inter_path = dir.join("ml-100k.inter");
    let inter = std::fs::read_to_string(&inter_path)
        .with_context(|| format!("reading {}", inter_path.display()))?;
    let mut lines = inter.lines();
    let header = lines.next().context("ml-100k.inter is empty")?;
    let column = |prefix: &str| {
        header
            .split('\t')
            .position(|name| name.starts_with(prefix))
            .with_context(|| format!("ml-100k.inter has no {prefix} column"))
    };
    let (user_col, item_col, time_col) = (
        column("user_id:")?,
        column("item_id:")?,
        column("timestamp:")?,
    );
    let mut interactions = Vec::new();
    for (number, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let field = |col: usize| {
            fields
                .get(col)
                .copied()
                .with_context(|| format!("ml-100k.inter line {}: too few fields", number + 2))
        };
        let at: f64 = field(time_col)?
            .parse()
            .with_context(|| format!("ml-100k.inter line {}: bad timestamp", number + 2))?;
        interactions.push(Interaction {
            user: field(user_col)?.to_string(),
            item: field(item_col)?.to_string(),
            at: at as i64,
            weight: 1.0,
            finished: true,
        });
    }

    let item_path = dir.join("ml-100k.item");
    let item_file = std::fs::read_to_string(&item_path)
        .with_context(|| format!("reading {}", item_path.display()))?;
    let mut lines = item_file.lines();
    let header = lines.next().context("ml-100k.item is empty")?;
    let find = |prefix: &str| header.split('\t').position(|name| name.starts_with(prefix));
    let item_col = find("item_id:").context("ml-100k.item has no item_id column")?;
    let genre_col = find("class:").context("ml-100k.item has no class (genres) column")?;
    let mut items = Vec::new();
    for line in lines.filter(|line| !line.is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let Some(item) = fields.get(item_col) else {
            bail!("ml-100k.item: a line without an item_id: {line:?}");
        };
        let genres = fields
            .get(genre_col)
            .map(|genres| genres.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        items.push(ItemInfo {
            item: item.to_string(),
            genres,
        });
    }
    if interactions.is_empty() || items.is_empty() {
        bail!("{}: no interactions or no items", dir.display());
    }
    if ties == Ties::ItemId {
        // Stable, and the split sorts each user's interactions by time stably: ties end in item-id order.
        interactions.sort_by_key(|interaction| {
            (
                interaction.at,
                interaction.item.parse::<u64>().unwrap_or(u64::MAX),
            )
        });
    }
    Ok(Dataset {
        name: match ties {
            Ties::ItemId => "MovieLens 100K (ties of time in item-id order)".into(),
            Ties::File => "MovieLens 100K (ties of time in the file's order)".into(),
        },
        interactions,
        items,
    })
}

const GENRES: [&str; 18] = [
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "SciFi",
    "Thriller",
    "War",
    "Western",
];

struct SyntheticTitle {
    genres: Vec<usize>,
    minutes: f64,
    /// The next episode of its series, if any.
    next_episode: Option<usize>,
}

/// The synthetic viewing log (see the top of this file).
fn synthetic(users: usize, titles: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64::new(seed);
    let mut catalog: Vec<SyntheticTitle> = Vec::with_capacity(titles);
    while catalog.len() < titles {
        let mut genres = vec![rng.between(0, GENRES.len())];
        for _ in 0..rng.between(0, 3) {
            let genre = rng.between(0, GENRES.len());
            if !genres.contains(&genre) {
                genres.push(genre);
            }
        }
        let episodes = if rng.chance(0.12) {
            rng.between(2, 9)
        } else {
            1
        };
        let minutes = if episodes > 1 {
            rng.between(25, 60)
        } else {
            rng.between(80, 150)
        } as f64;
        for episode in 0..episodes.min(titles - catalog.len()) {
            let next_episode = (episode + 1 < episodes).then_some(catalog.len() + 1);
            catalog.push(SyntheticTitle {
                genres: genres.clone(),
                minutes,
                next_episode,
            });
        }
    }
    if let Some(last) = catalog.last_mut() {
        last.next_episode = None;
    }
    // Appeal: Zipf (α = 1) over a shuffled order of the titles; a series' later episodes are reached through
    // its first, so they share its appeal.
    let mut appeal_order: Vec<usize> = (0..titles).collect();
    for i in (1..titles).rev() {
        appeal_order.swap(i, rng.between(0, i + 1));
    }
    let mut cumulative = Vec::with_capacity(titles);
    let mut total = 0.0;
    for rank in 0..titles {
        total += 1.0 / (rank + 1) as f64;
        cumulative.push(total);
    }
    let mut by_genre: Vec<Vec<(f64, usize)>> = vec![Vec::new(); GENRES.len()];
    let mut running = vec![0.0; GENRES.len()];
    for (rank, &title) in appeal_order.iter().enumerate() {
        let appeal = 1.0 / (rank + 1) as f64;
        for &genre in &catalog[title].genres {
            running[genre] += appeal;
            by_genre[genre].push((running[genre], title));
        }
    }
    let pick = |rng: &mut SplitMix64, genre: Option<usize>| -> Option<usize> {
        match genre {
            Some(genre) => {
                let titles = &by_genre[genre];
                let target = rng.next_f64() * titles.last()?.0;
                let index = titles
                    .partition_point(|&(c, _)| c <= target)
                    .min(titles.len() - 1);
                Some(titles[index].1)
            }
            None => {
                let target = rng.next_f64() * total;
                let index = cumulative.partition_point(|&c| c <= target).min(titles - 1);
                Some(appeal_order[index])
            }
        }
    };

    const DAY: i64 = 24 * 3600;
    let start = 1_700_000_000;
    let mut interactions = Vec::new();
    for user in 0..users {
        let mut favourites = Vec::with_capacity(3);
        while favourites.len() < 3 {
            let genre = rng.between(0, GENRES.len());
            if !favourites.contains(&genre) {
                favourites.push(genre);
            }
        }
        let sessions = 1 + (-(1.0 - rng.next_f64()).ln() * 7.0) as usize;
        let mut starts: Vec<i64> = (0..sessions)
            .map(|_| start + (rng.next_f64() * (60 * DAY) as f64) as i64)
            .collect();
        starts.sort_unstable();
        let mut watched: HashSet<usize> = HashSet::new();
        let mut last_title: Option<usize> = None;
        for session_start in starts {
            let roll = rng.next_f64();
            let mood = if roll < 0.5 {
                Some(favourites[0])
            } else if roll < 0.75 {
                Some(favourites[1])
            } else if roll < 0.9 {
                Some(favourites[2])
            } else {
                None
            };
            let mut at = session_start;
            for _ in 0..rng.between(1, 5) {
                let next_episode = last_title
                    .and_then(|title| catalog[title].next_episode)
                    .filter(|episode| !watched.contains(episode));
                let title = match next_episode {
                    Some(episode) if rng.chance(0.8) => Some(episode),
                    _ => (0..50)
                        .filter_map(|_| pick(&mut rng, mood))
                        .find(|title| !watched.contains(title)),
                };
                let Some(title) = title else { break };
                watched.insert(title);
                last_title = Some(title);
                let finished = rng.chance(0.6);
                let weight = if finished {
                    1.0
                } else {
                    0.05 + 0.9 * rng.next_f64()
                };
                interactions.push(Interaction {
                    user: format!("viewer-{user:05}"),
                    item: format!("title-{title:05}"),
                    at,
                    weight: weight as f32,
                    finished,
                });
                at += (catalog[title].minutes * weight * 60.0) as i64 + 60;
                if !finished && rng.chance(0.5) {
                    break;
                }
            }
        }
    }
    let items = catalog
        .iter()
        .enumerate()
        .map(|(title, info)| ItemInfo {
            item: format!("title-{title:05}"),
            genres: info
                .genres
                .iter()
                .map(|&genre| GENRES[genre].to_string())
                .collect(),
        })
        .collect();
    Dataset {
        name: format!("synthetic ({users} users, {titles} titles, seed {seed})"),
        interactions,
        items,
    }
}

/// Leave-last-out: which interactions train, and each evaluated user's held-out title.
struct Split {
    /// Indices into the dataset's interactions, in its order.
    train: Vec<usize>,
    /// Per evaluated user: their training history in time order, and the held-out title.
    cases: Vec<(Vec<(String, i64)>, String)>,
}

/// `held_out` = 1: the test split (the last title held out); 2: the validation split (the last two held out,
/// the second-to-last to be found).
fn split(dataset: &Dataset, held_out: usize) -> Split {
    let mut per_user: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut user_order: Vec<&str> = Vec::new();
    for (index, interaction) in dataset.interactions.iter().enumerate() {
        let events = per_user
            .entry(interaction.user.as_str())
            .or_insert_with(|| {
                user_order.push(interaction.user.as_str());
                Vec::new()
            });
        events.push(index);
    }
    let mut train = Vec::with_capacity(dataset.interactions.len());
    let mut cases = Vec::new();
    for user in user_order {
        let mut events = per_user.remove(user).unwrap_or_default();
        events.sort_by_key(|&index| dataset.interactions[index].at);
        let mut seen = HashSet::new();
        events.retain(|&index| seen.insert(dataset.interactions[index].item.as_str()));
        if events.len() < 3 {
            train.extend(events);
            continue;
        }
        let kept = events.len() - held_out;
        let history = events[..kept]
            .iter()
            .map(|&index| {
                let interaction = &dataset.interactions[index];
                (interaction.item.clone(), interaction.at)
            })
            .collect();
        cases.push((history, dataset.interactions[events[kept]].item.clone()));
        train.extend_from_slice(&events[..kept]);
    }
    train.sort_unstable();
    Split { train, cases }
}

#[derive(Clone, Copy, Default)]
struct Scores {
    recall: f64,
    ndcg: f64,
}

/// Averages over `cases`, on every core (the model is shared read-only, as the API server shares it).
fn evaluate(model: &Model, cases: &[(Vec<(String, i64)>, String)]) -> Scores {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let chunk = cases.len().div_ceil(threads).max(1);
    let totals: Vec<Scores> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(chunk)
            .map(|chunk| {
                scope.spawn(move || {
                    let nothing_excluded = HashSet::new();
                    let mut total = Scores::default();
                    for (history, target) in chunk {
                        let list = model.recommend(history, DEPTH, &nothing_excluded);
                        if let Some(rank) = list.iter().position(|(item, _)| item == target) {
                            total.recall += 1.0;
                            total.ndcg += 1.0 / (rank as f64 + 2.0).log2();
                        }
                    }
                    total
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let users = cases.len().max(1) as f64;
    Scores {
        recall: totals.iter().map(|total| total.recall).sum::<f64>() / users,
        ndcg: totals.iter().map(|total| total.ndcg).sum::<f64>() / users,
    }
}

/// A split's training interactions, and its `now` (the latest of them).
fn training_set(dataset: &Dataset, split: &Split) -> (Vec<Interaction>, i64) {
    let interactions: Vec<Interaction> = split
        .train
        .iter()
        .map(|&index| dataset.interactions[index].clone())
        .collect();
    let now = interactions.iter().map(|i| i.at).max().unwrap_or(0);
    (interactions, now)
}

/// The hyperparameter search on the validation split, every candidate logged to stderr. Each model's settings
/// one at a time (a coordinate search: each setting over its candidates with the others at their best so far),
/// then the blend's weights the same way, twice round, on one blend trained with every part in.
fn tune(dataset: &Dataset) -> TrainParams {
    let validation = split(dataset, 2);
    let (train, now) = training_set(dataset, &validation);
    let measure = |kind: ModelKind, params: &TrainParams| {
        let model = Model::train(kind, &train, &dataset.items, params, now);
        let ndcg = evaluate(&model, &validation.cases).ndcg;
        eprintln!(
            "  validation {kind:>17} {}: NDCG@10 {ndcg:.4}",
            describe(kind, params)
        );
        ndcg
    };
    /// The candidate (made from the current parameters) with the best NDCG, and that NDCG.
    fn best(
        candidates: Vec<TrainParams>,
        mut measure: impl FnMut(&TrainParams) -> f64,
    ) -> (TrainParams, f64) {
        let mut best: Option<(TrainParams, f64)> = None;
        for candidate in candidates {
            let ndcg = measure(&candidate);
            if best.as_ref().is_none_or(|(_, best_ndcg)| ndcg > *best_ndcg) {
                best = Some((candidate, ndcg));
            }
        }
        best.unwrap_or_else(|| (TrainParams::default(), 0.0))
    }

    // The search starts from fixed settings, not from `TrainParams::default()`, which is set from its result on
    // MovieLens 100K.
    let mut params = TrainParams {
        linear_steps: 20,
        linear_decay: 0.8,
        ..TrainParams::default()
    };
    // The baseline, for the ratios on the validation items.
    measure(ModelKind::Popularity, &params);
    let knn = |params: &TrainParams| measure(ModelKind::ItemKnn, params);
    params = best(
        [25, 50, 100, 200, 400, 800]
            .map(|knn_neighbours| TrainParams {
                knn_neighbours,
                ..params.clone()
            })
            .to_vec(),
        knn,
    )
    .0;
    let ease = |params: &TrainParams| measure(ModelKind::Ease, params);
    params = best(
        [10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0]
            .map(|ease_lambda| TrainParams {
                ease_lambda,
                ..params.clone()
            })
            .to_vec(),
        ease,
    )
    .0;
    let sequential = |params: &TrainParams| measure(ModelKind::Sequential, params);
    let mut candidates = Vec::new();
    for sequence_window in [1, 3, 10, 30] {
        for sequence_recent in [1, 5, 10, 20, 40] {
            candidates.push(TrainParams {
                sequence_window,
                sequence_recent,
                ..params.clone()
            });
        }
    }
    params = best(candidates, sequential).0;
    let linear = |params: &TrainParams| measure(ModelKind::SequentialLinear, params);
    params = best(
        [30.0, 100.0, 300.0, 1000.0]
            .map(|linear_lambda| TrainParams {
                linear_lambda,
                ..params.clone()
            })
            .to_vec(),
        linear,
    )
    .0;
    params = best(
        [5, 10, 20, 30]
            .map(|linear_steps| TrainParams {
                linear_steps,
                ..params.clone()
            })
            .to_vec(),
        linear,
    )
    .0;
    params = best(
        [0.5, 0.6, 0.7, 0.8, 0.9]
            .map(|linear_decay| TrainParams {
                linear_decay,
                ..params.clone()
            })
            .to_vec(),
        linear,
    )
    .0;

    // The blend: trained once with every part in, then only reweighted.
    let all_in = TrainParams {
        blend: BlendWeights {
            ease: 1.0,
            knn: 1.0,
            sequential: 1.0,
            sequential_linear: 1.0,
            popularity: 1.0,
        },
        ..params.clone()
    };
    let mut model = Some(Model::train(
        ModelKind::Blend,
        &train,
        &dataset.items,
        &all_in,
        now,
    ));
    let mut blend_ndcg = |weights: BlendWeights| -> f64 {
        let reweighted = model.take().map(|model| model.with_blend_weights(weights));
        let ndcg = reweighted
            .as_ref()
            .map_or(0.0, |model| evaluate(model, &validation.cases).ndcg);
        model = reweighted;
        ndcg
    };
    let mut weights = BlendWeights {
        ease: 1.0,
        knn: 0.0,
        sequential: 1.0,
        sequential_linear: 1.0,
        popularity: 0.0,
    };
    let mut weights_ndcg = blend_ndcg(weights);
    type Setter = fn(&mut BlendWeights, f32);
    let setters: [(Setter, &[f32]); 5] = [
        (|w, x| w.ease = x, &[0.0, 0.25, 0.5, 1.0, 2.0]),
        (|w, x| w.knn = x, &[0.0, 0.25, 0.5, 1.0]),
        (|w, x| w.sequential = x, &[0.0, 0.25, 0.5, 1.0, 2.0]),
        (|w, x| w.sequential_linear = x, &[0.0, 0.25, 0.5, 1.0, 2.0]),
        (|w, x| w.popularity = x, &[0.0, 0.02, 0.05, 0.1, 0.2, 0.5]),
    ];
    for _round in 0..2 {
        for (set, values) in &setters {
            for &value in *values {
                let mut candidate = weights;
                set(&mut candidate, value);
                if candidate == weights
                    || candidate.ease
                        + candidate.knn
                        + candidate.sequential
                        + candidate.sequential_linear
                        == 0.0
                {
                    continue;
                }
                let ndcg = blend_ndcg(candidate);
                if ndcg > weights_ndcg {
                    (weights, weights_ndcg) = (candidate, ndcg);
                }
            }
        }
    }
    params.blend = weights;
    eprintln!(
        "  validation {:>17} {}: NDCG@10 {weights_ndcg:.4}",
        ModelKind::Blend,
        describe(ModelKind::Blend, &params)
    );
    params
}

fn describe(kind: ModelKind, params: &TrainParams) -> String {
    match kind {
        ModelKind::Popularity => "users per title".into(),
        ModelKind::ItemKnn => format!("{} neighbours", params.knn_neighbours),
        ModelKind::Ease => format!(
            "λ {}, ≤ {} titles",
            params.ease_lambda, params.max_dense_items
        ),
        ModelKind::Sequential => {
            format!(
                "window {}, last {} titles",
                params.sequence_window, params.sequence_recent
            )
        }
        ModelKind::SequentialLinear => format!(
            "λ {}, {} steps, decay {}, ≤ {} titles",
            params.linear_lambda, params.linear_steps, params.linear_decay, params.max_dense_items
        ),
        ModelKind::Blend => {
            let w = params.blend;
            format!(
                "EASE {} + kNN {} + sequential {} + sequential-linear {} + popularity {}",
                w.ease, w.knn, w.sequential, w.sequential_linear, w.popularity
            )
        }
    }
}

fn report(dataset: &Dataset, tuning: bool, validation_only: bool) {
    let started = Instant::now();
    let params = if tuning {
        eprintln!(
            "{}: choosing hyperparameters on the validation items...",
            dataset.name
        );
        tune(dataset)
    } else {
        TrainParams::default()
    };
    let tuned_in = started.elapsed();
    if validation_only {
        println!("\n{}: {params:?}", dataset.name);
        return;
    }
    let test = split(dataset, 1);
    let (train, now) = training_set(dataset, &test);
    let users: HashSet<&str> = dataset
        .interactions
        .iter()
        .map(|i| i.user.as_str())
        .collect();
    println!(
        "\n### {}\n\n{} interactions, {} users, {} titles; {} test users (leave-last-out, full ranking over the \
         titles not in their training history){}.\n",
        dataset.name,
        dataset.interactions.len(),
        users.len(),
        dataset.items.len(),
        test.cases.len(),
        if tuning {
            format!(
                "; hyperparameters chosen on the validation items in {:.0} s",
                tuned_in.as_secs_f64()
            )
        } else {
            "; default hyperparameters".into()
        }
    );
    println!("| model | Recall@10 | NDCG@10 | NDCG@10 ÷ popularity's | training | settings |");
    println!("|---|---:|---:|---:|---:|---|");
    let served = TrainParams::default();
    // With tuning, the blend the API serves (its default settings, chosen once on MovieLens 100K's validation
    // items) is measured too, in the last row.
    let rows = ModelKind::ALL
        .into_iter()
        .map(|kind| (kind, kind.to_string(), &params))
        .chain(tuning.then(|| (ModelKind::Blend, "blend, as served".to_string(), &served)));
    let mut baseline = None;
    for (kind, name, params) in rows {
        let started = Instant::now();
        let model = Model::train(kind, &train, &dataset.items, params, now);
        let trained_in = started.elapsed();
        let scores = evaluate(&model, &test.cases);
        let baseline_ndcg = *baseline.get_or_insert(scores.ndcg);
        println!(
            "| {} | {:.4} | {:.4} | {:.2}× | {} | {} |",
            name,
            scores.recall,
            scores.ndcg,
            scores.ndcg / baseline_ndcg,
            seconds(trained_in),
            describe(kind, params)
        );
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    println!("## Recommendation models, offline (leave-last-out, Recall@{DEPTH} and NDCG@{DEPTH})");
    if let Some(dir) = &args.ml100k {
        for &ties in &args.ties {
            report(
                &load_ml100k(dir, ties)?,
                !args.no_tuning,
                args.validation_only,
            );
        }
    }
    if args.synthetic_users > 0 {
        if args.synthetic_titles == 0 {
            bail!("--synthetic-titles must be at least 1");
        }
        let started = Instant::now();
        let dataset = synthetic(args.synthetic_users, args.synthetic_titles, args.seed);
        eprintln!("synthetic log generated in {}", seconds(started.elapsed()));
        report(&dataset, !args.no_tuning, args.validation_only);
    }
    Ok(())
}
