//! The Arrow rows of windows taken out of the aggregator (closed ones for storage, open ones
//! for queries).

use super::WindowRows;
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};
use cellpilot_core::store::WindowBatches;

/// Builds the Arrow rows of `windows`, sorted by window, cell, service and route.
pub fn to_batches(mut windows: Vec<WindowRows>, width_ms: i64) -> cellpilot_core::Result<WindowBatches> {
    windows.sort_by(|a, b| {
        (a.agg.start_ms, &a.cell, &a.service, &a.route).cmp(&(b.agg.start_ms, &b.cell, &b.service, &b.route))
    });
    let mut rollups = RollupsBuilder::default();
    let mut errors = ErrorsByCauseBuilder::default();
    for w in &windows {
        let key = RowKey {
            window_start_ms: w.agg.start_ms,
            window_end_ms: w.agg.start_ms + width_ms,
            cell: &w.cell,
            service: &w.service,
            route: &w.route,
        };
        // Serialized straight from the sparse buckets: no dense histogram per row.
        let mut q = w.agg.hist.quantiles();
        // The exact max beats the bucket's upper edge.
        q.max_us = w.agg.max_us;
        // Empty when nothing failed.
        let error_hist = w.agg.error_hist.as_ref().map(|h| h.serialize()).unwrap_or_default();
        let v = RollupValues {
            requests: w.agg.requests,
            errors: w.agg.errors,
            hist: &w.agg.hist.serialize(),
            error_hist: Some(&error_hist),
            quantiles: q,
            exact: w.agg.exact,
        };
        rollups.push(key, v);
        let mut causes = w.causes.clone();
        causes.sort();
        for (cause, n) in causes {
            errors.push(key, &cause, n);
        }
    }
    Ok(WindowBatches { rollups: rollups.finish()?, errors_by_cause: errors.finish()? })
}
