//! Nothing acknowledged is lost: spans are sent while counting the acknowledged ones, the server
//! is killed with SIGKILL mid-load, restarted on the same data directory, and the rollups hold
//! exactly the acknowledged spans — none lost, none twice.

use crate::support::{Server, now_ns};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
        ..Default::default()
    }
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
            attributes: vec![kv("cell.id", if i % 2 == 0 { "d-1" } else { "d-2" })],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[("CELLPILOT_STORAGE__FSYNC", "always")]);
    let url = format!("http://{}/v1/traces", server.http);
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    for worker in 0..4u64 {
        let (url, acked, stop) = (url.clone(), acked.clone(), stop.clone());
        senders.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seq = worker << 32;
            while !stop.load(Ordering::Relaxed) {
                seq += 1;
                let n = 20 + (seq % 30) as usize;
                let resp = client
                    .post(&url)
                    .header("content-type", "application/x-protobuf")
                    .body(request(n, seq))
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                let Ok(resp) = resp else { continue };
                if resp.status() != 200 {
                    continue;
                }
                let Ok(body) = resp.bytes().await else { continue };
                let r = ExportTraceServiceResponse::decode(body).unwrap();
                assert!(r.partial_success.is_none(), "nothing is late here: {r:?}");
                acked.fetch_add(n as u64, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.load(Ordering::SeqCst);
    assert!(acked > 1000, "the load ran ({acked} spans acknowledged)");

    let restarted = Server::start_in(data.path(), &[]);
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/query", restarted.web))
        .json(&serde_json::json!({"sql": "SELECT sum(requests) AS n FROM rollups"}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["rows"][0][0], acked, "every acknowledged span exactly once: {body}");
    let cells = restarted.cells().await;
    let total: u64 = cells.iter().map(|c| c["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, acked);
}
