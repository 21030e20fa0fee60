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
    state: String,
    weight: u32,
    requests_chart: String,
    errors_chart: String,
    latency_chart: String,
    exact: bool,
    routes: Vec<RouteRow>,
}

/// One route of the cell page.
struct RouteRow {
    service: String,
    route: String,
    requests: u64,
    error_rate: String,
    p999: String,
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
    let (points, exact, routes) = blocking(move || {
        let sel = cellpilot_query::series::Selection { cell: Some(c.clone()), ..Default::default() };
        let pts = cellpilot_query::series::series(&st.store, &sel, from, now, step)?;
        let exact = cellpilot_query::cells::cells(&st.store, from, now, now)?
            .iter()
            .find(|x| x.cell == c)
            .is_none_or(|x| x.latency_exact);
        let routes = cellpilot_query::cells::routes(&st.store, &c, from, now, now)?;
        Ok((pts, exact, routes))
    })
    .await?;
    let routes = routes
        .into_iter()
        .map(|r| RouteRow {
            error_rate: pct(r.error_rate()),
            p999: ms(r.quantiles.p999_us),
            requests: r.requests,
            service: r.service,
            route: r.route,
        })
        .collect();
    let mut markers: Vec<Marker> = state
        .controller
        .decisions()
        .into_iter()
        .filter(|d| d.cell == cell)
        .map(|d| Marker {
            t_ms: d.decided_at_ms,
            label: format!("v{} {} -> {}: {}", d.version, d.old_weight, d.new_weight, d.reason),
            // Drains stand out; bias, restore and pin steps are quieter.
            class: if d.state == cellpilot_control::State::Drained { "decision drain" } else { "decision" },
        })
        .collect();
    markers.extend(state.controller.cutovers().into_iter().filter(|c| c.cell == cell).filter_map(|c| {
        Some(Marker {
            t_ms: c.completed_at_ms?,
            label: format!("cut-over done in {} ms", c.duration_ms.unwrap_or(0)),
            class: "cutover",
        })
    }));
    let per_s = step as f64 / 1000.0;
    let req: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.requests as f64 / per_s)).collect();
    let err: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.error_rate() * 100.0)).collect();
    let lat: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.quantiles.p999_us as f64 / 1000.0)).collect();
    let (s, w) = state.controller.cell_weight(&cell);
    let page = CellPage {
        title: format!("cell {cell}"),
        now: format_rfc3339_ms(now),
        refresh: true,
        ranges: picker(&link::cell_page(&cell), &range),
        state: s.as_str().to_string(),
        weight: w,
        requests_chart: svg::line_chart("requests per second", "/s", &req, from, now, &markers),
        errors_chart: svg::line_chart("error rate", "%", &err, from, now, &markers),
        latency_chart: svg::line_chart(
            if exact { "P99.9 latency" } else { "P99.9 latency (bucket-limited)" },
            "ms",
            &lat,
            from,
            now,
            &markers,
        ),
        exact,
        routes,
        cell,
    };
    Ok(Page(page).into_response())
}
