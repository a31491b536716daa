//! What the edge fills from in tests: temporary object folders, an S3-compatible server, an origin that trickles
//! its bytes, and an origin whose every answer a test scripts.

use super::*;

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
        find_header(&self.headers, name)
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
