//! Conditional requests (RFC 9110 §13): entity-tag comparison and the evaluation order of §13.2.2 for
//! `If-Match`, `If-Unmodified-Since`, `If-None-Match`, `If-Modified-Since` and `If-Range`. Pure functions; the
//! clock is not needed because every comparison is against the representation's own validators.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The validators of the selected representation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validators<'a> {
    /// The full entity-tag as sent in `ETag`, quotes included (`"abc"` or `W/"abc"`).
    pub etag: Option<&'a str>,
    pub last_modified: Option<SystemTime>,
}

/// The conditional header values of a request (each as received, if present).
#[derive(Debug, Clone, Copy, Default)]
pub struct Preconditions<'a> {
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub if_modified_since: Option<&'a str>,
    pub if_unmodified_since: Option<&'a str>,
    pub if_range: Option<&'a str>,
}

impl<'a> Preconditions<'a> {
    /// The precondition headers of a request (values that are not visible ASCII are ignored).
    pub fn from_headers(headers: &'a http::HeaderMap) -> Self {
        let text = |name: http::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        Preconditions {
            if_match: text(http::header::IF_MATCH),
            if_none_match: text(http::header::IF_NONE_MATCH),
            if_modified_since: text(http::header::IF_MODIFIED_SINCE),
            if_unmodified_since: text(http::header::IF_UNMODIFIED_SINCE),
            if_range: text(http::header::IF_RANGE),
        }
    }

    /// True when no precondition header is present (the common case: nothing to evaluate).
    pub fn is_empty(&self) -> bool {
        self.if_match.is_none()
            && self.if_none_match.is_none()
            && self.if_modified_since.is_none()
            && self.if_unmodified_since.is_none()
            && self.if_range.is_none()
    }
}

/// The result of evaluating preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Perform the method. `apply_range` is false when `If-Range` did not match: send the full representation.
    Proceed { apply_range: bool },
    /// 304 Not Modified (GET and HEAD only).
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

/// An entity-tag split into its weakness and opaque part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    pub weak: bool,
    /// The opaque tag including its quotes.
    pub opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// Parses one `entity-tag` (`"x"` or `W/"x"`); `None` when it is not one.
    pub fn parse(s: &'a str) -> Option<Self> {
        let s = s.trim();
        let (weak, opaque) = match s.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let inner = opaque.strip_prefix('"')?.strip_suffix('"')?;
        // etagc = %x21 / %x23-7E / obs-text: no DQUOTE, no space, no control characters.
        if inner.bytes().any(|b| b == b'"' || b <= 0x20 || b == 0x7f) {
            return None;
        }
        Some(EntityTag { weak, opaque })
    }

    /// Strong comparison (§8.8.3.2): both strong and the opaque tags equal.
    pub fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison: the opaque tags equal, weakness ignored.
    pub fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// Turns a store's raw ETag (which may lack quotes, as `object_store`'s local files do) into a valid strong or
/// weak entity-tag for the `ETag` header.
pub fn normalize_etag(raw: &str) -> String {
    let raw = raw.trim();
    if EntityTag::parse(raw).is_some() {
        return raw.to_string();
    }
    let cleaned: String = raw
        .chars()
        .filter(|c| *c != '"' && !c.is_whitespace() && !c.is_control())
        .collect();
    format!("\"{cleaned}\"")
}

/// Does an `If-Match`/`If-None-Match` list match the current tag? `*` matches any existing representation.
fn list_matches(list: &str, current: Option<&str>, weak: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let Some(current) = current.and_then(EntityTag::parse) else {
        return false;
    };
    split_tags(list).any(|tag| {
        if weak {
            tag.weak_eq(&current)
        } else {
            tag.strong_eq(&current)
        }
    })
}

/// Splits an entity-tag list; quoted commas are not separators.
fn split_tags(list: &str) -> impl Iterator<Item = EntityTag<'_>> {
    let mut rest = list;
    std::iter::from_fn(move || {
        loop {
            rest = rest.trim_start_matches([' ', '\t', ',']);
            if rest.is_empty() {
                return None;
            }
            let open = rest.find('"')?;
            let close = open + 1 + rest[open + 1..].find('"')?;
            let (tag, tail) = rest.split_at(close + 1);
            rest = tail;
            if let Some(parsed) = EntityTag::parse(tag) {
                return Some(parsed);
            }
        }
    })
}

