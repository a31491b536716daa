//! The cache's storage behind a narrow trait (look up metadata, read a slice, insert, update metadata, remove)
//! so the engine can be swapped; [`FoyerStorage`] is the engine: one foyer hybrid cache, a memory tier weighed
//! in bytes over a disk tier that survives restarts.
//!
//! foyer pitfalls handled here: the memory tier counts entries unless a weighter is set (we weigh key + value
//! bytes); an entry larger than the disk block is dropped silently (the block size is derived from the slice
//! size, see `config::slice_block_bytes`); entries are written to disk on insertion so that a restart finds
//! them, and `close()` flushes the rest.
//!
//! The disk tier's failures: foyer creates its files sparse, so a filesystem that fills up later fails its
//! writes with ENOSPC; after a failed flush its flusher stops and 0.22.6 may panic (`assertion failed: inserted`)
//! and poison its locks. So the files are allocated in full at start (a `disk_bytes` the filesystem cannot hold
//! refuses the start), and any error foyer logs, any panic in its code and any failed read turn the disk tier
//! off until a restart: the cache then runs on its memory tier alone, and says so in its log and metrics
//! (`edge_cache_disk_tier_up`, `edge_cache_disk_errors_total`). A damaged entry on disk fails foyer's checksum
//! and reads as a miss; a wrong-length slice is refetched by the engine.
//!
//! Eviction by value: media slices are held at [`VALUE_TARGET_SIXTEENTHS`]/16 of the memory tier's size by
//! evicting, of [`VALUE_SAMPLES`] of them drawn at random, the one viewers are least likely to ask for soon (the
//! rate a [`Valuer`] gives: `edge::viewers`, the model `cachesim`'s video-value policy replays). foyer's S3-FIFO
//! evicts when what the viewers' model cannot rate (playlists, API answers, objects no manifest lists) fills the
//! tier. The tier is then one shard of [`VALUE_CAPACITY_SIXTEENTHS`]/16 of `memory_bytes`: with eight shards,
//! one that overflows evicts by itself while the tier as a whole has room (5 % of the highly rated slices of
//! `the_lowest_rated_slices_leave_the_memory_tier_first` went so); one shard filled to the byte kept 14 MiB more
//! resident than eight that average below full (`tests/memory.rs`: 327 against 313 MiB), hence the sixteenth
//! left free. A slice evicted by value leaves the memory tier only: the disk tier keeps it.
//!
//! foyer 0.22.6 also drops, without an error, an entry that does not fit the tail of its flush buffer while a
//! write is in flight (foyer issue #1334; 18 of 80 slices in an 8-client burst here): the entry then lives in
//! memory only, and is fetched again once evicted. Until a release fixes it, [`WriteCheck`] looks for every
//! written entry on disk once its flush is over and writes it again, alone, from the memory tier.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, PsyncIoEngineConfig, RecoverMode, S3FifoConfig, Source,
};
use futures::FutureExt;

use super::key::CacheKey;
use super::meta::ObjectMeta;
use crate::viewers::Tag;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What eviction by value asks of the edge's knowledge of its viewers.
pub trait Valuer: Send + Sync + 'static {
    /// The tag of slice `index` of the object at `key` when it is a media segment the viewers' model knows.
    fn tag(&self, key: &CacheKey, index: u64) -> Option<crate::viewers::Tag>;
    /// The estimated request rate of each tagged object (one reading of the model for all).
    fn rates(&self, tags: &[crate::viewers::Tag]) -> Vec<f64>;
}

/// Slices drawn per eviction by value.
pub const VALUE_SAMPLES: usize = 32;
/// Eviction by value keeps the memory tier at this many sixteenths of `memory_bytes`…
pub const VALUE_TARGET_SIXTEENTHS: u64 = 14;
/// …in a tier (one foyer shard) of this many.
pub const VALUE_CAPACITY_SIXTEENTHS: u64 = 15;
/// Evictions by value per insertion, at most (an insertion makes room for itself and a little more).
const VALUE_EVICTIONS_PER_INSERT: usize = 8;

/// The media slices in the memory tier that eviction by value may choose from.
#[derive(Default)]
struct Resident {
    entries: Vec<(String, crate::viewers::Tag)>,
    slots: std::collections::HashMap<String, usize>,
    rng: u64,
}

