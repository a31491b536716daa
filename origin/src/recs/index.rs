//! The interactions as the models read them: titles and genres by dense index (the catalog's order), and per
//! user the distinct titles with how strongly each was watched (the user×item matrix, one sparse row a user)
//! and the titles in the order they were watched (for the sequential model). Interactions with a title outside
//! the catalog are dropped here, so no model can ever score one.

use std::collections::HashMap;

use super::{Interaction, ItemInfo};

/// The catalog, by dense index: index `i` is the `i`-th distinct title of the `items` list given to training.
pub(super) struct Catalog {
    pub names: Vec<String>,
    pub index: HashMap<String, u32>,
    /// Per title, its genres as sorted, distinct genre indices.
    pub genres: Vec<Vec<u32>>,
    /// Per genre index, the titles that have it.
    pub genre_items: Vec<Vec<u32>>,
}

impl Catalog {
    /// A title listed twice keeps its first entry.
    pub fn new(items: &[ItemInfo]) -> Catalog {
        let mut names = Vec::with_capacity(items.len());
        let mut index = HashMap::with_capacity(items.len());
        let mut genres = Vec::with_capacity(items.len());
        let mut genre_index: HashMap<&str, u32> = HashMap::new();
        let mut genre_items: Vec<Vec<u32>> = Vec::new();
        for info in items {
            if index.contains_key(&info.item) {
                continue;
            }
            let item = names.len() as u32;
            index.insert(info.item.clone(), item);
            names.push(info.item.clone());
            let mut own: Vec<u32> = info
                .genres
                .iter()
                .map(|genre| {
                    let next = genre_index.len() as u32;
                    *genre_index.entry(genre.as_str()).or_insert(next)
                })
                .collect();
            own.sort_unstable();
            own.dedup();
            for &genre in &own {
                if genre as usize == genre_items.len() {
                    genre_items.push(Vec::new());
                }
                genre_items[genre as usize].push(item);
            }
            genres.push(own);
        }
        Catalog {
            names,
            index,
            genres,
            genre_items,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// How strongly an event says the viewer wanted the title: a finished view fully, a partial view by its weight
/// (cut to [0, 1]); a weight that is not a number says nothing.
pub(super) fn strength(interaction: &Interaction) -> f32 {
    if interaction.finished {
        1.0
    } else if interaction.weight.is_finite() {
        interaction.weight.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// One title in a user's sequence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Step {
    pub item: u32,
    pub strength: f32,
    /// The number of distinct times before this one in the sequence: titles of the same second share it, as
    /// their order is unknown (a batch of ratings, an import). Distances in a sequence are counted in moments.
    pub moment: u32,
}

/// Steps for `items` in time order: the same time, the same moment; a title right after itself (a resumed
/// view) one step, with the stronger strength.
pub(super) fn steps(timed: impl IntoIterator<Item = (i64, u32, f32)>) -> Vec<Step> {
    let mut sequence: Vec<Step> = Vec::new();
    let mut last_at = None;
    for (at, item, strength) in timed {
        if let Some(last) = sequence.last_mut()
            && last.item == item
        {
            last.strength = last.strength.max(strength);
            continue;
        }
        let moment = match (sequence.last(), last_at) {
            (Some(last), Some(last_at)) if last_at == at => last.moment,
            (Some(last), _) => last.moment + 1,
            (None, _) => 0,
        };
        last_at = Some(at);
        sequence.push(Step {
            item,
            strength,
            moment,
        });
    }
    sequence
}

/// Every user's interactions with catalog titles, indexed.
pub(super) struct Histories {
    /// Per user (dense index, in order of first appearance), the distinct titles and, for each, the strongest of
    /// the user's events for it; sorted by title index.
    pub baskets: Vec<Vec<(u32, f32)>>,
    /// Per user, the titles in time order (ties keep the input's order, and share a moment); a title watched
    /// again right after itself (a resumed view) is one step, with the stronger of the two strengths.
    pub sequences: Vec<Vec<Step>>,
    /// Per title, the time-decayed count of its viewers up to `now`: each viewer counts once, by their most
    /// telling event, `strength × 2^(−age / half-life)`.
    pub trending: Vec<f32>,
    /// Events kept (on a catalog title, with a strength above zero).
    pub events: usize,
}

impl Histories {
    pub fn new(
        interactions: &[Interaction],
        catalog: &Catalog,
        now: i64,
        trending_half_life_secs: i64,
    ) -> Histories {
        let mut user_index: HashMap<&str, usize> = HashMap::new();
        let mut per_user: Vec<Vec<(i64, u32, f32)>> = Vec::new();
        let mut events = 0;
        for interaction in interactions {
            let Some(&item) = catalog.index.get(&interaction.item) else {
                continue;
            };
            let strength = strength(interaction);
            if strength <= 0.0 {
                continue;
            }
            let next = per_user.len();
            let user = *user_index.entry(interaction.user.as_str()).or_insert(next);
            if user == per_user.len() {
                per_user.push(Vec::new());
            }
            per_user[user].push((interaction.at, item, strength));
            events += 1;
        }

        let half_life = trending_half_life_secs.max(1) as f64;
        let mut trending = vec![0.0f32; catalog.len()];
        let mut baskets = Vec::with_capacity(per_user.len());
        let mut sequences = Vec::with_capacity(per_user.len());
        for mut user_events in per_user {
            // Stable: events of the same second keep the order they came in.
            user_events.sort_by_key(|&(at, _, _)| at);
            let mut strongest: HashMap<u32, f32> = HashMap::new();
            let mut lately: HashMap<u32, f32> = HashMap::new();
            for &(at, item, strength) in &user_events {
                let best = strongest.entry(item).or_insert(0.0);
                *best = best.max(strength);
                if at <= now {
                    let decayed =
                        strength * 0.5f64.powf(now.abs_diff(at) as f64 / half_life) as f32;
                    let best = lately.entry(item).or_insert(0.0);
                    *best = best.max(decayed);
                }
            }
            for (item, decayed) in lately {
                trending[item as usize] += decayed;
            }
            let mut basket: Vec<(u32, f32)> = strongest.into_iter().collect();
            basket.sort_unstable_by_key(|&(item, _)| item);
            baskets.push(basket);
            sequences.push(steps(user_events));
        }
        Histories {
            baskets,
            sequences,
            trending,
            events,
        }
    }

    pub fn users(&self) -> usize {
        self.baskets.len()
    }

    /// Per title, the number of users who watched it.
    pub fn popularity(&self, items: usize) -> Vec<f32> {
        let mut popularity = vec![0.0f32; items];
        for basket in &self.baskets {
            for &(item, _) in basket {
                popularity[item as usize] += 1.0;
            }
        }
        popularity
    }
}

/// Per title, its place in the popularity order (0 = the most popular): more users first, then the title's
/// name, so that equal scores always rank the same way whatever order the catalog came in.
pub(super) fn popularity_ranks(popularity: &[f32], names: &[String]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..popularity.len() as u32).collect();
    order.sort_unstable_by(|&a, &b| {
        popularity[b as usize]
            .total_cmp(&popularity[a as usize])
            .then_with(|| names[a as usize].cmp(&names[b as usize]))
    });
    let mut ranks = vec![0u32; popularity.len()];
    for (rank, &item) in order.iter().enumerate() {
        ranks[item as usize] = rank as u32;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(item: &str, genres: &[&str]) -> ItemInfo {
        ItemInfo {
            item: item.into(),
            genres: genres.iter().map(|genre| genre.to_string()).collect(),
        }
    }

    fn event(user: &str, item: &str, at: i64, weight: f32, finished: bool) -> Interaction {
        Interaction {
            user: user.into(),
            item: item.into(),
            at,
            weight,
            finished,
        }
    }

    #[test]
    fn catalog_indexes_titles_and_genres_in_order_and_keeps_a_repeated_title_once() {
        let catalog = Catalog::new(&[
            info("a", &["drama", "crime", "drama"]),
            info("b", &["comedy"]),
            info("a", &["horror"]),
            info("c", &[]),
        ]);
        assert_eq!(catalog.names, ["a", "b", "c"]);
        assert_eq!(catalog.index["b"], 1);
        // drama = 0, crime = 1, comedy = 2; sorted and distinct per title; the second "a" is ignored.
        assert_eq!(catalog.genres, [vec![0, 1], vec![2], vec![]]);
        assert_eq!(catalog.genre_items, [vec![0], vec![0], vec![1]]);
    }

    #[test]
    fn strength_is_full_for_a_finished_view_and_the_clamped_weight_otherwise() {
        assert_eq!(strength(&event("u", "a", 0, 0.2, true)), 1.0);
        assert_eq!(strength(&event("u", "a", 0, 0.25, false)), 0.25);
        assert_eq!(strength(&event("u", "a", 0, 3.0, false)), 1.0);
        assert_eq!(strength(&event("u", "a", 0, -1.0, false)), 0.0);
        assert_eq!(strength(&event("u", "a", 0, f32::NAN, false)), 0.0);
        assert_eq!(strength(&event("u", "a", 0, f32::INFINITY, false)), 0.0);
    }

    #[test]
    fn histories_order_by_time_stably_merge_resumed_views_and_drop_what_says_nothing() {
        let catalog = Catalog::new(&[info("a", &[]), info("b", &[]), info("c", &[])]);
        let events = [
            event("u", "c", 30, 1.0, false),
            event("u", "a", 10, 0.5, false),
            event("v", "b", 5, 1.0, true),
            event("u", "b", 20, 0.0, false), // no strength: dropped
            event("u", "x", 20, 1.0, true),  // not in the catalog: dropped
            event("u", "b", 30, 0.4, false), // same second as "c": after it, its input order
            event("u", "b", 40, 0.9, false), // resumes "b": one step, strength 0.9
            event("u", "a", 50, 1.0, true),  // "a" again, not right after itself: a new step
        ];
        let histories = Histories::new(&events, &catalog, 100, 10);
        assert_eq!(histories.users(), 2);
        assert_eq!(histories.events, 6);
        // "c" and "b" share the second 30, so a moment; "b" at 40 resumes "b"; "a" at 50 is the next moment.
        let step = |item, strength, moment| Step {
            item,
            strength,
            moment,
        };
        assert_eq!(
            histories.sequences[0],
            [
                step(0, 0.5, 0),
                step(2, 1.0, 1),
                step(1, 0.9, 1),
                step(0, 1.0, 2)
            ]
        );
        assert_eq!(histories.baskets[0], [(0, 1.0), (1, 0.9), (2, 1.0)]);
        assert_eq!(histories.sequences[1], [step(1, 1.0, 0)]);
        assert_eq!(histories.popularity(3), [1.0, 2.0, 1.0]);
    }

    #[test]
    fn steps_share_a_moment_per_distinct_time_and_merge_a_title_right_after_itself() {
        let sequence = steps([
            (5, 7, 1.0),
            (5, 8, 1.0),
            (6, 8, 0.5), // "8" again right after itself: merged, the stronger strength kept
            (6, 9, 1.0), // the time 6 was not yet a moment of its own: "9" opens it
            (6, 7, 0.5),
            (9, 7, 1.0), // "7" right after itself: merged into the moment of time 6
        ]);
        let as_tuples: Vec<(u32, f32, u32)> = sequence
            .iter()
            .map(|step| (step.item, step.strength, step.moment))
            .collect();
        assert_eq!(
            as_tuples,
            [(7, 1.0, 0), (8, 1.0, 0), (9, 1.0, 1), (7, 1.0, 1)]
        );
        assert!(steps([]).is_empty());
    }

    #[test]
    fn trending_counts_each_viewer_once_by_their_most_telling_event_decayed_by_age() {
        let catalog = Catalog::new(&[info("a", &[]), info("b", &[])]);
        let events = [
            // u: "a" 10 s ago finished (1 × 2^-1 = 0.5) beats "a" now at 0.25.
            event("u", "a", 90, 1.0, true),
            event("u", "a", 100, 0.25, false),
            // v: "a" 20 s ago, 1 × 2^-2 = 0.25.
            event("v", "a", 80, 1.0, true),
            // w: "b" in the future (a skewed clock) is not counted; "b" 30 s ago is 2^-3.
            event("w", "b", 130, 1.0, true),
            event("w", "b", 70, 1.0, true),
        ];
        let histories = Histories::new(&events, &catalog, 100, 10);
        assert_eq!(histories.trending, [0.75, 0.125]);
    }

    #[test]
    fn popularity_ranks_break_ties_by_name() {
        let names: Vec<String> = ["d", "b", "c", "a"].iter().map(|s| s.to_string()).collect();
        // d: 1, b: 3, c: 1, a: 1 → b, then a, c, d by name.
        assert_eq!(
            popularity_ranks(&[1.0, 3.0, 1.0, 1.0], &names),
            [3, 0, 2, 1]
        );
    }
}
