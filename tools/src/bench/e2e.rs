//! `cellpilot bench e2e`: acknowledged spans per second of a `serve` on loopback (default
//! settings, in this process), from a sender that does nothing but replay pre-encoded requests,
//! so the figure is the server's and not an SDK's.
//!
//! The requests are `bench ingest`'s collector batches (512 spans each), timestamped when each
//! phase starts and encoded (and gzip-compressed, and framed for gRPC) before it is timed. Each
//! phase sends them round-robin from eight concurrent senders for a few seconds:
//! - `http`: OTLP/HTTP protobuf, one HTTP/1.1 connection per sender;
//! - `grpc`: OTLP/gRPC, one HTTP/2 connection per sender, the request frames written as they are;
//! - `grpc_gzip`: the same with gzip-compressed frames (`grpc-encoding: gzip`).
//!
//! Acknowledged: 200 / gRPC OK, less any spans the answer's `partial_success` rejected. At the end
//! the server's own count of requests (SQL over its rollups) must equal every acknowledged span.
//!
//! Each run starts a fresh server in a fresh data directory, and one setting differs from the
//! defaults: `wal_max_size` is 12 GiB. The WAL keeps every request until its 5-minute Parquet
//! file is written, and a run (up to ~6 GB of requests at these rates) fits in no 5-minute span:
//! at the default 4 GiB the later phases would measure the WAL's cap (the overload answer), not
//! the receivers. A refused phase prints the first answer.

use super::ingest::request;
use super::median;
use bytes::{BufMut, Bytes, BytesMut};
use cellpilot_core::clock::{Clock, SystemClock};
use cellpilot_core::config::Config;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::BodyExt;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::LogNormal;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::codegen::http;
use tower::{Service, ServiceExt};

/// Concurrent senders per phase (as a handful of collectors would be).
const SENDERS: usize = 8;
/// Distinct pre-encoded requests per phase.
const REQUESTS: usize = 64;
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How one phase sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Http,
    Grpc,
    GrpcGzip,
}

/// What a phase's senders saw.
#[derive(Debug, Default)]
struct Tally {
    acked: AtomicU64,
    refused: AtomicU64,
    /// The first refusal's answer, to say why a phase was refused.
    first_refusal: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn refuse(&self, spans: u64, why: impl FnOnce() -> String) {
        self.refused.fetch_add(spans, Ordering::Relaxed);
        let mut first = self.first_refusal.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(why());
        }
    }
}

/// Fresh requests (spans ending in the last 5 s), encoded for `wire`, with their span counts.
fn encoded(rng: &mut StdRng, wire: Wire) -> anyhow::Result<Vec<(Bytes, u64)>> {
    let body = LogNormal::new((20_000f64).ln(), 0.5)?;
    let now_ns = SystemClock.now_ms() * 1_000_000;
    (0..REQUESTS)
        .map(|_| {
            let r: ExportTraceServiceRequest = request(rng, &body, now_ns, 5_000_000_000);
            let spans = r.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len() as u64).sum();
            let raw = r.encode_to_vec();
            let bytes = match wire {
                Wire::Http => Bytes::from(raw),
                Wire::Grpc => grpc_frame(false, &raw),
                Wire::GrpcGzip => {
                    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
                    gz.write_all(&raw)?;
                    grpc_frame(true, &gz.finish()?)
                }
            };
            Ok((bytes, spans))
        })
        .collect()
}

