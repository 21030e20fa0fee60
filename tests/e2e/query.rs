//! `POST /api/v1/query`: SQL over the rollups with the histogram functions, checked against ground
//! truth computed here; read-only and bounded.

use crate::support::{Server, assert_within_1pct, heavy_tailed, nearest_rank, now_ns};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::collections::BTreeMap;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// Sends `n` spans per cell over OTLP/HTTP; returns the latencies per cell.
async fn seed(server: &Server, cells: &[&str], n: usize) -> BTreeMap<String, Vec<u64>> {
    let now = now_ns();
    let mut truth = BTreeMap::new();
    let mut spans = Vec::new();
    for (ci, cell) in cells.iter().enumerate() {
        let lat = heavy_tailed(500 + ci as u64, n);
        for (i, us) in lat.iter().enumerate() {
            let end = now - (i as u64 % 20_000) * 1_000_000;
            spans.push(Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: format!("GET /q{}", i % 3),
                kind: 2,
                start_time_unix_nano: end - us * 1000,
                end_time_unix_nano: end,
                attributes: vec![kv("cell.id", cell), kv("http.route", &format!("/q{}", i % 3))],
                ..Default::default()
            });
        }
        truth.insert(cell.to_string(), lat);
    }
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "sql")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let resp = server.post_otlp("traces", req.encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    truth
}

async fn sql(server: &Server, q: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/query", server.web))
        .json(&serde_json::json!({ "sql": q }))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn quantiles_over_merged_histograms_match_ground_truth() {
    let server = Server::start(&[]);
    let truth = seed(&server, &["q-a", "q-b"], 4000).await;
    for table in ["rollups", "rollups_5m", "rollups_1h"] {
        let (status, body) = sql(
            &server,
            &format!(
                "SELECT cell, sum(requests) AS n, latency_quantile(latency_hist, 0.999) / 1000 AS p999_ms, \
                 hdr_quantile(hdr_merge(latency_hist), 0.5) / 1000 AS p50_ms \
                 FROM {table} GROUP BY cell ORDER BY cell"
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let names: Vec<_> = body["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["cell", "n", "p999_ms", "p50_ms"]);
        let rows = body["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{table}: {body}");
        for row in rows {
            let lat = &truth[row[0].as_str().unwrap()];
            assert_eq!(row[1], lat.len() as u64, "{table} requests");
            assert_within_1pct(&format!("{table} p999"), row[2].as_f64().unwrap(), nearest_rank(lat, 0.999));
            assert_within_1pct(&format!("{table} p50"), row[3].as_f64().unwrap(), nearest_rank(lat, 0.5));
        }
    }
    // Timestamps come back as RFC 3339, binary as base64.
    let (status, body) = sql(&server, "SELECT window_start, latency_hist FROM rollups LIMIT 1").await;
    assert_eq!(status, 200);
    assert!(body["rows"][0][0].as_str().unwrap().ends_with('Z'));
    assert!(body["rows"][0][1].as_str().is_some());
}

#[tokio::test]
async fn arrow_ipc_on_request() {
    let server = Server::start(&[]);
    seed(&server, &["ipc"], 10).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/query", server.web))
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&serde_json::json!({ "sql": "SELECT cell, sum(requests) AS n FROM rollups GROUP BY cell" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/vnd.apache.arrow.stream");
    let bytes = resp.bytes().await.unwrap();
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}

#[tokio::test]
async fn writes_and_oversized_results_are_refused() {
    let server = Server::start(&[("CELLPILOT_QUERY__MAX_ROWS", "5")]);
    seed(&server, &["r1", "r2", "r3"], 30).await;
    for (q, needle) in [
        ("CREATE TABLE t AS SELECT 1", "read-only"),
        ("DROP TABLE rollups", "read-only"),
        ("INSERT INTO decisions SELECT * FROM decisions", "read-only"),
        ("COPY (SELECT 1) TO '/tmp/cellpilot-copy.csv'", "read-only"),
        ("SET datafusion.execution.batch_size = 1", "read-only"),
        ("SELECT 1; SELECT 2", "single SQL statement"),
        ("SELEC cell FROM rollups", "SELEC"),
        ("SELECT * FROM rollups", "more than 5 rows"),
        ("SELECT latency_quantile(latency_hist, 1.5) FROM rollups", "outside 0..1"),
    ] {
        let (status, body) = sql(&server, q).await;
        assert_eq!(status, 400, "{q}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{q}: `{msg}` should mention `{needle}`");
    }
    assert!(!std::path::Path::new("/tmp/cellpilot-copy.csv").exists(), "COPY wrote nothing");
    let (status, _) = sql(&server, "SELECT cell FROM rollups GROUP BY cell").await;
    assert_eq!(status, 200, "3 rows are within max_rows");
}

#[tokio::test]
async fn memory_and_time_limits_refuse_queries() {
    let server = Server::start(&[("CELLPILOT_QUERY__MEMORY_LIMIT", "1KiB")]);
    seed(&server, &["m1", "m2", "m3"], 2000).await;
    let (status, body) = sql(
        &server,
        "SELECT cell, route, latency_quantile(latency_hist, 0.999) FROM rollups GROUP BY cell, route ORDER BY 3",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("Resources exhausted") || msg.contains("memory"), "{msg}");
    drop(server);

    let server = Server::start(&[("CELLPILOT_QUERY__TIMEOUT", "200ms")]);
    // Ten billion rows: far longer than the limit on any machine.
    let (status, body) = sql(&server, "SELECT count(*) FROM generate_series(1, 10000000000)").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("time limit"), "{body}");
}

#[tokio::test]
async fn series_buckets_and_merges_dimensions() {
    let server = Server::start(&[]);
    let truth = seed(&server, &["s-a", "s-b"], 600).await;
    let all = server.get_json("/api/v1/series?step=10s").await;
    let points = all["series"][0]["points"].as_array().unwrap();
    let total: u64 = points.iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, 1200, "both cells merged");
    for p in points {
        let t = unix_ms(p["t"].as_str().unwrap());
        assert_eq!(t % 10_000, 0, "buckets start on the step");
    }
    let one = server.get_json("/api/v1/series?cell=s-a&route=/q1&step=1m").await;
    let total: u64 =
        one["series"][0]["points"].as_array().unwrap().iter().map(|p| p["requests"].as_u64().unwrap()).sum();
    assert_eq!(total, truth["s-a"].iter().enumerate().filter(|(i, _)| i % 3 == 1).count() as u64);
    assert_eq!(one["series"][0]["cell"], "s-a");
    let bad = reqwest::get(format!("http://{}/api/v1/series?step=7ms", server.web)).await.unwrap();
    assert_eq!(bad.status(), 400);
}

/// Unix ms of an RFC 3339 timestamp from the API.
fn unix_ms(s: &str) -> i64 {
    humantime::parse_rfc3339(s).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
