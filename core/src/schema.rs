//! The Arrow schemas of the `rollups` and `errors_by_cause` tables and row builders for them.
//!
//! Every tier (`rollups`, `rollups_5m`, `rollups_1h`) shares one schema; so do the
//! `errors_by_cause` tiers.

use crate::Result;
use crate::latency::Quantiles;
use arrow::array::{
    Array, ArrayBuilder, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray, BooleanBuilder, StringArray,
    StringBuilder, TimestampMillisecondArray, TimestampMillisecondBuilder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::sync::{Arc, LazyLock};

/// Version written into Parquet metadata as `cellpilot.schema_version`. Version 1 had no
/// `error_latency_hist`; readers add it as null (unknown) to such files.
pub const SCHEMA_VERSION: &str = "2";

/// Schema versions this build reads.
pub const READABLE_VERSIONS: [&str; 2] = ["1", SCHEMA_VERSION];

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

static ROLLUPS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
        Field::new("cell", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("requests", DataType::UInt64, false),
        Field::new("errors", DataType::UInt64, false),
        Field::new("latency_hist", DataType::Binary, false),
        Field::new("p50_us", DataType::UInt64, false),
        Field::new("p99_us", DataType::UInt64, false),
        Field::new("p999_us", DataType::UInt64, false),
        Field::new("max_us", DataType::UInt64, false),
        Field::new("latency_exact", DataType::Boolean, false),
        error_latency_field(),
    ]))
});

/// The latency histogram of the failed requests alone (empty when there were none), so slow
/// successes are the difference of two counts; null on rows from before schema version 2.
pub fn error_latency_field() -> Field {
    Field::new("error_latency_hist", DataType::Binary, true)
}

static ERRORS_BY_CAUSE: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("window_start", ts(), false),
        Field::new("window_end", ts(), false),
        Field::new("cell", DataType::Utf8, false),
        Field::new("service", DataType::Utf8, false),
        Field::new("route", DataType::Utf8, false),
        Field::new("cause", DataType::Utf8, false),
        Field::new("errors", DataType::UInt64, false),
    ]))
});

static DECISIONS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("decided_at", ts(), false),
        Field::new("version", DataType::UInt64, false),
        Field::new("cell", DataType::Utf8, false),
        Field::new("old_weight", DataType::UInt32, false),
        Field::new("new_weight", DataType::UInt32, false),
        Field::new("state", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("actor", DataType::Utf8, false),
    ]))
});

static CUTOVERS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("cell", DataType::Utf8, false),
        Field::new("decision_version", DataType::UInt64, true),
        Field::new("decided_at", ts(), false),
        Field::new("applied_at", ts(), true),
        Field::new("completed_at", ts(), true),
        Field::new("duration_ms", DataType::Int64, true),
        Field::new("source", DataType::Utf8, false),
    ]))
});

/// Schema of the `decisions` table.
pub fn decisions_schema() -> SchemaRef {
    DECISIONS.clone()
}

/// Schema of the `cutovers` table.
pub fn cutovers_schema() -> SchemaRef {
    CUTOVERS.clone()
}

/// Schema of the `rollups` tables.
pub fn rollups_schema() -> SchemaRef {
    ROLLUPS.clone()
}

/// Schema of the `errors_by_cause` tables.
pub fn errors_by_cause_schema() -> SchemaRef {
    ERRORS_BY_CAUSE.clone()
}

/// Column positions in [`rollups_schema`].
pub mod rollup_col {
    /// `window_start`
    pub const WINDOW_START: usize = 0;
    /// `window_end`
    pub const WINDOW_END: usize = 1;
    /// `cell`
    pub const CELL: usize = 2;
    /// `service`
    pub const SERVICE: usize = 3;
    /// `route`
    pub const ROUTE: usize = 4;
    /// `requests`
    pub const REQUESTS: usize = 5;
    /// `errors`
    pub const ERRORS: usize = 6;
    /// `latency_hist`
    pub const LATENCY_HIST: usize = 7;
    /// `max_us`
    pub const MAX_US: usize = 11;
    /// `latency_exact`
    pub const LATENCY_EXACT: usize = 12;
    /// `error_latency_hist`
    pub const ERROR_LATENCY_HIST: usize = 13;
}

/// A column of a stored batch is missing or not of the type its schema says (a bug, or a file
/// written by something else).
#[derive(Debug, thiserror::Error)]
#[error("column {0} of a stored batch is missing or has an unexpected type")]
pub struct ColumnError(pub usize);

