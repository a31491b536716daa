//! Criterion micro-benchmarks of the pure functions every edge request runs through: cache-key building, Range →
//! slice mapping, Cache-Control parsing, the freshness decision, Vary normalisation, the ban lookup and signed-URL
//! token verification; and the rendezvous hashing that orders a title's edges on every playback request. Inputs
//! are what a VOD player and an origin really send. They answer "is this function cheap next to the I/O around
//! it", and catch regressions.
//!
//! `cargo bench -p benches --bench hot_paths` (add `-- --quick` for a short run, or a name filter).

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use edge::cache::bans::{Ban, BanKind, BanSet};
use edge::cache::freshness::{self, CacheControl, Policy};
use edge::cache::key::CacheKey;
use edge::cache::slices::{self, Slicing};
use edge::cache::vary;
use http::{HeaderMap, HeaderName, HeaderValue};
use shared::range::{self, ByteRange, RangeSpec};

const SITE: &str = "vod.example.com";
const SEGMENT_PATH: &str = "/titles/t004217/video/3000k/seg_000123.m4s";
/// A signed-URL style query, parameters out of order, as players append them.
const SIGNED_QUERY: &str = "token=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08&expires=1767225600&cid=42&sid=ab12cd34";
const MIB: u64 = 1 << 20;
/// The edge's slice size (2 MiB) and a 90-minute 6 Mbit/s rendition stored as one file (~4 GB).
const SLICE_BYTES: u64 = 2 * MIB;
const LONG_OBJECT_BYTES: u64 = 4_050_000_000;

fn head(lines: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).expect("valid name"),
            HeaderValue::from_str(value).expect("valid value"),
        );
    }
    headers
}

fn cache_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_key");
    group.bench_function("new/no_query", |b| {
        b.iter(|| CacheKey::new(black_box(SITE), black_box(SEGMENT_PATH), black_box(None)))
    });
    group.bench_function("new/query_4_params_sorted", |b| {
        b.iter(|| {
            CacheKey::new(
                black_box(SITE),
                black_box(SEGMENT_PATH),
                black_box(Some(SIGNED_QUERY)),
            )
        })
    });
    let key = CacheKey::new(SITE, SEGMENT_PATH, Some(SIGNED_QUERY));
    group.bench_function("meta_key", |b| b.iter(|| black_box(&key).meta_key()));
    group.bench_function("slice_key", |b| {
        b.iter(|| black_box(&key).slice_key(black_box(0x1a2b_3c4d), black_box(1_234)))
    });
    group.finish();
}

fn range_to_slices(c: &mut Criterion) {
    let mut group = c.benchmark_group("range");
    // A player reading a byte-range-addressed segment (single-file HLS/DASH) deep inside a long rendition.
    let header = "bytes=2147483648-2150629375";
    group.bench_function("parse", |b| b.iter(|| range::parse(black_box(header))));
    group.bench_function("evaluate", |b| {
        b.iter(|| range::evaluate(black_box(Some(header)), black_box(LONG_OBJECT_BYTES)))
    });
    let slicing = Slicing {
        slice_bytes: SLICE_BYTES,
        total_len: LONG_OBJECT_BYTES,
    };
    let wanted = ByteRange {
        start: 2_147_483_648,
        end: 2_150_629_375,
    };
    group.bench_function("slices_touched", |b| {
        b.iter(|| black_box(slicing).touched(black_box(wanted)))
    });
    group.bench_function("slice_cut", |b| {
        b.iter(|| black_box(slicing).cut(black_box(1_024), black_box(wanted)))
    });
    group.bench_function("first_slice_hint", |b| {
        let spec = Some(RangeSpec::FromTo {
            first: 2_147_483_648,
            last: 2_150_629_375,
        });
        b.iter(|| slices::first_slice_hint(black_box(spec), black_box(SLICE_BYTES)))
    });
    // The whole per-request path: header → resolved range → the slices and the part of each to send.
    group.bench_function("header_to_cuts", |b| {
        b.iter(|| {
            let range::RangeOutcome::Partial(r) =
                range::evaluate(black_box(Some(header)), black_box(LONG_OBJECT_BYTES))
            else {
                unreachable!("the range is satisfiable")
            };
            let mut sent = 0;
            for index in slicing.touched(r) {
                sent += slicing.cut(index, r).len();
            }
            sent
        })
    });
    group.finish();
}

fn cache_control(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_control_parse");
    let typical = "public, max-age=31536000, immutable";
    let long = "public, max-age=604800, s-maxage=86400, stale-while-revalidate=30, stale-if-error=86400, \
                must-revalidate, proxy-revalidate, no-cache=\"set-cookie, x-request-id\", \
                community=\"UCI\", x-vendor-ext=\"a,b,c\", no-transform";
    group.bench_function("typical", |b| {
        b.iter(|| CacheControl::parse(black_box(typical)))
    });
    group.bench_function("long", |b| b.iter(|| CacheControl::parse(black_box(long))));
    group.finish();
}

