//! The bus on Kafka, against a real Kafka-protocol broker (tansu, started by the test kit): order per partition
//! and Java's placement of keys, a group's members sharing the partitions, resuming after a commit, redelivery
//! without one, and errors rather than hangs while the broker is down, then recovery.
//!
//! The checks are plain functions of a `Bus` and a prefix that names their topics and groups, so that any bus
//! can be put through them. Volumes stay small and every call has a deadline.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use origin::bus::{Bus, Consumer, Record, StartAt};
use origin::config::BusConfig;
use testkit::KafkaBroker;
use tokio::time::{Instant, timeout};

/// Partitions of every topic the tests create.
const PARTITIONS: u32 = 4;
/// Longest one step (a call, or polling until the records expected are in) may take.
const STEP: Duration = Duration::from_secs(60);
/// How long a consumer waits in one poll.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Longest a call may take to fail when the broker is down.
const FAIL_FAST: Duration = Duration::from_secs(20);
/// How long a consumer must see nothing for a check that nothing more comes.
const QUIET: Duration = Duration::from_millis(1500);

/// A broker, and a bus on it with `PARTITIONS` partitions per topic.
async fn kafka_bus() -> (KafkaBroker, Bus, tempfile::TempDir) {
    let broker = KafkaBroker::start();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let config = BusConfig {
        url: Some(broker.url()),
        partitions: PARTITIONS,
        ..Default::default()
    };
    let bus = within("Bus::open", Bus::open(&config, data_dir.path()))
        .await
        .unwrap_or_else(|e| panic!("open the bus: {e:#}\ntansu's log:\n{}", broker.log()));
    (broker, bus, data_dir)
}

/// `future`, or a panic naming `what` if it takes longer than `STEP`.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

/// Creates `topic` and publishes `values` to it, each keyed `<prefix>-title-<value % 10>`, in one publish per
/// ten values.
async fn publish_values(bus: &Bus, prefix: &str, topic: &str, values: std::ops::Range<u32>) {
    let records: Vec<(Bytes, Bytes)> = values
        .map(|v| (Bytes::from(key(prefix, v)), Bytes::from(v.to_string())))
        .collect();
    for chunk in records.chunks(10) {
        within("publish", bus.publish(topic, chunk.to_vec()))
            .await
            .expect("publish");
    }
}

fn key(prefix: &str, value: u32) -> String {
    format!("{prefix}-title-{}", value % 10)
}

fn value_of(record: &Record) -> u32 {
    std::str::from_utf8(&record.value)
        .expect("utf-8")
        .parse()
        .expect("a number")
}

async fn create_topic(bus: &Bus, topic: &str) {
    within("ensure_topics", bus.ensure_topics(&[topic]))
        .await
        .expect("ensure_topics");
}

async fn subscribe(bus: &Bus, group: &str, topic: &str) -> Consumer {
    within(
        "subscribe",
        bus.subscribe(group, &[topic], StartAt::Earliest),
    )
    .await
    .expect("subscribe")
}

/// Polls until `consumer` has returned `n` records (no more are asked for).
async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<Record> {
    let deadline = Instant::now() + STEP;
    let mut records = Vec::new();
    while records.len() < n {
        assert!(
            Instant::now() < deadline,
            "{} of {n} records after {STEP:?}",
            records.len()
        );
        let batch = within("poll", consumer.poll(n - records.len(), POLL_WAIT))
            .await
            .expect("poll");
        records.extend(batch);
    }
    records
}

/// Checks that `consumer` returns nothing for `QUIET`.
async fn assert_quiet(consumer: &mut Consumer) {
    let deadline = Instant::now() + QUIET;
    while Instant::now() < deadline {
        let extra = within("poll", consumer.poll(100, POLL_WAIT))
            .await
            .expect("poll");
        assert!(
            extra.is_empty(),
            "records past those expected: {:?}",
            extra.iter().map(value_of).collect::<Vec<_>>()
        );
    }
}

async fn commit(consumer: &mut Consumer) {
    within("commit", consumer.commit()).await.expect("commit");
}

/// The values of `records`, sorted.
fn values(records: &[Record]) -> Vec<u32> {
    let mut values: Vec<u32> = records.iter().map(value_of).collect();
    values.sort_unstable();
    values
}

