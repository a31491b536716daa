//! CMCD, Common Media Client Data (CTA-5004): what a player says about itself on each request — its session and
//! content ids, the bitrate it asks for, its buffer, whether it stalled — read from the `CMCD=` query parameter
//! and the `CMCD-Request`, `CMCD-Object`, `CMCD-Status` and `CMCD-Session` header fields. Pure: no I/O.
//!
//! The data is a list of `key=value` pairs in Structured Field dictionary syntax (RFC 8941): strings quoted with
//! `\"` and `\\` escapes, tokens and numbers bare, a true boolean as the bare key. The reader is lenient with keys
//! (an unknown key is ignored; a key sent in another header than the spec's is taken) and strict with values (a
//! value of the wrong type, out of range or too long drops that key and is counted in [`Cmcd::rejected`]; the
//! request is never refused for it). A repeated key: the last valid value wins. The query form is the same list,
//! percent-encoded as one parameter value. Work is bounded: at most [`MAX_PAIRS`] pairs are read per request, and
//! no string is kept longer than its limit.
//!
//! CMCD describes the player, not the object: [`query_without_cmcd`] takes the parameter out of the canonical
//! query that keys the cache and goes upstream, and the `CMCD-*` fields are not sent upstream (`fields.rs`).

use std::borrow::Cow;

use http::HeaderMap;

/// The query parameter that carries CMCD (its name is case-sensitive, like every query parameter's).
pub const QUERY_PARAM: &str = "CMCD";
/// The header fields that carry CMCD, lower case.
pub const HEADER_FIELDS: [&str; 4] = ["cmcd-request", "cmcd-object", "cmcd-status", "cmcd-session"];
/// Longest session or content id kept, in characters (CTA-5004 §3.3: at most 64).
pub const MAX_ID_CHARS: usize = 64;
/// Longest `nor` (next object request, a relative URL) kept, in characters.
pub const MAX_NEXT_OBJECT_CHARS: usize = 256;
/// Pairs read per request at most (the spec has 18 keys); what follows is not read.
pub const MAX_PAIRS: usize = 64;
/// Longest key read, in bytes; longer ones are malformed.
const MAX_KEY_BYTES: usize = 64;
/// Digits of a Structured Field integer at most (RFC 8941 §3.3.1).
const MAX_INTEGER_DIGITS: usize = 15;

/// What one request's CMCD says. Every field is `None` when absent or rejected.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cmcd {
    /// `br`: the encoded bitrate of the requested object, kbps.
    pub encoded_bitrate_kbps: Option<u64>,
    /// `bl`: the buffer length, ms.
    pub buffer_length_ms: Option<u64>,
    /// `bs`: the buffer ran empty (a stall) since the previous request.
    pub buffer_starvation: Option<bool>,
    /// `cid`: the content id, 1 to [`MAX_ID_CHARS`] printable ASCII characters.
    pub content_id: Option<String>,
    /// `d`: the object's playback duration, ms.
    pub object_duration_ms: Option<u64>,
    /// `dl`: the deadline by which the object must arrive to avoid a stall, ms.
    pub deadline_ms: Option<u64>,
    /// `mtp`: the throughput the player measured, kbps.
    pub measured_throughput_kbps: Option<u64>,
    /// `nor`: the next object the player will ask for (a relative URL).
    pub next_object_request: Option<String>,
    /// `nrr`: the next byte range the player will ask for, `start-end` (either side may be missing).
    pub next_range_request: Option<String>,
    /// `ot`: what the object is.
    pub object_type: Option<ObjectType>,
    /// `pr`: the playback rate (1 is real time, 0 paused).
    pub playback_rate: Option<f64>,
    /// `rtp`: the most throughput the player asks the server to use, kbps.
    pub requested_max_throughput_kbps: Option<u64>,
    /// `sf`: the streaming format.
    pub streaming_format: Option<StreamingFormat>,
    /// `sid`: the playback session id, 1 to [`MAX_ID_CHARS`] printable ASCII characters.
    pub session_id: Option<String>,
    /// `st`: VOD or live.
    pub stream_type: Option<StreamType>,
    /// `su`: the object is needed urgently (startup, seek, recovery after a stall).
    pub startup: Option<bool>,
    /// `tb`: the highest bitrate rendition the player could play, kbps.
    pub top_bitrate_kbps: Option<u64>,
    /// `v`: the CMCD version (absent means 1).
    pub version: Option<u64>,
    /// Values dropped: a wrong type, a number out of range, a string too long, a malformed pair.
    pub rejected: u32,
    /// Where the request carried it.
    pub carrier: Carrier,
}

