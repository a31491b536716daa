//! `Vary` matching (edge::cache::vary): the fields a response names are lower case, unique and tokens of the
//! list; the values selecting a variant are normalised once (sent upstream and read again, they select the same
//! variant); `Accept-Encoding` comes down to `br`, `gzip` or nothing; two requests share a variant's record
//! exactly when their values are equal.
//!
//! Input: the response's `Vary` value, a byte 0x1e, request A's head, a byte 0x1e, request B's head (heads as
//! lines of `name: value`).

use edge::cache::key::CacheKey;
use edge::cache::vary::{apply_variant, preferred_encoding, variant_values, vary_fields};
use fuzz::head;
use http::{HeaderMap, HeaderValue};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let mut parts = data
            .splitn(3, |&b| b == b'\x1e')
            .chain(std::iter::repeat(&[][..]));
        let (vary, a, b) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        let mut response = HeaderMap::new();
        for line in vary.split(|&b| b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line.trim_ascii()) {
                response.append(http::header::VARY, value);
            }
        }
        let fields = vary_fields(&response);
        for (i, name) in fields.iter().enumerate() {
            assert!(
                !name.is_empty() && *name == name.to_ascii_lowercase(),
                "{name:?}"
            );
            assert!(!name.contains(',') && name.trim() == name, "{name:?}");
            assert!(!fields[..i].contains(name), "{name:?} twice");
        }
        let (a, b) = (head(a), head(b));
        let values_a = variant_values(&fields, &a);
        let values_b = variant_values(&fields, &b);
        assert_eq!(values_a.len(), fields.len());
        for ((name, value), field) in values_a.iter().zip(&fields) {
            assert_eq!(name, field);
            if name == "accept-encoding" {
                assert!(["br", "gzip", ""].contains(&value.as_str()), "{value:?}");
            }
            assert!(!value.contains('\n'));
        }
        // Sent upstream and read again: the same variant.
        for values in [&values_a, &values_b] {
            let mut sent = a.clone();
            apply_variant(&mut sent, values);
            assert_eq!(&variant_values(&fields, &sent), values, "normalised once");
        }
        let key = CacheKey::new("site", "/x", None);
        assert_eq!(
            key.variant(&values_a).meta_key() == key.variant(&values_b).meta_key(),
            values_a == values_b
        );
        if let Some(value) = a
            .get(http::header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
        {
            assert!(["br", "gzip", ""].contains(&preferred_encoding(value)));
        }
    });
}
