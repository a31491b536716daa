//! The bus on Kafka, for control planes on several hosts: a thin layer over librdkafka (the `rdkafka` crate,
//! built from its bundled source) that gives Kafka the bus's interface.
//!
//! - Publishing waits until the partition leader and its in-sync replicas hold every record (`acks=all`), one
//!   request in flight per broker so that retries cannot reorder a key's records. Keys go to partitions by
//!   murmur2, as Java clients place them, so other Kafka tools agree on where a title's records are.
//! - Consuming uses Kafka's consumer groups; offsets are committed only by `commit`, past the records `poll`
//!   has returned, so delivery is at least once.
//! - Nothing waits forever: every request has a timeout on the wire, and every call a deadline, so a broker
//!   that is down shows as an error within seconds rather than as a hang.
//!
//! `[bus] options` are librdkafka settings applied to every client after the defaults below, so any of them
//! can be changed (security, timeouts, client id).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use futures::FutureExt as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::{Record, StartAt};
use crate::config::BusConfig;

/// Longest a request may wait for a broker's answer (librdkafka's `socket.timeout.ms`, whose own default is
/// 60 s): admin requests and commits fail after this when a broker is down or wedged.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a published record may take to be acknowledged, retries included (`message.timeout.ms`, whose
/// librdkafka default is 5 minutes): a publish fails after this rather than holding its caller.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a broker holds a fetch open waiting for records (`fetch.wait.max.ms`, librdkafka default 500 ms):
/// short, so a record reaches its consumers within a tenth of a second of being published.
const FETCH_WAIT: Duration = Duration::from_millis(100);
/// How long a group waits for a member that stopped heartbeating before giving its partitions to the others
/// (`session.timeout.ms`, librdkafka default 45 s). librdkafka also holds a commit this long waiting for a
/// coordinator, and a closing consumer waits for such commits: with a broker down, closing takes up to this.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack added to librdkafka's own timeouts for the deadline of a whole call, so that librdkafka's error (which
/// says more) normally arrives first.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);
/// How long `publish` waits for room when librdkafka's local queue is full before trying again.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(20);

/// A setting's value, under all the names librdkafka accepts for it.
type Setting = (&'static [&'static str], String);

/// Settings every client gets: a default is left out when `[bus] options` sets it under any of its names
/// (librdkafka applies settings in no set order, so two names for one setting would race).
fn common_defaults() -> Vec<Setting> {
    vec![
        (&["client.id"], "origin".to_string()),
        (&["socket.timeout.ms"], millis(REQUEST_TIMEOUT)),
    ]
}

fn producer_defaults() -> Vec<Setting> {
    vec![
        (&["acks", "request.required.acks"], "all".to_string()),
        // One request at a time per broker, so that a retried batch cannot land behind a later one: records of
        // a key keep their order. A retry may still store a batch twice (at least once, as the bus promises).
        // The idempotent producer would also drop such duplicates, but tansu, the broker the tests run, wedges
        // on the producer epoch librdkafka bumps after a delivery timeout; `enable.idempotence = "true"` in
        // `[bus] options` turns it on for a real Kafka.
        (
            &["max.in.flight.requests.per.connection", "max.in.flight"],
            "1".to_string(),
        ),
        // Java clients' hash of the key, so other Kafka tools place a key where the bus does.
        (&["partitioner"], "murmur2_random".to_string()),
        (
            &["compression.type", "compression.codec"],
            "none".to_string(),
        ),
        (
            &["message.timeout.ms", "delivery.timeout.ms"],
            millis(DELIVERY_TIMEOUT),
        ),
    ]
}

fn consumer_defaults() -> Vec<Setting> {
    vec![
        (&["fetch.wait.max.ms"], millis(FETCH_WAIT)),
        (&["session.timeout.ms"], millis(SESSION_TIMEOUT)),
    ]
}

fn millis(duration: Duration) -> String {
    duration.as_millis().to_string()
}

