//! Read-only SQL over the rollups: the session context with every table and function, limits
//! (memory, time, rows), and result encodings (JSON rows, Arrow IPC stream).

use crate::files::Table;
use crate::store::RollupStore;
use crate::table::TierTable;
use crate::tier::Tier;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use base64::Engine;
use cellpilot_core::time::rfc3339_ms;
use datafusion::datasource::MemTable;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use std::sync::Arc;
use std::time::Duration;

/// Limits of one query.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Memory pool, bytes.
    pub memory: usize,
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Rows returned at most; more is an error.
    pub max_rows: usize,
    /// Where a query spills what its pool cannot hold, and how many bytes at most; `None`:
    /// DataFusion's default (the OS temp dir, 100 GB).
    pub spill: Option<(std::path::PathBuf, u64)>,
}

/// The control loop's tables, as of the query.
#[derive(Debug, Clone, Default)]
pub struct ControlTables {
    /// Rows of `decisions`.
    pub decisions: Option<RecordBatch>,
    /// Rows of `cutovers`.
    pub cutovers: Option<RecordBatch>,
}

/// Where SQL runs: a runtime of its own (so a heavy query cannot hold up ingest's or the pages'
/// workers) taking at most `max_concurrent` queries at once.
#[derive(Debug)]
pub struct Executor {
    runtime: cellpilot_core::task::Pool,
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl Executor {
    /// One worker thread and at most `max_concurrent` queries.
    pub fn new(max_concurrent: usize) -> Result<Self> {
        let runtime = cellpilot_core::task::Pool::new("cellpilot-sql", 1, Some(max_concurrent.max(1) * 2))
            .map_err(|e| cellpilot_core::error::Internal::caused("starting the SQL runtime", e))?;
        let permits = Arc::new(tokio::sync::Semaphore::new(max_concurrent));
        Ok(Self { runtime, permits, max: max_concurrent })
    }

    /// Runs `work` on the SQL runtime, or refuses with [`Error::Busy`] when `max_concurrent`
    /// queries are running.
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| {
            Error::Busy(format!("{} queries are running ([query] max_concurrent); retry shortly", self.max))
        })?;
        self.runtime
            .run(async move {
                let _permit = permit;
                work.await
            })
            .await
            .map_err(|e| cellpilot_core::error::Internal::caused("a query task failed", e))?
    }
}

/// A session over `store` (and `control`'s rows) with every table and function registered.
pub fn context(store: &Arc<RollupStore>, limits: &Limits, control: ControlTables) -> Result<SessionContext> {
    let mut runtime = RuntimeEnvBuilder::new().with_memory_limit(limits.memory, 1.0);
    match &limits.spill {
        Some((dir, max)) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Storage(format!("creating the SQL spill directory {}: {e}", dir.display())))?;
            runtime = runtime.with_temp_file_path(dir).with_max_temp_directory_size(*max);
        }
        // Not the OS temp directory, unbounded: no spilling at all.
        None => {
            use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
            runtime =
                runtime.with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled));
        }
    }
    let runtime = runtime.build_arc()?;
    let mut config = SessionConfig::new().with_target_partitions(2).with_information_schema(true);
    // What a sort keeps back for merging its spill files (10 MB by default) fits small pools.
    config.options_mut().execution.sort_spill_reservation_bytes = (limits.memory / 8).min(10 << 20);
    let mut ctx = SessionContext::new_with_config_rt(config, runtime);
    for tier in Tier::ALL {
        for (table, name) in [(Table::Rollups, tier.rollups_table()), (Table::ErrorsByCause, tier.errors_table())] {
            ctx.register_table(name, Arc::new(TierTable::new(store.clone(), table, tier)))?;
        }
    }
    for (name, schema, rows) in [
        ("decisions", cellpilot_core::schema::decisions_schema(), control.decisions),
        ("cutovers", cellpilot_core::schema::cutovers_schema(), control.cutovers),
    ] {
        let t = MemTable::try_new(schema, vec![rows.into_iter().collect()])?;
        ctx.register_table(name, Arc::new(t))?;
    }
    crate::udf::register(&ctx);
    crate::bounded::register(&mut ctx, limits.memory);
    Ok(ctx)
}

/// Runs one read-only statement; DDL, DML, `COPY`, `SET` and several statements are refused.
pub async fn run(ctx: &SessionContext, sql: &str, limits: &Limits) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    if sql.trim().is_empty() {
        return Err(Error::BadRequest("empty query: send {\"sql\": \"SELECT ...\"}".into()));
    }
    let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
    let work = async {
        let df = ctx.sql_with_options(sql, options).await.map_err(bad_query)?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let df = df.limit(0, Some(limits.max_rows + 1)).map_err(bad_query)?;
        let batches = df.collect().await.map_err(bad_query)?;
        Ok::<_, Error>((schema, batches))
    };
    let (schema, batches) = tokio::time::timeout(limits.timeout, work).await.map_err(|_| {
        Error::BadRequest(format!("query exceeded the time limit of {:?} ([query] timeout)", limits.timeout))
    })??;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows > limits.max_rows {
        return Err(Error::BadRequest(format!(
            "query returns more than {} rows ([query] max_rows); aggregate or add a LIMIT",
            limits.max_rows
        )));
    }
    Ok((schema, batches))
}