/// Where a request carried its CMCD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Carrier {
    #[default]
    Query,
    Headers,
    Both,
}

impl Carrier {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Carrier::Query => "query",
            Carrier::Headers => "headers",
            Carrier::Both => "both",
        }
    }
}

/// `ot`: the type of the requested object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectType {
    Manifest,
    Audio,
    Video,
    Muxed,
    Init,
    Caption,
    TimedText,
    Key,
    Other,
}

impl ObjectType {
    const ALL: [(&'static str, ObjectType); 9] = [
        ("m", ObjectType::Manifest),
        ("a", ObjectType::Audio),
        ("v", ObjectType::Video),
        ("av", ObjectType::Muxed),
        ("i", ObjectType::Init),
        ("c", ObjectType::Caption),
        ("tt", ObjectType::TimedText),
        ("k", ObjectType::Key),
        ("o", ObjectType::Other),
    ];

    fn from_token(token: &str) -> Option<Self> {
        Self::ALL.iter().find(|(t, _)| *t == token).map(|(_, o)| *o)
    }

    /// The token, which is also the metric label.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("o", |(t, _)| t)
    }
}

/// `sf`: the streaming format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamingFormat {
    Dash,
    Hls,
    Smooth,
    Other,
}

impl StreamingFormat {
    fn from_token(token: &str) -> Option<Self> {
        match token {
            "d" => Some(StreamingFormat::Dash),
            "h" => Some(StreamingFormat::Hls),
            "s" => Some(StreamingFormat::Smooth),
            "o" => Some(StreamingFormat::Other),
            _ => None,
        }
    }
}

/// `st`: the stream type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamType {
    Vod,
    Live,
}

impl StreamType {
    fn from_token(token: &str) -> Option<Self> {
        match token {
            "v" => Some(StreamType::Vod),
            "l" => Some(StreamType::Live),
            _ => None,
        }
    }
}

impl Cmcd {
    /// The object type's metric label, `none` when the request did not say.
    pub fn object_type_label(&self) -> &'static str {
        self.object_type.map_or("none", ObjectType::as_str)
    }
}

/// The CMCD of a request (its raw query and its header fields), or `None` when it carries none. The header
/// fields are read first, then the query, so a key given both ways takes the query's value.
pub fn from_request(query: Option<&str>, headers: &HeaderMap) -> Option<Cmcd> {
    let mut reader = Reader::default();
    let mut in_headers = false;
    for name in HEADER_FIELDS {
        for value in headers.get_all(name) {
            in_headers = true;
            reader.dictionary(value.as_bytes());
        }
    }
    let mut in_query = false;
    for param in query.unwrap_or("").split('&') {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if is_cmcd_name(name) {
            in_query = true;
            reader.dictionary(&percent_decode(value));
        }
    }
    let mut cmcd = reader.cmcd;
    cmcd.carrier = match (in_query, in_headers) {
        (false, false) => return None,
        (true, false) => Carrier::Query,
        (false, true) => Carrier::Headers,
        (true, true) => Carrier::Both,
    };
    Some(cmcd)
}

/// A canonical query (`shared::path::canonical_query`) without its `CMCD` parameters; `None` when nothing is
/// left. The canonical spelling decodes percent-encoded letters, so `%43MCD` and `C%4dCD` are `CMCD` by then and
/// one comparison covers every spelling; `cmcd` (another parameter to every server) is kept.
pub fn query_without_cmcd(query: &str) -> Option<Cow<'_, str>> {
    if query.is_empty() {
        return None;
    }
    if !query.split('&').any(is_cmcd_param) {
        return Some(Cow::Borrowed(query));
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !is_cmcd_param(p)).collect();
    let kept = kept.join("&");
    (!kept.is_empty()).then_some(Cow::Owned(kept))
}

/// Whether one parameter (`name=value`, or a bare `name`) of a canonical query is CMCD.
pub fn is_cmcd_param(param: &str) -> bool {
    param.split_once('=').map_or(param, |(name, _)| name) == QUERY_PARAM
}

/// Whether a raw (not yet canonical) parameter name is `CMCD` in some spelling.
fn is_cmcd_name(name: &str) -> bool {
    name == QUERY_PARAM
        || (name.contains('%') && shared::path::canonical_query(name) == QUERY_PARAM)
}

