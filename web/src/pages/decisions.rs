//! `/decisions`: weight decisions and cut-overs, newest first.

use super::*;
use cellpilot_dashboards::views::decisions::DecisionsPage;

#[derive(Template)]
#[template(path = "decisions.html")]
struct Decisions {
    title: String,
    now: String,
    refresh: bool,
    view: DecisionsPage,
}

/// `/decisions`: weight decisions and cut-overs, newest first.
pub async fn decisions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let view = cellpilot_dashboards::views::decisions::page(&state.controller);
    Ok(Page(Decisions { title: "decisions".into(), now: format_rfc3339_ms(state.clock.now_ms()), refresh: true, view })
        .into_response())
}
