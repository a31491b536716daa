//! Which header fields travel, in both directions, decided in one place.
//!
//! Upstream, a request carries the end-to-end fields of the client's request (RFC 9110 §7.6.1: never the
//! hop-by-hop ones, nor those named in `Connection`), less a site's deny list and the `CMCD-*` fields (CTA-5004
//! player data: it describes one player, not the object, and stays at the edge like the `CMCD=` parameter). A fill is shared by every
//! request that joins it, so it also drops what would make its answer one client's: the client's conditional
//! and range fields (the edge asks for the slice it stores), and `Authorization` and `Cookie` unless the site
//! sets `forward_credentials`. The fields a stored response varies on are sent normalised, so the answer is the
//! variant its key says. A coalesced fill carries the fields of the request that started it.
//!
//! Downstream, a stored response keeps its whole header section (RFC 9111 §3.1) less hop-by-hop fields, those
//! named in `Connection`, those named by `no-cache="…"`/`private="…"`, and those the edge writes itself for each
//! answer (length, range, age, date, `Alt-Svc`) or that are instructions to the CDN rather than to the client
//! (`Surrogate-Key`, `Cache-Tag`, `Surrogate-Control`, `Set-Cookie` on a shared copy). A passed response keeps
//! every end-to-end field. The upstream's `Cache-Status` (a parent edge's entry) is kept both ways: the edge adds
//! its own after it (RFC 9211).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Fields that concern one connection only (RFC 9110 §7.6.1, and the obsolete ones still seen).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Request fields the edge sets itself on every upstream request.
const SET_BY_EDGE: [&str; 6] = [
    "host",
    "content-length",
    "expect",
    "via",
    "early-data",
    "x-forwarded-for",
];

/// `X-Forwarded-For`: the addresses a request came through, the client's last (set by [`forwarded_for`]).
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The prefix of the CMCD request fields (`CMCD-Request`, `-Object`, `-Status`, `-Session`, and later versions'),
/// never sent upstream.
const CMCD_FIELDS_PREFIX: &str = "cmcd-";

/// A client's preconditions (RFC 9110 §13.1): answered by the edge from what it stores, never sent on a fill.
pub const PRECONDITIONS: [HeaderName; 5] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Response fields the edge writes itself on every answer from the cache, or that speak to the CDN only.
const NOT_STORED: [&str; 10] = [
    "content-length",
    "content-range",
    "age",
    "date",
    "accept-ranges",
    "alt-svc",
    "surrogate-key",
    "cache-tag",
    "surrogate-control",
    "set-cookie",
];

/// Response fields the edge sets itself on a passed response, or that speak to the CDN only.
const NOT_PASSED: [&str; 4] = ["alt-svc", "surrogate-key", "cache-tag", "surrogate-control"];

/// A site's request-field policy.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// Send `Authorization` and `Cookie` on cacheable fills (their answers are shared). Default: false.
    pub forward_credentials: bool,
    /// Request fields never sent upstream (lower case).
    pub deny: Vec<HeaderName>,
}

/// What an upstream request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A cacheable fill, shared by every request that joins it.
    Fill,
    /// A request forwarded for one client (pass-through, unsafe methods).
    Pass,
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect()
}

/// The end-to-end fields of `headers`: neither hop-by-hop nor named in `Connection`.
fn end_to_end(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    let listed = connection_listed(headers);
    headers.iter().filter(move |(name, _)| {
        !HOP_BY_HOP.contains(&name.as_str()) && !listed.iter().any(|l| l == name.as_str())
    })
}

