//! The two yardsticks foyer's policies are compared with: a plain byte-weighted LRU, and Belady's OPT for
//! variable sizes (evict what is next used farthest in the future). Both are exact, single-threaded and simple
//! enough to check by hand.

use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::HitCounts;
use super::trace::{Request, mix64};

/// Hashes the u64 object keys with one strong mix instead of SipHash: the keys are not attacker-chosen, and the
/// replays spend most of their time in map lookups.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        mix64(self.0)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) ^ u64::from(b) ^ (self.0 >> 56);
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 ^= key;
    }
}

pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

const NIL: usize = usize::MAX;

struct Node {
    key: u64,
    size: u64,
    /// Towards the most recently used end.
    newer: usize,
    /// Towards the least recently used end.
    older: usize,
}

/// LRU by bytes: an object larger than the whole cache is not stored; otherwise the least recently used objects
/// are evicted until the new one fits.
pub struct ByteLru {
    capacity: u64,
    used: u64,
    index: KeyMap<usize>,
    nodes: Vec<Node>,
    free: Vec<usize>,
    newest: usize,
    oldest: usize,
}

impl ByteLru {
    pub fn new(capacity: u64) -> Self {
        ByteLru {
            capacity,
            used: 0,
            index: KeyMap::default(),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    /// Serves one request; true on a hit. A miss stores the object.
    pub fn access(&mut self, key: u64, size: u64) -> bool {
        if let Some(&node) = self.index.get(&key) {
            self.unlink(node);
            self.push_newest(node);
            return true;
        }
        if size > self.capacity {
            return false;
        }
        while self.used + size > self.capacity {
            self.evict_oldest();
        }
        let node = Node {
            key,
            size,
            newer: NIL,
            older: NIL,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.nodes[slot] = node;
                slot
            }
            None => {
                self.nodes.push(node);
                self.nodes.len() - 1
            }
        };
        self.push_newest(slot);
        self.index.insert(key, slot);
        self.used += size;
        false
    }

    #[cfg(test)]
    pub fn used(&self) -> u64 {
        self.used
    }

    fn evict_oldest(&mut self) {
        let node = self.oldest;
        debug_assert_ne!(node, NIL, "used > 0 implies a node");
        self.unlink(node);
        self.index.remove(&self.nodes[node].key);
        self.used -= self.nodes[node].size;
        self.free.push(node);
    }

    fn unlink(&mut self, node: usize) {
        let (newer, older) = (self.nodes[node].newer, self.nodes[node].older);
        match newer {
            NIL => self.newest = older,
            n => self.nodes[n].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.nodes[o].newer = newer,
        }
    }

    fn push_newest(&mut self, node: usize) {
        self.nodes[node].newer = NIL;
        self.nodes[node].older = self.newest;
        match self.newest {
            NIL => self.oldest = node,
            n => self.nodes[n].newer = node,
        }
        self.newest = node;
    }
}

/// Replays the trace against a byte-weighted LRU of `capacity` bytes.
pub fn replay_lru(trace: &[Request], capacity: u64) -> HitCounts {
    let mut lru = ByteLru::new(capacity);
    let mut counts = HitCounts::default();
    for r in trace {
        let hit = lru.access(r.key, u64::from(r.size));
        counts.record(r.size, hit);
    }
    counts
}

/// Marks "never requested again" in [`next_uses`].
pub const NEVER: u32 = u32::MAX;

/// For each request, the index of the next request for the same key ([`NEVER`] if none).
pub fn next_uses(trace: &[Request]) -> Vec<u32> {
    assert!(
        trace.len() < NEVER as usize,
        "trace too long for u32 indices"
    );
    let mut seen: KeyMap<u32> = KeyMap::default();
    let mut next = vec![NEVER; trace.len()];
    for (i, r) in trace.iter().enumerate().rev() {
        if let Some(later) = seen.insert(r.key, i as u32) {
            next[i] = later;
        }
    }
    next
}

/// Belady's OPT, greedy for variable sizes: on a miss the object is admitted and, while the cache is over
/// capacity, the object whose next use is farthest away is evicted (which may be the new one: then it was not
/// worth admitting). An object never requested again is not admitted, and is dropped after its last hit. With
/// equal sizes this is optimal; with variable sizes exact OPT is NP-hard and this greedy is the usual
/// approximation of the upper bound (it can be beaten on contrived traces, rarely on real ones).
pub fn replay_belady(trace: &[Request], next_use: &[u32], capacity: u64) -> HitCounts {
    assert_eq!(trace.len(), next_use.len());
    // Cached objects: key → (index of its next request, size).
    let mut cached: KeyMap<(u32, u64)> = KeyMap::default();
    // Next-use indices of cached objects, farthest first. An index names its request, hence the key; entries
    // left behind when an object's next use moves on are skipped when popped (they are all in the past, so they
    // sink below every live entry).
    let mut farthest: BinaryHeap<u32> = BinaryHeap::new();
    let mut used = 0u64;
    let mut counts = HitCounts::default();
    for (i, r) in trace.iter().enumerate() {
        let (size, next) = (u64::from(r.size), next_use[i]);
        if let Some(entry) = cached.get_mut(&r.key) {
            counts.record(r.size, true);
            if next == NEVER {
                cached.remove(&r.key);
                used -= size;
            } else {
                entry.0 = next;
                farthest.push(next);
            }
            continue;
        }
        counts.record(r.size, false);
        if next == NEVER || size > capacity {
            continue;
        }
        cached.insert(r.key, (next, size));
        farthest.push(next);
        used += size;
        while used > capacity {
            let Some(index) = farthest.pop() else {
                unreachable!("over capacity with nothing cached");
            };
            let key = trace[index as usize].key;
            if let Some(&(live, size)) = cached.get(&key)
                && live == index
            {
                cached.remove(&key);
                used -= size;
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::SplitMix64;

    fn trace(items: &[(u64, u32)]) -> Vec<Request> {
        items
            .iter()
            .map(|&(key, size)| Request { key, size })
            .collect()
    }

    // a b a c b a with 4-byte objects in a 10-byte cache.
    const ABACBA: [(u64, u32); 6] = [(1, 4), (2, 4), (1, 4), (3, 4), (2, 4), (1, 4)];

    #[test]
    fn lru_by_hand() {
        // a miss, b miss, a hit, c miss (evicts b), b miss (evicts a), a miss (evicts c).
        let counts = replay_lru(&trace(&ABACBA), 10);
        assert_eq!(counts.hits, 1);
        assert_eq!(counts.hit_bytes, 4);
        assert_eq!(counts.bytes, 24);
        assert_eq!(counts.requests, 6);
    }

    #[test]
    fn lru_evicts_until_the_new_object_fits_and_skips_oversized_ones() {
        let mut lru = ByteLru::new(10);
        assert!(!lru.access(1, 3));
        assert!(!lru.access(2, 3));
        assert!(!lru.access(3, 3));
        assert!(lru.access(1, 3)); // order now 2, 3, 1 (oldest first)
        assert!(!lru.access(4, 7)); // evicts 2 and 3
        assert_eq!(lru.used(), 10);
        assert!(lru.access(1, 3));
        assert!(!lru.access(2, 3));
        assert!(!lru.access(5, 11)); // larger than the cache: not stored, nothing evicted
        assert_eq!(lru.used(), 6);
        assert!(lru.access(1, 3) && lru.access(2, 3));
    }

    #[test]
    fn next_uses_by_hand() {
        assert_eq!(next_uses(&trace(&ABACBA)), [2, 4, 5, NEVER, NEVER, NEVER]);
    }

    #[test]
    fn belady_by_hand() {
        // a miss, b miss, a hit, c miss (never used again: not admitted), b hit, a hit.
        let t = trace(&ABACBA);
        let counts = replay_belady(&t, &next_uses(&t), 10);
        assert_eq!((counts.hits, counts.hit_bytes), (3, 12));
    }

    #[test]
    fn belady_keeps_what_is_needed_soonest_whatever_its_size() {
        // big(6) small(3) small2(3) in a 9-byte cache; then small, big, small2.
        // On small2's miss the cache holds big+small (9): the farthest next use is small2's own (index 5), so it is
        // not admitted; then small and big hit, small2 misses again.
        let t = trace(&[(1, 6), (2, 3), (3, 3), (2, 3), (1, 6), (3, 3)]);
        let counts = replay_belady(&t, &next_uses(&t), 9);
        assert_eq!((counts.hits, counts.hit_bytes), (2, 9));
        // A bigger cache holds everything: only the three compulsory misses.
        assert_eq!(replay_belady(&t, &next_uses(&t), 12).hits, 3);
    }

    #[test]
    fn belady_never_loses_to_lru_with_equal_sizes() {
        let mut rng = SplitMix64::new(11);
        for capacity in [1, 3, 8, 20] {
            let t: Vec<Request> = (0..2_000)
                .map(|_| Request {
                    key: rng.below(40),
                    size: 1,
                })
                .collect();
            let opt = replay_belady(&t, &next_uses(&t), capacity);
            let lru = replay_lru(&t, capacity);
            assert!(
                opt.hits >= lru.hits,
                "capacity {capacity}: {opt:?} < {lru:?}"
            );
        }
    }
}