fn bad_query(e: datafusion::error::DataFusionError) -> Error {
    let msg = e.to_string();
    let msg = msg
        .replace("DDL not supported: ", "read-only: ")
        .replace("DML not supported: ", "read-only: ")
        .replace("Statement not supported: ", "read-only: ");
    // DataFusion names its own setting; the operator knows ours.
    if msg.contains("max_temp_directory_size") {
        return Error::BadRequest(format!("the query spilled past [query] max_spill: {msg}"));
    }
    Error::BadRequest(msg)
}

/// `{"columns": [{"name", "type"}], "rows": [[...]]}` with RFC 3339 timestamps and base64 binary.
pub fn to_json(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<serde_json::Value> {
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            rows.push(serde_json::Value::Array(b.columns().iter().map(|c| cell(c, r)).collect::<Result<_>>()?));
        }
    }
    Ok(serde_json::json!({"columns": columns, "rows": rows}))
}

fn cell(col: &ArrayRef, r: usize) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    if col.is_null(r) {
        return Ok(J::Null);
    }
    let num = |v: f64| serde_json::Number::from_f64(v).map(J::Number).unwrap_or(J::Null);
    Ok(match col.data_type() {
        DataType::Boolean => J::Bool(col.as_boolean().value(r)),
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
            let c = arrow::compute::cast(&col.slice(r, 1), &DataType::Int64)?;
            J::from(c.as_primitive::<arrow::datatypes::Int64Type>().value(0))
        }
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
            let c = arrow::compute::cast(&col.slice(r, 1), &DataType::UInt64)?;
            J::from(c.as_primitive::<arrow::datatypes::UInt64Type>().value(0))
        }
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => {
            let c = arrow::compute::cast(&col.slice(r, 1), &DataType::Float64)?;
            num(c.as_primitive::<arrow::datatypes::Float64Type>().value(0))
        }
        DataType::Timestamp(_, _) => {
            let c = arrow::compute::cast(&col.slice(r, 1), &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            let ms = c.as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(0);
            // Outside RFC 3339's years: unix milliseconds, as a number.
            rfc3339_ms(ms).map_or_else(|| J::from(ms), J::String)
        }
        DataType::Binary => {
            J::String(base64::engine::general_purpose::STANDARD.encode(col.as_binary::<i32>().value(r)))
        }
        DataType::LargeBinary => {
            J::String(base64::engine::general_purpose::STANDARD.encode(col.as_binary::<i64>().value(r)))
        }
        DataType::Utf8 => J::String(col.as_string::<i32>().value(r).to_string()),
        DataType::LargeUtf8 => J::String(col.as_string::<i64>().value(r).to_string()),
        DataType::Utf8View => J::String(col.as_string_view().value(r).to_string()),
        _ => J::String(arrow::util::display::array_value_to_string(col, r)?),
    })
}

/// The batches as an Arrow IPC stream.
pub fn to_ipc(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
// Tests spawn freely and join or abort what they spawn before they end.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_max_concurrent_queries_run() {
        let exec = Arc::new(Executor::new(2).unwrap());
        let (release, wait) = tokio::sync::watch::channel(false);
        let mut running = Vec::new();
        for _ in 0..2 {
            let (exec, mut wait) = (exec.clone(), wait.clone());
            running.push(tokio::spawn(async move {
                exec.run(async move {
                    let _ = wait.wait_for(|go| *go).await;
                    Ok(std::thread::current().name().map(str::to_string))
                })
                .await
            }));
        }
        // Both permits are taken once the two queries are in.
        while exec.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let third = exec.run(async { Ok(()) }).await;
        assert!(matches!(third, Err(Error::Busy(ref m)) if m.contains("max_concurrent")), "{third:?}");
        release.send(true).unwrap();
        for r in running {
            let thread = r.await.unwrap().unwrap();
            assert_eq!(thread.as_deref(), Some("cellpilot-sql"), "queries run on their own threads");
        }
        assert!(exec.run(async { Ok(()) }).await.is_ok(), "permits come back");
        drop(wait);
    }

    #[test]
    fn timestamps_outside_rfc3339_are_numbers_not_a_panic() {
        use arrow::array::TimestampMillisecondArray;
        use arrow::datatypes::{Field, Schema};
        let values = vec![-1_000i64, i64::MIN, i64::MAX, 253_402_300_800_000, 0];
        let schema =
            Arc::new(Schema::new(vec![Field::new("t", DataType::Timestamp(TimeUnit::Millisecond, None), false)]));
        let batch =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(TimestampMillisecondArray::from(values))]).unwrap();
        let json = to_json(&schema, &[batch]).unwrap();
        let cells: Vec<_> = json["rows"].as_array().unwrap().iter().map(|r| r[0].clone()).collect();
        assert_eq!(
            cells,
            vec![
                serde_json::json!("1969-12-31T23:59:59.000Z"),
                serde_json::json!(i64::MIN),
                serde_json::json!(i64::MAX),
                serde_json::json!(253_402_300_800_000i64),
                serde_json::json!("1970-01-01T00:00:00.000Z"),
            ]
        );
    }
}
