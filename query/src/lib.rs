//! cellpilot-query: the rollup store and the typed queries the API and dashboard use.
//!
//! Its public modules are the questions the pages, the API, the alerts and the control loop ask
//! (cells, series, SLO counts, SQL) and the storage they ask it of; the machinery behind them
//! (caches, DataFusion tables and functions) is private.
//!
//! # Layout
//! - [`store`]: [`RollupStore`], every tier's Parquet files, rows not yet in a file, and the
//!   open windows ingest still holds.
//! - `cache`: `ByteLru`, the byte-bounded cache of decoded files and derived values.
//! - [`tier`]: the tiers (finest, 5 min, 1 h) and their buckets.
//! - [`files`]: the Parquet files (atomic writes, schema version, retention).
//! - [`storage`]: [`storage::Storage`], where the files are: the local directory or an
//!   S3-compatible object store shared by every node.
//! - [`rollup`]: merging rows into coarser windows.
//! - [`sql`], `table`, `udf`: read-only DataFusion SQL over every tier, with the
//!   histogram functions `hdr_merge`, `hdr_quantile` and `latency_quantile`.
//! - [`series`]: bucketed time series of a cell / service / route selection.
//! - [`slo`]: requests, errors and slow requests of a selection (SLOs, alerts, attribution).
//! - [`cells`]: per-cell totals and merged latency quantiles over a time range.
//! - `bounded`: `repeat`, `lpad` and `rpad` bounded by the query's memory limit.
//! - `error`: the crate's error type.
//! - [`local_s3`] (feature `local-s3`): a local S3-compatible server for tests and `bench cluster`.

mod bounded;
mod cache;
pub mod cells;
mod error;
pub mod files;
#[cfg(feature = "local-s3")]
pub mod local_s3;
pub mod rollup;
pub mod series;
pub mod slo;
pub mod sql;
pub mod storage;
pub mod store;
mod table;
pub mod tier;
mod udf;

pub use cells::CellStats;
pub use error::{Error, Result};
pub use store::{RollupStore, StoreSettings};
