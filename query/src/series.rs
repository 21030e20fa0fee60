//! Time series of requests, errors and latency quantiles for a cell / service / route selection,
//! bucketed by a step; dimensions left out are merged.

use crate::files::Table;
use crate::store::RollupStore;
use crate::tier::{FIVE_MIN_MS, HOUR_MS, Tier};
use crate::{Error, Result};
use arrow::array::{StringArray, TimestampMillisecondArray, UInt64Array};
use cellpilot_core::latency::{self, Quantiles};
use cellpilot_core::schema::{RollupColumns, column};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Which rows a series covers; `None` merges that dimension.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Cell.
    pub cell: Option<String>,
    /// Service.
    pub service: Option<String>,
    /// Route.
    pub route: Option<String>,
}

/// One point of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Bucket start, unix ms.
    pub t_ms: i64,
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Merged latency quantiles.
    pub quantiles: Quantiles,
}

impl Point {
    /// errors / requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        cellpilot_core::error_rate(self.errors, self.requests)
    }
}

/// Most points a series returns (API ranges are bounded to it already).
pub use cellpilot_core::range::MAX_POINTS;

/// The tier whose windows fit `step` (which must be a multiple of the tier's width).
fn tier_for(step_ms: i64, fine_ms: i64) -> Tier {
    if step_ms % HOUR_MS == 0 {
        Tier::Hour
    } else if step_ms % FIVE_MIN_MS == 0 {
        Tier::FiveMin
    } else {
        let _ = fine_ms;
        Tier::Fine
    }
}

/// Points of the selection over `[from_ms, to_ms)` every `step_ms` (a multiple of the finest window).
pub fn series(store: &RollupStore, sel: &Selection, from_ms: i64, to_ms: i64, step_ms: i64) -> Result<Vec<Point>> {
    let fine = store.fine_ms();
    if step_ms <= 0 || step_ms % fine != 0 {
        return Err(Error::BadRequest(format!("`step` must be a positive multiple of the {fine} ms window")));
    }
    if (to_ms - from_ms) / step_ms > MAX_POINTS {
        return Err(Error::BadRequest(format!("more than {MAX_POINTS} points: use a larger `step`")));
    }
    let tier = tier_for(step_ms, fine);
    let mut buckets: BTreeMap<i64, (u64, u64, Histogram<u64>)> = BTreeMap::new();
    for b in store.scan(Table::Rollups, tier, from_ms, to_ms, None)? {
        let RollupColumns { start, cell, service, route, requests: req, errors: err, hist, .. } =
            RollupColumns::of(&b)?;
        let keep =
            |want: &Option<String>, col: &StringArray, i: usize| want.as_deref().is_none_or(|w| w == col.value(i));
        for i in 0..b.num_rows() {
            if !(keep(&sel.cell, cell, i) && keep(&sel.service, service, i) && keep(&sel.route, route, i)) {
                continue;
            }
            let t = start.value(i) - start.value(i).rem_euclid(step_ms);
            let e = buckets.entry(t).or_insert_with(|| (0, 0, latency::new_histogram()));
            e.0 = e.0.saturating_add(req.value(i));
            e.1 = e.1.saturating_add(err.value(i));
            latency::add_serialized(hist.value(i), &mut e.2)?;
        }
    }
    Ok(buckets
        .into_iter()
        .map(|(t_ms, (requests, errors, h))| Point { t_ms, requests, errors, quantiles: Quantiles::of(&h) })
        .collect())
}

/// Requests per `step` bucket of every cell over `[from_ms, to_ms)`, from the finest tier, in one
/// pass (no histogram is read).
pub fn requests_per_cell(
    store: &RollupStore,
    from_ms: i64,
    to_ms: i64,
    step_ms: i64,
) -> Result<BTreeMap<String, Vec<(i64, u64)>>> {
    let step = step_ms.max(1);
    let mut acc: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
    for b in store.scan(Table::Rollups, Tier::Fine, from_ms, to_ms, Some(&[0, 2, 5]))? {
        let start = column::<TimestampMillisecondArray>(&b, 0)?;
        let cell = column::<StringArray>(&b, 1)?;
        let req = column::<UInt64Array>(&b, 2)?;
        for i in 0..b.num_rows() {
            let t = start.value(i) - start.value(i).rem_euclid(step);
            let c = cell.value(i);
            let m = match acc.get_mut(c) {
                Some(m) => m,
                None => acc.entry(c.to_string()).or_default(),
            };
            {
                let e = m.entry(t).or_default();
                *e = e.saturating_add(req.value(i));
            }
        }
    }
    // Minutes with no traffic are zeros, so sparklines keep their time axis.
    let first = from_ms - from_ms.rem_euclid(step);
    Ok(acc
        .into_iter()
        .map(|(c, m)| {
            let mut v = Vec::new();
            let mut t = first;
            while t < to_ms {
                v.push((t, m.get(&t).copied().unwrap_or(0)));
                t += step;
            }
            (c, v)
        })
        .collect())
}
