//! The edge raises its soft open-file limit to the hard one at start and says so: with the common default soft
//! limit of 1024, 10,000 connections would fail at the 1,000th accept. (Its own test binary: it lowers this
//! process's soft limit, which the edge inherits.)

use testkit::{Scripted, ScriptedOrigin, TestCerts, start_edge};

#[test]
fn the_soft_open_file_limit_is_raised_at_start() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let hard = limit.rlim_max;
    assert!(hard > 512, "this machine's hard limit is {hard}");
    limit.rlim_cur = 512;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    let origin = ScriptedOrigin::start(|_| Scripted::ok("x"));
    let (certs, dir) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let edge = start_edge(
        &origin.url(),
        dir.path(),
        &certs,
        "[limits]\nmax_connections = 100\n",
    );
    let logged = edge.wait_for_event("shared::serve", |e| e["message"] == "open-file limit");
    assert_eq!(logged["raised_from"], 512);
    assert_eq!(logged["open_files"], hard);
    let pid = edge.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        open_files.split_whitespace().nth(3) == Some(&hard.to_string()),
        "{open_files}"
    );
}
