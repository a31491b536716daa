//! The message bus the control plane's services talk through: catalog changes, viewers' playback events and the
//! edges' summaries are published to topics, and each consumer (the search indexer, the QoE analytics, the edge
//! change feed) reads them in its own consumer group, at least once, committing offsets as it goes.
//!
//! One interface, two implementations chosen by `[bus] url`:
//! - embedded (the default, `<data_dir>/bus`): a durable append-only log in a folder, shared by every process on
//!   the host through file locks (`log`);
//! - Kafka (`kafka://host:port,…`) for several hosts, through librdkafka (`kafka`).
//!
//! Records are keyed by title, and a key always lands in the same partition, so the events of one title keep
//! their order. Offsets are per partition and only grow; a consumer that restarts resumes after its group's last
//! commit, so a record may be seen twice and consumers are idempotent.

pub mod kafka;
pub mod log;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::config::BusConfig;

/// Catalog changes (ingest, metadata edits, takedowns), keyed by slug.
pub const TOPIC_CATALOG: &str = "catalog";
/// Viewers' playback events, keyed by title.
pub const TOPIC_PLAYBACK: &str = "playback";
/// The edges' per-title summaries, keyed by title.
pub const TOPIC_EDGE_STATS: &str = "edge-stats";
/// Every topic the control plane uses; `Bus::open` makes sure they exist.
pub const TOPICS: [&str; 3] = [TOPIC_CATALOG, TOPIC_PLAYBACK, TOPIC_EDGE_STATS];

/// The largest record (key and value) accepted.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A record as a consumer receives it.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: u32,
    /// Its place in the partition; later records have larger offsets (not necessarily consecutive).
    pub offset: u64,
    /// When it was published, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub key: Bytes,
    pub value: Bytes,
}

/// Where a group with no committed offset for a partition starts reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record kept: a new consumer catches up on history.
    Earliest,
    /// Only records published from now on.
    Latest,
}

/// A message bus, cheap to clone.
#[derive(Clone)]
pub enum Bus {
    Embedded(log::LogBus),
    Kafka(kafka::KafkaBus),
}

/// A member of a consumer group, reading the partitions the group gives it.
pub enum Consumer {
    Embedded(log::LogConsumer),
    Kafka(kafka::KafkaConsumer),
}

impl Bus {
    /// Opens the bus `config` names (the embedded log under `<data_dir>/bus` by default) and makes sure the
    /// control plane's topics exist.
    pub async fn open(config: &BusConfig, data_dir: &Path) -> anyhow::Result<Bus> {
        let bus = match config.url.as_deref() {
            Some(url) if url.starts_with("kafka://") => {
                Bus::Kafka(kafka::KafkaBus::connect(config)?)
            }
            Some(url) => {
                let path = url.strip_prefix("file://").ok_or_else(|| {
                    anyhow::anyhow!(
                        "bus.url: `{url}` is neither file:///folder nor kafka://host:port"
                    )
                })?;
                Bus::Embedded(log::LogBus::open(Path::new(path), config)?)
            }
            None => Bus::Embedded(log::LogBus::open(&data_dir.join("bus"), config)?),
        };
        bus.ensure_topics(&TOPICS).await?;
        Ok(bus)
    }

    /// What the bus is, for the log.
    pub fn description(&self) -> String {
        match self {
            Bus::Embedded(bus) => format!("embedded log at {}", bus.dir().display()),
            Bus::Kafka(bus) => format!("kafka at {}", bus.brokers()),
        }
    }

    /// Creates the topics that do not exist yet, with the configured partition count.
    pub async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        match self {
            Bus::Embedded(bus) => bus.ensure_topics(topics).await,
            Bus::Kafka(bus) => bus.ensure_topics(topics).await,
        }
    }

    /// Publishes `records` (key, value) to `topic` and returns once the bus holds them durably (the embedded log
    /// has synced them to disk; Kafka's leader has acknowledged them). Records with one key keep their order.
    pub async fn publish(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> anyhow::Result<()> {
        if let Some((key, value)) = records
            .iter()
            .find(|(k, v)| k.len() + v.len() > MAX_RECORD_BYTES)
        {
            anyhow::bail!(
                "a record of {} bytes is larger than the bus takes ({MAX_RECORD_BYTES})",
                key.len() + value.len()
            );
        }
        match self {
            Bus::Embedded(bus) => bus.publish(topic, records).await,
            Bus::Kafka(bus) => bus.publish(topic, records).await,
        }
    }

    /// Joins consumer group `group` on `topics`. Members of one group share the partitions; each group sees
    /// every record.
    pub async fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
        start: StartAt,
    ) -> anyhow::Result<Consumer> {
        anyhow::ensure!(
            is_name(group),
            "`{group}` is not a group name (1 to 100 letters, digits, `-`, `_`, `.`)"
        );
        Ok(match self {
            Bus::Embedded(bus) => Consumer::Embedded(bus.subscribe(group, topics, start)?),
            Bus::Kafka(bus) => Consumer::Kafka(bus.subscribe(group, topics, start)?),
        })
    }
}

impl Consumer {
    /// Up to `max` records from the partitions this member holds, waiting up to `wait` for the first. Records
    /// of one partition come in offset order.
    pub async fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Record>> {
        match self {
            Consumer::Embedded(c) => c.poll(max, wait).await,
            Consumer::Kafka(c) => c.poll(max, wait).await,
        }
    }

    /// [`Consumer::poll`] for a follower that must not stop: a failed poll is logged (reading `what`) and tried
    /// again after a back-off doubling from 0.1 s to 10 s; an empty batch is a wait that found nothing.
    pub async fn poll_retrying(&mut self, max: usize, wait: Duration, what: &str) -> Vec<Record> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.poll(max, wait).await {
                Ok(records) => return records,
                Err(e) => {
                    tracing::warn!(error = %e, "reading {what} failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Commits the group's offsets past every record `poll` has returned to this member: after a restart (of
    /// this member or another taking its partitions) reading resumes there.
    pub async fn commit(&mut self) -> anyhow::Result<()> {
        match self {
            Consumer::Embedded(c) => c.commit().await,
            Consumer::Kafka(c) => c.commit().await,
        }
    }

    /// The (topic, partition) pairs this member holds now.
    pub fn assignment(&self) -> Vec<(String, u32)> {
        match self {
            Consumer::Embedded(c) => c.assignment(),
            Consumer::Kafka(c) => c.assignment(),
        }
    }
}

/// Topic and group names: 1 to 100 of letters, digits, `-`, `_` and `.`.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The partition a key goes to (the embedded log's; Kafka's client uses its own hash of the key).
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    (twox_hash::XxHash3_64::oneshot(key) % u64::from(partitions.max(1))) as u32
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
