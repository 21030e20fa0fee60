//! `cellpilot bench cluster`: two ingest nodes and one query node on loopback sharing a local S3
//! server (`s3s-fs`), in this process.
//!
//! - Ingest: pre-encoded OTLP/HTTP requests (the `bench ingest` batches, timestamped now) sent
//!   to both ingest nodes at once for a few seconds, eight connections each; acknowledged spans
//!   per second per node, and the query node's count of them checked against the senders'.
//! - Query: the same generated history (1,000 series, 24 h in the 10 s tier, 2 days in all)
//!   written once into the bucket and once into a local directory; the per-cell 24 h P99.9
//!   (`bench query`'s question (a)) timed warm over each, the local one being the baseline,
//!   and once cold (a reader's first answer, fetching every file it needs from the bucket).
//! - Files: the same rows again, split by cell over 1, 2, 5 and 10 writers in an in-memory
//!   object store (warm reads do not touch the network, so this is the query node's own cost):
//!   the per-cell 24 h P99.9 against the number of files the reader lists.
//! - Series: 1,000, 2,000 and 4,000 series (10, 20, 40 cells) over two writers, 24 h each, the
//!   same question against the rows a query node holds.
//!
//! `--small` runs all of it with a few hundred series and a second of load, for the test.

use super::ingest::request;
use crate::generate::{self, Plan};
use crate::s3::LocalS3;
use cellpilot_core::clock::{Clock, SystemClock};
use cellpilot_core::config::{Config, NodeRole};
use cellpilot_query::cells::cells;
use cellpilot_query::storage::{S3Settings, Storage};
use cellpilot_query::tier::{DAY_MS, HOUR_MS};
use cellpilot_query::{RollupStore, StoreSettings};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::LogNormal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKET: &str = "rollups";
/// How much the benchmark loads and writes: [`Size::FULL`] for the figures, [`Size::SMALL`]
/// for the test that runs it end to end in a debug build.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// How long each ingest node is loaded.
    load: Duration,
    /// Days of generated history (the last `fine_hours` of them in the 10 s tier).
    days: u32,
    fine_hours: u32,
    /// Cells of the S3 vs local history and of the files sweep (100 series each).
    cells: usize,
    /// Writers the files sweep splits those cells over (each divides `cells`).
    writers: &'static [usize],
    /// Cells of each series-sweep point (over two writers, so even).
    series_cells: &'static [usize],
}

impl Size {
    /// 1,000 series over 2 days; files over 1, 2, 5, 10 writers; 1,000 to 4,000 series.
    pub const FULL: Size = Size {
        load: Duration::from_secs(5),
        days: 2,
        fine_hours: 24,
        cells: 10,
        writers: &[1, 2, 5, 10],
        series_cells: &[10, 20, 40],
    };
    /// A few seconds of everything, for correctness only.
    pub const SMALL: Size = Size {
        load: Duration::from_secs(1),
        days: 1,
        fine_hours: 1,
        cells: 2,
        writers: &[1, 2],
        series_cells: &[2, 4],
    };
}
/// Concurrent senders per ingest node.
const CONNECTIONS: usize = 8;

fn s3_settings(s3: &LocalS3, prefix: &str) -> S3Settings {
    S3Settings {
        url: format!("s3://{BUCKET}/{prefix}"),
        endpoint: s3.endpoint.clone(),
        region: "us-east-1".into(),
        access_key_id: crate::s3::ACCESS_KEY.into(),
        secret_access_key: crate::s3::SECRET_KEY.into(),
    }
}

/// A node of the benchmark's cluster: every listener on a free loopback port.
fn node_config(s3: &LocalS3, dir: &std::path::Path, id: &str, role: NodeRole) -> Config {
    let mut c = Config::default();
    c.storage.dir = dir.to_path_buf();
    let s = s3_settings(s3, "cluster");
    (c.storage.url, c.storage.endpoint, c.storage.region) = (s.url, s.endpoint, s.region);
    (c.storage.access_key_id, c.storage.secret_access_key) = (s.access_key_id, s.secret_access_key);
    c.cluster.node_id = id.into();
    c.cluster.role = role;
    c.cluster.lease_ttl = cellpilot_core::config::Dur::secs(3);
    for addr in [&mut c.ingest.grpc_listen, &mut c.ingest.http_listen, &mut c.web.listen, &mut c.control.listen] {
        *addr = "127.0.0.1:0".into();
    }
    c.xds.listen = String::new();
    c.cluster.listen = "127.0.0.1:0".into();
    c
}

