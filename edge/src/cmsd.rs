//! CMSD (CTA-5006, Common Media Server Data): response headers that tell a player what the edge knows.
//! `CMSD-Static` (a Structured Field dictionary, RFC 8941, fixed for the object) carries the object type `ot`,
//! the streaming format `sf`, the stream type `st` (live or VOD, for manifests whose liveness the edge read) and
//! the custom key `cdn-prefetched` when this response was the first use of an object the edge prefetched.
//! `CMSD-Dynamic` (a Structured Field list with one item per intermediary: the edge's name with parameters) carries
//! the edge's estimate of the throughput to this client `etp` (kbit/s) and the round-trip time `rtt` (ms), from
//! the kernel's view of the TCP connection (`TCP_INFO`: congestion window × MSS / RTT) or, over HTTP/3, from the
//! QUIC stack's view of the path (its congestion window in bytes / RTT), and `du` (duress) while
//! the edge's fill slots are short. The values are built by pure functions; reading `TCP_INFO` is the one
//! system call, made at most every `ESTIMATE_REFRESH` per connection.
//!
//! Both headers go on every hit, so they are cheap there: each static value is made once, and a connection
//! keeps its last estimate and the dynamic value made from it (on a 4 KB manifest hit, building both per
//! response cost 9 % of the edge's CPU).

use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use http::HeaderValue;

/// `CMSD-Static`.
pub const STATIC: &str = "cmsd-static";
/// `CMSD-Dynamic`.
pub const DYNAMIC: &str = "cmsd-dynamic";
/// The custom key marking a response that was the first use of a prefetched object (CTA-5006 §3.4: custom
/// keys carry a hyphenated prefix).
pub const PREFETCHED_KEY: &str = "cdn-prefetched";
/// The largest throughput reported, kbit/s (loopback's estimate is otherwise absurd): 10 Gbit/s.
pub const MAX_ETP_KBPS: u64 = 10_000_000;

/// How long a connection's `TCP_INFO` reading stands for it: a few round trips of a distant player, so the
/// figures follow the window as it grows while back-to-back responses share one system call.
pub const ESTIMATE_REFRESH: Duration = Duration::from_millis(100);

/// The connection a request came on, set by the TCP listener in the request's extensions (for `TCP_INFO`).
/// The socket is valid while the request is answered: the connection lives at least as long. Clones share
/// the connection's last reading.
#[derive(Debug, Clone)]
pub struct ConnSocket {
    fd: RawFd,
    last: Arc<Mutex<LastReading>>,
}

/// A connection's last `TCP_INFO` reading, and the `CMSD-Dynamic` value last made from it.
#[derive(Debug, Default)]
struct LastReading {
    read_at: Option<Instant>,
    estimate: Option<(Option<u64>, u64)>,
    value: Option<(Dynamic, HeaderValue)>,
}

impl ConnSocket {
    pub fn new(fd: RawFd) -> Self {
        ConnSocket {
            fd,
            last: Arc::default(),
        }
    }

    /// The `CMSD-Dynamic` value for a response on this connection at `now`: (throughput, round trip) from the
    /// last reading while it is younger than `ESTIMATE_REFRESH`, the value made last time while it says the
    /// same. `quoted_name` is the edge's name as [`quoted_name`] makes it.
    pub fn dynamic_header(&self, quoted_name: &str, duress: bool, now: Instant) -> HeaderValue {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let stale = last
            .read_at
            .is_none_or(|at| now.saturating_duration_since(at) >= ESTIMATE_REFRESH);
        if stale {
            last.estimate = tcp_estimate(self.fd);
            last.read_at = Some(now);
        }
        let dynamic = Dynamic::from_estimate(last.estimate, duress);
        if let Some((made_for, value)) = &last.value
            && *made_for == dynamic
        {
            return value.clone();
        }
        let value = dynamic_header(quoted_name, &dynamic);
        last.value = Some((dynamic, value.clone()));
        value
    }
}

