//! `hdr_merge(latency_hist) -> Binary`: merges histograms (aggregate).

use super::Merged;
use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{Accumulator, AggregateUDFImpl, Signature, Volatility};
use std::sync::Arc;

/// The `hdr_merge` aggregate.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct HdrMerge {
    signature: Signature,
}

impl HdrMerge {
    /// The function, ready to register.
    pub(crate) fn new() -> Self {
        Self { signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable) }
    }
}

impl Default for HdrMerge {
    fn default() -> Self {
        Self::new()
    }
}

impl AggregateUDFImpl for HdrMerge {
    fn name(&self) -> &str {
        "hdr_merge"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(MergeAcc::default()))
    }

    fn state_fields(&self, _args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new("hist", DataType::Binary, true))])
    }
}

/// Merges histograms; shared with `latency_quantile`.
#[derive(Debug, Default)]
pub(crate) struct MergeAcc {
    pub(crate) hist: Merged,
}

impl Accumulator for MergeAcc {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.hist.add_all(&values[0], "hdr_merge")
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.hist.serialize())))
    }

    fn size(&self) -> usize {
        std::mem::size_of::<Self>() + self.hist.size()
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Binary(Some(self.hist.serialize()))])
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.hist.add_all(&states[0], "hdr_merge")
    }
}
