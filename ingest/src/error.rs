//! Ingest errors, grouped by blame, each with its [`StatusCode`]; [`Error::status`] is what both
//! transports answer (HTTP status and gRPC code from `core::status`'s one mapping).

use cellpilot_core::auth::Denied;
use cellpilot_core::status::StatusCode;
use std::time::Duration;
use thiserror::Error;

/// The cause of an [`Error::Internal`]: any error, or a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the ingest [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with an export.
#[derive(Debug, Error)]
pub enum Error {
    /// The payload is malformed; the message names the problem. Not retryable.
    #[error("{0}")]
    BadInput(String),
    /// The client stopped sending before the body's end (closed the connection, reset the
    /// stream): nothing was read to judge, and nothing was accepted.
    #[error("the request body was cut off by the client: {0}")]
    Aborted(String),
    /// The body stalled: not all of it arrived within `[transport] body_read_timeout` (the
    /// request's slot and bytes are freed).
    #[error("the request body did not arrive within {}s ([transport] body_read_timeout)", after.as_secs_f64())]
    Stalled {
        /// The timeout.
        after: Duration,
    },
    /// Content type or encoding we do not speak.
    #[error("{0}")]
    Unsupported(String),
    /// The payload exceeds `max_request_size` (after decompression).
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The configured limit.
        limit: usize,
    },
    /// Too many items, or too much memory once decoded; the message says which bound.
    #[error("{0}")]
    TooMany(String),
    /// The caller could not be authenticated (401 / UNAUTHENTICATED), or its token lacks the
    /// role (403 / PERMISSION_DENIED).
    #[error("{0}")]
    Unauthenticated(Denied),
    /// The aggregator is behind; retry after the given delay.
    #[error("cellpilot is overloaded; retry in {}s", retry_after.as_secs())]
    Overloaded {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// The export path is not running (the sequencer stopped); retry after the given delay.
    #[error("cellpilot cannot take exports right now; retry in {}s", retry_after.as_secs())]
    Unavailable {
        /// How long the client should wait.
        retry_after: Duration,
    },
    /// A bug or an unexpected failure; details (the source) are logged, not sent.
    #[error("internal error while processing this export; it was not accepted (details are in cellpilot's log)")]
    Internal(#[source] BoxError),
}

/// How an error is answered on either transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub http: u16,
    /// gRPC status code (also in the OTLP/HTTP error body).
    pub grpc: tonic::Code,
    /// How long to wait before retrying, for the retryable answers.
    pub retry_after: Option<Duration>,
}

impl cellpilot_core::status::ErrorExt for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::BadInput(_) => StatusCode::InvalidArgument,
            // Nobody is left to read it; said the way a proxy says it.
            Error::Aborted(_) => StatusCode::Cancelled,
            Error::Stalled { .. } => StatusCode::Timeout,
            Error::Unsupported(_) => StatusCode::Unsupported,
            Error::TooLarge { .. } | Error::TooMany(_) => StatusCode::TooLarge,
            Error::Unauthenticated(d) => d.status_code(),
            Error::Overloaded { .. } => StatusCode::Overloaded,
            Error::Unavailable { .. } => StatusCode::Unavailable,
            Error::Internal(_) => StatusCode::Internal,
        }
    }
}

impl Error {
    /// The answer to this error, for both transports ([`StatusCode`]'s one mapping).
    pub fn status(&self) -> Answer {
        use cellpilot_core::status::ErrorExt;
        let code = self.status_code();
        let retry_after = match self {
            Error::Overloaded { retry_after } | Error::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        };
        Answer { http: code.http(), grpc: code.grpc(), retry_after }
    }
}

impl From<cellpilot_core::Error> for Error {
    fn from(e: cellpilot_core::Error) -> Self {
        Error::Internal(e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellpilot_core::auth::Role;

    #[test]
    fn each_error_has_one_answer_for_both_transports() {
        let retry = Duration::from_secs(1);
        let table = [
            (Error::BadInput("x".into()), 400, tonic::Code::InvalidArgument, false),
            (Error::Aborted("x".into()), 499, tonic::Code::Cancelled, false),
            (Error::Unsupported("x".into()), 415, tonic::Code::InvalidArgument, false),
            (Error::TooLarge { limit: 1 }, 413, tonic::Code::ResourceExhausted, false),
            (Error::TooMany("x".into()), 413, tonic::Code::ResourceExhausted, false),
            (Error::Unauthenticated(Denied::Missing), 401, tonic::Code::Unauthenticated, false),
            (Error::Unauthenticated(Denied::Lacks(Role::Ingest)), 403, tonic::Code::PermissionDenied, false),
            (Error::Overloaded { retry_after: retry }, 429, tonic::Code::Unavailable, true),
            (Error::Unavailable { retry_after: retry }, 503, tonic::Code::Unavailable, true),
            (Error::Internal("x".into()), 500, tonic::Code::Internal, false),
        ];
        for (e, http, grpc, retryable) in table {
            let a = e.status();
            assert_eq!((a.http, a.grpc, a.retry_after.is_some()), (http, grpc, retryable), "{e:?}");
        }
    }
}
