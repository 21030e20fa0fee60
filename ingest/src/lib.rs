//! cellpilot-ingest: OTLP in, per-window rollups out.
//!
//! The front door is [`start`] (with [`Deps`] and [`windows`]): it replays the WAL and returns
//! the [`Handle`] whose OTLP routers and window closer a node serves. Everything else is private;
//! the `internals` feature opens the modules below to the benchmarks, the fuzz targets and this
//! crate's own integration tests.
//!
//! # Layout
//! - `start`: the front door.
//! - `grpc` and `http`: the OTLP receivers (thin: decode, authenticate, call the pipeline).
//! - `decode`: OTLP/HTTP content types, gzip with a cap, protobuf and OTLP JSON.
//! - `pipeline`: the transport-independent export path and its `partial_success`.
//! - `logs`: cut-overs reported through OTLP logs.
//! - `prescan`: items and decoded size of a request, counted before it is decoded.
//! - `mapping`: spans and metric points to observations (cell, service, route, error, cause).
//! - `protowire`: the protobuf wire cursor, checking what prost checks.
//! - `observations`: what mapping produces (spans and latency points, interned names).
//! - `wire`: the trace wire scanner: observations straight from protobuf bytes, prost's verdicts.
//! - `stream`: the versioned, canonical identity of a metric stream in checkpoints.
//! - `delta`: cumulative -> delta per metric stream.
//! - `batch`: a trace export folded per series and window: what the WAL logs and the
//!   aggregator applies.
//! - `aggregator`: window aggregation and the Arrow rows of closed and open windows.
//! - `export`: one export on its way through the sequencer (folded, logged, applied).
//! - `sequencer`: the single ordered path fold -> WAL (group commit) -> aggregate, and when
//!   checkpoints are taken.
//! - `wal`: write-ahead log segments and their truncation.
//! - `checkpoint`: the aggregator's state and closed rows saved in files, and their writer.
//! - `recovery`: restoring the newest intact checkpoint and applying the WAL after it.
//! - `limiter`: the in-flight budget behind the retryable overload answer.
//! - `closer`: the task that closes windows on time and hands them to storage.
//! - [`error`]: the crate's error type.
//! - `attrs`: reading OTLP attribute values as the semantic conventions use them.
//! - `codec`: the varint layout of span batches and checkpoints, read with bounds.

mod attrs;
mod codec;
// Their `pub` items are reachable through the modules `internals` opens.
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
mod export;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
mod protowire;
#[cfg_attr(not(feature = "internals"), allow(unreachable_pub))]
mod recovery;
mod start;

/// Declares modules that are public with the `internals` feature and private without it (their
/// `pub` items are the ones the feature opens).
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        #[allow(unreachable_pub)]
        mod $name;
    )*};
}

internal!(
    aggregator,
    batch,
    checkpoint,
    closer,
    decode,
    delta,
    grpc,
    http,
    limiter,
    logs,
    mapping,
    observations,
    pipeline,
    prescan,
    sequencer,
    stream,
    wal,
    wire,
);

pub use aggregator::SharedAggregator;
pub use error::{Error, Result};
pub use start::{Deps, Handle, StartError, start, windows};

pub mod error;

#[cfg(feature = "internals")]
pub use codec::CodecError;
#[cfg(feature = "internals")]
pub use pipeline::{Ingest, Transport};