/// Percent-decodes a query value; a `%` not followed by two hex digits stays as it is.
fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| bytes[i] == b'%' && h.iter().all(u8::is_ascii_hexdigit));
        match hex {
            Some(h) => {
                out.push((hex_digit(h[0]) << 4) | hex_digit(h[1]));
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// A value as written, before it is checked against its key's type.
#[derive(Debug, Clone, PartialEq)]
enum Bare<'a> {
    Integer(i64),
    Decimal(f64),
    Text(String),
    Token(&'a str),
    Boolean(bool),
}

/// Reads dictionaries into one [`Cmcd`], within [`MAX_PAIRS`].
struct Reader {
    cmcd: Cmcd,
    pairs_left: usize,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            cmcd: Cmcd::default(),
            pairs_left: MAX_PAIRS,
        }
    }
}

impl Reader {
    /// Reads one comma-separated list of pairs.
    fn dictionary(&mut self, text: &[u8]) {
        let mut at = 0;
        loop {
            at = skip_spaces(text, at);
            if at >= text.len() || self.pairs_left == 0 {
                return;
            }
            self.pairs_left -= 1;
            match pair(text, at) {
                Ok((key, value, next)) => {
                    self.apply(key, value);
                    at = next;
                }
                Err(()) => {
                    self.cmcd.rejected += 1;
                    at = after_member(text, at);
                }
            }
        }
    }

    /// Sets the field of `key` when `value` has its type; an unknown key is ignored.
    fn apply(&mut self, key: &str, value: Bare<'_>) {
        let c = &mut self.cmcd;
        let taken = match key {
            "br" => put(&mut c.encoded_bitrate_kbps, count(&value)),
            "bl" => put(&mut c.buffer_length_ms, count(&value)),
            "bs" => put(&mut c.buffer_starvation, boolean(&value)),
            "cid" => put(&mut c.content_id, text(value, MAX_ID_CHARS)),
            "d" => put(&mut c.object_duration_ms, count(&value)),
            "dl" => put(&mut c.deadline_ms, count(&value)),
            "mtp" => put(&mut c.measured_throughput_kbps, count(&value)),
            "nor" => put(
                &mut c.next_object_request,
                text(value, MAX_NEXT_OBJECT_CHARS),
            ),
            "nrr" => put(
                &mut c.next_range_request,
                text(value, 2 * MAX_INTEGER_DIGITS + 1).filter(|r| is_byte_range(r)),
            ),
            "ot" => put(
                &mut c.object_type,
                token(&value).and_then(ObjectType::from_token),
            ),
            "pr" => put(&mut c.playback_rate, rate(&value)),
            "rtp" => put(&mut c.requested_max_throughput_kbps, count(&value)),
            "sf" => put(
                &mut c.streaming_format,
                token(&value).and_then(StreamingFormat::from_token),
            ),
            "sid" => put(&mut c.session_id, text(value, MAX_ID_CHARS)),
            "st" => put(
                &mut c.stream_type,
                token(&value).and_then(StreamType::from_token),
            ),
            "su" => put(&mut c.startup, boolean(&value)),
            "tb" => put(&mut c.top_bitrate_kbps, count(&value)),
            "v" => put(&mut c.version, count(&value).filter(|&v| v >= 1)),
            _ => true,
        };
        if !taken {
            c.rejected += 1;
        }
    }
}

/// Stores `value` when it passed its checks; `false` when it did not (the slot keeps what it had).
fn put<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *slot = Some(value);
            true
        }
        None => false,
    }
}

