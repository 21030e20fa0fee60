//! Spans through the real `opentelemetry-otlp` exporter (gRPC and HTTP/protobuf) and hand-built
//! OTLP JSON: per-cell counts exact, P99.9 within 1 % of the exact value from the same samples.

use crate::support::{Server, assert_within_1pct, heavy_tailed, nearest_rank, now_ns};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Status, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// What the test sent to one cell.
#[derive(Default)]
struct Truth {
    latencies_us: Vec<u64>,
    errors: u64,
}

fn provider(exporter: opentelemetry_otlp::SpanExporter, resource: Resource) -> SdkTracerProvider {
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(100_000)
        .with_max_export_batch_size(512)
        .with_scheduled_delay(Duration::from_millis(100))
        .build();
    SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
        .with_resource(resource)
        .build()
}

/// Sends `n` spans per cell; cells in `span_cells` carry `cell.id` on the span, the provider's
/// resource carries `cell = resource_cell` for spans sent without one.
fn send_spans(
    provider: &SdkTracerProvider,
    cells: &[(&str, bool)],
    n: usize,
    seed: u64,
    truth: &mut BTreeMap<String, Truth>,
) {
    let tracer = provider.tracer("e2e");
    let now = now_ns();
    for (ci, (cell, on_span)) in cells.iter().enumerate() {
        let lat = heavy_tailed(seed + ci as u64, n);
        let t = truth.entry(cell.to_string()).or_default();
        for (i, &us) in lat.iter().enumerate() {
            // Ends spread over the last 5 s, all in windows that are still open.
            let end = UNIX_EPOCH + Duration::from_nanos(now - (i as u64 % 5000) * 1_000_000);
            let start = end - Duration::from_micros(us);
            let mut attrs =
                vec![KeyValue::new("http.route", format!("/r{}", i % 7)), KeyValue::new("http.request.method", "GET")];
            if *on_span {
                attrs.push(KeyValue::new("cell.id", cell.to_string()));
            }
            let failed_http = i % 97 == 0;
            let failed_status = i % 89 == 1;
            attrs.push(KeyValue::new("http.response.status_code", if failed_http { 503i64 } else { 200 }));
            let mut span = tracer
                .span_builder(format!("GET /r{}", i % 7))
                .with_kind(SpanKind::Server)
                .with_start_time(start)
                .with_attributes(attrs)
                .start(&tracer);
            if failed_status {
                span.set_status(Status::error("boom"));
            }
            span.end_with_timestamp(end);
            t.latencies_us.push(us);
            t.errors += u64::from(failed_http || failed_status);
        }
        // Client spans are not requests and must not count.
        let mut client = tracer.span_builder("outbound").with_kind(SpanKind::Client).start(&tracer);
        client.set_attribute(KeyValue::new("cell.id", cell.to_string()));
        client.end();
    }
}

async fn check(server: &Server, truth: &BTreeMap<String, Truth>) {
    for (cell, t) in truth {
        let c = server.cell(cell).await;
        assert_eq!(c["requests"], t.latencies_us.len() as u64, "{cell} requests");
        assert_eq!(c["errors"], t.errors, "{cell} errors");
        let rate = t.errors as f64 / t.latencies_us.len() as f64;
        assert!((c["error_rate"].as_f64().unwrap() - rate).abs() < 1e-12, "{cell} error_rate");
        assert_eq!(c["latency_exact"], true);
        assert_within_1pct(
            &format!("{cell} p999"),
            c["p999_ms"].as_f64().unwrap(),
            nearest_rank(&t.latencies_us, 0.999),
        );
        assert_within_1pct(&format!("{cell} p99"), c["p99_ms"].as_f64().unwrap(), nearest_rank(&t.latencies_us, 0.99));
        assert_within_1pct(&format!("{cell} p50"), c["p50_ms"].as_f64().unwrap(), nearest_rank(&t.latencies_us, 0.5));
    }
}

async fn flush(p: SdkTracerProvider) {
    cellpilot_core::task::blocking(move || {
        p.force_flush().expect("flush");
        p.shutdown().expect("shutdown");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_grpc_counts_exactly() {
    let server = Server::start(&[]);
    let endpoint = format!("http://{}", server.grpc);
    let exporter = || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_compression(opentelemetry_otlp::Compression::Gzip)
            .build()
            .unwrap()
    };
    let mut truth = BTreeMap::new();
    let on_span = provider(exporter(), Resource::builder().with_service_name("checkout").build());
    send_spans(&on_span, &[("bj-unit-07", true), ("sh-unit-02", true)], 6000, 1, &mut truth);
    let on_resource = provider(
        exporter(),
        Resource::builder().with_service_name("payments").with_attribute(KeyValue::new("cell", "gz-unit-01")).build(),
    );
    send_spans(&on_resource, &[("gz-unit-01", false)], 6000, 10, &mut truth);
    flush(on_span).await;
    flush(on_resource).await;
    check(&server, &truth).await;
    let cells: Vec<_> = server.cells().await.iter().map(|c| c["cell"].as_str().unwrap().to_string()).collect();
    assert_eq!(cells, ["bj-unit-07", "gz-unit-01", "sh-unit-02"], "client spans and resources add no cells");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_protobuf_counts_exactly() {
    let server = Server::start(&[]);
    let endpoint = format!("http://{}/v1/traces", server.http);
    // The blocking HTTP client must be built off the async runtime.
    let mut truth = BTreeMap::new();
    let p = cellpilot_core::task::blocking(move || {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()
            .unwrap();
        provider(exporter, Resource::builder().with_service_name("search").build())
    })
    .await
    .unwrap();
    send_spans(&p, &[("bj-unit-01", true), ("bj-unit-02", true)], 5000, 20, &mut truth);
    flush(p).await;
    check(&server, &truth).await;
}

#[tokio::test]
async fn hand_built_otlp_json() {
    let server = Server::start(&[]);
    let now = now_ns();
    let lat = heavy_tailed(99, 3000);
    let spans: Vec<_> = lat
        .iter()
        .enumerate()
        .map(|(i, us)| {
            let end = now - (i as u64 % 3000) * 1_000_000;
            let mut attrs = vec![
                serde_json::json!({"key": "rpc.service", "value": {"stringValue": "Pay"}}),
                serde_json::json!({"key": "rpc.method", "value": {"stringValue": "Charge"}}),
            ];
            if i % 50 == 0 {
                attrs.push(serde_json::json!({"key": "rpc.grpc.status_code", "value": {"intValue": "14"}}));
            }
            // Alternate int64 encodings: OTLP JSON allows strings and numbers.
            let start = end - us * 1000;
            let (s, e) = if i % 2 == 0 {
                (serde_json::json!(start.to_string()), serde_json::json!(end.to_string()))
            } else {
                (serde_json::json!(start), serde_json::json!(end))
            };
            serde_json::json!({
                "traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1),
                "name": "Charge", "kind": 2, "startTimeUnixNano": s, "endTimeUnixNano": e,
                "attributes": attrs
            })
        })
        .collect();
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "pay"}},
            {"key": "cell.id", "value": {"stringValue": "json-cell"}}]},
        "scopeSpans": [{"scope": {"name": "hand"}, "spans": spans}]}]});
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}", "full success leaves partial_success unset");
    let c = server.cell("json-cell").await;
    assert_eq!(c["requests"], 3000);
    assert_eq!(c["errors"], 60);
    assert_within_1pct("json p999", c["p999_ms"].as_f64().unwrap(), nearest_rank(&lat, 0.999));
}