/// The object type (`ot`, the same tokens as CMCD's) of a request: the player's own CMCD `ot` when it sent one,
/// else from the path: `m` manifest, `i` init segment, `a` audio, `c` captions, `av` media of unknown kind,
/// `k` key, `o` other.
pub fn object_type(path: &str, cmcd_ot: Option<&str>) -> &'static str {
    if let Some(ot) = cmcd_ot.and_then(|ot| OBJECT_TYPES.iter().find(|known| **known == ot)) {
        return ot;
    }
    let file = path.rsplit('/').next().unwrap_or(path);
    let ext = file.rsplit_once('.').map_or("", |(_, ext)| ext);
    let is = |e: &str| ext.eq_ignore_ascii_case(e);
    if is("m3u8") || is("mpd") {
        "m"
    } else if file
        .get(..4)
        .is_some_and(|start| start.eq_ignore_ascii_case("init"))
    {
        "i"
    } else if is("m4a") || is("aac") {
        "a"
    } else if is("vtt") {
        "c"
    } else if ["ts", "m4s", "mp4", "m4v", "cmfv"].iter().any(|e| is(e)) {
        "av"
    } else if is("key") {
        "k"
    } else {
        "o"
    }
}

/// CMCD's and CMSD's object types.
const OBJECT_TYPES: [&str; 9] = ["m", "a", "v", "av", "i", "c", "tt", "k", "o"];

/// The streaming format (`sf`): `h` for HLS, `d` for DASH, when the path says.
pub fn streaming_format(path: &str) -> Option<&'static str> {
    if path.ends_with(".m3u8") {
        Some("h")
    } else if path.ends_with(".mpd") {
        Some("d")
    } else {
        None
    }
}

/// What `CMSD-Static` says about one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Static {
    pub object_type: &'static str,
    pub format: Option<&'static str>,
    /// `Some(true)` live, `Some(false)` VOD, `None` unknown.
    pub live: Option<bool>,
    pub prefetched: bool,
}

/// The `CMSD-Static` value: `ot=m,sf=h,st=l` (tokens; a true boolean is the key alone).
pub fn static_value(s: &Static) -> String {
    let mut out = format!("ot={}", s.object_type);
    if let Some(sf) = s.format {
        out.push_str(",sf=");
        out.push_str(sf);
    }
    if let Some(live) = s.live {
        out.push_str(if live { ",st=l" } else { ",st=v" });
    }
    if s.prefetched {
        out.push(',');
        out.push_str(PREFETCHED_KEY);
    }
    out
}

/// The `CMSD-Static` header for `s`: every possible value is made once, on first use.
pub fn static_header(s: &Static) -> HeaderValue {
    const FORMATS: [Option<&str>; 3] = [None, Some("h"), Some("d")];
    const LIVE: [Option<bool>; 3] = [None, Some(true), Some(false)];
    static VALUES: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let values = VALUES.get_or_init(|| {
        let mut values = Vec::new();
        for object_type in OBJECT_TYPES {
            for format in FORMATS {
                for live in LIVE {
                    for prefetched in [false, true] {
                        let value = static_value(&Static {
                            object_type,
                            format,
                            live,
                            prefetched,
                        });
                        values.push(HeaderValue::from_str(&value).expect("tokens are ASCII"));
                    }
                }
            }
        }
        values
    });
    let position = |found: Option<usize>| found.expect("a value of the table");
    let ot = position(OBJECT_TYPES.iter().position(|t| *t == s.object_type));
    let sf = position(FORMATS.iter().position(|f| *f == s.format));
    let st = position(LIVE.iter().position(|l| *l == s.live));
    values[((ot * FORMATS.len() + sf) * LIVE.len() + st) * 2 + usize::from(s.prefetched)].clone()
}

/// What `CMSD-Dynamic` says for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic {
    pub etp_kbps: Option<u64>,
    pub rtt_ms: Option<u64>,
    pub duress: bool,
}

impl Dynamic {
    /// From a transport's (throughput, round trip) estimate, when there is one ([`tcp_estimate`],
    /// [`QuicPath::estimate`]).
    pub fn from_estimate(estimate: Option<(Option<u64>, u64)>, duress: bool) -> Self {
        Dynamic {
            etp_kbps: estimate.and_then(|(etp, _)| etp),
            rtt_ms: estimate.map(|(_, rtt)| rtt),
            duress,
        }
    }
}

