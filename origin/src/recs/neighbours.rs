//! Sparse title-to-title tables, kept to each title's strongest few entries: item-kNN's cosine similarities and
//! the sequential model's transitions (which titles follow a title, and how closely). Both are built the same
//! way — one title at a time into a dense scratch row, then its top entries kept — so memory stays at
//! (titles × kept entries) and the time at Σ over users of (titles watched)² for kNN, (titles × window) for
//! transitions.

use super::index::Step;

/// Per title, its strongest entries `(other title, weight)`, strongest first (ties: lower index first).
#[derive(Debug, Clone, PartialEq, Default)]
pub(super) struct Neighbours {
    pub rows: Vec<Vec<(u32, f32)>>,
}

impl Neighbours {
    /// Adds `weight ×` each source's row to `scores`.
    pub fn add_scores(&self, sources: impl IntoIterator<Item = (u32, f32)>, scores: &mut [f32]) {
        for (source, weight) in sources {
            if let Some(row) = self.rows.get(source as usize) {
                for &(item, value) in row {
                    scores[item as usize] += weight * value;
                }
            }
        }
    }

    pub fn entries(&self) -> usize {
        self.rows.iter().map(Vec::len).sum()
    }
}

/// A dense row of sums for one source title, with the list of the slots it touched so that clearing it and
/// reading it cost only what was touched.
struct Scratch {
    sums: Vec<f32>,
    touched: Vec<u32>,
}

impl Scratch {
    fn new(items: usize) -> Scratch {
        Scratch {
            sums: vec![0.0; items],
            touched: Vec::new(),
        }
    }

    fn add(&mut self, item: u32, value: f32) {
        let sum = &mut self.sums[item as usize];
        if *sum == 0.0 {
            self.touched.push(item);
        }
        *sum += value;
    }

    /// The `keep` largest positive `value(item, sum)`, strongest first; clears the row.
    fn take_top(&mut self, keep: usize, value: impl Fn(u32, f32) -> f32) -> Vec<(u32, f32)> {
        let mut row: Vec<(u32, f32)> = Vec::with_capacity(self.touched.len());
        for &item in &self.touched {
            let sum = std::mem::take(&mut self.sums[item as usize]);
            let kept = value(item, sum);
            if kept > 0.0 {
                row.push((item, kept));
            }
        }
        self.touched.clear();
        strongest_first(&mut row, keep);
        row
    }
}

/// Keeps the `keep` largest weights, sorted strongest first, ties by lower index.
fn strongest_first(row: &mut Vec<(u32, f32)>, keep: usize) {
    let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if keep == 0 {
        row.clear();
        return;
    }
    if row.len() > keep {
        row.select_nth_unstable_by(keep - 1, order);
        row.truncate(keep);
    }
    row.sort_unstable_by(order);
}

/// Item-kNN: the cosine similarity of two titles' columns of the user×item matrix (`baskets`, one sparse row
/// per user), each title keeping its `keep` most similar others.
pub(super) fn cosine(baskets: &[Vec<(u32, f32)>], items: usize, keep: usize) -> Neighbours {
    let mut columns: Vec<Vec<(u32, f32)>> = vec![Vec::new(); items];
    let mut norms = vec![0.0f32; items];
    for (user, basket) in baskets.iter().enumerate() {
        for &(item, value) in basket {
            columns[item as usize].push((user as u32, value));
            norms[item as usize] += value * value;
        }
    }
    for norm in &mut norms {
        *norm = norm.sqrt();
    }
    let mut scratch = Scratch::new(items);
    let rows = (0..items)
        .map(|item| {
            for &(user, value) in &columns[item] {
                for &(other, other_value) in &baskets[user as usize] {
                    if other as usize != item {
                        scratch.add(other, value * other_value);
                    }
                }
            }
            // A norm can only be 0 here if tiny strengths underflowed: no similarity then.
            scratch.take_top(keep, |other, dot| {
                let norms = norms[item] * norms[other as usize];
                if norms > 0.0 { dot / norms } else { 0.0 }
            })
        })
        .collect();
    Neighbours { rows }
}

