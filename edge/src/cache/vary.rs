//! Variant selection (RFC 9111 §4.1): the request fields a response names in `Vary`, normalised so that requests
//! that would get the same response share one variant. `Accept-Encoding` is reduced to the one coding the edge
//! would prefer (`br`, `gzip` or none); other fields have their lines joined and whitespace collapsed.
//! `Vary: *` never matches (such responses are not stored, see `freshness::decide`).

use http::{HeaderMap, HeaderName, HeaderValue};

use super::freshness::joined;

/// The field names of a response's `Vary`, lower case, without duplicates, in order.
pub fn vary_fields(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    if let Some(value) = joined(headers, &http::header::VARY) {
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = name.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

/// The normalised values of `fields` in a request: what selects a variant (and what is sent upstream for it).
pub fn variant_values(fields: &[String], request: &HeaderMap) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|name| {
            let value = HeaderName::from_bytes(name.as_bytes())
                .ok()
                .and_then(|h| joined(request, &h))
                .map(|v| normalise(name, &v))
                .unwrap_or_default();
            (name.clone(), value)
        })
        .collect()
}

/// Sets the request fields that select a variant to its normalised values (absent values are not sent: a
/// client's own spelling of them is removed).
pub fn apply_variant(fields: &mut HeaderMap, values: &[(String, String)]) {
    for (name, value) in values {
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        fields.remove(&name);
        if let (false, Ok(value)) = (value.is_empty(), HeaderValue::from_str(value)) {
            fields.insert(name, value);
        }
    }
}

fn normalise(name: &str, value: &str) -> String {
    if name == "accept-encoding" {
        return preferred_encoding(value).to_string();
    }
    value
        .split(',')
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|item| !item.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The coding the edge prefers among those an `Accept-Encoding` value accepts: `br`, then `gzip`, else none.
/// A coding with `q=0` is refused; `*` accepts any coding not named.
pub fn preferred_encoding(value: &str) -> &'static str {
    let accepted = |coding: &str| {
        let mut star = None;
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if name == coding {
                return q > 0.0;
            }
            if name == "*" {
                star = Some(q > 0.0);
            }
        }
        star.unwrap_or(false)
    };
    if accepted("br") {
        "br"
    } else if accepted("gzip") || accepted("x-gzip") {
        "gzip"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn accept_encoding_normalisation() {
        let table = [
            ("gzip, deflate, br", "br"),
            ("gzip", "gzip"),
            ("GZIP;q=0.5", "gzip"),
            ("x-gzip", "gzip"),
            ("br;q=0, gzip", "gzip"),
            ("br;q=0.0, gzip;q=0", ""),
            ("identity", ""),
            ("", ""),
            ("*", "br"),
            ("*;q=0, gzip", "gzip"),
            ("deflate", ""),
            ("zstd, gzip;q=0.8", "gzip"),
        ];
        for (value, want) in table {
            assert_eq!(preferred_encoding(value), want, "{value}");
        }
    }

    #[test]
    fn vary_fields_are_deduplicated_and_lower_case() {
        let h = head(&[
            ("vary", "Accept-Encoding, ORIGIN"),
            ("vary", "accept-encoding"),
        ]);
        assert_eq!(vary_fields(&h), ["accept-encoding", "origin"]);
        assert!(vary_fields(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn requests_that_get_the_same_response_share_a_variant() {
        let fields = vec!["accept-encoding".to_string(), "accept-language".to_string()];
        let a = variant_values(
            &fields,
            &head(&[
                ("accept-encoding", "gzip, deflate"),
                ("accept-language", "en,  fr"),
            ]),
        );
        let b = variant_values(
            &fields,
            &head(&[
                ("Accept-Encoding", "deflate, gzip;q=0.9"),
                ("accept-language", "en"),
                ("accept-language", "fr"),
            ]),
        );
        assert_eq!(a, b);
        assert_eq!(a[0], ("accept-encoding".into(), "gzip".into()));
        assert_eq!(a[1], ("accept-language".into(), "en, fr".into()));
        let c = variant_values(&fields, &head(&[("accept-encoding", "br")]));
        assert_ne!(a, c);
        assert_eq!(c[1].1, "", "an absent field is its own value");
        let mut sent = head(&[("accept-language", "de"), ("accept-encoding", "br, gzip")]);
        apply_variant(&mut sent, &c);
        assert_eq!(
            sent.len(),
            1,
            "absent values are not sent upstream: {sent:?}"
        );
        assert_eq!(sent.get("accept-encoding").unwrap(), "br");
    }
}
