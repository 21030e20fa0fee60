//! `GET /api/v1/slos` and `GET /api/v1/sla/{slo}` over OTLP data: exact bad events and a
//! cell split that sums to 100 %.

use crate::support::{Server, kv, now_ms, now_ns};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

#[tokio::test]
async fn sla_report_attributes_bad_events() {
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    use std::io::Write;
    write!(cfg, "[[slo]]\nname = \"checkout\"\navailability = 0.999\nlatency_p999_ms = 500\nselector = {{ service = \"checkout\" }}\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], data.path(), &[]);
    let now = now_ns();
    // (cell, latency, status, how many). checkout: cell x fails 30 of 200, cell y 0 of 200 with
    // 4 slow (800 ms) successes; z fails more requests (22, two of them slow) than it has slow
    // ones (5): its three slow successes are bad for latency however its failures were timed.
    let shape = [
        ("x", 10, 500, 30),
        ("x", 10, 200, 170),
        ("y", 800, 200, 4),
        ("y", 10, 200, 196),
        ("z", 10, 500, 20),
        ("z", 800, 500, 2),
        ("z", 800, 200, 3),
        ("z", 10, 200, 75),
    ];
    let mut spans = Vec::new();
    for &(cell, ms, status, n) in &shape {
        for _ in 0..n {
            let latency = ms * 1_000_000;
            spans.push(Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "POST /buy".into(),
                kind: 2,
                start_time_unix_nano: now - latency,
                end_time_unix_nano: now,
                attributes: vec![
                    kv("cell.id", Value::StringValue(cell.into())),
                    kv("http.response.status_code", Value::IntValue(status)),
                ],
                ..Default::default()
            });
        }
    }
    // Ground truth from the spans: failures, and successes slower than the 500 ms objective.
    let count = |cell: Option<&str>, slow_ok: bool| -> u64 {
        let counted = |&&(c, ms, status, _): &&(&str, u64, i64, u64)| {
            cell.is_none_or(|w| w == c) && if slow_ok { status == 200 && ms > 500 } else { status == 500 }
        };
        shape.iter().filter(counted).map(|s| s.3).sum()
    };
    let (failed, failed_x) = (count(None, false), count(Some("x"), false));
    let (slow_ok, slow_ok_y) = (count(None, true), count(Some("y"), true));
    let req = |service: &str, spans: Vec<Span>| ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let other = spans.clone();
    assert_eq!(server.post_otlp("traces", req("checkout", spans).encode_to_vec()).await.status(), 200);
    // Another service's errors are outside the SLO's selector.
    assert_eq!(server.post_otlp("traces", req("search", other).encode_to_vec()).await.status(), 200);

    let slos = server.get_json("/api/v1/slos").await;
    assert_eq!(slos["slos"][0]["name"], "checkout");
    assert_eq!(slos["slos"][0]["selector"]["service"], "checkout");
    let from = now_ms() - 600_000;
    let r = server.get_json(&format!("/api/v1/sla/checkout?from={from}")).await;
    assert_eq!(r["requests"], 500);
    let a = &r["availability"];
    assert_eq!(a["bad_events"], failed);
    assert!((a["budget"].as_f64().unwrap() - 0.5).abs() < 1e-9, "0.1 % of 500");
    assert_eq!(a["attribution"]["cell"][0]["key"], "x");
    let share = a["attribution"]["cell"][0]["share"].as_f64().unwrap();
    assert!((share - failed_x as f64 / failed as f64).abs() < 1e-9, "{share}");
    assert_eq!(a["attribution"]["cause"][0]["key"], "5xx");
    assert_eq!(r["latency"]["bad_events"], slow_ok, "y's four and z's three slow successes");
    assert_eq!(r["latency"]["attribution"]["cell"][0]["key"], "y");
    let share = r["latency"]["attribution"]["cell"][0]["share"].as_f64().unwrap();
    assert!((share - slow_ok_y as f64 / slow_ok as f64).abs() < 1e-9, "{share}");
    // The failures' own latencies over SQL: x failed fast, z also slowly, y never.
    let sql = "SELECT cell, latency_quantile(error_latency_hist, 1.0) AS q FROM rollups \
               WHERE service = 'checkout' GROUP BY cell ORDER BY cell";
    let rows: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/api/v1/query", server.web))
        .json(&serde_json::json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let q = |i: usize| rows["rows"][i][1].as_f64();
    assert_eq!(rows["rows"].as_array().map(Vec::len), Some(3), "{rows}");
    assert!(q(0).is_some_and(|us| (us - 10_000.0).abs() < 100.0), "{rows}");
    assert_eq!(q(1), None, "{rows}");
    assert!(q(2).is_some_and(|us| (us - 800_000.0).abs() < 8_000.0), "{rows}");
    let missing = reqwest::get(format!("http://{}/api/v1/sla/nope", server.web)).await.unwrap();
    assert_eq!(missing.status(), 404);
}
