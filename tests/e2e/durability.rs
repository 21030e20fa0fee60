//! Nothing acknowledged is lost: spans are sent while counting the acknowledged ones, the server
//! is killed with SIGKILL mid-load, restarted on the same data directory, and the rollups hold
//! exactly the acknowledged spans — none lost, none twice. Every request carries its own route,
//! so each one is checked: acknowledged ones exactly once, the few in flight at the kill (whose
//! answer never came) all or nothing.

use crate::support::{Server, now_ns};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

fn route(seq: u64) -> String {
    format!("/r{seq}")
}

fn request(n: usize, seq: u64) -> Vec<u8> {
    let now = now_ns();
    let spans = (0..n)
        .map(|i| Span {
            trace_id: seq.to_be_bytes().repeat(2),
            span_id: (i as u64).to_be_bytes().to_vec(),
            name: "GET /d".into(),
            kind: 2,
            start_time_unix_nano: now - 3_000_000,
            end_time_unix_nano: now,
            attributes: vec![kv("cell.id", if i % 2 == 0 { "d-1" } else { "d-2" }), kv("http.route", &route(seq))],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "durable")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// Requests sent so far: seq -> (spans, acknowledged?); requests refused outright are not recorded.
pub(crate) type Sent = BTreeMap<u64, (u64, bool)>;

/// Four senders posting requests of 20..50 spans, each with its own route, to an OTLP/HTTP
/// `url` until stopped, recording which were acknowledged.
pub(crate) struct Load {
    sent: Arc<Mutex<Sent>>,
    stop: Arc<AtomicBool>,
    url: Arc<Mutex<String>>,
    senders: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(url: String) -> Load {
        let sent: Arc<Mutex<Sent>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let url = Arc::new(Mutex::new(url));
        let mut senders = Vec::new();
        for worker in 0..4u64 {
            let (url, sent, stop) = (url.clone(), sent.clone(), stop.clone());
            senders.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut seq = worker << 32;
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    let n = 20 + (seq % 30) as usize;
                    let url = url.lock().unwrap().clone();
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(request(n, seq))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let body = match resp {
                        Ok(resp) if resp.status() == 200 => resp.bytes().await.ok(),
                        Ok(_) => continue,
                        Err(e) if e.is_connect() => {
                            // The server is down (killed, restarting): nothing was sent.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                        Err(_) => None,
                    };
                    let acknowledged = body.is_some();
                    if let Some(body) = body {
                        let r = ExportTraceServiceResponse::decode(body).unwrap();
                        assert!(r.partial_success.is_none(), "nothing is late here: {r:?}");
                    }
                    sent.lock().unwrap().insert(seq, (n as u64, acknowledged));
                }
            }));
        }
        Load { sent, stop, url, senders }
    }

    /// Sends to `url` from now on (a restarted server).
    pub(crate) fn retarget(&self, url: String) {
        *self.url.lock().unwrap() = url;
    }

    /// Stops the senders; what they sent.
    pub(crate) async fn stop(self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.senders {
            s.await.unwrap();
        }
        let sent = self.sent.lock().unwrap().clone();
        let acked: u64 = sent.values().filter(|(_, a)| *a).map(|(n, _)| n).sum();
        assert!(acked > 1000, "the load ran ({acked} spans acknowledged)");
        sent
    }
}

