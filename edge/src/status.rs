//! The one cache-status enum: it feeds the `Cache-Status` response header (RFC 9211), the access log fields and
//! the metric label, so the three always agree.

/// Why a request went upstream (RFC 9211 `fwd=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fwd {
    /// The cache had nothing for the URI.
    UriMiss,
    /// The cache had the URI, but not the variant the request's `Vary` fields select.
    VaryMiss,
    /// The cache had the object, but it was stale.
    Stale,
    /// The cache had a usable object, but the request's directives (or method) did not allow its use.
    Request,
    /// The cache was configured not to handle this request.
    Bypass,
    /// The cache had part of the response (some of its slices) and fetched the rest.
    Partial,
}

impl Fwd {
    pub fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Stale => "stale",
            Fwd::Request => "request",
            Fwd::Bypass => "bypass",
            Fwd::Partial => "partial",
        }
    }

    /// Every value, for pre-registering metric series.
    pub const ALL: [Fwd; 6] = [
        Fwd::UriMiss,
        Fwd::VaryMiss,
        Fwd::Stale,
        Fwd::Request,
        Fwd::Bypass,
        Fwd::Partial,
    ];
}

/// Why a stale response was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// Within `stale-while-revalidate`: one background request revalidates it.
    WhileRevalidate,
    /// Within `stale-if-error`: the upstream failed.
    IfError,
    /// The client's `max-stale` accepts it.
    MaxStale,
}

