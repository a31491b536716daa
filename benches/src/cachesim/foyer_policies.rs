//! Replays a trace against foyer's in-memory cache (`foyer::Cache`, the memory tier the edge uses) with each
//! eviction policy foyer 0.22 offers, weighted by object size.
//!
//! How the replay maps onto foyer's semantics:
//! - one shard, so the capacity is one exact byte budget (foyer splits the capacity evenly across shards and
//!   evicts per shard; with 8 shards a shard could evict while others have room);
//! - the weighter returns the object's size only: the values are a size, not real bytes, and the edge's own
//!   per-entry overhead (key + 64 bytes) is small next to a segment;
//! - foyer evicts *before* inserting until `usage ≤ capacity − weight`, so usage never exceeds the capacity
//!   unless one object is larger than the whole cache (foyer then stores it anyway; the sizes simulated here are
//!   far above that);
//! - every request is `get`; a miss is followed by `insert` (a cache fill). Entries are dropped at once, so no
//!   handle pins anything.

use foyer::{
    Cache, CacheBuilder, EvictionConfig, FifoConfig, LfuConfig, LruConfig, S3FifoConfig,
    SieveConfig,
};

use super::HitCounts;
use super::trace::Request;

/// foyer's eviction policies, each with foyer's default tuning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoyerPolicy {
    Lru,
    /// w-TinyLFU: a window LRU in front of segmented LRU, admission by a count-min-sketch frequency.
    Lfu,
    S3Fifo,
    Fifo,
    Sieve,
}

impl FoyerPolicy {
    pub const ALL: [FoyerPolicy; 5] = [
        FoyerPolicy::Lru,
        FoyerPolicy::Lfu,
        FoyerPolicy::S3Fifo,
        FoyerPolicy::Fifo,
        FoyerPolicy::Sieve,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FoyerPolicy::Lru => "foyer-lru",
            FoyerPolicy::Lfu => "foyer-w-tinylfu",
            FoyerPolicy::S3Fifo => "foyer-s3fifo",
            FoyerPolicy::Fifo => "foyer-fifo",
            FoyerPolicy::Sieve => "foyer-sieve",
        }
    }

    /// The name of the `EvictionConfig` variant, as the edge's configuration would spell it.
    pub fn config_name(self) -> &'static str {
        match self {
            FoyerPolicy::Lru => "Lru",
            FoyerPolicy::Lfu => "Lfu",
            FoyerPolicy::S3Fifo => "S3Fifo",
            FoyerPolicy::Fifo => "Fifo",
            FoyerPolicy::Sieve => "Sieve",
        }
    }

    pub fn eviction_config(self) -> EvictionConfig {
        match self {
            FoyerPolicy::Lru => LruConfig::default().into(),
            FoyerPolicy::Lfu => LfuConfig::default().into(),
            FoyerPolicy::S3Fifo => S3FifoConfig::default().into(),
            FoyerPolicy::Fifo => FifoConfig::default().into(),
            FoyerPolicy::Sieve => SieveConfig.into(),
        }
    }
}

/// The cached value: only the object's size, so the replay allocates no object bytes.
struct ObjectSize(u32);

/// Replays the trace against a one-shard foyer cache of `capacity` bytes using `policy`.
pub fn replay(policy: FoyerPolicy, trace: &[Request], capacity: u64) -> HitCounts {
    let cache: Cache<u64, ObjectSize> = CacheBuilder::new(capacity as usize)
        .with_shards(1)
        .with_eviction_config(policy.eviction_config())
        .with_weighter(|_key: &u64, value: &ObjectSize| value.0 as usize)
        .build();
    let mut counts = HitCounts::default();
    for r in trace {
        let hit = cache.get(&r.key).is_some();
        if !hit {
            cache.insert(r.key, ObjectSize(r.size));
        }
        counts.record(r.size, hit);
    }
    debug_assert!(cache.usage() <= cache.capacity());
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_in_bytes_and_every_policy_replays() {
        // Three 4-byte objects, then a, b again: a 10-byte cache cannot hold all three.
        let trace: Vec<Request> = [1, 2, 3, 1, 2, 1, 2]
            .iter()
            .map(|&key| Request { key, size: 4 })
            .collect();
        for policy in FoyerPolicy::ALL {
            let small = replay(policy, &trace, 10);
            let large = replay(policy, &trace, 12);
            assert_eq!(large.hits, 4, "{}: everything fits", policy.name());
            assert!(small.hits < large.hits, "{}: {small:?}", policy.name());
            assert_eq!(small.bytes, 28);
        }
    }
}
