//! The integration test kit (feature `testkit`): every integration test of the project starts real servers and
//! real clients through it.
//!
//! - [`ServerProcess`]: runs a project binary with a config that listens on port 0, waits for its `listening`
//!   log line (no sleeps) and reads the bound addresses from it; keeps its log; stops it with SIGTERM.
//! - [`TempStore`]: a temporary object folder, filled from the sample titles or by hand (sparse files too).
//! - [`TestCerts`]: a CA and a `localhost`/`127.0.0.1`/`::1` leaf made with rcgen, as PEM files.
//! - [`curl`], [`ffmpeg_play`], [`S3Server`]: real independent clients and peers, found on `PATH` (the test
//!   script puts the project's Python venv first on it).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

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

/// A running server binary.
pub struct ServerProcess {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    addrs: HashMap<String, SocketAddr>,
    _dir: tempfile::TempDir,
}

impl ServerProcess {
    /// Writes `config` (TOML) to a temporary file, runs `binary serve --config FILE`, and waits for the JSON log
    /// line whose message is `listening`; every field of that line ending in `_addr` becomes an address.
    pub fn start(binary: &Path, config: &str) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).expect("write config");
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<HashMap<String, SocketAddr>>();
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (log, ready_tx) = (Arc::clone(&log), ready_tx.clone());
            // Drain the pipe for the whole life of the process so the server never blocks on a full pipe.
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&line)
                        && fields.get("message").and_then(Value::as_str) == Some("listening")
                    {
                        let addrs = fields
                            .iter()
                            .filter(|(k, _)| k.ends_with("_addr"))
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.parse().ok()?)))
                            .collect();
                        let _ = ready_tx.send(addrs);
                    }
                    log.lock().expect("log lock").push(line);
                }
            });
        }
        drop(ready_tx);
        let started = Instant::now();
        let addrs = loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addrs) => break addrs,
                Err(_) if started.elapsed() > STARTUP_TIMEOUT => {
                    let _ = child.kill();
                    panic!(
                        "server did not start in {STARTUP_TIMEOUT:?}; log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        std::thread::sleep(Duration::from_millis(100)); // let the log threads catch up
                        panic!(
                            "server exited with {status} before listening; log:\n{}",
                            log.lock().unwrap().join("\n")
                        );
                    }
                }
            }
        };
        ServerProcess {
            child,
            log,
            addrs,
            _dir: dir,
        }
    }

    /// A bound address by its log field name (`media_addr`, `admin_addr`, …).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no `{name}` in the listening line: {:?}", self.addrs))
    }

    /// `http://ADDR` for a named address.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// The JSON log lines of one target (`access` for the access log).
    pub fn log_events(&self, target: &str) -> Vec<Value> {
        self.log_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("target").and_then(Value::as_str) == Some(target))
            .collect()
    }

    /// Waits until a log event of `target` satisfies `pred` (log lines are written after the body ends).
    pub fn wait_for_event(&self, target: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(event) = self.log_events(target).into_iter().find(|e| pred(e)) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no matching `{target}` event; log:\n{}",
                self.log_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident set size of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited with status 0.
    pub fn stop(self) -> bool {
        self.terminate();
        self.wait_exit()
    }

    /// Sends SIGTERM without waiting.
    pub fn terminate(&self) {
        signal(self.child.id(), "TERM");
    }

    /// Sends a signal by name (`HUP`, `INT`, …).
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits (up to 20 s) for the process to exit; returns whether it exited with status 0.
    pub fn wait_exit(mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// A temporary folder used as an object store.
pub struct TempStore {
    dir: tempfile::TempDir,
}

impl TempStore {
    pub fn new() -> TempStore {
        TempStore {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A store holding a copy of the sample titles.
    pub fn with_samples() -> TempStore {
        let store = TempStore::new();
        copy_tree(&sample_content(), store.path());
        store
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `file:///…` URL of the folder.
    pub fn url(&self) -> String {
        format!("file://{}", self.path().display())
    }

    /// Writes an object.
    pub fn put(&self, key: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path().join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write object");
        path
    }

    /// Writes a sparse object of `len` bytes (zeros) whose last 8 bytes spell the length, cheap to make at 4 GiB.
    pub fn put_sparse(&self, key: &str, len: u64) -> PathBuf {
        use std::os::unix::fs::FileExt;
        let path = self.path().join(key);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let file = std::fs::File::create(&path).expect("create");
        file.set_len(len).expect("set_len");
        file.write_all_at(&len.to_be_bytes(), len - 8)
            .expect("write tail");
        path
    }
}

impl Default for TempStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Copies a folder tree.
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A test CA and a leaf certificate for `localhost`, `127.0.0.1` and `::1`, written as PEM files.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn generate() -> TestCerts {
        let dir = tempfile::tempdir().expect("temp dir");
        let made = crate::tls::generate_self_signed(&["localhost", "127.0.0.1", "::1"], 13)
            .expect("certificates");
        std::fs::write(dir.path().join("ca.pem"), made.ca_pem).expect("write");
        std::fs::write(dir.path().join("cert.pem"), made.chain_pem).expect("write");
        std::fs::write(dir.path().join("key.pem"), made.key_pem).expect("write");
        TestCerts { dir }
    }

    /// The CA certificate clients must trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server's certificate chain (leaf then CA).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// What curl saw.
#[derive(Debug)]
pub struct CurlResponse {
    pub status: u16,
    /// `1.1`, `2`, `3`.
    pub http_version: String,
    /// Header names in lower case, in order (of the final response).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl CurlResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Cache-Status` without its `ttl=` parameter (which depends on timing).
    pub fn cache_status(&self) -> Option<&str> {
        self.header("cache-status")
            .and_then(|s| s.split("; ttl=").next())
    }
}

/// Runs curl with `args` (add `--http2-prior-knowledge`, `-r`, `-H`, `--cacert` … as needed) and returns the
/// final response. Panics when curl itself fails (connection refused, TLS error, body cut short, …).
pub fn curl(args: &[&str]) -> CurlResponse {
    try_curl(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`curl`], but a failed transfer (curl's exit status and message) is an `Err`.
pub fn try_curl(args: &[&str]) -> Result<CurlResponse, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (headers_path, body_path) = (dir.path().join("headers"), dir.path().join("body"));
    let output = Command::new(tool("curl"))
        .args(["-sS", "--max-time", "60", "-D"])
        .arg(&headers_path)
        .arg("-o")
        .arg(&body_path)
        .args(["-w", "%{http_code} %{http_version}"])
        .args(args)
        .output()
        .expect("run curl");
    if !output.status.success() {
        return Err(format!(
            "curl {args:?} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        ));
    }
    let summary = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut parts = summary.split_whitespace();
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .expect("status from curl");
    let http_version = parts.next().unwrap_or("").to_string();
    let raw_headers = std::fs::read_to_string(&headers_path).unwrap_or_default();
    // With redirects or 100-continue there are several blocks; keep the last.
    let last_block = raw_headers
        .trim_end()
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("");
    let headers = last_block
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // With -I curl writes the header block as the "body"; a HEAD response has none.
    let body = if args.contains(&"-I") {
        Vec::new()
    } else {
        std::fs::read(&body_path).unwrap_or_default()
    };
    Ok(CurlResponse {
        status,
        http_version,
        headers,
        body,
    })
}

/// What ffmpeg reported when it decoded every stream of a manifest.
#[derive(Debug)]
pub struct FfmpegReport {
    pub exit_ok: bool,
    /// `[warning]`, `[error]`, `[fatal]` and `[panic]` lines of both passes.
    pub problems: Vec<String>,
    /// Frames decoded per video stream.
    pub video_frames: Vec<u64>,
    pub audio_streams: usize,
    /// Cues decoded per subtitle stream.
    pub subtitle_cues: Vec<u64>,
    pub log: String,
}

impl FfmpegReport {
    /// Clean: both passes exit 0, no warning or error, and at least one video stream with frames.
    pub fn is_clean(&self) -> bool {
        self.exit_ok
            && self.problems.is_empty()
            && !self.video_frames.is_empty()
            && self.video_frames.iter().all(|f| *f > 0)
    }
}

/// Decodes every stream of `url` with ffmpeg as a player would, reading its log: ffmpeg exits 0 even when
/// segments 404, so the log decides. `ca` enables certificate verification.
///
/// Two passes, because ffmpeg 5.1 cannot decode audio/video and WebVTT subtitles in one run to the null muxer
/// (it has no default subtitle encoder for it, its DASH reader stops all streams when the subtitle track ends,
/// and its HLS reader skips subtitle renditions unless `-strict experimental`): the media pass maps every
/// stream but subtitles, the subtitle pass maps only subtitles and re-encodes them as WebVTT.
pub fn ffmpeg_play(url: &str, ca: Option<&Path>) -> FfmpegReport {
    let pass = |maps: &[&str]| -> (bool, String) {
        let mut cmd = Command::new(tool("ffmpeg"));
        cmd.args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "repeat+level+verbose",
            "-rw_timeout",
            "20000000",
        ]);
        if let Some(ca) = ca {
            cmd.args(["-tls_verify", "1", "-ca_file"]).arg(ca);
        }
        let output = cmd
            .args(["-strict", "experimental", "-i", url])
            .args(maps)
            .args(["-f", "null", "-"])
            .output();
        let output = output.expect("run ffmpeg");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (media_ok, media_log) = pass(&["-map", "0", "-map", "-0:s?"]);
    let has_subtitles = media_log
        .lines()
        .any(|l| l.contains("Stream #") && l.contains(": Subtitle:"));
    let (subs_ok, subs_log) = if has_subtitles {
        pass(&["-map", "0:s", "-c:s", "webvtt"])
    } else {
        (true, String::new())
    };
    let problems = [&media_log, &subs_log]
        .iter()
        .flat_map(|log| log.lines())
        .filter(|l| {
            ["[warning]", "[error]", "[fatal]", "[panic]"]
                .iter()
                .any(|p| l.contains(p))
        })
        .map(String::from)
        .collect();
    let frames = |log: &str, kind: &str| -> Vec<u64> {
        log.lines()
            .filter(|l| {
                l.contains("Input stream #") && l.contains(kind) && l.contains("frames decoded")
            })
            .filter_map(|l| {
                let before = l.split(" frames decoded").next()?;
                before.rsplit(' ').next()?.parse().ok()
            })
            .collect()
    };
    FfmpegReport {
        exit_ok: media_ok && subs_ok,
        problems,
        video_frames: frames(&media_log, "(video)"),
        audio_streams: frames(&media_log, "(audio)").len(),
        subtitle_cues: frames(&subs_log, "(subtitle)"),
        log: format!("{media_log}\n--- subtitle pass ---\n{subs_log}"),
    }
}

/// A free TCP port on 127.0.0.1 for servers that cannot bind port 0 and report it (the S3 test server).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A real S3-compatible server (moto) on loopback, with one bucket.
pub struct S3Server {
    child: Child,
    pub endpoint: String,
    pub bucket: String,
}

impl S3Server {
    /// Starts `moto_server` and creates `bucket`.
    pub fn start(bucket: &str) -> S3Server {
        let port = free_port();
        let child = Command::new(tool("moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run moto_server");
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let created = curl(&["-X", "PUT", &format!("{}/{bucket}", server.endpoint)]);
        assert_eq!(created.status, 200, "create bucket: {}", created.text());
        server
    }

    /// Uploads an object with a plain PUT (moto does not check signatures; a form content type would make it
    /// parse the body as a form).
    pub fn put_file(&self, key: &str, file: &Path) {
        let url = format!("{}/{}/{key}", self.endpoint, self.bucket);
        let file_arg = file.to_str().expect("utf-8 path");
        let put = curl(&[
            "-X",
            "PUT",
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &format!("@{file_arg}"),
            &url,
        ]);
        assert_eq!(put.status, 200, "put {key}: {}", put.text());
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A workspace binary (`origin`, `edge`) built beside the running test (`target/<profile>/NAME`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// An origin config for tests: media, admin and API on port 0, the given store URL, the catalog in memory, JSON
/// logs, with `extra` TOML
/// merged over it (`"[cache_control]\nsegment = \"…\"\n"`, `"[admin]\nbearer_token = \"…\"\n"`).
pub fn origin_config(store_url: &str, extra: &str) -> String {
    let base = format!(
        "[media]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [catalog]\nurl = \"sqlite::memory:\"\n[store]\nurl = \"{store_url}\"\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n"
    );
    merge_toml(&base, extra)
}

/// `base` with every key of `extra` set over it, tables merged key by key.
pub fn merge_toml(base: &str, extra: &str) -> String {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (key, value) in from {
            match (into.get_mut(&key), value) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, value) => {
                    into.insert(key, value);
                }
            }
        }
    }
    let mut table: toml::Table = base.parse().expect("base config is TOML");
    merge(&mut table, extra.parse().expect("extra config is TOML"));
    toml::to_string(&table).expect("serialize config")
}

/// Starts the `origin` binary over `store_url`.
pub fn start_origin(store_url: &str, extra: &str) -> ServerProcess {
    ServerProcess::start(&binary("origin"), &origin_config(store_url, extra))
}

/// An edge config for tests: TLS, plain HTTP and admin on port 0, one site for localhost/127.0.0.1 in front of
/// `upstream` (`http://host:port`), the disk cache in `cache_dir`, with `extra` TOML merged over it.
pub fn edge_config(upstream: &str, cache_dir: &Path, certs: &TestCerts, extra: &str) -> String {
    let base = format!(
        "name = \"edge-test\"\ndata_dir = \"{dir}\"\n\
         [tls]\nlisten = \"127.0.0.1:0\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\
         [http]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{upstream}\"\n\
         [cache]\nmemory_bytes = 67108864\ndisk_dir = \"{dir}\"\ndisk_bytes = 268435456\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n",
        dir = cache_dir.display(),
        cert = certs.cert().display(),
        key = certs.key().display(),
    );
    merge_toml(&base, extra)
}

/// The admin token of [`TEST_CLOCK`].
pub const TEST_CLOCK_TOKEN: &str = "test-clock-token-0123";

/// Config for an edge whose clock a test moves with [`advance_clock`] instead of sleeping.
pub const TEST_CLOCK: &str =
    "[admin]\nbearer_token = \"test-clock-token-0123\"\ntest_clock = true\n";

/// Moves the clock of an edge started with [`TEST_CLOCK`] (or `admin.test_clock` and `token`) forward by
/// `secs`: what it stored ages as if that time had passed.
pub fn advance_clock(edge: &ServerProcess, token: &str, secs: u64) {
    let url = format!("{}/clock", edge.url("admin_addr"));
    let auth = format!("Authorization: Bearer {token}");
    let body = format!("{{\"advance_secs\": {secs}}}");
    let moved = curl(&["-X", "POST", "-H", &auth, "-d", &body, &url]);
    assert_eq!(moved.status, 200, "the clock moves: {}", moved.text());
}

/// Starts the `edge` binary.
pub fn start_edge(
    upstream: &str,
    cache_dir: &Path,
    certs: &TestCerts,
    extra: &str,
) -> ServerProcess {
    ServerProcess::start(
        &binary("edge"),
        &edge_config(upstream, cache_dir, certs, extra),
    )
}

/// Where the trickling origin stands.
#[derive(Debug, Default)]
pub struct TrickleStats {
    /// Requests received, with their Range header.
    pub requests: Vec<Option<String>>,
    /// When each response's first body byte was written.
    pub first_byte_sent: Vec<Instant>,
}

/// A small HTTP/1.1 origin under the test's control for faults that need precise timing: it serves one object
/// of `len` bytes (byte `i` is `i % 251`) at any path, honours single byte ranges, sends the body at a fixed
/// rate, and can cut the connection after a number of body bytes, as a killed origin does.
pub struct TrickleOrigin {
    pub addr: SocketAddr,
    pub stats: Arc<Mutex<TrickleStats>>,
    /// Cut the next response after this many body bytes (one time).
    pub cut_after: Arc<Mutex<Option<u64>>>,
    /// Caching header lines sent with every response (CRLF-terminated). Default:
    /// `Cache-Control: public, max-age=3600`.
    pub cache_headers: Arc<Mutex<String>>,
}

impl TrickleOrigin {
    pub fn start(len: u64, bytes_per_sec: u64) -> TrickleOrigin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stats = Arc::new(Mutex::new(TrickleStats::default()));
        let cut_after = Arc::new(Mutex::new(None));
        let cache_headers = Arc::new(Mutex::new(
            "Cache-Control: public, max-age=3600\r\n".to_string(),
        ));
        let (stats_t, cut_t, headers_t) = (
            Arc::clone(&stats),
            Arc::clone(&cut_after),
            Arc::clone(&cache_headers),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (stats, cut, headers) = (
                    Arc::clone(&stats_t),
                    Arc::clone(&cut_t),
                    Arc::clone(&headers_t),
                );
                std::thread::spawn(move || {
                    trickle_connection(stream, len, bytes_per_sec, &stats, &cut, &headers)
                });
            }
        });
        TrickleOrigin {
            addr,
            stats,
            cut_after,
            cache_headers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The byte at offset `i` of the object.
    pub fn byte(i: u64) -> u8 {
        (i % 251) as u8
    }
}

fn trickle_connection(
    mut stream: std::net::TcpStream,
    len: u64,
    rate: u64,
    stats: &Mutex<TrickleStats>,
    cut: &Mutex<Option<u64>>,
    cache_headers: &Mutex<String>,
) {
    use std::io::Write;
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    loop {
        let mut range = None;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        stats.lock().unwrap().requests.push(range.clone());
        let (start, end) = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    a.parse::<u64>().ok()?,
                    b.parse::<u64>().map(|b| b.min(len - 1)).unwrap_or(len - 1),
                ))
            })
            .unwrap_or((0, len - 1));
        let status = if range.is_some() {
            "206 Partial Content"
        } else {
            "200 OK"
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: video/mp2t\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{len}\r\n\
             ETag: \"trickle-v1\"\r\n{}Accept-Ranges: bytes\r\n\r\n",
            end - start + 1,
            cache_headers.lock().unwrap()
        );
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let cut_at = cut.lock().unwrap().take();
        let chunk = 16 * 1024u64;
        let mut offset = start;
        let mut sent = 0u64;
        while offset <= end {
            let n = chunk.min(end - offset + 1);
            if let Some(limit) = cut_at
                && sent + n > limit
            {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
            let buf: Vec<u8> = (offset..offset + n).map(TrickleOrigin::byte).collect();
            if stream.write_all(&buf).is_err() {
                return;
            }
            if sent == 0 {
                stats.lock().unwrap().first_byte_sent.push(Instant::now());
            }
            sent += n;
            offset += n;
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
}

/// A request the scripted origin received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted response. By default it is answered like a static object: a `Range` gets a 206 with
/// `Content-Range`, an `If-None-Match` matching its `ETag` (or an `If-Modified-Since` not older than its
/// `Last-Modified`) gets a 304; [`Scripted::raw`] sends it exactly as given.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub raw: bool,
}

impl Scripted {
    /// A 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Scripted {
        Scripted::status(200, body)
    }

    pub fn status(status: u16, body: impl Into<Vec<u8>>) -> Scripted {
        Scripted {
            status,
            headers: Vec::new(),
            body: body.into(),
            raw: false,
        }
    }

    /// Adds a response header line.
    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends the response as given: no range or conditional handling.
    pub fn raw(mut self) -> Scripted {
        self.raw = true;
        self
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The response for `req`, with ranges and conditionals applied unless raw.
    fn answer(mut self, req: &SeenRequest) -> Scripted {
        if self.raw || self.status != 200 {
            return self;
        }
        let not_modified = match (req.header("if-none-match"), self.field("etag")) {
            (Some(inm), Some(etag)) => inm.split(',').any(|t| {
                t.trim() == "*"
                    || t.trim().trim_start_matches("W/") == etag.trim_start_matches("W/")
            }),
            (None, _) => match (req.header("if-modified-since"), self.field("last-modified")) {
                (Some(since), Some(modified)) => {
                    matches!((httpdate::parse_http_date(since), httpdate::parse_http_date(modified)),
                        (Ok(s), Ok(m)) if m <= s)
                }
                _ => false,
            },
            _ => false,
        };
        if not_modified {
            self.status = 304;
            self.body.clear();
            return self;
        }
        let len = self.body.len() as u64;
        if let Some((a, b)) = req
            .header("range")
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
            && len > 0
        {
            let (start, end) = match (a.parse::<u64>(), b.parse::<u64>()) {
                (Ok(a), Ok(b)) => (a, b.min(len - 1)),
                (Ok(a), Err(_)) => (a, len - 1),
                (Err(_), Ok(n)) => (len.saturating_sub(n), len - 1),
                _ => return self,
            };
            if start > end {
                self.status = 416;
                self.headers
                    .push(("Content-Range".into(), format!("bytes */{len}")));
                self.body.clear();
                return self;
            }
            self.status = 206;
            self.headers
                .push(("Content-Range".into(), format!("bytes {start}-{end}/{len}")));
            self.body = self.body[start as usize..=end as usize].to_vec();
        }
        self
    }
}

type Script = Box<dyn Fn(&SeenRequest) -> Scripted + Send + Sync>;

/// An HTTP/1.1 origin whose every answer comes from a script (set per test, changeable at any time), and which
/// records every request: for testing how the edge treats response headers, statuses and methods.
pub struct ScriptedOrigin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    script: Arc<Mutex<Script>>,
}

impl ScriptedOrigin {
    pub fn start(
        script: impl Fn(&SeenRequest) -> Scripted + Send + Sync + 'static,
    ) -> ScriptedOrigin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Mutex<Script>> = Arc::new(Mutex::new(Box::new(script)));
        let (seen_t, script_t) = (Arc::clone(&seen), Arc::clone(&script));
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (seen, script) = (Arc::clone(&seen_t), Arc::clone(&script_t));
                std::thread::spawn(move || scripted_connection(stream, &seen, &script));
            }
        });
        ScriptedOrigin { addr, seen, script }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the script.
    pub fn set(&self, script: impl Fn(&SeenRequest) -> Scripted + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Box::new(script);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }

    /// Requests so far for `path` (path and query).
    pub fn requests_for(&self, path: &str) -> Vec<SeenRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    pub fn count(&self, path: &str) -> usize {
        self.requests_for(path).len()
    }
}

fn scripted_connection(
    stream: std::net::TcpStream,
    seen: &Mutex<Vec<SeenRequest>>,
    script: &Mutex<Script>,
) {
    use std::io::{Read, Write};
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
        );
        let mut headers = Vec::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let mut req = SeenRequest {
            method,
            path,
            headers,
            body: Vec::new(),
        };
        let length: usize = req
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        req.body = vec![0; length];
        if reader.read_exact(&mut req.body).is_err() {
            return;
        }
        seen.lock().unwrap().push(req.clone());
        let response = (script.lock().unwrap())(&req).answer(&req);
        let reason = match response.status {
            200 => "OK",
            206 => "Partial Content",
            304 => "Not Modified",
            404 => "Not Found",
            _ => "Status",
        };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", response.status);
        for (name, value) in &response.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let bodyless =
            req.method == "HEAD" || matches!(response.status, 204 | 304) || response.status < 200;
        if !matches!(response.status, 204 | 304) {
            head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
        }
        head.push_str("\r\n");
        if writer.write_all(head.as_bytes()).is_err() {
            return;
        }
        if !bodyless && writer.write_all(&response.body).is_err() {
            return;
        }
    }
}

