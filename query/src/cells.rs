//! Per-cell request and error totals with latency quantiles merged from histograms (never
//! averaged), over the windows overlapping a time range.

use crate::files::Table;
use crate::store::RollupStore;
use crate::tier::{HOUR_MS, Tier};
use crate::{Error, Result};
use arrow::array::{Array, BinaryArray, BooleanArray, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::{self, Quantiles};
use cellpilot_core::schema::rollup_col;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// One cell's numbers over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct CellStats {
    /// Cell name.
    pub cell: String,
    /// Requests in the range.
    pub requests: u64,
    /// Errors in the range.
    pub errors: u64,
    /// Merged latency quantiles.
    pub quantiles: Quantiles,
    /// False when some input was a bucketed histogram (quantiles are bucket-limited).
    pub latency_exact: bool,
}

impl CellStats {
    /// errors / requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }
}

struct Acc {
    requests: u64,
    errors: u64,
    hist: Histogram<u64>,
    exact: bool,
}

fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T> {
    batch
        .column(i)
        .as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| Error::Internal(format!("rollups column {i} has an unexpected type")))
}

/// The tier a typed query over `range_ms` reads: the finest that keeps the row count small.
pub fn tier_for(range_ms: i64) -> Tier {
    if range_ms <= 6 * HOUR_MS {
        Tier::Fine
    } else if range_ms <= 7 * 24 * HOUR_MS {
        Tier::FiveMin
    } else {
        Tier::Hour
    }
}

/// Every cell with requests in windows overlapping `[from_ms, to_ms)`, sorted by name.
pub fn cells(store: &RollupStore, from_ms: i64, to_ms: i64) -> Result<Vec<CellStats>> {
    if from_ms >= to_ms {
        return Err(Error::BadRequest(format!("`from` ({from_ms}) must be before `to` ({to_ms})")));
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for batch in store.scan(Table::Rollups, tier_for(to_ms - from_ms), from_ms, to_ms, None)? {
        let starts = column::<TimestampMillisecondArray>(&batch, rollup_col::WINDOW_START)?;
        let ends = column::<TimestampMillisecondArray>(&batch, rollup_col::WINDOW_END)?;
        let cells = column::<StringArray>(&batch, rollup_col::CELL)?;
        let requests = column::<UInt64Array>(&batch, rollup_col::REQUESTS)?;
        let errors = column::<UInt64Array>(&batch, rollup_col::ERRORS)?;
        let hists = column::<BinaryArray>(&batch, rollup_col::LATENCY_HIST)?;
        let exact = column::<BooleanArray>(&batch, rollup_col::LATENCY_EXACT)?;
        for row in 0..batch.num_rows() {
            if !(starts.value(row) < to_ms && ends.value(row) > from_ms) {
                continue;
            }
            let cell = cells.value(row);
            let a = match acc.get_mut(cell) {
                Some(a) => a,
                None => acc.entry(cell.to_string()).or_insert(Acc {
                    requests: 0,
                    errors: 0,
                    hist: latency::new_histogram(),
                    exact: true,
                }),
            };
            a.requests += requests.value(row);
            a.errors += errors.value(row);
            a.exact &= exact.value(row);
            latency::add_serialized(hists.value(row), &mut a.hist).map_err(Error::Internal)?;
        }
    }
    Ok(acc
        .into_iter()
        .filter(|(_, a)| a.requests > 0)
        .map(|(cell, a)| CellStats {
            cell,
            requests: a.requests,
            errors: a.errors,
            quantiles: Quantiles::of(&a.hist),
            latency_exact: a.exact,
        })
        .collect())
}