fn freshness_decision(c: &mut Criterion) {
    let request_time = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let response_time = request_time + Duration::from_millis(40);
    let date = shared::conditional::format_http_date(request_time);
    let last_modified =
        shared::conditional::format_http_date(request_time - Duration::from_secs(30 * 86_400));
    // A typical object-store origin answering a segment request.
    let headers = head(&[
        ("date", &date),
        ("content-type", "video/iso.segment"),
        ("content-length", "1502876"),
        ("cache-control", "public, max-age=86400"),
        ("etag", "\"5d41402abc4b2a76b9719d911017c592\""),
        ("last-modified", &last_modified),
        ("accept-ranges", "bytes"),
        ("vary", "Origin"),
        ("age", "12"),
        ("server", "origin/1.0"),
    ]);
    let policy = Policy::default();
    let decide = |headers: &HeaderMap, t0: SystemTime, t1: SystemTime| {
        freshness::decide(black_box(&policy), 200, black_box(headers), false, t0, t1)
    };
    c.bench_function("freshness_decide/typical_200", |b| {
        b.iter(|| decide(&headers, request_time, response_time))
    });
}

fn vary_normalisation(c: &mut Criterion) {
    let fields = vec!["accept-encoding".to_string(), "origin".to_string()];
    // What a browser-based player sends.
    let request = head(&[
        ("accept", "*/*"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        ("accept-language", "en-GB,en;q=0.9,fr;q=0.8"),
        ("origin", "https://player.example.com"),
        ("referer", "https://player.example.com/watch/t004217"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
        ),
    ]);
    c.bench_function("vary_variant_values/accept-encoding+origin", |b| {
        b.iter(|| vary::variant_values(black_box(&fields), black_box(&request)))
    });
}

/// `count` bans: 60 % exact URLs, 20 % prefixes, 20 % tags, a quarter of them soft, issued over an hour.
fn ban_set(count: u64) -> BanSet {
    let mut set = BanSet::default();
    for i in 0..count {
        let (kind, pattern) = match i % 5 {
            0..=2 => (
                BanKind::Url,
                format!(
                    "{SITE}|/titles/t{:06}/video/3000k/seg_{:06}.m4s",
                    i % 2_000,
                    i
                ),
            ),
            3 => (BanKind::Prefix, format!("{SITE}|/titles/t9{:05}/", i)),
            _ => (BanKind::Tag, format!("title-9{i:05}")),
        };
        set.add(Ban {
            kind,
            pattern,
            at_ms: 1_767_225_600_000 + i * 360,
            soft: i % 4 == 0,
        });
    }
    set
}

fn ban_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("ban_verdict");
    let url = format!("{SITE}|/titles/t004217/video/3000k/seg_000123.m4s");
    let tags = vec!["title-4217".to_string(), "season-3".to_string()];
    let confirmed_ms = 1_767_225_000_000;
    for count in [0, 100, 10_000] {
        let set = ban_set(count);
        group.bench_with_input(BenchmarkId::from_parameter(count), &set, |b, set| {
            b.iter(|| set.verdict(black_box(&url), black_box(&tags), black_box(confirmed_ms)))
        });
    }
    group.finish();
}

fn token_verification(c: &mut Criterion) {
    use shared::token::{Grant, SigningKey, sign, split_path, verify};
    let keys = [
        SigningKey::new("k2", b"the current signing key, 32 bytes"),
        SigningKey::new("k1", b"the previous signing key, 32 byte"),
    ];
    let grant = Grant {
        key_id: "k1".into(),
        expires: 1_900_000_000,
        prefix: "/titles/t004217/".into(),
        client: String::new(),
    };
    let path = format!(
        "/t/{}/titles/t004217/video/3000k/seg_000123.m4s",
        sign(&keys[1], &grant)
    );
    c.bench_function("token/verify", |b| {
        b.iter(|| {
            let (token, rest) = split_path(black_box(&path)).expect("a token");
            verify(&keys, token, rest, "", black_box(1_800_000_000))
        })
    });
}

fn rendezvous_ranking(c: &mut Criterion) {
    use shared::rendezvous::{node_seed, rank};
    let mut group = c.benchmark_group("rendezvous_rank");
    for count in [3usize, 16, 100] {
        let nodes: Vec<(u64, f64)> = (0..count)
            .map(|i| {
                (
                    node_seed(&format!("https://edge-{i}.cdn.example:8443")),
                    1.0,
                )
            })
            .collect();
        group.bench_with_input(BenchmarkId::from_parameter(count), &nodes, |b, nodes| {
            b.iter(|| rank(black_box("the-godfather-part-ii-1974"), nodes))
        });
    }
    group.finish();
}

criterion_group!(
    hot_paths,
    token_verification,
    rendezvous_ranking,
    cache_key,
    range_to_slices,
    cache_control,
    freshness_decision,
    vary_normalisation,
    ban_lookup
);
criterion_main!(hot_paths);
