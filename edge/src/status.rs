//! The one cache-status enum: it feeds the `Cache-Status` response header (RFC 9211), the access log fields and
//! the metric label, so the three always agree.

/// Why a request went upstream (RFC 9211 `fwd=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache had nothing for the URI.
    UriMiss,
    /// The cache had the object, but it was stale.
    Stale,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::Stale => "stale",
        }
    }
}

/// Why a stale response was served (RFC 5861).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Within `stale-while-revalidate`: one background request revalidates it.
    WhileRevalidate,
    /// Within `stale-if-error`: the upstream failed.
    IfError,
}

/// How the edge answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache; `ttl` is the freshness left in seconds.
    Hit { ttl: u64 },
    /// Served stale from cache, `past` seconds past its freshness lifetime.
    Stale { past: u64, reason: StaleReason },
    /// Stale in cache, revalidated upstream (304), served from cache.
    Revalidated { ttl: u64 },
    /// Not usable from cache: this request started the upstream fill and the response was stored.
    Miss { fwd: Fwd },
    /// Not usable from cache: this request joined a fill another request had started (collapsed).
    Coalesced { fwd: Fwd },
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
            CacheStatus::Revalidated { .. } => "revalidated",
            CacheStatus::Stale { .. } => "stale",
            CacheStatus::Miss { .. } => "miss",
            CacheStatus::Coalesced { .. } => "coalesced",
            CacheStatus::Pass => "pass",
            CacheStatus::Error => "error",
        }
    }

    /// The `fwd=` reason, for the access log and metrics.
    pub fn fwd(self) -> Option<Fwd> {
        match self {
            CacheStatus::Miss { fwd } | CacheStatus::Coalesced { fwd } => Some(fwd),
            CacheStatus::Revalidated { .. } => Some(Fwd::Stale),
            CacheStatus::Stale {
                reason: StaleReason::IfError,
                ..
            } => Some(Fwd::Stale),
            CacheStatus::Stale {
                reason: StaleReason::WhileRevalidate,
                ..
            } => None,
            CacheStatus::Pass | CacheStatus::Error => Some(Fwd::UriMiss),
            CacheStatus::Hit { .. } => None,
        }
    }

    /// Every label, for pre-registering metric series.
    pub const LABELS: [&'static str; 7] = [
        "hit",
        "stale",
        "revalidated",
        "miss",
        "coalesced",
        "pass",
        "error",
    ];

    /// The `Cache-Status` header value for the cache named `name`.
    pub fn header_value(self, name: &str) -> String {
        match self {
            CacheStatus::Hit { ttl } => format!("{name}; hit; ttl={ttl}"),
            CacheStatus::Revalidated { ttl } => {
                format!("{name}; fwd=stale; fwd-status=304; ttl={ttl}")
            }
            CacheStatus::Stale {
                past,
                reason: StaleReason::WhileRevalidate,
            } => {
                format!("{name}; hit; ttl=-{past}; detail=stale-while-revalidate")
            }
            CacheStatus::Stale {
                past,
                reason: StaleReason::IfError,
            } => {
                format!("{name}; fwd=stale; ttl=-{past}; detail=stale-if-error")
            }
            CacheStatus::Miss { fwd } => format!("{name}; fwd={}; stored", fwd.as_str()),
            CacheStatus::Coalesced { fwd } => {
                format!("{name}; fwd={}; collapsed; stored", fwd.as_str())
            }
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
        let table = [
            (CacheStatus::Hit { ttl: 30 }, "edge-1; hit; ttl=30"),
            (
                CacheStatus::Miss { fwd: Fwd::UriMiss },
                "edge-1; fwd=uri-miss; stored",
            ),
            (
                CacheStatus::Miss { fwd: Fwd::Stale },
                "edge-1; fwd=stale; stored",
            ),
            (
                CacheStatus::Coalesced { fwd: Fwd::UriMiss },
                "edge-1; fwd=uri-miss; collapsed; stored",
            ),
            (
                CacheStatus::Revalidated { ttl: 9 },
                "edge-1; fwd=stale; fwd-status=304; ttl=9",
            ),
            (
                CacheStatus::Stale {
                    past: 3,
                    reason: StaleReason::WhileRevalidate,
                },
                "edge-1; hit; ttl=-3; detail=stale-while-revalidate",
            ),
            (
                CacheStatus::Stale {
                    past: 3,
                    reason: StaleReason::IfError,
                },
                "edge-1; fwd=stale; ttl=-3; detail=stale-if-error",
            ),
            (CacheStatus::Pass, "edge-1; fwd=uri-miss"),
            (
                CacheStatus::Error,
                "edge-1; fwd=uri-miss; detail=upstream-error",
            ),
        ];
        for (status, header) in table {
            assert_eq!(status.header_value("edge-1"), header);
            assert!(CacheStatus::LABELS.contains(&status.label()));
        }
        assert_eq!(CacheStatus::Hit { ttl: 1 }.fwd(), None);
        assert_eq!(
            CacheStatus::Coalesced { fwd: Fwd::Stale }.fwd(),
            Some(Fwd::Stale)
        );
    }
}
