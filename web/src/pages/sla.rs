//! `/sla/{slo}`: the SLA gap of one SLO and what caused it, per objective and dimension.

use super::*;
use cellpilot_dashboards::views::sla::SlaView;

#[derive(Template)]
#[template(path = "sla.html")]
struct SlaPage {
    title: String,
    now: String,
    refresh: bool,
    name: String,
    ranges: String,
    view: SlaView,
}

/// `/sla/{slo}`: the gap and what caused it.
pub async fn sla(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let slo = state.slo(&name)?;
    // Like every page, the last hour unless asked (the SLO card links here from its period).
    let (range, span) = range_ms(&q, "1h")?;
    let window = TimeRange::last(span, state.range_bounds());
    let (from, now) = (window.from_ms(), window.to_ms());
    let drains = state.drains();
    let st = state.clone();
    let s2 = slo.clone();
    let report = blocking(move || st.report(&s2, &drains, from, now, now)).await?;
    Ok(Page(SlaPage {
        title: format!("SLA {name}"),
        now: format_rfc3339_ms(now),
        refresh: true,
        ranges: picker(&link::sla_page(&name), &range),
        view: cellpilot_dashboards::views::sla::sla(&slo, &report),
        name,
    })
    .into_response())
}
