//! Rolling rows up into coarser windows: counts summed, histograms merged (never percentiles
//! averaged), `latency_exact` true only when every input was, the failures' histogram known
//! only when every input's was.

use crate::Result;
use arrow::array::Array;
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::{self, Quantiles};
use cellpilot_core::schema::{
    ErrorsByCauseBuilder, ErrorsByCauseColumns, RollupColumns, RollupValues, RollupsBuilder, RowKey,
};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

struct Acc {
    requests: u64,
    errors: u64,
    hist: Histogram<u64>,
    max_us: u64,
    exact: bool,
    /// The failures' histogram: `None` until one has a sample.
    error_hist: Option<Histogram<u64>>,
    /// False once an input did not know its failures' histogram.
    errors_known: bool,
}

/// Merges `rollups` rows into windows of `width_ms` (aligned to the epoch).
pub fn rollups(batches: &[RecordBatch], width_ms: i64) -> Result<Option<RecordBatch>> {
    let mut groups: BTreeMap<(i64, String, String, String), Acc> = BTreeMap::new();
    for b in batches {
        let RollupColumns {
            start,
            cell,
            service,
            route,
            requests: req,
            errors: err,
            hist,
            max_us: max,
            exact,
            error_hist,
            ..
        } = RollupColumns::of(b)?;
        for i in 0..b.num_rows() {
            let ws = start.value(i) - start.value(i).rem_euclid(width_ms);
            let key = (ws, cell.value(i).to_string(), service.value(i).to_string(), route.value(i).to_string());
            let acc = groups.entry(key).or_insert_with(|| Acc {
                requests: 0,
                errors: 0,
                hist: latency::new_histogram(),
                max_us: 0,
                exact: true,
                error_hist: None,
                errors_known: true,
            });
            acc.requests = acc.requests.saturating_add(req.value(i));
            acc.errors = acc.errors.saturating_add(err.value(i));
            acc.max_us = acc.max_us.max(max.value(i));
            acc.exact &= exact.value(i);
            latency::add_serialized(hist.value(i), &mut acc.hist)?;
            if error_hist.is_null(i) {
                acc.errors_known = false;
            } else if !error_hist.value(i).is_empty() {
                latency::add_serialized(
                    error_hist.value(i),
                    acc.error_hist.get_or_insert_with(latency::new_histogram),
                )?;
            }
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    let mut out = RollupsBuilder::default();
    for ((ws, cell, service, route), acc) in &groups {
        let key = RowKey { window_start_ms: *ws, window_end_ms: ws + width_ms, cell, service, route };
        let mut q = Quantiles::of(&acc.hist);
        q.max_us = acc.max_us;
        // Empty when nothing failed; unknown when an input did not know.
        let error_hist = acc.errors_known.then(|| acc.error_hist.as_ref().map(latency::serialize).unwrap_or_default());
        let v = RollupValues {
            requests: acc.requests,
            errors: acc.errors,
            hist: &latency::serialize(&acc.hist),
            error_hist: error_hist.as_deref(),
            quantiles: q,
            exact: acc.exact,
        };
        out.push(key, v);
    }
    Ok(Some(out.finish()?))
}

/// Merges `errors_by_cause` rows into windows of `width_ms`.
pub fn errors_by_cause(batches: &[RecordBatch], width_ms: i64) -> Result<Option<RecordBatch>> {
    let mut groups: BTreeMap<(i64, String, String, String, String), u64> = BTreeMap::new();
    for b in batches {
        let ErrorsByCauseColumns { start, cell, service, route, cause, errors, .. } = ErrorsByCauseColumns::of(b)?;
        for i in 0..b.num_rows() {
            let ws = start.value(i) - start.value(i).rem_euclid(width_ms);
            let key = (
                ws,
                cell.value(i).to_string(),
                service.value(i).to_string(),
                route.value(i).to_string(),
                cause.value(i).to_string(),
            );
            {
                let e = groups.entry(key).or_default();
                *e = e.saturating_add(errors.value(i));
            }
        }
    }
    if groups.is_empty() {
        return Ok(None);
    }
    let mut out = ErrorsByCauseBuilder::default();
    for ((ws, cell, service, route, cause), n) in &groups {
        out.push(RowKey { window_start_ms: *ws, window_end_ms: ws + width_ms, cell, service, route }, cause, *n);
    }
    Ok(Some(out.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts near the 2^63 − 1 a client may send per bucket add up without overflowing: the
    /// coarse row saturates, as the aggregator does.
    #[test]
    fn counts_at_the_edges_saturate() {
        let hist = latency::serialize(&latency::new_histogram());
        let mut b = RollupsBuilder::default();
        for start in [0, 10_000] {
            let key =
                RowKey { window_start_ms: start, window_end_ms: start + 10_000, cell: "c", service: "s", route: "r" };
            let v = RollupValues {
                requests: u64::MAX - 1,
                errors: u64::MAX / 2 + 1,
                hist: &hist,
                error_hist: Some(&[]),
                quantiles: Quantiles::default(),
                exact: true,
            };
            b.push(key, v);
        }
        let rolled = rollups(&[b.finish().unwrap()], 300_000).unwrap().unwrap();
        let c = RollupColumns::of(&rolled).unwrap();
        assert_eq!((rolled.num_rows(), c.requests.value(0), c.errors.value(0)), (1, u64::MAX, u64::MAX));
    }
}
