//! `cellpilot generate`: synthetic history written straight into every Parquet tier, for
//! benchmarks, tests and demos (live OTLP for a closed window is rejected by design).
//!
//! Files follow the store's bucket layout exactly: the finest tier for the last `fine_hours`
//! (one file per 5 minutes), the 5-minute tier for complete hours, the hourly tier for complete
//! days. Where tiers overlap, the coarser rows are the histogram-merge of the finer ones, as live
//! data would be; older 5-minute rows are drawn directly.

use anyhow::{Context, bail};
use arrow::record_batch::RecordBatch;
use cellpilot_core::latency::SparseHistogram;
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};
use cellpilot_query::files::{self, Table};
use cellpilot_query::rollup;
use cellpilot_query::storage::Storage;
use cellpilot_query::tier::{DAY_MS, FIVE_MIN_MS, HOUR_MS, Tier};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::path::PathBuf;
use std::sync::Arc;

/// An error burst on one cell: `CELL@AGO+DURATION:RATE`, e.g. `cell-03@2h+10m:0.2`.
#[derive(Debug, Clone)]
pub struct Incident {
    cell: String,
    from_ms: i64,
    to_ms: i64,
    error_rate: f64,
}

impl Incident {
    /// Parses the spec relative to `now_ms`.
    pub fn parse(spec: &str, now_ms: i64) -> anyhow::Result<Self> {
        let bad = || format!("--incident `{spec}`: expected CELL@AGO+DURATION:RATE, e.g. cell-03@2h+10m:0.2");
        let (cell, rest) = spec.split_once('@').with_context(bad)?;
        let (when, rate) = rest.split_once(':').with_context(bad)?;
        let (ago, dur) = when.split_once('+').with_context(bad)?;
        let ago = humantime::parse_duration(ago).with_context(bad)?;
        let dur = humantime::parse_duration(dur).with_context(bad)?;
        let error_rate: f64 = rate.parse().ok().with_context(bad)?;
        if !(0.0..=1.0).contains(&error_rate) {
            bail!("--incident `{spec}`: the rate must be within 0..1");
        }
        let from_ms = now_ms - ago.as_millis() as i64;
        Ok(Self { cell: cell.to_string(), from_ms, to_ms: from_ms + dur.as_millis() as i64, error_rate })
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where to write the tiers.
    pub storage: Arc<Storage>,
    /// Days of history.
    pub days: u32,
    /// Cells.
    pub cells: usize,
    /// Number of the first cell (`cell-NN`), so several writers can hold disjoint cells.
    pub first_cell: usize,
    /// Services per cell.
    pub services: usize,
    /// Routes per service.
    pub routes: usize,
    /// Requests per second per series.
    pub rps: f64,
    /// Hours of finest-tier (10 s) history.
    pub fine_hours: u32,
    /// Error bursts to write into the history.
    pub incidents: Vec<Incident>,
    /// Width of the finest window.
    pub fine_ms: i64,
    /// Generated history ends here (a 5-minute boundary).
    pub end_ms: i64,
    /// Seed of the random numbers, so a plan always writes the same rows.
    pub seed: u64,
}

impl Plan {
    /// 30 days for 10 cells × 10 services × 10 routes at 1 request/s per series, the last 24 h
    /// in the finest tier, no incident, ending at the last complete 5-minute bucket a minute
    /// before `now_ms` (live ingest owns the windows from there on).
    pub fn ending_before(storage: Arc<Storage>, now_ms: i64) -> Self {
        let end = now_ms - 60_000;
        Plan {
            storage,
            days: 30,
            cells: 10,
            first_cell: 0,
            services: 10,
            routes: 10,
            rps: 1.0,
            fine_hours: 24,
            incidents: Vec::new(),
            fine_ms: 10_000,
            end_ms: end - end.rem_euclid(FIVE_MIN_MS),
            seed: 1,
        }
    }
}

/// Where `cellpilot generate` writes: the object store at `url` as `node` (endpoint, region
/// and keys from the `AWS_*` variables), else the data directory.
pub fn storage(data_dir: Option<PathBuf>, url: Option<String>, node: &str) -> anyhow::Result<Arc<Storage>> {
    Ok(Arc::new(match (url, data_dir) {
        (Some(url), _) => Storage::s3(&cellpilot_query::storage::S3Settings { url, ..Default::default() }, node)?,
        (None, Some(dir)) => Storage::local(dir),
        (None, None) => bail!("name --data-dir or --url"),
    }))
}

/// Figures of a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Generated {
    /// Rows written to the finest tier.
    pub fine_rows: usize,
    /// Rows written to the 5-minute tier.
    pub five_min_rows: usize,
    /// Rows written to the hourly tier.
    pub hour_rows: usize,
    /// Requests in all rows.
    pub requests: u64,
}

