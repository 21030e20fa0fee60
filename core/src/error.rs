//! Errors of the core crate: configuration and timestamp parsing, grouped by who is to blame.

use thiserror::Error;

/// Result with the core [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in core.
#[derive(Debug, Error)]
pub enum Error {
    /// The configuration file or an override is not valid; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A user-supplied value (timestamp, duration) could not be parsed.
    #[error("invalid value: {0}")]
    InvalidInput(String),
    /// Building an Arrow batch failed; this is a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Internal(e.to_string())
    }
}
