//! How an objective stands over a range: observed against target, budget spent and left, and
//! the burn rates of its last 1 and 6 hours.

use super::series::totals;
use super::{Counts, Scope, Standing};
use cellpilot_core::objective::Objective;

/// Counts over the range and over its last 1 and 6 hours.
pub(super) struct Spans {
    pub(super) all: Counts,
    last_1h: Counts,
    last_6h: Counts,
}

pub(super) fn standing(o: &Objective, s: &Spans) -> Standing {
    let (k, target) = (o.kind, o.target);
    let (bad, requests) = (s.all.bad[k], s.all.requests);
    let observed = if requests == 0 { 1.0 } else { 1.0 - bad as f64 / requests as f64 };
    let budget = (1.0 - target) * requests as f64;
    let spent = if budget > 0.0 { bad as f64 / budget } else { 0.0 };
    Standing {
        threshold_ms: o.threshold_ms,
        target,
        bad_events: bad,
        observed,
        gap: target - observed,
        budget,
        budget_spent: spent,
        budget_left: 1.0 - spent,
        burn_rate_1h: o.burn_rate(s.last_1h.bad[k], s.last_1h.requests),
        burn_rate_6h: o.burn_rate(s.last_6h.bad[k], s.last_6h.requests),
    }
}

/// The range's counts and those of its last 1 and 6 hours (the burn rates), all read through
/// the tiers; `all` is given when the caller already has it.
pub(super) fn spans(s: &Scope<'_>, all: Option<Counts>) -> cellpilot_query::Result<Spans> {
    let last = |w: i64| totals(&s.over(s.from.max(s.to - w), s.to));
    let all = match all {
        Some(c) => c,
        None => totals(s)?,
    };
    Ok(Spans { all, last_1h: last(3_600_000)?, last_6h: last(6 * 3_600_000)? })
}
