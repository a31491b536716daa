//! What the fuzz targets share: cutting one input into fields and numbers, and building a request or response
//! head from lines of `name: value`. Each target in `src/bin/` runs one parser or pure decision of the project
//! on the input and checks what it promises, not only that it does not panic.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The first 8 bytes as a number (little-endian, a shorter input padded with zeros), and the rest.
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut bytes = [0u8; 8];
    bytes[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(bytes), &data[n..])
}

/// The first byte (0 when empty), and the rest.
pub fn take_u8(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}

/// The input as text: invalid UTF-8 becomes U+FFFD, so every input reaches the text parsers.
pub fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// The `n` first fields of `text` split on `sep` (missing ones empty); the last field keeps the rest.
pub fn fields(text: &str, sep: char, n: usize) -> Vec<&str> {
    let mut out: Vec<&str> = text.splitn(n, sep).collect();
    out.resize(n, "");
    out
}

/// A head from lines of `name: value` (raw bytes, obs-text included); lines that are not a valid field are
/// skipped, as hyper would have refused them before the project sees them.
pub fn head(data: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.trim_ascii();
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    headers
}
