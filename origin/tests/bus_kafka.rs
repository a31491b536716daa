//! The bus on Kafka, against a real Kafka-protocol broker (tansu, started by the test kit): the bus contract
//! (`bus_contract`, the same checks as the embedded log's) with keys placed where Java clients put them, and
//! errors rather than hangs while the broker is down, then recovery.

mod bus_contract;

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use bus_contract::{
    PARTITIONS, POLL_WAIT, STEP, commit, create_topic, poll_n, publish_values, subscribe, value_of,
    within,
};
use bytes::Bytes;
use origin::bus::Bus;
use origin::config::BusConfig;
use testkit::KafkaBroker;
use tokio::time::Instant;

/// Longest a call may take to fail when the broker is down.
const FAIL_FAST: Duration = Duration::from_secs(20);

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
    bus_contract::order_per_partition(&bus, "order", Some(java_partition)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_members_share_partitions() {
    let (_broker, bus, _dir) = kafka_bus().await;
    bus_contract::members_share_partitions(&bus, "share").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_restart_resumes_after_commit() {
    let (_broker, bus, _dir) = kafka_bus().await;
    bus_contract::restart_resumes_after_commit(&bus, "resume").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_redelivers_without_commit() {
    let (_broker, bus, _dir) = kafka_bus().await;
    bus_contract::redelivery_without_commit(&bus, "redeliver").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_latest_sees_only_new() {
    let (_broker, bus, _dir) = kafka_bus().await;
    bus_contract::latest_sees_only_new(&bus, "latest").await;
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
