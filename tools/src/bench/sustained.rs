//! `cellpilot bench sustained`: what a `serve` on its defaults holds for minutes, not seconds.
//!
//! A fresh server (fresh data directory, every setting at its default) on loopback, in this
//! process, takes fresh on-time exports from N senders for `--seconds`: `bench ingest`'s
//! collector batches (512 spans, 1,000 series), re-stamped at each send so every span ends in
//! the second before it is sent, half the senders over OTLP/HTTP and half over OTLP/gRPC (or one
//! transport). Without `--rate` each sender sends as fast as it is answered; with it the senders
//! together aim at that many spans/s. A refused export (429 / UNAVAILABLE) is counted and not
//! sent again.
//!
//! Every 10 s it prints the spans the server counted per second in that interval, the fraction
//! refused, the WAL's bytes on disk and written per span, the checkpoint's age and this
//! process's resident memory. At the end the server's own count (SQL over its rollups) must
//! equal every acknowledged span.

use super::e2e::{counted_to, grpc_call, rejected_in};
use super::ingest::request;
use bytes::Bytes;
use cellpilot_core::clock::{Clock, SystemClock};
use cellpilot_core::config::Config;
use prost::Message;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::LogNormal;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Distinct requests the senders cycle through.
const TEMPLATES: usize = 64;
/// How far back each export's spans end, before the moment it is sent.
const SPREAD_NS: i64 = 1_000_000_000;
/// Seconds between progress lines.
const EVERY: u64 = 10;

/// Which transports the senders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transports {
    /// OTLP/HTTP protobuf only.
    Http,
    /// OTLP/gRPC only.
    Grpc,
    /// Half the senders each.
    Both,
}

/// An encoded export and where its span timestamps are, to re-stamp it at each send.
struct Template {
    bytes: Vec<u8>,
    /// Offsets of every span's start and end (fixed64, little-endian).
    stamps: Vec<usize>,
    base_ns: i64,
    spans: u64,
}

impl Template {
    fn new(rng: &mut StdRng, body: &LogNormal<f64>, base_ns: i64) -> Self {
        let req = request(rng, body, base_ns, SPREAD_NS);
        let spans = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum();
        let times: HashSet<u64> = req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .flat_map(|s| [s.start_time_unix_nano, s.end_time_unix_nano])
            .collect();
        let bytes = req.encode_to_vec();
        // Span fields 7 and 8 (fixed64): tags 0x39 and 0x41, then the value.
        let stamps = (0..bytes.len().saturating_sub(8))
            .filter(|&i| matches!(bytes[i], 0x39 | 0x41))
            .filter(|&i| {
                let v = u64::from_le_bytes(bytes[i + 1..i + 9].try_into().unwrap_or_default());
                times.contains(&v)
            })
            .map(|i| i + 1)
            .collect();
        Template { bytes, stamps, base_ns, spans }
    }

