//! Admission before reading: an export takes one of `max_concurrent_requests` slots before its
//! body is read, so a client that opens requests and trickles (or never sends) their bodies
//! costs slots, not memory, and everyone else hears the retry hint at once. A declared
//! Content-Length over the limit is refused before a byte of the body is read.

use crate::support::{Server, now_ns, server_span, traces};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
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
