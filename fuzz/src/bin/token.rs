//! Signed-URL tokens (shared::token): any text as a token against any path never panics and never opens a path
//! its grant does not cover; a token signed for any grant verifies for the paths under its prefix until its
//! expiry, for its client only, and sits in one path segment.
//!
//! Input: 8 bytes of `now`, 8 of `expires`, then lines `token`, `prefix`, `rest of path`, `client`, `other client`.

use fuzz::{fields, take_u64, text};
use shared::token::{Grant, SigningKey, TokenError, sign, split_path, verify};

fn main() {
    let key = SigningKey::new("k1", b"a secret of at least thirty-two bytes!");
    let other = SigningKey::new("k2", b"another secret, thirty-two bytes long");
    let keys = [key.clone(), other];
    let forger = SigningKey::new("k1", b"not the secret, though as long as one");
    afl::fuzz!(|data: &[u8]| {
        let (now, rest) = take_u64(data);
        let (expires, rest) = take_u64(rest);
        let text = text(rest);
        let [token, prefix, tail, client, stranger] = fields(&text, '\n', 5)[..] else {
            unreachable!()
        };
        let path = format!("{prefix}{tail}");
        // Any text as a token: a grant only for what it says.
        if let Ok(grant) = verify(&keys, token, &path, client, now) {
            assert!(
                now <= grant.expires
                    && path.starts_with(&grant.prefix)
                    && grant.prefix.starts_with('/')
            );
            assert!(grant.client.is_empty() || grant.client == client);
        }
        if let Some((token, rest)) = split_path(&path) {
            assert!(!token.contains('/') && rest.starts_with('/'));
        }
        // A signed grant: opens exactly its tree, until its expiry, for its client.
        let grant = Grant {
            key_id: "k1".into(),
            expires,
            prefix: prefix.to_string(),
            client: client.to_string(),
        };
        let signed = sign(&key, &grant);
        assert!(
            !signed.contains('/') && !signed.contains('?') && !signed.contains('%'),
            "{signed:?}"
        );
        let full = format!("/t/{signed}{path}");
        if path.starts_with('/') {
            assert_eq!(split_path(&full), Some((signed.as_str(), path.as_str())));
        }
        let verdict = verify(&keys, &signed, &path, client, now);
        let want = if now > expires {
            Err(TokenError::Expired)
        } else if !prefix.starts_with('/') {
            Err(TokenError::WrongPrefix)
        } else {
            Ok(grant.clone())
        };
        assert_eq!(verdict, want, "{grant:?} for {path:?} at {now}");
        if want.is_ok() && !client.is_empty() && stranger != client {
            assert_eq!(
                verify(&keys, &signed, &path, stranger, now),
                Err(TokenError::WrongClient)
            );
        }
        // Signed with another secret under k1's id: never verifies.
        let forged = sign(&forger, &grant);
        assert!(verify(&keys, &forged, &path, client, now).is_err());
    });
}
