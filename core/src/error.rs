//! Errors of the core crate: configuration and timestamp parsing, grouped by who is to blame.

use thiserror::Error;

/// The cause behind an internal error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    /// A step that should not fail did (building an Arrow batch, persisting closed windows).
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// A step that should not fail did: `context` says what was being done, `source` why. Every
/// crate's error keeps it whole (`Internal(#[from] Internal)`), so its chain reaches the cause.
#[derive(Debug, Error)]
#[error("internal error: {context}")]
pub struct Internal {
    /// What was being done.
    pub context: String,
    /// Why it failed, when another error says so.
    #[source]
    pub source: Option<BoxError>,
}

impl Internal {
    /// A broken invariant, said in words.
    pub fn new(context: impl Into<String>) -> Self {
        Internal { context: context.into(), source: None }
    }

    /// `context` failed because of `source`.
    pub fn caused(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Internal { context: context.into(), source: Some(source.into()) }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Internal::caused("building an Arrow batch", e).into()
    }
}
