//! The SLA page's view: per objective, where the SLO stands and the shares of its bad events by
//! cell, service, route, cause, incident and cut-over, taken from the attribution report.

use super::pct;
use crate::attribution::{CutoverShare, Incident, Objective, Report, Share};
use crate::svg;
use cellpilot_core::config::SloConfig;
use cellpilot_core::objective::Kind;

/// What the SLA page shows.
#[derive(Debug, Clone)]
pub struct SlaView {
    /// Start of the range, RFC 3339.
    pub from: String,
    /// End of the range, RFC 3339.
    pub to: String,
    /// Requests in the range.
    pub requests: u64,
    /// One section per objective of the SLO, in the SLO's order.
    pub objectives: Vec<ObjectiveView>,
    /// The cut-overs in one line: count, median, max, over target.
    pub cutover: String,
}

/// One objective's section.
#[derive(Debug, Clone)]
pub struct ObjectiveView {
    /// Its heading (`availability ≥ 99.9 %`).
    pub title: String,
    /// Target, formatted.
    pub target: String,
    /// Observed, formatted.
    pub observed: String,
    /// Target minus observed, formatted.
    pub gap: String,
    /// Bad events in the range.
    pub bad: u64,
    /// Bad events the budget allows over the range.
    pub budget: String,
    /// Budget spent, formatted.
    pub spent: String,
    /// Budget left, formatted.
    pub left: String,
    /// `bad` once the budget is spent, else `ok`.
    pub class: &'static str,
    /// Burn rate over the last hour.
    pub burn_1h: String,
    /// Burn rate over the last six hours.
    pub burn_6h: String,
    /// The shares by dimension.
    pub dims: Vec<Dim>,
}

/// One attribution dimension.
#[derive(Debug, Clone)]
pub struct Dim {
    /// `cell`, `service`, `route`, `cause`, `incident` or `cut-over`.
    pub name: &'static str,
    /// Its rows, largest share first.
    pub rows: Vec<AttrRow>,
}

/// One attribution row.
#[derive(Debug, Clone)]
pub struct AttrRow {
    /// The cell, service, route, cause, incident or cut-over.
    pub key: String,
    /// Its bad events.
    pub bad: u64,
    /// Its share of the bad events, formatted.
    pub share: String,
    /// The share as a bar (SVG).
    pub bar: String,
    /// An incident's span, or a cut-over's avoidable bad events.
    pub extra: String,
}

impl AttrRow {
    fn new(key: &str, bad: u64, share: f64, extra: String) -> Self {
        AttrRow { key: key.to_string(), bad, share: pct(share), bar: svg::bar(share, key), extra }
    }
}

/// `GET /api/v1/slos`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Slos {
    /// Every configured SLO.
    pub slos: Vec<SloRecord>,
}

/// One SLO as configured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SloRecord {
    /// Its name.
    pub name: String,
    /// Availability target (0.999).
    pub availability: f64,
    /// P99.9 latency objective, ms.
    pub latency_p999_ms: Option<f64>,
    /// Cut-over target, ms.
    pub cutover_ms: Option<u64>,
    /// Its period (`30d`).
    pub period: String,
    /// The requests it covers.
    pub selector: cellpilot_core::config::Selector,
}

/// The configured SLOs.
pub fn slos(slos: &[SloConfig]) -> Slos {
    let slos = slos
        .iter()
        .map(|s| SloRecord {
            name: s.name.clone(),
            availability: s.availability,
            latency_p999_ms: s.latency_p999_ms,
            cutover_ms: s.cutover_ms,
            period: s.period.to_string(),
            selector: s.selector.clone(),
        })
        .collect();
    Slos { slos }
}

/// The view of `report`, the attribution of `slo`.
pub fn sla(slo: &SloConfig, report: &Report) -> SlaView {
    // Headings from the objectives themselves, in the report's order.
    let objectives = cellpilot_core::objective::Objective::of(slo)
        .into_iter()
        .filter_map(|o| {
            let section = match o.kind {
                Kind::Availability => Some(&report.availability),
                Kind::Latency => report.latency.as_ref(),
            };
            section.map(|s| objective(o.title(), s))
        })
        .collect();
    let c = &report.cutover;
    let cutover = format!(
        "{} cut-over(s) · median {} · max {} · over the {} target: {}",
        c.count,
        c.p50_ms.map_or("–".into(), |v| format!("{v} ms")),
        c.max_ms.map_or("–".into(), |v| format!("{v} ms")),
        c.target_ms.map_or("(no)".into(), |v| format!("{v} ms")),
        c.over_target
    );
    SlaView { from: report.from.clone(), to: report.to.clone(), requests: report.requests, objectives, cutover }
}

fn objective(title: String, o: &Objective) -> ObjectiveView {
    let share_rows = |v: &[Share]| -> Vec<AttrRow> {
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
    let incident = |i: &Incident| AttrRow::new(&i.key, i.bad_events, i.share, format!("{} – {}", i.from, i.to));
    dims.push(Dim { name: "incident", rows: a.incident.iter().map(incident).collect() });
    let cutover = |c: &CutoverShare| {
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
