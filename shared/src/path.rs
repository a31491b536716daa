//! Turning a request path into an object key safely. Every object a server reads is named by a key produced
//! here, so no request can name a file outside the store: `..` and `.` segments (plain or percent-encoded),
//! encoded slashes or backslashes, raw backslashes, NUL and other control characters, empty segments and
//! over-long paths are refused with a reason.

use std::borrow::Cow;
use std::fmt;

/// Longest accepted request path (bytes, before decoding).
pub const MAX_PATH_BYTES: usize = 2048;

/// Why a path does not name an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// The path does not start with `/` (absolute-form and authority-form are handled before this).
    NotAbsolute,
    /// `/` or a path ending in `/`: a directory, which is never served.
    Directory,
    /// A `.` or `..` segment, possibly percent-encoded.
    DotSegment,
    /// `%2F` or `%5C`: an encoded separator that could change how the key splits.
    EncodedSeparator,
    /// A raw backslash, which some stores treat as a separator.
    Backslash,
    /// NUL or another control character (raw or encoded).
    ControlCharacter,
    /// `//`: an empty segment.
    EmptySegment,
    /// A `%` not followed by two hex digits, or bytes that are not UTF-8 after decoding.
    BadEncoding,
    /// Longer than [`MAX_PATH_BYTES`].
    TooLong,
}

