//! Byte ranges (RFC 9110 §14): parse a `Range` header, resolve it against a representation length, and format
//! `Content-Range`. Pure functions; the origin and the edge both answer ranges through [`evaluate`].
//!
//! Policy where the RFC leaves a choice (the same as nginx's for single ranges):
//! - a range unit other than `bytes` is ignored (the full representation is served, §14.2 MUST);
//! - several ranges in one header are ignored (§14.2 MAY): video players ask for one range at a time, and a
//!   multipart answer costs more than the full body for the segment sizes served here;
//! - a `bytes` range that does not parse, or whose last position is before its first, is refused with 416 and a
//!   reason, so a client bug is visible rather than silently turned into a full download;
//! - an empty representation ignores `Range` (there is no byte to address; 200 with an empty body).

use std::fmt;

/// One `range-spec` of a `bytes` range set, as written by the client (RFC 9110 §14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `first-last`: both positions inclusive; `last` may run past the end.
    FromTo { first: u64, last: u64 },
    /// `first-`: from `first` to the end.
    From { first: u64 },
    /// `-n`: the last `n` bytes.
    Suffix { length: u64 },
}

/// A resolved, satisfiable range: `start..=end` within the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a resolved range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value for a 206 response: `bytes START-END/COMPLETE`.
    pub fn content_range(&self, complete_length: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, complete_length)
    }

    /// The half-open form used by storage APIs.
    pub fn as_std(&self) -> std::ops::Range<u64> {
        self.start..self.end + 1
    }
}

/// Why a `Range` header was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeError {
    /// The header is a `bytes` range that does not follow the grammar.
    Malformed(&'static str),
    /// Well formed, but no byte of the representation is selected.
    Unsatisfiable,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeError::Malformed(why) => write!(f, "malformed Range header: {why}"),
            RangeError::Unsatisfiable => {
                f.write_str("range not satisfiable: it starts past the end of the object")
            }
        }
    }
}

/// What a parsed `Range` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedRange {
    /// A single `bytes` range.
    Single(RangeSpec),
    /// More than one `bytes` range (served as the full representation; see the module doc).
    Multiple(Vec<RangeSpec>),
    /// A unit this server does not know (ignored).
    OtherUnit,
}

/// The `Content-Range` value of a 416 response: `bytes */COMPLETE`.
pub fn unsatisfied_content_range(complete_length: u64) -> String {
    format!("bytes */{complete_length}")
}

/// Parses a `Range` header value (RFC 9110 §14.1.2 and §14.2).
pub fn parse(value: &str) -> Result<ParsedRange, RangeError> {
    let value = value.trim();
    let Some((unit, set)) = value.split_once('=') else {
        return Err(RangeError::Malformed("expected UNIT=RANGES"));
    };
    if unit.is_empty() || !unit.bytes().all(is_tchar) {
        return Err(RangeError::Malformed("the range unit is not a token"));
    }
    if !unit.eq_ignore_ascii_case("bytes") {
        return Ok(ParsedRange::OtherUnit);
    }
    let mut specs = Vec::new();
    // `1#range-spec`: empty list elements are allowed and skipped (RFC 9110 §5.6.1.2).
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        specs.push(parse_spec(element)?);
    }
    match specs.len() {
        0 => Err(RangeError::Malformed("no range given")),
        1 => Ok(ParsedRange::Single(specs[0])),
        _ => Ok(ParsedRange::Multiple(specs)),
    }
}

fn parse_spec(spec: &str) -> Result<RangeSpec, RangeError> {
    let Some((first, last)) = spec.split_once('-') else {
        return Err(RangeError::Malformed("a range needs a '-'"));
    };
    match (first.is_empty(), last.is_empty()) {
        (true, true) => Err(RangeError::Malformed(
            "a range needs a first position or a suffix length",
        )),
        (true, false) => Ok(RangeSpec::Suffix {
            length: parse_pos(last)?,
        }),
        (false, true) => Ok(RangeSpec::From {
            first: parse_pos(first)?,
        }),
        (false, false) => {
            let (first, last) = (parse_pos(first)?, parse_pos(last)?);
            if last < first {
                return Err(RangeError::Malformed(
                    "the last position is before the first",
                ));
            }
            Ok(RangeSpec::FromTo { first, last })
        }
    }
}

/// `1*DIGIT`; values too large for u64 saturate (they are past any real end, which is what they mean).
fn parse_pos(digits: &str) -> Result<u64, RangeError> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed("positions must be decimal digits"));
    }
    Ok(digits.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    }))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Resolves one range spec against a representation of `length` bytes (RFC 9110 §14.1.1).
pub fn resolve(spec: RangeSpec, length: u64) -> Result<ByteRange, RangeError> {
    if length == 0 {
        return Err(RangeError::Unsatisfiable);
    }
    let last_byte = length - 1;
    match spec {
        RangeSpec::FromTo { first, last } if first <= last_byte => Ok(ByteRange {
            start: first,
            end: last.min(last_byte),
        }),
        RangeSpec::From { first } if first <= last_byte => Ok(ByteRange {
            start: first,
            end: last_byte,
        }),
        RangeSpec::Suffix { length: n } if n > 0 => Ok(ByteRange {
            start: length - n.min(length),
            end: last_byte,
        }),
        _ => Err(RangeError::Unsatisfiable),
    }
}