/// A non-negative integer (every CMCD count, rate and duration).
fn count(value: &Bare<'_>) -> Option<u64> {
    match *value {
        Bare::Integer(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

fn boolean(value: &Bare<'_>) -> Option<bool> {
    match *value {
        Bare::Boolean(b) => Some(b),
        _ => None,
    }
}

/// A non-negative decimal; an integer is taken as one too (players send `pr=1`).
fn rate(value: &Bare<'_>) -> Option<f64> {
    match *value {
        Bare::Decimal(x) if x >= 0.0 => Some(x),
        Bare::Integer(n) if n >= 0 => Some(n as f64),
        _ => None,
    }
}

/// A non-empty string of at most `max` characters.
fn text(value: Bare<'_>, max: usize) -> Option<String> {
    match value {
        Bare::Text(s) if !s.is_empty() && s.len() <= max => Some(s),
        _ => None,
    }
}

fn token<'a>(value: &Bare<'a>) -> Option<&'a str> {
    match *value {
        Bare::Token(t) => Some(t),
        _ => None,
    }
}

/// `start-end`, `start-` or `-length`, in digits, with start ≤ end when both are given.
fn is_byte_range(range: &str) -> bool {
    let Some((start, end)) = range.split_once('-') else {
        return false;
    };
    let number = |s: &str| {
        (1..=MAX_INTEGER_DIGITS).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
    };
    match (start.is_empty(), end.is_empty()) {
        (false, false) => {
            number(start) && number(end) && start.parse::<u64>().ok() <= end.parse::<u64>().ok()
        }
        (false, true) => number(start),
        (true, false) => number(end),
        (true, true) => false,
    }
}

/// One pair at `at`: its key, its value (a bare key is `true`) and where the next member starts (after the comma
/// or at the end); `Err` when the member is malformed.
fn pair(text: &[u8], at: usize) -> Result<(&str, Bare<'_>, usize), ()> {
    let key_end = key_end(text, at)?;
    // The key's bytes are ASCII (checked by key_end).
    let key = std::str::from_utf8(&text[at..key_end]).map_err(|_| ())?;
    let (value, value_end) = if text.get(key_end) == Some(&b'=') {
        bare_item(text, key_end + 1)?
    } else {
        (Bare::Boolean(true), key_end)
    };
    let at = skip_spaces(text, value_end);
    match text.get(at) {
        None => Ok((key, value, at)),
        Some(b',') => Ok((key, value, at + 1)),
        // Parameters (`;`) are not part of CMCD; anything else is garbage.
        Some(_) => Err(()),
    }
}

/// The end of the key at `at`: a lower-case letter or `*`, then lower-case letters, digits, `_ - . *`.
fn key_end(text: &[u8], at: usize) -> Result<usize, ()> {
    match text.get(at) {
        Some(b) if b.is_ascii_lowercase() || *b == b'*' => {}
        _ => return Err(()),
    }
    let len = text[at..]
        .iter()
        .take_while(|&&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.' | b'*')
        })
        .count();
    if len > MAX_KEY_BYTES {
        return Err(());
    }
    Ok(at + len)
}

/// A value at `at` (RFC 8941 §4.2.3.1) and where it ends.
fn bare_item(text: &[u8], at: usize) -> Result<(Bare<'_>, usize), ()> {
    match text.get(at) {
        Some(b'"') => string(text, at + 1),
        Some(b'?') => match text.get(at + 1) {
            Some(b'0') => Ok((Bare::Boolean(false), at + 2)),
            Some(b'1') => Ok((Bare::Boolean(true), at + 2)),
            _ => Err(()),
        },
        Some(b) if *b == b'-' || b.is_ascii_digit() => number(text, at),
        Some(b) if b.is_ascii_alphabetic() || *b == b'*' => {
            let len = text[at..]
                .iter()
                .take_while(|&&b| is_tchar(b) || b == b':' || b == b'/')
                .count();
            let token = std::str::from_utf8(&text[at..at + len]).map_err(|_| ())?;
            Ok((Bare::Token(token), at + len))
        }
        _ => Err(()),
    }
}

/// A quoted string's content from `at` (just after the opening quote): printable ASCII, `\"` and `\\` the only
/// escapes. Characters past the longest string any key takes are not kept (the value is too long anyway).
fn string(text: &[u8], mut at: usize) -> Result<(Bare<'_>, usize), ()> {
    const KEEP: usize = MAX_NEXT_OBJECT_CHARS + 1;
    let mut out = String::new();
    loop {
        let b = *text.get(at).ok_or(())?;
        let c = match b {
            b'"' => return Ok((Bare::Text(out), at + 1)),
            b'\\' => {
                at += 1;
                match text.get(at) {
                    Some(&e @ (b'"' | b'\\')) => e,
                    _ => return Err(()),
                }
            }
            0x20..=0x7e => b,
            _ => return Err(()),
        };
        if out.len() < KEEP {
            out.push(c as char);
        }
        at += 1;
    }
}

