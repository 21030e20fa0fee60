//! String functions whose output size the query picks (`repeat`, `lpad`, `rpad`) bounded before
//! they run: their results are allocated outside the query's memory pool, so a batch whose
//! output would pass `[query] memory_limit` is refused with an error naming the function and
//! the limit (`repeat('x', 268435456)` took 256 MiB whatever the pool said).

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::{Result, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::prelude::SessionContext;

/// The functions bounded, and how many output bytes a row may make: `repeat(s, n)` makes
/// `len(s) × n`, `lpad`/`rpad(s, n, ...)` at most `4 × n` (n characters of up to 4 bytes).
const BOUNDED: [&str; 3] = ["repeat", "lpad", "rpad"];

/// Replaces the registered `repeat`, `lpad` and `rpad` with bounded ones: a call whose batch
/// would produce more than `budget` bytes is an error.
pub fn register(ctx: &SessionContext, budget: usize) {
    for name in BOUNDED {
        if let Ok(inner) = ctx.udf(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Bounded { inner: (*inner).clone(), budget }));
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    budget: usize,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let name = self.inner.name();
        let bytes = output_bytes(name, &args.args, args.number_rows)?;
        if bytes > self.budget as u128 {
            return exec_err!(
                "{name} would make {bytes} bytes, over the query's memory limit of {} bytes ([query] memory_limit)",
                self.budget
            );
        }
        self.inner.invoke_with_args(args)
    }
}

/// An upper bound of the bytes `name` makes over `rows` rows of `args`.
fn output_bytes(name: &str, args: &[ColumnarValue], rows: usize) -> Result<u128> {
    let (Some(s), Some(n)) = (args.first(), args.get(1)) else { return Ok(0) };
    let counts = ints(&n.to_array(rows)?)?;
    // repeat: the string's bytes per count; the pads: up to 4 bytes per character asked for.
    let per_count = match name {
        "repeat" => ints(&arrow::compute::kernels::length::length(&s.to_array(rows)?)?)?,
        _ => vec![4; rows],
    };
    Ok(counts.iter().zip(&per_count).map(|(&c, &b)| u128::from(c) * u128::from(b)).sum())
}

/// The non-negative values of an integer column (nulls and negatives are 0).
fn ints(a: &ArrayRef) -> Result<Vec<u64>> {
    let a = arrow::compute::cast(a, &DataType::Int64)?;
    let a = a.as_primitive::<Int64Type>();
    Ok((0..a.len()).map(|i| if a.is_null(i) { 0 } else { a.value(i).max(0).unsigned_abs() }).collect())
}