/// The edge's name as a Structured Field string: quoted, `"` and `\` escaped, characters outside printable
/// ASCII dropped.
pub fn quoted_name(name: &str) -> String {
    let mut out = String::from("\"");
    for c in name.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `CMSD-Dynamic` value: the edge's name (as [`quoted_name`] made it) as a string item, its parameters after
/// it (`"edge-1";etp=5000;rtt=12;du`).
pub fn dynamic_header(quoted_name: &str, d: &Dynamic) -> HeaderValue {
    use std::fmt::Write;
    let mut out = String::with_capacity(quoted_name.len() + 32);
    out.push_str(quoted_name);
    if let Some(etp) = d.etp_kbps {
        let _ = write!(out, ";etp={}", etp.min(MAX_ETP_KBPS));
    }
    if let Some(rtt) = d.rtt_ms {
        let _ = write!(out, ";rtt={rtt}");
    }
    if d.duress {
        out.push_str(";du");
    }
    HeaderValue::from_str(&out).expect("printable ASCII")
}

/// A QUIC connection's path as the QUIC stack sees it when a request arrives (HTTP/3 has no `TCP_INFO`), set by
/// the QUIC listener in the request's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicPath {
    pub rtt: Duration,
    pub cwnd_bytes: u64,
}

impl QuicPath {
    /// (throughput estimate in kbit/s, round-trip time in ms, rounded up), as [`tcp_estimate`] gives them.
    pub fn estimate(&self) -> (Option<u64>, u64) {
        let rtt_us = u64::try_from(self.rtt.as_micros()).unwrap_or(u64::MAX);
        let etp = (rtt_us > 0 && self.cwnd_bytes > 0).then(|| {
            (self.cwnd_bytes.saturating_mul(8).saturating_mul(1000) / rtt_us).min(MAX_ETP_KBPS)
        });
        (etp, rtt_us.div_ceil(1000))
    }
}

/// The throughput a TCP sender can reach, kbit/s: one congestion window of segments per round trip.
/// `None` before the connection has a round-trip time.
pub fn throughput_kbps(cwnd_segments: u32, mss_bytes: u32, rtt_us: u32) -> Option<u64> {
    if rtt_us == 0 || cwnd_segments == 0 || mss_bytes == 0 {
        return None;
    }
    let bits = u64::from(cwnd_segments) * u64::from(mss_bytes) * 8;
    // bits per µs = Mbit/s; × 1000 for kbit/s.
    Some((bits * 1000 / u64::from(rtt_us)).min(MAX_ETP_KBPS))
}

