//! The project's binaries started as real processes on port 0 (their bound addresses read from the log), their
//! configs, and a PostgreSQL server of the test's own.

use super::*;

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
    /// [`SERVER_DIR`] in `config` becomes the process's own temporary folder (its `data_dir`, say).
    pub fn start(binary: &Path, config: &str) -> ServerProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("config.toml");
        let config = config.replace(SERVER_DIR, &dir.path().display().to_string());
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
    /// The process's own temporary folder ([`SERVER_DIR`]), which holds its `config.toml`.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The config file it was started with (for a command-line tool working on the same data).
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("config.toml")
    }

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

    /// For an origin: the GETs its media listener answered so far (`origin_http_requests_total`).
    pub fn origin_gets(&self) -> u64 {
        let text = crate::curl(&[&format!("{}/metrics", self.url("admin_addr"))]).text();
        text.lines()
            .filter(|l| {
                l.starts_with("origin_http_requests_total{") && l.contains("method=\"GET\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
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

/// Stands in a config for the server process's own temporary folder (see [`ServerProcess::start`]).
pub const SERVER_DIR: &str = "@SERVER_DIR@";

/// The service credential of [`origin_config`]: `Authorization: Bearer` with it asks `POST /v1/playback` as a
/// server, without a viewer's session.
pub const SERVICE_TOKEN: &str = "testkit-service-token-0123456789";

/// The header curl sends it in.
pub const SERVICE_AUTH: &str = "Authorization: Bearer testkit-service-token-0123456789";

/// An origin config for tests: media, admin and API on port 0, the given store URL, its data (the catalog in
/// SQLite, as by default, and the embedded bus) in the process's own folder — not an in-memory catalog, whose
/// database vanishes when the pool replaces its one connection — the [`SERVICE_TOKEN`], the repository's web front end,
/// JSON logs, with `extra` TOML merged over it
/// (`"[cache_control]\nsegment = \"…\"\n"`, `"[admin]\nbearer_token = \"…\"\n"`).
pub fn origin_config(store_url: &str, extra: &str) -> String {
    let base = format!(
        "data_dir = \"{SERVER_DIR}/data\"\n[media]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[api]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nurl = \"{store_url}\"\n\
         [accounts]\nservice_tokens = [\"{SERVICE_TOKEN}\"]\n[web]\ndir = \"{web}\"\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n",
        web = crate::repo_root().join("origin/web").display(),
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

/// An edge started for a test in front of `upstream`, with its own certificates and cache folder (removed when
/// dropped), and how to ask it things.
pub struct TestEdge {
    pub process: ServerProcess,
    pub certs: TestCerts,
    _cache: tempfile::TempDir,
}

impl TestEdge {
    /// `extra` is TOML merged into the test configuration.
    pub fn start(upstream: &str, extra: &str) -> TestEdge {
        let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
        let process = start_edge(upstream, cache.path(), &certs, extra);
        TestEdge {
            process,
            certs,
            _cache: cache,
        }
    }

    /// GET `path_and_query` from `host` (`localhost` or `127.0.0.1`) over TLS (HTTP/2) with curl and `args`.
    pub fn get_from(&self, host: &str, path_and_query: &str, args: &[&str]) -> CurlResponse {
        let url = format!(
            "https://{host}:{}{path_and_query}",
            self.process.addr("tls_addr").port()
        );
        let ca = self.certs.ca();
        let mut all = vec!["--http2", "--cacert", ca.to_str().unwrap()];
        all.extend_from_slice(args);
        all.push(&url);
        curl(&all)
    }

    /// The admin listener's `/metrics`.
    pub fn metrics(&self) -> String {
        curl(&[&format!("{}/metrics", self.process.url("admin_addr"))]).text()
    }

    /// A metric summed over the series matching `filters` (see [`metric_sum`]).
    pub fn metric(&self, name: &str, filters: &[&str]) -> f64 {
        metric_sum(&self.metrics(), name, filters)
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
