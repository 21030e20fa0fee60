//! `/`: SLO cards and the cell grid.

use super::*;

/// An SLO card.
struct SloCard {
    name: String,
    href: String,
    target: String,
    observed: String,
    budget_left: String,
    class: &'static str,
    period: String,
    burn_1h: String,
    burn_6h: String,
}

/// A row of the cell grid.
struct CellRow {
    cell: String,
    href: String,
    state: String,
    weight: u32,
    rps: String,
    error_rate: String,
    p999: String,
    exact: bool,
    spark: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    title: String,
    now: String,
    refresh: bool,
    slos: Vec<SloCard>,
    cells: Vec<CellRow>,
}

/// `/`: SLO cards and the cell grid.
pub async fn overview(State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let st = state.clone();
    let (slos, stats, sparks) = blocking(move || {
        let mut slos = Vec::new();
        for s in &st.config.slo {
            let a = cellpilot_dashboards::summary(&st.store, s, now - s.period.as_millis_i64(), now, now, false)?
                .availability;
            slos.push(SloCard {
                name: s.name.clone(),
                // The attribution over the same period the card shows.
                href: format!("{}?range={}", link::sla_page(&s.name), range_within(s.period.as_millis_i64())),
                target: pct(a.target),
                observed: pct(a.observed),
                budget_left: pct(a.budget_left),
                class: if a.budget_left < 0.0 { "bad" } else { "ok" },
                period: s.period.to_string(),
                burn_1h: format!("{:.2}×", a.burn_rate_1h),
                burn_6h: format!("{:.2}×", a.burn_rate_6h),
            });
        }
        let stats = cellpilot_query::cells::cells(&st.store, now - 300_000, now, now)?;
        // Requests per minute over the last hour, every cell in one pass.
        let per_minute = cellpilot_query::series::requests_per_cell(&st.store, now - 3_600_000, now, 60_000)?;
        let sparks: Vec<String> = stats
            .iter()
            .map(|c| {
                let values: Vec<f64> =
                    per_minute.get(&c.cell).map(|v| v.iter().map(|(_, n)| *n as f64).collect()).unwrap_or_default();
                svg::sparkline(&values, &format!("{}: requests per minute, last hour", c.cell))
            })
            .collect();
        Ok((slos, stats, sparks))
    })
    .await?;
    let cells = stats
        .into_iter()
        .zip(sparks)
        .map(|(c, spark)| {
            let (s, w) = state.controller.cell_weight(&c.cell);
            CellRow {
                state: s.as_str().to_string(),
                weight: w,
                rps: format!("{:.1}", c.requests as f64 / 300.0),
                error_rate: pct(c.error_rate()),
                p999: ms(c.quantiles.p999_us),
                exact: c.latency_exact,
                href: link::cell_page(&c.cell),
                cell: c.cell,
                spark,
            }
        })
        .collect();
    Ok(Page(Overview { title: "overview".into(), now: format_rfc3339_ms(now), refresh: true, slos, cells })
        .into_response())
}
