//! `cellpilot bench query`: typed per-cell queries over generated history, each against a
//! baseline plan in the same run, and WAL-on vs WAL-off ingest throughput.
//!
//! History: 1,000 series (10 cells × 10 services × 10 routes), the 10 s tier for the last 24 h,
//! the 5 min and 1 h tiers for 30 days, written by `cellpilot generate` into a temp data dir.
//! - (a) per-cell requests, errors and P99.9 over 24 h through the typed path (tiers mixed),
//!   baseline: the same from the 10 s tier alone;
//! - (b) per-cell totals over 30 days through the typed path, baseline: the 5 min tier alone.

use super::ingest::{SPANS_PER_REQUEST, request};
use super::median;
use crate::generate::{self, Plan};
use cellpilot_core::auth::{Authenticator, Principal};
use cellpilot_core::clock::{Clock, SharedClock, SystemClock, TestClock};
use cellpilot_core::config::{FsyncPolicy, IngestConfig};
use cellpilot_core::metrics::Metrics;
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::Ingest;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings, SharedAggregator};
use cellpilot_ingest::pipeline::{IngestParts, Traces};
use cellpilot_ingest::sequencer::{Replayed, WalSettings};
use cellpilot_query::cells::{Measures, Part, cells, cells_from, totals};
use cellpilot_query::tier::{DAY_MS, HOUR_MS, Tier};
use cellpilot_query::{RollupStore, StoreSettings};
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::LogNormal;
use std::sync::Arc;
use std::time::Duration;

/// Median of `runs` timed calls of `f`, in ms.
pub(super) fn time_ms<T>(runs: usize, mut f: impl FnMut() -> cellpilot_query::Result<T>) -> anyhow::Result<f64> {
    let mut xs = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = cellpilot_core::clock::monotonic();
        std::hint::black_box(f()?);
        xs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&mut xs))
}

/// Passes over the requests per pipeline run: about a second of work, so opening the WAL and
/// starting its threads do not weigh on the ratio as they would on a 60 ms run.
const PIPELINE_PASSES: usize = 10;