/// A connection to a Kafka cluster, cheap to clone.
#[derive(Clone)]
pub struct KafkaBus {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port,host:port`, as librdkafka's `bootstrap.servers`.
    brokers: String,
    partitions: u32,
    replication: i32,
    options: Vec<(String, String)>,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// The deadline of a whole publish: the delivery timeout in force, plus slack.
    publish_deadline: Duration,
}

impl KafkaBus {
    /// Makes the clients for the cluster `config.url` names. They connect in the background: this does no
    /// network I/O, and a cluster that cannot be reached shows in the first call that needs it.
    pub fn connect(config: &BusConfig) -> anyhow::Result<KafkaBus> {
        let brokers = parse_url(config.url.as_deref().unwrap_or_default())?;
        let options: Vec<(String, String)> = config
            .options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let producer_config = client_config(&brokers, &options, &producer_defaults(), &[]);
        let producer: FutureProducer = producer_config
            .create()
            .context("bus: the Kafka producer's settings")?;
        let admin: AdminClient<DefaultClientContext> = client_config(&brokers, &options, &[], &[])
            .create()
            .context("bus: the Kafka admin client's settings")?;
        let delivery_timeout = ["message.timeout.ms", "delivery.timeout.ms"]
            .iter()
            .find_map(|key| producer_config.get(key)?.parse().ok())
            .map_or(DELIVERY_TIMEOUT, Duration::from_millis);
        Ok(KafkaBus {
            inner: Arc::new(Inner {
                brokers,
                partitions: config.partitions,
                replication: config.replication,
                options,
                producer,
                admin,
                publish_deadline: delivery_timeout + DEADLINE_SLACK,
            }),
        })
    }

    /// The bootstrap brokers, `host:port,…`.
    pub fn brokers(&self) -> &str {
        &self.inner.brokers
    }

    /// Creates the topics that do not exist yet with the configured partitions and replication; topics that
    /// exist are left as they are, whatever their partition count.
    pub async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        let partitions = i32::try_from(self.inner.partitions).context("bus.partitions")?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|topic| {
                NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(self.inner.replication),
                )
            })
            .collect();
        let options = AdminOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .operation_timeout(Some(REQUEST_TIMEOUT));
        let results = tokio::time::timeout(
            REQUEST_TIMEOUT + DEADLINE_SLACK,
            self.inner.admin.create_topics(&new_topics, &options),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "kafka at {} did not answer CreateTopics in time",
                self.brokers()
            )
        })?
        .with_context(|| format!("kafka at {}: CreateTopics {topics:?}", self.brokers()))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!(
                    "kafka at {}: cannot create topic `{topic}`: {code}",
                    self.brokers()
                ),
            }
        }
        Ok(())
    }

    /// Publishes `records` to `topic` and returns once the cluster has acknowledged every one of them.
    /// Records are handed to librdkafka in order, so records of one key keep their order.
    pub async fn publish(&self, topic: &str, records: Vec<(Bytes, Bytes)>) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + self.inner.publish_deadline;
        let mut deliveries = Vec::with_capacity(records.len());
        for (key, value) in &records {
            deliveries.push(self.enqueue(topic, key, value, deadline).await?);
        }
        let acknowledged = tokio::time::timeout_at(deadline, futures::future::join_all(deliveries))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "kafka at {} did not acknowledge records for `{topic}` in time",
                    self.brokers()
                )
            })?;
        for delivery in acknowledged {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => {
                    return Err(error).with_context(|| {
                        format!("kafka at {}: publish to `{topic}`", self.brokers())
                    });
                }
                Err(_canceled) => anyhow::bail!("the Kafka producer was shut down mid-publish"),
            }
        }
        Ok(())
    }

    /// Hands one record to librdkafka (which copies it), waiting while its local queue is full.
    async fn enqueue(
        &self,
        topic: &str,
        key: &Bytes,
        value: &Bytes,
        deadline: tokio::time::Instant,
    ) -> anyhow::Result<DeliveryFuture> {
        loop {
            let record = FutureRecord::to(topic).key(&key[..]).payload(&value[..]);
            match self.inner.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((error, _)) => {
                    return Err(error).with_context(|| {
                        format!("kafka at {}: publish to `{topic}`", self.brokers())
                    });
                }
            }
        }
    }

    /// Joins consumer group `group` on `topics`. Joining happens in the background, during `poll`.
    pub fn subscribe(
        &self,
        group: &str,
        topics: &[&str],
        start: StartAt,
    ) -> anyhow::Result<KafkaConsumer> {
        let reset = match start {
            StartAt::Earliest => "earliest",
            StartAt::Latest => "latest",
        };
        let group_settings = [
            ("group.id", group),
            // Offsets move only by `commit`, past records the caller has had: at least once.
            ("enable.auto.commit", "false"),
            // Where a partition with no committed offset starts, and where one whose committed offset is
            // gone (retention) resumes: the same choice either way.
            ("auto.offset.reset", reset),
        ];
        let consumer: StreamConsumer = client_config(
            &self.inner.brokers,
            &self.inner.options,
            &consumer_defaults(),
            &group_settings,
        )
        .create()
        .context("bus: the Kafka consumer's settings")?;
        consumer
            .subscribe(topics)
            .with_context(|| format!("kafka: subscribe to {topics:?}"))?;
        Ok(KafkaConsumer {
            consumer: Some(Arc::new(consumer)),
            next_offsets: HashMap::new(),
        })
    }
}

/// A member of a Kafka consumer group.
pub struct KafkaConsumer {
    /// Always present; an `Option` only so that `Drop` can move it to a blocking thread.
    consumer: Option<Arc<StreamConsumer>>,
    /// Per partition, the offset after the last record `poll` returned and `commit` has not committed yet.
    next_offsets: HashMap<(String, u32), i64>,
}

impl KafkaConsumer {
    fn consumer(&self) -> &Arc<StreamConsumer> {
        self.consumer.as_ref().expect("present until drop")
    }

    /// Up to `max` records, waiting up to `wait` for the first; the others are those already fetched. An error
    /// comes back only when no record came before it (librdkafka keeps retrying whatever failed).
    pub async fn poll(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Record>> {
        let consumer = Arc::clone(self.consumer());
        let mut records = Vec::new();
        match tokio::time::timeout(wait, consumer.recv()).await {
            Err(_elapsed) => return Ok(records),
            Ok(Err(error)) => return Err(error).context("kafka: poll"),
            Ok(Ok(message)) => records.push(to_record(&message)),
        }
        while records.len() < max {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => records.push(to_record(&message)),
                Some(Err(error)) => {
                    tracing::warn!(%error, "kafka: poll");
                    break;
                }
                None => break,
            }
        }
        for record in &records {
            let next = record.offset as i64 + 1;
            let entry = self
                .next_offsets
                .entry((record.topic.clone(), record.partition))
                .or_insert(next);
            *entry = (*entry).max(next);
        }
        Ok(records)
    }

    /// Commits, for every partition this member still holds, the offset after the last record `poll` returned,
    /// and waits for the group coordinator to acknowledge it. Partitions taken away by a rebalance are not
    /// committed: their new holder reads again from the last commit.
    pub async fn commit(&mut self) -> anyhow::Result<()> {
        let held: HashSet<(String, u32)> = self.assignment().into_iter().collect();
        self.next_offsets
            .retain(|partition, _| held.contains(partition));
        if self.next_offsets.is_empty() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), next) in &self.next_offsets {
            offsets.add_partition_offset(topic, *partition as i32, Offset::Offset(*next))?;
        }
        let consumer = Arc::clone(self.consumer());
        // A synchronous commit blocks its thread until the coordinator answers (or librdkafka gives up, after
        // `socket.timeout.ms` or `session.timeout.ms`); the deadline below returns sooner if need be.
        let committing =
            tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync));
        match tokio::time::timeout(REQUEST_TIMEOUT + DEADLINE_SLACK, committing).await {
            Err(_elapsed) => {
                anyhow::bail!("kafka: the group coordinator did not acknowledge a commit in time")
            }
            Ok(joined) => joined?.context("kafka: commit")?,
        }
        self.next_offsets.clear();
        Ok(())
    }

    /// The (topic, partition) pairs the group gives this member now (none until it has joined).
    pub fn assignment(&self) -> Vec<(String, u32)> {
        match self.consumer().assignment() {
            Ok(partitions) => partitions
                .elements()
                .iter()
                .map(|p| (p.topic().to_string(), p.partition() as u32))
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "kafka: assignment");
                Vec::new()
            }
        }
    }
}

impl Drop for KafkaConsumer {
    /// Closing a consumer leaves its group, a round trip to the coordinator that blocks until it is done: on a
    /// blocking thread when there is a runtime, so that a runtime thread never waits on the network.
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || drop(consumer));
            }
            Err(_) => drop(consumer),
        }
    }
}

/// `kafka://host:port[,host:port…]` → `host:port[,host:port…]`.
fn parse_url(url: &str) -> anyhow::Result<String> {
    let brokers = url
        .strip_prefix("kafka://")
        .map(|rest| rest.trim_end_matches('/'))
        .unwrap_or_default();
    let valid = !brokers.is_empty()
        && brokers.split(',').all(|broker| {
            broker
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
    anyhow::ensure!(
        valid,
        "bus.url: `{url}` is not kafka://host:port[,host:port…]"
    );
    Ok(brokers.to_string())
}

/// A client's settings: the common defaults, the role's defaults (each unless `options` sets it), `options`,
/// then `fixed` (what the bus itself depends on, such as the group id).
fn client_config(
    brokers: &str,
    options: &[(String, String)],
    role_defaults: &[Setting],
    fixed: &[(&str, &str)],
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (names, value) in common_defaults().iter().chain(role_defaults) {
        if !options.iter().any(|(key, _)| names.contains(&key.as_str())) {
            config.set(names[0], value);
        }
    }
    for (key, value) in options {
        config.set(key, value);
    }
    for (key, value) in fixed {
        config.set(*key, *value);
    }
    config
}

fn to_record(message: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_string(),
        partition: message.partition() as u32,
        offset: message.offset() as u64,
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: Bytes::copy_from_slice(message.key().unwrap_or_default()),
        value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_lists_brokers() {
        assert_eq!(parse_url("kafka://k1:9092").unwrap(), "k1:9092");
        assert_eq!(
            parse_url("kafka://10.0.0.1:9092,k2:9093/").unwrap(),
            "10.0.0.1:9092,k2:9093"
        );
        assert_eq!(parse_url("kafka://[::1]:9092").unwrap(), "[::1]:9092");
        for bad in [
            "kafka://",
            "kafka://k1",
            "kafka://k1:x",
            "kafka://:9092",
            "kafka://k1:9092,",
            "http://k1:9092",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn options_replace_defaults_under_any_name() {
        let options = vec![
            ("delivery.timeout.ms".to_string(), "30000".to_string()),
            ("client.id".to_string(), "edge-feed".to_string()),
        ];
        let config = client_config("k1:9092", &options, &producer_defaults(), &[]);
        assert_eq!(config.get("message.timeout.ms"), None);
        assert_eq!(config.get("delivery.timeout.ms"), Some("30000"));
        assert_eq!(config.get("client.id"), Some("edge-feed"));
        assert_eq!(config.get("acks"), Some("all"));
        assert_eq!(config.get("partitioner"), Some("murmur2_random"));
    }

    #[test]
    fn the_bus_settings_win_over_options() {
        let options = vec![
            ("group.id".to_string(), "other".to_string()),
            ("fetch.wait.max.ms".to_string(), "500".to_string()),
        ];
        let config = client_config(
            "k1:9092",
            &options,
            &consumer_defaults(),
            &[("group.id", "g")],
        );
        assert_eq!(config.get("group.id"), Some("g"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("500"));
        assert_eq!(config.get("socket.timeout.ms"), Some("10000"));
    }
}