    /// The export with its spans moved to end in the second before `now_ns`; framed for gRPC
    /// when `grpc`.
    fn fresh(&self, now_ns: i64, grpc: bool) -> Bytes {
        let skip = if grpc { 5 } else { 0 };
        let mut out = Vec::with_capacity(skip + self.bytes.len());
        if grpc {
            out.push(0);
            out.extend_from_slice(&(self.bytes.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(&self.bytes);
        let delta = (now_ns - self.base_ns) as u64;
        for &at in &self.stamps {
            let at = at + skip;
            let v = u64::from_le_bytes(out[at..at + 8].try_into().unwrap_or_default()).wrapping_add(delta);
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        Bytes::from(out)
    }
}

/// What the senders saw.
#[derive(Debug, Default)]
struct Tally {
    acked: AtomicU64,
    refused: AtomicU64,
    /// Exports whose answer was neither an acknowledgement nor the retry hint.
    failed: AtomicU64,
    first_failure: std::sync::Mutex<Option<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_failure.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(why);
    }
}

/// One sender: exports round-robin over `templates`, paced at `every` apart when set.
struct Sender {
    id: usize,
    grpc: bool,
    addr: SocketAddr,
    templates: Arc<Vec<Template>>,
    every: Option<Duration>,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
}

impl Sender {
    async fn run(self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("http://{}/v1/traces", self.addr);
        let mut channel = if self.grpc {
            Some(tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))?.connect().await?)
        } else {
            None
        };
        let mut next = cellpilot_core::clock::monotonic();
        let mut i = self.id;
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(every) = self.every {
                let now = cellpilot_core::clock::monotonic();
                if next > now {
                    tokio::time::sleep(next - now).await;
                } else if now - next > Duration::from_secs(1) {
                    // Far behind: the server is slower than the target; do not burst to catch up.
                    next = now;
                }
                next += every;
            }
            let t = &self.templates[i % self.templates.len()];
            i += 1;
            let body = t.fresh(SystemClock.now_ms() * 1_000_000, self.grpc);
            let answer = match channel.as_mut() {
                Some(c) => grpc_export(c, self.addr, body).await,
                None => http_export(&http, &url, body).await,
            };
            match answer {
                Ok(Answer::Acked(rejected)) => {
                    self.tally.acked.fetch_add(t.spans - rejected.min(t.spans), Ordering::Relaxed);
                }
                Ok(Answer::Refused) => {
                    self.tally.refused.fetch_add(t.spans, Ordering::Relaxed);
                }
                Ok(Answer::Failed(why)) => self.tally.fail(why),
                Err(e) => self.tally.fail(e.to_string()),
            }
        }
        Ok(())
    }
}

enum Answer {
    /// Acknowledged, less this many spans `partial_success` rejected.
    Acked(u64),
    /// The retry hint (429 / 503 / UNAVAILABLE).
    Refused,
    Failed(String),
}

async fn http_export(client: &reqwest::Client, url: &str, body: Bytes) -> anyhow::Result<Answer> {
    let resp = client.post(url).header("content-type", "application/x-protobuf").body(body).send().await?;
    let status = resp.status();
    let answer = resp.bytes().await?;
    Ok(match status.as_u16() {
        200 => Answer::Acked(rejected_in(&answer)),
        429 | 503 => Answer::Refused,
        s => Answer::Failed(format!("HTTP {s}: {}", String::from_utf8_lossy(&answer))),
    })
}

async fn grpc_export(
    channel: &mut tonic::transport::Channel,
    addr: SocketAddr,
    frame: Bytes,
) -> anyhow::Result<Answer> {
    let a = grpc_call(channel, addr, false, frame).await?;
    Ok(match a.status.as_str() {
        _ if a.ok => Answer::Acked(if a.body.len() > 5 && a.body[0] == 0 { rejected_in(&a.body[5..]) } else { 0 }),
        // UNAVAILABLE: the retry hint.
        "14" => Answer::Refused,
        s => Answer::Failed(format!("HTTP {}, grpc-status {s}: {}", a.http, a.message)),
    })
}

/// The server's `/metrics` values this benchmark follows.
#[derive(Debug, Default, Clone, Copy)]
struct Reading {
    accepted: f64,
    wal_bytes: f64,
    wal_written: f64,
    checkpoint_age_s: f64,
}

async fn read_metrics(client: &reqwest::Client, web: SocketAddr) -> anyhow::Result<Reading> {
    let text = client.get(format!("http://{web}/metrics")).send().await?.text().await?;
    let value = |prefix: &str| -> f64 {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    };
    Ok(Reading {
        accepted: value("cellpilot_ingest_spans_total{result=\"accepted\"}"),
        wal_bytes: value("cellpilot_wal_bytes "),
        wal_written: value("cellpilot_wal_written_bytes_total "),
        checkpoint_age_s: value("cellpilot_checkpoint_age_seconds "),
    })
}

/// Resident set size of this process (server and senders), in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0.0);
    pages * 4096.0 / (1 << 20) as f64
}

