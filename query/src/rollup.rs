//! Rolling rows up into coarser windows: counts summed, histograms merged (never percentiles
//! averaged), `latency_exact` true only when every input was.

use crate::{Error, Result};
use arrow::array::{Array, BinaryArray, BooleanArray, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::{self, Quantiles};
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupsBuilder, RowKey};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// Downcasts column `i` of `batch`.
pub(crate) fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::Internal(format!("column {i} of a stored batch has an unexpected type")))
}

struct Acc {
    requests: u64,
    errors: u64,
    hist: Histogram<u64>,
    max_us: u64,
    exact: bool,
}

/// Merges `rollups` rows into windows of `width_ms` (aligned to the epoch).
pub fn rollups(batches: &[RecordBatch], width_ms: i64) -> Result<Option<RecordBatch>> {
    let mut groups: BTreeMap<(i64, String, String, String), Acc> = BTreeMap::new();
    for b in batches {
        let start = column::<TimestampMillisecondArray>(b, 0)?;
        let (cell, service, route) =
            (column::<StringArray>(b, 2)?, column::<StringArray>(b, 3)?, column::<StringArray>(b, 4)?);
        let (req, err) = (column::<UInt64Array>(b, 5)?, column::<UInt64Array>(b, 6)?);
        let hist = column::<BinaryArray>(b, 7)?;
        let max = column::<UInt64Array>(b, 11)?;
        let exact = column::<BooleanArray>(b, 12)?;
        for i in 0..b.num_rows() {
            let ws = start.value(i) - start.value(i).rem_euclid(width_ms);
            let key = (ws, cell.value(i).to_string(), service.value(i).to_string(), route.value(i).to_string());
            let acc = groups.entry(key).or_insert_with(|| Acc {
                requests: 0,
                errors: 0,
                hist: latency::new_histogram(),
                max_us: 0,
                exact: true,
            });
            acc.requests += req.value(i);
            acc.errors += err.value(i);
            acc.max_us = acc.max_us.max(max.value(i));
            acc.exact &= exact.value(i);
            latency::add_serialized(hist.value(i), &mut acc.hist).map_err(Error::Internal)?;
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
        out.push(key, acc.requests, acc.errors, &latency::serialize(&acc.hist), q, acc.exact);
    }
    Ok(Some(out.finish()?))
}

/// Merges `errors_by_cause` rows into windows of `width_ms`.
pub fn errors_by_cause(batches: &[RecordBatch], width_ms: i64) -> Result<Option<RecordBatch>> {
    let mut groups: BTreeMap<(i64, String, String, String, String), u64> = BTreeMap::new();
    for b in batches {
        let start = column::<TimestampMillisecondArray>(b, 0)?;
        let names: Vec<&StringArray> = (2..6).map(|c| column::<StringArray>(b, c)).collect::<Result<_>>()?;
        let errors = column::<UInt64Array>(b, 6)?;
        for i in 0..b.num_rows() {
            let ws = start.value(i) - start.value(i).rem_euclid(width_ms);
            let key = (
                ws,
                names[0].value(i).to_string(),
                names[1].value(i).to_string(),
                names[2].value(i).to_string(),
                names[3].value(i).to_string(),
            );
            *groups.entry(key).or_default() += errors.value(i);
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
