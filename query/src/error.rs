//! Query errors, grouped by blame.

use cellpilot_core::error::Internal;
use thiserror::Error;

/// Result with the query [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong answering a query.
#[derive(Debug, Error)]
pub enum Error {
    /// The question itself is wrong (e.g. `from` after `to`).
    #[error("{0}")]
    BadRequest(String),
    /// Too many queries are running; retry shortly.
    #[error("{0}")]
    Busy(String),
    /// A stored file is damaged (it cannot be parsed); the message names it.
    #[error("corrupt file: {0}")]
    Corrupt(String),
    /// A file operation on the data directory failed (a full or failing disk, permissions).
    #[error(transparent)]
    File(#[from] cellpilot_core::fs::FileError),
    /// An object-store request failed (unreachable, refused, throttled); the message names the key.
    #[error("object store: {0}")]
    Storage(String),
    /// Building or reading an Arrow batch failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Writing a Parquet file failed.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Setting up a DataFusion session failed (a query's own errors are [`Error::BadRequest`]).
    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A core step failed (building a batch, a configuration bug).
    #[error(transparent)]
    Core(cellpilot_core::Error),
    /// Stored data could not be read, or a step that should not fail did: a bug or corruption.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl cellpilot_core::status::ErrorExt for Error {
    fn status_code(&self) -> cellpilot_core::status::StatusCode {
        use cellpilot_core::status::StatusCode;
        match self {
            Error::BadRequest(_) => StatusCode::InvalidArgument,
            Error::Busy(_) => StatusCode::Overloaded,
            Error::Corrupt(_)
            | Error::File(_)
            | Error::Storage(_)
            | Error::Arrow(_)
            | Error::Parquet(_)
            | Error::DataFusion(_)
            | Error::Core(_)
            | Error::Internal(_) => StatusCode::Internal,
        }
    }
}

impl From<cellpilot_core::Error> for Error {
    fn from(e: cellpilot_core::Error) -> Self {
        match e {
            cellpilot_core::Error::InvalidInput(m) => Error::BadRequest(m),
            other => Error::Core(other),
        }
    }
}

impl From<cellpilot_core::schema::ColumnError> for Error {
    fn from(e: cellpilot_core::schema::ColumnError) -> Self {
        Internal::caused("reading a stored column", e).into()
    }
}

impl From<cellpilot_core::latency::HistogramError> for Error {
    fn from(e: cellpilot_core::latency::HistogramError) -> Self {
        Internal::caused("reading a stored latency histogram", e).into()
    }
}
