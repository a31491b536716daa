//! The embedded bus: a durable append-only log in a folder, for one host. Every process on the host (the
//! server, `origin ingest`, `origin takedown`, `origin report`) opens the same folder; file locks keep appends
//! whole and share a consumer group's partitions among its members, wherever they run.
//!
//! Layout under the folder:
//! - `topics/<topic>/partitions`: the partition count, fixed when the topic is created;
//! - `topics/<topic>/<partition>/<base>.seg`: segments; a record's offset is its byte position in the
//!   partition (the segment's `base` plus its position in the file), so offsets only grow;
//! - `groups/<group>/members/<id>`: one file per live member, locked while it lives;
//! - `groups/<group>/claims/<topic>.<partition>`: locked by the member that reads the partition;
//! - `groups/<group>/offsets/<topic>.<partition>`: the committed offset, replaced atomically.
//!
//! A record is `len: u32 | crc32: u32 | timestamp_ms: i64 | key_len: u32 | key | value` (little-endian; `len`
//! counts what follows it, the CRC covers what follows the CRC). Appends take the partition file's lock, so
//! records of two processes never interleave; one writer task per partition gathers concurrent publishes into
//! one write and one `fdatasync` (group commit). A torn record at the end (a crash mid-write) is cut off by the
//! next writer; readers never pass a record whose CRC does not hold.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, oneshot};

use super::{Record, StartAt, is_name, now_ms, partition_for};
use crate::config::BusConfig;

/// Bytes before a record's key: len, crc, timestamp, key length.
const HEADER: usize = 4 + 4 + 8 + 4;
/// Publishes waiting for one partition's writer at most; more wait for room.
const WRITER_QUEUE: usize = 1024;
/// How often a consumer with nothing to read looks at its partitions' files again.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// How often a member looks at its group's membership and rebalances.
const REBALANCE_EVERY: Duration = Duration::from_millis(250);

/// The embedded log, cheap to clone.
#[derive(Clone)]
pub struct LogBus {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    partitions: u32,
    segment_bytes: u64,
    retention: Duration,
    retention_bytes: u64,
    /// One writer task per (topic, partition), started on first use.
    writers: Mutex<HashMap<(String, u32), mpsc::Sender<Append>>>,
}

/// One publish's records for one partition, and who to tell when they are durable.
struct Append {
    records: Vec<(Bytes, Bytes, i64)>,
    done: oneshot::Sender<Result<(), String>>,
}

