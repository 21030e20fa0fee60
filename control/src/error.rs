//! Errors of the control crate: its logs on disk. Decisions are still made and published when
//! a log cannot be written (the rows are kept for the next append); these errors say which file
//! and why.

use std::path::PathBuf;
use thiserror::Error;

/// What went wrong with a control log.
#[derive(Debug, Error)]
pub enum Error {
    /// A file operation on a log failed.
    #[error(transparent)]
    Io(#[from] cellpilot_core::fs::FileError),
    /// A row could not be serialized.
    #[error("encoding a log row: {0}")]
    Encode(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io(cellpilot_core::fs::FileError::new(action, path, source))
    }
}

/// Result with the control [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
