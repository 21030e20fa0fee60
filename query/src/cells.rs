//! Per-cell request and error totals with latency quantiles merged from histograms (never
//! averaged), over the windows overlapping a time range.

use crate::files::Table;
use crate::store::{Piece, RollupStore};
use crate::tier::{FIVE_MIN_MS, HOUR_MS, Tier};
use crate::{Error, Result};
use arrow::array::{BinaryArray, BooleanArray, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::{self, Quantiles, SparseHistogram};
use cellpilot_core::schema::{column, rollup_col};
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};

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
        cellpilot_core::error_rate(self.errors, self.requests)
    }
}

struct Acc {
    requests: u64,
    errors: u64,
    hist: Histogram<u64>,
    exact: bool,
}

impl Default for Acc {
    fn default() -> Self {
        Acc { requests: 0, errors: 0, hist: latency::new_histogram(), exact: true }
    }
}

/// One cell's sums over one window of a file.
#[derive(Default)]
struct FileCell {
    requests: u64,
    errors: u64,
    hist: SparseHistogram,
    exact: bool,
}

/// One file's sums per cell, or per window and cell: what a range reads instead of the file's
/// rows (a file inside the range as a whole, an edge file by the windows the range holds).
struct FileSums {
    cells: Vec<String>,
    /// (window start, window end, index into `cells`, sums), by window and cell; the window is
    /// `(0, 0)` in sums over the whole file.
    sums: Vec<(i64, i64, usize, FileCell)>,
}

impl FileSums {
    fn of(batches: &[RecordBatch], with_latency: bool, by_window: bool) -> Result<(Self, usize)> {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut sums: BTreeMap<(i64, i64, usize), FileCell> = BTreeMap::new();
        for batch in batches {
            each_row(batch, with_latency, |r| {
                let next = index.len();
                let c = match index.get(r.cell) {
                    Some(&c) => c,
                    None => *index.entry(r.cell.to_string()).or_insert(next),
                };
                let window = if by_window { (r.start, r.end) } else { (0, 0) };
                let f = sums
                    .entry((window.0, window.1, c))
                    .or_insert_with(|| FileCell { exact: true, ..Default::default() });
                f.requests = f.requests.saturating_add(r.requests);
                f.errors = f.errors.saturating_add(r.errors);
                if let Some((hist, exact)) = r.latency {
                    f.exact &= exact;
                    let h = &mut f.hist;
                    latency::for_each_bucket(hist, |v, n| h.record_n(v, n))?;
                }
                Ok(())
            })?;
        }
        let mut cells = vec![String::new(); index.len()];
        for (name, c) in index {
            cells[c] = name;
        }
        let bytes = cells.iter().map(|c| c.len() + 24).sum::<usize>()
            + sums.values().map(|f| 40 + std::mem::size_of::<FileCell>() + f.hist.heap_bytes()).sum::<usize>();
        let sums = sums.into_iter().map(|((s, e, c), f)| (s, e, c, f)).collect();
        Ok((FileSums { cells, sums }, bytes))
    }
}

/// One row of a whole-schema rollups batch, as the per-cell queries read it.
struct Row<'a> {
    start: i64,
    end: i64,
    cell: &'a str,
    requests: u64,
    errors: u64,
    /// The serialized latency histogram and its exactness, when read.
    latency: Option<(&'a [u8], bool)>,
}

/// Calls `f` with every row of `batch`.
fn each_row(batch: &RecordBatch, with_latency: bool, mut f: impl FnMut(Row<'_>) -> Result<()>) -> Result<()> {
    let starts = column::<TimestampMillisecondArray>(batch, rollup_col::WINDOW_START)?;
    let ends = column::<TimestampMillisecondArray>(batch, rollup_col::WINDOW_END)?;
    let cells = column::<StringArray>(batch, rollup_col::CELL)?;
    let requests = column::<UInt64Array>(batch, rollup_col::REQUESTS)?;
    let errors = column::<UInt64Array>(batch, rollup_col::ERRORS)?;
    let latency = if with_latency {
        Some((
            column::<BinaryArray>(batch, rollup_col::LATENCY_HIST)?,
            column::<BooleanArray>(batch, rollup_col::LATENCY_EXACT)?,
        ))
    } else {
        None
    };
    for row in 0..batch.num_rows() {
        f(Row {
            start: starts.value(row),
            end: ends.value(row),
            cell: cells.value(row),
            requests: requests.value(row),
            errors: errors.value(row),
            latency: latency.map(|(h, e)| (h.value(row), e.value(row))),
        })?;
    }
    Ok(())
}

/// Adds to `cell`'s accumulator, made on first use (a known cell's name is not copied).
fn add_to(acc: &mut BTreeMap<String, Acc>, cell: &str, f: impl FnOnce(&mut Acc) -> Result<()>) -> Result<()> {
    let a = match acc.get_mut(cell) {
        Some(a) => a,
        None => acc.entry(cell.to_string()).or_default(),
    };
    f(a)
}

/// How a part of a range is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Tier read.
    pub tier: Tier,
    /// Start, unix ms.
    pub from_ms: i64,
    /// End, unix ms.
    pub to_ms: i64,
    /// Whole windows inside the part only (coarse interiors), or every window overlapping it
    /// (the outer edges, as with any range query).
    pub inside: bool,
}

