//! Rendezvous (highest-random-weight) hashing: ranks a set of nodes for a key so that every key has a stable
//! preferred node, keys spread over nodes in proportion to their weights, and removing a node moves only the
//! keys that preferred it (Thaler and Ravishankar's HRW, with the weighted score `-w / ln(u)` of Schindelhauer
//! and Schomaker). Pure; the control plane orders a title's edges with it, so a title's viewers meet the same
//! edge's cache.

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
