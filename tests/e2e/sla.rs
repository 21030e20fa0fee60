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
    let mut spans = Vec::new();
    // checkout: cell x fails 30 of 200, cell y 0 of 200; 4 of y's are slow (800 ms).
    for (cell, n, failing, slow) in [("x", 200, 30, 0), ("y", 200, 0, 4)] {
        for i in 0..n {
            let latency = if i < slow { 800_000_000 } else { 10_000_000 };
            spans.push(Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "POST /buy".into(),
                kind: 2,
                start_time_unix_nano: now - latency,
                end_time_unix_nano: now,
                attributes: vec![
                    kv("cell.id", Value::StringValue(cell.into())),
                    kv("http.response.status_code", Value::IntValue(if i < failing { 500 } else { 200 })),
                ],
                ..Default::default()
            });
        }
    }
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
    assert_eq!(r["requests"], 400);
    let a = &r["availability"];
    assert_eq!(a["bad_events"], 30);
    assert!((a["budget"].as_f64().unwrap() - 0.4).abs() < 1e-9, "0.1 % of 400");
    assert_eq!(a["attribution"]["cell"][0]["key"], "x");
    assert_eq!(a["attribution"]["cell"][0]["share"], 1.0);
    assert_eq!(a["attribution"]["cause"][0]["key"], "5xx");
    assert_eq!(r["latency"]["bad_events"], 4, "y's four slow successes");
    assert_eq!(r["latency"]["attribution"]["cell"][0]["key"], "y");
    let missing = reqwest::get(format!("http://{}/api/v1/sla/nope", server.web)).await.unwrap();
    assert_eq!(missing.status(), 404);
}
