//! `/`: SLO cards and the cell grid.

use super::*;
use cellpilot_dashboards::views::overview::Overview;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    title: String,
    now: String,
    refresh: bool,
    view: Overview,
}

/// `/`: SLO cards and the cell grid.
pub async fn overview(State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let st = state.clone();
    let view = blocking(move || {
        Ok(cellpilot_dashboards::views::overview::overview(&st.store, &st.controller, &st.config.slo, now)?)
    })
    .await?;
    Ok(Page(OverviewPage { title: "overview".into(), now: format_rfc3339_ms(now), refresh: true, view })
        .into_response())
}
