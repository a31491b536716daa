//! Signed URLs verified at the edge: `/t/<token>/…` opens the paths under the token's prefix until its expiry;
//! every viewer shares one cached copy (the token is not in the cache key); a missing, expired, tampered,
//! foreign-key, wrong-prefix or wrong-client token gets 403 with the reason; ffmpeg plays a title through a signed
//! master playlist (the relative URIs inside inherit the token).

// Tests wait on real processes by the wall clock; the edge itself reads its own clock (edge/clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::time::{SystemTime, UNIX_EPOCH};

use shared::token::{Grant, SigningKey, sign};
use testkit::{CurlResponse, TempStore, TestCerts, curl, ffmpeg_play, start_edge, start_origin};

const SECRET: &str = "edge-test signing secret, 32+ bytes long";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &SigningKey, prefix: &str, client: &str, expires: u64) -> String {
    sign(
        key,
        &Grant {
            key_id: key.id.clone(),
            expires,
            prefix: prefix.into(),
            client: client.into(),
        },
    )
}

#[test]
fn signed_urls_open_their_prefix_and_share_one_cached_copy() {
    let store = TempStore::with_samples();
    let origin = start_origin(&store.url(), "");
    let (certs, cache) = (TestCerts::generate(), tempfile::tempdir().unwrap());
    let extra = format!(
        "[[signing_key]]\nid = \"k1\"\nsecret = \"{SECRET}\"\n\
         [[site]]\nhosts = [\"localhost\", \"127.0.0.1\"]\nupstream = \"{}\"\nsigned_paths = [\"/titles/\"]\n",
        origin.url("media_addr")
    );
    let edge = start_edge(&origin.url("media_addr"), cache.path(), &certs, &extra);
    let key = SigningKey::new("k1", SECRET.as_bytes());
    let base = format!("https://localhost:{}", edge.addr("tls_addr").port());
    let ca = certs.ca();
    let get = |proto: &str, path: &str| -> CurlResponse {
        curl(&[
            proto,
            "--cacert",
            ca.to_str().unwrap(),
            &format!("{base}{path}"),
        ])
    };
    let segment = "/titles/test-pattern/hls/v0/seg_000.ts";
    let want = std::fs::read(store.path().join(segment.trim_start_matches('/'))).unwrap();

    for proto in ["--http1.1", "--http2"] {
        // Without a token: refused, with the reason.
        let refused = get(proto, segment);
        assert_eq!(refused.status, 403);
        assert!(
            refused.text().contains("only through a signed URL"),
            "{}",
            refused.text()
        );

        // Two viewers with different tokens share one cached copy.
        let first = get(
            proto,
            &format!(
                "/t/{}{segment}",
                token(&key, "/titles/test-pattern/", "", now() + 60)
            ),
        );
        assert_eq!(first.status, 200, "{}", first.text());
        assert!(first.body == want);
        let second = get(
            proto,
            &format!("/t/{}{segment}", token(&key, "/titles/", "", now() + 300)),
        );
        assert!(second.body == want);
        assert!(
            second.header("cache-status").unwrap().contains("; hit;"),
            "{:?}",
            second.header("cache-status")
        );

        // Refusals, each with its reason.
        let good = token(&key, "/titles/test-pattern/", "", now() + 60);
        // One character of the signature changed (its first: all six bits are signature bits, so the encoding
        // stays canonical and the refusal is about the signature, not the form).
        let at = good.rfind('.').unwrap() + 1;
        let first = good.as_bytes()[at];
        let mut tampered = good.clone();
        tampered.replace_range(at..=at, if first == b'A' { "B" } else { "A" });
        let other_key = SigningKey::new("k9", SECRET.as_bytes());
        let table = [
            (
                token(&key, "/titles/test-pattern/", "", now() - 1),
                "expired",
            ),
            (tampered, "bad signature"),
            (
                token(&key, "/titles/mandelbrot/", "", now() + 60),
                "wrong prefix",
            ),
            (
                token(&other_key, "/titles/", "", now() + 60),
                "unknown key id",
            ),
            (
                token(&key, "/titles/", "10.9.9.9", now() + 60),
                "bound to another client",
            ),
            ("not-a-token".to_string(), "malformed"),
        ];
        for (token, reason) in table {
            let r = get(proto, &format!("/t/{token}{segment}"));
            assert_eq!(r.status, 403, "{reason}");
            assert!(r.text().contains(reason), "{reason}: {}", r.text());
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        // Bound to this client's address: accepted.
        let bound = get(
            proto,
            &format!(
                "/t/{}{segment}",
                token(&key, "/titles/", "127.0.0.1", now() + 60)
            ),
        );
        assert_eq!(bound.status, 200);
    }

    // A player follows the relative URIs of a signed master playlist: every request carries the token.
    let master = format!(
        "{base}/t/{}/titles/test-pattern/hls/master.m3u8",
        token(&key, "/titles/test-pattern/", "", now() + 600)
    );
    let report = ffmpeg_play(&master, Some(&ca));
    assert!(report.is_clean(), "{:?}\n{}", report.problems, report.log);
    let refused = edge
        .log_events("access")
        .into_iter()
        .filter(|e| e["status"] == 403)
        .count();
    assert_eq!(refused, 2 * 7, "only the refusals above were refused");

    let metrics = curl(&[&format!("{}/metrics", edge.url("admin_addr"))]).text();
    for line in [
        "edge_signed_url_refusals_total{reason=\"missing\"} 2",
        "edge_signed_url_refusals_total{reason=\"expired\"} 2",
        "edge_signed_url_refusals_total{reason=\"bad_signature\"} 2",
        "edge_signed_url_refusals_total{reason=\"wrong_client\"} 2",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
}
