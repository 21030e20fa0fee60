//! Bad input gets the spec's status and a message naming the problem, and the server keeps
//! serving; late and future spans are rejected through `partial_success`, never silently.

use crate::support::{Server, now_ns};
use flate2::Compression;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span::SpanKind};
use prost::Message;
use std::io::Write;

fn span(cell: Option<&str>, end_ns: u64) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        name: "GET /x".into(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: end_ns - 5_000_000,
        end_time_unix_nano: end_ns,
        attributes: cell
            .map(|c| {
                vec![KeyValue {
                    key: "cell.id".into(),
                    value: Some(AnyValue { value: Some(Value::StringValue(c.into())) }),
                    ..Default::default()
                }]
            })
            .unwrap_or_default(),
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource::default()),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn post(server: &Server, content_type: &str, encoding: Option<&str>, body: Vec<u8>) -> Reply {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", content_type)
        .body(body);
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let resp = req.send().await.expect("POST");
    Reply {
        status: resp.status().as_u16(),
        content_type: resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
        body: resp.bytes().await.unwrap().to_vec(),
    }
}

/// The `google.rpc.Status` message of a JSON error body.
fn json_message(r: &Reply) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON google.rpc.Status");
    assert!(v["code"].as_i64().is_some(), "status has a code: {v}");
    v["message"].as_str().unwrap().to_string()
}

/// The message of a protobuf `google.rpc.Status` body.
fn proto_message(r: &Reply) -> String {
    tonic_types::pb::Status::decode(r.body.as_slice()).expect("protobuf google.rpc.Status").message
}

async fn still_serving(server: &Server) {
    let ok = post(server, "application/x-protobuf", None, request(vec![span(Some("alive"), now_ns())]).encode_to_vec())
        .await;
    assert_eq!(ok.status, 200, "server keeps serving");
}

#[tokio::test]
async fn malformed_payloads_get_clear_errors() {
    let mut server = Server::start(&[("CELLPILOT_INGEST__MAX_REQUEST_SIZE", "1MiB")]);

    let r = post(&server, "application/x-protobuf", None, b"\xff\xff\xff garbage".to_vec()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, "application/x-protobuf");
    assert!(proto_message(&r).contains("invalid protobuf"), "{}", proto_message(&r));
    still_serving(&server).await;

    let r = post(&server, "application/json", None, b"{\"resourceSpans\": [".to_vec()).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.content_type, "application/json");
    assert!(json_message(&r).contains("invalid OTLP JSON"), "{}", json_message(&r));

    let r = post(&server, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(r.status, 415);
    assert!(json_message(&r).contains("Content-Type"), "{}", json_message(&r));

    let big = request((0..40_000).map(|_| span(Some("big"), now_ns())).collect()).encode_to_vec();
    assert!(big.len() > 1 << 20);
    let r = post(&server, "application/x-protobuf", None, big.clone()).await;
    assert_eq!(r.status, 413);
    assert!(proto_message(&r).contains("exceeds the limit"), "{}", proto_message(&r));
    // A small gzip body that inflates beyond the limit is refused too.
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&big).unwrap();
    let r = post(&server, "application/x-protobuf", Some("gzip"), gz.finish().unwrap()).await;
    assert_eq!(r.status, 413);

    let plain = request(vec![span(Some("a"), now_ns())]).encode_to_vec();
    let r = post(&server, "application/x-protobuf", Some("gzip"), plain).await;
    assert_eq!(r.status, 400);
    assert!(proto_message(&r).contains("gzip"), "{}", proto_message(&r));

    // A string field holding invalid UTF-8: the span name (field 5 of Span).
    let mut bad_utf8 = span(Some("a"), now_ns());
    bad_utf8.name = "ZZZZZZZZ".into();
    let mut bytes = request(vec![bad_utf8]).encode_to_vec();
    let pos = bytes.windows(8).position(|w| w == b"ZZZZZZZZ").unwrap();
    bytes[pos] = 0xff;
    let r = post(&server, "application/x-protobuf", None, bytes).await;
    assert_eq!(r.status, 400);
    assert!(proto_message(&r).to_lowercase().contains("utf-8"), "{}", proto_message(&r));

    let mut short_trace = span(Some("a"), now_ns());
    short_trace.trace_id = vec![1; 5];
    let r = post(&server, "application/x-protobuf", None, request(vec![short_trace]).encode_to_vec()).await;
    assert_eq!(r.status, 400);
    assert!(proto_message(&r).contains("trace_id must be 16 bytes, got 5"), "{}", proto_message(&r));

    let json_bad_span_id = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7e", "name": "x", "kind": 2,
        "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]});
    let r = post(&server, "application/json", None, json_bad_span_id.to_string().into_bytes()).await;
    assert_eq!(r.status, 400);
    assert!(json_message(&r).contains("span_id must be 8 bytes, got 4"), "{}", json_message(&r));

    still_serving(&server).await;
    assert!(server.alive());
    // Nothing from the refused requests was counted.
    let cells: Vec<_> = server.cells().await.iter().map(|c| c["cell"].as_str().unwrap().to_string()).collect();
    assert_eq!(cells, ["alive"]);
}

