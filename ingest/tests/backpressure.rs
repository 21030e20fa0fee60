//! When the pipeline's in-flight budget is exhausted, exports get the OTLP retryable answers:
//! HTTP 429 with `Retry-After`, gRPC UNAVAILABLE with `RetryInfo` — and once the budget frees
//! up, the same export succeeds. With the sequencer stopped the answer is 503, never 500.

// Tests spawn freely and join or abort what they spawn before they end.
#![allow(clippy::disallowed_methods)]

use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::{SharedClock, SystemClock};
use cellpilot_core::config::{IngestConfig, Size};
use cellpilot_core::metrics::Metrics;
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::Ingest;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings, SharedAggregator};
use cellpilot_ingest::pipeline::IngestParts;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::Arc;
use std::time::Duration;
use tonic_types::StatusExt;

fn ingest() -> Arc<Ingest> {
    let config = IngestConfig { max_request_size: Size(4096), ..Default::default() };
    let spec = WindowSpec::new(config.window.0, config.allowed_lateness.0);
    let agg = SharedAggregator::new(Aggregator::new(AggregatorSettings { spec, max_series: 100, max_cells: 100 }));
    let clock: SharedClock = Arc::new(SystemClock);
    let parts = IngestParts {
        aggregator: agg,
        auth: Authenticator::default(),
        metrics: Metrics::new(),
        clock,
        wal: None,
        watermark: Arc::new(|| i64::MIN),
        cutovers: None,
    };
    Arc::new(Ingest::new(&config, parts).unwrap())
}

fn request() -> ExportTraceServiceRequest {
    let now = cellpilot_core::clock::Clock::now_ns(&cellpilot_core::clock::SystemClock) as u64;
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        kind: 2,
        start_time_unix_nano: now - 1_000_000,
        end_time_unix_nano: now,
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }],
            ..Default::default()
        }],
    }
}

#[tokio::test]
async fn http_answers_429_with_retry_after() {
    use tower::ServiceExt;
    let ingest = ingest();
    let app = cellpilot_ingest::http::router(ingest.clone());
    let post = || {
        axum::http::Request::post("/v1/traces")
            .header("content-type", "application/x-protobuf")
            .body(axum::body::Body::from(request().encode_to_vec()))
            .unwrap()
    };
    let busy = ingest.admit(4 * 4096).unwrap();
    let resp = app.clone().oneshot(post()).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    drop(busy);
    let resp = app.oneshot(post()).await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn grpc_answers_unavailable_with_retry_info() {
    let ingest = ingest();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = cellpilot_ingest::grpc::routes(ingest.clone());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
    let busy = ingest.admit(4 * 4096).unwrap();
    let status = client.export(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let retry = status.get_details_retry_info().expect("RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    drop(busy);
    assert!(client.export(request()).await.is_ok());
    server.abort();
}

#[tokio::test]
async fn a_stopped_sequencer_answers_503_with_retry_after_never_500() {
    use tower::ServiceExt;
    let mut ingest = ingest();
    Arc::get_mut(&mut ingest).expect("sole owner").shutdown();
    assert!(!ingest.is_running());
    assert!(ingest.health_check()().unwrap().contains("sequencer"));
    let app = cellpilot_ingest::http::router(ingest.clone());
    let post = axum::http::Request::post("/v1/traces")
        .header("content-type", "application/x-protobuf")
        .body(axum::body::Body::from(request().encode_to_vec()))
        .unwrap();
    let resp = app.oneshot(post).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
}
