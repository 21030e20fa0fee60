//! SQL functions over the `latency_hist` column, registered in every context by [`register`].
//!
//! - `hdr_merge(latency_hist) -> Binary` (aggregate): the merged histogram.
//! - `hdr_quantile(hist, q) -> Float64` (scalar): nearest-rank quantile of one histogram, µs.
//! - `latency_quantile(latency_hist, q) -> Float64` (aggregate): quantile of the merged
//!   histogram, µs — "P99.9 per cell over a day" without averaging percentiles.

mod hdr_merge;
mod hdr_quantile;
mod latency_quantile;

use arrow::array::{Array, ArrayRef, BinaryArray};
use cellpilot_core::latency::{self, SparseHistogram};
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use hdrhistogram::Histogram;
use std::sync::Arc;

pub(crate) use hdr_merge::HdrMerge;
pub(crate) use hdr_quantile::HdrQuantile;
pub(crate) use latency_quantile::LatencyQuantile;

/// Registers every cellpilot function in `ctx`.
pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(HdrMerge::new()));
    ctx.register_udaf(AggregateUDF::from(LatencyQuantile::new()));
    ctx.register_udf(ScalarUDF::from(HdrQuantile::new()));
}

/// `(hist Binary, q Float64 | Int64)`, shared by both quantile functions.
fn quantile_signature() -> datafusion::logical_expr::Signature {
    use arrow::datatypes::DataType;
    use datafusion::logical_expr::{Signature, TypeSignature, Volatility};
    Signature::one_of(
        vec![
            TypeSignature::Exact(vec![DataType::Binary, DataType::Float64]),
            TypeSignature::Exact(vec![DataType::Binary, DataType::Int64]),
        ],
        Volatility::Immutable,
    )
}

/// A quantile argument: a literal between 0 and 1.
fn quantile_literal(expr: &Arc<dyn PhysicalExpr>, func: &str) -> datafusion::common::Result<f64> {
    let batch = arrow::record_batch::RecordBatch::new_empty(Arc::new(arrow::datatypes::Schema::empty()));
    let q = match expr.evaluate(&batch)? {
        datafusion::logical_expr::ColumnarValue::Scalar(s) => s,
        _ => return Err(DataFusionError::Plan(format!("{func}: the quantile must be a literal"))),
    };
    let q = match q {
        ScalarValue::Float64(Some(q)) => q,
        ScalarValue::Float32(Some(q)) => f64::from(q),
        ScalarValue::Int64(Some(q)) => q as f64,
        other => return Err(DataFusionError::Plan(format!("{func}: the quantile must be a number, got {other}"))),
    };
    check_quantile(q, func)
}

fn check_quantile(q: f64, func: &str) -> datafusion::common::Result<f64> {
    if (0.0..=1.0).contains(&q) {
        Ok(q)
    } else {
        Err(DataFusionError::Plan(format!("{func}: quantile {q} is outside 0..1 (e.g. 0.999 for P99.9)")))
    }
}

/// A group's merged histogram: sparse (4 bytes per occupied bucket) while the group is small,
/// dense once it has merged many histograms or holds many buckets. A GROUP BY over windows keeps
/// thousands of small groups (a dense histogram is ~26 KiB each); a GROUP BY cell over a day
/// merges thousands of histograms into a few groups, where the dense form adds fastest.
#[derive(Debug)]
pub(crate) enum Merged {
    /// Few inputs so far.
    Sparse(SparseHistogram, usize),
    /// Many.
    Dense(Histogram<u64>),
}

/// Inputs merged before a group goes dense.
const DENSE_AFTER_INPUTS: usize = 32;
/// Occupied buckets before a group goes dense.
const DENSE_AFTER_BUCKETS: usize = 512;

impl Default for Merged {
    fn default() -> Self {
        Merged::Sparse(SparseHistogram::default(), 0)
    }
}

impl Merged {
    /// Adds every non-null histogram of `array`.
    pub(crate) fn add_all(&mut self, array: &ArrayRef, func: &str) -> datafusion::common::Result<()> {
        let bin = array.as_any().downcast_ref::<BinaryArray>().ok_or_else(|| {
            DataFusionError::Plan(format!("{func}: expects a Binary histogram column like latency_hist"))
        })?;
        for i in 0..bin.len() {
            // Null: unknown; empty: no samples (`error_latency_hist` of a window without failures).
            if bin.is_valid(i) && !bin.value(i).is_empty() {
                self.add(bin.value(i)).map_err(|e| DataFusionError::Execution(format!("{func}: {e}")))?;
            }
        }
        Ok(())
    }

    fn add(&mut self, bytes: &[u8]) -> Result<(), latency::HistogramError> {
        match self {
            Merged::Sparse(s, inputs) => {
                latency::for_each_bucket(bytes, |v, n| s.record_n(v, n))?;
                *inputs += 1;
                if *inputs > DENSE_AFTER_INPUTS || s.buckets() > DENSE_AFTER_BUCKETS {
                    *self = Merged::Dense(s.to_histogram());
                }
                Ok(())
            }
            Merged::Dense(h) => latency::add_serialized(bytes, h),
        }
    }

    /// The V2 serialization.
    pub(crate) fn serialize(&self) -> Vec<u8> {
        match self {
            Merged::Sparse(s, _) => s.serialize(),
            Merged::Dense(h) => latency::serialize(h),
        }
    }

    /// The nearest-rank quantile, µs; `None` when nothing was merged.
    pub(crate) fn value_at_quantile(&self, q: f64) -> Option<u64> {
        match self {
            Merged::Sparse(s, _) => s.value_at_quantile(q),
            Merged::Dense(h) => (!h.is_empty()).then(|| h.value_at_quantile(q)),
        }
    }

    /// Bytes held, for the memory pool.
    pub(crate) fn size(&self) -> usize {
        std::mem::size_of::<Self>()
            + match self {
                Merged::Sparse(s, _) => s.heap_bytes(),
                // The counts array of a 2-digit histogram up to an hour.
                Merged::Dense(_) => 26 * 1024,
            }
    }
}