/// Column `i` of `batch` as `T`; for projected batches, `i` counts in the projection.
pub fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T, ColumnError> {
    batch.columns().get(i).and_then(|c| c.as_any().downcast_ref::<T>()).ok_or(ColumnError(i))
}

/// The typed columns of a whole `rollups` batch (any tier), checked once per batch: the one
/// place readers learn where each column is and what type it has.
#[derive(Debug, Clone, Copy)]
pub struct RollupColumns<'a> {
    /// `window_start`
    pub start: &'a TimestampMillisecondArray,
    /// `window_end`
    pub end: &'a TimestampMillisecondArray,
    /// `cell`
    pub cell: &'a StringArray,
    /// `service`
    pub service: &'a StringArray,
    /// `route`
    pub route: &'a StringArray,
    /// `requests`
    pub requests: &'a UInt64Array,
    /// `errors`
    pub errors: &'a UInt64Array,
    /// `latency_hist`
    pub hist: &'a BinaryArray,
    /// `max_us`
    pub max_us: &'a UInt64Array,
    /// `latency_exact`
    pub exact: &'a BooleanArray,
    /// `error_latency_hist` (nullable)
    pub error_hist: &'a BinaryArray,
}

impl RollupColumns<'_> {
    /// Successful requests of row `i` slower than `threshold_us`, to bucket precision; see
    /// [`crate::latency::slow_successes`].
    pub fn slow_successes(&self, i: usize, threshold_us: u64) -> Result<u64, crate::latency::HistogramError> {
        let errors = (!self.error_hist.is_null(i)).then(|| self.error_hist.value(i));
        crate::latency::slow_successes(
            self.hist.value(i),
            errors,
            self.errors.value(i),
            threshold_us,
            self.max_us.value(i),
        )
    }
}

impl<'a> RollupColumns<'a> {
    /// The columns of `batch`, which must have the whole [`rollups_schema`] (no projection).
    pub fn of(batch: &'a RecordBatch) -> Result<Self, ColumnError> {
        use rollup_col as c;
        Ok(Self {
            start: column(batch, c::WINDOW_START)?,
            end: column(batch, c::WINDOW_END)?,
            cell: column(batch, c::CELL)?,
            service: column(batch, c::SERVICE)?,
            route: column(batch, c::ROUTE)?,
            requests: column(batch, c::REQUESTS)?,
            errors: column(batch, c::ERRORS)?,
            hist: column(batch, c::LATENCY_HIST)?,
            max_us: column(batch, c::MAX_US)?,
            exact: column(batch, c::LATENCY_EXACT)?,
            error_hist: column(batch, c::ERROR_LATENCY_HIST)?,
        })
    }
}

/// The typed columns of a whole `errors_by_cause` batch (any tier).
#[derive(Debug, Clone, Copy)]
pub struct ErrorsByCauseColumns<'a> {
    /// `window_start`
    pub start: &'a TimestampMillisecondArray,
    /// `window_end`
    pub end: &'a TimestampMillisecondArray,
    /// `cell`
    pub cell: &'a StringArray,
    /// `service`
    pub service: &'a StringArray,
    /// `route`
    pub route: &'a StringArray,
    /// `cause`
    pub cause: &'a StringArray,
    /// `errors`
    pub errors: &'a UInt64Array,
}

impl<'a> ErrorsByCauseColumns<'a> {
    /// The columns of `batch`, which must have the whole [`errors_by_cause_schema`].
    pub fn of(batch: &'a RecordBatch) -> Result<Self, ColumnError> {
        Ok(Self {
            start: column(batch, 0)?,
            end: column(batch, 1)?,
            cell: column(batch, 2)?,
            service: column(batch, 3)?,
            route: column(batch, 4)?,
            cause: column(batch, 5)?,
            errors: column(batch, 6)?,
        })
    }
}

/// The key of one series in one window.
#[derive(Debug, Clone, Copy)]
pub struct RowKey<'a> {
    /// Window start, unix ms.
    pub window_start_ms: i64,
    /// Window end, unix ms.
    pub window_end_ms: i64,
    /// Cell.
    pub cell: &'a str,
    /// Service.
    pub service: &'a str,
    /// Route.
    pub route: &'a str,
}

/// The measures of one `rollups` row.
#[derive(Debug, Clone, Copy)]
pub struct RollupValues<'a> {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Serialized latency histogram of every request.
    pub hist: &'a [u8],
    /// Serialized latency histogram of the failed requests (empty when none failed); `None`
    /// when unknown (rows rolled up from schema version 1).
    pub error_hist: Option<&'a [u8]>,
    /// Quantiles of `hist`, with the exact max.
    pub quantiles: Quantiles,
    /// Whether every latency was a span's own (no bucketed metric).
    pub exact: bool,
}

