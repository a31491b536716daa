//! Recommendations: which titles to put in front of a viewer. Pure — interactions (who watched what, when, how
//! much), the catalog and the time come in; an immutable [`Model`] comes out that answers a viewer's personal
//! top-n ([`Model::recommend`]), "because you watched X" ([`Model::similar`]) and what is watched lately
//! ([`Model::trending`]). No I/O, no clock: the caller loads the interactions, passes `now`, and shares the model
//! behind an `Arc` until the next training replaces it.
//!
//! The kinds ([`ModelKind`]): popularity (the baseline); two that read a viewer's titles as a set — item-kNN
//! (cosine) and EASE^R (Steck's closed-form linear autoencoder); two that read their order — sequential rules
//! (what viewers watched soon after the titles this viewer watched last) and linear transitions (the
//! least-squares map from the last titles to the next ones); and the served blend of them. The blend's weights
//! and the models' settings are chosen on a validation split of MovieLens 100K by `benches/src/receval.rs`
//! (`scripts/recs-eval.sh`), which reports every model against popularity. The dense models (EASE, linear
//! transitions) cover the `max_dense_items` most popular titles only; the sparse ones any catalogue.
//!
//! A model is written as bytes and read back (`stored`) so that one instance of the control plane trains it and
//! every instance serves it.
//!
//! Whatever the kind: only catalog titles are ever returned; a viewer's own history and the titles the caller
//! excludes are left out; a viewer with no known history gets trending titles; a title nobody has watched yet
//! gets titles of its genres; titles the model has no opinion on are ordered by popularity, so lists are full
//! and the same for the same input.

mod index;
mod linear;
mod neighbours;
mod stored;

use std::collections::HashSet;
use std::fmt;

use index::{Catalog, Histories, Step, popularity_ranks, steps};
use linear::Linear;
use neighbours::Neighbours;

/// One event: a profile (user) interacted with a title (item).
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub user: String,
    pub item: String,
    /// Unix seconds.
    pub at: i64,
    /// 1.0 for a full view or a rating; a partial view less (the share watched). Cut to [0, 1]; a view with no
    /// weight (0, negative, NaN) and not finished is ignored.
    pub weight: f32,
    /// Watched to the end: counts as weight 1.
    pub finished: bool,
}

/// Catalog metadata of one title, for the fallbacks of titles with no interactions yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemInfo {
    pub item: String,
    pub genres: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// Titles by number of viewers: the baseline every other model is measured against.
    Popularity,
    /// Item-item cosine similarity over the user×item matrix; a title's score is the sum of its similarities
    /// to the viewer's titles.
    ItemKnn,
    /// EASE^R: the closed-form item-item linear model (see `linear.rs`).
    Ease,
    /// Sequential rules: what viewers watched soon after the titles this viewer watched last (sparse, any
    /// catalogue size).
    Sequential,
    /// Linear transitions: the least-squares map from a viewer's last titles to their next ones (dense, over
    /// the most popular titles; see `linear.rs`).
    SequentialLinear,
    /// The served model: a weighted mix of the others' normalised scores ([`BlendWeights`]).
    Blend,
}

impl ModelKind {
    pub const ALL: [ModelKind; 6] = [
        ModelKind::Popularity,
        ModelKind::ItemKnn,
        ModelKind::Ease,
        ModelKind::Sequential,
        ModelKind::SequentialLinear,
        ModelKind::Blend,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Popularity => "popularity",
            ModelKind::ItemKnn => "item-knn",
            ModelKind::Ease => "ease",
            ModelKind::Sequential => "sequential",
            ModelKind::SequentialLinear => "sequential-linear",
            ModelKind::Blend => "blend",
        }
    }

    pub fn from_name(name: &str) -> Option<ModelKind> {
        ModelKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for ModelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How much each model counts in the blend. Each model's scores are first divided by their largest value
/// among the viewer's candidates, so a weight is the share of a model whose top title scores 1. A model with
/// weight 0 is not trained into a blend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlendWeights {
    pub ease: f32,
    pub knn: f32,
    pub sequential: f32,
    pub sequential_linear: f32,
    pub popularity: f32,
}

