//! `/decisions`: weight decisions and cut-overs, newest first.

use super::*;

/// A decision row.
struct DecisionRow {
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
struct CutoverRow {
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
