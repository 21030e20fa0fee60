//! `cellpilot loadgen`: realistic SERVER spans for simulated cells, sent through the real
//! OpenTelemetry SDK and OTLP exporter (gRPC or HTTP), with error bursts on demand and a live
//! progress line. `cellpilot demo` drives it in-process.

use anyhow::{Context, bail};
use cellpilot_core::clock::{Clock, SystemClock};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// OTLP/gRPC (gzip).
    Grpc,
    /// OTLP/HTTP protobuf.
    Http,
}

/// Most spans per second a generator is asked for: far above what one process sends.
pub const MAX_RPS: f64 = 10_000_000.0;
/// Most cells a run simulates.
pub const MAX_CELLS: usize = 10_000;
/// Most services a run simulates.
pub const MAX_SERVICES: usize = 1_000;
/// Latest start and longest duration of an error burst.
pub const MAX_OFFSET: Duration = Duration::from_secs(365 * 86_400);

/// `--rps`: a finite rate above 0 and at most [`MAX_RPS`].
pub fn parse_rps(s: &str) -> Result<f64, String> {
    let rps: f64 = s.trim().parse().map_err(|_| format!("--rps `{s}` is not a number"))?;
    if !rps.is_finite() || rps <= 0.0 || rps > MAX_RPS {
        return Err(format!("--rps `{s}`: expected a rate above 0 and at most {MAX_RPS}"));
    }
    Ok(rps)
}

/// `--cells`: 1 to [`MAX_CELLS`].
pub fn parse_cells(s: &str) -> Result<usize, String> {
    parse_count(s, "--cells", MAX_CELLS)
}

/// `--services`: 1 to [`MAX_SERVICES`].
pub fn parse_services(s: &str) -> Result<usize, String> {
    parse_count(s, "--services", MAX_SERVICES)
}

fn parse_count(s: &str, flag: &str, max: usize) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag} `{s}`: expected a whole number from 1 to {max}")),
    }
}

/// An error burst: `CELL@START+DURATION:RATE`, offsets from the start of the run,
/// e.g. `cell-01@30s+1m:0.2`.
#[derive(Debug, Clone)]
pub struct Fail {
    /// The failing cell.
    pub cell: String,
    /// Start, from the start of the run.
    pub from: Duration,
    /// End, from the start of the run.
    pub until: Duration,
    /// Share of its requests that fail.
    pub rate: f64,
}

impl std::str::FromStr for Fail {
    type Err = String;
    fn from_str(spec: &str) -> Result<Self, String> {
        let bad = || format!("--fail `{spec}`: expected CELL@START+DURATION:RATE, e.g. cell-01@30s+1m:0.2");
        let (cell, rest) = spec.split_once('@').ok_or_else(bad)?;
        let (when, rate) = rest.split_once(':').ok_or_else(bad)?;
        let (start, dur) = when.split_once('+').ok_or_else(bad)?;
        let from = humantime::parse_duration(start).map_err(|_| bad())?;
        let dur = humantime::parse_duration(dur).map_err(|_| bad())?;
        let rate: f64 = rate.parse().map_err(|_| bad())?;
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!("--fail `{spec}`: the rate must be within 0..1"));
        }
        if from > MAX_OFFSET || dur > MAX_OFFSET {
            return Err(format!("--fail `{spec}`: the start and the duration must be at most 365 days"));
        }
        if cell.is_empty() {
            return Err(bad());
        }
        Ok(Self { cell: cell.to_string(), from, until: from + dur, rate })
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    /// OTLP endpoint.
    pub endpoint: String,
    /// gRPC or HTTP/protobuf.
    pub transport: Transport,
    /// Cell names.
    pub cells: Vec<String>,
    /// Services per cell.
    pub services: usize,
    /// Spans per second, all cells together.
    pub rps: f64,
    /// `None` runs until stopped.
    pub duration: Option<Duration>,
    /// Error bursts.
    pub fails: Vec<Fail>,
    /// Bearer token, when the server wants one.
    pub token: Option<String>,
    /// Cell weights to split traffic by, as a gateway would (cells missing from it get 100);
    /// `None` splits evenly.
    pub weights: Option<Weights>,
}

/// A weight table shared with whoever keeps it current (the demo's simulated gateway).
pub type Weights = Arc<std::sync::RwLock<std::collections::BTreeMap<String, u32>>>;

/// Picks a cell index by weight; evenly when there is no table or every weight is 0.
fn pick(rng: &mut SmallRng, cells: &[String], weights: Option<&Weights>) -> usize {
    if let Some(w) = weights {
        let table = w.read().unwrap_or_else(|e| e.into_inner());
        let ws: Vec<u64> = cells.iter().map(|c| u64::from(table.get(c).copied().unwrap_or(100))).collect();
        let total: u64 = ws.iter().sum();
        if total > 0 {
            let mut x = rng.random_range(0..total);
            for (i, w) in ws.iter().enumerate() {
                if x < *w {
                    return i;
                }
                x -= w;
            }
        }
    }
    rng.random_range(0..cells.len())
}