struct Series {
    cell: String,
    service: String,
    route: String,
    latency: LogNormal<f64>,
    /// Pre-drawn 5-minute distributions, reused for old history where drawing every sample
    /// would take hours.
    templates: Vec<Template>,
}

/// One pre-drawn 5-minute distribution.
struct Template {
    /// The serialized histogram of `samples`.
    hist: Vec<u8>,
    quantiles: cellpilot_core::latency::Quantiles,
    /// In the order drawn, so the first few can stand for a window's failures.
    samples: Vec<u64>,
}

/// Pre-drawn distributions per series.
const TEMPLATES: usize = 8;

fn cell_name(i: usize) -> String {
    format!("cell-{i:02}")
}

impl Plan {
    fn series(&self, rng: &mut SmallRng) -> anyhow::Result<Vec<Series>> {
        let mut out = Vec::new();
        for c in 0..self.cells {
            for s in 0..self.services {
                for r in 0..self.routes {
                    let median_us = 12_000.0 + 3_000.0 * s as f64 + 1_500.0 * r as f64;
                    let latency = LogNormal::new(median_us.ln(), 0.5)?;
                    let n = (self.rps * 300.0).round().max(1.0) as u64;
                    let templates = (0..TEMPLATES)
                        .map(|_| {
                            let samples: Vec<u64> = (0..n).map(|_| sample(rng, &latency)).collect();
                            let mut h = SparseHistogram::default();
                            samples.iter().for_each(|&v| h.record(v));
                            let mut quantiles = h.quantiles();
                            quantiles.max_us = samples.iter().copied().max().unwrap_or(0);
                            Template { hist: h.serialize(), quantiles, samples }
                        })
                        .collect();
                    out.push(Series {
                        cell: cell_name(self.first_cell + c),
                        service: format!("service-{s:02}"),
                        route: format!("/api/v1/r{r:02}"),
                        latency,
                        templates,
                    });
                }
            }
        }
        Ok(out)
    }

    fn error_rate(&self, cell: &str, t_ms: i64) -> f64 {
        self.incidents
            .iter()
            .filter(|i| i.cell == cell && i.from_ms <= t_ms && t_ms < i.to_ms)
            .map(|i| i.error_rate)
            .fold(0.001, f64::max)
    }

    /// Requests per second of a series at `t_ms`: a daily swing of ±30 %.
    fn rate(&self, t_ms: i64) -> f64 {
        let phase = (t_ms.rem_euclid(DAY_MS) as f64 / DAY_MS as f64) * std::f64::consts::TAU;
        self.rps * (1.0 + 0.3 * phase.sin())
    }
}

/// One latency sample, µs: the series' lognormal body, 0.5 % uniformly 1–3 s.
fn sample(rng: &mut SmallRng, body: &LogNormal<f64>) -> u64 {
    if rng.random_bool(0.005) { rng.random_range(1_000_000..3_000_000) } else { body.sample(rng) as u64 }
}

