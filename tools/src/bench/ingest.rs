//! `cellpilot bench ingest`: OTLP trace ingest on one core.
//!
//! Requests are realistic collector batches (512 spans, 8–12 attributes per span, 1,000 series
//! = 10 cells × 10 services × 10 routes, latencies lognormal around 20 ms with a 0.5 % tail of
//! 1–3 s), encoded once. Measured in one process, alternating passes:
//! - baseline: prost decode of every request;
//! - pre-scan: the wire walk that counts items and decoded bytes before decoding (what JSON
//!   and metrics bodies still get);
//! - ingest: the receivers' path for protobuf traces after the transport: count the spans,
//!   scan and map them from the wire, aggregate;
//! - the same through prost (pre-scan + decode + map + aggregate), the path before the scanner;
//! - apply only: the sequencer's share, span batches folded beforehand applied alone; and the
//!   WAL bytes per span of those batches as records (beside the request's own).
//!
//! Memory: a fresh aggregator is fed four windows of data at 10 requests/s per series and its
//! growth in resident memory is divided by the live series.
//!
//! How cost grows (`by_series`): the ingest pass and the memory measurement again with 1,000,
//! 10,000 and 100,000 live series (10, 100, 1,000 cells), the memory one with the same 400,000
//! spans each time (100, 10 and 1 per series and window).

use super::median;
use cellpilot_core::config::IngestConfig;
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings};
use cellpilot_ingest::batch::SpanBatch;
use cellpilot_ingest::mapping::Mapper;
use cellpilot_ingest::prescan::{self, Msg};
use cellpilot_ingest::wire::WireTraces;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message;
use prost::bytes::Bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::time::Duration;

const CELLS: usize = 10;
const SERVICES: usize = 10;
const ROUTES: usize = 10;
/// Spans in each pre-encoded export request.
pub const SPANS_PER_REQUEST: usize = 512;
/// Spans per series per 10 s window in the memory phase (10 requests/s per series).
/// Spans fed to each memory measurement: 100 per series-window at 1,000 series, 10 at 10,000, 1
/// at 100,000 (10 requests/s per series down to 0.1).
const MEMORY_SPANS: usize = 400_000;
/// Just before a window boundary, so the last 40 s are four open windows.
const NOW_NS: i64 = 1_800_000_000_000_000_000 + 9_999_000_000;
const WINDOWS: i64 = 4;
/// Length, crc, kind and receive time before each WAL record's payload.
const WAL_RECORD_HEADER: usize = 17;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: impl Into<String>) -> Value {
    Value::StringValue(v.into())
}

/// Latency in µs: lognormal around 20 ms, 0.5 % uniformly 1–3 s.
fn latency_us(rng: &mut StdRng, body: &LogNormal<f64>) -> u64 {
    if rng.random_bool(0.005) { rng.random_range(1_000_000..3_000_000) } else { body.sample(rng) as u64 }
}

/// One export request of `SPANS_PER_REQUEST` spans ending in `[now - spread, now)`.
pub fn request(rng: &mut StdRng, body: &LogNormal<f64>, now_ns: i64, spread_ns: i64) -> ExportTraceServiceRequest {
    request_over(rng, body, now_ns, spread_ns, CELLS)
}

