//! HTML pages: askama templates in `web/templates/`, charts drawn on the server (no scripts but
//! the SQL console's fetch, no external assets), auto-refresh, a time-range picker.

use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use cellpilot_core::link;
use cellpilot_core::range::TimeRange;
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_dashboards::svg::{self, Marker};
use serde::Deserialize;

/// A rendered template; a render failure is a 500.
pub struct Page<T>(pub T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => Html(html).into_response(),
            Err(e) => ApiError::Internal(format!("rendering a page: {e}")).into_response(),
        }
    }
}

/// `?range=15m|1h|6h|24h|7d|30d`.
#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    range: Option<String>,
}

const RANGES: [(&str, i64); 6] = [
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("6h", 21_600_000),
    ("24h", 86_400_000),
    ("7d", 604_800_000),
    ("30d", 2_592_000_000),
];

fn range_ms(q: &RangeQuery, default: &str) -> Result<(String, i64), ApiError> {
    let name = q.range.clone().unwrap_or_else(|| default.to_string());
    RANGES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, ms)| (n.to_string(), *ms))
        .ok_or_else(|| ApiError::BadRequest(format!("`range` must be one of 15m, 1h, 6h, 24h, 7d, 30d (got `{name}`)")))
}

/// The longest picker range no longer than `ms` (the shortest when all are longer).
fn range_within(ms: i64) -> &'static str {
    RANGES.iter().rev().find(|(_, r)| *r <= ms).map_or(RANGES[0].0, |(n, _)| n)
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

fn pct(x: f64) -> String {
    format!("{:.3} %", x * 100.0)
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::Internal(e.to_string()))?
}