/// Sends `requests` round-robin to `url` from [`CONNECTIONS`] senders for `time`; acknowledged spans.
async fn load(url: String, requests: Arc<Vec<(Vec<u8>, u64)>>, time: Duration) -> anyhow::Result<u64> {
    let acked = Arc::new(AtomicU64::new(0));
    let deadline = cellpilot_core::clock::monotonic() + time;
    let mut senders = tokio::task::JoinSet::new();
    for w in 0..CONNECTIONS {
        let (url, requests, acked) = (url.clone(), requests.clone(), acked.clone());
        senders.spawn(async move {
            let client = reqwest::Client::new();
            let mut i = w;
            while cellpilot_core::clock::monotonic() < deadline {
                let (body, spans) = &requests[i % requests.len()];
                i += CONNECTIONS;
                let resp = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await?;
                if resp.status().is_success() {
                    acked.fetch_add(*spans, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = senders.join_next().await {
        r??;
    }
    Ok(acked.load(Ordering::Relaxed))
}

/// Per-node ingest rates, and whether the query node counted every acknowledged span.
async fn ingest_rates(s3: &LocalS3, time: Duration) -> anyhow::Result<(Vec<f64>, u64, u64)> {
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let a = cellpilot_server::serve::start(node_config(s3, dirs[0].path(), "ingest-a", NodeRole::Ingest)).await?;
    let b = cellpilot_server::serve::start(node_config(s3, dirs[1].path(), "ingest-b", NodeRole::Ingest)).await?;
    let q = cellpilot_server::serve::start(node_config(s3, dirs[2].path(), "query-1", NodeRole::Query)).await?;
    let mut rng = StdRng::seed_from_u64(21);
    let body = LogNormal::new((20_000f64).ln(), 0.5)?;
    let now_ns = SystemClock.now_ms() * 1_000_000;
    // Spans end within the last 5 s of the request's encoding and the load lasts 5 s: all on
    // time for the default allowed lateness.
    let requests: Vec<(Vec<u8>, u64)> = (0..64)
        .map(|_| {
            let r: ExportTraceServiceRequest = request(&mut rng, &body, now_ns, 5_000_000_000);
            let spans = r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum();
            (r.encode_to_vec(), spans)
        })
        .collect();
    let requests = Arc::new(requests);
    let url = |r: &cellpilot_server::serve::Running| -> anyhow::Result<String> {
        let http = r.addrs.otlp_http.ok_or_else(|| anyhow::anyhow!("an ingest node without OTLP/HTTP"))?;
        Ok(format!("http://{http}/v1/traces"))
    };
    let t = cellpilot_core::clock::monotonic();
    let (ra, rb) = tokio::join!(load(url(&a)?, requests.clone(), time), load(url(&b)?, requests.clone(), time));
    let secs = t.elapsed().as_secs_f64();
    let (ra, rb) = (ra?, rb?);
    // The query node answers both nodes' open windows (heartbeats are listed every second).
    let counted = super::e2e::counted_to(q.addrs.web, ra + rb, Duration::from_secs(20)).await?;
    for node in [a, b, q] {
        node.run_until(async {}).await?;
    }
    Ok((vec![ra as f64 / secs, rb as f64 / secs], ra + rb, counted))
}

/// Median warm time of the per-cell 24 h P99.9 over `store`, in ms (a first run warms it).
fn p999_24h(store: &RollupStore, now: i64, runs: usize) -> anyhow::Result<f64> {
    cells(store, now - DAY_MS, now, now)?;
    super::query::time_ms(runs, || cells(store, now - DAY_MS, now, now))
}

fn open(storage: Arc<Storage>) -> anyhow::Result<RollupStore> {
    Ok(RollupStore::open(StoreSettings {
        storage,
        fine_ms: 10_000,
        lateness_ms: 30_000,
        retention_ms: [48 * HOUR_MS, 30 * DAY_MS, 400 * DAY_MS],
    })?)
}

/// One point of a sweep.
struct Point {
    writers: usize,
    series: usize,
    files: usize,
    ms: f64,
}

/// `cells` cells of history split by cell over `writers` writers into one in-memory store;
/// the reader's warm per-cell 24 h P99.9, and the cells it answered.
fn point(
    now: i64,
    runs: usize,
    size: &Size,
    writers: usize,
    cells_total: usize,
) -> anyhow::Result<(Point, Vec<String>)> {
    let mem: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let cells_each = cells_total / writers;
    for w in 0..writers {
        let storage = Arc::new(Storage::object(mem.clone(), "sweep", &format!("writer-{w}"))?);
        let plan = Plan {
            days: size.days,
            fine_hours: size.fine_hours,
            seed: 11 + w as u64,
            cells: cells_each,
            first_cell: w * cells_each,
            ..Plan::ending_before(storage, now)
        };
        generate::run(&plan)?;
    }
    let reader = Arc::new(Storage::object(mem, "sweep", "reader")?);
    let files = reader.list_all()?.len();
    let store = open(reader)?;
    let answered: Vec<String> = cells(&store, now - DAY_MS, now, now)?.into_iter().map(|c| c.cell).collect();
    let ms = p999_24h(&store, now, runs)?;
    Ok((Point { writers, series: cells_total * 100, files, ms }, answered))
}

/// The same history split by cell over each of the size's writers: time against files.
fn files_sweep(now: i64, runs: usize, size: &Size) -> anyhow::Result<Vec<Point>> {
    let mut out = Vec::new();
    let mut baseline = None;
    for &writers in size.writers {
        let (p, answered) = point(now, runs, size, writers, size.cells)?;
        // Every point answers the same cells from the same rows; only the files differ.
        match &baseline {
            None => baseline = Some(answered),
            Some(b) => anyhow::ensure!(*b == answered, "{writers} writers answer other cells: {answered:?}"),
        }
        out.push(p);
    }
    Ok(out)
}

/// More and more cells over two writers: time against series.
fn series_sweep(now: i64, runs: usize, size: &Size) -> anyhow::Result<Vec<Point>> {
    let mut out = Vec::new();
    let one_day = Size { days: 1, ..*size };
    for &c in size.series_cells {
        let (p, answered) = point(now, runs, &one_day, 2, c)?;
        anyhow::ensure!(answered.len() == c, "{c} cells written, {} answered", answered.len());
        out.push(p);
    }
    Ok(out)
}

fn point_json(p: &Point) -> serde_json::Value {
    let ms = (p.ms * 100.0).round() / 100.0;
    serde_json::json!({"writers": p.writers, "series": p.series, "files": p.files, "ms": ms})
}

/// Runs the benchmark and prints the figures.
pub fn run(json: bool, runs: usize, size: Size) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let s3 = LocalS3::start(BUCKET)?;
    let rt = tokio::runtime::Runtime::new()?;
    let (rates, acked, counted) = rt.block_on(ingest_rates(&s3, size.load))?;
    anyhow::ensure!(counted == acked, "the query node counted {counted} of {acked} acknowledged spans");

    let local_dir = tempfile::tempdir()?;
    let now = SystemClock.now_ms();
    let plan = |storage: Arc<Storage>| Plan {
        days: size.days,
        fine_hours: size.fine_hours,
        cells: size.cells,
        seed: 11,
        ..Plan::ending_before(storage, now)
    };
    let local = plan(Arc::new(Storage::local(local_dir.path())));
    let remote = plan(Arc::new(Storage::s3(&s3_settings(&s3, "history"), "history")?));
    generate::run(&local)?;
    let t = cellpilot_core::clock::monotonic();
    let g = generate::run(&remote)?;
    let upload_s = t.elapsed().as_secs_f64();
    let local_store = open(local.storage.clone())?;
    let t = cellpilot_core::clock::monotonic();
    let s3_store = open(Arc::new(Storage::s3(&s3_settings(&s3, "history"), "bench-reader")?))?;
    let from_s3 = cells(&s3_store, now - DAY_MS, now, now)?;
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        cells(&local_store, now - DAY_MS, now, now)? == from_s3,
        "the object store and the local disk answer differently"
    );
    let on_s3 = p999_24h(&s3_store, now, runs)?;
    let on_disk = p999_24h(&local_store, now, runs)?;
    let by_files = files_sweep(now, runs, &size)?;
    let by_series = series_sweep(now, runs, &size)?;

    let round = |x: f64| (x * 100.0).round() / 100.0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "cluster",
                "ingest_spans_per_sec": rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                "ingest_acked_spans": acked,
                "p999_24h_s3_ms": round(on_s3),
                "p999_24h_local_ms": round(on_disk),
                "s3_ratio": round(on_s3 / on_disk),
                "p999_24h_s3_cold_ms": round(cold_ms),
                "p999_24h_by_files": by_files.iter().map(point_json).collect::<Vec<_>>(),
                "p999_24h_by_series": by_series.iter().map(point_json).collect::<Vec<_>>(),
                "history_requests": g.requests,
                "history_upload_s": round(upload_s),
                "runs": runs,
            })
        );
    } else {
        println!(
            "ingest, two nodes at once:     {:>10.0} and {:.0} spans/s ({acked} acknowledged, all counted by the query node)",
            rates[0], rates[1]
        );
        println!(
            "per-cell P99.9 over 24 h, warm: {on_s3:>9.1} ms over S3, {on_disk:.1} ms on local disk ({:.2}×)",
            on_s3 / on_disk
        );
        println!("per-cell P99.9 over 24 h, cold: {cold_ms:>9.1} ms over S3 (open, list and fetch)");
        for p in by_files.iter().chain(&by_series) {
            println!(
                "  {:>5} series, {:>2} writers, {:>5} files: {:>7.1} ms warm (in-memory store)",
                p.series, p.writers, p.files, p.ms
            );
        }
        println!("history: {} requests uploaded in {upload_s:.1} s", g.requests);
    }
    Ok(())
}
