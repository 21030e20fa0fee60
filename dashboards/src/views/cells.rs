//! The cells' JSON views: per-cell totals and quantiles (`GET /api/v1/cells`) and a selection's
//! bucketed time series (`GET /api/v1/series`).

use cellpilot_control::{Controller, State};
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_query::RollupStore;
use cellpilot_query::series::Selection;
use serde::Serialize;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// `GET /api/v1/cells`.
#[derive(Debug, Clone, Serialize)]
pub struct Cells {
    /// Start of the range, RFC 3339.
    pub from: String,
    /// End of the range, RFC 3339.
    pub to: String,
    /// Every cell with requests in the range.
    pub cells: Vec<CellRecord>,
}

/// One cell's totals over the range.
#[derive(Debug, Clone, Serialize)]
pub struct CellRecord {
    /// The cell.
    pub cell: String,
    /// Its state in the published table.
    pub state: State,
    /// Its weight in the published table.
    pub weight: u32,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// P99 latency, ms.
    pub p99_ms: f64,
    /// P99.9 latency, ms.
    pub p999_ms: f64,
    /// Whether the quantiles are exact (false where histogram metrics, bucket-limited, contributed).
    pub latency_exact: bool,
}

/// Every cell over `[from_ms, to_ms)` at `now_ms` (reads the store: blocking).
pub fn cells(
    store: &RollupStore,
    controller: &Controller,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> cellpilot_query::Result<Cells> {
    let cells = cellpilot_query::cells::cells(store, from_ms, to_ms, now_ms)?
        .into_iter()
        .map(|c| {
            let (state, weight) = controller.cell_weight(&c.cell);
            CellRecord {
                state,
                weight,
                requests: c.requests,
                errors: c.errors,
                error_rate: c.error_rate(),
                p50_ms: ms(c.quantiles.p50_us),
                p99_ms: ms(c.quantiles.p99_us),
                p999_ms: ms(c.quantiles.p999_us),
                latency_exact: c.latency_exact,
                cell: c.cell,
            }
        })
        .collect();
    Ok(Cells { from: format_rfc3339_ms(from_ms), to: format_rfc3339_ms(to_ms), cells })
}

/// `GET /api/v1/series`.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Start of the range, RFC 3339.
    pub from: String,
    /// End of the range, RFC 3339.
    pub to: String,
    /// Bucket width.
    pub step_ms: i64,
    /// The selection's one merged series.
    pub series: Vec<SeriesRecord>,
}

/// A selection (omitted dimensions merged) and its points.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRecord {
    /// The cell, when selected.
    pub cell: Option<String>,
    /// The service, when selected.
    pub service: Option<String>,
    /// The route, when selected.
    pub route: Option<String>,
    /// One point per bucket.
    pub points: Vec<PointRecord>,
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize)]
pub struct PointRecord {
    /// Start of the bucket, RFC 3339.
    pub t: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// P99 latency, ms.
    pub p99_ms: f64,
    /// P99.9 latency, ms.
    pub p999_ms: f64,
}

/// `selection` over `[from_ms, to_ms)` in buckets of `step_ms` (reads the store: blocking).
pub fn series(
    store: &RollupStore,
    selection: Selection,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> cellpilot_query::Result<Series> {
    let points = cellpilot_query::series::series(store, &selection, from_ms, to_ms, step_ms)?
        .into_iter()
        .map(|pt| PointRecord {
            t: format_rfc3339_ms(pt.t_ms),
            requests: pt.requests,
            errors: pt.errors,
            error_rate: pt.error_rate(),
            p50_ms: ms(pt.quantiles.p50_us),
            p99_ms: ms(pt.quantiles.p99_us),
            p999_ms: ms(pt.quantiles.p999_us),
        })
        .collect();
    let Selection { cell, service, route } = selection;
    Ok(Series {
        from: format_rfc3339_ms(from_ms),
        to: format_rfc3339_ms(to_ms),
        step_ms,
        series: vec![SeriesRecord { cell, service, route, points }],
    })
}
