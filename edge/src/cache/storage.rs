//! The cache's storage behind a narrow trait (look up metadata, read a slice, insert, update metadata, remove)
//! so the engine can be swapped; [`FoyerStorage`] is the engine: one foyer hybrid cache, a memory tier weighed
//! in bytes over a disk tier that survives restarts.
//!
//! foyer pitfalls handled here: the memory tier counts entries unless a weighter is set (we weigh key + value
//! bytes); an entry larger than the disk block is dropped silently (the block size is derived from the slice
//! size, see `config::slice_block_bytes`); entries are written to disk on insertion so that a restart finds
//! them, and `close()` flushes the rest.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, PsyncIoEngineConfig, RecoverMode, S3FifoConfig, Source,
};

use super::key::CacheKey;
use super::meta::ObjectMeta;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which tier answered a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
}

impl Tier {
    pub fn label(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }
}

/// The storage the pipeline needs. Reads that fail (I/O errors) are misses: the object is fetched again.
pub trait CacheStorage: Send + Sync + 'static {
    fn lookup_meta<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Option<(Arc<ObjectMeta>, Tier)>>;
    fn read_slice<'a>(
        &'a self,
        key: &'a CacheKey,
        generation: u64,
        index: u64,
    ) -> BoxFuture<'a, Option<(Bytes, Tier)>>;
    /// Inserts or replaces (updates) the metadata record.
    fn insert_meta(&self, key: &CacheKey, meta: &Arc<ObjectMeta>);
    fn insert_slice(&self, key: &CacheKey, generation: u64, index: u64, data: Bytes);
    /// Whether slice `index` of version `generation` is held, without reading it (may rarely say yes for a slice
    /// that a read then misses).
    fn contains_slice(&self, key: &CacheKey, generation: u64, index: u64) -> bool;
    /// Removes the metadata record: its slices become unreachable and age out.
    fn remove(&self, key: &CacheKey);
    /// Bytes held by the memory tier.
    fn memory_usage(&self) -> u64;
    /// Waits for pending writes and closes; entries still in memory are written to disk.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// The foyer hybrid cache, with the metadata records most used also kept decoded: a hit then costs no parsing
/// and no allocation for its metadata.
pub struct FoyerStorage {
    cache: HybridCache<String, Bytes>,
    decoded: foyer::Cache<String, Arc<ObjectMeta>>,
}

/// Decoded metadata records kept in memory (about 1 KiB each).
const DECODED_METAS: usize = 65_536;

/// Sizes of the tiers, and where foyer's own metrics (`foyer_memory_*`, `foyer_storage_*`: entries, usage,
/// evictions, disk I/O) are registered.
pub struct StorageSizes {
    pub registry: prometheus::Registry,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub block_bytes: u64,
}

impl FoyerStorage {
    /// Opens (and recovers) the cache. `disk_bytes == 0` keeps everything in memory.
    pub async fn open(dir: &Path, sizes: StorageSizes) -> anyhow::Result<FoyerStorage> {
        let builder = HybridCacheBuilder::new()
            .with_name("edge")
            .with_metrics_registry(Box::new(
                mixtrics::registry::prometheus_0_14::PrometheusMetricsRegistry::new(
                    sizes.registry.clone(),
                ),
            ))
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .with_flush_on_close(true)
            .memory(sizes.memory_bytes as usize)
            // S3-FIFO: the best byte hit ratio of foyer's policies on a VOD trace (`cargo run -p benches
            // --release --bin cachesim`: +4.6 to +10.5 points over LRU at 1-20 % of the unique bytes).
            .with_eviction_config(S3FifoConfig::default())
            .with_weighter(|key: &String, value: &Bytes| key.len() + value.len() + 64);
        let cache = if sizes.disk_bytes == 0 {
            builder.storage().build().await?
        } else {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the cache folder {} (`cache.disk_dir`): {e}",
                    dir.display()
                )
            })?;
            let device = FsDeviceBuilder::new(dir)
                .with_capacity(sizes.disk_bytes as usize)
                .build()?;
            builder
                .storage()
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(
                    BlockEngineConfig::new(device).with_block_size(sizes.block_bytes as usize),
                )
                .with_recover_mode(RecoverMode::Quiet)
                .build()
                .await?
        };
        let decoded = foyer::CacheBuilder::new(DECODED_METAS).build();
        Ok(FoyerStorage { cache, decoded })
    }

    async fn get(&self, key: String) -> Option<(Bytes, Tier)> {
        match self.cache.get(&key).await {
            Ok(Some(entry)) => {
                let tier = if entry.source() == Source::Disk {
                    Tier::Disk
                } else {
                    Tier::Memory
                };
                Some((entry.value().clone(), tier))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "cache read failed; treated as a miss");
                None
            }
        }
    }
}

impl CacheStorage for FoyerStorage {
    fn lookup_meta<'a>(
        &'a self,
        key: &'a CacheKey,
    ) -> BoxFuture<'a, Option<(Arc<ObjectMeta>, Tier)>> {
        Box::pin(async move {
            let meta_key = key.meta_key();
            if let Some(entry) = self.decoded.get(&meta_key) {
                // Keep the hybrid cache's own recency and tier statistics in step.
                if let Some((_, tier)) = self.get(meta_key).await {
                    return Some((Arc::clone(entry.value()), tier));
                }
                self.decoded.remove(&key.meta_key());
                return None;
            }
            let (bytes, tier) = self.get(meta_key.clone()).await?;
            let meta = Arc::new(ObjectMeta::decode(&bytes)?);
            self.decoded.insert(meta_key, Arc::clone(&meta));
            Some((meta, tier))
        })
    }

    fn read_slice<'a>(
        &'a self,
        key: &'a CacheKey,
        generation: u64,
        index: u64,
    ) -> BoxFuture<'a, Option<(Bytes, Tier)>> {
        Box::pin(self.get(key.slice_key(generation, index)))
    }

    fn insert_meta(&self, key: &CacheKey, meta: &Arc<ObjectMeta>) {
        let meta_key = key.meta_key();
        self.decoded.insert(meta_key.clone(), Arc::clone(meta));
        self.cache.insert(meta_key, meta.encode());
    }

    fn insert_slice(&self, key: &CacheKey, generation: u64, index: u64, data: Bytes) {
        self.cache.insert(key.slice_key(generation, index), data);
    }

    fn contains_slice(&self, key: &CacheKey, generation: u64, index: u64) -> bool {
        self.cache.contains(&key.slice_key(generation, index))
    }

    fn remove(&self, key: &CacheKey) {
        let meta_key = key.meta_key();
        self.decoded.remove(&meta_key);
        self.cache.remove(&meta_key);
    }

    fn memory_usage(&self) -> u64 {
        self.cache.memory().usage() as u64
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Err(e) = self.cache.close().await {
                tracing::warn!(error = %e, "closing the cache failed");
            }
        })
    }
}
