//! `/cells/{cell}`: one cell's requests, error rate and P99.9 over time with decision and cut-over markers, and its routes.

use super::*;

#[derive(Template)]
#[template(path = "cell.html")]
struct CellPage {
    title: String,
    now: String,
    refresh: bool,
    cell: String,
    ranges: String,
    view: cellpilot_dashboards::views::cell::CellView,
}

/// `/cells/{cell}`: requests, error rate and P99.9 over time with decision and cut-over markers.
pub async fn cell(
    State(state): State<AppState>,
    Path(cell): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    let (range, span) = range_ms(&q, "1h")?;
    let window = TimeRange::last(span, state.range_bounds());
    let (from, now) = (window.from_ms(), window.to_ms());
    let step = window.step(None, state.store.fine_ms())?;
    let (st, c) = (state.clone(), cell.clone());
    let view =
        blocking(move || Ok(cellpilot_dashboards::views::cell::cell(&st.store, &st.controller, &c, from, now, step)?))
            .await?;
    let page = CellPage {
        title: format!("cell {cell}"),
        now: format_rfc3339_ms(now),
        refresh: true,
        ranges: picker(&link::cell_page(&cell), &range),
        cell,
        view,
    };
    Ok(Page(page).into_response())
}