impl Default for BlendWeights {
    /// Chosen on MovieLens 100K's validation items (`scripts/recs-eval.sh`).
    fn default() -> Self {
        BlendWeights {
            ease: 1.0,
            knn: 0.25,
            sequential: 1.0,
            sequential_linear: 1.0,
            popularity: 0.02,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainParams {
    /// Item-kNN: the most similar titles kept per title.
    pub knn_neighbours: usize,
    /// EASE: the L2 penalty λ (larger: smoother, more popular-leaning scores).
    pub ease_lambda: f32,
    /// EASE and the linear sequential model: only this many of the most popular titles are modelled (their
    /// matrices are dense, max_dense_items², and training is cubic in it).
    pub max_dense_items: usize,
    /// Sequential rules: a title followed within this many steps of a viewer's sequence counts as following
    /// it.
    pub sequence_window: usize,
    /// Sequential rules: the viewer's last this-many titles score, those of the k-th most recent moment (see
    /// `linear_decay`) with weight 1/k.
    pub sequence_recent: usize,
    /// Sequential rules: the strongest successors kept per title.
    pub sequence_neighbours: usize,
    /// Linear sequential model: the L2 penalty λ.
    pub linear_lambda: f32,
    /// Linear sequential model: titles on each side of a cut (and the viewer's last this-many titles when
    /// scoring).
    pub linear_steps: usize,
    /// Linear sequential model: a title `d` moments from the cut weighs `linear_decay^d`. A moment is a
    /// distinct time: titles of the same second (a batch of ratings, whose order is unknown) share one.
    pub linear_decay: f32,
    /// Trending: a view counts half as much this many seconds later.
    pub trending_half_life_secs: i64,
    pub blend: BlendWeights,
}

impl Default for TrainParams {
    /// Chosen on MovieLens 100K's validation items (`scripts/recs-eval.sh`); the cap keeps a large catalogue's
    /// training to minutes and its model to about 2 × 4 bytes × 4000² = 128 MB.
    fn default() -> Self {
        TrainParams {
            knn_neighbours: 25,
            ease_lambda: 100.0,
            max_dense_items: 4000,
            sequence_window: 30,
            sequence_recent: 10,
            sequence_neighbours: 200,
            linear_lambda: 1000.0,
            linear_steps: 10,
            linear_decay: 0.7,
            trending_half_life_secs: 3 * 24 * 3600,
            blend: BlendWeights::default(),
        }
    }
}

/// A trained model: immutable, `Send + Sync`, to be shared behind an `Arc`.
pub struct Model {
    kind: ModelKind,
    trained_at: i64,
    users: usize,
    events: usize,
    catalog: Catalog,
    /// Per title, its number of viewers.
    popularity: Vec<f32>,
    /// Per title, its place in the popularity order: the tie-break of every list.
    popularity_ranks: Vec<u32>,
    trending: Vec<f32>,
    knn: Option<Neighbours>,
    ease: Option<Linear>,
    rules: Option<Neighbours>,
    transitions: Option<Linear>,
    sequence_recent: usize,
    linear_steps: usize,
    linear_decay: f32,
    blend: BlendWeights,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("kind", &self.kind)
            .field("trained_at", &self.trained_at)
            .field("items", &self.catalog.len())
            .field("users", &self.users)
            .field("events", &self.events)
            .field("blend", &self.blend)
            .finish_non_exhaustive()
    }
}

/// The models a blend mixes (popularity aside).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Part {
    Knn,
    Ease,
    Sequential,
    SequentialLinear,
}

impl Part {
    const ALL: [Part; 4] = [
        Part::Ease,
        Part::Knn,
        Part::Sequential,
        Part::SequentialLinear,
    ];

    fn kind(self) -> ModelKind {
        match self {
            Part::Knn => ModelKind::ItemKnn,
            Part::Ease => ModelKind::Ease,
            Part::Sequential => ModelKind::Sequential,
            Part::SequentialLinear => ModelKind::SequentialLinear,
        }
    }