/// [`request`] over `cells` cells (`cells` × 100 series).
fn request_over(
    rng: &mut StdRng,
    body: &LogNormal<f64>,
    now_ns: i64,
    spread_ns: i64,
    cells: usize,
) -> ExportTraceServiceRequest {
    // Exactly SPANS_PER_REQUEST in all: the first services take one more each.
    let per_service = |svc: usize| SPANS_PER_REQUEST / SERVICES + usize::from(svc < SPANS_PER_REQUEST % SERVICES);
    let resource_spans = (0..SERVICES)
        .map(|svc| {
            let spans = (0..per_service(svc))
                .map(|_| {
                    let cell = rng.random_range(0..cells);
                    let route = rng.random_range(0..ROUTES);
                    let end = now_ns - rng.random_range(0..spread_ns);
                    let lat = latency_us(rng, body) as i64 * 1000;
                    let status = if rng.random_bool(0.01) { 503 } else { 200 };
                    let mut attributes = vec![
                        kv("cell.id", s(format!("cell-{cell:02}"))),
                        kv("http.route", s(format!("/api/v1/resource{route}/{{id}}"))),
                        kv("http.request.method", s("GET")),
                        kv("http.response.status_code", Value::IntValue(status)),
                        kv("url.scheme", s("https")),
                        kv("server.address", s(format!("svc-{svc}.internal"))),
                        kv("network.protocol.version", s("1.1")),
                        kv(
                            "client.address",
                            s(format!("10.0.{}.{}", rng.random_range(0..255), rng.random_range(0..255))),
                        ),
                    ];
                    for extra in 0..rng.random_range(0..5) {
                        attributes
                            .push(kv(&format!("app.attr{extra}"), s(format!("value-{}", rng.random_range(0..1000)))));
                    }
                    Span {
                        trace_id: rng.random::<[u8; 16]>().to_vec(),
                        span_id: rng.random::<[u8; 8]>().to_vec(),
                        name: format!("GET /api/v1/resource{route}/{{id}}"),
                        kind: SpanKind::Server as i32,
                        start_time_unix_nano: (end - lat) as u64,
                        end_time_unix_nano: end as u64,
                        attributes,
                        ..Default::default()
                    }
                })
                .collect();
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", s(format!("service-{svc}"))),
                        kv("service.version", s("1.4.2")),
                        kv("host.name", s(format!("node-{}", rng.random_range(0..50)))),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

fn settings() -> AggregatorSettings {
    AggregatorSettings {
        spec: WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30)),
        max_series: 100_000,
        max_cells: 100_000,
    }
}

/// Resident set size of this process, in bytes (Linux); 0 where unknown.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// One point of the cost curve.
struct Point {
    spans_per_sec: f64,
    memory: Memory,
}

/// Ingest rate over `requests`, spans/s per pass, on the receivers' path for protobuf traces:
/// count the spans (the admission check), scan and map from the wire, aggregate.
fn ingest_pass(mapper: &Mapper, agg: &mut Aggregator, requests: &[Bytes], now_ms: i64) -> anyhow::Result<(f64, u64)> {
    let spans = (requests.len() * SPANS_PER_REQUEST) as f64;
    let mut rejected = 0;
    let t = cellpilot_core::clock::monotonic();
    for r in requests {
        let counted = cellpilot_ingest::wire::count_spans(r)
            .ok_or_else(|| anyhow::anyhow!("a generated request does not parse"))?;
        anyhow::ensure!(counted == SPANS_PER_REQUEST as u64, "counted {counted} spans");
        let wire = WireTraces::new(r.clone());
        let obs = wire.map(mapper)?;
        let out = agg.apply(&obs, now_ms, i64::MIN);
        rejected += out.late + out.future;
    }
    Ok((spans / t.elapsed().as_secs_f64(), rejected))
}

/// The sequencer's share of the ingest pass: span batches folded beforehand (as the receiving
/// tasks do), applied alone; and the WAL bytes per span those batches take as records, beside
/// the requests' own bytes per span.
fn apply_pass(
    mapper: &Mapper,
    agg: &mut Aggregator,
    requests: &[Bytes],
    now_ms: i64,
) -> anyhow::Result<(f64, f64, f64)> {
    let spec = agg.spec();
    let mut batches = Vec::with_capacity(requests.len());
    let (mut wal_bytes, mut raw_bytes) = (0usize, 0usize);
    for r in requests {
        let batch = SpanBatch::from_spans(&WireTraces::new(r.clone()).map(mapper)?, spec, now_ms);
        let mut encoded = Vec::new();
        batch.encode(&mut encoded);
        wal_bytes += encoded.len() + WAL_RECORD_HEADER;
        raw_bytes += r.len();
        batches.push(batch);
    }
    let spans = (requests.len() * SPANS_PER_REQUEST) as f64;
    let t = cellpilot_core::clock::monotonic();
    for b in &batches {
        std::hint::black_box(agg.apply_spans(b, now_ms, i64::MIN));
    }
    Ok((spans / t.elapsed().as_secs_f64(), wal_bytes as f64 / spans, raw_bytes as f64 / spans))
}

/// The same through prost, as before the wire scanner: pre-scan, decode, map, aggregate.
fn prost_pass(mapper: &Mapper, agg: &mut Aggregator, requests: &[Bytes], now_ms: i64) -> anyhow::Result<f64> {
    let spans = (requests.len() * SPANS_PER_REQUEST) as f64;
    let t = cellpilot_core::clock::monotonic();
    for r in requests {
        prescan::scan_protobuf(Msg::ExportTraces, r).map_err(anyhow::Error::msg)?;
        let req = ExportTraceServiceRequest::decode(&r[..])?;
        let obs = mapper.traces(&req)?;
        std::hint::black_box(agg.apply(&obs, now_ms, i64::MIN));
    }
    Ok(spans / t.elapsed().as_secs_f64())
}

/// Throughput and resident memory with `cells` × 100 series live: 200 requests timed `runs`
/// times, then [`memory`] in a process of its own.
fn point(mapper: &Mapper, rng: &mut StdRng, body: &LogNormal<f64>, cells: usize, runs: usize) -> anyhow::Result<Point> {
    let requests: Vec<Bytes> =
        (0..200).map(|_| request_over(rng, body, NOW_NS, 35_000_000_000, cells).encode_to_vec().into()).collect();
    let mut agg = Aggregator::new(settings());
    let mut rates = Vec::new();
    for _ in 0..runs {
        let (rate, rejected) = ingest_pass(mapper, &mut agg, &requests, NOW_NS / 1_000_000)?;
        anyhow::ensure!(rejected == 0, "{rejected} generated spans were rejected: the bench is misconfigured");
        rates.push(rate);
    }
    Ok(Point { spans_per_sec: median(&mut rates), memory: in_fresh_process(cells)? })
}

/// What [`memory`] measured.
#[derive(serde::Serialize, serde::Deserialize)]
struct Memory {
    series: usize,
    bytes_per_series: f64,
    heap_per_series: f64,
    spans_per_series_window: usize,
    open_windows: usize,
}

/// Runs [`memory`] for `cells` in a new process of this program: resident memory only grows
/// honestly in a process that has not freed memory the aggregator could reuse.
fn in_fresh_process(cells: usize) -> anyhow::Result<Memory> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["bench", "ingest", "--memory-cells", &cells.to_string()])
        .output()?;
    anyhow::ensure!(out.status.success(), "the memory run failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Feeds a fresh aggregator four windows of `MEMORY_SPANS` spans over `cells` × 100 series and
/// prints its growth in resident memory per live series, as JSON.
pub fn memory(cells: usize) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(11);
    let body = LogNormal::new((20_000f64).ln(), 0.5)?;
    let mapper = Mapper::new(&IngestConfig::default());
    let now_ms = NOW_NS / 1_000_000;
    let series = cells * SERVICES * ROUTES;
    // The same spans in every point: fewer per series as there are more series.
    let per_series_window = (MEMORY_SPANS / (series * WINDOWS as usize)).max(1);
    let total = series * per_series_window * WINDOWS as usize;
    let mem_requests: Vec<Bytes> = (0..total.div_ceil(SPANS_PER_REQUEST))
        .map(|_| {
            let spread = WINDOWS * 10_000_000_000 - 2_000_000_000;
            request_over(&mut rng, &body, NOW_NS, spread, cells).encode_to_vec().into()
        })
        .collect();
    {
        // Warm the allocator with one request's transient allocations so they are not counted.
        let wire = WireTraces::new(mem_requests[0].clone());
        let obs = wire.map(&mapper)?;
        let mut scratch = Aggregator::new(settings());
        scratch.apply(&obs, now_ms, i64::MIN);
    }
    let before = rss_bytes();
    let mut fresh = Aggregator::new(settings());
    let mut rejected = 0;
    for r in &mem_requests {
        let wire = WireTraces::new(r.clone());
        let obs = wire.map(&mapper)?;
        let out = fresh.apply(&obs, now_ms, i64::MIN);
        rejected += out.late + out.future;
    }
    anyhow::ensure!(rejected == 0, "{rejected} generated spans were rejected: the bench is misconfigured");
    let after = rss_bytes();
    let live = fresh.live_series().max(1);
    let m = Memory {
        series: live,
        bytes_per_series: after.saturating_sub(before) as f64 / live as f64,
        heap_per_series: fresh.heap_bytes() as f64 / live as f64,
        spans_per_series_window: per_series_window,
        open_windows: fresh.open_windows(),
    };
    println!("{}", serde_json::to_string(&m)?);
    Ok(())
}

