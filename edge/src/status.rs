//! The one cache-status enum: it feeds the `Cache-Status` response header (RFC 9211), the access log field and
//! the metric label, so the three always agree.

/// How the edge answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache; `ttl` is the freshness left in seconds.
    Hit { ttl: u64 },
    /// Not in cache: this request started the upstream fill and the response was stored.
    Miss,
    /// Not in cache: this request joined a fill another request had started (collapsed).
    Coalesced,
    /// Forwarded and not stored (the response is not storable).
    Pass,
    /// The edge answered with an error without a usable upstream response.
    Error,
}

impl CacheStatus {
    /// The metric label and access-log value.
    pub fn label(self) -> &'static str {
        match self {
            CacheStatus::Hit { .. } => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Coalesced => "coalesced",
            CacheStatus::Pass => "pass",
            CacheStatus::Error => "error",
        }
    }

    /// Every label, for pre-registering metric series.
    pub const LABELS: [&'static str; 5] = ["hit", "miss", "coalesced", "pass", "error"];

    /// The `Cache-Status` header value for the cache named `name`.
    pub fn header_value(self, name: &str) -> String {
        match self {
            CacheStatus::Hit { ttl } => format!("{name}; hit; ttl={ttl}"),
            CacheStatus::Miss => format!("{name}; fwd=uri-miss; stored"),
            CacheStatus::Coalesced => format!("{name}; fwd=uri-miss; collapsed; stored"),
            CacheStatus::Pass => format!("{name}; fwd=uri-miss"),
            CacheStatus::Error => format!("{name}; fwd=uri-miss; detail=upstream-error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc9211() {
        assert_eq!(
            CacheStatus::Hit { ttl: 30 }.header_value("edge-1"),
            "edge-1; hit; ttl=30"
        );
        assert_eq!(
            CacheStatus::Miss.header_value("e"),
            "e; fwd=uri-miss; stored"
        );
        assert_eq!(
            CacheStatus::Coalesced.header_value("e"),
            "e; fwd=uri-miss; collapsed; stored"
        );
        assert_eq!(CacheStatus::Pass.header_value("e"), "e; fwd=uri-miss");
        for s in [
            CacheStatus::Hit { ttl: 1 },
            CacheStatus::Miss,
            CacheStatus::Coalesced,
            CacheStatus::Pass,
            CacheStatus::Error,
        ] {
            assert!(CacheStatus::LABELS.contains(&s.label()));
        }
    }
}
