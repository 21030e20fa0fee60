//! The gRPC and HTTP transports at their edges, with hand-made frames: a message over the size
//! limit is RESOURCE_EXHAUSTED whether compressed or not, a broken gzip body INVALID_ARGUMENT,
//! multi-member gzip is read whole on both transports, and a client that never finishes its
//! headers is disconnected.

use crate::support::{Server, now_ns, server_span, traces};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// `bytes` as two concatenated gzip members.
fn two_members(bytes: &[u8]) -> Vec<u8> {
    let (a, b) = bytes.split_at(bytes.len() / 2);
    [gzip(a), gzip(b)].concat()
}

/// Posts one gRPC frame to TraceService/Export over HTTP/2 and returns the `grpc-status` and
/// `grpc-message` of a trailers-only answer (errors), or status 0 once the body is read.
async fn grpc_call(server: &Server, compressed: bool, encoding: &str, message: &[u8]) -> (i32, String) {
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut req = client
        .post(format!("http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export", server.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame);
    if compressed {
        req = req.header("grpc-encoding", encoding);
    }
    let resp = req.send().await.unwrap();
    let header = |k: &str| resp.headers().get(k).map(|v| v.to_str().unwrap().to_string());
    let status = header("grpc-status").map_or(0, |s| s.parse().unwrap());
    let message = header("grpc-message").unwrap_or_default();
    let _ = resp.bytes().await;
    (status, message)
}

const RESOURCE_EXHAUSTED: i32 = 8;
const INVALID_ARGUMENT: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_size_and_compression_edges() {
    let server = Server::start(&[("CELLPILOT_INGEST__MAX_REQUEST_SIZE", "1MiB")]);
    let spans =
        |cell: &str, n: usize| traces(Some("web"), (0..n).map(|_| server_span(cell, 200, now_ns(), 1)).collect());
    let big = spans("big", 20_000);
    assert!(big.len() > 1 << 20);
    let (code, msg) = grpc_call(&server, false, "", &big).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "uncompressed over the limit: {msg}");
    let (code, msg) = grpc_call(&server, true, "gzip", &gzip(&big)).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "inflates over the limit: {msg}");
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20);
    let (code, msg) = grpc_call(&server, true, "gzip", &bomb).await;
    assert_eq!(code, RESOURCE_EXHAUSTED, "a gzip bomb: {msg}");
    let (code, msg) = grpc_call(&server, true, "gzip", b"not gzip at all").await;
    assert_eq!(code, INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("gzip"), "{msg}");

    let (code, msg) = grpc_call(&server, true, "gzip", &two_members(&spans("grpc-members", 40))).await;
    assert_eq!(code, 0, "{msg}");
    assert_eq!(server.cell("grpc-members").await["requests"], 40, "both members counted");

    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(two_members(&spans("http-members", 30)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(server.cell("http-members").await["requests"], 30, "both members counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let server = Server::start(&[("CELLPILOT_TRANSPORT__HEADER_READ_TIMEOUT", "1s")]);
    for addr in [server.http, server.web] {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        // Bounded so a server that never disconnects fails the test instead of hanging it.
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{addr}: still connected 10 s after a 1 s header timeout");
    }
}