/// Records published to one topic come back in offset order per partition, a key always in one partition (the
/// one Java clients pick) and in the order published.
pub async fn order_per_partition(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-order");
    create_topic(bus, &topic).await;
    publish_values(bus, prefix, &topic, 0..40).await;

    let mut consumer = subscribe(bus, &format!("{prefix}-order-readers"), &topic).await;
    let records = poll_n(&mut consumer, 40).await;
    assert_quiet(&mut consumer).await;
    assert_eq!(values(&records), (0..40).collect::<Vec<_>>());

    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    let mut partition_of_key: HashMap<Bytes, u32> = HashMap::new();
    let mut last_value_of_key: HashMap<Bytes, u32> = HashMap::new();
    for record in &records {
        assert_eq!(record.topic, topic);
        assert!(record.partition < PARTITIONS);
        if let Some(last) = last_offset.insert(record.partition, record.offset) {
            assert!(
                record.offset > last,
                "partition {}: offset {} after {last}",
                record.partition,
                record.offset
            );
        }
        let partition = *partition_of_key
            .entry(record.key.clone())
            .or_insert(record.partition);
        assert_eq!(record.partition, partition, "one key, two partitions");
        assert_eq!(
            record.partition,
            java_partition(&record.key, PARTITIONS),
            "key {:?} is not where Java clients put it",
            record.key
        );
        let value = value_of(record);
        if let Some(last) = last_value_of_key.insert(record.key.clone(), value) {
            assert!(value > last, "key {:?}: {value} after {last}", record.key);
        }
        let age_ms = origin::bus::now_ms() - record.timestamp_ms;
        assert!(
            (0..600_000).contains(&age_ms),
            "timestamp {}",
            record.timestamp_ms
        );
    }
}

/// Two members of one group hold disjoint sets of partitions that cover the topic, and between them read
/// every record once, each from a partition it holds; when one leaves, the other takes its partitions.
pub async fn members_share_partitions(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-shared");
    let group = format!("{prefix}-shared-readers");
    create_topic(bus, &topic).await;
    let mut first = subscribe(bus, &group, &topic).await;
    let mut second = subscribe(bus, &group, &topic).await;

    // Both joined: their assignments split the partitions.
    let all: BTreeSet<(String, u32)> = (0..PARTITIONS).map(|p| (topic.clone(), p)).collect();
    let deadline = Instant::now() + STEP;
    loop {
        for member in [&mut first, &mut second] {
            let early = within("poll", member.poll(10, POLL_WAIT))
                .await
                .expect("poll");
            assert!(early.is_empty(), "records before any was published");
        }
        let (a, b): (BTreeSet<_>, BTreeSet<_>) = (
            first.assignment().into_iter().collect(),
            second.assignment().into_iter().collect(),
        );
        if !a.is_empty() && !b.is_empty() && a.is_disjoint(&b) && a.union(&b).eq(all.iter()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no split of the partitions after {STEP:?}: {a:?} and {b:?}"
        );
    }

    publish_values(bus, prefix, &topic, 0..40).await;
    let mut seen: BTreeMap<(u32, u64), u32> = BTreeMap::new();
    let deadline = Instant::now() + STEP;
    while seen.len() < 40 {
        assert!(Instant::now() < deadline, "{} of 40 records", seen.len());
        for member in [&mut first, &mut second] {
            let held = member.assignment();
            for record in within("poll", member.poll(40, POLL_WAIT))
                .await
                .expect("poll")
            {
                assert!(
                    held.contains(&(record.topic.clone(), record.partition)),
                    "a record of partition {} that the member does not hold ({held:?})",
                    record.partition
                );
                let first_time = seen
                    .insert((record.partition, record.offset), value_of(&record))
                    .is_none();
                assert!(first_time, "a record read twice");
            }
        }
    }
    let mut together: Vec<u32> = seen.values().copied().collect();
    together.sort_unstable();
    assert_eq!(together, (0..40).collect::<Vec<_>>());
    commit(&mut first).await;
    commit(&mut second).await;

    // One leaves; the other is given every partition.
    drop(second);
    let deadline = Instant::now() + STEP;
    loop {
        let late = within("poll", first.poll(10, POLL_WAIT))
            .await
            .expect("poll");
        assert!(late.is_empty(), "records read again after a commit");
        let held: BTreeSet<_> = first.assignment().into_iter().collect();
        if held == all {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the remaining member holds {held:?}"
        );
    }
}

/// A member that restarts reads again the records after its group's last commit, and none before it.
pub async fn restart_resumes_after_commit(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-resume");
    let group = format!("{prefix}-resume-readers");
    create_topic(bus, &topic).await;

    publish_values(bus, prefix, &topic, 0..20).await;
    let mut consumer = subscribe(bus, &group, &topic).await;
    assert_eq!(
        values(&poll_n(&mut consumer, 20).await),
        (0..20).collect::<Vec<_>>()
    );
    commit(&mut consumer).await;

    publish_values(bus, prefix, &topic, 20..40).await;
    let uncommitted = poll_n(&mut consumer, 20).await;
    assert_eq!(values(&uncommitted), (20..40).collect::<Vec<_>>());
    drop(consumer);

    let mut restarted = subscribe(bus, &group, &topic).await;
    let again = poll_n(&mut restarted, 20).await;
    assert_quiet(&mut restarted).await;
    let places = |records: &[Record]| -> BTreeSet<(u32, u64)> {
        records.iter().map(|r| (r.partition, r.offset)).collect()
    };
    assert_eq!(places(&again), places(&uncommitted));
    assert_eq!(values(&again), (20..40).collect::<Vec<_>>());
}