/// Errors among `n` requests at rate `p`: binomial, by its normal approximation.
fn errors_of(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    let mean = n as f64 * p;
    let sd = (mean * (1.0 - p)).sqrt();
    let z: f64 = rand_distr::StandardNormal.sample(rng);
    (mean + z * sd).round().clamp(0.0, n as f64) as u64
}

/// The serialized histogram of failed requests' latencies (empty when none failed).
fn failures(samples: &[u64]) -> Vec<u8> {
    if samples.is_empty() {
        return Vec::new();
    }
    let mut h = SparseHistogram::default();
    samples.iter().for_each(|&v| h.record(v));
    h.serialize()
}

/// Old 5-minute rows from each series' pre-drawn distributions.
fn draw_templated(
    plan: &Plan,
    series: &[Series],
    rng: &mut SmallRng,
    start: i64,
    out: &mut Generated,
) -> anyhow::Result<(RecordBatch, RecordBatch)> {
    let mut rollups = RollupsBuilder::default();
    let mut errors = ErrorsByCauseBuilder::default();
    for s in series {
        let t = &s.templates[rng.random_range(0..TEMPLATES)];
        let n = t.samples.len() as u64;
        let e = errors_of(rng, n, plan.error_rate(&s.cell, start));
        let key = RowKey {
            window_start_ms: start,
            window_end_ms: start + FIVE_MIN_MS,
            cell: &s.cell,
            service: &s.service,
            route: &s.route,
        };
        // The template's first `e` samples failed.
        let error_hist = failures(&t.samples[..e as usize]);
        let v = RollupValues {
            requests: n,
            errors: e,
            hist: &t.hist,
            error_hist: Some(&error_hist),
            quantiles: t.quantiles,
            exact: true,
        };
        rollups.push(key, v);
        if e > 0 {
            errors.push(key, "5xx", e);
        }
        out.requests += n;
    }
    Ok((rollups.finish()?, errors.finish()?))
}

/// Rows of every series for windows of `width` in `[from, to)`; each window's samples drawn anew.
fn draw(
    plan: &Plan,
    series: &[Series],
    rng: &mut SmallRng,
    from: i64,
    to: i64,
    width: i64,
    out: &mut Generated,
) -> anyhow::Result<(RecordBatch, RecordBatch)> {
    let mut rollups = RollupsBuilder::default();
    let mut errors = ErrorsByCauseBuilder::default();
    let mut ws = from;
    while ws < to {
        for s in series {
            let expected = plan.rate(ws) * width as f64 / 1000.0;
            let n = (expected + rng.random_range(-0.5..0.5) * expected.sqrt()).round().max(0.0) as u64;
            let samples: Vec<u64> = (0..n).map(|_| sample(rng, &s.latency)).collect();
            let mut h = SparseHistogram::default();
            samples.iter().for_each(|&v| h.record(v));
            let max = samples.iter().copied().max().unwrap_or(0);
            let e = errors_of(rng, n, plan.error_rate(&s.cell, ws));
            let key = RowKey {
                window_start_ms: ws,
                window_end_ms: ws + width,
                cell: &s.cell,
                service: &s.service,
                route: &s.route,
            };
            let mut q = h.quantiles();
            q.max_us = max;
            // The window's first `e` samples failed.
            let error_hist = failures(&samples[..e as usize]);
            let v = RollupValues {
                requests: n,
                errors: e,
                hist: &h.serialize(),
                error_hist: Some(&error_hist),
                quantiles: q,
                exact: true,
            };
            rollups.push(key, v);
            if e > 0 {
                errors.push(key, "5xx", e);
            }
            out.requests += n;
        }
        ws += width;
    }
    Ok((rollups.finish()?, errors.finish()?))
}

fn write(plan: &Plan, tier: Tier, start: i64, rows: &RecordBatch, errs: &RecordBatch) -> anyhow::Result<()> {
    let end = start + tier.bucket_ms();
    if rows.num_rows() > 0 {
        plan.storage.write(Table::Rollups, tier, start, end, rows)?;
    }
    if errs.num_rows() > 0 {
        plan.storage.write(Table::ErrorsByCause, tier, start, end, errs)?;
    }
    Ok(())
}

