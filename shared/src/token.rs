//! Signed URLs: a token grants access to every path under a prefix until an expiry, optionally only to one client.
//! The control plane signs; edges verify with the same keys, without calling anyone. The token travels as a
//! leading path element, `/t/<token>/titles/x/hls/master.m3u8`, so the relative URIs inside HLS playlists and DASH
//! manifests inherit it with no rewriting, and the edge strips it before the cache key (every viewer shares one
//! cached copy).
//!
//! Token: `<key id>.<expiry, unix seconds>.<prefix>.<client binding>.<signature>`, each part base64url (no padding)
//! except the expiry; the signature is HMAC-SHA256 over `v1\n<key id>\n<expiry>\n<prefix>\n<binding>` with the key
//! named by the id (several keys with ids allow rotation). Verification compares in constant time.

use aws_lc_rs::hmac;
use serde::Deserialize;

use crate::config::{ConfigError, ensure};

/// The path element that introduces a token.
pub const TOKEN_PREFIX: &str = "/t/";

/// A signing key with its id.
#[derive(Clone)]
pub struct SigningKey {
    pub id: String,
    key: hmac::Key,
}

impl SigningKey {
    /// A key from its secret (at least 32 bytes; the config checks).
    pub fn new(id: &str, secret: &[u8]) -> Self {
        SigningKey {
            id: id.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id)
    }
}

/// One `[[signing_key]]` entry of a config: the edges and the control plane share the same entries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningKeyConfig {
    /// The id tokens name the key by.
    pub id: String,
    /// The HMAC-SHA256 secret, at least 32 bytes.
    pub secret: String,
}

/// Checks `[[signing_key]]` entries: ids set and unique, secrets at least 32 bytes.
pub fn validate_keys(keys: &[SigningKeyConfig]) -> Result<(), ConfigError> {
    let mut ids = std::collections::HashSet::new();
    for (i, key) in keys.iter().enumerate() {
        ensure(
            !key.id.is_empty() && ids.insert(key.id.as_str()),
            &format!("signing_key[{i}].id"),
            "must be set and unique",
        )?;
        ensure(
            key.secret.len() >= 32,
            &format!("signing_key[{i}].secret"),
            "must be at least 32 bytes",
        )?;
    }
    Ok(())
}

/// The keys of `[[signing_key]]` entries, in order.
pub fn keys(configs: &[SigningKeyConfig]) -> Vec<SigningKey> {
    configs
        .iter()
        .map(|k| SigningKey::new(&k.id, k.secret.as_bytes()))
        .collect()
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key_id: String,
    /// Unix seconds; the token is valid up to and including this second.
    pub expires: u64,
    /// Path prefix (starting with `/`) of the paths the token opens.
    pub prefix: String,
    /// When not empty, the client the token is bound to (for example its address).
    pub client: String,
}

/// Why a token was refused (the 403's reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Malformed,
    UnknownKeyId,
    BadSignature,
    Expired,
    WrongPrefix,
    WrongClient,
}

impl TokenError {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            TokenError::Malformed => "malformed",
            TokenError::UnknownKeyId => "unknown_key_id",
            TokenError::BadSignature => "bad_signature",
            TokenError::Expired => "expired",
            TokenError::WrongPrefix => "wrong_prefix",
            TokenError::WrongClient => "wrong_client",
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            TokenError::Malformed => "the URL token is malformed",
            TokenError::UnknownKeyId => "the URL token names an unknown key id",
            TokenError::BadSignature => "the URL token has a bad signature",
            TokenError::Expired => "the URL token has expired",
            TokenError::WrongPrefix => "the URL token does not cover this path (wrong prefix)",
            TokenError::WrongClient => "the URL token is bound to another client",
        }
    }
}

fn message(key_id: &str, expires: u64, prefix: &str, client: &str) -> String {
    format!("v1\n{key_id}\n{expires}\n{prefix}\n{client}")
}

