//! Dense linear item-item models, each a matrix B over the `max_items` most popular titles (a 100,000-title
//! catalogue never makes a 100,000² matrix; the other titles get no score here and fall back to popularity or
//! to the sparse models), solved in closed form by a Cholesky factorisation:
//!
//! - EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", 2019): the B that best rebuilds
//!   the user×item matrix X from itself with a zero diagonal, under an L2 penalty λ. With G = XᵀX + λI and
//!   P = G⁻¹, B = −P / diag(P) column by column, diag(B) = 0. A user's scores are x_u B.
//! - Linear transitions (SLIT, from Choi et al., "Session-aware Linear Item-Item Models for Session-based
//!   Recommendation", 2021): the B that best predicts a sequence's next titles T from its latest titles S,
//!   B = (SᵀS + λI)⁻¹ SᵀT, over every cut of every user's sequence. The past and the future are both weighted
//!   `decay^distance` from the cut. Unlike counting what follows what, the least squares explain away: a title
//!   that follows everything because it is popular, or because it follows another title of the past, gets no
//!   credit twice.

use nalgebra::DMatrix;

use super::index::Step;

pub(super) struct Linear {
    /// The modelled titles (catalog indices), most popular first: slot `s` is `items[s]`.
    items: Vec<u32>,
    /// Per catalog title, its slot, if modelled.
    slots: Vec<Option<u32>>,
    /// B, row-major: `weights[s * n + t]` is B[s][t], how much watching slot `s` adds to slot `t`.
    weights: Vec<f32>,
}

/// The titles a dense model covers: the `max_items` most popular of those watched at all (`popularity_ranks`:
/// 0 = most popular), and per catalog title its slot among them.
fn modelled(
    popularity: &[f32],
    popularity_ranks: &[u32],
    max_items: usize,
) -> (Vec<u32>, Vec<Option<u32>>) {
    let mut items: Vec<u32> = (0..popularity.len() as u32)
        .filter(|&item| popularity[item as usize] > 0.0)
        .collect();
    items.sort_unstable_by_key(|&item| popularity_ranks[item as usize]);
    items.truncate(max_items);
    let mut slots = vec![None; popularity.len()];
    for (slot, &item) in items.iter().enumerate() {
        slots[item as usize] = Some(slot as u32);
    }
    (items, slots)
}

/// A row of a sparse input (catalog titles and values) as slots of the modelled titles, others dropped.
fn in_slots(row: &[(u32, f32)], slots: &[Option<u32>], into: &mut Vec<(usize, f64)>) {
    into.clear();
    into.extend(row.iter().filter_map(|&(item, value)| {
        slots[item as usize].map(|slot| (slot as usize, f64::from(value)))
    }));
}

impl Linear {
    /// EASE^R on the user×item matrix (`baskets`: one sparse row per user). `None` when nothing is left to
    /// model or G is not positive definite (λ ≤ 0 with dependent columns).
    pub fn ease(
        baskets: &[Vec<(u32, f32)>],
        popularity: &[f32],
        popularity_ranks: &[u32],
        lambda: f32,
        max_items: usize,
    ) -> Option<Linear> {
        let (items, slots) = modelled(popularity, popularity_ranks, max_items);
        let n = items.len();
        if n == 0 {
            return None;
        }
        // G = XᵀX + λI, in f64: its entries are counts of users, and the inverse needs the precision.
        let mut gram = DMatrix::<f64>::zeros(n, n);
        let mut row = Vec::new();
        for basket in baskets {
            in_slots(basket, &slots, &mut row);
            for &(a, value_a) in &row {
                for &(b, value_b) in &row {
                    gram[(a, b)] += value_a * value_b;
                }
            }
        }
        for slot in 0..n {
            gram[(slot, slot)] += f64::from(lambda);
        }
        let precision = gram.cholesky()?.inverse();
        // B[s][t] = −P[s][t] / P[t][t], B[t][t] = 0. P is symmetric, so row s of P is its column s, which
        // nalgebra stores contiguously.
        let mut weights = vec![0.0f32; n * n];
        for s in 0..n {
            let column = precision.column(s);
            for t in 0..n {
                if s != t {
                    weights[s * n + t] = (-column[t] / precision[(t, t)]) as f32;
                }
            }
        }
        Some(Linear {
            items,
            slots,
            weights,
        })
    }

