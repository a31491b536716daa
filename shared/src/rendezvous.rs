//! Rendezvous (highest-random-weight) hashing: ranks a set of nodes for a key so that every key has a stable
//! preferred node, keys spread over nodes in proportion to their weights, and removing a node moves only the
//! keys that preferred it (Thaler and Ravishankar's HRW, with the weighted score `-w / ln(u)` of Schindelhauer
//! and Schomaker), plain or with bounded loads. Pure; the control plane orders a title's edges with it, so a
//! title's viewers meet the same edge's cache, and edges order their parents for a cache key.

use twox_hash::XxHash3_64;

/// A node's seed for `score`: computed once per node, not per key.
pub fn node_seed(node_id: &str) -> u64 {
    XxHash3_64::oneshot(node_id.as_bytes())
}

/// The node's score for `key`; the highest score wins. `weight` must be positive.
pub fn score(seed: u64, weight: f64, key: &str) -> f64 {
    let hash = XxHash3_64::oneshot_with_seed(seed, key.as_bytes());
    // The top 53 bits as a uniform number strictly inside (0, 1).
    let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -weight / unit.ln()
}

/// The indices of `nodes` (`(seed, weight)`) from most to least preferred for `key`; ties keep index order.
pub fn rank(key: &str, nodes: &[(u64, f64)]) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, &(seed, weight))| (score(seed, weight, key), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// A node's load for [`rank_bounded`]: what it carries now and what it can carry (any unit, the same for all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub current: f64,
    /// Positive; nodes of twice the capacity are allowed twice the load.
    pub capacity: f64,
}

