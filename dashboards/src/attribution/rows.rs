//! Walking the selected rows of the tiers, and the bad events of one row.

use super::Scope;
use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use cellpilot_core::config::SloConfig;
use cellpilot_core::objective::{Bad, Events};
use cellpilot_core::schema::RollupColumns;
use cellpilot_query::cells::Part;
use cellpilot_query::files::Table;
use cellpilot_query::tier::{FIVE_MIN_MS, Tier};
use std::collections::HashSet;
use std::sync::Arc;

/// The columns of a rollups batch, with the bad events of a row.
pub(super) struct Rows<'a>(RollupColumns<'a>);

impl<'a> std::ops::Deref for Rows<'a> {
    type Target = RollupColumns<'a>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> Rows<'a> {
    pub(super) fn of(b: &'a RecordBatch) -> cellpilot_query::Result<Self> {
        Ok(Self(RollupColumns::of(b)?))
    }

    /// Bad events of row `i`: errors, and slow non-error requests when a threshold is given.
    pub(super) fn bad(&self, i: usize, threshold_us: Option<u64>) -> cellpilot_query::Result<Bad> {
        // Slow requests that failed already count against availability.
        let slow = match threshold_us {
            Some(t) => self.slow_successes(i, t)?,
            None => 0,
        };
        Ok(Bad::of(&Events { requests: self.requests.value(i), errors: self.errors.value(i), slow }))
    }
}

/// Whether row `i` of a batch with these name columns is in the SLO's selection.
pub(super) fn selected(
    slo: &SloConfig,
    cell: &StringArray,
    service: &StringArray,
    route: &StringArray,
    i: usize,
) -> bool {
    let s = &slo.selector;
    s.cell.as_deref().is_none_or(|c| c == cell.value(i))
        && s.service.as_deref().is_none_or(|c| c == service.value(i))
        && s.route.as_deref().is_none_or(|c| c == route.value(i))
}

/// Calls `f(rows, i)` for every selected row of `batches` that `part` holds.
pub(super) fn each_row(
    part: &Part,
    slo: &SloConfig,
    batches: &[RecordBatch],
    mut f: impl FnMut(&Rows<'_>, usize) -> cellpilot_query::Result<()>,
) -> cellpilot_query::Result<()> {
    for b in batches {
        let rows = Rows::of(b)?;
        for i in 0..b.num_rows() {
            if part.holds(rows.start.value(i), rows.end.value(i))
                && selected(slo, rows.cell, rows.service, rows.route, i)
            {
                f(&rows, i)?;
            }
        }
    }
    Ok(())
}

/// Calls `f(rows, i)` for every selected rollups row of `parts`.
pub(super) fn walk(
    s: &Scope<'_>,
    parts: &[Part],
    mut f: impl FnMut(&Rows<'_>, usize) -> cellpilot_query::Result<()>,
) -> cellpilot_query::Result<()> {
    for part in parts {
        each_row(part, s.slo, &s.store.scan(Table::Rollups, part.tier, part.from_ms, part.to_ms, None)?, &mut f)?;
    }
    Ok(())
}

/// The coarsest exact reading of `[from, to)`: whole hours, whole 5 minutes, finest edges.
pub(super) fn tiered(s: &Scope<'_>) -> Vec<Part> {
    if s.from >= s.to {
        return Vec::new();
    }
    cellpilot_query::cells::plan(s.from, s.to, s.now - s.store.retention_ms(Tier::Fine))
}

/// The finest rows there are: the finest tier while it is retained (incidents need 1-minute
/// buckets, cut-overs the windows around their drain), 5-minute windows before that.
pub(super) fn fine_plan(s: &Scope<'_>) -> Vec<Part> {
    let (from, to) = (s.from, s.to);
    let horizon = s.now - s.store.retention_ms(Tier::Fine);
    let fine_start = from.max(horizon + (FIVE_MIN_MS - horizon.rem_euclid(FIVE_MIN_MS)) % FIVE_MIN_MS).min(to);
    let mut parts = Vec::new();
    if from < fine_start {
        parts.push(Part { tier: Tier::FiveMin, from_ms: from, to_ms: fine_start, inside: false });
    }
    if fine_start < to {
        parts.push(Part { tier: Tier::Fine, from_ms: fine_start, to_ms: to, inside: false });
    }
    parts
}

/// Shared copies of names, so a row costs no allocation.
#[derive(Default)]
pub(super) struct Names(HashSet<Arc<str>>);

impl Names {
    pub(super) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.0.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.0.insert(n.clone());
        n
    }
}