#[tokio::test]
async fn late_and_future_spans_are_rejected_and_reported() {
    let server = Server::start(&[]);
    let now = now_ns();
    let hour = 3_600_000_000_000;
    let spans = vec![
        span(Some("t"), now),
        span(Some("t"), now - hour),
        span(Some("t"), now - 2 * hour),
        span(Some("t"), now + hour),
    ];
    for (ct, body) in [
        ("application/x-protobuf", request(spans.clone()).encode_to_vec()),
        ("application/json", serde_json::to_vec(&request(spans.clone())).unwrap()),
    ] {
        let r = post(&server, ct, None, body).await;
        assert_eq!(r.status, 200, "partial success is still 200");
        let resp: ExportTraceServiceResponse = if ct == "application/json" {
            serde_json::from_slice(&r.body).unwrap()
        } else {
            ExportTraceServiceResponse::decode(r.body.as_slice()).unwrap()
        };
        let partial = resp.partial_success.expect("partial_success set");
        assert_eq!(partial.rejected_spans, 3);
        assert!(partial.error_message.contains("2 spans too late"), "{}", partial.error_message);
        assert!(partial.error_message.contains("1 spans more than 5m in the future"), "{}", partial.error_message);
    }
    assert_eq!(server.cell("t").await["requests"], 2);
    let metrics = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cellpilot_ingest_rejected_total{reason=\"late\"} 4"), "{metrics}");
    assert!(metrics.contains("cellpilot_ingest_rejected_total{reason=\"future\"} 2"), "{metrics}");
}

#[tokio::test]
async fn span_without_cell_counts_as_unknown() {
    let server = Server::start(&[]);
    let r = post(&server, "application/x-protobuf", None, request(vec![span(None, now_ns())]).encode_to_vec()).await;
    assert_eq!(r.status, 200);
    assert_eq!(server.cell("unknown").await["requests"], 1);
}

#[tokio::test]
async fn grpc_errors_use_otlp_codes() {
    let server = Server::start(&[("CELLPILOT_AUTH__TOKENS", "collector=s3cr3t")]);
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    let denied = client.export(request(vec![span(Some("a"), now_ns())])).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::Unauthenticated);

    let mut short = span(Some("a"), now_ns());
    short.span_id = vec![1; 3];
    let mut req = tonic::Request::new(request(vec![short]));
    req.metadata_mut().insert("authorization", "Bearer s3cr3t".parse().unwrap());
    let bad = client.export(req).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("span_id must be 8 bytes, got 3"), "{}", bad.message());

    let mut req = tonic::Request::new(request(vec![span(Some("a"), now_ns())]));
    req.metadata_mut().insert("authorization", "Bearer s3cr3t".parse().unwrap());
    let ok = client.export(req).await.unwrap().into_inner();
    assert!(ok.partial_success.is_none());

    let http = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .body(request(vec![span(Some("a"), now_ns())]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(http.status(), 401);
    let api = reqwest::get(format!("http://{}/api/v1/cells", server.web)).await.unwrap();
    assert_eq!(api.status(), 401);
}

/// `cellpilot_ingest_requests_total{signal="traces",transport,result}` now.
async fn requests_with(server: &Server, transport: &str, result: &str) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    let want =
        format!("cellpilot_ingest_requests_total{{result=\"{result}\",signal=\"traces\",transport=\"{transport}\"}}");
    text.lines().find(|l| l.starts_with(&want)).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0)
}

/// A sender that gives up mid-body (closes its connection, resets its HTTP/2 stream) is a
/// client abort, counted as `aborted`, not bad input; nothing of it is counted.
#[tokio::test]
async fn a_body_cut_off_by_the_sender_is_aborted_not_bad_input() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&[]);
    let body = request(vec![span(Some("cut"), now_ns()); 50]).encode_to_vec();
    // HTTP/1.1: 100 bytes of a longer declared body, then the connection closes.
    let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body[..100]).await.unwrap();
    tcp.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(tcp);
    // gRPC: a frame's first bytes, then the stream is reset.
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let req = tonic::codegen::http::Request::post(format!(
        "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        server.grpc
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let (_resp, mut stream) = client.send_request(req, false).unwrap();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body[..100]);
    stream.send_data(frame.into(), false).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stream.send_reset(h2::Reason::CANCEL);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    conn.abort();
    for transport in ["http", "grpc"] {
        crate::support::eventually(std::time::Duration::from_secs(10), "the abort counted", || async {
            let aborted = requests_with(&server, transport, "aborted").await;
            let bad = requests_with(&server, transport, "bad_input").await;
            if aborted == 1 && bad == 0 {
                Ok(())
            } else {
                Err(format!("{transport}: aborted {aborted}, bad_input {bad}"))
            }
        })
        .await;
    }
    assert!(server.cells().await.iter().all(|c| c["cell"] != "cut"), "nothing of a cut body is counted");
}