/// Sequential rules: in every user's sequence, a title `b` within `window` steps after title `a` adds
/// `strength(a) × strength(b) / distance` to a→b, the distance counted in moments (at least 1). Titles of the
/// same moment (the same second: their order is unknown) each count as following the other. Each title's row
/// is divided by its total, so it reads as "what comes next after `a`, and how likely" whatever `a`'s
/// popularity; each keeps its `keep` strongest.
pub(super) fn transitions(
    sequences: &[Vec<Step>],
    items: usize,
    window: usize,
    keep: usize,
) -> Neighbours {
    let mut occurrences: Vec<Vec<(u32, u32)>> = vec![Vec::new(); items];
    for (user, sequence) in sequences.iter().enumerate() {
        for (position, step) in sequence.iter().enumerate() {
            occurrences[step.item as usize].push((user as u32, position as u32));
        }
    }
    let mut scratch = Scratch::new(items);
    let rows = (0..items)
        .map(|item| {
            let mut total = 0.0f32;
            for &(user, position) in &occurrences[item] {
                let sequence = &sequences[user as usize];
                let position = position as usize;
                let source = sequence[position];
                let after = sequence[position + 1..].iter().take(window);
                let same_moment_before = sequence[..position]
                    .iter()
                    .rev()
                    .take(window)
                    .take_while(|step| step.moment == source.moment);
                for next in after.chain(same_moment_before) {
                    if next.item as usize != item {
                        let distance = next.moment.saturating_sub(source.moment).max(1);
                        let value = source.strength * next.strength / distance as f32;
                        scratch.add(next.item, value);
                        total += value;
                    }
                }
            }
            scratch.take_top(keep, |_, sum| if total > 0.0 { sum / total } else { 0.0 })
        })
        .collect();
    Neighbours { rows }
}