/// The kernel's view of a TCP connection: (throughput estimate in kbit/s, round-trip time in ms, rounded up).
pub fn tcp_estimate(fd: RawFd) -> Option<(Option<u64>, u64)> {
    // SAFETY: `tcp_info` is plain data that the kernel fills; `len` says how much of it was written, and
    // getsockopt on an fd that is not a TCP socket fails without touching it.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let status = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if status != 0 {
        return None;
    }
    let etp = throughput_kbps(info.tcpi_snd_cwnd, info.tcpi_snd_mss, info.tcpi_rtt);
    Some((etp, u64::from(info.tcpi_rtt).div_ceil(1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_types() {
        let table = [
            ("/t/hls/index.m3u8", None, "m"),
            ("/t/dash/manifest.mpd", None, "m"),
            ("/t/hls/init.mp4", None, "i"),
            ("/t/dash/init-stream0.m4s", None, "i"),
            ("/t/hls/seg9.2.m4s", None, "av"),
            ("/t/hls/seg_001.ts", None, "av"),
            ("/t/audio/a.m4a", None, "a"),
            ("/t/subs/en.vtt", None, "c"),
            ("/t/k.key", None, "k"),
            ("/poster.jpg", None, "o"),
            // The player knows better what a segment holds.
            ("/t/hls/seg1.m4s", Some("v"), "v"),
            ("/t/hls/seg1.m4s", Some("a"), "a"),
            ("/t/hls/seg1.m4s", Some("bogus"), "av"),
        ];
        for (path, cmcd, expected) in table {
            assert_eq!(object_type(path, cmcd), expected, "{path} {cmcd:?}");
        }
    }

    #[test]
    fn static_values() {
        let s = |object_type, format, live, prefetched| Static {
            object_type,
            format,
            live,
            prefetched,
        };
        let table = [
            (s("m", Some("h"), Some(true), false), "ot=m,sf=h,st=l"),
            (s("m", Some("d"), Some(false), false), "ot=m,sf=d,st=v"),
            (s("av", None, None, true), "ot=av,cdn-prefetched"),
            (s("i", None, None, false), "ot=i"),
        ];
        for (value, expected) in table {
            assert_eq!(static_value(&value), expected);
        }
        // The table made once holds the same value for every combination.
        for object_type in OBJECT_TYPES {
            for format in [None, Some("h"), Some("d")] {
                for live in [None, Some(true), Some(false)] {
                    for prefetched in [false, true] {
                        let value = s(object_type, format, live, prefetched);
                        assert_eq!(static_header(&value), static_value(&value).as_str());
                    }
                }
            }
        }
        assert_eq!(object_type("/A/INIT.MP4", None), "i", "any case");
        assert_eq!(object_type("/a/x.M3U8", None), "m");
        assert_eq!(streaming_format("/a.m3u8"), Some("h"));
        assert_eq!(streaming_format("/a.m4s"), None);
    }

    #[test]
    fn dynamic_values() {
        let d = |etp_kbps, rtt_ms, duress| Dynamic {
            etp_kbps,
            rtt_ms,
            duress,
        };
        let table = [
            (
                "edge-1",
                d(Some(5000), Some(12), false),
                "\"edge-1\";etp=5000;rtt=12",
            ),
            ("edge-1", d(None, None, true), "\"edge-1\";du"),
            (
                "e\"x\\y\u{7f}",
                d(None, Some(1), false),
                "\"e\\\"x\\\\y\";rtt=1",
            ),
            (
                "big",
                d(Some(u64::MAX), None, false),
                "\"big\";etp=10000000",
            ),
        ];
        for (name, value, expected) in table {
            assert_eq!(dynamic_header(&quoted_name(name), &value), expected);
        }
    }

    #[test]
    fn a_connection_reads_tcp_info_at_most_once_per_refresh() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let socket = ConnSocket::new(server.as_raw_fd());
        let name = quoted_name("e");
        let t0 = Instant::now();
        let first = socket.dynamic_header(&name, false, t0);
        assert!(first.to_str().unwrap().starts_with("\"e\";"), "{first:?}");
        let read_at = |s: &ConnSocket| s.last.lock().unwrap().read_at;
        assert_eq!(read_at(&socket), Some(t0));
        // Within the refresh: the same reading; duress changes the value, not the reading.
        let later = t0 + ESTIMATE_REFRESH / 2;
        assert_eq!(socket.clone().dynamic_header(&name, false, later), first);
        let under_duress = socket.dynamic_header(&name, true, later);
        assert!(under_duress.to_str().unwrap().ends_with(";du"));
        assert_eq!(read_at(&socket), Some(t0));
        // Past it: read again.
        let next = t0 + ESTIMATE_REFRESH;
        socket.dynamic_header(&name, false, next);
        assert_eq!(read_at(&socket), Some(next));
    }

    #[test]
    fn a_quic_path_estimates_like_a_tcp_connection() {
        // 14,480 bytes per 20 ms: 115,840 bits / 20,000 µs = 5.79 Mbit/s; the RTT rounds up to whole ms.
        let path = |rtt_us, cwnd_bytes| QuicPath {
            rtt: Duration::from_micros(rtt_us),
            cwnd_bytes,
        };
        assert_eq!(path(20_000, 14_480).estimate(), (Some(5792), 20));
        assert_eq!(path(20_001, 14_480).estimate().1, 21);
        assert_eq!(path(0, 14_480).estimate(), (None, 0), "no RTT yet");
        assert_eq!(path(100, u64::MAX).estimate().0, Some(MAX_ETP_KBPS));
    }

    #[test]
    fn throughput_from_the_congestion_window() {
        // 10 segments of 1448 bytes per 20 ms: 115 840 bits / 20 000 µs = 5.79 Mbit/s.
        assert_eq!(throughput_kbps(10, 1448, 20_000), Some(5792));
        assert_eq!(throughput_kbps(10, 1448, 0), None);
        assert_eq!(throughput_kbps(0, 1448, 100), None);
        // Loopback: capped.
        assert_eq!(throughput_kbps(1000, 65_483, 5), Some(MAX_ETP_KBPS));
    }

    #[test]
    fn tcp_info_of_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let (etp, _rtt) = tcp_estimate(server.as_raw_fd()).expect("TCP_INFO of a TCP socket");
        assert!(etp.is_none_or(|kbps| kbps > 0));
        drop(client);
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(tcp_estimate(file.as_raw_fd()), None, "not a socket");
    }
}
