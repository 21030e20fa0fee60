//! The overview's view: one card per SLO (its availability over its period) and the cell grid
//! (the last five minutes, with each cell's state, weight and an hour's sparkline).

use super::{ms, pct};
use crate::svg;
use cellpilot_control::Controller;
use cellpilot_core::config::SloConfig;
use cellpilot_core::link;
use cellpilot_query::RollupStore;

/// The grid's rates are over the last five minutes.
const GRID_MS: i64 = 300_000;
/// The sparklines show requests per minute over the last hour.
const SPARK_MS: i64 = 3_600_000;

/// What the overview shows.
#[derive(Debug, Clone)]
pub struct Overview {
    /// One card per configured SLO, in the config's order.
    pub slos: Vec<SloCard>,
    /// Every cell with requests in the last five minutes.
    pub cells: Vec<CellRow>,
}

/// An SLO card: availability over the SLO's period.
#[derive(Debug, Clone)]
pub struct SloCard {
    /// The SLO's name.
    pub name: String,
    /// Its SLA page over the longest range within its period.
    pub href: String,
    /// Availability target, formatted.
    pub target: String,
    /// Availability observed, formatted.
    pub observed: String,
    /// Error budget left, formatted.
    pub budget_left: String,
    /// `bad` once the budget is spent, else `ok`.
    pub class: &'static str,
    /// The period, as configured (`30d`).
    pub period: String,
    /// Burn rate over the last hour (`1.25×`).
    pub burn_1h: String,
    /// Burn rate over the last six hours.
    pub burn_6h: String,
}

/// A row of the cell grid.
#[derive(Debug, Clone)]
pub struct CellRow {
    /// The cell.
    pub cell: String,
    /// Its page.
    pub href: String,
    /// Its state in the published table.
    pub state: String,
    /// Its weight in the published table.
    pub weight: u32,
    /// Requests per second over the last five minutes, formatted.
    pub rps: String,
    /// Error rate, formatted.
    pub error_rate: String,
    /// P99.9, formatted.
    pub p999: String,
    /// Whether the P99.9 is exact (false where histogram metrics, bucket-limited, contributed).
    pub exact: bool,
    /// Requests per minute over the last hour (SVG).
    pub spark: String,
}

/// The overview at `now_ms` (reads the store: blocking).
pub fn overview(
    store: &RollupStore,
    controller: &Controller,
    slos: &[SloConfig],
    now_ms: i64,
) -> cellpilot_query::Result<Overview> {
    let mut cards = Vec::with_capacity(slos.len());
    for s in slos {
        let period = s.period.as_millis_i64();
        let a = crate::summary(store, s, now_ms - period, now_ms, now_ms, false)?.availability;
        cards.push(SloCard {
            name: s.name.clone(),
            // The attribution over the same period the card shows.
            href: link::over(&link::sla_page(&s.name), period),
            target: pct(a.target),
            observed: pct(a.observed),
            budget_left: pct(a.budget_left),
            class: if a.budget_left < 0.0 { "bad" } else { "ok" },
            period: s.period.to_string(),
            burn_1h: format!("{:.2}×", a.burn_rate_1h),
            burn_6h: format!("{:.2}×", a.burn_rate_6h),
        });
    }
    let stats = cellpilot_query::cells::cells(store, now_ms - GRID_MS, now_ms, now_ms)?;
    // Every cell's sparkline in one pass.
    let per_minute = cellpilot_query::series::requests_per_cell(store, now_ms - SPARK_MS, now_ms, 60_000)?;
    let cells = stats
        .into_iter()
        .map(|c| {
            let values: Vec<f64> =
                per_minute.get(&c.cell).map(|v| v.iter().map(|(_, n)| *n as f64).collect()).unwrap_or_default();
            let (state, weight) = controller.cell_weight(&c.cell);
            CellRow {
                spark: svg::sparkline(&values, &format!("{}: requests per minute, last hour", c.cell)),
                state: state.as_str().to_string(),
                weight,
                rps: format!("{:.1}", c.requests as f64 / (GRID_MS / 1000) as f64),
                error_rate: pct(c.error_rate()),
                p999: ms(c.quantiles.p999_us),
                exact: c.latency_exact,
                href: link::cell_page(&c.cell),
                cell: c.cell,
            }
        })
        .collect();
    Ok(Overview { slos: cards, cells })
}
