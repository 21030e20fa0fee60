//! cellpilot-dashboards: what the dashboard shows, computed from the rollups.
//!
//! # Layout
//! - [`attribution`]: the SLA gap attribution engine behind `GET /api/v1/sla/{slo}`.
//! - [`svg`]: server-side SVG charts (sparklines, line charts with markers, attribution bars).
//! - [`views`]: view models, what each page shows, which `web` only renders.

pub mod attribution;
pub mod svg;
pub mod views;

pub use attribution::{Drain, Report, ReportRequest, ReportSettings, Summary, report, summary};
