//! View models: what a page shows, built here from the domain crates so that `web` only parses,
//! authorizes, calls one of these and renders the answer. Numbers are formatted here too, so a
//! page and its test read the same strings.
//!
//! # Layout
//! - [`cell`]: one cell's page.

pub mod cell;

/// A ratio as a percentage with three decimals (`0.123 %`).
pub fn pct(x: f64) -> String {
    format!("{:.3} %", x * 100.0)
}

/// Microseconds as milliseconds with one decimal (`12.5 ms`).
pub fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}