/// A member that stops without committing leaves its records to be read again.
pub async fn redelivery_without_commit(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-redeliver");
    let group = format!("{prefix}-redeliver-readers");
    create_topic(bus, &topic).await;
    publish_values(bus, prefix, &topic, 0..20).await;

    let mut consumer = subscribe(bus, &group, &topic).await;
    let first = poll_n(&mut consumer, 20).await;
    drop(consumer);

    let mut restarted = subscribe(bus, &group, &topic).await;
    let again = poll_n(&mut restarted, 20).await;
    assert_quiet(&mut restarted).await;
    let places = |records: &[Record]| -> BTreeSet<(u32, u64)> {
        records.iter().map(|r| (r.partition, r.offset)).collect()
    };
    assert_eq!(places(&again), places(&first));
    assert_eq!(values(&again), (0..20).collect::<Vec<_>>());
}

/// The partition Java's default partitioner gives `key`: murmur2 of the key, sign bit cleared, modulo the
/// partition count (`org.apache.kafka.common.utils.Utils.murmur2`).
fn java_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes(chunk.try_into().expect("4 bytes"));
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

#[test]
fn murmur2_matches_java() {
    // Kafka's own test vectors (UtilsTest.testMurmur2), as Java's signed ints.
    for (input, java) in [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58897971,
        ),
        ("abc", 479470107),
    ] {
        assert_eq!(murmur2(input.as_bytes()) as i32, java, "{input}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_keeps_order_per_partition() {
    let (_broker, bus, _dir) = kafka_bus().await;
    order_per_partition(&bus, "order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_members_share_partitions() {
    let (_broker, bus, _dir) = kafka_bus().await;
    members_share_partitions(&bus, "share").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_restart_resumes_after_commit() {
    let (_broker, bus, _dir) = kafka_bus().await;
    restart_resumes_after_commit(&bus, "resume").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_redelivers_without_commit() {
    let (_broker, bus, _dir) = kafka_bus().await;
    redelivery_without_commit(&bus, "redeliver").await;
}

/// With the broker gone, calls fail within their timeouts instead of hanging; when it is back, the same bus
/// and consumer work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_fails_fast_then_recovers() {
    let (mut broker, bus, _dir) = kafka_bus().await;
    let topic = "down-events";
    create_topic(&bus, topic).await;
    publish_values(&bus, "down", topic, 0..10).await;
    let mut consumer = subscribe(&bus, "down-readers", topic).await;
    poll_n(&mut consumer, 10).await;
    broker.stop();

    let publish = failing_fast(
        "publish",
        bus.publish(topic, vec![(Bytes::from("k"), Bytes::from("1000"))]),
    )
    .await;
    assert!(publish.is_err(), "a publish with no broker succeeded");
    let created = failing_fast("ensure_topics", bus.ensure_topics(&["down-other"])).await;
    assert!(created.is_err(), "topics created with no broker");
    let committed = failing_fast("commit", consumer.commit()).await;
    assert!(committed.is_err(), "a commit with no broker succeeded");
    let _ = failing_fast("poll", consumer.poll(10, POLL_WAIT)).await;

    broker.start_again();
    publish_values(&bus, "down", topic, 10..20).await;
    // Nothing was committed: the member reads from the start again (or from where it was, if it kept its
    // place in the group), and in any case gets the new records.
    let deadline = Instant::now() + STEP;
    let mut seen = BTreeSet::new();
    while !(10..20).all(|v| seen.contains(&v)) {
        assert!(
            Instant::now() < deadline,
            "after the restart, only {seen:?}"
        );
        if let Ok(records) = within("poll", consumer.poll(100, POLL_WAIT)).await {
            seen.extend(records.iter().map(value_of));
        }
    }
    assert!(seen.iter().all(|v| *v < 20 || *v == 1000), "{seen:?}");
    commit(&mut consumer).await;
}

/// `future`'s output, checking that it came within `FAIL_FAST`.
async fn failing_fast<T>(what: &str, future: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = within(what, future).await;
    assert!(
        started.elapsed() < FAIL_FAST,
        "{what} took {:?} to fail",
        started.elapsed()
    );
    output
}
