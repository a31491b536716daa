//! The edge's one error type, classified by who caused it: the client (a request the edge refuses), the
//! upstream (unreachable, timed out, or a broken answer), or the edge itself. The kind decides the HTTP status
//! a client sees, the metric label and whether a retry can help, here and nowhere else.

use http::StatusCode;

use crate::cache::fill::FillError;

/// Why a request was not answered as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeError {
    /// The client asked for something the edge refuses; `status` is a 4xx chosen where the request was judged.
    Client { status: StatusCode, reason: String },
    /// The upstream was unreachable, slow or broken.
    Upstream { kind: UpstreamFault, reason: String },
    /// The client asked for a stored answer only (`only-if-cached`) and none is usable: 504 by definition
    /// (RFC 9111 §5.2.1.7), without going upstream.
    NotCached,
    /// The edge is at a limit it keeps to stay up (a budget of memory, of work): 503 with `Retry-After`.
    Overloaded { reason: String },
    /// The edge failed by itself.
    Internal { reason: String },
}

/// What went wrong upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFault {
    /// No connection, or the connection failed before a response head.
    Unreachable,
    /// No response head within the timeout.
    Timeout,
    /// The response body ended early, stalled or carried more than announced; or the head was unusable.
    Body,
    /// The object changed upstream while a version of it was being served.
    Changed,
}

impl EdgeError {
    pub fn client(status: StatusCode, reason: impl Into<String>) -> Self {
        debug_assert!(status.is_client_error(), "{status}");
        EdgeError::Client {
            status,
            reason: reason.into(),
        }
    }

    pub fn internal(reason: impl Into<String>) -> Self {
        EdgeError::Internal {
            reason: reason.into(),
        }
    }

    /// The status the client sees.
    pub fn status(&self) -> StatusCode {
        match self {
            EdgeError::Client { status, .. } => *status,
            EdgeError::Upstream {
                kind: UpstreamFault::Timeout,
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            EdgeError::NotCached => StatusCode::GATEWAY_TIMEOUT,
            EdgeError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            EdgeError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The reason, sent in the body and logged.
    pub fn reason(&self) -> &str {
        match self {
            EdgeError::Client { reason, .. }
            | EdgeError::Upstream { reason, .. }
            | EdgeError::Overloaded { reason }
            | EdgeError::Internal { reason } => reason,
            EdgeError::NotCached => "only-if-cached: no usable response is stored",
        }
    }

    /// Who caused it: the `source` label of `edge_errors_total`.
    pub fn source(&self) -> &'static str {
        match self {
            EdgeError::Client { .. } | EdgeError::NotCached => "client",
            EdgeError::Upstream { .. } => "upstream",
            EdgeError::Overloaded { .. } => "overload",
            EdgeError::Internal { .. } => "internal",
        }
    }

    /// The `kind` label of `edge_upstream_errors_total`, for upstream faults.
    pub fn upstream_label(&self) -> Option<&'static str> {
        match self {
            EdgeError::Upstream { kind, .. } => Some(match kind {
                UpstreamFault::Unreachable => "connect",
                UpstreamFault::Timeout => "timeout",
                UpstreamFault::Body => "body",
                UpstreamFault::Changed => "validator_changed",
            }),
            _ => None,
        }
    }

    /// Whether the same request, sent again, may succeed: upstream faults may pass; a refused request and an
    /// internal failure will not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, EdgeError::Upstream { .. })
    }

    /// Whether a stored version may answer stale instead (RFC 5861 `stale-if-error`): only when the upstream
    /// failed, never for the client's own error.
    pub fn allows_stale(&self) -> bool {
        matches!(self, EdgeError::Upstream { .. })
    }
}

impl From<&FillError> for EdgeError {
    fn from(e: &FillError) -> Self {
        match e {
            FillError::Internal(_) => return EdgeError::internal(e.to_string()),
            FillError::Overloaded => {
                return EdgeError::Overloaded {
                    reason: e.to_string(),
                };
            }
            _ => {}
        }
        let kind = match e {
            FillError::Upstream { timeout: true, .. } => UpstreamFault::Timeout,
            FillError::Upstream { .. } => UpstreamFault::Unreachable,
            FillError::Body(_) => UpstreamFault::Body,
            FillError::ValidatorChanged | FillError::Internal(_) | FillError::Overloaded => {
                UpstreamFault::Changed
            }
        };
        EdgeError::Upstream {
            kind,
            reason: e.to_string(),
        }
    }
}

impl std::fmt::Display for EdgeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for EdgeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kind_decides_status_label_and_retry() {
        let timeout = EdgeError::from(&FillError::Upstream {
            timeout: true,
            message: "slow".into(),
        });
        let refused = EdgeError::from(&FillError::Upstream {
            timeout: false,
            message: "refused".into(),
        });
        let short = EdgeError::from(&FillError::Body("ended after 3 of 9 bytes".into()));
        let changed = EdgeError::from(&FillError::ValidatorChanged);
        let client = EdgeError::client(StatusCode::FORBIDDEN, "no token");
        let internal = EdgeError::internal("bug");
        let not_cached = EdgeError::NotCached;
        let bug = EdgeError::from(&FillError::Internal("overflow".into()));
        let busy = EdgeError::Overloaded {
            reason: "budget spent".into(),
        };
        let table = [
            (&timeout, 504, "upstream", Some("timeout"), true),
            (&refused, 502, "upstream", Some("connect"), true),
            (&short, 502, "upstream", Some("body"), true),
            (&changed, 502, "upstream", Some("validator_changed"), true),
            (&client, 403, "client", None, false),
            (&internal, 500, "internal", None, false),
            (&not_cached, 504, "client", None, false),
            (&bug, 500, "internal", None, false),
            (&busy, 503, "overload", None, false),
        ];
        for (e, status, source, label, retry) in table {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.source(), source, "{e}");
            assert_eq!(e.upstream_label(), label, "{e}");
            assert_eq!(e.is_retryable(), retry, "{e}");
            assert_eq!(e.allows_stale(), retry, "{e}");
        }
        assert!(short.reason().contains("ended after 3 of 9"));
    }
}
