//! The cell page's view: one cell's requests, error rate and P99.9 over a range as charts with
//! its decisions and completed cut-overs marked, its state and weight, and its routes.

use super::{ms, pct};
use crate::svg::{self, Marker};
use cellpilot_control::{Controller, State};
use cellpilot_query::RollupStore;

/// What the cell page shows.
#[derive(Debug, Clone)]
pub struct CellView {
    /// Its state in the published table.
    pub state: String,
    /// Its weight in the published table.
    pub weight: u32,
    /// Requests per second over the range (SVG).
    pub requests_chart: String,
    /// Error rate over the range (SVG).
    pub errors_chart: String,
    /// P99.9 over the range (SVG).
    pub latency_chart: String,
    /// Whether every P99.9 is exact (false where histogram metrics, bucket-limited, contributed).
    pub exact: bool,
    /// Its routes over the range.
    pub routes: Vec<RouteRow>,
}

/// One route of the cell.
#[derive(Debug, Clone)]
pub struct RouteRow {
    /// The service it belongs to.
    pub service: String,
    /// The route.
    pub route: String,
    /// Requests over the range.
    pub requests: u64,
    /// Error rate, formatted.
    pub error_rate: String,
    /// P99.9, formatted.
    pub p999: String,
}

/// The view of `cell` over `[from_ms, to_ms)` in steps of `step_ms` (reads the store: blocking).
pub fn cell(
    store: &RollupStore,
    controller: &Controller,
    cell: &str,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> cellpilot_query::Result<CellView> {
    let sel = cellpilot_query::series::Selection { cell: Some(cell.to_string()), ..Default::default() };
    let points = cellpilot_query::series::series(store, &sel, from_ms, to_ms, step_ms)?;
    let exact = cellpilot_query::cells::cells(store, from_ms, to_ms, to_ms)?
        .iter()
        .find(|x| x.cell == cell)
        .is_none_or(|x| x.latency_exact);
    let routes = cellpilot_query::cells::routes(store, cell, from_ms, to_ms, to_ms)?
        .into_iter()
        .map(|r| RouteRow {
            error_rate: pct(r.error_rate()),
            p999: ms(r.quantiles.p999_us),
            requests: r.requests,
            service: r.service,
            route: r.route,
        })
        .collect();
    let mut markers: Vec<Marker> = controller
        .decisions()
        .into_iter()
        .filter(|d| d.cell == cell)
        .map(|d| Marker {
            t_ms: d.decided_at_ms,
            label: format!("v{} {} -> {}: {}", d.version, d.old_weight, d.new_weight, d.reason),
            // Drains stand out; bias, restore and pin steps are quieter.
            class: if d.state == State::Drained { "decision drain" } else { "decision" },
        })
        .collect();
    markers.extend(controller.cutovers().into_iter().filter(|c| c.cell == cell).filter_map(|c| {
        Some(Marker {
            t_ms: c.completed_at_ms?,
            label: format!("cut-over done in {} ms", c.duration_ms.unwrap_or(0)),
            class: "cutover",
        })
    }));
    let per_s = step_ms as f64 / 1000.0;
    let req: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.requests as f64 / per_s)).collect();
    let err: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.error_rate() * 100.0)).collect();
    let lat: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.quantiles.p999_us as f64 / 1000.0)).collect();
    let latency_title = if exact { "P99.9 latency" } else { "P99.9 latency (bucket-limited)" };
    let (state, weight) = controller.cell_weight(cell);
    Ok(CellView {
        state: state.as_str().to_string(),
        weight,
        requests_chart: svg::line_chart("requests per second", "/s", &req, from_ms, to_ms, &markers),
        errors_chart: svg::line_chart("error rate", "%", &err, from_ms, to_ms, &markers),
        latency_chart: svg::line_chart(latency_title, "ms", &lat, from_ms, to_ms, &markers),
        exact,
        routes,
    })
}
