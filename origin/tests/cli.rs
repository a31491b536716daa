//! The `origin` binary's command line: `origin check` accepts good configs and refuses bad ones naming the
//! field; a bad config never starts a server; SIGTERM stops it cleanly.

use std::process::Command;

use shared::testkit::{TempStore, binary, start_origin};

fn check(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary("origin"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_accepts_the_example_and_refuses_bad_fields() {
    let store = TempStore::new();
    let example =
        std::fs::read_to_string(shared::testkit::repo_root().join("configs/origin.toml")).unwrap();
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
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin.toml");
    std::fs::write(&path, "[media]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"file:///no/such/dir\"\n").unwrap();
    let out = Command::new(binary("origin"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("listening"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("store.url"));
}

#[test]
fn an_address_in_use_is_refused_by_name() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let store = TempStore::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin.toml");
    let config = shared::testkit::origin_config(
        &store.url(),
        &format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    std::fs::write(&path, config).unwrap();
    let out = Command::new(binary("origin"))
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.listen"), "{stderr}");
}

#[test]
fn sigterm_stops_cleanly() {
    let store = TempStore::new();
    store.put("a.ts", b"x");
    let origin = start_origin(&store.url(), "");
    assert!(origin.stop());
}
