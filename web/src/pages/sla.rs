//! `/sla/{slo}`: the SLA gap of one SLO and what caused it, per objective and dimension.

use super::*;

/// One attribution row.
struct AttrRow {
    key: String,
    bad: u64,
    share: String,
    bar: String,
    extra: String,
}

/// One attribution dimension.
struct Dim {
    name: &'static str,
    rows: Vec<AttrRow>,
}

/// One objective's section.
struct ObjectiveView {
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

impl AttrRow {
    fn new(key: &str, bad: u64, share: f64, extra: String) -> Self {
        AttrRow { key: key.to_string(), bad, share: pct(share), bar: svg::bar(share, key), extra }
    }
}

fn objective_view(title: String, o: &cellpilot_dashboards::attribution::Objective) -> ObjectiveView {
    let share_rows = |v: &[cellpilot_dashboards::attribution::Share]| -> Vec<AttrRow> {
        v.iter().map(|s| AttrRow::new(&s.key, s.bad_events, s.share, String::new())).collect()
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
    let incident = |i: &cellpilot_dashboards::attribution::Incident| {
        AttrRow::new(&i.key, i.bad_events, i.share, format!("{} – {}", i.from, i.to))
    };
    dims.push(Dim { name: "incident", rows: a.incident.iter().map(incident).collect() });
    let cutover = |c: &cellpilot_dashboards::attribution::CutoverShare| {
        AttrRow::new(&c.key, c.bad_events, c.share, format!("{} avoidable at target", c.avoidable_at_target))
    };
    dims.push(Dim { name: "cut-over", rows: a.cutover.iter().map(cutover).collect() });
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
    // Headings from the objectives themselves, in the report's order.
    let mut objectives = Vec::new();
    for o in cellpilot_core::objective::Objective::of(&slo) {
        let section = match o.kind {
            cellpilot_core::objective::Kind::Availability => Some(&r.availability),
            cellpilot_core::objective::Kind::Latency => r.latency.as_ref(),
        };
        if let Some(section) = section {
            objectives.push(objective_view(o.title(), section));
        }
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