impl Resident {
    fn insert(&mut self, key: String, tag: crate::viewers::Tag) {
        match self.slots.get(&key) {
            Some(&slot) => self.entries[slot].1 = tag,
            None => {
                self.slots.insert(key.clone(), self.entries.len());
                self.entries.push((key, tag));
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        let slot = self.slots.remove(key)?;
        let (key, _) = self.entries.swap_remove(slot);
        if let Some((moved, _)) = self.entries.get(slot) {
            self.slots.insert(moved.clone(), slot);
        }
        Some(key)
    }

    /// Up to [`VALUE_SAMPLES`] slots drawn at random (all of them when there are fewer).
    fn sample(&mut self) -> Vec<usize> {
        let n = self.entries.len();
        if n <= VALUE_SAMPLES {
            return (0..n).collect();
        }
        (0..VALUE_SAMPLES)
            .map(|_| {
                // splitmix64: uniform enough for sampling, no lock or thread-local needed.
                self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = self.rng;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                ((z ^ (z >> 31)) % n as u64) as usize
            })
            .collect()
    }
}

/// Eviction by value (see the module's notes).
struct ValueEviction {
    valuer: OnceLock<Arc<dyn Valuer>>,
    resident: Mutex<Resident>,
    target_bytes: u64,
    /// `edge_cache_value_evictions_total` and `_bytes_total`.
    evictions: prometheus::IntCounter,
    /// `edge_cache_value_not_admitted_total`: fetched slices rated below every sampled one, evicted at once.
    not_admitted: prometheus::IntCounter,
    evicted_bytes: prometheus::IntCounter,
    resident_slices: prometheus::IntGauge,
}

impl ValueEviction {
    fn resident(&self) -> MutexGuard<'_, Resident> {
        self.resident.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a slice that entered the memory tier, if the viewers' model can rate it.
    fn entered(
        &self,
        cache: &HybridCache<String, Bytes>,
        key: &CacheKey,
        index: u64,
        slice_key: &str,
    ) -> Option<Tag> {
        let tag = self.valuer.get()?.tag(key, index)?;
        let mut resident = self.resident();
        resident.insert(slice_key.to_string(), tag);
        // foyer may have evicted it already (its leave event then came before this): a slice not held is not
        // listed, so that the list holds only what the tier holds.
        if !cache.memory().contains(slice_key) {
            resident.remove(slice_key);
            self.resident_slices.set(resident.entries.len() as i64);
            return None;
        }
        self.resident_slices.set(resident.entries.len() as i64);
        Some(tag)
    }

    /// Evicts from the memory tier the lowest-rated of sampled slices until it is back at its target. A
    /// `newcomer` (a slice just fetched) rated below every sampled one is the one evicted: it is not admitted,
    /// as the simulator's value policy does not cache such a miss.
    fn make_room(&self, cache: &HybridCache<String, Bytes>, mut newcomer: Option<(&str, Tag)>) {
        let Some(valuer) = self.valuer.get() else {
            return;
        };
        for _ in 0..VALUE_EVICTIONS_PER_INSERT {
            if cache.memory().usage() as u64 <= self.target_bytes {
                return;
            }
            let (victim, refused) = {
                let mut resident = self.resident();
                let slots = resident.sample();
                let mut tags: Vec<_> = slots.iter().map(|&s| resident.entries[s].1).collect();
                tags.extend(newcomer.map(|(_, tag)| tag));
                let mut rates = valuer.rates(&tags);
                let newcomer_rate = newcomer.and_then(|_| rates.pop());
                let lowest = slots.iter().zip(rates).min_by(|a, b| a.1.total_cmp(&b.1));
                let refused = match (newcomer.take(), newcomer_rate, lowest) {
                    (Some((key, _)), Some(own), Some((_, lowest))) if own < lowest => Some(key),
                    _ => None,
                };
                let key = match refused {
                    Some(key) => Some(key.to_string()),
                    None => lowest.map(|(&slot, _)| resident.entries[slot].0.clone()),
                };
                let victim = key.and_then(|key| resident.remove(&key));
                self.resident_slices.set(resident.entries.len() as i64);
                (victim, refused.is_some())
            };
            // Nothing the model rates: foyer's own eviction makes the room.
            let Some(key) = victim else { return };
            if let Some(entry) = cache.memory().remove(&key) {
                let counter = if refused {
                    &self.not_admitted
                } else {
                    &self.evictions
                };
                counter.inc();
                self.evicted_bytes.inc_by(entry.value().len() as u64);
            }
        }
    }
}

/// Tells eviction by value which slices left the memory tier (foyer's own evictions, removals).
struct LeaveListener(Arc<ValueEviction>);

impl foyer::EventListener for LeaveListener {
    type Key = String;
    type Value = Bytes;

    fn on_leave(&self, reason: foyer::Event, key: &String, _value: &Bytes) {
        // A replaced entry is still there (its new value).
        if reason != foyer::Event::Replace {
            let mut resident = self.0.resident();
            if resident.remove(key).is_some() {
                self.0.resident_slices.set(resident.entries.len() as i64);
            }
        }
    }
}

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
    /// Turns eviction by value on, rating slices with `valuer` (storage without it ignores this).
    fn evict_by_value(&self, _valuer: Arc<dyn Valuer>) {}
    /// Waits for pending writes and closes; entries still in memory are written to disk.
    fn close(&self) -> BoxFuture<'_, ()>;
}

/// The foyer hybrid cache, with the metadata records most used also kept decoded: a hit then costs no parsing
/// and no allocation for its metadata.
pub struct FoyerStorage {
    cache: HybridCache<String, Bytes>,
    decoded: foyer::Cache<String, Arc<ObjectMeta>>,
    disk: Arc<DiskTier>,
    written: Arc<WriteCheck>,
    value: Arc<ValueEviction>,
}

/// Entries written to the disk tier and not yet seen there (see the module's notes on foyer issue #1334).
struct WriteCheck {
    /// The keys (their bytes are written again from the memory tier, so this holds no body outside the tiers'
    /// accounting). Bounded: past [`WRITE_CHECK_KEYS`] the oldest go unchecked.
    pending: Mutex<std::collections::VecDeque<String>>,
    /// Wakes the check early when half the bound is pending.
    wake: tokio::sync::Notify,
    /// Held by a check from taking its batch until every key of it is settled: a `settle` that finds nothing
    /// pending has then waited for the background check that took the last batch.
    checking: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    /// `edge_cache_disk_rewrites_total{result}`: `rewritten` (found missing and written again), `lost` (missing
    /// on every try or gone from memory: fetched again when asked for), `unchecked` (past the bound).
    outcomes: prometheus::IntCounterVec,
}

/// Keys awaiting their check; about 100 bytes each.
const WRITE_CHECK_KEYS: usize = 16_384;
/// Writes again of one entry before it is left to memory.
const WRITE_ATTEMPTS: u8 = 4;
/// How often the written keys are checked.
const WRITE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl WriteCheck {
    fn push(&self, key: String) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() >= WRITE_CHECK_KEYS {
            pending.pop_front();
            self.outcomes.with_label_values(&["unchecked"]).inc();
        }
        pending.push_back(key);
        if pending.len() == WRITE_CHECK_KEYS / 2 {
            self.wake.notify_one();
        }
    }