/// An SLO card.
pub struct SloCard {
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
pub struct CellRow {
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
            let (s, w) = state.cell_weight(&c.cell);
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
pub struct RouteRow {
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
            error_rate: pct(if r.requests == 0 { 0.0 } else { r.errors as f64 / r.requests as f64 }),
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
    let err: Vec<(i64, f64)> = points
        .iter()
        .map(|p| (p.t_ms, if p.requests == 0 { 0.0 } else { p.errors as f64 / p.requests as f64 * 100.0 }))
        .collect();
    let lat: Vec<(i64, f64)> = points.iter().map(|p| (p.t_ms, p.quantiles.p999_us as f64 / 1000.0)).collect();
    let (s, w) = state.cell_weight(&cell);
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

/// One attribution row.
pub struct AttrRow {
    key: String,
    bad: u64,
    share: String,
    bar: String,
    extra: String,
}

/// One attribution dimension.
pub struct Dim {
    name: &'static str,
    rows: Vec<AttrRow>,
}

/// One objective's section.
pub struct ObjectiveView {
    title: String,
    target: String,
    observed: String,
    gap: String,
    bad: u64,
    budget: String,
    spent: String,
    left: String,
    class: &'static str,
    burn_1h: String,
    burn_6h: String,
    dims: Vec<Dim>,
}

#[derive(Template)]
#[template(path = "sla.html")]
struct SlaPage {
    title: String,
    now: String,
    refresh: bool,
    name: String,
    ranges: String,
    from: String,
    to: String,
    requests: u64,
    objectives: Vec<ObjectiveView>,
    cutover: String,
}

fn objective_view(title: String, o: &cellpilot_dashboards::attribution::Objective) -> ObjectiveView {
    let share_rows = |v: &[cellpilot_dashboards::attribution::Share]| -> Vec<AttrRow> {
        v.iter()
            .map(|s| AttrRow {
                key: s.key.clone(),
                bad: s.bad_events,
                share: pct(s.share),
                bar: svg::bar(s.share, &s.key),
                extra: String::new(),
            })
            .collect()
    };
    let a = &o.attribution;
    let mut dims = vec![
        Dim { name: "cell", rows: share_rows(&a.cell) },
        Dim { name: "service", rows: share_rows(&a.service) },
        Dim { name: "route", rows: share_rows(&a.route) },
    ];
    if let Some(c) = &a.cause {
        dims.push(Dim { name: "cause", rows: share_rows(c) });
    }
    dims.push(Dim {
        name: "incident",
        rows: a
            .incident
            .iter()
            .map(|i| AttrRow {
                key: i.key.clone(),
                bad: i.bad_events,
                share: pct(i.share),
                bar: svg::bar(i.share, &i.key),
                extra: format!("{} – {}", i.from, i.to),
            })
            .collect(),
    });
    dims.push(Dim {
        name: "cut-over",
        rows: a
            .cutover
            .iter()
            .map(|c| AttrRow {
                key: c.key.clone(),
                bad: c.bad_events,
                share: pct(c.share),
                bar: svg::bar(c.share, &c.key),
                extra: format!("{} avoidable at target", c.avoidable_at_target),
            })
            .collect(),
    });
    let o = &o.standing;
    ObjectiveView {
        title,
        target: pct(o.target),
        observed: pct(o.observed),
        gap: pct(o.gap),
        bad: o.bad_events,
        budget: format!("{:.1}", o.budget),
        spent: pct(o.budget_spent),
        left: pct(o.budget_left),
        class: if o.budget_left < 0.0 { "bad" } else { "ok" },
        burn_1h: format!("{:.2}×", o.burn_rate_1h),
        burn_6h: format!("{:.2}×", o.burn_rate_6h),
        dims,
    }
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
    let r = blocking(move || st.report(&s2, &drains, from, now, now)).await?;
    let mut objectives = vec![objective_view("Availability".into(), &r.availability)];
    if let Some(l) = &r.latency {
        objectives.push(objective_view(
            format!("Latency (requests slower than {} ms)", l.standing.threshold_ms.unwrap_or(0.0)),
            l,
        ));
    }
    let c = &r.cutover;
    let cutover = format!(
        "{} cut-over(s) · median {} · max {} · over the {} target: {}",
        c.count,
        c.p50_ms.map_or("–".into(), |v| format!("{v} ms")),
        c.max_ms.map_or("–".into(), |v| format!("{v} ms")),
        c.target_ms.map_or("(no)".into(), |v| format!("{v} ms")),
        c.over_target
    );
    Ok(Page(SlaPage {
        title: format!("SLA {name}"),
        now: format_rfc3339_ms(now),
        refresh: true,
        ranges: picker(&link::sla_page(&name), &range),
        from: r.from.clone(),
        to: r.to.clone(),
        requests: r.requests,
        objectives,
        cutover,
        name,
    })
    .into_response())
}

/// A decision row.
pub struct DecisionRow {
    when: String,
    version: u64,
    cell: String,
    href: String,
    weights: String,
    state: String,
    reason: String,
    actor: String,
}

/// A cut-over row.
pub struct CutoverRow {
    cell: String,
    decided: String,
    applied: String,
    completed: String,
    duration: String,
    source: String,
}

#[derive(Template)]
#[template(path = "decisions.html")]
struct DecisionsPage {
    title: String,
    now: String,
    refresh: bool,
    rows: Vec<DecisionRow>,
    cutovers: Vec<CutoverRow>,
}

/// `/decisions`: weight decisions and cut-overs, newest first.
pub async fn decisions(State(state): State<AppState>) -> Result<Response, ApiError> {
    let t = |ms: Option<i64>| ms.map(format_rfc3339_ms).unwrap_or_else(|| "–".into());
    let rows = state
        .controller
        .decisions()
        .into_iter()
        .rev()
        .take(500)
        .map(|d| DecisionRow {
            when: format_rfc3339_ms(d.decided_at_ms),
            version: d.version,
            weights: format!("{} → {}", d.old_weight, d.new_weight),
            href: link::cell_page(&d.cell),
            state: d.state.as_str().to_string(),
            cell: d.cell,
            reason: d.reason,
            actor: d.actor,
        })
        .collect();
    let mut cs = state.controller.cutovers();
    cs.sort_by_key(|c| std::cmp::Reverse(c.decided_at_ms));
    let cutovers = cs
        .into_iter()
        .map(|c| CutoverRow {
            decided: format_rfc3339_ms(c.decided_at_ms),
            applied: t(c.applied_at_ms),
            completed: t(c.completed_at_ms),
            duration: c.duration_ms.map_or("in progress".into(), |d| format!("{d} ms")),
            source: c.source.as_str().to_string(),
            cell: c.cell,
        })
        .collect();
    Ok(Page(DecisionsPage {
        title: "decisions".into(),
        now: format_rfc3339_ms(state.clock.now_ms()),
        refresh: true,
        rows,
        cutovers,
    })
    .into_response())
}

/// An alert row.
pub struct AlertRow {
    name: String,
    state: String,
    class: &'static str,
    labels: String,
    summary: String,
    since: String,
}

/// A delivery row.
pub struct DeliveryRow {
    receiver: String,
    result: &'static str,
    class: &'static str,
    detail: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    title: String,
    now: String,
    refresh: bool,
    rows: Vec<AlertRow>,
    deliveries: Vec<DeliveryRow>,
}

/// `/alerts`: pending, firing and recently resolved alerts and the last delivery per receiver.
pub async fn alerts(State(state): State<AppState>) -> Result<Response, ApiError> {
    let rows = state
        .alerts
        .alerts()
        .into_iter()
        .map(|a| {
            let st = a.state.as_str().to_string();
            AlertRow {
                name: a.labels.get("alertname").cloned().unwrap_or_default(),
                class: if st == "firing" { "bad" } else { "muted" },
                state: st,
                labels: a
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "alertname")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                since: format_rfc3339_ms(a.starts_at_ms.unwrap_or(a.active_since_ms)),
            }
        })
        .collect();
    let deliveries = state
        .alerts
        .deliveries()
        .into_iter()
        .map(|(receiver, d)| DeliveryRow {
            receiver,
            result: if d.ok { "ok" } else { "failing" },
            class: if d.ok { "ok" } else { "bad" },
            detail: format!(
                "{} after {} attempt(s){}",
                d.at,
                d.attempts,
                d.error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        })
        .collect();
    Ok(Page(AlertsPage {
        title: "alerts".into(),
        now: format_rfc3339_ms(state.clock.now_ms()),
        refresh: true,
        rows,
        deliveries,
    })
    .into_response())
}

#[derive(Template)]
#[template(path = "query.html")]
struct QueryPage {
    title: String,
    now: String,
    refresh: bool,
}

/// `/query`: the read-only SQL console.
pub async fn query(State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Page(QueryPage { title: "query".into(), now: format_rfc3339_ms(state.clock.now_ms()), refresh: false })
        .into_response())
}