/// What to send for a request with an optional `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// 200 with the whole representation.
    Full,
    /// 206 with this part.
    Partial(ByteRange),
    /// 416 with `Content-Range: bytes */LEN` and this reason.
    Refused(RangeError),
}

/// The single decision point for `Range`: given the header (if any, and if preconditions let it apply) and the
/// representation length, what to send.
pub fn evaluate(header: Option<&str>, length: u64) -> RangeOutcome {
    let Some(header) = header else {
        return RangeOutcome::Full;
    };
    if length == 0 {
        return RangeOutcome::Full;
    }
    match parse(header) {
        Ok(ParsedRange::Single(spec)) => match resolve(spec, length) {
            Ok(range) => RangeOutcome::Partial(range),
            Err(e) => RangeOutcome::Refused(e),
        },
        Ok(ParsedRange::Multiple(_)) | Ok(ParsedRange::OtherUnit) => RangeOutcome::Full,
        Err(e) => RangeOutcome::Refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(start: u64, end: u64) -> RangeOutcome {
        RangeOutcome::Partial(ByteRange { start, end })
    }

    #[test]
    fn rfc9110_section_14_1_2_examples() {
        // "The first 500 bytes", "the second 500 bytes", "all except the first 500", "the final 500" of 10000.
        assert_eq!(evaluate(Some("bytes=0-499"), 10000), partial(0, 499));
        assert_eq!(evaluate(Some("bytes=500-999"), 10000), partial(500, 999));
        assert_eq!(evaluate(Some("bytes=500-"), 10000), partial(500, 9999));
        assert_eq!(evaluate(Some("bytes=-500"), 10000), partial(9500, 9999));
        assert_eq!(evaluate(Some("bytes=9500-"), 10000), partial(9500, 9999));
        // "The first and last bytes only" and other multi-range sets: served whole (module policy).
        assert_eq!(evaluate(Some("bytes=0-0,-1"), 10000), RangeOutcome::Full);
        assert_eq!(
            evaluate(Some("bytes= 0-999, 4500-5499, -1000"), 10000),
            RangeOutcome::Full
        );
        assert_eq!(
            evaluate(Some("bytes=500-600,601-999"), 10000),
            RangeOutcome::Full
        );
    }

    #[test]
    fn table_of_single_ranges() {
        let len = 100;
        let table: &[(&str, RangeOutcome)] = &[
            ("bytes=0-0", partial(0, 0)),
            ("bytes=99-99", partial(99, 99)),
            ("bytes=0-1000", partial(0, 99)), // last-pos past the end is clamped (§14.1.1)
            ("bytes=50-18446744073709551616", partial(50, 99)), // overflowing last-pos saturates, then clamps
            ("bytes=-100", partial(0, 99)),
            ("bytes=-1000", partial(0, 99)), // suffix longer than the object: whole object
            ("BYTES=1-2", partial(1, 2)),    // the unit is case-insensitive
            ("bytes=1-2,", partial(1, 2)),   // empty list elements are ignored
            (" bytes=1-2 ", partial(1, 2)),
            (
                "bytes=100-",
                RangeOutcome::Refused(RangeError::Unsatisfiable),
            ),
            (
                "bytes=100-200",
                RangeOutcome::Refused(RangeError::Unsatisfiable),
            ),
            ("bytes=-0", RangeOutcome::Refused(RangeError::Unsatisfiable)),
            (
                "bytes=18446744073709551616-",
                RangeOutcome::Refused(RangeError::Unsatisfiable),
            ),
            ("items=0-5", RangeOutcome::Full), // unknown unit: ignored (§14.2)
        ];
        for (header, want) in table {
            assert_eq!(&evaluate(Some(header), len), want, "Range: {header}");
        }
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        for header in [
            "bytes=5-2",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes=-",
            "bytes=",
            "bytes=,",
            "bytes 0-1",
            "=0-1",
            "bytes=+1-2",
            "bytes=0x10-20",
            "bytes=1 -2",
            "by tes=0-1",
        ] {
            match evaluate(Some(header), 100) {
                RangeOutcome::Refused(RangeError::Malformed(reason)) => assert!(!reason.is_empty()),
                other => panic!("Range: {header} gave {other:?}"),
            }
        }
    }

    #[test]
    fn no_header_or_empty_object_is_full() {
        assert_eq!(evaluate(None, 100), RangeOutcome::Full);
        assert_eq!(evaluate(Some("bytes=0-"), 0), RangeOutcome::Full);
        assert_eq!(evaluate(Some("bytes=5-2"), 0), RangeOutcome::Full);
    }

    #[test]
    fn content_range_values() {
        let r = ByteRange { start: 0, end: 499 };
        assert_eq!(r.content_range(1234), "bytes 0-499/1234");
        assert_eq!(r.len(), 500);
        assert_eq!(r.as_std(), 0..500);
        assert_eq!(unsatisfied_content_range(1234), "bytes */1234");
    }

    #[test]
    fn four_gib_object_ranges() {
        let len = 4u64 << 30;
        assert_eq!(evaluate(Some("bytes=-1"), len), partial(len - 1, len - 1));
        assert_eq!(
            evaluate(Some("bytes=2147483648-2147483747"), len),
            partial(1 << 31, (1 << 31) + 99)
        );
    }
}
