//! The bus contract: what every implementation of `origin::bus::Bus` must do, as functions over a `Bus` so the
//! embedded log (`tests/bus.rs`) and Kafka (`tests/bus_kafka.rs`) run the same checks. Each check uses topics
//! and groups named from `prefix`, so checks never see each other's records.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use origin::bus::{Bus, Consumer, Record, StartAt};

/// How long a check waits for records it expects before failing.
pub const PATIENCE: Duration = Duration::from_secs(30);

fn record(key: &str, value: String) -> (Bytes, Bytes) {
    (Bytes::from(key.to_string()), Bytes::from(value))
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

fn text(record: &Record) -> String {
    String::from_utf8_lossy(&record.value).into_owned()
}

/// Records of one key come in the order they were published, offsets grow within a partition, and a second
/// group sees every record too.
pub async fn order_per_partition(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-order");
    bus.ensure_topics(&[&topic]).await.unwrap();
    let keys = ["alpha", "beta", "gamma", "delta"];
    let per_key = 15;
    // Publishes of one key are sequential; publishes of different keys run concurrently.
    let publishes = keys.iter().map(|key| {
        let (bus, topic) = (bus.clone(), topic.clone());
        async move {
            for i in 0..per_key {
                bus.publish(&topic, vec![record(key, format!("{key}:{i}"))])
                    .await
                    .unwrap();
            }
        }
    });
    futures::future::join_all(publishes).await;
    for group in ["first", "second"] {
        let mut consumer = bus
            .subscribe(&format!("{prefix}-{group}"), &[&topic], StartAt::Earliest)
            .await
            .unwrap();
        let records = drain(&mut consumer, keys.len() * per_key).await;
        assert_eq!(records.len(), keys.len() * per_key, "group {group}");
        let mut seen: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
        let mut partition_of: BTreeMap<Bytes, u32> = BTreeMap::new();
        for r in &records {
            let (key, i) = text(r)
                .split_once(':')
                .map(|(k, i)| (k.to_string(), i.parse().unwrap()))
                .unwrap();
            assert_eq!(&r.key[..], key.as_bytes());
            seen.entry(key).or_default().push(i);
            if let Some(before) = last_offset.insert(r.partition, r.offset) {
                assert!(
                    r.offset > before,
                    "offsets grow within partition {}",
                    r.partition
                );
            }
            assert_eq!(
                *partition_of.entry(r.key.clone()).or_insert(r.partition),
                r.partition
            );
            assert!(r.timestamp_ms > 1_600_000_000_000, "a timestamp in ms");
        }
        for key in keys {
            assert_eq!(
                seen[key],
                (0..per_key).collect::<Vec<_>>(),
                "order of {key}"
            );
        }
    }
}

/// Two members of a group split the partitions between them, disjoint and together whole, and between them
/// receive every record once.
pub async fn members_share_partitions(bus: &Bus, prefix: &str, partitions: u32) {
    let topic = format!("{prefix}-share");
    bus.ensure_topics(&[&topic]).await.unwrap();
    let group = format!("{prefix}-sharers");
    let mut a = bus
        .subscribe(&group, &[&topic], StartAt::Earliest)
        .await
        .unwrap();
    let mut b = bus
        .subscribe(&group, &[&topic], StartAt::Earliest)
        .await
        .unwrap();
    // Let the group settle: both poll until the assignment covers every partition, split between them.
    let deadline = Instant::now() + PATIENCE;
    loop {
        a.poll(10, Duration::from_millis(100)).await.unwrap();
        b.poll(10, Duration::from_millis(100)).await.unwrap();
        let (sa, sb): (BTreeSet<_>, BTreeSet<_>) = (
            a.assignment().into_iter().collect(),
            b.assignment().into_iter().collect(),
        );
        if !sa.is_empty()
            && !sb.is_empty()
            && sa.is_disjoint(&sb)
            && (sa.len() + sb.len()) as u32 == partitions
        {
            break;
        }
        assert!(Instant::now() < deadline, "no split: {sa:?} / {sb:?}");
    }
    let total = 40;
    let records: Vec<_> = (0..total)
        .map(|i| record(&format!("title-{i}"), format!("{i}")))
        .collect();
    bus.publish(&topic, records).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    let (mut from_a, mut from_b) = (Vec::new(), Vec::new());
    while from_a.len() + from_b.len() < total && Instant::now() < deadline {
        from_a.extend(a.poll(100, Duration::from_millis(100)).await.unwrap());
        from_b.extend(b.poll(100, Duration::from_millis(100)).await.unwrap());
    }
    let mut all: Vec<usize> = from_a
        .iter()
        .chain(&from_b)
        .map(|r| text(r).parse().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..total).collect::<Vec<_>>(), "every record once");
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both members got records"
    );
    let parts_a: BTreeSet<u32> = from_a.iter().map(|r| r.partition).collect();
    let parts_b: BTreeSet<u32> = from_b.iter().map(|r| r.partition).collect();
    assert!(parts_a.is_disjoint(&parts_b));
}

/// A member that restarts resumes after the group's last commit: what it read but did not commit comes again
/// (redelivery), nothing committed does.
pub async fn resume_from_commit(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-resume");
    bus.ensure_topics(&[&topic]).await.unwrap();
    let group = format!("{prefix}-resumer");
    // One key: one partition, one order.
    let first: Vec<_> = (0..10)
        .map(|i| record("one-title", format!("{i}")))
        .collect();
    bus.publish(&topic, first).await.unwrap();
    {
        let mut consumer = bus
            .subscribe(&group, &[&topic], StartAt::Earliest)
            .await
            .unwrap();
        let got = drain(&mut consumer, 10).await;
        assert_eq!(got.len(), 10);
        consumer.commit().await.unwrap();
        let more: Vec<_> = (10..15)
            .map(|i| record("one-title", format!("{i}")))
            .collect();
        bus.publish(&topic, more).await.unwrap();
        let got = drain(&mut consumer, 5).await;
        assert_eq!(
            got.iter().map(text).collect::<Vec<_>>(),
            ["10", "11", "12", "13", "14"]
        );
        // Not committed: dropped here.
    }
    let mut again = bus
        .subscribe(&group, &[&topic], StartAt::Earliest)
        .await
        .unwrap();
    let got = drain(&mut again, 5).await;
    assert_eq!(
        got.iter().map(text).collect::<Vec<_>>(),
        ["10", "11", "12", "13", "14"],
        "redelivered"
    );
    again.commit().await.unwrap();
    assert!(
        quiet(&mut again, Duration::from_millis(500))
            .await
            .is_empty()
    );
}

/// A new group starting at the latest offset sees only what is published after it joined.
pub async fn latest_sees_only_new(bus: &Bus, prefix: &str) {
    let topic = format!("{prefix}-latest");
    bus.ensure_topics(&[&topic]).await.unwrap();
    bus.publish(&topic, vec![record("k", "old".into())])
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
    bus.publish(&topic, vec![record("k", "new".into())])
        .await
        .unwrap();
    let got = drain(&mut consumer, 1).await;
    assert_eq!(got.iter().map(text).collect::<Vec<_>>(), ["new"]);
}
