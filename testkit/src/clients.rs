//! Real, independent clients: curl (HTTP/1.1, HTTP/2), ffmpeg as a player, and two HTTP/3 clients (aioquic and
//! libcurl with ngtcp2) through `edge/tests/clients/h3client.py`.

use super::*;

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
        find_header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Cache-Status` without its `ttl=` parameter (which depends on timing).
    pub fn cache_status(&self) -> Option<&str> {
        self.header("cache-status")
            .and_then(|s| s.split("; ttl=").next())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.text()))
    }
}

/// A new viewer account `email` (password `a test password`) signed in through the control plane's API at
/// `api`: its session token and its first profile's id.
pub fn signed_up(api: &str, email: &str) -> (String, String) {
    let account = serde_json::json!({"email": email, "password": "a test password"});
    let created = call_api(api, "POST", "/v1/accounts", None, Some(&account));
    assert_eq!(created.status, 201, "{}", created.text());
    let signed = call_api(api, "POST", "/v1/sessions", None, Some(&account));
    assert_eq!(signed.status, 201, "{}", signed.text());
    let answer = signed.json();
    let token = answer["token"].as_str().unwrap().to_string();
    let profile = answer["profiles"][0]["id"].as_str().unwrap().to_string();
    (token, profile)
}

/// An API call: `curl -X method [-H "Authorization: Bearer <bearer>"] [--data-binary <json>] base+path`.
pub fn call_api(
    base: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    json: Option<&serde_json::Value>,
) -> CurlResponse {
    let auth = bearer.map(|t| format!("Authorization: Bearer {t}"));
    let headers: Vec<&str> = auth.iter().map(String::as_str).collect();
    call_api_with(base, method, path, &headers, json)
}

/// An API call with these request fields (`"Name: value"`): `curl -X method [-H field]… [--data-binary <json>]
/// base+path`.
pub fn call_api_with(
    base: &str,
    method: &str,
    path: &str,
    fields: &[&str],
    json: Option<&serde_json::Value>,
) -> CurlResponse {
    let url = format!("{base}{path}");
    let data = json.map(|j| j.to_string());
    let mut args = vec!["-X", method];
    for field in fields {
        args.extend(["-H", *field]);
    }
    if let Some(d) = &data {
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            d.as_str(),
        ]);
    }
    args.push(&url);
    curl(&args)
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

/// The sum of the samples of metric `name` in Prometheus text whose labels contain every one of `filters`
/// (`"cache_status=\"hit\""`), 0 when there are none.
pub fn metric_sum(text: &str, name: &str, filters: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| filters.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// hls.js or dash.js in headless Chromium (`edge/tests/browser/play.mjs`, which keeps it off the network) playing
/// `url` with the player's options `args`, trusting `cert`: the JSON report of its last line, or what went
/// wrong (the line and the player's stderr) when there is none.
pub fn browser_play(
    url: &str,
    args: &[&str],
    cert: impl AsRef<Path>,
) -> Result<serde_json::Value, String> {
    let output = Command::new(tool("node"))
        .arg(repo_root().join("edge/tests/browser/play.mjs"))
        .arg(url)
        .args(args)
        .arg("--cert")
        .arg(cert.as_ref())
        .output()
        .map_err(|e| format!("run node: {e}"))?;
    let line = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&line)
        .map_err(|_| format!("{line} {}", String::from_utf8_lossy(&output.stderr)))
}
