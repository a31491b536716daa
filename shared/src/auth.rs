//! Admin API authentication: a bearer token from the config, compared in constant time.

use http::HeaderMap;

/// Whether `headers` carry `Authorization: Bearer <token>`; always true when no token is configured.
pub fn bearer_ok(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token);
    constant_time_eq(presented.as_bytes(), token.as_bytes())
}

/// Compares secrets without leaking the position of the first difference through timing.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert!(bearer_ok(&headers, None));
        assert!(!bearer_ok(&headers, Some("0123456789abcdef")));
        headers.insert(
            http::header::AUTHORIZATION,
            "Bearer 0123456789abcdef".parse().unwrap(),
        );
        assert!(bearer_ok(&headers, Some("0123456789abcdef")));
        assert!(!bearer_ok(&headers, Some("0123456789abcdeX")));
        assert!(!bearer_ok(&headers, Some("0123456789abcdef0")));
        // The scheme in any case; nothing else opens it.
        for (presented, ok) in [
            ("bearer 0123456789abcdef", true),
            ("BEARER 0123456789abcdef", true),
            ("Basic 0123456789abcdef", false),
            ("0123456789abcdef", false),
            ("Bearer  0123456789abcdef", false),
        ] {
            headers.insert(http::header::AUTHORIZATION, presented.parse().unwrap());
            assert_eq!(
                bearer_ok(&headers, Some("0123456789abcdef")),
                ok,
                "{presented}"
            );
        }
    }
}
