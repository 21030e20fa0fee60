//! View models: what a page shows, built here from the domain crates so that `web` only parses,
//! authorizes, calls one of these and renders the answer. Numbers are formatted here too, so a
//! page and its test read the same strings.
//!
//! # Layout
//! - [`overview`]: the SLO cards and the cell grid.
//! - [`cell`]: one cell's page.
//! - [`sla`]: one SLO's page: where each objective stands and what caused its bad events; the
//!   configured SLOs (JSON).
//! - [`decisions`]: decisions and cut-overs (page and JSON), the published table and the
//!   gateways (JSON).
//! - [`alerts`]: alerts and deliveries (page and JSON).
//! - [`cells`]: per-cell totals and a selection's time series (JSON).

pub mod alerts;
pub mod cell;
pub mod cells;
pub mod decisions;
pub mod overview;
pub mod sla;

/// A ratio as a percentage with three decimals (`0.123 %`).
pub fn pct(x: f64) -> String {
    format!("{:.3} %", x * 100.0)
}

/// Microseconds as milliseconds with one decimal (`12.5 ms`).
pub fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}