    fn weight(self, blend: &BlendWeights) -> f32 {
        match self {
            Part::Knn => blend.knn,
            Part::Ease => blend.ease,
            Part::Sequential => blend.sequential,
            Part::SequentialLinear => blend.sequential_linear,
        }
    }
}

impl Model {
    /// Trains a model of `kind` on `interactions` at time `now` (trending counts views up to `now`). Interactions
    /// with titles outside `items` are ignored; the order of `interactions` breaks ties of time.
    pub fn train(
        kind: ModelKind,
        interactions: &[Interaction],
        items: &[ItemInfo],
        params: &TrainParams,
        now: i64,
    ) -> Model {
        let catalog = Catalog::new(items);
        let histories = Histories::new(interactions, &catalog, now, params.trending_half_life_secs);
        let popularity = histories.popularity(catalog.len());
        let popularity_ranks = popularity_ranks(&popularity, &catalog.names);
        let blend = params.blend;
        let wants = |part: Part| {
            kind == part.kind() || (kind == ModelKind::Blend && part.weight(&blend) > 0.0)
        };
        let knn = wants(Part::Knn)
            .then(|| neighbours::cosine(&histories.baskets, catalog.len(), params.knn_neighbours));
        let ease = wants(Part::Ease)
            .then(|| {
                Linear::ease(
                    &histories.baskets,
                    &popularity,
                    &popularity_ranks,
                    params.ease_lambda,
                    params.max_dense_items,
                )
            })
            .flatten();
        let rules = wants(Part::Sequential).then(|| {
            neighbours::transitions(
                &histories.sequences,
                catalog.len(),
                params.sequence_window,
                params.sequence_neighbours,
            )
        });
        let transitions = wants(Part::SequentialLinear)
            .then(|| {
                Linear::transitions(
                    &histories.sequences,
                    &popularity,
                    &popularity_ranks,
                    params.linear_lambda,
                    params.max_dense_items,
                    params.linear_steps,
                    params.linear_decay,
                )
            })
            .flatten();
        Model {
            kind,
            trained_at: now,
            users: histories.users(),
            events: histories.events,
            trending: histories.trending,
            catalog,
            popularity,
            popularity_ranks,
            knn,
            ease,
            rules,
            transitions,
            sequence_recent: params.sequence_recent,
            linear_steps: params.linear_steps,
            linear_decay: params.linear_decay,
            blend,
        }
    }

    /// The same blend with other weights, without training again (to tune them). A model trained with weight 0
    /// was not trained into the blend, and stays out whatever its new weight.
    pub fn with_blend_weights(mut self, blend: BlendWeights) -> Model {
        self.blend = blend;
        self
    }

    /// A personal top-`n` for a viewer whose `history` is their titles with the time each was watched, oldest
    /// first (re-sorted by time, stably, so ties keep their order). Leaves out the history's titles and
    /// `exclude` (e.g. finished titles); a viewer none of whose titles the catalog knows gets trending titles.
    /// Scores are the model's own (comparable within one list only), best first.
    pub fn recommend(
        &self,
        history: &[(String, i64)],
        n: usize,
        exclude: &HashSet<String>,
    ) -> Vec<(String, f32)> {
        if n == 0 {
            return Vec::new();
        }
        let sequence = self.known_sequence(history);
        let mut eligible = vec![true; self.catalog.len()];
        for step in &sequence {
            eligible[step.item as usize] = false;
        }
        for item in exclude {
            if let Some(&item) = self.catalog.index.get(item) {
                eligible[item as usize] = false;
            }
        }
        let scores = if sequence.is_empty() {
            self.trending.clone()
        } else {
            self.personal_scores(&sequence, &eligible)
        };
        self.named(self.top(&scores, &eligible, n, false))
    }

    /// "Because you watched `item`": the titles the model ties most to it (for the blend, its item models
    /// mixed, without popularity). A title with no interactions yet, or fewer than `n` ties (and every title
    /// for the popularity model), is completed with titles sharing its genres, by genre overlap (Jaccard, the
    /// score of those) then popularity. Empty for a title outside the catalog.
    pub fn similar(&self, item: &str, n: usize) -> Vec<(String, f32)> {
        let Some(&source) = self.catalog.index.get(item) else {
            return Vec::new();
        };
        if n == 0 {
            return Vec::new();
        }
        let mut eligible = vec![true; self.catalog.len()];
        eligible[source as usize] = false;
        let alone = Step {
            item: source,
            strength: 1.0,
            moment: 0,
        };
        let scores = self.scores_of(&[alone], &eligible, false);
        let mut found = self.top(&scores, &eligible, n, true);
        if found.len() < n {
            for &(other, _) in &found {
                eligible[other as usize] = false;
            }
            let genre_scores = self.genre_overlap(source);
            found.extend(self.top(&genre_scores, &eligible, n - found.len(), true));
        }
        self.named(found)
    }

