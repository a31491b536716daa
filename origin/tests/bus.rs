//! The embedded bus: the contract every bus keeps (`bus_contract`, also run against Kafka), and what only a log in a folder must
//! survive: a reopen (a restart), a torn write at the end of a segment, several segments and their retention,
//! and other processes appending to the same partitions.

mod bus_contract;

use std::time::Duration;

use bytes::Bytes;
use origin::bus::{Bus, StartAt};
use origin::config::BusConfig;

async fn embedded(dir: &std::path::Path, partitions: u32) -> Bus {
    let config = BusConfig {
        partitions,
        ..BusConfig::default()
    };
    Bus::open(&config, dir).await.expect("embedded bus")
}

#[tokio::test]
async fn order_per_partition() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path(), bus_contract::PARTITIONS).await;
    bus_contract::order_per_partition(&bus, "t", Some(origin::bus::partition_for)).await;
}

#[tokio::test]
async fn members_share_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path(), bus_contract::PARTITIONS).await;
    bus_contract::members_share_partitions(&bus, "t").await;
}

#[tokio::test]
async fn restart_resumes_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path(), bus_contract::PARTITIONS).await;
    bus_contract::restart_resumes_after_commit(&bus, "t").await;
}

#[tokio::test]
async fn redelivery_without_commit() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path(), bus_contract::PARTITIONS).await;
    bus_contract::redelivery_without_commit(&bus, "t").await;
}

#[tokio::test]
async fn latest_sees_only_new() {
    let dir = tempfile::tempdir().unwrap();
    let bus = embedded(dir.path(), bus_contract::PARTITIONS).await;
    bus_contract::latest_sees_only_new(&bus, "t").await;
}

/// Records and committed offsets outlive the process that wrote them; a torn record at the end of a segment
/// (a crash mid-append) is never delivered and is cut off before the next append.
#[tokio::test]
async fn a_reopened_log_keeps_records_and_offsets_and_cuts_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let bus = embedded(dir.path(), 1).await;
        bus.publish(
            "catalog",
            (0..5)
                .map(|i| (Bytes::from("k"), Bytes::from(format!("{i}"))))
                .collect(),
        )
        .await
        .unwrap();
        let mut consumer = bus
            .subscribe("g", &["catalog"], StartAt::Earliest)
            .await
            .unwrap();
        assert_eq!(bus_contract::drain(&mut consumer, 3).await.len(), 3);
        consumer.commit().await.unwrap();
    }
    // A crash mid-append: half a record's bytes at the end of the segment.
    let segment = std::fs::read_dir(dir.path().join("bus/topics/catalog/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let whole = std::fs::metadata(&segment).unwrap().len();
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&segment)
            .unwrap();
        file.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
    }
    let bus = embedded(dir.path(), 1).await;
    let mut consumer = bus
        .subscribe("g", &["catalog"], StartAt::Earliest)
        .await
        .unwrap();
    let got = bus_contract::drain(&mut consumer, 2).await;
    assert_eq!(
        got.iter().map(|r| r.value.clone()).collect::<Vec<_>>(),
        ["3", "4"]
    );
    assert!(
        bus_contract::quiet(&mut consumer, Duration::from_millis(300))
            .await
            .is_empty(),
        "the torn record is not read"
    );
    bus.publish("catalog", vec![(Bytes::from("k"), Bytes::from("5"))])
        .await
        .unwrap();
    let got = bus_contract::drain(&mut consumer, 1).await;
    assert_eq!(&got[0].value[..], b"5");
    assert_eq!(
        got[0].offset, whole,
        "the torn bytes were cut before the append"
    );
}

/// A partition rolls into several segments that a consumer reads across; retention deletes the oldest whole
/// segments, and a group that had not read them is moved on to what is kept.
#[tokio::test]
async fn segments_roll_and_retention_deletes_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let config = BusConfig {
        partitions: 1,
        segment_bytes: 1 << 20,
        retention_bytes: 2 << 20,
        ..BusConfig::default()
    };
    let bus = Bus::open(&config, dir.path()).await.unwrap();
    let value = Bytes::from(vec![b'x'; 100 * 1024]);
    let mut reader = bus
        .subscribe("reader", &["playback"], StartAt::Earliest)
        .await
        .unwrap();
    let mut read = 0;
    for i in 0..25 {
        bus.publish(
            "playback",
            vec![(Bytes::from(format!("{i}")), value.clone())],
        )
        .await
        .unwrap();
        read += reader
            .poll(100, Duration::from_millis(50))
            .await
            .unwrap()
            .len();
    }
    read += bus_contract::drain(&mut reader, 25 - read).await.len();
    assert_eq!(read, 25, "read across segments");
    let segments = std::fs::read_dir(dir.path().join("bus/topics/playback/0"))
        .unwrap()
        .count();
    assert!(segments >= 2, "{segments} segments");
    for i in 25..60 {
        bus.publish(
            "playback",
            vec![(Bytes::from(format!("{i}")), value.clone())],
        )
        .await
        .unwrap();
    }
    let kept: u64 = std::fs::read_dir(dir.path().join("bus/topics/playback/0"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(
        kept <= 4 << 20,
        "retention keeps about 2 MiB plus the active segment: {kept}"
    );
    let mut late = bus
        .subscribe("late", &["playback"], StartAt::Earliest)
        .await
        .unwrap();
    let got = bus_contract::quiet(&mut late, Duration::from_secs(1)).await;
    assert!(
        !got.is_empty() && got.len() < 60,
        "{} records kept",
        got.len()
    );
    assert_eq!(got.last().map(|r| r.key.clone()), Some(Bytes::from("59")));
}

/// Several processes append to one partition at once (as `origin ingest` does beside a running server): every
/// record arrives whole, each process's in its order.
#[test]
fn processes_append_to_one_partition_without_tearing() {
    let dir = tempfile::tempdir().unwrap();
    let writers: Vec<_> = (0..3)
        .map(|w| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "append_child",
                    "--nocapture",
                    "--include-ignored",
                ])
                .env("BUS_DIR", dir.path())
                .env("BUS_WRITER", w.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success());
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bus = embedded(dir.path(), 1).await;
        let mut consumer = bus
            .subscribe("check", &["catalog"], StartAt::Earliest)
            .await
            .unwrap();
        let got = bus_contract::drain(&mut consumer, 3 * 200).await;
        assert_eq!(got.len(), 600);
        for w in 0..3 {
            let mine: Vec<usize> = got
                .iter()
                .filter_map(|r| {
                    let text = String::from_utf8_lossy(&r.value).into_owned();
                    let (who, i) = text.split_once(':')?;
                    (who == w.to_string()).then(|| i.parse().unwrap())
                })
                .collect();
            assert_eq!(mine, (0..200).collect::<Vec<_>>(), "writer {w}");
        }
    });
}

/// The child of `processes_append_to_one_partition_without_tearing`.
#[test]
#[ignore = "run by processes_append_to_one_partition_without_tearing"]
fn append_child() {
    let (Ok(dir), Ok(who)) = (std::env::var("BUS_DIR"), std::env::var("BUS_WRITER")) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bus = embedded(std::path::Path::new(&dir), 1).await;
        for i in 0..200 {
            bus.publish(
                "catalog",
                vec![(Bytes::from("same-key"), Bytes::from(format!("{who}:{i}")))],
            )
            .await
            .unwrap();
        }
    });
}
