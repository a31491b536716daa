//! A 4 GiB object (a sparse file) is streamed, never read whole: ranges at the start, middle and end are exact,
//! and the origin's resident memory stays under 100 MiB while the whole object streams.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{TempStore, curl, start_origin, tool};

const LEN: u64 = 4 << 30;

#[test]
fn four_gib_object_ranges_and_flat_rss() {
    let store = TempStore::new();
    store.put_sparse("big/rendition.mp4", LEN);
    let origin = start_origin(&store.url(), "");
    let url = format!("{}/big/rendition.mp4", origin.url("media_addr"));

    let head = curl(&["-I", &url]);
    assert_eq!(
        head.header("content-length"),
        Some(LEN.to_string().as_str())
    );
    let start = curl(&["-r", "0-1023", &url]);
    assert_eq!((start.status, start.body.len()), (206, 1024));
    assert!(start.body.iter().all(|b| *b == 0));
    let middle = (LEN / 2).to_string();
    let middle_range = format!("{middle}-{}", LEN / 2 + 65535);
    let mid = curl(&["--http2-prior-knowledge", "-r", &middle_range, &url]);
    assert_eq!((mid.status, mid.body.len()), (206, 65536));
    assert_eq!(
        mid.header("content-range"),
        Some(format!("bytes {middle_range}/{LEN}").as_str())
    );
    let end = curl(&["-r", "-8", &url]);
    assert_eq!(end.status, 206);
    assert_eq!(
        end.body,
        LEN.to_be_bytes(),
        "the last 8 bytes spell the length"
    );
    assert_eq!(
        end.header("content-range"),
        Some(format!("bytes {}-{}/{LEN}", LEN - 8, LEN - 1).as_str())
    );

    // Stream the whole object through a real client and sample the origin's RSS meanwhile.
    let mut child = Command::new(tool("curl"))
        .args([
            "-sS",
            "--max-time",
            "300",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            &url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak_kib = 0;
    while child.try_wait().expect("wait").is_none() {
        assert!(
            Instant::now() < deadline,
            "4 GiB download took more than 5 minutes"
        );
        peak_kib = peak_kib.max(origin.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut summary = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut summary)
        .unwrap();
    assert_eq!(summary, format!("200 {LEN}"));
    assert!(peak_kib > 0);
    assert!(
        peak_kib < 100 * 1024,
        "origin RSS peaked at {peak_kib} KiB while streaming 4 GiB"
    );
    eprintln!(
        "origin RSS peak while streaming 4 GiB: {} MiB",
        peak_kib / 1024
    );
    let event = origin.wait_for_event("access", |e| e["status"] == 200 && e["method"] == "GET");
    assert_eq!(event["bytes"], LEN);
    assert_eq!(event["complete"], true);
}