    /// Linear transitions over the users' `sequences`: at every cut, the past is the last `steps` titles
    /// before it and the future the next `steps` after it, each weighted `strength × decay^distance`, the
    /// distance counted in moments from the cut: 0 for the moment just before it and the moment just after it
    /// (or the same moment, when the cut splits titles of the same second). `None` as for EASE.
    pub fn transitions(
        sequences: &[Vec<Step>],
        popularity: &[f32],
        popularity_ranks: &[u32],
        lambda: f32,
        max_items: usize,
        steps: usize,
        decay: f32,
    ) -> Option<Linear> {
        let (items, slots) = modelled(popularity, popularity_ranks, max_items);
        let n = items.len();
        if n == 0 {
            return None;
        }
        let decay = f64::from(decay);
        let mut past_gram = DMatrix::<f64>::zeros(n, n);
        let mut past_future = DMatrix::<f64>::zeros(n, n);
        let mut sequence: Vec<(usize, f64, u32)> = Vec::new();
        let mut past = Vec::with_capacity(steps);
        let mut future = Vec::with_capacity(steps);
        for user_sequence in sequences {
            sequence.clear();
            sequence.extend(user_sequence.iter().filter_map(|step| {
                slots[step.item as usize]
                    .map(|slot| (slot as usize, f64::from(step.strength), step.moment))
            }));
            // The cut is after position `last`.
            for last in 0..sequence.len().saturating_sub(1) {
                let cut_moment = sequence[last].2;
                past.clear();
                past.extend(sequence[..=last].iter().rev().take(steps).map(
                    |&(slot, value, moment)| {
                        (slot, value * decay.powi((cut_moment - moment) as i32))
                    },
                ));
                future.clear();
                future.extend(sequence[last + 1..].iter().take(steps).map(
                    |&(slot, value, moment)| {
                        let distance = (moment - cut_moment).saturating_sub(1);
                        (slot, value * decay.powi(distance as i32))
                    },
                ));
                for &(a, value_a) in &past {
                    for &(b, value_b) in &past {
                        past_gram[(a, b)] += value_a * value_b;
                    }
                    for &(b, value_b) in &future {
                        past_future[(a, b)] += value_a * value_b;
                    }
                }
            }
        }
        for slot in 0..n {
            past_gram[(slot, slot)] += f64::from(lambda);
        }
        let solved = past_gram.cholesky()?.solve(&past_future);
        let mut weights = vec![0.0f32; n * n];
        for s in 0..n {
            for t in 0..n {
                weights[s * n + t] = solved[(s, t)] as f32;
            }
        }
        Some(Linear {
            items,
            slots,
            weights,
        })
    }

    /// Adds `weight ×` B's row of each modelled source title to `scores` (indexed by catalog title).
    pub fn add_scores(&self, sources: impl IntoIterator<Item = (u32, f32)>, scores: &mut [f32]) {
        let n = self.items.len();
        for (source, weight) in sources {
            let Some(Some(slot)) = self.slots.get(source as usize) else {
                continue;
            };
            let row = &self.weights[*slot as usize * n..(*slot as usize + 1) * n];
            for (&item, &value) in self.items.iter().zip(row) {
                scores[item as usize] += weight * value;
            }
        }
    }

    /// How many titles it covers.
    pub fn modelled(&self) -> usize {
        self.items.len()
    }

    /// Its parts, as `stored` writes them: the modelled titles, each catalog title's slot, B row-major.
    pub fn parts(&self) -> (&[u32], &[Option<u32>], &[f32]) {
        (&self.items, &self.slots, &self.weights)
    }

