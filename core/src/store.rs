//! The seams between ingest and storage: ingest pushes closed windows into a [`RollupSink`] and
//! answers for its open windows through [`OpenWindowSource`]; query implements the one and
//! consumes the other. Keeping them here lets both crates depend only on core.

use crate::Result;
use arrow::record_batch::RecordBatch;

/// Rows of both tables for some set of windows.
#[derive(Debug, Clone)]
pub struct WindowBatches {
    /// Rows of `rollups` (finest tier).
    pub rollups: RecordBatch,
    /// Rows of `errors_by_cause` (finest tier).
    pub errors_by_cause: RecordBatch,
}

/// Receives windows as they close; each window is delivered exactly once.
pub trait RollupSink: Send + Sync + std::fmt::Debug {
    /// Called on every closer tick at wall-clock `now_ms`. `take` yields the rows of the windows
    /// that just closed, if any; the sink calls it under its own lock so readers never see those
    /// windows in neither place. Storage then persists whatever became complete.
    fn close(&self, now_ms: i64, take: &mut dyn FnMut() -> Result<Option<WindowBatches>>) -> Result<()>;

    /// Takes back rows of windows that closed before a restart (a checkpoint's) and are not in
    /// Parquet yet; they wait for their bucket like any closed window.
    fn restore(&self, closed: WindowBatches);

    /// End of the last finest-tier bucket in Parquet (unix ms): windows before it are durable.
    fn persisted_until(&self) -> i64;
}

/// Reads the windows that are still open (data received so far).
pub trait OpenWindowSource: Send + Sync + std::fmt::Debug {
    /// Rows of every open window overlapping `[from_ms, to_ms)`.
    fn open_windows(&self, from_ms: i64, to_ms: i64) -> Result<WindowBatches>;
}

/// When cells last saw requests (for timing cut-overs).
pub trait CellActivity: Send + Sync + std::fmt::Debug {
    /// (start of the latest request on `cell` by the span's clock, wall-clock ms it arrived), unix ms.
    fn latest_request(&self, cell: &str) -> Option<(i64, i64)>;
}

/// Cut-overs reported by gateways through OTLP logs (`event.name = cell.cutover`).
pub trait CutoverReports: Send + Sync + std::fmt::Debug {
    /// A drain of `cell` that started and completed at these unix ms.
    fn reported(&self, cell: &str, started_ms: i64, completed_ms: i64);
}