impl LogBus {
    pub fn open(dir: &Path, config: &BusConfig) -> anyhow::Result<LogBus> {
        fs::create_dir_all(dir.join("topics"))
            .and_then(|()| fs::create_dir_all(dir.join("groups")))
            .map_err(|e| anyhow::anyhow!("bus: cannot create {}: {e}", dir.display()))?;
        Ok(LogBus {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                partitions: config.partitions,
                segment_bytes: config.segment_bytes,
                retention: Duration::from_secs(config.retention_hours * 3600),
                retention_bytes: config.retention_bytes,
                writers: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        for topic in topics {
            self.partitions(topic)?;
        }
        Ok(())
    }

    /// The partition count of `topic`, creating the topic when it does not exist.
    fn partitions(&self, topic: &str) -> anyhow::Result<u32> {
        anyhow::ensure!(is_name(topic), "`{topic}` is not a topic name");
        let topic_dir = self.inner.dir.join("topics").join(topic);
        let count_file = topic_dir.join("partitions");
        if let Ok(text) = fs::read_to_string(&count_file) {
            return text
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("bus: {} is corrupt", count_file.display()));
        }
        fs::create_dir_all(&topic_dir)?;
        // Two processes creating one topic: the first rename wins and both read its count.
        let temp = topic_dir.join(format!("partitions.{}", unique_id()));
        fs::write(&temp, self.inner.partitions.to_string())?;
        if fs::hard_link(&temp, &count_file).is_err() && !count_file.exists() {
            anyhow::bail!("bus: cannot create {}", count_file.display());
        }
        let _ = fs::remove_file(&temp);
        for p in 0..self.inner.partitions {
            fs::create_dir_all(topic_dir.join(p.to_string()))?;
        }
        let text = fs::read_to_string(&count_file)?;
        Ok(text.trim().parse()?)
    }

    pub async fn publish(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> anyhow::Result<()> {
        let partitions = self.partitions(topic)?;
        let timestamp = now_ms();
        let mut by_partition: BTreeMap<u32, Vec<(Bytes, Bytes, i64)>> = BTreeMap::new();
        for (key, value) in records {
            by_partition
                .entry(partition_for(&key, partitions))
                .or_default()
                .push((key, value, timestamp));
        }
        let mut waits = Vec::with_capacity(by_partition.len());
        for (partition, records) in by_partition {
            let writer = self.writer(topic, partition);
            let (done, wait) = oneshot::channel();
            writer
                .send(Append { records, done })
                .await
                .map_err(|_| anyhow::anyhow!("bus: the writer of {topic}/{partition} stopped"))?;
            waits.push(wait);
        }
        for wait in waits {
            wait.await
                .map_err(|_| anyhow::anyhow!("bus: the writer stopped"))?
                .map_err(|e| anyhow::anyhow!("bus: append failed: {e}"))?;
        }
        Ok(())
    }

    fn writer(&self, topic: &str, partition: u32) -> mpsc::Sender<Append> {
        let mut writers = self.inner.writers.lock().expect("writers lock");
        writers
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                let (tx, rx) = mpsc::channel(WRITER_QUEUE);
                let dir = self
                    .inner
                    .dir
                    .join("topics")
                    .join(topic)
                    .join(partition.to_string());
                let limits = SegmentLimits {
                    segment_bytes: self.inner.segment_bytes,
                    retention: self.inner.retention,
                    retention_bytes: self.inner.retention_bytes,
                };
                tokio::spawn(write_partition(dir, limits, rx));
                tx
            })
            .clone()
    }

    pub fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
        start: StartAt,
    ) -> anyhow::Result<LogConsumer> {
        let mut partitions = Vec::new();
        for topic in topics {
            for p in 0..self.partitions(topic)? {
                partitions.push((topic.to_string(), p));
            }
        }
        let group_dir = self.inner.dir.join("groups").join(group);
        for sub in ["members", "claims", "offsets"] {
            fs::create_dir_all(group_dir.join(sub))?;
        }
        // Locked under a name other members skip, then renamed: a member file is never seen unlocked while
        // its member lives (the lock belongs to the file, not its name).
        let id = unique_id();
        let joining = group_dir.join(format!("joining.{id}"));
        let member_file = File::create(&joining)?;
        member_file.lock()?;
        fs::rename(&joining, group_dir.join("members").join(&id))?;
        let mut consumer = LogConsumer {
            topics_dir: self.inner.dir.join("topics"),
            group_dir,
            id,
            _member: member_file,
            partitions,
            start,
            held: BTreeMap::new(),
            last_rebalance: None,
        };
        consumer.rebalance()?;
        Ok(consumer)
    }
}

#[derive(Clone, Copy)]
struct SegmentLimits {
    segment_bytes: u64,
    retention: Duration,
    retention_bytes: u64,
}