impl Part {
    /// Whether the window `[start_ms, end_ms)` belongs to this part.
    pub fn holds(&self, start_ms: i64, end_ms: i64) -> bool {
        if self.inside {
            start_ms >= self.from_ms && end_ms <= self.to_ms
        } else {
            start_ms < self.to_ms && end_ms > self.from_ms
        }
    }
}

fn floor(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

fn ceil(t: i64, step: i64) -> i64 {
    floor(t + step - 1, step)
}

/// Splits `[from, to)` so each part reads the coarsest tier that covers it exactly: whole hours
/// from the hourly tier, whole 5-minute buckets from the 5-minute tier, the edges from the finest
/// tier (or from 5-minute windows once the finest tier has expired there). Parts never share a
/// window, so nothing is counted twice.
pub fn plan(from_ms: i64, to_ms: i64, fine_horizon_ms: i64) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut edges = Vec::new();
    let (h0, h1) = (ceil(from_ms, HOUR_MS), floor(to_ms, HOUR_MS));
    if h1 > h0 {
        parts.push(Part { tier: Tier::Hour, from_ms: h0, to_ms: h1, inside: true });
        edges.extend([(from_ms, h0), (h1, to_ms)]);
    } else {
        edges.push((from_ms, to_ms));
    }
    for (a, b) in edges.into_iter().filter(|(a, b)| a < b) {
        let (m0, m1) = (ceil(a, FIVE_MIN_MS), floor(b, FIVE_MIN_MS));
        let fine = if a >= fine_horizon_ms { Tier::Fine } else { Tier::FiveMin };
        if m1 > m0 {
            parts.push(Part { tier: Tier::FiveMin, from_ms: m0, to_ms: m1, inside: true });
            for (x, y) in [(a, m0), (m1, b)] {
                if x < y {
                    parts.push(Part { tier: fine, from_ms: x, to_ms: y, inside: false });
                }
            }
        } else {
            parts.push(Part { tier: fine, from_ms: a, to_ms: b, inside: false });
        }
    }
    parts
}

/// What a per-cell query computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measures {
    /// Requests, errors and merged latency quantiles.
    WithLatency,
    /// Requests and errors only (no histogram is read).
    Totals,
}

