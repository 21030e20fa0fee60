//! Latency histograms as metrics: the real SDK's cumulative histograms exported several times are
//! counted once; resets, baselines, units, delta points and the spans-win rule.

use crate::support::{Server, now_ns};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as PbKeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prost::Message;
use std::time::Duration;

fn pb_kv(k: &str, v: Value) -> PbKeyValue {
    PbKeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

/// One explicit-bucket histogram point of `http.server.request.duration` from `service` / `cell`.
fn histogram(
    service: &str,
    cell: &str,
    unit: &str,
    temporality: AggregationTemporality,
    (start, time): (u64, u64),
    bounds: &[f64],
    counts: &[u64],
) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![pb_kv("service.name", Value::StringValue(service.into()))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.request.duration".into(),
                    unit: unit.into(),
                    data: Some(Data::Histogram(Histogram {
                        aggregation_temporality: temporality as i32,
                        data_points: vec![HistogramDataPoint {
                            attributes: vec![
                                pb_kv("cell.id", Value::StringValue(cell.into())),
                                pb_kv("http.route", Value::StringValue("/pay".into())),
                            ],
                            start_time_unix_nano: start,
                            time_unix_nano: time,
                            count: counts.iter().sum(),
                            bucket_counts: counts.to_vec(),
                            explicit_bounds: bounds.to_vec(),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn send(server: &Server, req: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse {
    let resp = server.post_otlp("metrics", req.encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    ExportMetricsServiceResponse::decode(resp.bytes().await.unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_cumulative_histograms_are_not_double_counted() {
    let server = Server::start(&[]);
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", server.grpc))
        .with_compression(opentelemetry_otlp::Compression::Gzip)
        .build()
        .unwrap();
    let reader = PeriodicReader::builder(exporter).with_interval(Duration::from_secs(3600)).build();
    let provider = SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(opentelemetry_sdk::Resource::builder().with_service_name("ledger").build())
        .build();
    let hist = provider
        .meter("e2e")
        .f64_histogram("http.server.request.duration")
        .with_unit("s")
        .with_boundaries(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        .build();
    let mut sent = 0u64;
    let mut errors = 0u64;
    let mut record = |n: usize| {
        for i in 0..n {
            let status = if i % 25 == 0 { 503 } else { 200 };
            let attrs = [
                KeyValue::new("cell.id", "metrics-cell"),
                KeyValue::new("http.route", "/ledger"),
                KeyValue::new("http.response.status_code", status as i64),
            ];
            hist.record(0.003 + (i % 40) as f64 * 0.005, &attrs);
            sent += 1;
            errors += u64::from(status == 503);
        }
    };
    let flush = |p: SdkMeterProvider| async move {
        cellpilot_core::task::blocking(move || {
            p.force_flush().unwrap();
            p
        })
        .await
        .unwrap()
    };
    record(300);
    let provider = flush(provider).await;
    record(200);
    let provider = flush(provider).await;
    // An export with nothing new, then shutdown's final export: both repeat the cumulative totals.
    let provider = flush(provider).await;
    cellpilot_core::task::blocking(move || provider.shutdown().unwrap()).await.unwrap();

    let c = server.cell("metrics-cell").await;
    assert_eq!(c["requests"], sent, "each recorded value counted once");
    assert_eq!(c["errors"], errors);
    assert_eq!(c["latency_exact"], false, "bucketed histograms are marked");
}

#[tokio::test]
async fn counter_resets_and_baselines() {
    let server = Server::start(&[]);
    let now = now_ns();
    let s = 1_000_000_000u64;
    let b = [0.1, 1.0];
    let cum = AggregationTemporality::Cumulative;
    // Fresh stream: counts from its start.
    send(&server, histogram("reset", "m-reset", "s", cum, (now - 5 * s, now - 4 * s), &b, &[4, 1, 0])).await;
    send(&server, histogram("reset", "m-reset", "s", cum, (now - 5 * s, now - 3 * s), &b, &[10, 3, 1])).await;
    // Restart (new start time): counts afresh.
    send(&server, histogram("reset", "m-reset", "s", cum, (now - 2 * s, now - s), &b, &[2, 0, 0])).await;
    // Falling count with the same start: a reset too.
    send(&server, histogram("reset", "m-reset", "s", cum, (now - 2 * s, now), &b, &[1, 0, 0])).await;
    assert_eq!(server.cell("m-reset").await["requests"], 5 + 9 + 2 + 1);

    // A stream that started two hours ago: its first point is only a baseline.
    send(&server, histogram("old", "m-baseline", "s", cum, (now - 7200 * s, now - s), &b, &[100, 0, 0])).await;
    send(&server, histogram("old", "m-baseline", "s", cum, (now - 7200 * s, now), &b, &[103, 0, 0])).await;
    assert_eq!(server.cell("m-baseline").await["requests"], 3);
}

#[tokio::test]
async fn units_delta_points_and_spans_win() {
    let server = Server::start(&[]);
    let now = now_ns();
    let delta = AggregationTemporality::Delta;
    // Milliseconds: 5 samples in (10, 100] ms are reported at the bucket's upper bound.
    send(&server, histogram("ms-svc", "m-ms", "ms", delta, (now - 1_000_000_000, now), &[10.0, 100.0], &[0, 5, 0]))
        .await;
    let c = server.cell("m-ms").await;
    assert_eq!(c["requests"], 5);
    let p50 = c["p50_ms"].as_f64().unwrap();
    assert!((p50 - 100.0).abs() / 100.0 < 0.01, "p50 {p50} ms at the bucket bound");

    // A unit that is not time is rejected, and says so.
    let r = send(&server, histogram("ms-svc", "m-bytes", "By", delta, (now - 1, now), &[10.0], &[1, 0])).await;
    let partial = r.partial_success.expect("rejected");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(partial.error_message.contains("not a time unit"), "{}", partial.error_message);

    // A service that sends spans has its latency metrics ignored.
    let span_req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            resource: Some(Resource {
                attributes: vec![pb_kv("service.name", Value::StringValue("both".into()))],
                ..Default::default()
            }),
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                spans: vec![opentelemetry_proto::tonic::trace::v1::Span {
                    trace_id: vec![1; 16],
                    span_id: vec![1; 8],
                    name: "GET /pay".into(),
                    kind: 2,
                    start_time_unix_nano: now - 1_000_000,
                    end_time_unix_nano: now,
                    attributes: vec![pb_kv("cell.id", Value::StringValue("both-cell".into()))],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let resp = server.post_otlp("traces", span_req.encode_to_vec()).await;
    assert_eq!(resp.status(), 200);
    send(&server, histogram("both", "both-cell", "s", delta, (now - 1, now), &[0.1], &[50, 0])).await;
    assert_eq!(server.cell("both-cell").await["requests"], 1, "spans win over the same service's metrics");
    let metrics = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cellpilot_ingest_points_ignored_total{reason=\"spans_preferred\"} 1"), "{metrics}");
}