/// A partition's writer: gathers what is queued, appends it under the partition's lock, syncs once, answers all.
async fn write_partition(dir: PathBuf, limits: SegmentLimits, mut rx: mpsc::Receiver<Append>) {
    let mut state: Option<WriterState> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < WRITER_QUEUE {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let records: Vec<(Bytes, Bytes, i64)> = batch
            .iter_mut()
            .flat_map(|a| std::mem::take(&mut a.records))
            .collect();
        let dir2 = dir.clone();
        let taken = state.take();
        let outcome = tokio::task::spawn_blocking(move || {
            let mut state = match taken {
                Some(s) => s,
                None => WriterState::open(&dir2)?,
            };
            state.append(&dir2, limits, &records)?;
            Ok::<_, std::io::Error>(state)
        })
        .await;
        let result = match outcome {
            Ok(Ok(s)) => {
                state = Some(s);
                Ok(())
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = &result {
            tracing::warn!(dir = %dir.display(), error = %e, "bus append failed");
        }
        for append in batch {
            let _ = append.done.send(result.clone());
        }
    }
}

/// The active segment as this process last saw it.
struct WriterState {
    base: u64,
    file: File,
    /// Where this process last saw the segment's valid end; another process may have appended since.
    valid_end: u64,
}

impl WriterState {
    fn open(dir: &Path) -> std::io::Result<WriterState> {
        fs::create_dir_all(dir)?;
        let base = segments(dir)?.last().copied().unwrap_or(0);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(segment_path(dir, base))?;
        Ok(WriterState {
            base,
            file,
            valid_end: 0,
        })
    }

    fn append(
        &mut self,
        dir: &Path,
        limits: SegmentLimits,
        records: &[(Bytes, Bytes, i64)],
    ) -> std::io::Result<()> {
        self.file.lock()?;
        let result = self.append_locked(dir, limits, records);
        let _ = self.file.unlock();
        result
    }

    fn append_locked(
        &mut self,
        dir: &Path,
        limits: SegmentLimits,
        records: &[(Bytes, Bytes, i64)],
    ) -> std::io::Result<()> {
        // Another process may have rolled to a newer segment.
        let newest = segments(dir)?.last().copied().unwrap_or(0);
        if newest != self.base {
            *self = WriterState::open(dir)?;
            self.file.lock()?;
        }
        let len = self.file.metadata()?.len();
        if len != self.valid_end {
            // Appended by another process since, or torn by a crash: keep what is whole.
            let end = valid_end(&mut self.file, self.valid_end.min(len))?;
            if end < len {
                tracing::warn!(
                    segment = %segment_path(dir, self.base).display(),
                    kept = end,
                    cut = len - end,
                    "bus: a torn record at the end of a segment is cut off"
                );
                self.file.set_len(end)?;
            }
            self.valid_end = end;
        }
        if self.valid_end >= limits.segment_bytes {
            let next = self.base + self.valid_end;
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(segment_path(dir, next))?;
            let _ = self.file.unlock();
            file.lock()?;
            *self = WriterState {
                base: next,
                file,
                valid_end: 0,
            };
            enforce_retention(dir, next, limits);
        }
        let mut buf = BytesMut::new();
        for (key, value, timestamp) in records {
            encode(&mut buf, key, value, *timestamp);
        }
        self.file.write_all(&buf)?;
        self.file.sync_data()?;
        self.valid_end += buf.len() as u64;
        Ok(())
    }
}

/// Deletes whole segments older than the retention or past the byte budget, never the active one.
fn enforce_retention(dir: &Path, active: u64, limits: SegmentLimits) {
    let Ok(bases) = segments(dir) else { return };
    let now = SystemTime::now();
    let total = active;
    let mut oldest_kept = bases.first().copied().unwrap_or(active);
    for base in bases.iter().copied().filter(|b| *b < active) {
        let path = segment_path(dir, base);
        let old = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > limits.retention);
        let over = total - oldest_kept > limits.retention_bytes;
        if !(old || over) {
            break;
        }
        if fs::remove_file(&path).is_ok() {
            tracing::info!(segment = %path.display(), "bus: segment past retention deleted");
        }
        oldest_kept = bases.iter().copied().find(|b| *b > base).unwrap_or(active);
    }
}

fn encode(buf: &mut BytesMut, key: &[u8], value: &[u8], timestamp: i64) {
    let len = HEADER - 4 + key.len() + value.len();
    buf.reserve(4 + len);
    buf.put_u32_le(len as u32);
    let mut body = BytesMut::with_capacity(len - 4);
    body.put_i64_le(timestamp);
    body.put_u32_le(key.len() as u32);
    body.put_slice(key);
    body.put_slice(value);
    buf.put_u32_le(crc32fast::hash(&body));
    buf.put_slice(&body);
}

/// One whole record at the start of `data`: (timestamp, key, value, its encoded length), or none when `data`
/// holds no whole valid record (yet).
fn decode(data: &Bytes) -> Option<(i64, Bytes, Bytes, usize)> {
    if data.len() < HEADER {
        return None;
    }
    let mut head = &data[..];
    let len = head.get_u32_le() as usize;
    if len < HEADER - 4 || data.len() < 4 + len {
        return None;
    }
    let crc = head.get_u32_le();
    let body = data.slice(8..4 + len);
    if crc32fast::hash(&body) != crc {
        return None;
    }
    let mut fields = &body[..];
    let timestamp = fields.get_i64_le();
    let key_len = fields.get_u32_le() as usize;
    if 12 + key_len > body.len() {
        return None;
    }
    let key = body.slice(12..12 + key_len);
    let value = body.slice(12 + key_len..);
    Some((timestamp, key, value, 4 + len))
}

/// The end of the last whole valid record of `file` at or after `from` (itself a record boundary).
fn valid_end(file: &mut File, from: u64) -> std::io::Result<u64> {
    file.seek(SeekFrom::Start(from))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    let data = Bytes::from(data);
    let mut at = 0;
    while let Some((_, _, _, n)) = decode(&data.slice(at..)) {
        at += n;
    }
    Ok(from + at as u64)
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The bases of a partition's segments, oldest first.
fn segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut bases: Vec<u64> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    bases.sort_unstable();
    Ok(bases)
}

fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A member of a consumer group of the embedded log.
pub struct LogConsumer {
    topics_dir: PathBuf,
    group_dir: PathBuf,
    id: String,
    /// Locked while this member lives: its presence for the other members.
    _member: File,
    /// Every (topic, partition) the group reads.
    partitions: Vec<(String, u32)>,
    start: StartAt,
    held: BTreeMap<(String, u32), Held>,
    last_rebalance: Option<Instant>,
}

/// A partition this member reads.
struct Held {
    /// Locked while held.
    _claim: File,
    /// The offset of the next record to read.
    position: u64,
    /// The offset committed last.
    committed: u64,
}

impl LogConsumer {
    pub async fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Record>> {
        let deadline = Instant::now() + wait;
        loop {
            if self
                .last_rebalance
                .is_none_or(|t| t.elapsed() >= REBALANCE_EVERY)
            {
                self.rebalance()?;
            }
            let records = self.read(max.max(1))?;
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
            tokio::time::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    pub async fn commit(&mut self) -> anyhow::Result<()> {
        let offsets = self.group_dir.join("offsets");
        for ((topic, partition), held) in &mut self.held {
            if held.position != held.committed {
                write_offset(&offsets, topic, *partition, held.position)?;
                held.committed = held.position;
            }
        }
        Ok(())
    }

    pub fn assignment(&self) -> Vec<(String, u32)> {
        self.held.keys().cloned().collect()
    }

    /// The group's live members, sorted; stale member files (no process holds their lock) are removed.
    fn members(&self) -> anyhow::Result<Vec<String>> {
        let dir = self.group_dir.join("members");
        let mut live = Vec::new();
        for entry in fs::read_dir(&dir)?.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == self.id {
                live.push(name);
                continue;
            }
            let Ok(file) = File::open(entry.path()) else {
                continue;
            };
            match file.try_lock() {
                Ok(()) => {
                    // Nobody holds it: a member that died.
                    let _ = fs::remove_file(entry.path());
                }
                Err(_) => live.push(name),
            }
        }
        live.sort();
        Ok(live)
    }

    /// Every member computes the same split of the partitions from the same sorted member list: the i-th
    /// partition goes to member i mod n. A member lets go of what is no longer its own and claims what is,
    /// once the previous holder has let go.
    fn rebalance(&mut self) -> anyhow::Result<()> {
        self.last_rebalance = Some(Instant::now());
        let members = self.members()?;
        let me = members.iter().position(|m| *m == self.id).unwrap_or(0);
        let n = members.len().max(1);
        let mine: Vec<(String, u32)> = self
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| i % n == me)
            .map(|(_, tp)| tp.clone())
            .collect();
        let offsets = self.group_dir.join("offsets");
        self.held.retain(|tp, _| mine.contains(tp));
        for (topic, partition) in mine {
            let tp = (topic.clone(), partition);
            if self.held.contains_key(&tp) {
                continue;
            }
            let claim = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(
                    self.group_dir
                        .join("claims")
                        .join(format!("{topic}.{partition}")),
                )?;
            if claim.try_lock().is_err() {
                continue;
            }
            let dir = self.topics_dir.join(&topic).join(partition.to_string());
            let position = match read_offset(&offsets, &topic, partition)? {
                Some(offset) => offset,
                None => match self.start {
                    StartAt::Earliest => segments(&dir)?.first().copied().unwrap_or(0),
                    StartAt::Latest => {
                        let reader = PartitionReader { dir: dir.clone() };
                        reader.end()?
                    }
                },
            };
            self.held.insert(
                tp,
                Held {
                    _claim: claim,
                    position,
                    committed: position,
                },
            );
        }
        Ok(())
    }

    fn read(&mut self, max: usize) -> anyhow::Result<Vec<Record>> {
        let mut out = Vec::new();
        for ((topic, partition), held) in &mut self.held {
            if out.len() >= max {
                break;
            }
            let reader = PartitionReader {
                dir: self.topics_dir.join(topic).join(partition.to_string()),
            };
            let (records, next) = reader.read(held.position, max - out.len())?;
            held.position = next;
            out.extend(
                records
                    .into_iter()
                    .map(|(offset, timestamp_ms, key, value)| Record {
                        topic: topic.clone(),
                        partition: *partition,
                        offset,
                        timestamp_ms,
                        key,
                        value,
                    }),
            );
        }
        Ok(out)
    }
}

/// Reads one partition's segments.
struct PartitionReader {
    dir: PathBuf,
}

/// Bytes read from a segment at once at most.
const READ_CHUNK: u64 = 1 << 20;

impl PartitionReader {
    /// The offset after the last whole record.
    fn end(&self) -> anyhow::Result<u64> {
        let Some(&base) = segments(&self.dir)?.last() else {
            return Ok(0);
        };
        let mut file = File::open(segment_path(&self.dir, base))?;
        Ok(base + valid_end(&mut file, 0)?)
    }

    /// Up to `max` records from `position` on, with the position after them.
    #[allow(clippy::type_complexity)]
    fn read(
        &self,
        mut position: u64,
        max: usize,
    ) -> anyhow::Result<(Vec<(u64, i64, Bytes, Bytes)>, u64)> {
        let bases = segments(&self.dir)?;
        let mut out = Vec::new();
        let Some(&first) = bases.first() else {
            return Ok((out, position));
        };
        if position < first {
            tracing::warn!(
                partition = %self.dir.display(),
                from = position,
                to = first,
                "bus: records past retention were deleted before this group read them"
            );
            position = first;
        }
        loop {
            let Some(&base) = bases.iter().rev().find(|b| **b <= position) else {
                return Ok((out, position));
            };
            let mut file = File::open(segment_path(&self.dir, base))?;
            let len = file.metadata()?.len();
            let start = position - base;
            if start >= len {
                // The end of this segment: go on in the next one if there is one.
                match bases.iter().find(|b| **b > base) {
                    Some(&next) => {
                        position = next;
                        continue;
                    }
                    None => return Ok((out, position)),
                }
            }
            file.seek(SeekFrom::Start(start))?;
            let mut data = Vec::new();
            (&mut file)
                .take(READ_CHUNK.max(1).min(len - start))
                .read_to_end(&mut data)?;
            let mut data = Bytes::from(data);
            let before = out.len();
            while out.len() < max {
                let Some((timestamp, key, value, n)) = decode(&data) else {
                    break;
                };
                out.push((position, timestamp, key, value));
                position += n as u64;
                data.advance(n);
            }
            if out.len() >= max || out.len() == before {
                // Full, or a record not whole yet (or larger than a chunk: read it alone next time).
                if out.len() == before && !data.is_empty() && data.len() as u64 == READ_CHUNK {
                    return self.read_large(position, max, out);
                }
                return Ok((out, position));
            }
        }
    }

    /// A record larger than one read chunk.
    #[allow(clippy::type_complexity)]
    fn read_large(
        &self,
        position: u64,
        _max: usize,
        mut out: Vec<(u64, i64, Bytes, Bytes)>,
    ) -> anyhow::Result<(Vec<(u64, i64, Bytes, Bytes)>, u64)> {
        let bases = segments(&self.dir)?;
        let Some(&base) = bases.iter().rev().find(|b| **b <= position) else {
            return Ok((out, position));
        };
        let mut file = File::open(segment_path(&self.dir, base))?;
        file.seek(SeekFrom::Start(position - base))?;
        let mut data = Vec::new();
        (&mut file)
            .take((super::MAX_RECORD_BYTES + HEADER) as u64)
            .read_to_end(&mut data)?;
        match decode(&Bytes::from(data)) {
            Some((timestamp, key, value, n)) => {
                out.push((position, timestamp, key, value));
                Ok((out, position + n as u64))
            }
            None => Ok((out, position)),
        }
    }
}

fn offset_path(offsets: &Path, topic: &str, partition: u32) -> PathBuf {
    offsets.join(format!("{topic}.{partition}"))
}

fn read_offset(offsets: &Path, topic: &str, partition: u32) -> anyhow::Result<Option<u64>> {
    match fs::read_to_string(offset_path(offsets, topic, partition)) {
        Ok(text) => Ok(text.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Replaces the committed offset atomically (write, sync, rename).
fn write_offset(offsets: &Path, topic: &str, partition: u32, offset: u64) -> anyhow::Result<()> {
    let path = offset_path(offsets, topic, partition);
    let temp = path.with_extension(format!("{}.tmp", unique_id()));
    let mut file = File::create(&temp)?;
    file.write_all(offset.to_string().as_bytes())?;
    file.sync_data()?;
    fs::rename(&temp, &path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_ones_are_not_read() {
        let mut buf = BytesMut::new();
        encode(&mut buf, b"k1", b"hello", 7);
        encode(&mut buf, b"", b"", 8);
        let data = buf.freeze();
        let (t, k, v, n) = decode(&data).unwrap();
        assert_eq!((t, &k[..], &v[..]), (7, &b"k1"[..], &b"hello"[..]));
        let (t2, k2, v2, n2) = decode(&data.slice(n..)).unwrap();
        assert_eq!((t2, k2.len(), v2.len(), n + n2), (8, 0, 0, data.len()));
        // Every cut short of a whole record reads nothing.
        for cut in 0..n {
            assert!(decode(&data.slice(..cut)).is_none(), "cut at {cut}");
        }
        // A flipped bit anywhere after the length fails the CRC.
        for i in 4..n {
            let mut bad = data.to_vec();
            bad[i] ^= 1;
            assert!(decode(&Bytes::from(bad)).is_none(), "flip at {i}");
        }
    }
}
