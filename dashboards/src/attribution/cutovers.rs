//! Cut-overs: what each drain cost, from its failure onset (the run of windows over
//! `drain_error_rate` that led to it) to its completion, and what a cut-over on target would
//! have avoided.

use super::rows::{fine_plan, walk};
use super::{CutoverShare, Drain, Scope, fraction};
use cellpilot_core::objective::{Bad, Kind};
use std::collections::BTreeMap;

/// How far before a drain its failure onset is looked for first (widened while the run of
/// failing windows reaches further back).
const ONSET_LOOKBACK_MS: i64 = 600_000;

/// What one drain cost each objective: bad events from its failure onset to completion, and
/// those after `decided_at + cutover_ms`.
pub(super) struct DrainCost {
    drain: Drain,
    bad: Bad,
    avoidable: Bad,
}

/// The cost of drain `d` (completed at `done`): the cell's finest windows around it are read,
/// from the run of windows over `drain_error_rate` that led to the drain (the failure onset) to
/// completion.
pub(super) fn drain_cost(
    s: &Scope<'_>,
    d: &Drain,
    done: i64,
    drain_error_rate: f64,
) -> cellpilot_query::Result<DrainCost> {
    let (from, to, cutover_ms) = (s.from, s.to, s.slo.cutover_ms);
    let end = (done + 1).min(to);
    let mut back = ONSET_LOOKBACK_MS;
    loop {
        let lo = d.decided_at_ms.saturating_sub(back).max(from).min(end);
        // Per window of the cell: (end, errors, requests, bad).
        let mut windows: BTreeMap<i64, (i64, u64, u64, Bad)> = BTreeMap::new();
        walk(s, &fine_plan(&s.over(lo, end)), |r, i| {
            if r.cell.value(i) != d.cell {
                return Ok(());
            }
            let bad = r.bad(i, s.threshold_us)?;
            let w = windows.entry(r.start.value(i)).or_insert((r.end.value(i), 0, 0, Bad::default()));
            w.1 = w.1.saturating_add(r.errors.value(i));
            w.2 = w.2.saturating_add(r.requests.value(i));
            w.3.add(bad);
            Ok(())
        })?;
        let mut onset = d.decided_at_ms;
        let mut in_run = false;
        for (start, (_, errors, requests, _)) in windows.range(..d.decided_at_ms).rev() {
            if cellpilot_core::error_rate(*errors, *requests) > drain_error_rate {
                onset = *start;
                in_run = true;
            } else if in_run {
                break;
            }
        }
        // The run reaches the first window read: it may have begun earlier.
        if in_run && windows.keys().next() == Some(&onset) && lo > from {
            back = back.saturating_mul(4);
            continue;
        }
        let target_end = cutover_ms.map(|t| d.decided_at_ms + t as i64);
        let (mut bad, mut avoidable) = (Bad::default(), Bad::default());
        for (start, (wend, _, _, b)) in windows.range(..end) {
            if *wend <= onset || *start > done {
                continue;
            }
            bad.add(*b);
            if target_end.is_some_and(|t| *start >= t) {
                avoidable.add(*b);
            }
        }
        return Ok(DrainCost { drain: d.clone(), bad, avoidable });
    }
}

pub(super) fn cutover_shares(costs: &[DrainCost], k: Kind, total_bad: u64) -> Vec<CutoverShare> {
    let mut out: Vec<CutoverShare> = costs
        .iter()
        .map(|c| {
            let version = c.drain.version.map(|v| format!("v{v}")).unwrap_or_else(|| "reported".into());
            CutoverShare {
                key: format!("{} {version}", c.drain.cell),
                cell: c.drain.cell.clone(),
                decision_version: c.drain.version,
                bad_events: c.bad[k],
                share: fraction(c.bad[k], total_bad),
                avoidable_at_target: c.avoidable[k],
            }
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.bad_events));
    out
}
