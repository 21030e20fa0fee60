//! cellpilot-tools: everything `cellpilot` runs besides `serve` — the demo, the load generator,
//! synthetic history and the benchmarks. `serve`'s code path does not depend on this crate.
//!
//! # Layout
//! - [`demo`]: the whole product on embedded defaults with simulated cells and a gateway.
//! - [`loadgen`]: real OTLP through the OpenTelemetry SDK, with scripted incidents.
//! - [`generate`]: synthetic history written straight into every Parquet tier.
//! - [`bench`](mod@bench): `cellpilot bench ingest|query|control|web|cluster`.
//! - [`s3`]: the local S3-compatible server (`cellpilot_query::local_s3`) of the cluster benchmark and tests.

pub mod bench;
pub mod demo;
pub mod generate;
pub mod loadgen;
pub use cellpilot_query::local_s3 as s3;
