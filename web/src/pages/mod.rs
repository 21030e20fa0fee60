//! HTML pages: askama templates in `web/templates/`, charts drawn on the server (no scripts but
//! the SQL console's fetch, no external assets), auto-refresh, a time-range picker. One file per
//! page; this module holds what they share (the range picker, number formats, rendering).
//!
//! Each handler extracts its parameters, calls the domain crates off the async workers and
//! renders its template.

use crate::error::ApiError;
use crate::state::AppState;
use crate::state::blocking;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use cellpilot_core::link::{self, RANGES};
use cellpilot_core::range::TimeRange;
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_dashboards::svg;
use serde::Deserialize;

mod alerts;
mod cell;
mod decisions;
mod overview;
mod query;
mod sla;

pub use alerts::alerts;
pub use cell::cell;
pub use decisions::decisions;
pub use overview::overview;
pub use query::query;
pub use sla::sla;

/// A rendered template; a render failure is a 500.
pub struct Page<T>(pub T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => Html(html).into_response(),
            Err(e) => ApiError::Internal(format!("rendering a page: {e}").into()).into_response(),
        }
    }
}

/// `?range=15m|1h|6h|24h|7d|30d`.
#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    range: Option<String>,
}

fn range_ms(q: &RangeQuery, default: &str) -> Result<(String, i64), ApiError> {
    let name = q.range.clone().unwrap_or_else(|| default.to_string());
    RANGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, ms)| (n.to_string(), *ms))
        .ok_or_else(|| ApiError::BadRequest(format!("`range` must be one of 15m, 1h, 6h, 24h, 7d, 30d (got `{name}`)")))
}

fn picker(path: &str, on: &str) -> String {
    RANGES
        .iter()
        .map(|(n, _)| {
            let class = if *n == on { " class=\"on\"" } else { "" };
            format!("<a{class} href=\"{}?range={n}\">{n}</a>", svg::escape(path))
        })
        .collect()
}
