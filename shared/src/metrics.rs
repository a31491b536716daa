//! Prometheus helpers shared by every component: the status-class label and the text exposition.

use prometheus::{Encoder, Registry, TextEncoder};

/// `1xx` … `5xx`: the status-class label value used by every request counter.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The method label: known methods by name, anything else as `other`, so clients cannot grow the label set.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        _ => "other",
    }
}

/// The Prometheus text exposition of a registry, with its content type.
pub fn encode(registry: &Registry) -> (String, Vec<u8>) {
    let encoder = TextEncoder::new();
    let mut body = Vec::with_capacity(8 * 1024);
    // Encoding into a Vec only fails on inconsistent metric families, which registration already refuses.
    if let Err(e) = encoder.encode(&registry.gather(), &mut body) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    (encoder.format_type().to_string(), body)
}

/// Latency buckets in seconds for request histograms: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        for (status, class) in [
            (100, "1xx"),
            (200, "2xx"),
            (206, "2xx"),
            (304, "3xx"),
            (416, "4xx"),
            (503, "5xx"),
        ] {
            assert_eq!(status_class(status), class);
        }
    }
}