/// An integer (up to 15 digits) or a decimal (up to 12 digits, `.`, 1 to 3 digits), RFC 8941 §4.2.4.
fn number(text: &[u8], at: usize) -> Result<(Bare<'_>, usize), ()> {
    let negative = text.get(at) == Some(&b'-');
    let start = at + usize::from(negative);
    let digits = |from: usize| {
        text.get(from..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let whole = digits(start);
    if whole == 0 {
        return Err(());
    }
    let whole_end = start + whole;
    let parse = |end: usize| {
        std::str::from_utf8(&text[at..end])
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
    };
    if text.get(whole_end) == Some(&b'.') {
        let fraction = digits(whole_end + 1);
        if whole > 12 || !(1..=3).contains(&fraction) {
            return Err(());
        }
        let end = whole_end + 1 + fraction;
        return parse(end).map(|x| (Bare::Decimal(x), end)).ok_or(());
    }
    if whole > MAX_INTEGER_DIGITS {
        return Err(());
    }
    let n = std::str::from_utf8(&text[at..whole_end])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(())?;
    Ok((Bare::Integer(n), whole_end))
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn skip_spaces(text: &[u8], at: usize) -> usize {
    at + text
        .get(at..)
        .unwrap_or_default()
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()
}

/// Where the member after a malformed one at `at` starts: past the next comma outside a quoted string.
fn after_member(text: &[u8], at: usize) -> usize {
    let mut quoted = false;
    let mut i = at;
    while i < text.len() {
        match (quoted, text[i]) {
            (true, b'\\') => i += 1,
            (_, b'"') => quoted = !quoted,
            (false, b',') => return i + 1,
            _ => {}
        }
        i += 1;
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn read(text: &str) -> Cmcd {
        let mut reader = Reader::default();
        reader.dictionary(text.as_bytes());
        reader.cmcd
    }

    fn headers(fields: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn every_key_of_the_spec_is_read() {
        let c = read(
            r#"br=3200,bl=21300,bs,cid="faec5fc2-ac30-11ea-bb37-0242ac130002",d=4004,dl=18500,mtp=48100,nor="..%2F300kbps%2Fsegment35.m4v",nrr="12323-48763",ot=v,pr=1.08,rtp=12000,sf=d,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,su,tb=6000,v=1"#,
        );
        assert_eq!(
            c,
            Cmcd {
                encoded_bitrate_kbps: Some(3200),
                buffer_length_ms: Some(21300),
                buffer_starvation: Some(true),
                content_id: Some("faec5fc2-ac30-11ea-bb37-0242ac130002".into()),
                object_duration_ms: Some(4004),
                deadline_ms: Some(18500),
                measured_throughput_kbps: Some(48100),
                next_object_request: Some("..%2F300kbps%2Fsegment35.m4v".into()),
                next_range_request: Some("12323-48763".into()),
                object_type: Some(ObjectType::Video),
                playback_rate: Some(1.08),
                requested_max_throughput_kbps: Some(12000),
                streaming_format: Some(StreamingFormat::Dash),
                session_id: Some("6e2fb550-c457-11e9-bb97-0800200c9a66".into()),
                stream_type: Some(StreamType::Vod),
                startup: Some(true),
                top_bitrate_kbps: Some(6000),
                version: Some(1),
                rejected: 0,
                carrier: Carrier::Query,
            }
        );
    }

    #[test]
    fn tokens_of_every_enumeration() {
        for (token, ot) in ObjectType::ALL {
            assert_eq!(read(&format!("ot={token}")).object_type, Some(ot));
            assert_eq!(ot.as_str(), token);
        }
        let sf = |t: &str| read(&format!("sf={t}")).streaming_format;
        assert_eq!(sf("h"), Some(StreamingFormat::Hls));
        assert_eq!(sf("s"), Some(StreamingFormat::Smooth));
        assert_eq!(sf("o"), Some(StreamingFormat::Other));
        assert_eq!(read("st=l").stream_type, Some(StreamType::Live));
        // Tokens outside the spec's lists, or not tokens, are rejected.
        for bad in ["ot=x", "ot=\"v\"", "ot=1", "sf=hls", "st=V", "ot=v1"] {
            let c = read(bad);
            assert_eq!(
                (c.object_type, c.streaming_format, c.stream_type, c.rejected),
                (None, None, None, 1),
                "{bad}"
            );
        }
    }

    #[test]
    fn booleans_are_bare_keys_or_structured_booleans() {
        assert_eq!(read("bs").buffer_starvation, Some(true));
        assert_eq!(read("bs=?1").buffer_starvation, Some(true));
        assert_eq!(read("bs=?0").buffer_starvation, Some(false));
        assert_eq!(read("su , bs").startup, Some(true));
        for bad in ["bs=1", "bs=true", "bs=?2", "bs=?", "bs=\"?1\""] {
            let c = read(bad);
            assert_eq!((c.buffer_starvation, c.rejected), (None, 1), "{bad}");
        }
    }

    #[test]
    fn numbers_are_checked_for_type_and_range() {
        let table: [(&str, Option<u64>, u32); 12] = [
            ("br=0", Some(0), 0),
            ("br=999999999999999", Some(999_999_999_999_999), 0),
            ("br=1000000000000000", None, 1), // 16 digits: past RFC 8941's integers
            ("br=-1", None, 1),
            ("br=3.2", None, 1), // a decimal where an integer is due
            ("br=\"3200\"", None, 1),
            ("br=abc", None, 1),
            ("br", None, 1), // a bare key is a boolean
            ("br=", None, 1),
            ("br=12x", None, 1),
            ("br=1.", None, 1),
            ("br=- 1", None, 1),
        ];
        for (text, want, rejected) in table {
            let c = read(text);
            assert_eq!(
                (c.encoded_bitrate_kbps, c.rejected),
                (want, rejected),
                "{text}"
            );
        }
        assert_eq!(read("v=0").version, None, "versions start at 1");
        assert_eq!(read("v=2").version, Some(2));
        let pr = |t: &str| read(&format!("pr={t}")).playback_rate;
        assert_eq!(pr("1"), Some(1.0));
        assert_eq!(pr("0"), Some(0.0));
        assert_eq!(pr("0.5"), Some(0.5));
        assert_eq!(pr("2.125"), Some(2.125));
        assert_eq!(pr("2.1255"), None, "at most three decimals");
        assert_eq!(pr("-1.5"), None);
        assert_eq!(pr("1234567890123.5"), None, "at most twelve whole digits");
    }

    #[test]
    fn strings_are_quoted_escaped_printable_and_bounded() {
        assert_eq!(
            read(r#"sid="a\"b\\c""#).session_id.as_deref(),
            Some(r#"a"b\c"#)
        );
        assert_eq!(
            read(r#"cid="with, comma",br=1"#).content_id.as_deref(),
            Some("with, comma")
        );
        let id64 = "x".repeat(MAX_ID_CHARS);
        assert_eq!(
            read(&format!("sid=\"{id64}\"")).session_id,
            Some(id64.clone())
        );
        for bad in [
            format!("sid=\"{id64}y\""), // 65 characters
            "sid=\"\"".to_string(),
            "sid=abc".to_string(), // a token, not a string
            "sid=\"unterminated".to_string(),
            "sid=\"bad \\n escape\"".to_string(),
            "sid=\"tab\there\"".to_string(),
            "sid=\"caf\u{e9}\"".to_string(),
            "sid=\"a\"b".to_string(),
        ] {
            let c = read(&bad);
            assert_eq!(c.session_id, None, "{bad}");
            assert!(c.rejected >= 1, "{bad}");
        }
        let nor = format!("nor=\"{}\"", "n".repeat(MAX_NEXT_OBJECT_CHARS + 1));
        assert_eq!(read(&nor).next_object_request, None);
        let nrr = |t: &str| read(&format!("nrr=\"{t}\"")).next_range_request;
        assert_eq!(nrr("0-99").as_deref(), Some("0-99"));
        assert_eq!(nrr("100-").as_deref(), Some("100-"));
        assert_eq!(nrr("-500").as_deref(), Some("-500"));
        for bad in ["-", "99-0", "a-b", "1-2-3", "", "1"] {
            assert_eq!(nrr(bad), None, "{bad}");
        }
    }

    #[test]
    fn unknown_keys_are_ignored_and_bad_pairs_dropped_alone() {
        let c = read("xyz=1,com.example-key=\"v\",br=800,future=?1,*star=tok");
        assert_eq!((c.encoded_bitrate_kbps, c.rejected), (Some(800), 0));
        // Malformed members are skipped up to the next comma outside quotes; their neighbours are kept.
        let c = read(r#"BR=1,br=900,=2,,sid="s,1",bl=5;p=1,cid="c""#);
        assert_eq!(c.encoded_bitrate_kbps, Some(900));
        assert_eq!(c.session_id.as_deref(), Some("s,1"));
        assert_eq!(c.content_id.as_deref(), Some("c"));
        assert_eq!(c.buffer_length_ms, None);
        assert_eq!(
            c.rejected, 4,
            "BR=1, =2, the empty member, bl with a parameter"
        );
        // Spaces around members are allowed (RFC 8941 OWS), inside one they are not.
        let c = read("  br=1 ,\tbl=2  ,  su ");
        assert_eq!(
            (c.encoded_bitrate_kbps, c.buffer_length_ms, c.startup),
            (Some(1), Some(2), Some(true))
        );
    }

    #[test]
    fn the_last_valid_value_of_a_repeated_key_wins() {
        assert_eq!(read("br=1,br=2").encoded_bitrate_kbps, Some(2));
        let c = read("br=1,br=oops");
        assert_eq!((c.encoded_bitrate_kbps, c.rejected), (Some(1), 1));
        assert_eq!(read("bs,bs=?0").buffer_starvation, Some(false));
    }

    #[test]
    fn pairs_past_the_limit_are_not_read() {
        let many: Vec<String> = (0..MAX_PAIRS).map(|i| format!("x{i}=1")).collect();
        let c = read(&format!("{},br=5", many.join(",")));
        assert_eq!(c.encoded_bitrate_kbps, None);
        let c = read(&format!("br=5,{}", many.join(",")));
        assert_eq!(c.encoded_bitrate_kbps, Some(5));
    }

    #[test]
    fn the_query_form_is_one_percent_encoded_parameter() {
        // CTA-5004's own example of the query form.
        let query = "a=1&CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22faec5fc2-ac30-11ea-bb37-0242ac130002%22%2Cd%3D4004%2Cmtp%3D25400%2Cot%3Dv%2Crtp%3D15000%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Ctb%3D6000&z=2";
        let c = from_request(Some(query), &HeaderMap::new()).unwrap();
        assert_eq!(c.carrier, Carrier::Query);
        assert_eq!(c.buffer_length_ms, Some(21300));
        assert_eq!(c.encoded_bitrate_kbps, Some(3200));
        assert_eq!(c.buffer_starvation, Some(true));
        assert_eq!(
            c.content_id.as_deref(),
            Some("faec5fc2-ac30-11ea-bb37-0242ac130002")
        );
        assert_eq!(
            c.session_id.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
        assert_eq!(c.top_bitrate_kbps, Some(6000));
        assert_eq!(c.rejected, 0);
        // Unencoded (some players), an encoded name, lower-case hex.
        for query in [
            "CMCD=br=3200,sid=\"s\"",
            "%43MCD=br%3d3200%2csid%3d%22s%22",
            "C%4dCD=br%3D3200%2Csid%3D%22s%22",
        ] {
            let c = from_request(Some(query), &HeaderMap::new()).unwrap();
            assert_eq!(
                (c.encoded_bitrate_kbps, c.session_id.as_deref()),
                (Some(3200), Some("s")),
                "{query}"
            );
        }
        // An empty value is CMCD with nothing in it; `cmcd` is not CMCD; no query, no CMCD.
        assert_eq!(
            from_request(Some("CMCD="), &HeaderMap::new()),
            Some(Cmcd::default())
        );
        assert_eq!(from_request(Some("cmcd=br%3D1"), &HeaderMap::new()), None);
        assert_eq!(from_request(None, &HeaderMap::new()), None);
        assert_eq!(from_request(Some("a=1&b"), &HeaderMap::new()), None);
        // A bad percent-encoding is read as it is.
        let c = from_request(Some("CMCD=br%3D1%2Csid%3D%22%zz%22"), &HeaderMap::new()).unwrap();
        assert_eq!(
            (c.encoded_bitrate_kbps, c.session_id.as_deref()),
            (Some(1), Some("%zz"))
        );
    }

    #[test]
    fn the_header_form_spreads_keys_over_four_fields() {
        let map = headers(&[
            ("cmcd-request", "bl=21300, mtp=25400, su"),
            ("cmcd-object", "br=3200,d=4004,ot=v,tb=6000"),
            ("cmcd-status", "bs,rtp=15000"),
            ("cmcd-session", r#"cid="c1",sid="s1",sf=h,st=l"#),
            ("cmcd-session", "v=1"), // a second line of the same field
            ("x-cmcd", "br=1"),
        ]);
        let c = from_request(None, &map).unwrap();
        assert_eq!(c.carrier, Carrier::Headers);
        assert_eq!(
            (c.buffer_length_ms, c.measured_throughput_kbps, c.startup),
            (Some(21300), Some(25400), Some(true))
        );
        assert_eq!(
            (
                c.encoded_bitrate_kbps,
                c.object_duration_ms,
                c.top_bitrate_kbps
            ),
            (Some(3200), Some(4004), Some(6000))
        );
        assert_eq!(c.object_type_label(), "v");
        assert_eq!(
            (c.buffer_starvation, c.requested_max_throughput_kbps),
            (Some(true), Some(15000))
        );
        assert_eq!(
            (c.content_id.as_deref(), c.session_id.as_deref()),
            (Some("c1"), Some("s1"))
        );
        assert_eq!(
            (c.streaming_format, c.stream_type, c.version),
            (Some(StreamingFormat::Hls), Some(StreamType::Live), Some(1))
        );
        // A key in another field than the spec's is taken; the query's value wins over a header's.
        let map = headers(&[("cmcd-status", r#"sid="from-header",br=1"#)]);
        let c = from_request(Some("CMCD=br%3D2"), &map).unwrap();
        assert_eq!(c.carrier, Carrier::Both);
        assert_eq!(
            (c.session_id.as_deref(), c.encoded_bitrate_kbps),
            (Some("from-header"), Some(2))
        );
        assert_eq!(c.object_type_label(), "none");
    }

    #[test]
    fn cmcd_leaves_the_canonical_query() {
        let table = [
            ("CMCD=br%3D1", None),
            ("CMCD", None),
            ("CMCD=", None),
            ("a=1&CMCD=br%3D1", Some("a=1")),
            ("CMCD=x&a=1&CMCD=y&b=2", Some("a=1&b=2")),
            ("a=1", Some("a=1")),
            ("cmcd=1", Some("cmcd=1")),
            ("CMCDX=1&XCMCD=2", Some("CMCDX=1&XCMCD=2")),
            ("a=CMCD", Some("a=CMCD")),
            ("", None),
        ];
        for (query, want) in table {
            assert_eq!(query_without_cmcd(query).as_deref(), want, "{query}");
        }
        // Every spelling the canonical form maps to `CMCD` leaves it.
        for spelling in ["%43MCD", "%43%4D%43%44", "%43%4d%43%44", "C%4dCD", "CM%43D"] {
            let canonical = shared::path::canonical_query(&format!("{spelling}=br%3D1&a=1"));
            assert_eq!(
                query_without_cmcd(&canonical).as_deref(),
                Some("a=1"),
                "{spelling}"
            );
            assert!(is_cmcd_name(spelling), "{spelling}");
        }
        // An encoded `=` or `&` is not a separator: the parameter is another one.
        let canonical = shared::path::canonical_query("CMCD%3Dbr=1");
        assert_eq!(
            query_without_cmcd(&canonical).as_deref(),
            Some("CMCD%3Dbr=1")
        );
    }

    proptest::proptest! {
        #[test]
        fn hostile_dictionaries_never_panic_and_keep_bounded_printable_strings(
            text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)
        ) {
            let mut reader = Reader::default();
            reader.dictionary(&text);
            let c = reader.cmcd;
            for s in [&c.session_id, &c.content_id].into_iter().flatten() {
                proptest::prop_assert!(s.len() <= MAX_ID_CHARS);
                proptest::prop_assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            }
            proptest::prop_assert!(c.rejected as usize <= MAX_PAIRS);
        }

        #[test]
        fn structured_looking_text_never_panics(
            text in r#"([a-z*]{1,4}(=([0-9.\-]{0,18}|"[ -~\\"]{0,70}"?|\?[01]?|[a-z:/]{1,5}))?[ ,;]{0,2}){0,12}"#
        ) {
            let _ = read(&text);
            let _ = from_request(Some(&format!("CMCD={text}")), &HeaderMap::new());
        }

        #[test]
        fn stripping_is_idempotent_and_leaves_no_cmcd(query in "[a-zA-Z0-9=&%CMD]{0,40}") {
            let canonical = shared::path::canonical_query(&query);
            if let Some(stripped) = query_without_cmcd(&canonical) {
                proptest::prop_assert!(!stripped.split('&').any(is_cmcd_param));
                let again = query_without_cmcd(&stripped).map(Cow::into_owned);
                proptest::prop_assert_eq!(again.as_deref(), Some(&*stripped));
            }
        }
    }
}
