//! The DataFusion table of one tier of `rollups` or `errors_by_cause`: files + memory from the
//! [`RollupStore`], with time filters used to skip files (DataFusion still applies every filter).

use crate::files::{self, Table};
use crate::store::RollupStore;
use crate::tier::Tier;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use std::sync::{Arc, Mutex};

/// One tier of one table.
#[derive(Debug)]
pub(crate) struct TierTable {
    store: Arc<RollupStore>,
    table: Table,
    tier: Tier,
    /// What scans hold in the query's memory pool; released with the session (one per query).
    reservations: Mutex<Vec<MemoryReservation>>,
}

impl TierTable {
    /// Its SQL name.
    fn name(&self) -> &'static str {
        match self.table {
            Table::Rollups => self.tier.rollups_table(),
            Table::ErrorsByCause => self.tier.errors_table(),
        }
    }

    /// The table over `store`.
    pub(crate) fn new(store: Arc<RollupStore>, table: Table, tier: Tier) -> Self {
        Self { store, table, tier, reservations: Mutex::new(Vec::new()) }
    }
}

/// A timestamp literal in unix ms.
fn literal_ms(e: &Expr) -> Option<i64> {
    let v = match e {
        Expr::Literal(v, _) => v,
        Expr::Cast(c) => return literal_ms(&c.expr),
        Expr::TryCast(c) => return literal_ms(&c.expr),
        _ => return None,
    };
    match v {
        ScalarValue::TimestampMillisecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(v.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000_000)),
        ScalarValue::Int64(Some(v)) => Some(*v),
        _ => None,
    }
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        Expr::Cast(c) => column_name(&c.expr),
        _ => None,
    }
}

/// Narrows `[from, to)` by a filter on `window_start` / `window_end`, when it is one.
fn narrow(e: &Expr, from: &mut i64, to: &mut i64, width_ms: i64) {
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
            narrow(left, from, to, width_ms);
            narrow(right, from, to, width_ms);
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (col, lit, op) = match (column_name(left), literal_ms(right), column_name(right), literal_ms(left)) {
                (Some(c), Some(v), _, _) => (c, v, *op),
                (_, _, Some(c), Some(v)) => match op.swap() {
                    Some(op) => (c, v, op),
                    None => return,
                },
                _ => return,
            };
            // Rows are windows [start, start + width); bounds stay conservative by one window.
            match (col, op) {
                ("window_start", Operator::Gt | Operator::GtEq | Operator::Eq) => *from = (*from).max(lit),
                ("window_start", Operator::Lt | Operator::LtEq) => *to = (*to).min(lit.saturating_add(1)),
                ("window_end", Operator::Gt | Operator::GtEq | Operator::Eq) => {
                    *from = (*from).max(lit.saturating_sub(width_ms))
                }
                ("window_end", Operator::Lt | Operator::LtEq) => *to = (*to).min(lit),
                _ => {}
            }
        }
        Expr::Between(b) if !b.negated => {
            if let (Some("window_start"), Some(lo), Some(hi)) =
                (column_name(&b.expr), literal_ms(&b.low), literal_ms(&b.high))
            {
                *from = (*from).max(lo);
                *to = (*to).min(hi.saturating_add(1));
            }
        }
        _ => {}
    }
}

#[async_trait]
impl TableProvider for TierTable {
    fn schema(&self) -> SchemaRef {
        files::schema(self.table)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let width = self.tier.width_ms(self.store.fine_ms());
        let (mut from, mut to) = (i64::MIN / 4, i64::MAX / 4);
        for f in filters {
            narrow(f, &mut from, &mut to, width);
        }
        let store = self.store.clone();
        let (table, tier) = (self.table, self.tier);
        let batches = cellpilot_core::task::blocking(move || store.scan(table, tier, from, to, None))
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        // The scanned rows stay in memory until the query ends: they count against its pool.
        let bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
        let reservation =
            MemoryConsumer::new(format!("scan of {}", self.name())).register(&state.runtime_env().memory_pool);
        reservation.try_grow(bytes)?;
        self.reservations.lock().unwrap_or_else(|e| e.into_inner()).push(reservation);
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema(), projection.cloned())?)
    }
}