    /// The most watched titles lately: each viewer counts once per title, halving every
    /// `trending_half_life_secs` before the training's `now`. Only titles watched at all.
    pub fn trending(&self, n: usize) -> Vec<(String, f32)> {
        let eligible = vec![true; self.catalog.len()];
        self.named(self.top(&self.trending, &eligible, n, true))
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The `now` it was trained at.
    pub fn trained_at(&self) -> i64 {
        self.trained_at
    }

    /// Catalog titles (whether watched or not).
    pub fn items(&self) -> usize {
        self.catalog.len()
    }

    /// Users with at least one interaction on a catalog title.
    pub fn users(&self) -> usize {
        self.users
    }

    /// Interactions used (on a catalog title, with a weight).
    pub fn interactions(&self) -> usize {
        self.events
    }

    /// Titles covered by the dense models (EASE, linear transitions): at most `max_dense_items`.
    pub fn dense_items(&self) -> usize {
        let ease = self.ease.as_ref().map_or(0, Linear::modelled);
        let transitions = self.transitions.as_ref().map_or(0, Linear::modelled);
        ease.max(transitions)
    }

    /// Title-title entries kept by the sparse models (kNN, sequential rules).
    pub fn sparse_entries(&self) -> usize {
        let knn = self.knn.as_ref().map_or(0, Neighbours::entries);
        let rules = self.rules.as_ref().map_or(0, Neighbours::entries);
        knn + rules
    }

    pub fn blend_weights(&self) -> BlendWeights {
        self.blend
    }

    /// The history's catalog titles in time order, as training reads a sequence (moments, resumed views).
    fn known_sequence(&self, history: &[(String, i64)]) -> Vec<Step> {
        let mut timed: Vec<(i64, u32, f32)> = history
            .iter()
            .filter_map(|(item, at)| self.catalog.index.get(item).map(|&index| (*at, index, 1.0)))
            .collect();
        timed.sort_by_key(|&(at, _, _)| at);
        steps(timed)
    }

    fn personal_scores(&self, sequence: &[Step], eligible: &[bool]) -> Vec<f32> {
        if self.kind == ModelKind::Popularity {
            return self.popularity.clone();
        }
        self.scores_of(sequence, eligible, true)
    }

    /// The scores of the model's kind for a viewer who watched `sequence` (time order); for a blend, with
    /// popularity only if `with_popularity`.
    fn scores_of(&self, sequence: &[Step], eligible: &[bool], with_popularity: bool) -> Vec<f32> {
        let items = self.catalog.len();
        let part_scores = |part: Part| self.part_scores(part, sequence);
        match self.kind {
            ModelKind::Popularity => vec![0.0; items],
            ModelKind::ItemKnn => part_scores(Part::Knn),
            ModelKind::Ease => part_scores(Part::Ease),
            ModelKind::Sequential => part_scores(Part::Sequential),
            ModelKind::SequentialLinear => part_scores(Part::SequentialLinear),
            ModelKind::Blend => {
                let mut blended = vec![0.0f32; items];
                for part in Part::ALL {
                    let weight = part.weight(&self.blend);
                    if weight > 0.0 {
                        add_normalised(&mut blended, weight, &part_scores(part), eligible);
                    }
                }
                if with_popularity && self.blend.popularity > 0.0 {
                    add_normalised(
                        &mut blended,
                        self.blend.popularity,
                        &self.popularity,
                        eligible,
                    );
                }
                blended
            }
        }
    }

    /// One model's scores for a viewer who watched `sequence`; zeros if it was not trained.
    fn part_scores(&self, part: Part, sequence: &[Step]) -> Vec<f32> {
        let mut scores = vec![0.0f32; self.catalog.len()];
        // The item-item models read the set of titles watched; the sequential ones the latest titles, the
        // more recent (in moments) the heavier.
        let mut distinct: Vec<u32> = sequence.iter().map(|step| step.item).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let basket = distinct.iter().map(|&item| (item, 1.0f32));
        let last_moment = sequence.last().map_or(0, |step| step.moment);
        let latest = |count: usize, weight: &dyn Fn(u32) -> f32| {
            sequence
                .iter()
                .rev()
                .take(count)
                .map(|step| (step.item, weight(last_moment - step.moment)))
                .collect::<Vec<_>>()
        };
        match part {
            Part::Knn => {
                if let Some(knn) = &self.knn {
                    knn.add_scores(basket, &mut scores);
                }
            }
            Part::Ease => {
                if let Some(ease) = &self.ease {
                    ease.add_scores(basket, &mut scores);
                }
            }
            Part::Sequential => {
                if let Some(rules) = &self.rules {
                    let recent = latest(self.sequence_recent, &|back| 1.0 / (back + 1) as f32);
                    rules.add_scores(recent, &mut scores);
                }
            }
            Part::SequentialLinear => {
                if let Some(transitions) = &self.transitions {
                    let decay = self.linear_decay;
                    let recent = latest(self.linear_steps, &|back| decay.powi(back as i32));
                    transitions.add_scores(recent, &mut scores);
                }
            }
        }
        scores
    }

    /// Per title, the Jaccard overlap of its genres with `source`'s (0 for no shared genre).
    fn genre_overlap(&self, source: u32) -> Vec<f32> {
        let genres = &self.catalog.genres;
        let own = &genres[source as usize];
        let mut scores = vec![0.0f32; self.catalog.len()];
        for &genre in own {
            for &other in &self.catalog.genre_items[genre as usize] {
                if scores[other as usize] > 0.0 || other == source {
                    continue;
                }
                let theirs = &genres[other as usize];
                let shared = own.iter().filter(|genre| theirs.contains(genre)).count();
                let union = own.len() + theirs.len() - shared;
                scores[other as usize] = shared as f32 / union as f32;
            }
        }
        scores
    }

    /// The `n` best eligible titles by score, then popularity (and name); with `positive_only`, only titles
    /// that scored above zero.
    fn top(
        &self,
        scores: &[f32],
        eligible: &[bool],
        n: usize,
        positive_only: bool,
    ) -> Vec<(u32, f32)> {
        if n == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<u32> = (0..scores.len() as u32)
            .filter(|&item| {
                eligible[item as usize] && (!positive_only || scores[item as usize] > 0.0)
            })
            .collect();
        let ranks = &self.popularity_ranks;
        let order = |a: &u32, b: &u32| {
            scores[*b as usize]
                .total_cmp(&scores[*a as usize])
                .then(ranks[*a as usize].cmp(&ranks[*b as usize]))
        };
        if candidates.len() > n {
            candidates.select_nth_unstable_by(n - 1, order);
            candidates.truncate(n);
        }
        candidates.sort_unstable_by(order);
        candidates
            .into_iter()
            .map(|item| (item, scores[item as usize]))
            .collect()
    }

    fn named(&self, found: Vec<(u32, f32)>) -> Vec<(String, f32)> {
        found
            .into_iter()
            .map(|(item, score)| (self.catalog.names[item as usize].clone(), score))
            .collect()
    }
}

/// Adds `weight × scores / (their largest value among the eligible titles)` to `blended`; nothing if no
/// eligible title scores above zero.
fn add_normalised(blended: &mut [f32], weight: f32, scores: &[f32], eligible: &[bool]) {
    let largest = scores
        .iter()
        .zip(eligible)
        .filter(|&(_, &eligible)| eligible)
        .map(|(&score, _)| score)
        .fold(0.0f32, f32::max);
    if largest <= 0.0 {
        return;
    }
    let factor = weight / largest;
    for (sum, score) in blended.iter_mut().zip(scores) {
        *sum += factor * score;
    }
}

#[cfg(test)]
mod tests;