/// 4 users × 5 titles, binary:
///
/// ```text
///        t0 t1 t2 t3 t4
///   u0    1  1  0  0  0
///   u1    1  1  1  0  0
///   u2    0  1  1  1  0
///   u3    1  0  0  1  0
/// ```
/// Column norms: t0 √3, t1 √3, t2 √2, t3 √2, t4 0. Co-counts: t0·t1 = 2 (u0, u1), t0·t2 = 1 (u1),
/// t0·t3 = 1 (u3), t1·t2 = 2 (u1, u2), t1·t3 = 1 (u2), t2·t3 = 1 (u2). Cosines: t0~t1 = 2/3,
/// t0~t2 = 1/√6 ≈ 0.408, t0~t3 = 1/√6, t1~t2 = 2/√6 ≈ 0.816, t1~t3 = 1/√6, t2~t3 = 1/2. t4 has no one.
#[cfg(test)]
pub(super) fn four_users() -> Vec<Vec<(u32, f32)>> {
    vec![
        vec![(0, 1.0), (1, 1.0)],
        vec![(0, 1.0), (1, 1.0), (2, 1.0)],
        vec![(1, 1.0), (2, 1.0), (3, 1.0)],
        vec![(0, 1.0), (3, 1.0)],
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: &[(u32, f32)], expected: &[(u32, f32)]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert_eq!(a.0, e.0, "{actual:?} vs {expected:?}");
            assert!((a.1 - e.1).abs() < 1e-6, "{actual:?} vs {expected:?}");
        }
    }

    #[test]
    fn strongest_first_keeps_the_largest_and_breaks_ties_by_index() {
        let mut row = vec![(4, 0.5), (1, 0.9), (3, 0.5), (2, 0.1), (0, 0.5)];
        strongest_first(&mut row, 3);
        assert_eq!(row, [(1, 0.9), (0, 0.5), (3, 0.5)]);
        strongest_first(&mut row, 0);
        assert!(row.is_empty());
    }

    #[test]
    fn cosine_matches_the_hand_computed_similarities() {
        let knn = cosine(&four_users(), 5, 10);
        let r6 = 1.0 / 6f32.sqrt();
        close(&knn.rows[0], &[(1, 2.0 / 3.0), (2, r6), (3, r6)]);
        close(&knn.rows[1], &[(2, 2.0 * r6), (0, 2.0 / 3.0), (3, r6)]);
        close(&knn.rows[2], &[(1, 2.0 * r6), (3, 0.5), (0, r6)]);
        close(&knn.rows[3], &[(2, 0.5), (0, r6), (1, r6)]);
        assert!(knn.rows[4].is_empty());
        assert_eq!(knn.entries(), 12);
    }

    #[test]
    fn cosine_keeps_only_the_top_neighbours() {
        let knn = cosine(&four_users(), 5, 1);
        let r6 = 1.0 / 6f32.sqrt();
        close(&knn.rows[0], &[(1, 2.0 / 3.0)]);
        close(&knn.rows[1], &[(2, 2.0 * r6)]);
        close(&knn.rows[3], &[(2, 0.5)]);
    }

    #[test]
    fn cosine_weighs_partial_views() {
        // u0 watched t0 fully and half of t1; u1 watched t0. t0 = (1, 1), t1 = (0.5, 0):
        // cos = 0.5 / (√2 · 0.5) = 1/√2.
        let knn = cosine(&[vec![(0, 1.0), (1, 0.5)], vec![(0, 1.0)]], 2, 5);
        close(&knn.rows[0], &[(1, 1.0 / 2f32.sqrt())]);
        close(&knn.rows[1], &[(0, 1.0 / 2f32.sqrt())]);
    }

    #[test]
    fn neighbours_add_weighted_rows_to_scores() {
        let table = Neighbours {
            rows: vec![vec![(1, 0.5), (2, 0.25)], vec![(2, 1.0)], vec![]],
        };
        let mut scores = vec![0.0; 3];
        table.add_scores([(0, 2.0), (1, 1.0), (7, 1.0)], &mut scores);
        assert_eq!(scores, [0.0, 1.0, 1.5]);
    }

    /// A sequence of one user, each title at its own moment (distinct times).
    fn one_per_moment(titles: &[(u32, f32)]) -> Vec<Step> {
        titles
            .iter()
            .zip(0..)
            .map(|(&(item, strength), moment)| Step {
                item,
                strength,
                moment,
            })
            .collect()
    }

    /// Window 2. Sequences (all full views, distinct times): u0 = t0 t1 t2, u1 = t0 t2, u2 = t1 t2 t0.
    /// From t0: u0 gives t1 +1, t2 +1/2; u1 gives t2 +1; u2 (t0 last) nothing. Total 2.5:
    /// t2 = 1.5 / 2.5 = 0.6, t1 = 1 / 2.5 = 0.4.
    /// From t1: u0 gives t2 +1; u2 gives t2 +1, t0 +1/2. Total 2.5: t2 = 0.8, t0 = 0.2.
    /// From t2: u2 gives t0 +1. Total 1: t0 = 1.
    #[test]
    fn transitions_match_the_hand_computed_rules() {
        let full = |items: &[u32]| {
            one_per_moment(&items.iter().map(|&item| (item, 1.0)).collect::<Vec<_>>())
        };
        let sequences = vec![full(&[0, 1, 2]), full(&[0, 2]), full(&[1, 2, 0])];
        let rules = transitions(&sequences, 4, 2, 10);
        close(&rules.rows[0], &[(2, 0.6), (1, 0.4)]);
        close(&rules.rows[1], &[(2, 0.8), (0, 0.2)]);
        close(&rules.rows[2], &[(0, 1.0)]);
        assert!(rules.rows[3].is_empty());

        // Window 1: only the next step. From t0: t1 (u0), t2 (u1) → ½ each; from t1: t2 twice → 1.
        let next_only = transitions(&sequences, 4, 1, 10);
        close(&next_only.rows[0], &[(1, 0.5), (2, 0.5)]);
        close(&next_only.rows[1], &[(2, 1.0)]);

        // Keeping one successor: t0 keeps t2 (0.6), still divided by the whole total.
        let kept = transitions(&sequences, 4, 2, 1);
        close(&kept.rows[0], &[(2, 0.6)]);
    }

    #[test]
    fn transitions_weigh_partial_views_and_skip_a_title_following_itself() {
        // t0 (0.5) t1 (1) t0 (1) t2 (0.5), window 2.
        // From the first t0: t1 0.5 × 1 / 1 = 0.5; the t0 two steps on is itself. From the second t0: t2
        // 1 × 0.5 / 1 = 0.5. t0 total 1: t1 = 0.5, t2 = 0.5. From t1: t0 +1, t2 +0.25 → 0.8, 0.2.
        let rules = transitions(
            &[one_per_moment(&[(0, 0.5), (1, 1.0), (0, 1.0), (2, 0.5)])],
            3,
            2,
            10,
        );
        close(&rules.rows[0], &[(1, 0.5), (2, 0.5)]);
        close(&rules.rows[1], &[(0, 0.8), (2, 0.2)]);
        assert!(rules.rows[2].is_empty());
    }

    /// t0 and t1 in the same second (moment 0), t2 and t3 in the next (moment 1), t4 in the one after; window 3.
    /// From t0: t1 (same moment: distance 1) +1, t2 +1, t3 +1 → ⅓ each.
    /// From t1: after it t2 +1, t3 +1, t4 (two moments on) +½; before it in its moment t0 +1. Total 3.5:
    /// t0, t2, t3 = 2/7 each, t4 = 1/7.
    /// From t2: t3 +1, t4 +1 → ½ each (t1 before it is another moment). From t3: t4 +1, t2 (same moment)
    /// +1 → ½ each. From t4: nothing after, alone in its moment.
    #[test]
    fn titles_of_the_same_moment_follow_each_other_and_distance_counts_moments() {
        let step = |item, moment| Step {
            item,
            strength: 1.0,
            moment,
        };
        let sequence = vec![step(0, 0), step(1, 0), step(2, 1), step(3, 1), step(4, 2)];
        let rules = transitions(&[sequence], 5, 3, 10);
        let third = 1.0 / 3.0;
        close(&rules.rows[0], &[(1, third), (2, third), (3, third)]);
        close(
            &rules.rows[1],
            &[
                (0, 2.0 / 7.0),
                (2, 2.0 / 7.0),
                (3, 2.0 / 7.0),
                (4, 1.0 / 7.0),
            ],
        );
        close(&rules.rows[2], &[(3, 0.5), (4, 0.5)]);
        close(&rules.rows[3], &[(2, 0.5), (4, 0.5)]);
        assert!(rules.rows[4].is_empty());
    }
}