/// Parses an HTTP-date (IMF-fixdate and the two obsolete forms); `None` when invalid.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    httpdate::parse_http_date(value.trim()).ok()
}

/// Formats an IMF-fixdate.
pub fn format_http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// HTTP dates have one-second resolution: compare at that resolution.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Evaluates the preconditions in the order of RFC 9110 §13.2.2. `has_range` says whether the request carries a
/// `Range` header (If-Range only matters then); `get_or_head` whether the method is GET or HEAD.
pub fn evaluate(
    pre: &Preconditions<'_>,
    current: &Validators<'_>,
    get_or_head: bool,
    has_range: bool,
) -> Outcome {
    let last_modified = current.last_modified.map(whole_seconds);
    // Step 1 and 2: If-Match, else If-Unmodified-Since.
    if let Some(if_match) = pre.if_match {
        if !list_matches(if_match, current.etag, false) {
            return Outcome::PreconditionFailed;
        }
    } else if let (Some(since), Some(modified)) = (
        pre.if_unmodified_since.and_then(parse_http_date),
        last_modified,
    ) && modified > since
    {
        return Outcome::PreconditionFailed;
    }
    // Step 3 and 4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if let Some(if_none_match) = pre.if_none_match {
        if list_matches(if_none_match, current.etag, true) {
            return if get_or_head {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if get_or_head
        && let (Some(since), Some(modified)) = (
            pre.if_modified_since.and_then(parse_http_date),
            last_modified,
        )
        && modified <= since
    {
        return Outcome::NotModified;
    }
    // Step 5: If-Range, only for GET with Range.
    let apply_range = match pre.if_range {
        Some(if_range) if has_range && get_or_head => {
            if_range_matches(if_range, current, last_modified)
        }
        _ => true,
    };
    Outcome::Proceed { apply_range }
}

/// §13.1.5: an entity-tag must match strongly; a date must equal Last-Modified exactly.
fn if_range_matches(
    value: &str,
    current: &Validators<'_>,
    last_modified: Option<SystemTime>,
) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        let (Some(wanted), Some(have)) = (
            EntityTag::parse(value),
            current.etag.and_then(EntityTag::parse),
        ) else {
            return false;
        };
        return wanted.strong_eq(&have);
    }
    matches!((parse_http_date(value), last_modified), (Some(date), Some(modified)) if date == modified)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETAG: &str = "\"v1\"";
    const LM: &str = "Sat, 29 Oct 1994 19:43:31 GMT";
    const BEFORE: &str = "Fri, 28 Oct 1994 19:43:31 GMT";
    const AFTER: &str = "Sun, 30 Oct 1994 19:43:31 GMT";

    fn current() -> Validators<'static> {
        // Sub-second part must be ignored in comparisons.
        let lm = parse_http_date(LM).unwrap() + Duration::from_millis(250);
        Validators {
            etag: Some(ETAG),
            last_modified: Some(lm),
        }
    }

    fn eval(pre: Preconditions<'_>) -> Outcome {
        evaluate(&pre, &current(), true, true)
    }

    const PROCEED: Outcome = Outcome::Proceed { apply_range: true };
    const PROCEED_FULL: Outcome = Outcome::Proceed { apply_range: false };

    #[test]
    fn entity_tag_comparison_table_of_rfc9110_8_8_3_2() {
        // ETag 1, ETag 2, strong comparison, weak comparison.
        let table = [
            ("W/\"1\"", "W/\"1\"", false, true),
            ("W/\"1\"", "W/\"2\"", false, false),
            ("W/\"1\"", "\"1\"", false, true),
            ("\"1\"", "\"1\"", true, true),
        ];
        for (a, b, strong, weak) in table {
            let (a, b) = (EntityTag::parse(a).unwrap(), EntityTag::parse(b).unwrap());
            assert_eq!(a.strong_eq(&b), strong, "{a:?} {b:?}");
            assert_eq!(a.weak_eq(&b), weak, "{a:?} {b:?}");
        }
        assert!(EntityTag::parse("v1").is_none());
        assert!(EntityTag::parse("\"a b\"").is_none());
        assert!(EntityTag::parse("W/v1").is_none());
    }

    #[test]
    fn normalize_etag_quotes_bare_tags() {
        assert_eq!(normalize_etag("abc-12"), "\"abc-12\"");
        assert_eq!(normalize_etag("\"abc\""), "\"abc\"");
        assert_eq!(normalize_etag("W/\"abc\""), "W/\"abc\"");
        assert_eq!(normalize_etag("a\"b"), "\"ab\"");
    }

    #[test]
    fn if_none_match() {
        let table: &[(&str, Outcome)] = &[
            ("\"v1\"", Outcome::NotModified),
            ("W/\"v1\"", Outcome::NotModified), // weak comparison
            ("\"x\", \"v1\"", Outcome::NotModified),
            ("\"a,b\", \"v1\"", Outcome::NotModified), // a comma inside a tag is not a separator
            ("*", Outcome::NotModified),
            ("\"v2\"", PROCEED),
            ("garbage", PROCEED),
        ];
        for (value, want) in table {
            assert_eq!(
                eval(Preconditions {
                    if_none_match: Some(value),
                    ..Default::default()
                }),
                *want,
                "{value}"
            );
        }
        // Unsafe methods get 412 instead of 304.
        let pre = Preconditions {
            if_none_match: Some("\"v1\""),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&pre, &current(), false, false),
            Outcome::PreconditionFailed
        );
    }

    #[test]
    fn if_match() {
        let table: &[(&str, Outcome)] = &[
            ("\"v1\"", PROCEED),
            ("*", PROCEED),
            ("W/\"v1\"", Outcome::PreconditionFailed), // strong comparison
            ("\"v2\"", Outcome::PreconditionFailed),
        ];
        for (value, want) in table {
            assert_eq!(
                eval(Preconditions {
                    if_match: Some(value),
                    ..Default::default()
                }),
                *want,
                "{value}"
            );
        }
        let no_etag = Validators {
            etag: None,
            last_modified: None,
        };
        let pre = Preconditions {
            if_match: Some("\"v1\""),
            ..Default::default()
        };
        assert_eq!(
            evaluate(&pre, &no_etag, true, false),
            Outcome::PreconditionFailed
        );
    }

    #[test]
    fn if_modified_since() {
        let table: &[(&str, Outcome)] = &[
            (LM, Outcome::NotModified),
            (AFTER, Outcome::NotModified),
            ("Sun Nov  6 08:49:37 1994", Outcome::NotModified), // asctime form
            ("Sunday, 06-Nov-94 08:49:37 GMT", Outcome::NotModified), // rfc850 form
            (BEFORE, PROCEED),
            ("not a date", PROCEED), // invalid: ignored
        ];
        for (value, want) in table {
            assert_eq!(
                eval(Preconditions {
                    if_modified_since: Some(value),
                    ..Default::default()
                }),
                *want,
                "{value}"
            );
        }
        // If-None-Match takes precedence: a non-matching tag means 200 even with a matching date.
        let pre = Preconditions {
            if_none_match: Some("\"v2\""),
            if_modified_since: Some(AFTER),
            ..Default::default()
        };
        assert_eq!(eval(pre), PROCEED);
        // Ignored for unsafe methods.
        let pre = Preconditions {
            if_modified_since: Some(AFTER),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &current(), false, false), PROCEED);
    }

    #[test]
    fn if_unmodified_since() {
        let pre = |v| Preconditions {
            if_unmodified_since: Some(v),
            ..Default::default()
        };
        assert_eq!(eval(pre(BEFORE)), Outcome::PreconditionFailed);
        assert_eq!(eval(pre(LM)), PROCEED);
        assert_eq!(eval(pre("nonsense")), PROCEED);
        // If-Match present: If-Unmodified-Since is not evaluated.
        let both = Preconditions {
            if_match: Some("\"v1\""),
            if_unmodified_since: Some(BEFORE),
            ..Default::default()
        };
        assert_eq!(eval(both), PROCEED);
    }

    #[test]
    fn if_range() {
        let table: &[(&str, Outcome)] = &[
            ("\"v1\"", PROCEED),
            ("W/\"v1\"", PROCEED_FULL), // weak tags never match If-Range
            ("\"v2\"", PROCEED_FULL),
            (LM, PROCEED),
            (AFTER, PROCEED_FULL), // dates must match exactly
            ("junk", PROCEED_FULL),
        ];
        for (value, want) in table {
            assert_eq!(
                eval(Preconditions {
                    if_range: Some(value),
                    ..Default::default()
                }),
                *want,
                "{value}"
            );
        }
        // Without a Range header If-Range is irrelevant.
        let pre = Preconditions {
            if_range: Some("\"v2\""),
            ..Default::default()
        };
        assert_eq!(evaluate(&pre, &current(), true, false), PROCEED);
    }
}