/// Spans sent, acknowledged and rejected so far.
#[derive(Debug, Default)]
pub struct Progress {
    /// Spans handed to the SDK.
    pub sent: AtomicU64,
    /// Spans the server acknowledged.
    pub acked: AtomicU64,
    /// Spans the server refused.
    pub rejected: AtomicU64,
}

/// Counts what the wrapped exporter's exports did.
#[derive(Debug)]
struct Counting<E> {
    inner: E,
    progress: Arc<Progress>,
}

impl<E: SpanExporter> SpanExporter for Counting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        let counter = if r.is_ok() { &self.progress.acked } else { &self.progress.rejected };
        counter.fetch_add(n, Ordering::Relaxed);
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

fn exporter(load: &Load) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let mut headers = std::collections::HashMap::new();
    if let Some(t) = &load.token {
        headers.insert("authorization".to_string(), format!("Bearer {t}"));
    }
    Ok(match load.transport {
        Transport::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            if let Some(t) = &load.token {
                metadata.insert("authorization", format!("Bearer {t}").parse().context("token")?);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(load.endpoint.clone())
                .with_compression(opentelemetry_otlp::Compression::Gzip)
                .with_metadata(metadata)
                .build()?
        }
        Transport::Http => {
            use opentelemetry_otlp::WithHttpConfig;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{}/v1/traces", load.endpoint.trim_end_matches('/')))
                .with_headers(headers)
                .build()?
        }
    })
}

/// One tracer provider per service (the service name is a resource attribute).
fn providers(load: &Load, progress: &Arc<Progress>) -> anyhow::Result<Vec<SdkTracerProvider>> {
    (0..load.services)
        .map(|s| {
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(200_000)
                .with_max_export_batch_size(1024)
                .with_scheduled_delay(Duration::from_millis(200))
                .build();
            let exporter = Counting { inner: exporter(load)?, progress: progress.clone() };
            Ok(SdkTracerProvider::builder()
                .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
                .with_resource(Resource::builder().with_service_name(format!("service-{s}")).build())
                .build())
        })
        .collect()
}

const ROUTES: [&str; 5] = ["/api/checkout", "/api/cart", "/api/search", "/api/profile", "/api/pay"];