    /// Checks the keys written before now, once their flush is over; returns how many were checked. A missing
    /// entry is written again alone, so that no burst drops it again, and checked again.
    async fn check(&self, cache: &HybridCache<String, Bytes>, disk: &DiskTier) -> usize {
        let _checking = self.checking.lock().await;
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() || !disk.configured || disk.failed.load(Ordering::Relaxed) {
            return 0;
        }
        // Every entry enqueued before this is now on disk, or was dropped.
        cache.storage().wait().await;
        for key in &batch {
            let mut attempts = 0;
            while !cache.storage().may_contains(key) {
                let held = cache.memory().get(key);
                let Some(entry) = held.filter(|_| attempts < WRITE_ATTEMPTS) else {
                    self.outcomes.with_label_values(&["lost"]).inc();
                    break;
                };
                attempts += 1;
                // To the disk tier only, past its admission filter.
                cache
                    .storage_writer(key.clone())
                    .force()
                    .insert(entry.value().clone());
                drop(entry);
                cache.storage().wait().await;
            }
            if attempts > 0 && cache.storage().may_contains(key) {
                self.outcomes.with_label_values(&["rewritten"]).inc();
            }
        }
        batch.len()
    }

    /// Checks written keys until the storage is dropped or closed.
    fn spawn(self: &Arc<Self>, cache: HybridCache<String, Bytes>, disk: &Arc<DiskTier>) {
        let (check, disk) = (Arc::downgrade(self), Arc::downgrade(disk));
        tokio::spawn(async move {
            loop {
                let Some(woken) = check.upgrade() else { return };
                let _ = tokio::time::timeout(WRITE_CHECK_EVERY, woken.wake.notified()).await;
                drop(woken);
                let (Some(check), Some(disk)) = (check.upgrade(), disk.upgrade()) else {
                    return;
                };
                if check.closed.load(Ordering::Relaxed) {
                    return;
                }
                let checked = AssertUnwindSafe(check.check(&cache, &disk))
                    .catch_unwind()
                    .await;
                if checked.is_err() {
                    disk.fail("panic in checking disk writes");
                }
            }
        });
    }
}