/// Rendezvous hashing with bounded loads (Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded
/// Loads", 2018): the order of [`rank`], except that a node whose load, with one more unit, would pass
/// ⌈(1 + `epsilon`) × the mean load per unit of capacity × its capacity⌉ goes after every node that would not.
/// So no node is given work past (1 + ε)× its share while a key keeps its preferred node whenever that node has
/// room, and a key moves only as far down its own order as load requires. `loads` is parallel to `nodes`;
/// some node always has room (the bounds sum to more than the load), so the first index is never overloaded.
pub fn rank_bounded(key: &str, nodes: &[(u64, f64)], loads: &[Load], epsilon: f64) -> Vec<usize> {
    debug_assert_eq!(nodes.len(), loads.len());
    let total_load: f64 = loads.iter().map(|l| l.current.max(0.0)).sum();
    let total_capacity: f64 = loads
        .iter()
        .map(|l| l.capacity.max(f64::MIN_POSITIVE))
        .sum();
    let has_room = |l: &Load| {
        let share = l.capacity.max(f64::MIN_POSITIVE) / total_capacity;
        let bound = ((1.0 + epsilon.max(0.0)) * (total_load + 1.0) * share).ceil();
        l.current.max(0.0) + 1.0 <= bound
    };
    let (mut ranked, full): (Vec<usize>, Vec<usize>) = rank(key, nodes)
        .into_iter()
        .partition(|&i| loads.get(i).is_none_or(has_room));
    ranked.extend(full);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[&str], weights: &[f64]) -> Vec<(u64, f64)> {
        ids.iter()
            .zip(weights)
            .map(|(id, w)| (node_seed(id), *w))
            .collect()
    }

    fn first_choices(key_count: usize, nodes: &[(u64, f64)]) -> Vec<usize> {
        (0..key_count)
            .map(|k| rank(&format!("titles/title-{k}/"), nodes)[0])
            .collect()
    }

    #[test]
    fn rankings_are_stable_and_complete() {
        let n = nodes(&["edge-a", "edge-b", "edge-c"], &[1.0, 1.0, 1.0]);
        let once = rank("titles/test-pattern/", &n);
        assert_eq!(once, rank("titles/test-pattern/", &n));
        let mut sorted = once.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
        assert!(rank("anything", &[]).is_empty());
    }

    #[test]
    fn keys_spread_in_proportion_to_weights() {
        let keys = 30_000;
        let equal = first_choices(keys, &nodes(&["a", "b", "c"], &[1.0, 1.0, 1.0]));
        for node in 0..3 {
            let share = equal.iter().filter(|&&c| c == node).count() as f64 / keys as f64;
            assert!((share - 1.0 / 3.0).abs() < 0.02, "node {node}: {share}");
        }
        let weighted = first_choices(keys, &nodes(&["a", "b"], &[3.0, 1.0]));
        let share = weighted.iter().filter(|&&c| c == 0).count() as f64 / keys as f64;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    /// Assigns `keys` keys one after another (each adds one unit to its first choice) and returns the loads.
    fn assign_bounded(keys: usize, n: &[(u64, f64)], capacity: &[f64], epsilon: f64) -> Vec<f64> {
        let mut loads: Vec<Load> = capacity
            .iter()
            .map(|&capacity| Load {
                current: 0.0,
                capacity,
            })
            .collect();
        for k in 0..keys {
            // A Zipf-like skew: key 0 is asked for a third of the time.
            let key = if k % 3 == 0 { 0 } else { k };
            let first = rank_bounded(&format!("title-{key}"), n, &loads, epsilon)[0];
            loads[first].current += 1.0;
        }
        loads.iter().map(|l| l.current).collect()
    }

    #[test]
    fn bounded_ranking_keeps_every_node_under_its_bound_even_for_a_hot_key() {
        let n = nodes(&["a", "b", "c", "d"], &[1.0; 4]);
        for epsilon in [0.0, 0.1, 0.25, 1.0] {
            let loads = assign_bounded(10_000, &n, &[1.0; 4], epsilon);
            let mean = 10_000.0 / 4.0;
            let max = loads.iter().cloned().fold(0.0, f64::max);
            assert!(
                max <= ((1.0 + epsilon) * mean).ceil() + 1.0,
                "ε {epsilon}: {loads:?}"
            );
        }
        // Plain rendezvous puts the hot key's third of all requests on one node, past 1.5× the mean.
        let mut plain = [0.0; 4];
        for k in 0..10_000 {
            let key = if k % 3 == 0 { 0 } else { k };
            plain[rank(&format!("title-{key}"), &n)[0]] += 1.0;
        }
        assert!(plain.iter().any(|&l| l > 1.5 * 2_500.0), "{plain:?}");
        // Capacities weigh the bound (and weights the preference): a node of twice the capacity carries about
        // twice the load.
        let weighted = nodes(&["a", "b", "c"], &[2.0, 1.0, 1.0]);
        let loads = assign_bounded(9_000, &weighted, &[2.0, 1.0, 1.0], 0.25);
        for (load, capacity) in loads.iter().zip([2.0, 1.0, 1.0]) {
            assert!(
                *load <= (1.25 * 9_000.0 * capacity / 4.0_f64).ceil() + 1.0,
                "{loads:?}"
            );
        }
        assert!(loads[0] > 1.4 * loads[1].max(loads[2]), "{loads:?}");
    }

    #[test]
    fn bounded_ranking_is_plain_rendezvous_while_there_is_room() {
        let n = nodes(&["a", "b", "c"], &[1.0; 3]);
        let idle = [Load {
            current: 0.0,
            capacity: 1.0,
        }; 3];
        for k in 0..1000 {
            let key = format!("title-{k}");
            assert_eq!(rank_bounded(&key, &n, &idle, 0.25), rank(&key, &n));
        }
        // The preferred node full: it goes last, the rest keep their order; a full ranking either way.
        let key = "title-7";
        let plain = rank(key, &n);
        let mut loads = idle;
        loads[plain[0]].current = 100.0;
        assert_eq!(
            rank_bounded(key, &n, &loads, 0.25),
            [plain[1], plain[2], plain[0]]
        );
        assert!(rank_bounded(key, &[], &[], 0.25).is_empty());
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let all = nodes(&["a", "b", "c", "d"], &[1.0; 4]);
        let without_c: Vec<(u64, f64)> = vec![all[0], all[1], all[3]];
        let before = first_choices(10_000, &all);
        let after = first_choices(10_000, &without_c);
        let index_in_all = |i: usize| [0, 1, 3][i];
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(index_in_all(*a), *b, "a key not on the removed node moved");
            }
        }
    }
}