/// Runs the benchmark and prints the figures.
pub fn run(json: bool, runs: usize) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let mut rng = StdRng::seed_from_u64(7);
    let body = LogNormal::new((20_000f64).ln(), 0.5)?;
    let mapper = Mapper::new(&IngestConfig::default());

    // The baselines, on 1,000 series: 200 requests (102,400 spans) over the last 35 s.
    let requests: Vec<Bytes> =
        (0..200).map(|_| request(&mut rng, &body, NOW_NS, 35_000_000_000).encode_to_vec().into()).collect();
    let spans = (requests.len() * SPANS_PER_REQUEST) as f64;
    let mut agg = Aggregator::new(settings());
    let mut decode_rates = Vec::new();
    let mut prescan_rates = Vec::new();
    let mut ingest_rates = Vec::new();
    let mut prost_rates = Vec::new();
    let mut apply_rates = Vec::new();
    let (mut wal_per_span, mut raw_per_span) = (0.0, 0.0);
    for _ in 0..runs {
        let t = cellpilot_core::clock::monotonic();
        for r in &requests {
            let req = ExportTraceServiceRequest::decode(&r[..])?;
            std::hint::black_box(&req);
        }
        decode_rates.push(spans / t.elapsed().as_secs_f64());

        let t = cellpilot_core::clock::monotonic();
        for r in &requests {
            std::hint::black_box(prescan::scan_protobuf(Msg::ExportTraces, r).map_err(anyhow::Error::msg)?);
        }
        prescan_rates.push(spans / t.elapsed().as_secs_f64());

        let (rate, rejected) = ingest_pass(&mapper, &mut agg, &requests, NOW_NS / 1_000_000)?;
        anyhow::ensure!(rejected == 0, "{rejected} generated spans were rejected: the bench is misconfigured");
        ingest_rates.push(rate);

        prost_rates.push(prost_pass(&mapper, &mut agg, &requests, NOW_NS / 1_000_000)?);
        let (rate, wal, raw) = apply_pass(&mapper, &mut agg, &requests, NOW_NS / 1_000_000)?;
        (wal_per_span, raw_per_span) = (wal, raw);
        apply_rates.push(rate);
    }
    let apply = median(&mut apply_rates);
    let decode = median(&mut decode_rates);
    let via_prost = median(&mut prost_rates);
    let scan = median(&mut prescan_rates);
    let ingest = median(&mut ingest_rates);
    drop((agg, requests));

    let curve = [CELLS, CELLS * 10, CELLS * 100]
        .into_iter()
        .map(|cells| point(&mapper, &mut rng, &body, cells, runs))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let first = &curve[0].memory;

    let ratio = ingest / decode;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "ingest",
                "spans_per_sec": ingest.round(),
                "decode_only_spans_per_sec": decode.round(),
                "prescan_only_spans_per_sec": scan.round(),
                "prost_path_spans_per_sec": via_prost.round(),
                "ratio": (ratio * 1000.0).round() / 1000.0,
                "apply_only_spans_per_sec": apply.round(),
                "wal_bytes_per_span": (wal_per_span * 100.0).round() / 100.0,
                "request_bytes_per_span": (raw_per_span * 10.0).round() / 10.0,
                "bytes_per_series": first.bytes_per_series.round(),
                "heap_bytes_per_series": first.heap_per_series.round(),
                "series": first.series,
                "open_windows": first.open_windows,
                "spans_per_series_window": first.spans_per_series_window,
                "by_series": curve.iter().map(|p| serde_json::json!({
                    "series": p.memory.series,
                    "spans_per_sec": p.spans_per_sec.round(),
                    "bytes_per_series": p.memory.bytes_per_series.round(),
                    "heap_bytes_per_series": p.memory.heap_per_series.round(),
                    "spans_per_series_window": p.memory.spans_per_series_window,
                })).collect::<Vec<_>>(),
                "runs": runs,
            })
        );
    } else {
        println!("ingest (scan+map+aggregate):   {ingest:>12.0} spans/s  (median of {runs})");
        println!("decode only (prost):           {decode:>12.0} spans/s");
        println!("the same through prost:        {via_prost:>12.0} spans/s");
        println!("pre-scan only:                 {scan:>12.0} spans/s");
        println!("ratio:                         {ratio:>12.3}");
        println!("apply only (the sequencer):    {apply:>12.0} spans/s");
        println!(
            "WAL bytes per span:            {wal_per_span:>12.2}     (the request: {raw_per_span:.1} bytes per span)"
        );
        for Point { spans_per_sec, memory: m } in &curve {
            println!(
                "{:>7} series: {spans_per_sec:>10.0} spans/s, {:>6.0} resident bytes per series ({:.0} accounted heap; {} spans per series-window, {} open windows)",
                m.series, m.bytes_per_series, m.heap_per_series, m.spans_per_series_window, m.open_windows
            );
        }
    }
    Ok(())
}
