//! String functions whose output size the query picks (`repeat`, `lpad`, `rpad`) or multiplies
//! (`concat`, `concat_ws`, which `||` is planned as) bounded before they run: their results are
//! allocated outside the query's memory pool, so a batch whose output would pass
//! `[query] memory_limit` is refused with an error naming the function and the limit
//! (`repeat('x', 268435456)` took 256 MiB whatever the pool said).

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, FieldRef, Int64Type};
use datafusion::common::DFSchema;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Result, exec_err};
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::expr::BinaryExpr;
use datafusion::logical_expr::expr_rewriter::FunctionRewrite;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};
use datafusion::logical_expr::{Expr, ExprSchemable, Operator, when};
use datafusion::prelude::SessionContext;

/// The functions bounded, and how many output bytes a row may make: `repeat(s, n)` makes
/// `len(s) × n`, `lpad`/`rpad(s, n, ...)` at most `4 × n` (n characters of up to 4 bytes),
/// `concat` the sum of its arguments' bytes, `concat_ws` that plus a separator between each.
const BOUNDED: [&str; 5] = ["repeat", "lpad", "rpad", "concat", "concat_ws"];

/// Replaces the registered `repeat`, `lpad` and `rpad` with bounded ones: a call whose batch
/// would produce more than `budget` bytes is an error.
pub(crate) fn register(ctx: &mut SessionContext, budget: usize) {
    for name in BOUNDED {
        if let Ok(inner) = ctx.udf(name) {
            SessionContext::register_udf(ctx, ScalarUDF::new_from_impl(Bounded { inner: (*inner).clone(), budget }));
        }
    }
    if let Ok(concat) = ctx.udf("concat") {
        // Registered only once the analyzer exists; an error leaves `||` unbounded, never the
        // session unusable.
        let _ = ctx.register_function_rewrite(std::sync::Arc::new(ConcatOperator(concat)));
    }
}

/// Plans the string `||` operator (whose result is made outside the pool) as the bounded
/// `concat`, keeping its null rule: `CASE WHEN a IS NULL OR b IS NULL THEN NULL ELSE
/// concat(a, b) END`. Array `||` is left alone.
#[derive(Debug)]
struct ConcatOperator(std::sync::Arc<ScalarUDF>);

impl FunctionRewrite for ConcatOperator {
    fn name(&self) -> &str {
        "bounded_string_concat"
    }

    fn rewrite(&self, expr: Expr, schema: &DFSchema, _: &ConfigOptions) -> Result<Transformed<Expr>> {
        let Expr::BinaryExpr(BinaryExpr { left, op: Operator::StringConcat, right }) = &expr else {
            return Ok(Transformed::no(expr));
        };
        let listy = |e: &Expr| {
            e.get_type(schema)
                .map(|t| matches!(t, DataType::List(_) | DataType::LargeList(_) | DataType::FixedSizeList(..)))
        };
        if listy(left)? || listy(right)? {
            return Ok(Transformed::no(expr));
        }
        let (l, r) = ((**left).clone(), (**right).clone());
        let either_null = l.clone().is_null().or(r.clone().is_null());
        let joined = self.0.call(vec![l, r]);
        let typed_null = Expr::Literal(datafusion::scalar::ScalarValue::Utf8(None), None);
        Ok(Transformed::yes(when(either_null, typed_null).otherwise(joined)?))
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
    if name.starts_with("concat") {
        let mut total = 0u128;
        for a in args {
            total += bytes_of(a, rows)?;
        }
        // concat_ws puts its separator (the first argument) between each pair.
        if name == "concat_ws"
            && let Some(sep) = args.first()
        {
            total += bytes_of(sep, rows)? * args.len().saturating_sub(2) as u128;
        }
        return Ok(total);
    }
    let (Some(s), Some(n)) = (args.first(), args.get(1)) else { return Ok(0) };
    let counts = ints(&n.to_array(rows)?)?;
    // repeat: the string's bytes per count; the pads: up to 4 bytes per character asked for.
    let per_count = match name {
        "repeat" => ints(&arrow::compute::kernels::length::length(&s.to_array(rows)?)?)?,
        _ => vec![4; rows],
    };
    Ok(counts.iter().zip(&per_count).map(|(&c, &b)| u128::from(c) * u128::from(b)).sum())
}

/// Bytes of `a` over `rows` rows as text: strings by their length, anything else at most 64 bytes
/// a value (a number or a timestamp printed).
fn bytes_of(a: &ColumnarValue, rows: usize) -> Result<u128> {
    let rows_u = rows as u128;
    match a {
        ColumnarValue::Scalar(s) => Ok(match s {
            datafusion::scalar::ScalarValue::Utf8(v)
            | datafusion::scalar::ScalarValue::LargeUtf8(v)
            | datafusion::scalar::ScalarValue::Utf8View(v) => v.as_ref().map_or(0, |v| v.len() as u128) * rows_u,
            _ => 64 * rows_u,
        }),
        ColumnarValue::Array(arr) => match arr.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                Ok(ints(&arrow::compute::kernels::length::length(arr)?)?.iter().map(|&n| u128::from(n)).sum())
            }
            _ => Ok(64 * arr.len() as u128),
        },
    }
}

/// The non-negative values of an integer column (nulls and negatives are 0).
fn ints(a: &ArrayRef) -> Result<Vec<u64>> {
    let a = arrow::compute::cast(a, &DataType::Int64)?;
    let a = a.as_primitive::<Int64Type>();
    Ok((0..a.len()).map(|i| if a.is_null(i) { 0 } else { a.value(i).max(0).unsigned_abs() }).collect())
}