/// Sets field `name` to `value` (left unset when `value` is not a valid field value).
pub fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// A field's value as text, when it is present and visible ASCII.
pub fn field_text(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The fields of a client's request to send upstream for `purpose`.
pub fn upstream_request(request: &HeaderMap, purpose: Purpose, policy: &Forwarding) -> HeaderMap {
    // Capacity from a client's field count could pass what HeaderMap can hold (it panics): grows as needed.
    let mut out = HeaderMap::with_capacity(request.len().min(64));
    for (name, value) in end_to_end(request) {
        let name_str = name.as_str();
        let skip = SET_BY_EDGE.contains(&name_str)
            || name_str.starts_with(CMCD_FIELDS_PREFIX)
            || policy.deny.contains(name)
            || (purpose == Purpose::Fill
                // The edge asks for a whole slice, unconditionally.
                && (name == header::RANGE
                    || PRECONDITIONS.contains(name)
                    || (!policy.forward_credentials
                        && (name == header::AUTHORIZATION || name == header::COOKIE))));
        if !skip {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// `X-Forwarded-For` for the upstream: the addresses the request's own field lines carry, in order, then
/// `client`. An upstream believes only the entries added by proxies it trusts, counting from the right, so what
/// a client wrote there cannot pass for its address.
pub fn forwarded_for(request: &HeaderMap, client: std::net::IpAddr) -> String {
    let mut list: Vec<&str> = request
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        // A client's long list is cut from the left: the entries nearest the edge are the ones that count.
        .collect();
    let keep = list.len().saturating_sub(15);
    list.drain(..keep);
    let client = client.to_string();
    list.push(&client);
    list.join(", ")
}

/// The fields of a response head to store with a version, less those `no-cache="…"`/`private="…"` name
/// (`strip`, lower case) and those with fields of their own in the record (`Content-Type`, `ETag`,
/// `Last-Modified`, `Cache-Control`).
pub fn stored_response(head: &HeaderMap, strip: &[String]) -> Vec<(String, String)> {
    const OWN_RECORD_FIELDS: [&str; 4] = ["content-type", "etag", "last-modified", "cache-control"];
    end_to_end(head)
        .filter(|(name, _)| {
            let name = name.as_str();
            !NOT_STORED.contains(&name)
                && !OWN_RECORD_FIELDS.contains(&name)
                && !strip.iter().any(|s| s == name)
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect()
}

/// The fields of an upstream response to pass to the client as they are.
pub fn passed_response(head: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(head.len());
    for (name, value) in end_to_end(head) {
        if !NOT_PASSED.contains(&name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn names(map: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn the_client_is_appended_to_x_forwarded_for() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(forwarded_for(&head(&[]), ip("192.0.2.1")), "192.0.2.1");
        let carried = head(&[
            ("x-forwarded-for", "10.0.0.1, 10.0.0.2"),
            ("X-Forwarded-For", "10.0.0.3"),
        ]);
        assert_eq!(
            forwarded_for(&carried, ip("::1")),
            "10.0.0.1, 10.0.0.2, 10.0.0.3, ::1"
        );
        let long = "1.1.1.1, ".repeat(40);
        let listed = forwarded_for(&head(&[("x-forwarded-for", &long)]), ip("192.0.2.9"));
        assert_eq!(listed.split(", ").count(), 16);
        assert!(listed.ends_with("192.0.2.9"));
    }

    #[test]
    fn requests_carry_end_to_end_fields() {
        let request = head(&[
            ("host", "edge"),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("traceparent", "00-abc-def-01"),
            ("x-request-id", "42"),
            ("range", "bytes=0-1"),
            ("if-none-match", "\"a\""),
            ("authorization", "Bearer x"),
            ("cookie", "a=b"),
            ("x-secret", "s"),
            ("early-data", "1"),
            ("cmcd-request", "bl=21300"),
            ("cmcd-object", "br=3200"),
            ("cmcd-status", "bs"),
            ("cmcd-session", "sid=\"s\""),
        ]);
        let policy = Forwarding {
            forward_credentials: false,
            deny: vec![HeaderName::from_static("x-secret")],
        };
        assert_eq!(
            names(&upstream_request(&request, Purpose::Fill, &policy)),
            ["traceparent", "x-request-id"]
        );
        assert_eq!(
            names(&upstream_request(&request, Purpose::Pass, &policy)),
            [
                "authorization",
                "cookie",
                "if-none-match",
                "range",
                "traceparent",
                "x-request-id"
            ]
        );
        let credentials = Forwarding {
            forward_credentials: true,
            deny: Vec::new(),
        };
        assert!(
            upstream_request(&request, Purpose::Fill, &credentials).contains_key("cookie"),
            "a site may share answers to credentials"
        );
    }

    #[test]
    fn stored_responses_keep_their_header_section() {
        let response = head(&[
            ("content-type", "video/mp2t"),
            ("etag", "\"v1\""),
            ("strict-transport-security", "max-age=63072000"),
            ("timing-allow-origin", "*"),
            ("server-timing", "db;dur=53"),
            ("content-security-policy", "default-src 'self'"),
            ("access-control-allow-origin", "https://player.example"),
            ("link", "</a.ts>; rel=preload"),
            ("x-app", "one"),
            ("x-app", "two"),
            ("x-private", "p"),
            ("connection", "x-hop"),
            ("x-hop", "h"),
            ("transfer-encoding", "chunked"),
            ("content-length", "9"),
            ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("age", "3"),
            ("surrogate-key", "t1"),
            ("set-cookie", "s=1"),
            ("alt-svc", "h3=\":443\""),
        ]);
        let stored = stored_response(&response, &["x-private".to_string()]);
        let stored: Vec<(&str, &str)> = stored
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            stored,
            [
                ("strict-transport-security", "max-age=63072000"),
                ("timing-allow-origin", "*"),
                ("server-timing", "db;dur=53"),
                ("content-security-policy", "default-src 'self'"),
                ("access-control-allow-origin", "https://player.example"),
                ("link", "</a.ts>; rel=preload"),
                ("x-app", "one"),
                ("x-app", "two"),
            ]
        );
        let passed = passed_response(&response);
        assert!(passed.contains_key("set-cookie") && passed.contains_key("content-length"));
        assert!(!passed.contains_key("x-hop") && !passed.contains_key("transfer-encoding"));
        assert!(!passed.contains_key("alt-svc"));
        assert_eq!(passed.get_all("x-app").iter().count(), 2);
    }
}
