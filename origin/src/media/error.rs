//! The origin's error type: who is at fault and what the client is told. The HTTP status follows from the kind,
//! here and nowhere else, and every store error is mapped in [`OriginError::from_store`].

use http::StatusCode;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is invalid (400).
    BadRequest,
    /// No such object (404).
    NotFound,
    /// The title was taken down (410): gone on purpose, not missing.
    Gone,
    /// Method not allowed (405).
    MethodNotAllowed,
    /// The request path is longer than the origin reads (414, RFC 9110 15.5.15).
    UriTooLong,
    /// The store answered with an error that a retry will not fix: refused credentials, bad configuration (502).
    StoreFailed,
    /// The store is unreachable, timed out, or the object changed during the request: retry later (503).
    StoreUnavailable,
    /// A bug or an impossible state (500).
    Internal,
}

/// An error answered to the client with a reason.
#[derive(Debug, Clone)]
pub struct OriginError {
    pub kind: ErrorKind,
    pub reason: String,
}

impl OriginError {
    pub fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        OriginError {
            kind,
            reason: reason.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::StoreFailed => StatusCode::BAD_GATEWAY,
            ErrorKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the store (not the client) is at fault: counted in `origin_store_errors_total`.
    pub fn is_store_error(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::StoreFailed | ErrorKind::StoreUnavailable | ErrorKind::Internal
        )
    }

    /// The metric label for a store error.
    pub fn label(&self) -> &'static str {
        match self.kind {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Gone => "gone",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::StoreFailed => "store_failed",
            ErrorKind::StoreUnavailable => "store_unavailable",
            ErrorKind::Internal => "internal",
        }
    }

    /// The one mapping from `object_store` errors to what a client sees. The store's own message is logged by the
    /// caller but not sent: it can name buckets, hosts and credentials.
    pub fn from_store(err: &object_store::Error, key: &str) -> Self {
        use object_store::Error as E;
        match err {
            E::NotFound { .. } => {
                OriginError::new(ErrorKind::NotFound, format!("no object at /{key}"))
            }
            E::InvalidPath { .. } => {
                OriginError::new(ErrorKind::BadRequest, "the path is not a valid object key")
            }
            E::Precondition { .. } | E::NotModified { .. } => OriginError::new(
                ErrorKind::StoreUnavailable,
                format!("/{key} changed while it was being read; retry"),
            ),
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => OriginError::new(
                ErrorKind::StoreFailed,
                "the object store refused the origin's credentials",
            ),
            E::JoinError { .. } => {
                OriginError::new(ErrorKind::Internal, "a store read task failed")
            }
            other if is_transient(other) => OriginError::new(
                ErrorKind::StoreUnavailable,
                "the object store is unreachable or timed out; retry",
            ),
            _ => OriginError::new(
                ErrorKind::StoreFailed,
                "the object store answered with an error",
            ),
        }
    }
}

impl std::fmt::Display for OriginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.status())
    }
}

/// Connection-level failures a retry can fix, found anywhere in the error's source chain.
fn is_transient(err: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as Io;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                Io::ConnectionRefused
                    | Io::ConnectionReset
                    | Io::ConnectionAborted
                    | Io::TimedOut
                    | Io::BrokenPipe
            )
        {
            return true;
        }
        let text = e.to_string();
        if text.contains("timed out")
            || text.contains("error sending request")
            || text.contains("connect")
        {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(msg: &str) -> Box<dyn std::error::Error + Send + Sync> {
        msg.into()
    }

    #[test]
    fn store_errors_map_to_statuses() {
        let table = [
            (
                object_store::Error::NotFound {
                    path: "a".into(),
                    source: boxed("x"),
                },
                404,
            ),
            (
                object_store::Error::Precondition {
                    path: "a".into(),
                    source: boxed("x"),
                },
                503,
            ),
            (
                object_store::Error::PermissionDenied {
                    path: "a".into(),
                    source: boxed("x"),
                },
                502,
            ),
            (
                object_store::Error::Generic {
                    store: "S3",
                    source: boxed("HTTP 500 internal error"),
                },
                502,
            ),
            (
                object_store::Error::Generic {
                    store: "S3",
                    source: boxed("error sending request"),
                },
                503,
            ),
            (
                object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "refused",
                    )),
                },
                503,
            ),
        ];
        for (err, status) in table {
            let mapped = OriginError::from_store(&err, "titles/x.ts");
            assert_eq!(mapped.status().as_u16(), status, "{err}");
            assert!(!mapped.reason.is_empty());
        }
    }

    #[test]
    fn not_found_names_the_key_but_store_details_stay_private() {
        let err = object_store::Error::Generic {
            store: "S3",
            source: boxed("bucket secret-bucket: AccessDenied"),
        };
        let mapped = OriginError::from_store(&err, "k");
        assert!(!mapped.reason.contains("secret-bucket"));
        let nf = OriginError::from_store(
            &object_store::Error::NotFound {
                path: "k".into(),
                source: boxed(""),
            },
            "k",
        );
        assert_eq!(nf.reason, "no object at /k");
    }
}
