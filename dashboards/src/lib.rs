//! cellpilot-dashboards: what the dashboard shows, computed from the rollups.
//!
//! # Layout
//! - [`attribution`]: the SLA gap attribution engine behind `GET /api/v1/sla/{slo}`.

pub mod attribution;

pub use attribution::{Drain, Report, report};
