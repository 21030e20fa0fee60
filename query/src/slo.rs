//! Counts behind SLOs: requests, errors and slow requests of a cell / service / route selection
//! over a range, read through the tiers like every typed query.

use crate::Result;
use crate::cells::{Part, plan};
use crate::files::Table;
use crate::store::RollupStore;
use crate::tier::Tier;
use arrow::array::{Array, BinaryArray, StringArray, TimestampMillisecondArray, UInt64Array};
use cellpilot_core::latency;
use cellpilot_core::schema::column;
use cellpilot_core::schema::rollup_col;

/// Which rows count (an SLO's `selector`); `None` matches everything.
pub use cellpilot_core::config::Selector;

/// What a selection saw over a range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Successful requests slower than the threshold asked for (failures count against
    /// availability, not latency). Exact to bucket precision, but on rows from before schema
    /// version 2, which assume every failure was slow.
    pub slow: u64,
}

/// Counts of `sel` over `[from_ms, to_ms)`; `slow_above_us` asks for the slow count too.
pub fn counts(
    store: &RollupStore,
    sel: &Selector,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
    slow_above_us: Option<u64>,
) -> Result<Counts> {
    if from_ms >= to_ms {
        return Ok(Counts::default());
    }
    let parts = plan(from_ms, to_ms, now_ms - store.retention_ms(Tier::Fine));
    counts_from(store, sel, &parts, slow_above_us)
}

/// Like [`counts`] over explicit parts.
pub fn counts_from(store: &RollupStore, sel: &Selector, parts: &[Part], slow_above_us: Option<u64>) -> Result<Counts> {
    let mut out = Counts::default();
    let cols: &[usize] = if slow_above_us.is_some() {
        &[0, 1, 2, 3, 4, 5, 6, rollup_col::LATENCY_HIST, rollup_col::MAX_US, rollup_col::ERROR_LATENCY_HIST]
    } else {
        &[0, 1, 2, 3, 4, 5, 6]
    };
    for part in parts {
        for b in store.scan(Table::Rollups, part.tier, part.from_ms, part.to_ms, Some(cols))? {
            let (starts, ends) =
                (column::<TimestampMillisecondArray>(&b, 0)?, column::<TimestampMillisecondArray>(&b, 1)?);
            let (cell, service, route) =
                (column::<StringArray>(&b, 2)?, column::<StringArray>(&b, 3)?, column::<StringArray>(&b, 4)?);
            let (req, err) = (column::<UInt64Array>(&b, 5)?, column::<UInt64Array>(&b, 6)?);
            let hist = match slow_above_us {
                Some(_) => {
                    Some((column::<BinaryArray>(&b, 7)?, column::<UInt64Array>(&b, 8)?, column::<BinaryArray>(&b, 9)?))
                }
                None => None,
            };
            let keep =
                |want: &Option<String>, col: &StringArray, i: usize| want.as_deref().is_none_or(|w| w == col.value(i));
            for i in 0..b.num_rows() {
                let (s, e) = (starts.value(i), ends.value(i));
                let inside = part.holds(s, e);
                if !(inside && keep(&sel.cell, cell, i) && keep(&sel.service, service, i) && keep(&sel.route, route, i))
                {
                    continue;
                }
                out.requests = out.requests.saturating_add(req.value(i));
                out.errors = out.errors.saturating_add(err.value(i));
                if let (Some((h, max, failed)), Some(threshold)) = (hist, slow_above_us) {
                    let failed = (!failed.is_null(i)).then(|| failed.value(i));
                    let slow = latency::slow_successes(h.value(i), failed, err.value(i), threshold, max.value(i))?;
                    out.slow = out.slow.saturating_add(slow);
                }
            }
        }
    }
    Ok(out)
}