/// A private PostgreSQL server for a test (Debian's PostgreSQL, found under `/usr/lib/postgresql/<version>/bin`),
/// in a temporary folder on a free loopback port, with trust authentication for the user `cdn`; stopped when
/// dropped. Under root it runs as the `postgres` system user (PostgreSQL refuses to run as root).
pub struct PostgresServer {
    port: u16,
    child: Child,
    bin: PathBuf,
    root: bool,
    _dir: tempfile::TempDir,
}

impl PostgresServer {
    pub fn start() -> PostgresServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (scripts/install-test-deps.sh)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("a PostgreSQL with initdb");
        let dir = tempfile::tempdir().expect("temp dir");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("chmod");
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let command = |program: &Path| run_as_postgres(root, program);
        let data = dir.path().join("data");
        let out = command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "cdn", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = command(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "cdn"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        PostgresServer {
            port,
            child,
            bin,
            root,
            _dir: dir,
        }
    }

    fn command(&self, program: &Path) -> Command {
        run_as_postgres(self.root, program)
    }

    /// `postgres://cdn@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://cdn@127.0.0.1:{}/postgres", self.port)
    }
}

/// `program` run as the `postgres` user when this process is root.
fn run_as_postgres(root: bool, program: &Path) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        // A fast shutdown through pg_ctl, as the server's own user (runuser does not pass signals on).
        let _ = self
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self._dir.path().join("data"))
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an HTTP/3 client got.
#[derive(Debug)]
pub struct H3Response {
    pub status: u16,
    /// The protocol the client reports having used (`h3`).
    pub protocol: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// The HTTP/3 clients of `edge/tests/clients/h3client.py`.
#[derive(Debug, Clone, Copy)]
pub enum H3Client {
    /// aioquic, a Python QUIC and HTTP/3 stack.
    Aioquic,
    /// libcurl with ngtcp2 and nghttp3 (the curl_cffi wheel).
    Curl,
}

/// GET `url` over HTTP/3 with an independent client trusting `ca`; `range` is `A-B`, `-N` or `A-`.
pub fn h3_get(
    client: H3Client,
    url: &str,
    ca: &Path,
    range: Option<&str>,
) -> Result<H3Response, String> {
    match range {
        Some(range) => h3_request(client, url, ca, &["--range", range]),
        None => h3_request(client, url, ca, &[]),
    }
}

/// A request over HTTP/3 with `h3client.py`'s further `args` (`--method POST`, `-H 'name: value'`,
/// `--zero-rtt`, …).
pub fn h3_request(
    client: H3Client,
    url: &str,
    ca: &Path,
    args: &[&str],
) -> Result<H3Response, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("body");
    let script = repo_root().join("edge/tests/clients/h3client.py");
    let mut cmd = Command::new(tool("python3"));
    cmd.arg(script)
        .args([
            "--client",
            match client {
                H3Client::Aioquic => "aioquic",
                H3Client::Curl => "curl",
            },
        ])
        .arg("--ca")
        .arg(ca)
        .arg("--out")
        .arg(&out)
        .args(args);
    let output = cmd.arg(url).output().expect("run h3client.py");
    let line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    let parsed: Value = serde_json::from_str(&line).map_err(|_| {
        format!(
            "h3client.py said {line:?}; stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    if let Some(error) = parsed.get("error") {
        return Err(format!("{client:?}: {error}"));
    }
    let headers = parsed["headers"]
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(H3Response {
        status: parsed["status"].as_u64().unwrap_or(0) as u16,
        protocol: parsed["protocol"].as_str().unwrap_or("").to_string(),
        headers,
        body: std::fs::read(&out).unwrap_or_default(),
    })
}