/// Signs `grant` with `key` (its id must be `grant.key_id`).
pub fn sign(key: &SigningKey, grant: &Grant) -> String {
    let tag = hmac::sign(
        &key.key,
        message(&key.id, grant.expires, &grant.prefix, &grant.client).as_bytes(),
    );
    format!(
        "{}.{}.{}.{}.{}",
        b64(key.id.as_bytes()),
        grant.expires,
        b64(grant.prefix.as_bytes()),
        b64(grant.client.as_bytes()),
        b64(tag.as_ref())
    )
}

/// Splits `/t/<token>/rest` into the token and `/rest`; `None` when the path carries no token.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(TOKEN_PREFIX)?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None => Some((rest, "/")),
    }
}

/// Verifies `token` for a request of `path` (the path without the token) by `client` at `now` (unix seconds).
/// The checks run in this order: form, key id, signature (constant time), expiry, prefix, client.
pub fn verify(
    keys: &[SigningKey],
    token: &str,
    path: &str,
    client: &str,
    now: u64,
) -> Result<Grant, TokenError> {
    let mut parts = token.split('.');
    let (Some(kid), Some(exp), Some(prefix), Some(binding), Some(sig), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(TokenError::Malformed);
    };
    let text = |part: &str| unb64(part).and_then(|b| String::from_utf8(b).ok());
    let (Some(kid), Some(prefix), Some(binding), Some(sig)) =
        (text(kid), text(prefix), text(binding), unb64(sig))
    else {
        return Err(TokenError::Malformed);
    };
    // Up to 20 digits: every expiry `sign` writes (u64::MAX has 20) verifies; more is refused unparsed.
    if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) || exp.len() > 20 {
        return Err(TokenError::Malformed);
    }
    let expires: u64 = exp.parse().map_err(|_| TokenError::Malformed)?;
    let key = keys
        .iter()
        .find(|k| k.id == kid)
        .ok_or(TokenError::UnknownKeyId)?;
    hmac::verify(
        &key.key,
        message(&kid, expires, &prefix, &binding).as_bytes(),
        &sig,
    )
    .map_err(|_| TokenError::BadSignature)?;
    if now > expires {
        return Err(TokenError::Expired);
    }
    if !prefix.starts_with('/') || !path.starts_with(&prefix) {
        return Err(TokenError::WrongPrefix);
    }
    if !binding.is_empty() && binding != client {
        return Err(TokenError::WrongClient);
    }
    Ok(Grant {
        key_id: kid,
        expires,
        prefix,
        client: binding,
    })
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding.
fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn unb64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c).map(|v| v as u32);
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
        // Non-canonical encodings (bits set past the data) are refused, so one token has one spelling.
        let used = (chunk.len() - 1) * 8;
        if used < 24 && n & ((1 << (24 - used)) - 1) != 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> Vec<SigningKey> {
        vec![
            SigningKey::new("k2", b"second key of thirty-two bytes!!"),
            SigningKey::new("k1", b"first key, thirty-two bytes long"),
        ]
    }

    fn grant(prefix: &str, client: &str, expires: u64) -> Grant {
        Grant {
            key_id: "k2".into(),
            expires,
            prefix: prefix.into(),
            client: client.into(),
        }
    }

    #[test]
    fn base64url_round_trips() {
        for data in [
            &b""[..],
            b"f",
            b"fo",
            b"foo",
            b"foob",
            b"fooba",
            b"foobar",
            &[0xff, 0xfe, 0x00],
        ] {
            assert_eq!(unb64(&b64(data)).as_deref(), Some(data), "{data:?}");
        }
        assert_eq!(b64(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64(&[0xfb, 0xff]), "-_8");
        assert_eq!(unb64("Zm9vYg"), Some(b"foob".to_vec()));
        assert_eq!(unb64("Zm9vYh"), None, "non-canonical");
        assert_eq!(unb64("Z"), None);
        assert_eq!(unb64("Zm9=Yg"), None);
    }

    #[test]
    fn signed_tokens_verify_until_they_expire() {
        let keys = keys();
        let token = sign(&keys[0], &grant("/titles/x/", "", NOW + 60));
        let ok = |path: &str, now| verify(&keys, &token, path, "1.2.3.4", now);
        assert_eq!(
            ok("/titles/x/hls/master.m3u8", NOW).unwrap().prefix,
            "/titles/x/"
        );
        assert!(
            ok("/titles/x/", NOW + 60).is_ok(),
            "valid through its expiry second"
        );
        assert_eq!(ok("/titles/x/a.ts", NOW + 61), Err(TokenError::Expired));
        assert_eq!(ok("/titles/y/a.ts", NOW), Err(TokenError::WrongPrefix));
        assert_eq!(ok("/titles/x", NOW), Err(TokenError::WrongPrefix));
        assert!(!token.contains('/'), "one path element: {token}");
    }

    #[test]
    fn tampering_with_any_field_is_refused() {
        let keys = keys();
        let token = sign(&keys[0], &grant("/titles/x/", "", NOW + 60));
        let fields: Vec<&str> = token.split('.').collect();
        let with = |i: usize, value: &str| {
            let mut f = fields.clone();
            f[i] = value;
            f.join(".")
        };
        let table = [
            (with(0, &b64(b"k1")), TokenError::BadSignature), // another known key id
            (with(0, &b64(b"k9")), TokenError::UnknownKeyId),
            (with(1, &(NOW + 3600).to_string()), TokenError::BadSignature), // a later expiry
            (with(2, &b64(b"/")), TokenError::BadSignature),                // a wider prefix
            (with(3, &b64(b"1.2.3.4")), TokenError::BadSignature),          // a binding added
            (with(4, &b64(&[0u8; 32])), TokenError::BadSignature),
            (with(4, "AAAA"), TokenError::BadSignature), // a short signature
            (with(1, "-5"), TokenError::Malformed),
            (with(1, ""), TokenError::Malformed),
            (with(1, "99999999999999999999"), TokenError::Malformed),
            (with(2, "not base64!"), TokenError::Malformed),
            (format!("{token}.x"), TokenError::Malformed),
            (fields[..4].join("."), TokenError::Malformed),
            (String::new(), TokenError::Malformed),
        ];
        for (tampered, want) in table {
            assert_eq!(
                verify(&keys, &tampered, "/titles/x/a.ts", "", NOW),
                Err(want),
                "{tampered}"
            );
        }
    }

    #[test]
    fn rotation_and_client_binding() {
        let keys = keys();
        // A token signed with the older key verifies while that key is configured…
        let old = sign(
            &keys[1],
            &Grant {
                key_id: "k1".into(),
                ..grant("/", "", NOW + 10)
            },
        );
        assert!(verify(&keys, &old, "/a", "", NOW).is_ok());
        // …and not once it is removed.
        assert_eq!(
            verify(&keys[..1], &old, "/a", "", NOW),
            Err(TokenError::UnknownKeyId)
        );
        // A key with the same id but another secret: a bad signature.
        let impostor = [SigningKey::new("k1", b"another secret of thirty-two b!!")];
        assert_eq!(
            verify(&impostor, &old, "/a", "", NOW),
            Err(TokenError::BadSignature)
        );

        let bound = sign(&keys[0], &grant("/", "10.0.0.7", NOW + 10));
        assert!(verify(&keys, &bound, "/a", "10.0.0.7", NOW).is_ok());
        assert_eq!(
            verify(&keys, &bound, "/a", "10.0.0.8", NOW),
            Err(TokenError::WrongClient)
        );
    }

    #[test]
    fn token_paths() {
        assert_eq!(
            split_path("/t/abc/titles/x.ts"),
            Some(("abc", "/titles/x.ts"))
        );
        assert_eq!(split_path("/t/abc"), Some(("abc", "/")));
        assert_eq!(split_path("/titles/x.ts"), None);
        assert_eq!(split_path("/tx/abc/x"), None);
    }
}
