//! The bus contract: what every implementation of `origin::bus::Bus` must do, as plain functions of a `Bus` and a
//! prefix that names their topics and groups, so the embedded log (`tests/bus.rs`) and Kafka against a real
//! broker (`tests/bus_kafka.rs`) go through the same checks: order per partition and a key's one partition, a
//! group's members sharing the partitions (and one taking over when the other leaves), resuming after a commit,
//! redelivery without one, a new group starting at the latest offset. The bus must have been opened with
//! `PARTITIONS` partitions per topic. Volumes stay small and every call has a deadline.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use origin::bus::{Bus, Consumer, Record, StartAt};
use tokio::time::{Instant, timeout};

/// Partitions of every topic the checks create.
pub const PARTITIONS: u32 = 4;
/// Longest one step (a call, or polling until the records expected are in) may take.
pub const STEP: Duration = Duration::from_secs(60);
/// How long a consumer waits in one poll.
pub const POLL_WAIT: Duration = Duration::from_millis(200);
/// How long a consumer must see nothing for a check that nothing more comes.
const QUIET: Duration = Duration::from_millis(1500);
/// How long `drain` waits for records it expects.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `future`, or a panic naming `what` if it takes longer than `STEP`.
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

/// Creates `topic` and publishes `values` to it, each keyed `<prefix>-title-<value % 10>`, in one publish per
/// ten values.
pub async fn publish_values(bus: &Bus, prefix: &str, topic: &str, values: std::ops::Range<u32>) {
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

pub fn value_of(record: &Record) -> u32 {
    std::str::from_utf8(&record.value)
        .expect("utf-8")
        .parse()
        .expect("a number")
}

pub async fn create_topic(bus: &Bus, topic: &str) {
    within("ensure_topics", bus.ensure_topics(&[topic]))
        .await
        .expect("ensure_topics");
}

pub async fn subscribe(bus: &Bus, group: &str, topic: &str) -> Consumer {
    within(
        "subscribe",
        bus.subscribe(group, &[topic], StartAt::Earliest),
    )
    .await
    .expect("subscribe")
}

/// Polls until `consumer` has returned `n` records (no more are asked for).
pub async fn poll_n(consumer: &mut Consumer, n: usize) -> Vec<Record> {
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

pub async fn commit(consumer: &mut Consumer) {
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
/// `placement`, when given, is where each key must land (Kafka: where Java clients put it).
pub async fn order_per_partition(
    bus: &Bus,
    prefix: &str,
    placement: Option<fn(&[u8], u32) -> u32>,
) {
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
        if let Some(place) = placement {
            assert_eq!(
                record.partition,
                place(&record.key, PARTITIONS),
                "key {:?} is not where the bus's partitioner puts it",
                record.key
            );
        }
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

/// Polls `consumer` until `want` records came or `PATIENCE` ran out.
pub async fn drain(consumer: &mut Consumer, want: usize) -> Vec<Record> {
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let got = consumer
            .poll(want - out.len(), Duration::from_millis(200))
            .await
            .expect("poll");
        out.extend(got);
    }
    out
}

/// Polls `consumer` for `window` and returns whatever came (to show nothing more does).
pub async fn quiet(consumer: &mut Consumer, window: Duration) -> Vec<Record> {
    let deadline = Instant::now() + window;
    let mut out = Vec::new();
    while Instant::now() < deadline {
        out.extend(
            consumer
                .poll(100, Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    out
}

/// A new group starting at the latest offset sees only what is published after it joined.
pub async fn latest_sees_only_new(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-latest");
    bus.ensure_topics(&[&topic]).await.unwrap();
    bus.publish(&topic, vec![(Bytes::from("k"), Bytes::from("old"))])
        .await
        .unwrap();
    let mut consumer = bus
        .subscribe(&format!("{prefix}-late"), &[&topic], StartAt::Latest)
        .await
        .unwrap();
    // Joining takes a moment on Kafka; the first polls see nothing old.
    assert!(
        quiet(&mut consumer, Duration::from_secs(2))
            .await
            .is_empty()
    );
    bus.publish(&topic, vec![(Bytes::from("k"), Bytes::from("new"))])
        .await
        .unwrap();
    let got = drain(&mut consumer, 1).await;
    assert_eq!(
        got.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        ["new"]
    );
}