/// One progress line's figures.
#[derive(Debug, Clone, serde::Serialize)]
struct Interval {
    at_s: u64,
    counted_per_sec: f64,
    refused_fraction: f64,
    wal_bytes: f64,
    wal_bytes_per_span: f64,
    checkpoint_age_s: f64,
    rss_mib: f64,
}

/// What the run asks for.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Length of the run.
    pub seconds: u64,
    /// Concurrent senders.
    pub senders: usize,
    /// Spans/s the senders aim at together; `None`: as fast as they are answered.
    pub rate: Option<f64>,
    /// Which transports.
    pub transports: Transports,
}

/// Runs the benchmark and prints the figures.
pub fn run(json: bool, plan: Plan) -> anyhow::Result<()> {
    anyhow::ensure!(plan.senders > 0 && plan.seconds > 0, "--senders and --seconds must be at least 1");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(measure(json, plan))
}

async fn measure(json: bool, plan: Plan) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut c = Config::default();
    c.storage.dir = dir.path().to_path_buf();
    for addr in [&mut c.ingest.grpc_listen, &mut c.ingest.http_listen, &mut c.web.listen, &mut c.control.listen] {
        *addr = "127.0.0.1:0".into();
    }
    c.xds.listen = String::new();
    let server = cellpilot_server::serve::start(c).await?;
    let http = server.addrs.otlp_http.ok_or_else(|| anyhow::anyhow!("no OTLP/HTTP listener"))?;
    let grpc = server.addrs.otlp_grpc.ok_or_else(|| anyhow::anyhow!("no OTLP/gRPC listener"))?;
    let web = server.addrs.web;

    let mut rng = StdRng::seed_from_u64(30);
    let body = LogNormal::new((20_000f64).ln(), 0.5)?;
    let base_ns = SystemClock.now_ms() * 1_000_000;
    let templates: Arc<Vec<Template>> =
        Arc::new((0..TEMPLATES).map(|_| Template::new(&mut rng, &body, base_ns)).collect());
    let spans_per_export = templates.first().map_or(1, |t| t.spans) as f64;
    let every = plan.rate.map(|r| Duration::from_secs_f64(spans_per_export * plan.senders as f64 / r.max(1.0)));
    let (stop, tally) = (Arc::new(AtomicBool::new(false)), Arc::new(Tally::default()));
    let mut senders = tokio::task::JoinSet::new();
    for id in 0..plan.senders {
        let grpc_sender = match plan.transports {
            Transports::Http => false,
            Transports::Grpc => true,
            Transports::Both => id % 2 == 1,
        };
        let s = Sender {
            id,
            grpc: grpc_sender,
            addr: if grpc_sender { grpc } else { http },
            templates: templates.clone(),
            every,
            stop: stop.clone(),
            tally: tally.clone(),
        };
        senders.spawn(s.run());
    }

    let client = reqwest::Client::new();
    let start = cellpilot_core::clock::monotonic();
    let mut last = (cellpilot_core::clock::monotonic(), Reading::default(), 0u64, 0u64);
    let mut intervals = Vec::new();
    let (mut peak_wal, mut max_age) = (0f64, 0f64);
    let mut rss_after_minute: Vec<f64> = Vec::new();
    if !json {
        println!(
            "{:>6} {:>12} {:>8} {:>10} {:>8} {:>8} {:>9}",
            "t", "counted/s", "refused", "WAL MiB", "WAL B/sp", "ckpt s", "RSS MiB"
        );
    }
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(EVERY), Duration::from_secs(EVERY));
    while start.elapsed() < Duration::from_secs(plan.seconds) {
        tick.tick().await;
        let now = cellpilot_core::clock::monotonic();
        // A scrape the server did not answer (a reused connection it had closed) is tried again.
        let mut r = read_metrics(&client, web).await;
        for _ in 0..3 {
            if r.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            r = read_metrics(&client, web).await;
        }
        let r = r?;
        let (acked, refused) = (tally.acked.load(Ordering::Relaxed), tally.refused.load(Ordering::Relaxed));
        let (t0, r0, a0, f0) = last;
        let secs = (now - t0).as_secs_f64();
        let counted = r.accepted - r0.accepted;
        let (da, df) = ((acked - a0) as f64, (refused - f0) as f64);
        let rss = rss_mib();
        let i = Interval {
            at_s: start.elapsed().as_secs(),
            counted_per_sec: (counted / secs).round(),
            refused_fraction: if da + df > 0.0 { df / (da + df) } else { 0.0 },
            wal_bytes: r.wal_bytes,
            wal_bytes_per_span: if counted > 0.0 { (r.wal_written - r0.wal_written) / counted } else { 0.0 },
            checkpoint_age_s: r.checkpoint_age_s,
            rss_mib: rss,
        };
        peak_wal = peak_wal.max(r.wal_bytes);
        max_age = max_age.max(r.checkpoint_age_s);
        if i.at_s > 60 {
            rss_after_minute.push(rss);
        }
        if !json {
            println!(
                "{:>5}s {:>12.0} {:>7.2}% {:>10.1} {:>8.2} {:>8.1} {:>9.0}",
                i.at_s,
                i.counted_per_sec,
                i.refused_fraction * 100.0,
                i.wal_bytes / (1 << 20) as f64,
                i.wal_bytes_per_span,
                i.checkpoint_age_s,
                i.rss_mib
            );
        }
        intervals.push(i);
        last = (now, r, acked, refused);
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = senders.join_next().await {
        r??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let end = read_metrics(&client, web).await?;
    let (acked, refused, failed) = (
        tally.acked.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let counted = counted_to(web, acked, Duration::from_secs(60)).await?;
    server.run_until(async {}).await?;
    if let Some(why) = tally.first_failure.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        eprintln!("{failed} exports failed; the first: {why}");
    }
    anyhow::ensure!(counted == acked, "the server counted {counted} of {acked} acknowledged spans");
    anyhow::ensure!(failed == 0, "{failed} exports got neither an acknowledgement nor the retry hint");
    let rss_first = intervals.iter().filter(|i| i.at_s <= 60).map(|i| i.rss_mib).fold(0.0, f64::max);
    let rss_later_max = rss_after_minute.iter().copied().fold(0.0, f64::max);
    let refused_fraction = if acked + refused > 0 { refused as f64 / (acked + refused) as f64 } else { 0.0 };
    let per_span = if end.accepted > 0.0 { end.wal_written / end.accepted } else { 0.0 };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "sustained",
                "seconds": plan.seconds,
                "senders": plan.senders,
                "transports": plan.transports,
                "rate_target": plan.rate,
                "counted_spans_per_sec": (counted as f64 / elapsed).round(),
                "acked_spans": acked,
                "refused_spans": refused,
                "refused_fraction": (refused_fraction * 10_000.0).round() / 10_000.0,
                "peak_wal_bytes": peak_wal,
                "wal_bytes_per_span": (per_span * 100.0).round() / 100.0,
                "max_checkpoint_age_s": max_age,
                "rss_mib_first_minute_max": rss_first.round(),
                "rss_mib_after_first_minute_max": rss_later_max.round(),
                "intervals": intervals,
            })
        );
    } else {
        println!(
            "{counted} spans counted in {elapsed:.0} s ({:.0}/s), every acknowledged span; {refused} refused ({:.2}%)",
            counted as f64 / elapsed,
            refused_fraction * 100.0
        );
        println!(
            "peak WAL {:.1} MiB, {per_span:.2} WAL bytes per span, checkpoint age at most {max_age:.1} s",
            peak_wal / (1 << 20) as f64
        );
        println!("RSS: at most {rss_first:.0} MiB in the first minute, {rss_later_max:.0} MiB after it");
    }
    Ok(())
}