fn merged(rows: &[RecordBatch], errs: &[RecordBatch], width: i64) -> anyhow::Result<(RecordBatch, RecordBatch)> {
    let r = rollup::rollups(rows, width)?.unwrap_or_else(|| RecordBatch::new_empty(files::schema(Table::Rollups)));
    let e = rollup::errors_by_cause(errs, width)?
        .unwrap_or_else(|| RecordBatch::new_empty(files::schema(Table::ErrorsByCause)));
    Ok((r, e))
}

/// Writes the plan's history; returns row counts.
pub fn run(plan: &Plan) -> anyhow::Result<Generated> {
    if plan.end_ms.rem_euclid(FIVE_MIN_MS) != 0 {
        bail!("history must end on a 5-minute boundary");
    }
    let mut rng = SmallRng::seed_from_u64(plan.seed);
    let series = plan.series(&mut rng)?;
    let mut out = Generated::default();
    let start = plan.end_ms - i64::from(plan.days) * DAY_MS;
    let start = start - start.rem_euclid(HOUR_MS);
    let fine_start = (plan.end_ms - i64::from(plan.fine_hours) * HOUR_MS).max(start);
    let fine_start = fine_start - fine_start.rem_euclid(FIVE_MIN_MS);
    let hour_end = plan.end_ms - plan.end_ms.rem_euclid(HOUR_MS);
    let day_end = plan.end_ms - plan.end_ms.rem_euclid(DAY_MS);

    // 5-minute rows per hour, from the finest rows where those exist.
    let mut day_rows: (Vec<RecordBatch>, Vec<RecordBatch>) = (Vec::new(), Vec::new());
    let mut hour = start;
    while hour < plan.end_ms {
        let hour_stop = (hour + HOUR_MS).min(plan.end_ms);
        let mut five_rows = Vec::new();
        let mut five_errs = Vec::new();
        let mut bucket = hour;
        while bucket < hour_stop {
            let (r, e) = if bucket >= fine_start {
                let (fr, fe) = draw(plan, &series, &mut rng, bucket, bucket + FIVE_MIN_MS, plan.fine_ms, &mut out)?;
                write(plan, Tier::Fine, bucket, &fr, &fe)?;
                out.fine_rows += fr.num_rows();
                merged(&[fr], &[fe], FIVE_MIN_MS)?
            } else {
                draw_templated(plan, &series, &mut rng, bucket, &mut out)?
            };
            out.five_min_rows += r.num_rows();
            five_rows.push(r);
            five_errs.push(e);
            bucket += FIVE_MIN_MS;
        }
        if hour_stop <= hour_end {
            // A complete hour: its 5-minute file, and its hourly rows for the day.
            let r = arrow::compute::concat_batches(&files::schema(Table::Rollups), &five_rows)?;
            let e = arrow::compute::concat_batches(&files::schema(Table::ErrorsByCause), &five_errs)?;
            write(plan, Tier::FiveMin, hour, &r, &e)?;
            let (hr, he) = merged(&[r], &[e], HOUR_MS)?;
            out.hour_rows += hr.num_rows();
            day_rows.0.push(hr);
            day_rows.1.push(he);
        }
        let next = hour + HOUR_MS;
        if next % DAY_MS == 0 && next <= day_end && !day_rows.0.is_empty() {
            let r = arrow::compute::concat_batches(&files::schema(Table::Rollups), &day_rows.0)?;
            let e = arrow::compute::concat_batches(&files::schema(Table::ErrorsByCause), &day_rows.1)?;
            write(plan, Tier::Hour, next - DAY_MS, &r, &e)?;
            day_rows = (Vec::new(), Vec::new());
        }
        hour = next;
    }
    Ok(out)
}