    /// A model from its parts over a catalog of `catalog_len` titles; refused unless they fit together (every
    /// index in range, B square over the modelled titles, the slots the inverse of the titles).
    pub fn from_parts(
        items: Vec<u32>,
        slots: Vec<Option<u32>>,
        weights: Vec<f32>,
        catalog_len: usize,
    ) -> Result<Linear, String> {
        let n = items.len();
        let fits = slots.len() == catalog_len
            && n.checked_mul(n) == Some(weights.len())
            && items.iter().all(|&item| (item as usize) < catalog_len)
            && items
                .iter()
                .enumerate()
                .all(|(slot, &item)| slots[item as usize] == Some(slot as u32))
            && slots.iter().flatten().all(|&slot| (slot as usize) < n);
        if !fits {
            return Err("a dense model's parts do not fit together".into());
        }
        Ok(Linear {
            items,
            slots,
            weights,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_popular(items: usize) -> (Vec<f32>, Vec<u32>) {
        (vec![1.0; items], (0..items as u32).collect())
    }

    /// Two titles, three users: u0 watched both, u1 only t0, u2 only t1. XᵀX = [[2, 1], [1, 2]];
    /// with λ = 1, G = [[3, 1], [1, 3]], det 8, P = [[3/8, −1/8], [−1/8, 3/8]].
    /// B[0][1] = −P[0][1] / P[1][1] = (1/8) / (3/8) = 1/3, and B[1][0] = 1/3 the same way.
    #[test]
    fn two_titles_match_the_closed_form_by_hand() {
        let baskets = vec![vec![(0, 1.0), (1, 1.0)], vec![(0, 1.0)], vec![(1, 1.0)]];
        let (popularity, ranks) = all_popular(2);
        let ease = Linear::ease(&baskets, &popularity, &ranks, 1.0, 10).expect("positive definite");
        assert_eq!(ease.modelled(), 2);
        let mut scores = vec![0.0; 2];
        ease.add_scores([(0, 1.0)], &mut scores);
        assert!(scores[0].abs() < 1e-7, "{scores:?}");
        assert!((scores[1] - 1.0 / 3.0).abs() < 1e-6, "{scores:?}");
    }

    /// The 4 users × 5 titles of the kNN tests (t4 watched by nobody, so not modelled), λ = 1, checked against
    /// an independent computation: B's defining property. The closed form is the minimiser of
    /// ‖X − XB‖² + λ‖B‖² with diag(B) = 0, whose optimality condition is (G B)[s][t] = G[s][t] for s ≠ t —
    /// off the diagonal, G B equals XᵀX — where G = XᵀX + λI. That is checked here in plain f64 arithmetic.
    #[test]
    fn four_users_satisfy_the_optimality_condition() {
        let baskets = super::super::neighbours::four_users();
        let popularity = vec![3.0, 3.0, 2.0, 2.0, 0.0];
        let ranks = vec![0, 1, 2, 3, 4];
        let lambda = 1.0f64;
        let ease = Linear::ease(&baskets, &popularity, &ranks, lambda as f32, 10)
            .expect("positive definite");
        assert_eq!(ease.modelled(), 4);
        let b = |s: usize, t: usize| {
            let mut scores = vec![0.0f32; 5];
            ease.add_scores([(s as u32, 1.0)], &mut scores);
            assert_eq!(scores[4], 0.0, "t4 is not modelled");
            f64::from(scores[t])
        };
        let mut xtx = [[0.0f64; 4]; 4];
        for basket in &baskets {
            for &(a, _) in basket {
                for &(c, _) in basket {
                    xtx[a as usize][c as usize] += 1.0;
                }
            }
        }
        for (s, gram_row) in xtx.iter().enumerate() {
            assert_eq!(b(s, s), 0.0);
            for (t, &target) in gram_row.iter().enumerate() {
                if s == t {
                    continue;
                }
                let gb: f64 = gram_row
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| (x + if s == k { lambda } else { 0.0 }) * b(k, t))
                    .sum();
                assert!(
                    (gb - target).abs() < 1e-5,
                    "(GB)[{s}][{t}] = {gb}, XᵀX = {target}"
                );
            }
        }
        // And by hand: t0's strongest tie is t1, co-watched by two of t0's three users.
        assert!(b(0, 1) > b(0, 2) && b(0, 1) > b(0, 3));
    }

    #[test]
    fn only_the_most_popular_titles_are_modelled() {
        let baskets = super::super::neighbours::four_users();
        // t2 and t3 are the most popular here (made up), so a cap of 2 models only them.
        let popularity = vec![1.0, 1.0, 5.0, 4.0, 0.0];
        let ranks = vec![2, 3, 0, 1, 4];
        let ease = Linear::ease(&baskets, &popularity, &ranks, 1.0, 2).expect("positive definite");
        assert_eq!(ease.modelled(), 2);
        let mut scores = vec![0.0; 5];
        ease.add_scores([(0, 1.0), (1, 1.0)], &mut scores);
        assert_eq!(
            scores, [0.0; 5],
            "t0 and t1 are not modelled: they add nothing"
        );
        ease.add_scores([(2, 1.0)], &mut scores);
        // t2 and t3 co-watched by u2 only: XᵀX = [[2, 1], [1, 2]] over (t2, t3) → B = 1/3 as above.
        assert!((scores[3] - 1.0 / 3.0).abs() < 1e-6, "{scores:?}");
        assert_eq!((scores[0], scores[1], scores[2]), (0.0, 0.0, 0.0));
    }

    fn row(model: &Linear, source: u32, items: usize) -> Vec<f32> {
        let mut scores = vec![0.0; items];
        model.add_scores([(source, 1.0)], &mut scores);
        scores
    }

    fn close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len());
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{actual:?} vs {expected:?}");
        }
    }

    /// One sequence t0 t1 t2 (distinct times), 2 steps each side, decay ½, λ = 1.
    /// Cut after t0: past {t0: 1}, future {t1: 1, t2: ½}. Cut after t1: past {t1: 1, t0: ½}, future {t2: 1}.
    /// SᵀS = [[1 + ¼, ½, 0], [½, 1, 0], [0, 0, 0]]; SᵀT: t0→t1 1, t0→t2 ½ + ½ = 1, t1→t2 1.
    /// G = SᵀS + I: the t0,t1 block [[9/4, ½], [½, 2]] has determinant 17/4 and inverse [[2, −½], [−½, 9/4]] / (17/4).
    /// B = G⁻¹ SᵀT: row t0 = (2 (0, 1, 1) − ½ (0, 0, 1)) / 4.25 = (0, 2, 1.5) / 4.25;
    /// row t1 = (−½ (0, 1, 1) + 9/4 (0, 0, 1)) / 4.25 = (0, −0.5, 1.75) / 4.25; row t2 = 0 (never in a past).
    #[test]
    fn transitions_match_the_least_squares_solution_by_hand() {
        let sequence: Vec<Step> = (0..3)
            .map(|item| Step {
                item,
                strength: 1.0,
                moment: item,
            })
            .collect();
        let (popularity, ranks) = all_popular(3);
        let model = Linear::transitions(&[sequence], &popularity, &ranks, 1.0, 10, 2, 0.5)
            .expect("solvable");
        close(&row(&model, 0, 3), &[0.0, 2.0 / 4.25, 1.5 / 4.25]);
        close(&row(&model, 1, 3), &[0.0, -0.5 / 4.25, 1.75 / 4.25]);
        close(&row(&model, 2, 3), &[0.0, 0.0, 0.0]);
    }

    /// t0 and t1 in the same second, t2 later; 2 steps, decay ½, λ = 1. The same moment is distance 0 on
    /// both sides of a cut that splits it.
    /// Cut after t0: past {t0: 1}, future {t1: 1, t2: 1}. Cut after t1: past {t1: 1, t0: 1}, future {t2: 1}.
    /// G = [[2 + 1, 1], [1, 1 + 1]] on t0,t1 (inverse [[2, −1], [−1, 3]] / 5); SᵀT: t0→t1 1, t0→t2 2, t1→t2 1.
    /// Row t0 = (2 (0, 1, 2) − (0, 0, 1)) / 5 = (0, 0.4, 0.6); row t1 = (−(0, 1, 2) + 3 (0, 0, 1)) / 5 = (0, −0.2, 0.2).
    #[test]
    fn transitions_read_a_moment_as_unordered() {
        let step = |item, moment| Step {
            item,
            strength: 1.0,
            moment,
        };
        let (popularity, ranks) = all_popular(3);
        let sequence = vec![step(0, 0), step(1, 0), step(2, 1)];
        let model = Linear::transitions(&[sequence], &popularity, &ranks, 1.0, 10, 2, 0.5)
            .expect("solvable");
        close(&row(&model, 0, 3), &[0.0, 0.4, 0.6]);
        close(&row(&model, 1, 3), &[0.0, -0.2, 0.2]);
    }

    #[test]
    fn transitions_cover_only_the_most_popular_titles() {
        // t1 is not modelled (a cap of 2, t1 the least popular): the sequence reads t0 t2, t2 still two moments
        // after t0. Cut after t0: past {t0: 1}, future {t2: ½}: G = [[2, 0], [0, 1]] over (t0, t2), SᵀT t0→t2
        // ½, so B[t0][t2] = ¼.
        let sequence: Vec<Step> = (0..3)
            .map(|item| Step {
                item,
                strength: 1.0,
                moment: item,
            })
            .collect();
        let popularity = vec![3.0, 1.0, 2.0];
        let ranks = vec![0, 2, 1];
        let model = Linear::transitions(&[sequence], &popularity, &ranks, 1.0, 2, 2, 0.5)
            .expect("solvable");
        assert_eq!(model.modelled(), 2);
        close(&row(&model, 0, 3), &[0.0, 0.0, 0.25]);
        close(&row(&model, 1, 3), &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn nothing_to_model_or_a_singular_gram_gives_none() {
        let (popularity, ranks) = all_popular(2);
        assert!(Linear::ease(&[], &[0.0, 0.0], &ranks, 1.0, 10).is_none());
        assert!(Linear::ease(&[vec![(0, 1.0)]], &popularity, &ranks, 1.0, 0).is_none());
        // Two identical columns and λ = 0: XᵀX = [[1, 1], [1, 1]] is singular.
        assert!(Linear::ease(&[vec![(0, 1.0), (1, 1.0)]], &popularity, &ranks, 0.0, 10).is_none());
        assert!(Linear::transitions(&[], &[0.0, 0.0], &ranks, 1.0, 10, 2, 0.5).is_none());
    }
}
