//! `/alerts`: alerts and the last delivery per receiver.

use super::*;
use cellpilot_dashboards::views::alerts::AlertsPage;

#[derive(Template)]
#[template(path = "alerts.html")]
struct Alerts {
    title: String,
    now: String,
    refresh: bool,
    view: AlertsPage,
}

/// `/alerts`: pending, firing and recently resolved alerts and the last delivery per receiver.
pub async fn alerts(State(state): State<AppState>) -> Result<Response, ApiError> {
    let view = cellpilot_dashboards::views::alerts::page(&state.alerts);
    Ok(Page(Alerts { title: "alerts".into(), now: format_rfc3339_ms(state.clock.now_ms()), refresh: true, view })
        .into_response())
}
