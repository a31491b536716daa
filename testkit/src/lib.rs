//! The integration test kit, a crate of its own that only tests depend on: every integration test of the
//! project starts real servers and real clients through it. By role: `process` (the project's binaries and
//! PostgreSQL, started on port 0), `origins` (object folders, scripted and trickling origins, an S3 server),
//! `clients` (curl, ffmpeg, two HTTP/3 clients), `certs` (a test CA), `configs` (config text for property
//! tests), `kafka` (a Kafka-protocol broker, tansu, for the bus).
//!
//! - [`ServerProcess`]: runs a project binary with a config that listens on port 0, waits for its `listening`
//!   log line (no sleeps) and reads the bound addresses from it; keeps its log; stops it with SIGTERM.
//! - [`TempStore`]: a temporary object folder, filled from the sample titles or by hand (sparse files too).
//! - [`TestCerts`]: a CA and a `localhost`/`127.0.0.1`/`::1` leaf made with rcgen, as PEM files.
//! - [`curl`], [`ffmpeg_play`], [`S3Server`]: real independent clients and peers, found on `PATH` (the test
//!   script puts the project's Python venv first on it).

mod certs;
mod clients;
mod configs;
mod kafka;
mod origins;
mod process;

pub use certs::*;
pub use clients::*;
pub use configs::*;
pub use kafka::KafkaBroker;
pub use origins::*;
pub use process::*;

pub(crate) use std::collections::HashMap;
pub(crate) use std::io::{BufRead, BufReader};
pub(crate) use std::net::SocketAddr;
pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::process::{Child, Command, Stdio};
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use serde_json::Value;

/// How long a server gets to print its `listening` line.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository root (tests run with the crate folder as working directory).
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join("Cargo.lock").exists() && !dir.join(".git").exists() {
        if !dir.pop() {
            panic!(
                "cannot find the repository root above {}",
                env!("CARGO_MANIFEST_DIR")
            );
        }
    }
    dir
}

/// The committed sample titles (`origin/sample-content`).
pub fn sample_content() -> PathBuf {
    repo_root().join("origin/sample-content")
}

/// Finds an external tool on `PATH` or in the repository's `.venv/bin`; panics with how to install it.
pub fn tool(name: &str) -> PathBuf {
    let venv = repo_root().join(".venv/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::iter::once(venv)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: run `.ci/run` (or scripts/install-test-deps.sh) first"
            )
        })
}

/// A free TCP port on 127.0.0.1 for servers that cannot bind port 0 and report it (the S3 test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The value of header `name` (any case) in a list of lower-case names and values.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}