/// Ingest throughput (spans/s) through the whole pipeline, with or without the WAL.
async fn pipeline_rate(requests: &[Vec<u8>], now_ns: i64, wal: Option<&std::path::Path>) -> anyhow::Result<f64> {
    let spec = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
    let agg =
        SharedAggregator::new(Aggregator::new(AggregatorSettings { spec, max_series: 100_000, max_cells: 100_000 }));
    let clock: SharedClock = Arc::new(TestClock::new(now_ns));
    let wal = wal.map(|dir| (WalSettings::new(dir, FsyncPolicy::Batch, 64 << 30), Replayed::default()));
    let parts = IngestParts {
        aggregator: agg,
        auth: Authenticator::default(),
        metrics: Metrics::new(),
        clock,
        wal,
        watermark: Arc::new(|| i64::MIN),
        cutovers: None,
    };
    let ingest = Arc::new(Ingest::new(&IngestConfig::default(), parts)?);
    let requests = Arc::new(requests.to_vec());
    let t = cellpilot_core::clock::monotonic();
    let mut tasks = tokio::task::JoinSet::new();
    // Several concurrent exporters, as collectors would be, on the receivers' protobuf path.
    let workers = 8;
    for w in 0..workers {
        let (ingest, requests) = (ingest.clone(), requests.clone());
        tasks.spawn(async move {
            for _ in 0..PIPELINE_PASSES {
                for raw in requests.iter().skip(w).step_by(workers) {
                    let body = prost::bytes::Bytes::copy_from_slice(raw);
                    ingest.prescan::<Traces>(&body, cellpilot_ingest::decode::Encoding::Protobuf)?;
                    ingest.export_protobuf::<Traces>(body, &Principal::Anonymous).await?;
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((requests.len() * SPANS_PER_REQUEST * PIPELINE_PASSES) as f64 / t.elapsed().as_secs_f64())
}

/// Runs the benchmark and prints the figures.
pub fn run(json: bool, runs: usize) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let dir = tempfile::tempdir()?;
    let now = SystemClock.now_ms();
    let plan = Plan {
        incidents: vec![generate::Incident::parse("cell-03@6h+20m:0.2", now)?],
        seed: 11,
        ..Plan::ending_before(Arc::new(cellpilot_query::storage::Storage::local(dir.path())), now)
    };
    let t = cellpilot_core::clock::monotonic();
    let g = generate::run(&plan)?;
    let generate_s = t.elapsed().as_secs_f64();
    let store = RollupStore::open(StoreSettings {
        storage: plan.storage.clone(),
        fine_ms: 10_000,
        lateness_ms: 30_000,
        retention_ms: [48 * HOUR_MS, 30 * DAY_MS, 400 * DAY_MS],
    })?;

    let (from_a, to_a) = (now - DAY_MS, now);
    let p999_24h = time_ms(runs, || cells(&store, from_a, to_a, now))?;
    let fine = [Part { tier: Tier::Fine, from_ms: from_a, to_ms: to_a, inside: false }];
    let p999_24h_finest = time_ms(runs, || cells_from(&store, from_a, to_a, &fine, Measures::WithLatency))?;
    let (from_b, to_b) = (now - 30 * DAY_MS, now);
    let totals_30d = time_ms(runs, || totals(&store, from_b, to_b, now))?;
    let five = [Part { tier: Tier::FiveMin, from_ms: from_b, to_ms: to_b, inside: false }];
    let totals_30d_5m = time_ms(runs, || cells_from(&store, from_b, to_b, &five, Measures::Totals))?;
    // Both plans give the same answer for the whole-window part of the range.
    let typed = cells(&store, from_a, to_a, now)?;
    let finest = cells_from(&store, from_a, to_a, &fine, Measures::WithLatency)?;
    anyhow::ensure!(typed == finest, "the typed plan and the finest tier disagree over 24 h");

    // WAL on vs off, same requests, same run.
    let mut rng = StdRng::seed_from_u64(7);
    let body = LogNormal::new((20_000f64).ln(), 0.5)?;
    let now_ns: i64 = 1_800_000_000_000_000_000 + 9_999_000_000;
    let requests: Vec<Vec<u8>> =
        (0..200).map(|_| request(&mut rng, &body, now_ns, 35_000_000_000).encode_to_vec()).collect();
    let rt = tokio::runtime::Runtime::new()?;
    let mut on = Vec::new();
    let mut off = Vec::new();
    for _ in 0..runs {
        let wal_dir = tempfile::tempdir()?;
        off.push(rt.block_on(pipeline_rate(&requests, now_ns, None))?);
        on.push(rt.block_on(pipeline_rate(&requests, now_ns, Some(wal_dir.path())))?);
    }
    let (on, off) = (median(&mut on), median(&mut off));
    let wal_ratio = on / off;

    let round = |x: f64| (x * 100.0).round() / 100.0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "query",
                "p999_24h_ms": round(p999_24h),
                "p999_24h_finest_ms": round(p999_24h_finest),
                "totals_30d_ms": round(totals_30d),
                "totals_30d_5m_ms": round(totals_30d_5m),
                "wal_ratio": (wal_ratio * 1000.0).round() / 1000.0,
                "wal_on_spans_per_sec": on.round(),
                "wal_off_spans_per_sec": off.round(),
                "series": 1000,
                "generated_requests": g.requests,
                "rows": {"10s": g.fine_rows, "5m": g.five_min_rows, "1h": g.hour_rows},
                "generate_s": round(generate_s),
                "runs": runs,
            })
        );
    } else {
        println!(
            "(a) per-cell P99.9 over 24 h, typed:     {p999_24h:>9.1} ms   (10 s tier alone: {p999_24h_finest:.1} ms)"
        );
        println!(
            "(b) per-cell totals over 30 d, typed:     {totals_30d:>9.1} ms   (5 min tier alone: {totals_30d_5m:.1} ms)"
        );
        println!("WAL on / off ingest:                      {wal_ratio:>9.3}     ({on:.0} vs {off:.0} spans/s)");
        println!(
            "history: {} rows 10 s, {} rows 5 min, {} rows 1 h, generated in {generate_s:.1} s",
            g.fine_rows, g.five_min_rows, g.hour_rows
        );
    }
    Ok(())
}
