//! Memory stays bounded: with a 256 MiB memory tier, the edge's resident memory after serving 2 GiB of distinct
//! content stays under 256 + 64 MiB.

use std::time::Duration;

use testkit::{TempStore, TestCerts, start_edge, start_origin, tool};

#[test]
fn rss_stays_under_the_memory_tier_plus_64_mib_after_2_gib_of_distinct_content() {
    const OBJECTS: u64 = 8;
    const LEN: u64 = 256 << 20;
    let store = TempStore::new();
    for i in 0..OBJECTS {
        store.put_sparse(&format!("big/{i}.mp4"), LEN);
    }
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    // A disk tier small enough for any test machine's temporary folder: the edge refuses a `disk_bytes`
    // larger than the free space, and its RSS is what is measured here.
    let extra = "[cache]\nmemory_bytes = 268435456\ndisk_bytes = 268435456\n";
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, extra);
    let port = edge.addr("http_addr").port();
    let mut peak_kib = 0;
    for i in 0..OBJECTS {
        let mut child = std::process::Command::new(tool("curl"))
            .args([
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{size_download}",
            ])
            .arg(format!("http://127.0.0.1:{port}/big/{i}.mp4"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        while child.try_wait().unwrap().is_none() {
            peak_kib = peak_kib.max(edge.rss_kib());
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            format!("200 {LEN}"),
            "object {i}"
        );
    }
    peak_kib = peak_kib.max(edge.rss_kib());
    eprintln!(
        "edge RSS peak while serving 2 GiB of distinct content: {} MiB (memory tier 256 MiB)",
        peak_kib / 1024
    );
    assert!(
        peak_kib < (256 + 64) * 1024,
        "RSS peaked at {} MiB",
        peak_kib / 1024
    );
    // The allocator's own account, which tells a leak (allocated) from pages kept (resident): present, and
    // consistent with the process's RSS.
    let metrics = testkit::curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    let gauge = |state: &str| -> u64 {
        let prefix = format!("edge_allocator_bytes{{state=\"{state}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no allocator `{state}` gauge in:\n{metrics}")) as u64
    };
    let (allocated, resident, rss) = (gauge("allocated"), gauge("resident"), edge.rss_kib() * 1024);
    eprintln!(
        "jemalloc: allocated {} MiB, resident {} MiB; RSS {} MiB",
        allocated >> 20,
        resident >> 20,
        rss >> 20
    );
    assert!(
        allocated > 0 && allocated <= resident,
        "{allocated} > {resident}"
    );
    assert!(
        resident <= rss + (8 << 20),
        "jemalloc resident {resident} past RSS {rss}"
    );
}
