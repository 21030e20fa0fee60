//! SQL functions over the `latency_hist` column, registered in every context by [`register`].
//!
//! - `hdr_merge(latency_hist) -> Binary` (aggregate): the merged histogram.
//! - `hdr_quantile(hist, q) -> Float64` (scalar): nearest-rank quantile of one histogram, µs.
//! - `latency_quantile(latency_hist, q) -> Float64` (aggregate): quantile of the merged
//!   histogram, µs — "P99.9 per cell over a day" without averaging percentiles.

mod hdr_merge;
mod hdr_quantile;
mod latency_quantile;

use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{AggregateUDF, ScalarUDF};
use datafusion::physical_plan::PhysicalExpr;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

pub use hdr_merge::HdrMerge;
pub use hdr_quantile::HdrQuantile;
pub use latency_quantile::LatencyQuantile;

/// Registers every cellpilot function in `ctx`.
pub fn register(ctx: &SessionContext) {
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

/// Adds every non-null histogram of `array` into `h`.
fn add_all(
    array: &arrow::array::ArrayRef,
    h: &mut hdrhistogram::Histogram<u64>,
    func: &str,
) -> datafusion::common::Result<()> {
    use arrow::array::Array;
    let bin = array
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .ok_or_else(|| DataFusionError::Plan(format!("{func}: expects a Binary histogram column like latency_hist")))?;
    for i in 0..bin.len() {
        if bin.is_valid(i) {
            cellpilot_core::latency::add_serialized(bin.value(i), h)
                .map_err(|e| DataFusionError::Execution(format!("{func}: {e}")))?;
        }
    }
    Ok(())
}
