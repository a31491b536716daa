//! A real Kafka-protocol broker for the bus's tests: tansu, one process with its own SQLite file in a
//! temporary folder, on a free loopback port.

use crate::*;

/// Where `scripts/install-test-deps.sh` installs tansu.
const TANSU_HOME: &str = ".cache/tansu-0.6.0/bin/tansu";
/// Tries at starting the broker: the free port can be taken by someone else before tansu binds it.
const START_TRIES: usize = 3;

/// A tansu broker listening on `127.0.0.1`, killed on drop. Its log is `tansu.log` in its folder.
pub struct KafkaBroker {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl KafkaBroker {
    /// Starts tansu (found as `$TANSU`, `~/.cache/tansu-0.6.0/bin/tansu`, or `tansu` on `PATH`) and waits
    /// until it accepts connections.
    pub fn start() -> KafkaBroker {
        let binary = tansu_binary();
        let mut failures = Vec::new();
        for _ in 0..START_TRIES {
            match start_on_free_port(&binary) {
                Ok(broker) => return broker,
                Err(failure) => failures.push(failure),
            }
        }
        panic!(
            "tansu ({}) did not start:\n{}",
            binary.display(),
            failures.join("\n---\n")
        );
    }

    /// `kafka://127.0.0.1:PORT`, as `[bus] url` takes it.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port)
    }

    /// Stops the broker, as a crash would (SIGKILL); `start_again` brings it back.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the broker again on its port, with the records and offsets it had stored.
    pub fn start_again(&mut self) {
        self.stop();
        let binary = tansu_binary();
        self.child = spawn(&binary, self.dir.path(), self.port);
        if let Err(failure) = wait_until_listening(&mut self.child, self.port, self.dir.path()) {
            panic!("tansu did not start again: {failure}");
        }
    }

    /// What tansu has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Starts tansu on a free port in a new folder and waits for it to accept connections; on failure, says why.
fn start_on_free_port(binary: &Path) -> Result<KafkaBroker, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut child = spawn(binary, dir.path(), port);
    match wait_until_listening(&mut child, port, dir.path()) {
        Ok(()) => Ok(KafkaBroker { child, port, dir }),
        Err(failure) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(failure)
        }
    }
}

/// Runs tansu in `dir` (its working directory: tansu opens `sqlite://` paths relative to it), appending to
/// `dir/tansu.log`.
fn spawn(binary: &Path, dir: &Path, port: u16) -> Child {
    let listener = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("tansu.log"))
        .expect("tansu.log");
    Command::new(binary)
        .current_dir(dir)
        .args(["broker", "--storage-engine", "sqlite://tansu.db"])
        .args(["--listener-url", &listener])
        .args(["--advertised-listener-url", &listener])
        // The flags above win over these, but tansu also reads settings we do not pass from the environment.
        .env_remove("SCHEMA_REGISTRY")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("tansu.log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()))
}

fn wait_until_listening(child: &mut Child, port: u16, dir: &Path) -> Result<(), String> {
    let log = || std::fs::read_to_string(dir.join("tansu.log")).unwrap_or_default();
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("tansu exited ({status}):\n{}", log()));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "tansu did not listen on {port} within {STARTUP_TIMEOUT:?}:\n{}",
                log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tansu_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TANSU") {
        return PathBuf::from(path);
    }
    if let Some(home) = std::env::var_os("HOME") {
        let installed = Path::new(&home).join(TANSU_HOME);
        if installed.is_file() {
            return installed;
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("tansu"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "tansu (the Kafka broker the bus tests run) is not installed: run scripts/install-test-deps.sh, \
                 or set TANSU to its path"
            )
        })
}