/// `server` holds every acknowledged request of `sent` exactly once, each in-flight one all or
/// nothing, and nothing else.
pub(crate) async fn holds_exactly(server: &Server, sent: &Sent) {
    let query = |sql: &str| {
        let body = serde_json::json!({ "sql": sql });
        let url = format!("http://{}/api/v1/query", server.web);
        async move {
            reqwest::Client::new()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let total = query("SELECT sum(requests) AS n FROM rollups").await["rows"][0][0].as_u64().unwrap();
    let body = query("SELECT route, sum(requests) AS n FROM rollups GROUP BY route").await;
    let stored: BTreeMap<String, u64> = body["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_u64().unwrap()))
        .collect();
    let acked: u64 = sent.values().filter(|(_, a)| *a).map(|(n, _)| n).sum();
    let mut landed_in_doubt = 0;
    for (seq, (n, acknowledged)) in sent {
        let got = stored.get(&route(*seq)).copied();
        if *acknowledged {
            assert_eq!(got, Some(*n), "acknowledged request {seq} counted exactly once");
        } else {
            assert!(got.is_none() || got == Some(*n), "in-flight request {seq}: all or nothing, got {got:?} of {n}");
            landed_in_doubt += got.unwrap_or(0);
        }
    }
    let sent_routes: std::collections::BTreeSet<String> = sent.keys().map(|s| route(*s)).collect();
    for r in stored.keys() {
        assert!(sent_routes.contains(r), "{r} was never sent (or was refused)");
    }
    assert_eq!(total, acked + landed_in_doubt, "no span beyond what was sent");
    let cells = server.cells().await;
    let per_cell: u64 = cells.iter().map(|c| c["requests"].as_u64().unwrap()).sum();
    assert_eq!(per_cell, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[("CELLPILOT_STORAGE__FSYNC", "always")]);
    let load = Load::start(format!("http://{}/v1/traces", server.http));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = load.stop().await;
    let restarted = Server::start_in(data.path(), &[]);
    holds_exactly(&restarted, &sent).await;
}

/// kill -9 at random moments while checkpoints are taken every 100 ms and windows close within
/// two seconds (so checkpoints carry closed-row files the 5-minute Parquet bucket has not
/// taken): after several kills and restarts on one directory, every acknowledged request is
/// counted exactly once, and so after one more restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_through_checkpoints_loses_nothing() {
    use rand::{RngExt, SeedableRng};
    let env = [
        ("CELLPILOT_STORAGE__FSYNC", "always"),
        ("CELLPILOT_STORAGE__CHECKPOINT_INTERVAL", "100ms"),
        ("CELLPILOT_INGEST__WINDOW", "1s"),
        ("CELLPILOT_INGEST__ALLOWED_LATENESS", "1s"),
    ];
    let seed = now_ns();
    eprintln!("kill moments seeded with {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &env);
    let load = Load::start(format!("http://{}/v1/traces", server.http));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(700..2_500))).await;
        server.kill();
        server = Server::start_in(data.path(), &env);
        load.retarget(format!("http://{}/v1/traces", server.http));
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let sent = load.stop().await;
    let wal = data.path().join("wal");
    let checkpoints = std::fs::read_dir(&wal)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "ckpt"))
        .count();
    assert!(checkpoints >= 1, "checkpoints were written");
    holds_exactly(&server, &sent).await;
    server.kill();
    let restarted = Server::start_in(data.path(), &env);
    holds_exactly(&restarted, &sent).await;
}

/// A WAL at its cap refuses exports with the retry hint and says so on `/readyz`, while
/// checkpoints go on: space frees up by itself and exports are taken again, and nothing refused
/// is counted.
#[tokio::test]
async fn a_full_wal_refuses_with_the_retry_hint_then_frees_itself() {
    let server = Server::start(&[
        ("CELLPILOT_STORAGE__WAL_MAX_SIZE", "16KiB"),
        ("CELLPILOT_STORAGE__CHECKPOINT_INTERVAL", "1s"),
    ]);
    // Exports large enough to fill the cap between two checkpoints even on a loaded machine
    // (about 2 KiB of WAL each: eight fill it).
    const SPANS: u64 = 200;
    let client = reqwest::Client::new();
    let post = |seq: u64| {
        client
            .post(format!("http://{}/v1/traces", server.http))
            .header("content-type", "application/x-protobuf")
            .body(request(SPANS as usize, seq))
            .send()
    };
    let mut acked = 0u64;
    let mut seq = 0;
    let refused = loop {
        seq += 1;
        assert!(seq < 5_000, "the WAL cap was never reached");
        let resp = post(seq).await.unwrap();
        if resp.status() == 200 {
            acked += SPANS;
        } else {
            break (resp.status().as_u16(), resp.headers().get("retry-after").cloned());
        }
    };
    assert_eq!(refused.0, 429, "a full WAL is the retryable overload answer");
    assert!(refused.1.is_some());
    let ready = reqwest::get(format!("http://{}/readyz", server.web)).await.unwrap();
    let (status, body) = (ready.status().as_u16(), ready.text().await.unwrap());
    assert!(status == 503 && body.contains("wal full"), "{status} {body}");
    // Within two checkpoints the segments before them are dropped and exports are taken again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        seq += 1;
        let status = post(seq).await.unwrap().status();
        if status == 200 {
            acked += SPANS;
            break;
        }
        assert_eq!(status, 429);
        assert!(tokio::time::Instant::now() < deadline, "exports were not taken again within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total: u64 = server.cells().await.iter().map(|c| c["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, acked, "refused exports left nothing behind");
    let metrics = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    let full = metrics
        .lines()
        .find(|l| l.starts_with("cellpilot_ingest_overloaded_total{reason=\"wal_full\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert!(full.is_some_and(|n| n > 0), "refusals counted by reason");
    assert!(metrics.contains("cellpilot_checkpoint_age_seconds"));
    assert_eq!(reqwest::get(format!("http://{}/readyz", server.web)).await.unwrap().status(), 200);
}