/// How the edge answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from cache; `ttl` is the freshness left in seconds.
    Hit { ttl: i64 },
    /// Served stale from cache, `past` seconds past its freshness lifetime.
    Stale { past: u64, reason: StaleReason },
    /// Revalidated upstream (304), served from cache.
    Revalidated { fwd: Fwd, ttl: i64 },
    /// Not usable from cache: this request started the upstream fill and the response was stored.
    Miss { fwd: Fwd, ttl: i64 },
    /// Not usable from cache: this request joined a fill another request had started (collapsed).
    Coalesced { fwd: Fwd, ttl: i64 },
    /// Forwarded and not stored; `detail` says why when the response was not storable.
    Pass {
        fwd: Fwd,
        detail: Option<&'static str>,
    },
    /// `only-if-cached` and nothing usable in cache: 504 without going upstream.
    NotCached,
    /// Answered by the edge itself, without the cache or the upstream (refusals, CORS preflights).
    Local,
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
            CacheStatus::Pass { .. } => "pass",
            CacheStatus::NotCached => "not_cached",
            CacheStatus::Local => "local",
            CacheStatus::Error => "error",
        }
    }

    /// The `fwd=` reason, for the access log and metrics; `None` when the request was not forwarded.
    pub fn fwd(self) -> Option<Fwd> {
        match self {
            CacheStatus::Miss { fwd, .. }
            | CacheStatus::Coalesced { fwd, .. }
            | CacheStatus::Revalidated { fwd, .. }
            | CacheStatus::Pass { fwd, .. } => Some(fwd),
            CacheStatus::Stale {
                reason: StaleReason::IfError,
                ..
            } => Some(Fwd::Stale),
            CacheStatus::Error => Some(Fwd::UriMiss),
            CacheStatus::Stale { .. }
            | CacheStatus::Hit { .. }
            | CacheStatus::NotCached
            | CacheStatus::Local => None,
        }
    }

    /// Every label, for pre-registering metric series.
    pub const LABELS: [&'static str; 9] = [
        "hit",
        "stale",
        "revalidated",
        "miss",
        "coalesced",
        "pass",
        "not_cached",
        "local",
        "error",
    ];

    /// The `Cache-Status` header value for the cache named `name`.
    pub fn header_value(self, name: &str) -> String {
        match self {
            CacheStatus::Hit { ttl } => format!("{name}; hit; ttl={ttl}"),
            CacheStatus::Revalidated { fwd, ttl } => {
                format!("{name}; fwd={}; fwd-status=304; ttl={ttl}", fwd.as_str())
            }
            CacheStatus::Stale { past, reason } => {
                let ttl = -(past.min(i64::MAX as u64) as i64);
                match reason {
                    StaleReason::WhileRevalidate => {
                        format!("{name}; hit; ttl={ttl}; detail=stale-while-revalidate")
                    }
                    StaleReason::MaxStale => format!("{name}; hit; ttl={ttl}; detail=max-stale"),
                    StaleReason::IfError => {
                        format!("{name}; fwd=stale; ttl={ttl}; detail=stale-if-error")
                    }
                }
            }
            CacheStatus::Miss { fwd, ttl } => {
                format!("{name}; fwd={}; stored; ttl={ttl}", fwd.as_str())
            }
            CacheStatus::Coalesced { fwd, ttl } => {
                format!("{name}; fwd={}; collapsed; stored; ttl={ttl}", fwd.as_str())
            }
            CacheStatus::Pass { fwd, detail: None } => format!("{name}; fwd={}", fwd.as_str()),
            CacheStatus::Pass {
                fwd,
                detail: Some(detail),
            } => format!("{name}; fwd={}; detail={detail}", fwd.as_str()),
            CacheStatus::NotCached => format!("{name}; detail=only-if-cached"),
            CacheStatus::Local => format!("{name}; detail=local"),
            CacheStatus::Error => format!("{name}; fwd=uri-miss; detail=upstream-error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_follow_rfc9211() {
        let pass = |fwd, detail| CacheStatus::Pass { fwd, detail };
        let table = [
            (CacheStatus::Hit { ttl: 30 }, "edge-1; hit; ttl=30"),
            (
                CacheStatus::Miss {
                    fwd: Fwd::UriMiss,
                    ttl: 60,
                },
                "edge-1; fwd=uri-miss; stored; ttl=60",
            ),
            (
                CacheStatus::Miss {
                    fwd: Fwd::VaryMiss,
                    ttl: 5,
                },
                "edge-1; fwd=vary-miss; stored; ttl=5",
            ),
            (
                CacheStatus::Miss {
                    fwd: Fwd::Partial,
                    ttl: 50,
                },
                "edge-1; fwd=partial; stored; ttl=50",
            ),
            (
                CacheStatus::Coalesced {
                    fwd: Fwd::Stale,
                    ttl: 0,
                },
                "edge-1; fwd=stale; collapsed; stored; ttl=0",
            ),
            (
                CacheStatus::Revalidated {
                    fwd: Fwd::Stale,
                    ttl: 9,
                },
                "edge-1; fwd=stale; fwd-status=304; ttl=9",
            ),
            (
                CacheStatus::Revalidated {
                    fwd: Fwd::Request,
                    ttl: 9,
                },
                "edge-1; fwd=request; fwd-status=304; ttl=9",
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
            (
                CacheStatus::Stale {
                    past: 4,
                    reason: StaleReason::MaxStale,
                },
                "edge-1; hit; ttl=-4; detail=max-stale",
            ),
            (
                pass(Fwd::UriMiss, Some("no-store")),
                "edge-1; fwd=uri-miss; detail=no-store",
            ),
            (pass(Fwd::Bypass, None), "edge-1; fwd=bypass"),
            (
                pass(Fwd::Request, Some("authorization")),
                "edge-1; fwd=request; detail=authorization",
            ),
            (CacheStatus::NotCached, "edge-1; detail=only-if-cached"),
            (CacheStatus::Local, "edge-1; detail=local"),
            (
                CacheStatus::Error,
                "edge-1; fwd=uri-miss; detail=upstream-error",
            ),
        ];
        for (status, header) in table {
            assert_eq!(status.header_value("edge-1"), header);
            assert!(CacheStatus::LABELS.contains(&status.label()));
            // The header, the log's fwd field and the metric label agree.
            match status.fwd() {
                Some(fwd) => assert!(
                    header.contains(&format!("fwd={}", fwd.as_str())),
                    "{header}"
                ),
                None => assert!(!header.contains("fwd="), "{header}"),
            }
        }
    }
}
