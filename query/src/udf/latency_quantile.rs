//! `latency_quantile(latency_hist, q) -> Float64`: the nearest-rank quantile (µs) of the merged
//! histograms of a group (aggregate).

use super::hdr_merge::MergeAcc;
use super::quantile_literal;
use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature};
use std::sync::Arc;

/// The `latency_quantile` aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct LatencyQuantile {
    signature: Signature,
}

impl LatencyQuantile {
    /// The function, ready to register.
    pub(crate) fn new() -> Self {
        Self { signature: super::quantile_signature() }
    }
}

impl Default for LatencyQuantile {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for LatencyQuantile {
    fn name(&self) -> &str {
        "latency_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let q = args
            .exprs
            .get(1)
            .ok_or_else(|| DataFusionError::Plan("latency_quantile(latency_hist, q) takes two arguments".into()))?;
        let q = quantile_literal(q, "latency_quantile")?;
        Ok(Box::new(QuantileAcc { merge: MergeAcc::default(), q }))
    }

    fn state_fields(&self, _args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new("hist", DataType::Binary, true))])
    }
}

#[derive(Debug)]
struct QuantileAcc {
    merge: MergeAcc,
    q: f64,
}

impl Accumulator for QuantileAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.merge.update_batch(&values[..1])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Float64(self.merge.hist.value_at_quantile(self.q).map(|v| v as f64)))
    }

    fn size(&self) -> usize {
        self.merge.size() + 8
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.merge.state()
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.merge.merge_batch(states)
    }
}