/// Sends spans at `load.rps` until the duration passes or `stop` is set. Blocking: run it on
/// its own thread (the HTTP exporter's client must not live on an async runtime).
pub fn run(load: &Load, progress: Arc<Progress>, stop: &std::sync::atomic::AtomicBool) -> anyhow::Result<()> {
    if load.cells.is_empty() || load.cells.len() > MAX_CELLS || load.services == 0 || load.services > MAX_SERVICES {
        bail!("loadgen needs 1 to {MAX_CELLS} cells and 1 to {MAX_SERVICES} services");
    }
    if !load.rps.is_finite() || load.rps <= 0.0 || load.rps > MAX_RPS {
        bail!("loadgen needs a rate above 0 and at most {MAX_RPS} spans/s, not {}", load.rps);
    }
    let providers = providers(load, &progress)?;
    let tracers: Vec<_> = providers.iter().map(|p| p.tracer("cellpilot-loadgen")).collect();
    let mut rng = SmallRng::seed_from_u64(42);
    // Each cell has its own latency: medians 20, 24, 28, ... ms.
    let bodies: Vec<LogNormal<f64>> = (0..load.cells.len())
        .map(|i| LogNormal::new((20_000.0 * (1.0 + 0.2 * i as f64)).ln(), 0.5))
        .collect::<Result<_, _>>()?;
    let start = cellpilot_core::clock::monotonic();
    let mut owed = 0.0f64;
    let mut last = cellpilot_core::clock::monotonic();
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) && load.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(10));
        let now = cellpilot_core::clock::monotonic();
        owed += load.rps * now.duration_since(last).as_secs_f64();
        last = now;
        let elapsed = start.elapsed();
        while owed >= 1.0 {
            owed -= 1.0;
            n += 1;
            let ci = pick(&mut rng, &load.cells, load.weights.as_ref());
            let cell = &load.cells[ci];
            let fail_rate = load
                .fails
                .iter()
                .filter(|f| f.cell == *cell && f.from <= elapsed && elapsed < f.until)
                .map(|f| f.rate)
                .fold(0.0005, f64::max);
            let failed = rng.random_bool(fail_rate);
            let latency_us = if rng.random_bool(0.005) {
                rng.random_range(1_000_000..3_000_000)
            } else {
                bodies[ci].sample(&mut rng) as u64
            };
            let end = Clock::now_system(&SystemClock);
            let begin = end - Duration::from_micros(latency_us);
            let route = ROUTES[(n % ROUTES.len() as u64) as usize];
            let tracer = &tracers[(n % tracers.len() as u64) as usize];
            let mut span = tracer
                .span_builder(format!("POST {route}"))
                .with_kind(SpanKind::Server)
                .with_start_time(begin)
                .with_attributes([
                    KeyValue::new("cell.id", cell.clone()),
                    KeyValue::new("http.route", route),
                    KeyValue::new("http.request.method", "POST"),
                    KeyValue::new("http.response.status_code", if failed { 503i64 } else { 200 }),
                ])
                .start(tracer);
            if failed {
                span.set_status(Status::error("upstream unavailable"));
            }
            span.end_with_timestamp(end);
            progress.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    for p in providers {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
    Ok(())
}

/// `sent N (R/s) acked N rejected N`, for the live line.
pub fn progress_line(p: &Progress, elapsed: Duration) -> String {
    let sent = p.sent.load(Ordering::Relaxed);
    let rate = sent as f64 / elapsed.as_secs_f64().max(0.001);
    format!(
        "sent {sent} ({rate:.0}/s)  acked {}  rejected {}",
        p.acked.load(Ordering::Relaxed),
        p.rejected.load(Ordering::Relaxed)
    )
}

/// Runs `load` on this thread (gRPC exports need a runtime, kept alive meanwhile) with a live
/// progress line on stderr; Ctrl-C stops it.
pub fn run_with_progress(load: &Load) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let _guard = rt.enter();
    let progress = Arc::new(Progress::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (p, s) = (progress.clone(), stop.clone());
    rt.spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        s.store(true, Ordering::Relaxed);
    });
    let started = cellpilot_core::clock::monotonic();
    let (p2, s2) = (progress.clone(), stop.clone());
    let printer = std::thread::Builder::new().name("cellpilot-loadgen-progress".into()).spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_secs(1));
            eprint!("\r\x1b[2K{}", progress_line(&p2, started.elapsed()));
        }
    })?;
    let result = run(load, p, &stop);
    stop.store(true, Ordering::Relaxed);
    let _ = printer.join();
    // After the final flush, whatever was neither acknowledged nor rejected was dropped by the
    // SDK's queue (the generator outran the exporter).
    let (sent, acked, rejected) = (
        progress.sent.load(Ordering::Relaxed),
        progress.acked.load(Ordering::Relaxed),
        progress.rejected.load(Ordering::Relaxed),
    );
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "\r\x1b[2K{}  dropped by the SDK {}  acknowledged {:.0}/s",
        progress_line(&progress, started.elapsed()),
        sent.saturating_sub(acked + rejected),
        acked as f64 / secs
    );
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_that_never_end_or_never_start_are_refused() {
        for bad in ["inf", "-inf", "NaN", "0", "-5", "1e300", "10000001", "", "fast"] {
            let e = parse_rps(bad).unwrap_err();
            assert!(e.contains("--rps"), "{bad}: {e}");
        }
        assert_eq!(parse_rps("0.5"), Ok(0.5));
        assert_eq!(parse_rps("10000000"), Ok(MAX_RPS));
    }

    #[test]
    fn counts_are_bounded() {
        for bad in ["0", "-1", "18446744073709551615", "10001", "x"] {
            assert!(parse_cells(bad).unwrap_err().contains("--cells"), "{bad}");
        }
        assert!(parse_services("1001").unwrap_err().contains("--services"));
        assert_eq!(parse_cells("10000"), Ok(10_000));
    }

    #[test]
    fn bursts_that_overflow_are_refused() {
        for bad in [
            "c@18446744073709551615s+1s:0.5",
            "c@1s+18446744073709551615s:0.5",
            "c@366d+1s:0.5",
            "@1s+1s:0.5",
            "c@1s+1s:NaN",
            "c@1s+1s:1.5",
        ] {
            let e = bad.parse::<Fail>().unwrap_err();
            assert!(e.contains("--fail"), "{bad}: {e}");
        }
        let f: Fail = "cell-01@30s+1m:0.2".parse().unwrap();
        assert_eq!((f.from, f.until, f.rate), (Duration::from_secs(30), Duration::from_secs(90), 0.2));
    }

    #[test]
    fn run_refuses_a_rate_it_cannot_pace() {
        let load = Load {
            endpoint: "http://127.0.0.1:9".into(),
            transport: Transport::Http,
            cells: vec!["c".into()],
            services: 1,
            rps: f64::NAN,
            duration: Some(Duration::from_millis(1)),
            fails: Vec::new(),
            token: None,
            weights: None,
        };
        let stop = std::sync::atomic::AtomicBool::new(false);
        let e = run(&load, Arc::new(Progress::default()), &stop).unwrap_err();
        assert!(e.to_string().contains("rate"), "{e}");
    }
}