/// Whether the disk tier is in use: configured (`disk_bytes` > 0) and not failed. Once it fails, reads and
/// writes go to the memory tier alone until a restart: foyer's disk state after a failed write cannot be trusted.
struct DiskTier {
    configured: bool,
    failed: AtomicBool,
    /// Why it failed, logged once by the next cache operation (the failure is often noticed inside the logging
    /// of foyer's own error event, where logging again is not allowed).
    reason: Mutex<Option<String>>,
    reported: AtomicBool,
    up: prometheus::IntGauge,
    errors: prometheus::IntCounter,
}

impl DiskTier {
    fn fail(&self, why: &str) {
        self.errors.inc();
        if !self.failed.swap(true, Ordering::SeqCst) {
            self.up.set(0);
            *self.reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
        }
    }

    /// Whether reads and writes skip the disk tier: there is none, or it failed (the first caller to see a
    /// failure logs why).
    fn off(&self) -> bool {
        if !self.configured {
            return true;
        }
        if !self.failed.load(Ordering::Relaxed) {
            return false;
        }
        if !self.reported.swap(true, Ordering::SeqCst) {
            let reason = self.reason.lock().unwrap_or_else(|p| p.into_inner()).take();
            tracing::error!(
                error = reason.as_deref().unwrap_or("unknown"),
                "the disk tier failed and is off until a restart; serving from memory and upstream"
            );
        }
        true
    }
}

/// The disk tier of the running process (one per process: foyer's log and panics are process-wide).
static WATCHED_DISK: OnceLock<Mutex<std::sync::Weak<DiskTier>>> = OnceLock::new();

/// Turns the disk tier off when foyer's storage logs an error or panics.
fn watch_foyer(disk: &Arc<DiskTier>) {
    let watched = WATCHED_DISK.get_or_init(|| {
        shared::logging::watch_errors("foyer_storage", fail_watched_disk);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.location().is_some_and(|l| l.file().contains("foyer")) {
                fail_watched_disk(&format!("panic in the cache library: {info}"));
            }
            previous(info);
        }));
        Mutex::new(std::sync::Weak::new())
    });
    *watched.lock().unwrap_or_else(|p| p.into_inner()) = Arc::downgrade(disk);
}

fn fail_watched_disk(why: &str) {
    let watched = WATCHED_DISK.get().and_then(|w| w.lock().ok()?.upgrade());
    if let Some(disk) = watched {
        disk.fail(why);
    }
}

/// foyer's file device names its files `foyer-storage-direct-fs-<partition>`.
const DISK_FILE_PREFIX: &str = "foyer-storage-direct-fs-";

