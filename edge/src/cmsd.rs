//! CMSD (CTA-5006, Common Media Server Data): response headers that tell a player what the edge knows.
//! `CMSD-Static` (a Structured Field dictionary, RFC 8941, fixed for the object) carries the object type `ot`,
//! the streaming format `sf`, the stream type `st` (live or VOD, for manifests whose liveness the edge read) and
//! the custom key `cdn-prefetched` when this response was the first use of an object the edge prefetched.
//! `CMSD-Dynamic` (a Structured Field list with one item per intermediary: the edge's name with parameters) carries
//! the edge's estimate of the throughput to this client `etp` (kbit/s) and the round-trip time `rtt` (ms), from
//! the kernel's view of the TCP connection (`TCP_INFO`: congestion window × MSS / RTT), and `du` (duress) while
//! the edge's fill slots are short. The values are built by pure functions; reading `TCP_INFO` is the one
//! system call.

use std::os::fd::RawFd;

/// `CMSD-Static`.
pub const STATIC: &str = "cmsd-static";
/// `CMSD-Dynamic`.
pub const DYNAMIC: &str = "cmsd-dynamic";
/// The custom key marking a response that was the first use of a prefetched object (CTA-5006 §3.4: custom
/// keys carry a hyphenated prefix).
pub const PREFETCHED_KEY: &str = "cdn-prefetched";
/// The largest throughput reported, kbit/s (loopback's estimate is otherwise absurd): 10 Gbit/s.
pub const MAX_ETP_KBPS: u64 = 10_000_000;

/// The connection a request came on, set by the TCP listener in the request's extensions (for `TCP_INFO`).
/// Valid while the request is answered: the connection lives at least as long.
#[derive(Debug, Clone, Copy)]
pub struct ConnSocket(pub RawFd);

/// The object type (`ot`, the same tokens as CMCD's) of a request: the player's own CMCD `ot` when it sent one,
/// else from the path: `m` manifest, `i` init segment, `a` audio, `c` captions, `av` media of unknown kind,
/// `k` key, `o` other.
pub fn object_type<'a>(path: &str, cmcd_ot: Option<&'a str>) -> &'a str {
    if let Some(ot) =
        cmcd_ot.filter(|ot| matches!(*ot, "m" | "a" | "v" | "av" | "i" | "c" | "tt" | "k" | "o"))
    {
        return ot;
    }
    let file = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let ext = file.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext {
        "m3u8" | "mpd" => "m",
        _ if file.starts_with("init") => "i",
        "m4a" | "aac" => "a",
        "vtt" => "c",
        "ts" | "m4s" | "mp4" | "m4v" | "cmfv" => "av",
        "key" => "k",
        _ => "o",
    }
}

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
pub struct Static<'a> {
    pub object_type: &'a str,
    pub format: Option<&'static str>,
    /// `Some(true)` live, `Some(false)` VOD, `None` unknown.
    pub live: Option<bool>,
    pub prefetched: bool,
}

/// The `CMSD-Static` value: `ot=m,sf=h,st=l` (tokens; a true boolean is the key alone).
pub fn static_value(s: &Static<'_>) -> String {
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

/// What `CMSD-Dynamic` says for one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dynamic {
    pub etp_kbps: Option<u64>,
    pub rtt_ms: Option<u64>,
    pub duress: bool,
}

/// The `CMSD-Dynamic` value: the edge's name as a string item, its parameters after it
/// (`"edge-1";etp=5000;rtt=12;du`). A name is quoted with `"` and `\` escaped; other characters outside
/// printable ASCII are dropped.
pub fn dynamic_value(name: &str, d: &Dynamic) -> String {
    let mut out = String::from("\"");
    for c in name.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    if let Some(etp) = d.etp_kbps {
        out.push_str(&format!(";etp={}", etp.min(MAX_ETP_KBPS)));
    }
    if let Some(rtt) = d.rtt_ms {
        out.push_str(&format!(";rtt={rtt}"));
    }
    if d.duress {
        out.push_str(";du");
    }
    out
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
            assert_eq!(dynamic_value(name, &value), expected);
        }
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