/// A gRPC length-prefixed message: compressed flag, big-endian length, payload.
fn grpc_frame(compressed: bool, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(u8::from(compressed));
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// Spans an answer rejected, from its `ExportTraceServiceResponse` (empty: none).
pub(super) fn rejected_in(body: &[u8]) -> u64 {
    ExportTraceServiceResponse::decode(body)
        .ok()
        .and_then(|r| r.partial_success)
        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
}

async fn send_http(
    addr: SocketAddr,
    requests: Arc<Vec<(Bytes, u64)>>,
    first: usize,
    until: Instant,
    t: Arc<Tally>,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/v1/traces");
    let mut i = first;
    while cellpilot_core::clock::monotonic() < until {
        let (body, spans) = &requests[i % requests.len()];
        i += SENDERS;
        let resp = client.post(&url).header("content-type", "application/x-protobuf").body(body.clone()).send().await?;
        let status = resp.status();
        let answer = resp.bytes().await?;
        if status.is_success() {
            t.acked.fetch_add(spans - rejected_in(&answer).min(*spans), Ordering::Relaxed);
        } else {
            t.refuse(*spans, || format!("HTTP {status}: {}", String::from_utf8_lossy(&answer)));
        }
    }
    Ok(())
}

async fn send_grpc(
    addr: SocketAddr,
    gzip: bool,
    requests: Arc<Vec<(Bytes, u64)>>,
    first: usize,
    until: Instant,
    t: Arc<Tally>,
) -> anyhow::Result<()> {
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut i = first;
    while cellpilot_core::clock::monotonic() < until {
        let (frame, spans) = &requests[i % requests.len()];
        i += SENDERS;
        let answer = grpc_call(&mut channel, addr, gzip, frame.clone()).await?;
        if answer.ok {
            // The answer is one uncompressed frame (the server is not asked to compress).
            let body = &answer.body;
            let rejected = if body.len() > 5 && body[0] == 0 { rejected_in(&body[5..]) } else { 0 };
            t.acked.fetch_add(spans - rejected.min(*spans), Ordering::Relaxed);
        } else {
            t.refuse(*spans, || format!("HTTP {}, grpc-status {}: {}", answer.http, answer.status, answer.message));
        }
    }
    Ok(())
}

/// What one OTLP/gRPC export call was answered.
pub(super) struct GrpcAnswer {
    /// HTTP 200 with grpc-status 0.
    pub(super) ok: bool,
    pub(super) http: http::StatusCode,
    /// `grpc-status` (trailers, or headers for a trailers-only answer).
    pub(super) status: String,
    pub(super) message: String,
    pub(super) body: Bytes,
}

/// Sends one framed export over `channel` and reads its answer.
pub(super) async fn grpc_call(
    channel: &mut tonic::transport::Channel,
    addr: SocketAddr,
    gzip: bool,
    frame: Bytes,
) -> anyhow::Result<GrpcAnswer> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{EXPORT_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if gzip {
        req = req.header("grpc-encoding", "gzip");
    }
    let req = req.body(tonic::body::Body::new(http_body_util::Full::new(frame)))?;
    let resp = channel.ready().await?.call(req).await?;
    let (parts, body) = resp.into_parts();
    // An export answer is a few bytes; a server answering more is a failure, not a figure.
    #[allow(clippy::disallowed_methods)]
    let collected = http_body_util::Limited::new(body, 64 << 10).collect().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    // OK arrives in the trailers; a refusal may come as a trailers-only answer, in the headers.
    let header = |name: &str| {
        collected
            .trailers()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (status, message) = (header("grpc-status"), header("grpc-message"));
    let ok = parts.status.is_success() && status == "0";
    Ok(GrpcAnswer { ok, http: parts.status, status, message, body: collected.to_bytes() })
}

/// Runs one phase for `load`; (acknowledged spans per second, acknowledged, refused).
async fn phase(
    addrs: (SocketAddr, SocketAddr),
    wire: Wire,
    load: Duration,
    seed: u64,
) -> anyhow::Result<(f64, u64, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let requests = Arc::new(encoded(&mut rng, wire)?);
    let tally = Arc::new(Tally::default());
    let start = cellpilot_core::clock::monotonic();
    let until = start + load;
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (requests, t) = (requests.clone(), tally.clone());
        match wire {
            Wire::Http => senders.spawn(send_http(addrs.0, requests, s, until, t)),
            Wire::Grpc | Wire::GrpcGzip => {
                senders.spawn(send_grpc(addrs.1, wire == Wire::GrpcGzip, requests, s, until, t))
            }
        };
    }
    while let Some(r) = senders.join_next().await {
        r??;
    }
    let secs = start.elapsed().as_secs_f64();
    let (acked, refused) = (tally.acked.load(Ordering::Relaxed), tally.refused.load(Ordering::Relaxed));
    if let Some(why) = tally.first_refusal.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        eprintln!("{wire:?}: {refused} spans refused; the first answer: {why}");
    }
    Ok((acked as f64 / secs, acked, refused))
}