impl PathError {
    /// Whether the client sent something invalid (400) rather than naming nothing (404).
    pub fn is_bad_request(self) -> bool {
        !matches!(self, PathError::Directory)
    }

    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path must start with '/'",
            PathError::Directory => "directories are not served; name an object",
            PathError::DotSegment => {
                "path traversal refused: '.' and '..' segments are not allowed"
            }
            PathError::EncodedSeparator => {
                "path traversal refused: encoded '/' or '\\' is not allowed"
            }
            PathError::Backslash => "path traversal refused: '\\' is not allowed in paths",
            PathError::ControlCharacter => "NUL and control characters are not allowed in paths",
            PathError::EmptySegment => "empty path segments ('//') are not allowed",
            PathError::BadEncoding => "the path is not valid percent-encoded UTF-8",
            PathError::TooLong => "the request path is too long",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for PathError {}

/// The object key (decoded, without the leading `/`) for a request path (without the query).
pub fn object_key(path: &str) -> Result<String, PathError> {
    let mut key = String::with_capacity(path.len());
    check_segments(path, |_, decoded| {
        if !key.is_empty() {
            key.push('/');
        }
        key.push_str(decoded);
    })?;
    Ok(key)
}

/// Checks a request path segment by segment (the refusals listed at the top of this module), handing each
/// segment, as sent and decoded, to `each`.
fn check_segments(path: &str, mut each: impl FnMut(&str, &str)) -> Result<(), PathError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    let rest = path.strip_prefix('/').ok_or(PathError::NotAbsolute)?;
    if rest.is_empty() || rest.ends_with('/') {
        return Err(PathError::Directory);
    }
    for segment in rest.split('/') {
        let decoded = decode_segment(segment)?;
        match decoded.as_ref() {
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
        each(segment, &decoded);
    }
    Ok(())
}

/// The canonical spelling of a request path (without the query), after the same checks as [`object_key`]:
/// percent-encoded unreserved characters (RFC 3986 §2.3: letters, digits, `-`, `.`, `_`, `~`) are decoded, and
/// every other percent-encoding is written with upper-case hex (§6.2.2.1, §6.2.2.2). Two spellings of one
/// path have one canonical form, so prefix checks, cache keys, purges and the upstream request agree whatever
/// the client sent; what the origin decodes is unchanged.
pub fn canonical_path(path: &str) -> Result<String, PathError> {
    // One pass: each segment is checked and written in its canonical spelling.
    let mut canonical = String::with_capacity(path.len());
    check_segments(path, |segment, _| {
        canonical.push('/');
        push_canonical(&mut canonical, segment);
    })?;
    Ok(canonical)
}

/// The canonical spelling of a path prefix (for purges and bans): as [`canonical_path`], but it may end in
/// `/` or be `/` alone.
pub fn canonical_prefix(prefix: &str) -> Result<String, PathError> {
    if prefix == "/" {
        return Ok(prefix.to_string());
    }
    match prefix.strip_suffix('/') {
        // Checked as the path of an object inside the folder, which has the same segments.
        Some(folder) => canonical_path(&format!("{folder}/x"))
            .map(|p| format!("{folder}/", folder = &p[..p.len() - 2])),
        None => canonical_path(prefix),
    }
}

/// A query string with the same percent-encoding normalisation as [`canonical_path`]; a `%` not followed by
/// two hex digits is kept as it is (the query names no object, and the upstream decides what it means), or
/// written `%25` when what follows it would make it a percent-encoding once canonical.
pub fn canonical_query(query: &str) -> String {
    canonical_encoding(query)
}

fn canonical_encoding(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_canonical(&mut out, text);
    out
}

/// Appends `text` to `out` with its percent-encodings in canonical form, and its non-ASCII characters
/// percent-encoded (their UTF-8 bytes), as a client that follows RFC 3986 spells them.
fn push_canonical(out: &mut String, text: &str) {
    if !text.contains('%') && text.is_ascii() {
        out.push_str(text);
        return;
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        let Some(hex) = hex else {
            // Not a percent-encoding: the byte as it is, or percent-encoded if it is not ASCII. A lone `%` whose
            // next bytes may turn into a percent-encoding here (a `%` or a non-ASCII byte: `%%331` would become
            // `%31`, then `1`) is written `%25`, the literal `%` it is to every decoder, so that a canonical form
            // is canonical again.
            let lone_percent = bytes[i] == b'%'
                && bytes[i + 1..]
                    .iter()
                    .take(2)
                    .any(|&b| b == b'%' || !b.is_ascii());
            if lone_percent {
                out.push_str("%25");
            } else if bytes[i].is_ascii() {
                out.push(bytes[i] as char);
            } else {
                out.push('%');
                out.push(HEX_UPPER[(bytes[i] >> 4) as usize] as char);
                out.push(HEX_UPPER[(bytes[i] & 0xf) as usize] as char);
            }
            i += 1;
            continue;
        };
        let value = (hex_value(hex[0]) << 4) | hex_value(hex[1]);
        if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
            out.push(value as char);
        } else {
            out.push('%');
            out.push(hex[0].to_ascii_uppercase() as char);
            out.push(hex[1].to_ascii_uppercase() as char);
        }
        i += 3;
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

fn decode_segment(segment: &str) -> Result<Cow<'_, str>, PathError> {
    for b in segment.bytes() {
        match b {
            b'\\' => return Err(PathError::Backslash),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    if !segment.contains('%') {
        return Ok(Cow::Borrowed(segment));
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEncoding)?;
        let value = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .filter(|_| hex.iter().all(u8::is_ascii_hexdigit))
            .ok_or(PathError::BadEncoding)?;
        match value {
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            0..=0x1f | 0x7f => return Err(PathError::ControlCharacter),
            _ => out.push(value),
        }
        i += 3;
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::BadEncoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_paths_become_keys() {
        let table = [
            ("/titles/a/master.m3u8", "titles/a/master.m3u8"),
            ("/x.ts", "x.ts"),
            ("/titles/a%20b/seg%5F1.ts", "titles/a b/seg_1.ts"),
            ("/titles/%C3%A9t%C3%A9.mp4", "titles/été.mp4"),
            ("/titles/...", "titles/..."), // three dots is a name, not a traversal
            ("/titles/.hidden", "titles/.hidden"),
            ("/titles/a..b", "titles/a..b"),
        ];
        for (path, key) in table {
            assert_eq!(object_key(path).as_deref(), Ok(key), "{path}");
        }
    }

    #[test]
    fn traversal_and_bad_paths_are_refused() {
        use PathError::*;
        let table = [
            ("/../etc/passwd", DotSegment),
            ("/titles/../../etc/passwd", DotSegment),
            ("/titles/./x.ts", DotSegment),
            ("/%2e%2e/etc/passwd", DotSegment),
            ("/%2E%2E/etc/passwd", DotSegment),
            ("/.%2e/x", DotSegment),
            ("/titles/..", DotSegment),
            ("/titles%2f..%2f..%2fetc/passwd", EncodedSeparator),
            ("/titles%2F..%2Fetc", EncodedSeparator),
            ("/titles%5c..%5cetc", EncodedSeparator),
            ("/titles\\..\\etc", Backslash),
            ("/titles/a%00.ts", ControlCharacter),
            ("/titles/a\0.ts", ControlCharacter),
            ("/titles/a%0a.ts", ControlCharacter),
            ("/titles//x.ts", EmptySegment),
            ("/titles/%zz.ts", BadEncoding),
            ("/titles/%4.ts", BadEncoding),
            ("/titles/%+1.ts", BadEncoding),
            ("/titles/%ff.ts", BadEncoding),
            ("/", Directory),
            ("/titles/", Directory),
            ("titles/x.ts", NotAbsolute),
            ("*", NotAbsolute),
        ];
        for (path, err) in table {
            assert_eq!(object_key(path), Err(err), "{path}");
        }
        assert_eq!(
            object_key(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            Err(TooLong)
        );
    }

    #[test]
    fn only_directories_are_not_found_rather_than_bad() {
        assert!(!PathError::Directory.is_bad_request());
        assert!(PathError::DotSegment.is_bad_request());
        assert!(PathError::EncodedSeparator.reason().contains("traversal"));
    }

    #[test]
    fn every_spelling_of_a_path_has_one_canonical_form() {
        let table = [
            ("/titles/a/master.m3u8", "/titles/a/master.m3u8"),
            ("/%74itles/a/master.m3u8", "/titles/a/master.m3u8"),
            ("/%74%69%74%6c%65%73/a/seg_00%31.ts", "/titles/a/seg_001.ts"),
            ("/%74%69%74%6C%65%73/a/seg_00%31.ts", "/titles/a/seg_001.ts"),
            ("/titles/%7e%2d%2E%5f", "/titles/~-._"),
            // Reserved and non-ASCII stay encoded, with upper-case hex.
            ("/titles/a%20b.ts", "/titles/a%20b.ts"),
            ("/titles/a%2a", "/titles/a%2A"),
            ("/titles/a%3fb", "/titles/a%3Fb"),
            ("/titles/%c3%a9t%c3%a9.mp4", "/titles/%C3%A9t%C3%A9.mp4"),
            ("/titles/a+b;c=d", "/titles/a+b;c=d"),
        ];
        for (path, want) in table {
            assert_eq!(canonical_path(path).as_deref(), Ok(want), "{path}");
        }
        // The refusals of object_key hold for the canonical form too.
        for bad in [
            "/%2e%2e/x",
            "/titles%2f..%2fx",
            "/titles/a%00",
            "/titles//x",
            "/titles/%zz",
        ] {
            assert!(canonical_path(bad).is_err(), "{bad}");
        }
        assert_eq!(canonical_query("a=%31&b=%2f&c=%zz"), "a=1&b=%2F&c=%zz");
        assert_eq!(canonical_prefix("/%74itles/").as_deref(), Ok("/titles/"));
        assert_eq!(canonical_prefix("/").as_deref(), Ok("/"));
        assert_eq!(
            canonical_prefix("/titles/seg_00%31").as_deref(),
            Ok("/titles/seg_001")
        );
        assert!(canonical_prefix("/titles/../").is_err());
        assert_eq!(canonical_query("q=caf%c3%a9"), "q=caf%C3%A9");
        // A lone `%` that decoding next to it would make a percent-encoding (found by the fuzz target `path`).
        assert_eq!(canonical_query("%%330"), "%2530");
        assert_eq!(canonical_query("%3%30"), "%2530");
        assert_eq!(canonical_query("%\u{e9}"), "%25%C3%A9");
        assert_eq!(canonical_query("%2530"), "%2530");
    }
}
