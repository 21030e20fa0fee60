//! `hdr_quantile(hist, q) -> Float64`: nearest-rank quantile (µs) of each row's histogram (scalar).

use super::check_quantile;
use arrow::array::{Array, BinaryArray, Float64Array, Float64Builder};
use arrow::datatypes::DataType;
use cellpilot_core::latency;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature};
use std::sync::Arc;

/// The `hdr_quantile` scalar function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct HdrQuantile {
    signature: Signature,
}

impl HdrQuantile {
    /// The function, ready to register.
    pub(crate) fn new() -> Self {
        Self { signature: super::quantile_signature() }
    }
}

impl Default for HdrQuantile {
    fn default() -> Self {
        Self::new()
    }
}

fn quantile_of(bytes: &[u8], q: f64) -> Result<Option<f64>> {
    if bytes.is_empty() {
        // An `error_latency_hist` of a window without failures.
        return Ok(None);
    }
    let mut h = latency::new_histogram();
    latency::add_serialized(bytes, &mut h).map_err(|e| DataFusionError::Execution(format!("hdr_quantile: {e}")))?;
    Ok((!h.is_empty()).then(|| h.value_at_quantile(q) as f64))
}

impl ScalarUDFImpl for HdrQuantile {
    fn name(&self) -> &str {
        "hdr_quantile"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [hist, q] = args.args.as_slice() else {
            return Err(DataFusionError::Plan("hdr_quantile(hist, q) takes two arguments".into()));
        };
        let q_at = |i: usize| -> Result<Option<f64>> {
            match q {
                ColumnarValue::Scalar(ScalarValue::Float64(v)) => Ok(*v),
                ColumnarValue::Scalar(ScalarValue::Int64(v)) => Ok(v.map(|v| v as f64)),
                ColumnarValue::Array(a) => {
                    let a = a.as_any().downcast_ref::<Float64Array>();
                    Ok(a.and_then(|a| a.is_valid(i).then(|| a.value(i))))
                }
                other => Err(DataFusionError::Plan(format!("hdr_quantile: q must be a number, got {other:?}"))),
            }
        };
        match hist {
            ColumnarValue::Scalar(ScalarValue::Binary(b)) => {
                let v = match (b, q_at(0)?) {
                    (Some(b), Some(q)) => quantile_of(b, check_quantile(q, "hdr_quantile")?)?,
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Float64(v)))
            }
            ColumnarValue::Array(a) => {
                let bin = a
                    .as_any()
                    .downcast_ref::<BinaryArray>()
                    .ok_or_else(|| DataFusionError::Plan("hdr_quantile: expects a Binary histogram".into()))?;
                let mut out = Float64Builder::with_capacity(bin.len());
                for i in 0..bin.len() {
                    match (bin.is_valid(i), q_at(i)?) {
                        (true, Some(q)) => {
                            out.append_option(quantile_of(bin.value(i), check_quantile(q, "hdr_quantile")?)?)
                        }
                        _ => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            }
            other => Err(DataFusionError::Plan(format!("hdr_quantile: expects a Binary histogram, got {other:?}"))),
        }
    }
}