/// The server's count of requests in its rollups (open windows included).
async fn counted(web: SocketAddr) -> anyhow::Result<u64> {
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{web}/api/v1/query"))
        .json(&serde_json::json!({"sql": "SELECT sum(requests) AS n FROM rollups"}))
        .send()
        .await?
        .json()
        .await?;
    Ok(body["rows"][0][0].as_u64().unwrap_or(0))
}

/// The server's count once it reaches `want` (or what it is after `wait`).
pub(super) async fn counted_to(web: SocketAddr, want: u64, wait: Duration) -> anyhow::Result<u64> {
    let deadline = cellpilot_core::clock::monotonic() + wait;
    loop {
        let n = counted(web).await?;
        if n == want || cellpilot_core::clock::monotonic() > deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the benchmark and prints the figures; `load` is each phase's length.
pub fn run(json: bool, runs: usize, load: Duration) -> anyhow::Result<()> {
    let runs = runs.max(1);
    let rt = tokio::runtime::Runtime::new()?;
    let (figures, acked, refused) = rt.block_on(async {
        let mut rates: [Vec<f64>; 3] = Default::default();
        let (mut acked, mut refused) = (0, 0);
        // A fresh server (and data directory) per run, so the WAL holds one run's requests.
        for run in 0..runs {
            let dir = tempfile::tempdir()?;
            let mut c = Config::default();
            c.storage.dir = dir.path().to_path_buf();
            for addr in [&mut c.ingest.grpc_listen, &mut c.ingest.http_listen, &mut c.web.listen, &mut c.control.listen]
            {
                *addr = "127.0.0.1:0".into();
            }
            c.xds.listen = String::new();
            c.storage.wal_max_size = cellpilot_core::config::Size::gib(12);
            let server = cellpilot_server::serve::start(c).await?;
            let http = server.addrs.otlp_http.ok_or_else(|| anyhow::anyhow!("no OTLP/HTTP listener"))?;
            let grpc = server.addrs.otlp_grpc.ok_or_else(|| anyhow::anyhow!("no OTLP/gRPC listener"))?;
            let mut run_acked = 0;
            for (k, wire) in [Wire::Http, Wire::Grpc, Wire::GrpcGzip].into_iter().enumerate() {
                let (rate, a, r) = phase((http, grpc), wire, load, (run * 3 + k) as u64).await?;
                rates[k].push(rate);
                (run_acked, acked, refused) = (run_acked + a, acked + a, refused + r);
                let n = counted_to(server.addrs.web, run_acked, Duration::from_secs(10)).await?;
                anyhow::ensure!(
                    n == run_acked,
                    "after {wire:?}, the server counted {n} of {run_acked} acknowledged spans"
                );
            }
            server.run_until(async {}).await?;
        }
        anyhow::Ok((rates.map(|mut r| median(&mut r)), acked, refused))
    })?;
    let [http, grpc, gzip] = figures;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "e2e",
                "http_acked_per_sec": http.round(),
                "grpc_acked_per_sec": grpc.round(),
                "grpc_gzip_acked_per_sec": gzip.round(),
                "acked_spans": acked,
                "refused_spans": refused,
                "senders": SENDERS,
                "load_s": load.as_secs_f64(),
                "runs": runs,
            })
        );
    } else {
        println!("OTLP/HTTP protobuf: {http:>10.0} acknowledged spans/s  (median of {runs}, {SENDERS} senders)");
        println!("OTLP/gRPC:          {grpc:>10.0} acknowledged spans/s");
        println!("OTLP/gRPC + gzip:   {gzip:>10.0} acknowledged spans/s");
        println!("{acked} spans acknowledged (all counted by the server), {refused} refused");
    }
    Ok(())
}
