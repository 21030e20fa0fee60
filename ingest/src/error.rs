//! Ingest errors, grouped by blame. [`crate::http`] and [`crate::grpc`] each map them to their
//! transport's status in one place.

use cellpilot_core::auth::Denied;
use std::time::Duration;
use thiserror::Error;

/// Result with the ingest [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong with an export.
#[derive(Debug, Error)]
pub enum Error {
    /// The payload is malformed; the message names the problem. Not retryable.
    #[error("{0}")]
    BadInput(String),
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
    /// A bug or an unexpected failure; details are logged, not sent.
    #[error("internal error while processing this export; it was not accepted (details are in cellpilot's log)")]
    Internal(String),
}

impl From<cellpilot_core::Error> for Error {
    fn from(e: cellpilot_core::Error) -> Self {
        Error::Internal(e.to_string())
    }
}