/// Every cell with requests in windows overlapping `[from_ms, to_ms)`, sorted by name, read
/// through the tiers as [`plan`] splits the range.
pub fn cells(store: &RollupStore, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<CellStats>> {
    let parts = plan(from_ms, to_ms, now_ms - store.retention_ms(Tier::Fine));
    cells_from(store, from_ms, to_ms, &parts, Measures::WithLatency)
}

/// Per-cell requests and errors only, for long ranges (SLO periods); quantiles are left zero.
pub fn totals(store: &RollupStore, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<CellStats>> {
    let parts = plan(from_ms, to_ms, now_ms - store.retention_ms(Tier::Fine));
    cells_from(store, from_ms, to_ms, &parts, Measures::Totals)
}

/// Like [`cells`], reading the given parts (benchmarks compare plans).
pub fn cells_from(
    store: &RollupStore,
    from_ms: i64,
    to_ms: i64,
    parts: &[Part],
    measures: Measures,
) -> Result<Vec<CellStats>> {
    let with_latency = measures == Measures::WithLatency;
    if from_ms >= to_ms {
        return Err(Error::BadRequest(format!("`from` ({from_ms}) must be before `to` ({to_ms})")));
    }
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    let (whole, edge) = match measures {
        Measures::WithLatency => ("cells:latency", "cells:latency:windows"),
        Measures::Totals => ("cells:totals", "cells:totals:windows"),
    };
    for part in parts {
        // Files come as their per-cell sums (whole files) or per-window, per-cell sums (edge
        // files), derived once per file and kept: a range touches a few numbers and a small
        // histogram per cell and file, or per window, cell and file, not the rows.
        let pieces = store.scan_derived_edges(
            Table::Rollups,
            part.tier,
            (part.from_ms, part.to_ms),
            (whole, |b: &[RecordBatch]| FileSums::of(b, with_latency, false)),
            (edge, |b: &[RecordBatch]| FileSums::of(b, with_latency, true)),
        )?;
        for piece in pieces {
            let (file, whole) = match piece {
                Piece::Rows(batches) => {
                    for batch in &batches {
                        each_row(batch, with_latency, |r| {
                            if !part.holds(r.start, r.end) {
                                return Ok(());
                            }
                            add_to(&mut acc, r.cell, |a| {
                                a.requests = a.requests.saturating_add(r.requests);
                                a.errors = a.errors.saturating_add(r.errors);
                                if let Some((hist, exact)) = r.latency {
                                    a.exact &= exact;
                                    latency::add_serialized(hist, &mut a.hist)?;
                                }
                                Ok(())
                            })
                        })?;
                    }
                    continue;
                }
                Piece::Derived(file) => (file, true),
                Piece::Edge(file) => (file, false),
            };
            for (start, end, c, f) in &file.sums {
                if !whole && !part.holds(*start, *end) {
                    continue;
                }
                add_to(&mut acc, &file.cells[*c], |a| {
                    a.requests = a.requests.saturating_add(f.requests);
                    a.errors = a.errors.saturating_add(f.errors);
                    a.exact &= f.exact;
                    if with_latency {
                        f.hist.add_to(&mut a.hist);
                    }
                    Ok(())
                })?;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_use_the_coarsest_exact_tier() {
        let h = HOUR_MS;
        let m = FIVE_MIN_MS;
        let from = 10 * h + 2 * m + 7_000;
        let to = 14 * h + 3 * m + 1_000;
        let parts = plan(from, to, 0);
        assert_eq!(
            parts,
            vec![
                Part { tier: Tier::Hour, from_ms: 11 * h, to_ms: 14 * h, inside: true },
                Part { tier: Tier::FiveMin, from_ms: 10 * h + 3 * m, to_ms: 11 * h, inside: true },
                Part { tier: Tier::Fine, from_ms: from, to_ms: 10 * h + 3 * m, inside: false },
                Part { tier: Tier::FiveMin, from_ms: 14 * h, to_ms: 14 * h + 3 * m, inside: true },
                Part { tier: Tier::Fine, from_ms: 14 * h + 3 * m, to_ms: to, inside: false },
            ]
        );
        // Where the finest tier has expired, edges come from 5-minute windows.
        assert!(plan(from, to, i64::MAX).iter().all(|p| p.tier != Tier::Fine));
        // A short range is all finest tier.
        assert_eq!(
            plan(from, from + 60_000, 0),
            vec![Part { tier: Tier::Fine, from_ms: from, to_ms: from + 60_000, inside: false }]
        );
    }
}

/// One route of a cell over a range.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteStats {
    /// Service.
    pub service: String,
    /// Route.
    pub route: String,
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// Merged latency quantiles.
    pub quantiles: Quantiles,
}

impl RouteStats {
    /// errors / requests (0 without requests).
    pub fn error_rate(&self) -> f64 {
        cellpilot_core::error_rate(self.errors, self.requests)
    }
}

/// Every service × route of `cell` over `[from_ms, to_ms)`, busiest first.
pub fn routes(store: &RollupStore, cell: &str, from_ms: i64, to_ms: i64, now_ms: i64) -> Result<Vec<RouteStats>> {
    let parts = plan(from_ms, to_ms, now_ms - store.retention_ms(Tier::Fine));
    let mut acc: BTreeMap<(String, String), (u64, u64, Histogram<u64>)> = BTreeMap::new();
    for part in &parts {
        for b in store.scan(Table::Rollups, part.tier, part.from_ms, part.to_ms, Some(&[0, 1, 2, 3, 4, 5, 6, 7]))? {
            let (starts, ends) =
                (column::<TimestampMillisecondArray>(&b, 0)?, column::<TimestampMillisecondArray>(&b, 1)?);
            let (cells, services, route) =
                (column::<StringArray>(&b, 2)?, column::<StringArray>(&b, 3)?, column::<StringArray>(&b, 4)?);
            let (req, err) = (column::<UInt64Array>(&b, 5)?, column::<UInt64Array>(&b, 6)?);
            let hist = column::<BinaryArray>(&b, 7)?;
            for i in 0..b.num_rows() {
                let (s, e) = (starts.value(i), ends.value(i));
                let wanted = part.holds(s, e);
                if !wanted || cells.value(i) != cell {
                    continue;
                }
                let a = acc
                    .entry((services.value(i).to_string(), route.value(i).to_string()))
                    .or_insert_with(|| (0, 0, latency::new_histogram()));
                a.0 = a.0.saturating_add(req.value(i));
                a.1 = a.1.saturating_add(err.value(i));
                latency::add_serialized(hist.value(i), &mut a.2)?;
            }
        }
    }
    let mut out: Vec<RouteStats> = acc
        .into_iter()
        .map(|((service, route), (requests, errors, h))| RouteStats {
            service,
            route,
            requests,
            errors,
            quantiles: Quantiles::of(&h),
        })
        .collect();
    out.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.route.cmp(&b.route)));
    Ok(out)
}
