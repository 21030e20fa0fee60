//! cellpilot-query: the rollup store and the typed queries the API and dashboard use.
//!
//! # Layout
//! - [`store`]: [`RollupStore`], closed windows in memory (retention-bounded) plus the open
//!   windows ingest still holds.
//! - [`cells`]: per-cell totals and merged latency quantiles over a time range.
//! - [`error`]: the crate's error type.

pub mod cells;
pub mod error;
pub mod store;

pub use cells::CellStats;
pub use error::{Error, Result};
pub use store::RollupStore;