/// Refuses a `disk_bytes` that the filesystem under `dir` cannot hold (what the cache's own files already hold
/// counts as available). Also run by `edge check`.
pub fn check_disk_space(dir: &Path, disk_bytes: u64) -> anyhow::Result<()> {
    if disk_bytes == 0 {
        return Ok(());
    }
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(parent) => probe = parent,
            None => return Ok(()),
        }
    }
    let free = free_bytes(probe).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the free space of `cache.disk_dir` ({}): {e}",
            dir.display()
        )
    })?;
    let held = held_bytes(dir);
    if disk_bytes > free + held {
        anyhow::bail!(
            "`cache.disk_bytes` is {} MiB but the filesystem of `cache.disk_dir` ({}) has {} MiB free{}: lower \
             `cache.disk_bytes` or free some space",
            disk_bytes >> 20,
            dir.display(),
            free >> 20,
            if held > 0 {
                format!(" besides the {} MiB the cache's files hold", held >> 20)
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

fn free_bytes(path: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The cache's files in `dir`.
fn disk_files(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(DISK_FILE_PREFIX)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes the filesystem has given the cache's files.
fn held_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    disk_files(dir)
        .iter()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

/// Allocates the cache's files in full, so that a filesystem filled by others later cannot fail the cache's
/// writes. A filesystem that cannot allocate ahead (no `fallocate`) is used as it is, with a warning.
fn allocate_disk_files(dir: &Path) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd;
    for entry in disk_files(dir) {
        let file = std::fs::OpenOptions::new().write(true).open(entry.path())?;
        let len = file.metadata()?.len();
        // SAFETY: a valid open descriptor; mode 0 allocates without changing the file's size.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
                tracing::warn!(
                    dir = %dir.display(),
                    "the filesystem of `cache.disk_dir` cannot allocate ahead: if it fills up, the disk tier turns off"
                );
                return Ok(());
            }
            anyhow::bail!(
                "cannot allocate the disk tier's {} MiB in `cache.disk_dir` ({}): {error}: lower `cache.disk_bytes` \
                 or free some space",
                len >> 20,
                dir.display()
            );
        }
    }
    Ok(())
}

/// Decoded metadata records kept in memory, so that a hit costs no parsing.
/// Their memory, beside the memory tier's: a sixteenth of it (at least 1 MiB). Weighed by bytes: bounded by a
/// count alone (65,536 records, "about 1 KiB each") they grew the resident memory by about 500 bytes per
/// distinct URL without end in a soak of cache-busting queries.
fn decoded_metas_bytes(memory_bytes: u64) -> usize {
    (memory_bytes as usize / 16).max(1 << 20)
}

/// Sizes of the tiers, and where foyer's own metrics (`foyer_memory_*`, `foyer_storage_*`: entries, usage,
/// evictions, disk I/O) are registered.
pub struct StorageSizes {
    pub registry: prometheus::Registry,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub block_bytes: u64,
    /// Eviction by value will be turned on: the memory tier is then one shard of 15/16 of `memory_bytes` (see
    /// the module's notes).
    pub evict_by_value: bool,
}

impl FoyerStorage {
    /// Opens (and recovers) the cache. `disk_bytes == 0` keeps everything in memory.
    pub async fn open(dir: &Path, sizes: StorageSizes) -> anyhow::Result<FoyerStorage> {
        let disk = Arc::new(DiskTier {
            configured: sizes.disk_bytes > 0,
            failed: AtomicBool::new(false),
            reason: Mutex::new(None),
            reported: AtomicBool::new(false),
            up: prometheus::IntGauge::new(
                "edge_cache_disk_tier_up",
                "1 while the disk tier is in use; 0 when there is none or it failed (off until a restart).",
            )?,
            errors: prometheus::IntCounter::new(
                "edge_cache_disk_errors_total",
                "Errors of the disk tier: failed writes and reads, panics of the cache library.",
            )?,
        });
        sizes.registry.register(Box::new(disk.up.clone()))?;
        sizes.registry.register(Box::new(disk.errors.clone()))?;
        let written = Arc::new(WriteCheck {
            pending: Mutex::new(Default::default()),
            wake: tokio::sync::Notify::new(),
            checking: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            outcomes: prometheus::IntCounterVec::new(
                prometheus::Opts::new(
                    "edge_cache_disk_rewrites_total",
                    "Entries the disk tier dropped (foyer issue #1334), by what became of them: rewritten, lost \
                     (gone from memory too, or dropped on every try; fetched again when asked for), unchecked \
                     (past the check's bound).",
                ),
                &["result"],
            )?,
        });
        sizes
            .registry
            .register(Box::new(written.outcomes.clone()))?;
        let memory_capacity = if sizes.evict_by_value {
            sizes.memory_bytes / 16 * VALUE_CAPACITY_SIXTEENTHS
        } else {
            sizes.memory_bytes
        };
        let value = Arc::new(ValueEviction {
            valuer: OnceLock::new(),
            resident: Mutex::default(),
            target_bytes: sizes.memory_bytes / 16 * VALUE_TARGET_SIXTEENTHS,
            evictions: prometheus::IntCounter::new(
                "edge_cache_value_evictions_total",
                "Slices evicted from the memory tier by value (the ones viewers are least likely to ask for soon).",
            )?,
            not_admitted: prometheus::IntCounter::new(
                "edge_cache_value_not_admitted_total",
                "Fetched slices rated below every sampled one, not kept in the memory tier (the disk tier keeps them).",
            )?,
            evicted_bytes: prometheus::IntCounter::new(
                "edge_cache_value_evicted_bytes_total",
                "Bytes of the slices evicted from the memory tier by value, or not admitted to it.",
            )?,
            resident_slices: prometheus::IntGauge::new(
                "edge_cache_value_resident_slices",
                "Media slices in the memory tier that eviction by value rates.",
            )?,
        });
        for metric in [
            Box::new(value.evictions.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(value.not_admitted.clone()),
            Box::new(value.evicted_bytes.clone()),
            Box::new(value.resident_slices.clone()),
        ] {
            sizes.registry.register(metric)?;
        }
        let builder = HybridCacheBuilder::new()
            .with_name("edge")
            .with_event_listener(Arc::new(LeaveListener(Arc::clone(&value))))
            .with_metrics_registry(Box::new(
                mixtrics::registry::prometheus_0_14::PrometheusMetricsRegistry::new(
                    sizes.registry.clone(),
                ),
            ))
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .with_flush_on_close(true)
            .memory(memory_capacity as usize)
            .with_shards(if sizes.evict_by_value { 1 } else { 8 })
            // S3-FIFO: the best byte hit ratio of foyer's policies on a VOD trace (`cargo run -p benches
            // --release --bin cachesim`: +4.6 to +10.5 points over LRU at 1-20 % of the unique bytes).
            .with_eviction_config(S3FifoConfig::default())
            .with_weighter(|key: &String, value: &Bytes| key.len() + value.len() + 64);
        let cache = if sizes.disk_bytes == 0 {
            builder.storage().build().await?
        } else {
            check_disk_space(dir, sizes.disk_bytes)?;
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the cache folder {} (`cache.disk_dir`): {e}",
                    dir.display()
                )
            })?;
            let device = FsDeviceBuilder::new(dir)
                .with_capacity(sizes.disk_bytes as usize)
                .build()?;
            let cache = builder
                .storage()
                .with_io_engine_config(PsyncIoEngineConfig::new())
                .with_engine_config(
                    BlockEngineConfig::new(device).with_block_size(sizes.block_bytes as usize),
                )
                .with_recover_mode(RecoverMode::Quiet)
                .build()
                .await?;
            allocate_disk_files(dir)?;
            watch_foyer(&disk);
            disk.up.set(1);
            written.spawn(cache.clone(), &disk);
            cache
        };
        let decoded = foyer::CacheBuilder::new(decoded_metas_bytes(sizes.memory_bytes))
            .with_weighter(|key: &String, meta: &Arc<ObjectMeta>| key.len() + meta.approx_bytes())
            .build();
        Ok(FoyerStorage {
            cache,
            decoded,
            disk,
            written,
            value,
        })
    }

    async fn get(&self, key: &String) -> Option<(Bytes, Tier)> {
        // A memory hit is answered by the memory tier itself (which keeps its eviction policy's counts): the
        // hybrid cache's lookup costs an allocation and two clock readings for its latency metric even then,
        // so `foyer_hybrid_*` count the lookups that went on to the disk tier.
        let in_memory = self.cache.memory().get(key);
        if let Some(entry) = in_memory {
            return Some((entry.value().clone(), Tier::Memory));
        }
        if self.disk.off() {
            return None;
        }
        match AssertUnwindSafe(self.cache.get(key)).catch_unwind().await {
            Err(_) => {
                self.disk.fail("panic in a cache read");
                None
            }
            Ok(Ok(Some(entry))) => {
                let tier = if entry.source() == Source::Disk {
                    Tier::Disk
                } else {
                    Tier::Memory
                };
                Some((entry.value().clone(), tier))
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                // A damaged entry is a miss inside foyer; an error is the disk failing.
                self.disk.fail(&format!("a read failed: {e}"));
                None
            }
        }
    }

    fn insert(&self, key: String, value: Bytes) {
        if self.disk.off() {
            self.cache.memory().insert(key, value);
            return;
        }
        let inserted = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.cache.insert(key.clone(), value.clone());
        }));
        match inserted {
            Ok(()) => self.written.push(key),
            Err(_) => {
                self.disk.fail("panic in a cache write");
                self.cache.memory().insert(key, value);
            }
        }
    }

    /// Waits until every entry written so far is on disk or known lost.
    pub async fn settle(&self) {
        while self.written.check(&self.cache, &self.disk).await > 0 {}
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
                if let Some((_, tier)) = self.get(&meta_key).await {
                    return Some((Arc::clone(entry.value()), tier));
                }
                self.decoded.remove(&key.meta_key());
                return None;
            }
            let (bytes, tier) = self.get(&meta_key).await?;
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
        Box::pin(async move {
            let slice_key = key.slice_key(generation, index);
            let read = self.get(&slice_key).await;
            // A disk hit is now in the memory tier too.
            if let Some((_, Tier::Disk)) = &read {
                self.value.entered(&self.cache, key, index, &slice_key);
                self.value.make_room(&self.cache, None);
            }
            read
        })
    }

    fn insert_meta(&self, key: &CacheKey, meta: &Arc<ObjectMeta>) {
        let meta_key = key.meta_key();
        self.decoded.insert(meta_key.clone(), Arc::clone(meta));
        self.insert(meta_key, meta.encode());
    }

    fn insert_slice(&self, key: &CacheKey, generation: u64, index: u64, data: Bytes) {
        let slice_key = key.slice_key(generation, index);
        self.insert(slice_key.clone(), data);
        let tag = self.value.entered(&self.cache, key, index, &slice_key);
        self.value
            .make_room(&self.cache, tag.map(|tag| (slice_key.as_str(), tag)));
    }

    fn contains_slice(&self, key: &CacheKey, generation: u64, index: u64) -> bool {
        let key = key.slice_key(generation, index);
        if self.disk.off() {
            return self.cache.memory().contains(&key);
        }
        self.cache.contains(&key)
    }

    fn remove(&self, key: &CacheKey) {
        let meta_key = key.meta_key();
        self.decoded.remove(&meta_key);
        if self.disk.off() {
            self.cache.memory().remove(&meta_key);
        } else {
            self.cache.remove(&meta_key);
        }
    }

    fn memory_usage(&self) -> u64 {
        self.cache.memory().usage() as u64
    }

    fn evict_by_value(&self, valuer: Arc<dyn Valuer>) {
        let _ = self.value.valuer.set(valuer);
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.written.closed.store(true, Ordering::SeqCst);
            if self.disk.off() {
                // Flushing to a failed disk could hang or panic; what it holds is lost with the process.
                return;
            }
            if let Err(e) = self.cache.close().await {
                tracing::warn!(error = %e, "closing the cache failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::key::CacheKey;

    async fn open(dir: &Path, memory_bytes: u64) -> FoyerStorage {
        open_with(dir, memory_bytes, 256 << 20, false).await
    }

    /// A memory tier of `memory_bytes` over a disk tier of `disk_bytes` (none at 0), slices of up to 2 MiB.
    async fn open_with(
        dir: &Path,
        memory_bytes: u64,
        disk_bytes: u64,
        evict_by_value: bool,
    ) -> FoyerStorage {
        FoyerStorage::open(
            dir,
            StorageSizes {
                registry: prometheus::Registry::new(),
                memory_bytes,
                disk_bytes,
                block_bytes: crate::config::slice_block_bytes(2 << 20),
                evict_by_value,
            },
        )
        .await
        .expect("open the cache")
    }

    /// A memory tier of `memory_bytes` alone, with eviction by value to be turned on.
    async fn open_valued(dir: &Path, memory_bytes: u64) -> FoyerStorage {
        open_with(dir, memory_bytes, 0, true).await
    }

    /// Rates the slices of `/seg<n>` by a table; other objects have no tag.
    struct TableValuer(std::collections::HashMap<u64, f64>);

    impl Valuer for TableValuer {
        fn tag(&self, key: &CacheKey, index: u64) -> Option<crate::viewers::Tag> {
            let (_, path) = key.site_and_path();
            let n: u32 = path.strip_prefix("/seg")?.parse().ok()?;
            Some(crate::viewers::Tag::for_test(n, index))
        }

        fn rates(&self, tags: &[crate::viewers::Tag]) -> Vec<f64> {
            tags.iter()
                .map(|t| {
                    self.0
                        .get(&u64::from(t.test_segment()))
                        .copied()
                        .unwrap_or(0.0)
                })
                .collect()
        }
    }

    /// Eviction by value keeps the memory tier at its target by evicting the lowest-rated slices, and leaves
    /// what it cannot rate to foyer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_lowest_rated_slices_leave_the_memory_tier_first() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_valued(dir.path(), 256 << 20).await;
        // Segments 0-599 of 512 KiB: even ones are worth 10× odd ones; 300 MiB for a tier of 240 MiB held at
        // 224 MiB.
        let rates = (0..600u64)
            .map(|n| (n, if n % 2 == 0 { 10.0 } else { 1.0 }))
            .collect();
        storage.evict_by_value(Arc::new(TableValuer(rates)));
        let value = Bytes::from(vec![7u8; 512 << 10]);
        for n in 0..600 {
            storage.insert_slice(
                &CacheKey::new("s", &format!("/seg{n}"), None),
                1,
                0,
                value.clone(),
            );
        }
        // A playlist, not rated: left to foyer.
        storage.insert_slice(
            &CacheKey::new("s", "/list.m3u8", None),
            1,
            0,
            Bytes::from_static(b"#EXTM3U"),
        );
        assert!(storage.memory_usage() <= (256 << 20) / 16 * VALUE_TARGET_SIXTEENTHS);
        let held = |n: u64| {
            storage
                .cache
                .memory()
                .contains(&CacheKey::new("s", &format!("/seg{n}"), None).slice_key(1, 0))
        };
        let even = (0..600).filter(|n| n % 2 == 0 && held(*n)).count();
        let odd = (0..600).filter(|n| n % 2 == 1 && held(*n)).count();
        // Slices had to go: every one an odd one, evicted or (rated below all it was drawn against) not
        // admitted, while odd ones were left to draw.
        assert_eq!(even, 300, "every highly rated slice stays");
        let evicted = (storage.value.evictions.get() + storage.value.not_admitted.get()) as usize;
        assert_eq!(odd, 300 - evicted);
        assert!(evicted >= 150, "{evicted}");
        assert!(
            storage
                .cache
                .memory()
                .contains(&CacheKey::new("s", "/list.m3u8", None).slice_key(1, 0))
        );
    }

    /// A slice just fetched that rates below every one it is drawn against is not kept in memory.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetched_slice_rated_below_every_sampled_one_is_not_admitted() {
        let dir = tempfile::tempdir().unwrap();
        let storage = open_valued(dir.path(), 32 << 20).await;
        // Segments 0-59 rated 10 fill the tier past its target of 28 MiB; segment 999 is rated 0.
        storage.evict_by_value(Arc::new(TableValuer((0..60).map(|n| (n, 10.0)).collect())));
        let value = Bytes::from(vec![7u8; 512 << 10]);
        let key = |n: u64| CacheKey::new("s", &format!("/seg{n}"), None);
        for n in 0..60 {
            storage.insert_slice(&key(n), 1, 0, value.clone());
        }
        assert_eq!(
            storage.value.not_admitted.get(),
            0,
            "equal rates: none refused"
        );
        let evicted = storage.value.evictions.get();
        storage.insert_slice(&key(999), 1, 0, value.clone());
        assert_eq!(storage.value.not_admitted.get(), 1);
        assert_eq!(
            storage.value.evictions.get(),
            evicted,
            "nothing else made room"
        );
        assert!(!storage.cache.memory().contains(&key(999).slice_key(1, 0)));
    }

    fn slice(i: u64) -> Bytes {
        Bytes::from(vec![(i % 251) as u8; (2 << 20) - (i as usize % 7) * 4096])
    }

    /// foyer issue #1334: a burst of writes loses entries that miss the tail of the flush buffer; every one is
    /// written again and reads back from the disk tier itself, byte for byte.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_slice_of_a_burst_of_writes_reads_back_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey::new("site", "/burst", None);
        let storage = open(dir.path(), 512 << 20).await;
        for i in 0..48 {
            storage.insert_slice(&key, 1, i, slice(i));
        }
        storage.settle().await;
        let outcomes = |result: &str| storage.written.outcomes.with_label_values(&[result]).get();
        eprintln!(
            "rewritten after foyer dropped them: {}",
            outcomes("rewritten")
        );
        assert_eq!(outcomes("lost"), 0);
        assert_eq!(outcomes("unchecked"), 0);
        for i in 0..48 {
            let loaded = storage
                .cache
                .storage()
                .load(&key.slice_key(1, i))
                .await
                .expect("read the disk tier");
            match loaded {
                foyer::Load::Entry { value, .. } => {
                    assert!(value == slice(i), "slice {i} reads back whole")
                }
                _ => panic!("slice {i} is not on disk"),
            }
        }
    }
}