/// Accumulates `rollups` rows column by column.
#[derive(Debug, Default)]
pub struct RollupsBuilder {
    window_start: TimestampMillisecondBuilder,
    window_end: TimestampMillisecondBuilder,
    cell: StringBuilder,
    service: StringBuilder,
    route: StringBuilder,
    requests: UInt64Builder,
    errors: UInt64Builder,
    latency_hist: BinaryBuilder,
    p50: UInt64Builder,
    p99: UInt64Builder,
    p999: UInt64Builder,
    max: UInt64Builder,
    exact: BooleanBuilder,
    error_hist: BinaryBuilder,
}

impl RollupsBuilder {
    /// Appends one row.
    pub fn push(&mut self, key: RowKey<'_>, v: RollupValues<'_>) {
        let RollupValues { requests, errors, hist, error_hist, quantiles: q, exact } = v;
        self.window_start.append_value(key.window_start_ms);
        self.window_end.append_value(key.window_end_ms);
        self.cell.append_value(key.cell);
        self.service.append_value(key.service);
        self.route.append_value(key.route);
        self.requests.append_value(requests);
        self.errors.append_value(errors);
        self.latency_hist.append_value(hist);
        self.p50.append_value(q.p50_us);
        self.p99.append_value(q.p99_us);
        self.p999.append_value(q.p999_us);
        self.max.append_value(q.max_us);
        self.exact.append_value(exact);
        self.error_hist.append_option(error_hist);
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch of every row appended.
    pub fn finish(mut self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.window_start.finish().with_timezone("UTC")),
            Arc::new(self.window_end.finish().with_timezone("UTC")),
            Arc::new(self.cell.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.route.finish()),
            Arc::new(self.requests.finish()),
            Arc::new(self.errors.finish()),
            Arc::new(self.latency_hist.finish()),
            Arc::new(self.p50.finish()),
            Arc::new(self.p99.finish()),
            Arc::new(self.p999.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.exact.finish()),
            Arc::new(self.error_hist.finish()),
        ];
        Ok(RecordBatch::try_new(rollups_schema(), cols)?)
    }
}

/// Accumulates `errors_by_cause` rows.
#[derive(Debug, Default)]
pub struct ErrorsByCauseBuilder {
    window_start: TimestampMillisecondBuilder,
    window_end: TimestampMillisecondBuilder,
    cell: StringBuilder,
    service: StringBuilder,
    route: StringBuilder,
    cause: StringBuilder,
    errors: UInt64Builder,
}

impl ErrorsByCauseBuilder {
    /// Appends one row.
    pub fn push(&mut self, key: RowKey<'_>, cause: &str, errors: u64) {
        self.window_start.append_value(key.window_start_ms);
        self.window_end.append_value(key.window_end_ms);
        self.cell.append_value(key.cell);
        self.service.append_value(key.service);
        self.route.append_value(key.route);
        self.cause.append_value(cause);
        self.errors.append_value(errors);
    }

    /// The batch of every row appended.
    pub fn finish(mut self) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.window_start.finish().with_timezone("UTC")),
            Arc::new(self.window_end.finish().with_timezone("UTC")),
            Arc::new(self.cell.finish()),
            Arc::new(self.service.finish()),
            Arc::new(self.route.finish()),
            Arc::new(self.cause.finish()),
            Arc::new(self.errors.finish()),
        ];
        Ok(RecordBatch::try_new(errors_by_cause_schema(), cols)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{new_histogram, serialize};

    #[test]
    fn builds_the_spec_schema() {
        let mut b = RollupsBuilder::default();
        let key = RowKey { window_start_ms: 0, window_end_ms: 10_000, cell: "c", service: "s", route: "/r" };
        let hist = serialize(&new_histogram());
        let v = RollupValues {
            requests: 3,
            errors: 1,
            hist: &hist,
            error_hist: Some(&hist),
            quantiles: Quantiles::default(),
            exact: true,
        };
        b.push(key, v);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        let names: Vec<_> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "window_start",
                "window_end",
                "cell",
                "service",
                "route",
                "requests",
                "errors",
                "latency_hist",
                "p50_us",
                "p99_us",
                "p999_us",
                "max_us",
                "latency_exact",
                "error_latency_hist"
            ]
        );
        let mut e = ErrorsByCauseBuilder::default();
        e.push(key, "5xx", 1);
        assert_eq!(e.finish().unwrap().num_rows(), 1);
    }
}
