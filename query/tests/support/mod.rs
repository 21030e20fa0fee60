//! Shared by the store tests: random windows for two cells with their ground truth, and a
//! check that every tier answers that truth.

#![allow(dead_code, unreachable_pub)]

use arrow::array::{Array, BinaryArray, StringArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::{self, Quantiles, SparseHistogram};
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};
use cellpilot_core::store::WindowBatches;
use cellpilot_query::RollupStore;
use cellpilot_query::files::Table;
use cellpilot_query::tier::{DAY_MS, Tier};
use rand::RngExt;
use rand::rngs::StdRng;
use std::collections::BTreeMap;

pub const FINE: i64 = 10_000;
pub const LATENESS: i64 = 30_000;
pub const T0: i64 = 1_800_000_000_000 - 1_800_000_000_000 % DAY_MS;

/// Ground truth per cell: every latency sample and the error count.
#[derive(Default)]
pub struct Truth {
    pub samples: Vec<u64>,
    pub errors: u64,
}

/// Windows `[from, to)` for two cells, with random samples; returns the batches.
pub fn windows(rng: &mut StdRng, from: i64, to: i64, truth: &mut BTreeMap<String, Truth>) -> WindowBatches {
    let mut rollups = RollupsBuilder::default();
    let mut errors = ErrorsByCauseBuilder::default();
    let mut ws = from;
    while ws < to {
        for cell in ["a", "b"] {
            let t = truth.entry(cell.to_string()).or_default();
            let mut h = SparseHistogram::default();
            let n = rng.random_range(1..6u64);
            let mut max = 0;
            let mut first = None;
            for _ in 0..n {
                let v = if rng.random_bool(0.01) {
                    rng.random_range(1_000_000..3_000_000)
                } else {
                    rng.random_range(5_000..60_000)
                };
                h.record(v);
                max = max.max(v);
                first.get_or_insert(v);
                t.samples.push(v);
            }
            let e = u64::from(rng.random_bool(0.1));
            t.errors += e;
            let key = RowKey { window_start_ms: ws, window_end_ms: ws + FINE, cell, service: "svc", route: "/r" };
            let dense = h.to_histogram();
            let mut q = Quantiles::of(&dense);
            q.max_us = max;
            // The window's first request is the one that failed.
            let mut failed = SparseHistogram::default();
            first.filter(|_| e > 0).into_iter().for_each(|v| failed.record(v));
            let failed = if e > 0 { failed.serialize() } else { Vec::new() };
            let v = RollupValues {
                requests: n,
                errors: e,
                hist: &latency::serialize(&dense),
                error_hist: Some(&failed),
                quantiles: q,
                exact: true,
            };
            rollups.push(key, v);
            if e > 0 {
                errors.push(key, "5xx", e);
            }
        }
        ws += FINE;
    }
    WindowBatches { rollups: rollups.finish().unwrap(), errors_by_cause: errors.finish().unwrap() }
}

/// (requests, errors by cause, p999) per cell from the rows of a tier.
pub fn totals(rows: &[RecordBatch], causes: &[RecordBatch]) -> BTreeMap<String, (u64, u64, u64)> {
    let mut acc: BTreeMap<String, (u64, u64, hdrhistogram::Histogram<u64>)> = BTreeMap::new();
    for b in rows {
        let cell = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        let req = b.column(5).as_any().downcast_ref::<UInt64Array>().unwrap();
        let hist = b.column(7).as_any().downcast_ref::<BinaryArray>().unwrap();
        for i in 0..b.num_rows() {
            let e = acc.entry(cell.value(i).to_string()).or_insert_with(|| (0, 0, latency::new_histogram()));
            e.0 += req.value(i);
            latency::add_serialized(hist.value(i), &mut e.2).unwrap();
        }
    }
    for b in causes {
        let cell = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
        let n = b.column(6).as_any().downcast_ref::<UInt64Array>().unwrap();
        for i in 0..b.num_rows() {
            acc.get_mut(cell.value(i)).unwrap().1 += n.value(i);
        }
    }
    acc.into_iter().map(|(c, (r, e, h))| (c, (r, e, h.value_at_quantile(0.999)))).collect()
}

pub fn nearest_rank(samples: &[u64], q: f64) -> u64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    s[((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

pub fn check(store: &RollupStore, truth: &BTreeMap<String, Truth>, from: i64, to: i64) {
    let mut per_tier = Vec::new();
    for tier in Tier::ALL {
        let rows = store.scan(Table::Rollups, tier, from, to, None).unwrap();
        let causes = store.scan(Table::ErrorsByCause, tier, from, to, None).unwrap();
        let t = totals(&rows, &causes);
        for (cell, truth) in truth {
            let (req, err, p999) = t[cell];
            assert_eq!(req, truth.samples.len() as u64, "{tier} {cell} requests");
            assert_eq!(err, truth.errors, "{tier} {cell} errors");
            let exact = nearest_rank(&truth.samples, 0.999);
            let rel = (p999 as f64 - exact as f64).abs() / exact as f64;
            assert!(rel <= 0.01, "{tier} {cell} p999 {p999} vs exact {exact}");
        }
        per_tier.push(t);
    }
    assert_eq!(per_tier[0], per_tier[1], "5m tier merges the 10s tier losslessly");
    assert_eq!(per_tier[0], per_tier[2], "1h tier merges the 5m tier losslessly");
}
