//! cellpilot-query: the rollup store and the typed queries the API and dashboard use.
//!
//! # Layout
//! - [`store`]: [`RollupStore`], every tier's Parquet files, rows not yet in a file, and the
//!   open windows ingest still holds.
//! - [`cache`]: [`cache::ByteLru`], the byte-bounded cache of decoded files and derived values.
//! - [`tier`]: the tiers (finest, 5 min, 1 h) and their buckets.
//! - [`files`]: the Parquet files (atomic writes, schema version, retention).
//! - [`storage`]: [`storage::Storage`], where the files are: the local directory or an
//!   S3-compatible object store shared by every node.
//! - [`rollup`]: merging rows into coarser windows.
//! - [`sql`], [`table`], [`udf`]: read-only DataFusion SQL over every tier, with the
//!   histogram functions `hdr_merge`, `hdr_quantile` and `latency_quantile`.
//! - [`series`]: bucketed time series of a cell / service / route selection.
//! - [`slo`]: requests, errors and slow requests of a selection (SLOs, alerts, attribution).
//! - [`cells`]: per-cell totals and merged latency quantiles over a time range.
//! - [`bounded`]: `repeat`, `lpad` and `rpad` bounded by the query's memory limit.
//! - [`error`]: the crate's error type.

pub mod bounded;
pub mod cache;
pub mod cells;
pub mod error;
pub mod files;
pub mod rollup;
pub mod series;
pub mod slo;
pub mod sql;
pub mod storage;
pub mod store;
pub mod table;
pub mod tier;
pub mod udf;

pub use cells::CellStats;
pub use error::{Error, Result};
pub use store::{RollupStore, StoreSettings};
