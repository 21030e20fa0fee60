//! cellpilot-ingest: OTLP in, per-window rollups out.
//!
//! # Layout
//! - [`grpc`] and [`http`]: the OTLP receivers (thin: decode, authenticate, call the pipeline).
//! - [`decode`]: OTLP/HTTP content types, gzip with a cap, protobuf and OTLP JSON.
//! - [`pipeline`]: [`Ingest`], the transport-independent export path and its `partial_success`.
//! - [`logs`]: cut-overs reported through OTLP logs.
//! - [`prescan`]: items and decoded size of a request, counted before it is decoded.
//! - [`mapping`]: spans and metric points to observations (cell, service, route, error, cause).
//! - `protowire`: the protobuf wire cursor, checking what prost checks.
//! - [`observations`]: what mapping produces (spans and latency points, interned names).
//! - [`wire`]: the trace wire scanner: observations straight from protobuf bytes, prost's verdicts.
//! - [`stream`]: the versioned, canonical identity of a metric stream in checkpoints.
//! - [`delta`]: cumulative -> delta per metric stream.
//! - [`batch`]: a trace export folded per series and window: what the WAL logs and the
//!   aggregator applies.
//! - [`aggregator`]: window aggregation and the Arrow rows of closed and open windows.
//! - `export`: one export on its way through the sequencer (folded, logged, applied).
//! - [`sequencer`]: the single ordered path fold -> WAL (group commit) -> aggregate, and when
//!   checkpoints are taken.
//! - [`wal`]: write-ahead log segments and their truncation.
//! - [`checkpoint`]: the aggregator's state and closed rows saved in files, and their writer.
//! - `recovery`: restoring the newest intact checkpoint and applying the WAL after it.
//! - [`limiter`]: the in-flight budget behind the retryable overload answer.
//! - [`closer`]: the task that closes windows on time and hands them to storage.
//! - [`error`]: the crate's error type.
//! - `attrs`: reading OTLP attribute values as the semantic conventions use them.
//! - `codec`: the varint layout of span batches and checkpoints, read with bounds.

mod attrs;
mod codec;
mod export;
mod protowire;

pub mod aggregator;
pub mod batch;
pub mod checkpoint;
pub mod closer;
pub mod decode;
pub mod delta;
pub mod error;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod logs;
pub mod mapping;
pub mod observations;
pub mod pipeline;
pub mod prescan;
mod recovery;
pub mod sequencer;
pub mod stream;
pub mod wal;
pub mod wire;

pub use codec::CodecError;
pub use error::{Error, Result};
pub use pipeline::{Ingest, Transport};

use std::sync::Arc;

/// The tonic router serving the three OTLP collector services.
pub fn grpc_routes(ingest: Arc<Ingest>) -> tonic::service::Routes {
    let mut routes = tonic::service::RoutesBuilder::default();
    routes
        .add_service(grpc::OtlpService::<pipeline::Traces>::new(ingest.clone()))
        .add_service(grpc::OtlpService::<pipeline::MetricsSignal>::new(ingest.clone()))
        .add_service(grpc::OtlpService::<pipeline::Logs>::new(ingest));
    routes.routes()
}
