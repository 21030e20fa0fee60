//! Admission before reading: an export takes one of `max_concurrent_requests` slots before its
//! body is read, so a client that opens requests and trickles (or never sends) their bodies
//! costs slots, not memory, and everyone else hears the retry hint at once. A declared
//! Content-Length over the limit is refused before a byte of the body is read.
//!
//! And the flood (`#[ignore = "overload run: alone"]`; `.ci/run` runs it in a stage of its own,
//! ~45 s, since other tests' servers would take the CPU it measures): after measuring what this machine
//! sustains (sender included), 30 s of exports offered at 10x that rate, each retried after its
//! `Retry-After` as SDKs do. Every attempt is answered (200, 429 or 503 with a retry hint) within
//! the client's 10 s timeout, peak RSS stays under 1 GiB, the overview page and `/api/v1/cells`
//! answer within 1 s throughout, no control-loop tick is missed, and afterwards every acknowledged
//! span is counted exactly once.

use crate::support::{Server, now_ns, server_span, traces};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use prost::bytes::Bytes;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends the head of a `/v1/traces` POST declaring `len` body bytes, and no body yet.
async fn open_request(server: &Server, len: usize) -> TcpStream {
    let mut sock = TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {len}\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock
}

async fn status_line(sock: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_taken_before_bodies_are_read() {
    let server = Server::start(&[("CELLPILOT_INGEST__MAX_CONCURRENT_REQUESTS", "1")]);
    let body = traces(Some("web"), vec![server_span("slow-body", 200, now_ns(), 5_000_000)]);
    let mut holder = open_request(&server, body.len()).await;
    // Give the server time to take the slot for the held request.
    let mut refused = None;
    for _ in 0..50 {
        let r = server.post_otlp("traces", traces(Some("web"), vec![server_span("other", 200, now_ns(), 1)])).await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let refused = refused.expect("a second export is refused while the first holds the only slot");
    assert!(refused.headers().contains_key("retry-after"));
    let mut grpc = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    let req =
        ExportTraceServiceRequest::decode(traces(Some("web"), vec![server_span("other", 200, now_ns(), 1)]).as_slice())
            .unwrap();
    let status = grpc.export(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // The held request finishes and counts; the slot is free again.
    holder.write_all(&body).await.unwrap();
    assert!(status_line(&mut holder).await.contains("200"), "the held export is answered");
    assert_eq!(server.cell("slow-body").await["requests"], 1);
    assert_eq!(server.post_otlp("traces", body).await.status(), 200);

    // A declared size over the limit is refused without reading the body.
    let mut huge = open_request(&server, 1 << 40).await;
    assert!(status_line(&mut huge).await.contains("413"));
}

/// Spans per export: a collector's batch.
const BATCH: usize = 5_000;

/// What a run got.
#[derive(Default)]
struct Tally {
    /// Spans acknowledged, per cell (200 minus `partial_success` rejections).
    acked: BTreeMap<String, u64>,
    offered_spans: u64,
    /// Exports the sender could not start because `MAX_OUTSTANDING` were already out.
    not_offered: u64,
    attempts: u64,
    refused: u64,
    slowest_answer: Duration,
}

type Shared = Arc<Mutex<Tally>>;

/// Exports out at once, across every sender (under `[transport] max_connections`, so every
/// connection is served rather than left in the kernel's backlog).
const MAX_OUTSTANDING: usize = 300;

/// Sends one export, retrying a refusal (429 / 503) after its `Retry-After` the way an SDK
/// does, at most 5 times.
async fn export(client: reqwest::Client, http: SocketAddr, cell: String, body: Bytes, tally: Shared) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    for _ in 0..6 {
        let started = cellpilot_core::clock::monotonic();
        let r = client
            .post(format!("http://{http}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("an export was not answered within the client's timeout: {e:?}"));
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let bytes = r.bytes().await.unwrap();
        let wait = {
            let mut t = tally.lock().unwrap();
            t.attempts += 1;
            t.slowest_answer = t.slowest_answer.max(started.elapsed());
            match status {
                200 => {
                    let resp = ExportTraceServiceResponse::decode(bytes.as_ref()).unwrap();
                    let rejected = resp.partial_success.map_or(0, |p| p.rejected_spans as u64);
                    *t.acked.entry(cell).or_default() += BATCH as u64 - rejected;
                    return;
                }
                429 | 503 => {
                    t.refused += 1;
                    retry_after.expect("a refusal says when to retry")
                }
                other => panic!("export answered {other}: {}", String::from_utf8_lossy(&bytes)),
            }
        };
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

/// Offers `rate` spans/s over `cells` cells for `secs` seconds without waiting for answers
/// (each export on its own task); `rate = None`: as fast as `closed` exports at a time allow.
async fn offer(server: &Server, cells: usize, rate: Option<f64>, closed: usize, secs: u64, tag: &str) -> Tally {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let tally = Shared::default();
    let until = cellpilot_core::clock::monotonic() + Duration::from_secs(secs);
    let every = Duration::from_secs_f64(BATCH as f64 / rate.unwrap_or(1e12));
    let mut tick = tokio::time::interval(every.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let limit = if rate.is_some() { MAX_OUTSTANDING } else { closed };
    // Bodies are re-encoded every 5 s: fresh enough for any window, cheap enough to offer 10x.
    let mut bodies: Vec<Option<(Instant, Bytes)>> = vec![None; cells];
    let mut n = 0usize;
    while cellpilot_core::clock::monotonic() < until {
        if rate.is_some() {
            tick.tick().await;
        }
        while let Some(done) = tasks.try_join_next() {
            done.unwrap();
        }
        if tasks.len() >= limit {
            if rate.is_some() {
                tally.lock().unwrap().not_offered += 1;
            } else if let Some(done) = tasks.join_next().await {
                done.unwrap();
            }
            continue;
        }
        let i = n % cells;
        n += 1;
        let cell = format!("{tag}-{i:02}");
        let slot = &mut bodies[i];
        if slot.as_ref().is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(5)) {
            let now = now_ns();
            let spans = (0..BATCH).map(|_| server_span(&cell, 200, now, 3_000_000)).collect();
            *slot = Some((cellpilot_core::clock::monotonic(), traces(Some("load"), spans).into()));
        }
        let body = slot.as_ref().map(|(_, b)| b.clone()).unwrap_or_default();
        tally.lock().unwrap().offered_spans += BATCH as u64;
        tasks.spawn(export(client.clone(), server.http, cell, body, tally.clone()));
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    Arc::try_unwrap(tally).ok().unwrap().into_inner().unwrap()
}

fn acked_total(t: &Tally) -> u64 {
    t.acked.values().sum()
}

fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

async fn metric(server: &Server, name: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "overload run: alone, in its own .ci/run stage"]
async fn ten_times_the_sustainable_rate_for_thirty_seconds() {
    // Hundreds of collectors, all on this one loopback address.
    let server = Server::start(&[("CELLPILOT_TRANSPORT__MAX_CONNECTIONS_PER_IP", "1024")]);
    // What this machine sustains, sender included: 8 exports at a time, back to back.
    let calibration = offer(&server, 16, None, 8, 5, "calibrate").await;
    let sustainable = acked_total(&calibration) as f64 / 5.0;
    assert!(sustainable > 0.0 && calibration.refused == 0);
    let evaluations_before = metric(&server, "cellpilot_control_evaluations_total").await;

    // Probes: the overview page and /api/v1/cells every 250 ms while the flood runs.
    let (web, stop) = (server.web, Arc::new(AtomicBool::new(false)));
    let probe = tokio::spawn({
        let stop = stop.clone();
        async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
            let mut slowest = Duration::ZERO;
            let mut probes = 0;
            while !stop.load(Ordering::Acquire) {
                for path in ["/", "/api/v1/cells"] {
                    let started = cellpilot_core::clock::monotonic();
                    let r = client.get(format!("http://{web}{path}")).send().await.expect("answered");
                    assert_eq!(r.status(), 200, "{path}");
                    let _ = r.bytes().await;
                    slowest = slowest.max(started.elapsed());
                    probes += 1;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (probes, slowest)
        }
    });

    let flood = offer(&server, 16, Some(10.0 * sustainable), 0, 30, "flood").await;
    stop.store(true, Ordering::Release);
    let (probes, slowest_probe) = probe.await.unwrap();
    let rss = peak_rss_mib(server.pid());
    eprintln!(
        "overload: sustainable {sustainable:.0} spans/s; offered {:.0} spans/s new, {:.0} spans/s with retries \
         ({} exports not started at {MAX_OUTSTANDING} out), acked {} spans; {} attempts, {} refused; \
         slowest export answer {:?}; {probes} probes, slowest {slowest_probe:?}; peak RSS {rss} MiB",
        flood.offered_spans as f64 / 30.0,
        (flood.attempts * BATCH as u64) as f64 / 30.0,
        flood.not_offered,
        acked_total(&flood),
        flood.attempts,
        flood.refused,
        flood.slowest_answer,
    );
    assert!(rss < 1024, "peak resident memory {rss} MiB");
    assert!(slowest_probe < Duration::from_secs(1), "a page or /api/v1/cells took {slowest_probe:?}");
    let evaluations = metric(&server, "cellpilot_control_evaluations_total").await - evaluations_before;
    assert!(evaluations >= 2.0, "{evaluations} evaluations in 30 s of 10 s windows");
    assert_eq!(metric(&server, "cellpilot_control_ticks_missed_total").await, 0.0, "no evaluation tick was missed");

    // Every acknowledged span counted exactly once, retries included.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for t in [&calibration, &flood] {
        for (c, n) in &t.acked {
            *want.entry(c.clone()).or_default() += n;
        }
    }
    let got: BTreeMap<String, u64> = server
        .cells()
        .await
        .iter()
        .filter_map(|c| Some((c["cell"].as_str()?.to_string(), c["requests"].as_u64()?)))
        .filter(|(c, n)| *n > 0 && (c.starts_with("calibrate-") || c.starts_with("flood-")))
        .collect();
    want.retain(|_, n| *n > 0);
    assert_eq!(got, want);
}
