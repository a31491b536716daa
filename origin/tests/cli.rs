//! The `origin` binary's command line: `origin check` accepts good configs and refuses bad ones naming the
//! field; a bad config never starts a server; SIGTERM stops it cleanly.

use std::process::Command;

use testkit::{TempStore, binary, start_origin};

/// Runs `origin ARGS… CONFIG_FILE` with `config` written to a temporary file; returns (success, stdout, stderr).
fn run_origin(args: &[&str], config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary("origin"))
        .args(args)
        .arg(&path)
        .output()
        .unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn check(config: &str) -> (bool, String) {
    let (ok, stdout, stderr) = run_origin(&["check"], config);
    (ok, format!("{stdout}{stderr}"))
}

#[test]
fn check_accepts_the_example_and_refuses_bad_fields() {
    let store = TempStore::new();
    let example =
        std::fs::read_to_string(testkit::repo_root().join("configs/origin.toml")).unwrap();
    let with_store = format!("{example}\n").replace(
        "# url = \"s3://media/vod\"",
        &format!("url = \"{}\"", store.url()),
    );
    let (ok, text) = check(&with_store);
    assert!(ok, "{text}");
    assert!(text.contains("config ok"), "{text}");

    let table = [
        ("[media]\nlisten = \"127.0.0.1\"\n", "`media.listen`"),
        (
            "[media]\nlisten = \"127.0.0.1:1\"\nunknown = 1\n",
            "unknown field `unknown`",
        ),
        (
            "[store]\nurl = \"file:///no/such/folder/here\"\n",
            "`store.url`: the store folder /no/such/folder/here does not exist",
        ),
        ("[store]\nurl = \"ftp://x/y\"\n", "`store.url`"),
        (
            "[admin]\nbearer_token = \"short\"\n",
            "`admin.bearer_token`",
        ),
    ];
    for (config, expected) in table {
        let (ok, text) = check(config);
        assert!(!ok, "{config} was accepted");
        assert!(text.contains(expected), "{config}: {text}");
    }
}

#[test]
fn a_bad_config_never_starts_a_server() {
    let config = "[media]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                  [store]\nurl = \"file:///no/such/dir\"\n";
    let (ok, stdout, stderr) = run_origin(&["serve", "--config"], config);
    assert!(!ok);
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(stderr.contains("store.url"), "{stderr}");
}

#[test]
fn an_address_in_use_is_refused_by_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let store = TempStore::new();
    let extra = format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n");
    let (ok, _, stderr) = run_origin(
        &["serve", "--config"],
        &testkit::origin_config(&store.url(), &extra),
    );
    assert!(!ok);
    assert!(stderr.contains("admin.listen"), "{stderr}");
}

#[test]
fn sigterm_stops_cleanly() {
    let store = TempStore::new();
    store.put("a.ts", b"x");
    let origin = start_origin(&store.url(), "");
    assert!(origin.stop());
}

#[test]
fn sigterm_drains_an_in_flight_download_and_refuses_new_connections() {
    let store = TempStore::new();
    // Larger than the loopback socket buffers, so the origin is still sending when it is told to stop.
    const LEN: u64 = 48 << 20;
    store.put_sparse("slow/seg.ts", LEN);
    let origin = start_origin(&store.url(), "");
    let addr = origin.addr("media_addr");
    let url = format!("http://{addr}/slow/seg.ts");
    // A slow client: about 3 s for the whole body.
    let download = std::thread::spawn(move || testkit::curl(&["--limit-rate", "16M", &url]));
    let metrics_url = format!("{}/metrics", origin.url("admin_addr"));
    wait_until("the download is in flight", || {
        testkit::curl(&[&metrics_url])
            .text()
            .contains("origin_http_requests_in_flight 1")
    });
    origin.terminate();
    wait_until("the listener is closed", || {
        std::net::TcpStream::connect(addr).is_err()
    });
    let response = download.join().unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(
        response.body.len() as u64,
        LEN,
        "the in-flight body completed during the drain"
    );
    assert_eq!(response.body[response.body.len() - 8..], LEN.to_be_bytes());
    assert!(origin.wait_exit(), "exit status 0 after draining");
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
