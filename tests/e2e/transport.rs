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

/// `n` TCP connections to `addr` from `from`, opened and left silent.
async fn idle_sockets(from: &str, addr: std::net::SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        out.push(sock.connect(addr).await.unwrap());
    }
    out
}

/// Whether the server closed `sock` within `limit`.
async fn closed_within(sock: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().ok()).build().unwrap()
}

/// `cellpilot_connections_refused_total` of `listener` and `reason`, asked from an address of its own.
async fn refused(server: &Server, listener: &str, reason: &str) -> u64 {
    let metrics = client_from("127.0.0.3").get(format!("http://{}/metrics", server.web)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    let key = format!("cellpilot_connections_refused_total{{listener=\"{listener}\",reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_from_one_address_cannot_lock_others_out() {
    let server = Server::start(&[
        ("CELLPILOT_TRANSPORT__MAX_CONNECTIONS_PER_IP", "16"),
        ("CELLPILOT_TRANSPORT__IDLE_TIMEOUT", "60s"),
    ]);
    let xds = server.xds.expect("xDS listens");
    let listeners = [
        ("otlp_grpc", server.grpc),
        ("otlp_http", server.http),
        ("web", server.web),
        ("control", server.control),
        ("xds", xds),
    ];
    let mut held = Vec::new();
    for (name, addr) in listeners {
        let mut socks = idle_sockets("127.0.0.1", addr, 80).await;
        // Past the per-address cap, each is closed at once.
        let mut late = socks.split_off(16);
        for s in late.iter_mut().take(5) {
            assert!(closed_within(s, Duration::from_secs(5)).await, "{name}: a connection past the cap stayed open");
        }
        held.push(socks);
        let n = refused(&server, name, "max_connections_per_ip").await;
        assert!(n >= 64, "{name}: {n} refused");
    }
    // Another address is served at once on every listener.
    let other = client_from("127.0.0.2");
    let r = other.get(format!("http://{}/healthz", server.web)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let span = traces(Some("web"), vec![server_span("a", 200, now_ns(), 1_000_000)]);
    let r = other
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .body(span.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use prost::Message;
    let req = ExportTraceServiceRequest::decode(&span[..]).unwrap();
    TraceServiceClient::new(channel).export(req).await.unwrap();
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_their_places_given_back() {
    let server =
        Server::start(&[("CELLPILOT_TRANSPORT__MAX_CONNECTIONS", "32"), ("CELLPILOT_TRANSPORT__IDLE_TIMEOUT", "1s")]);
    for (name, addr) in [("web", server.web), ("otlp_grpc", server.grpc)] {
        // Every place taken by sockets that never say a word, from many addresses.
        let mut socks = Vec::new();
        for i in 0..4 {
            socks.extend(idle_sockets(&format!("127.0.0.{}", 10 + i), addr, 8).await);
        }
        let mut extra = idle_sockets("127.0.0.20", addr, 1).await;
        assert!(closed_within(&mut extra[0], Duration::from_secs(5)).await, "{name}: past max_connections");
        // The silent ones are closed after the idle timeout, not held for the header timeout
        // plus a lingering close.
        for s in socks.iter_mut() {
            assert!(closed_within(s, Duration::from_secs(5)).await, "{name}: a silent connection stayed open");
        }
        assert!(refused(&server, name, "max_connections").await >= 1, "{name}");
        assert!(refused(&server, name, "idle_timeout").await >= 32, "{name}");
    }
    // Their places are free again.
    let r = reqwest::get(format!("http://{}/healthz", server.web)).await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_give_their_slots_back() {
    let server = Server::start(&[
        ("CELLPILOT_TRANSPORT__BODY_READ_TIMEOUT", "1s"),
        ("CELLPILOT_INGEST__MAX_CONCURRENT_REQUESTS", "8"),
    ]);
    // Every ingest slot held by an export that stops sending mid-body.
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut sock = tokio::net::TcpStream::connect(server.http).await.unwrap();
        let head = "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\ncontent-length: 100000\r\n\r\n";
        sock.write_all(head.as_bytes()).await.unwrap();
        sock.write_all(&[0u8; 10]).await.unwrap();
        stalled.push(sock);
    }
    // Each is answered 408 once the timeout passes, naming the key.
    for sock in stalled.iter_mut() {
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = [0u8; 1024];
            while !String::from_utf8_lossy(&answer).contains("body_read_timeout") {
                match sock.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("body_read_timeout"), "{answer}");
    }
    // The slots are free: a valid export is served.
    let span = traces(Some("web"), vec![server_span("a", 200, now_ns(), 1_000_000)]);
    assert_eq!(server.post_otlp("traces", span).await.status(), 200);
    let text = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    assert!(text.contains("cellpilot_ingest_rejected_total{reason=\"stalled\"} 8"), "stalled exports are counted");
}

/// A gRPC Export call opened on `client` whose body starts with `first` and then waits.
async fn open_call(
    client: &mut h2::client::SendRequest<prost::bytes::Bytes>,
    addr: std::net::SocketAddr,
    first: Vec<u8>,
) -> (h2::client::ResponseFuture, h2::SendStream<prost::bytes::Bytes>) {
    let req = tonic::codegen::http::Request::post(format!(
        "http://{addr}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (resp, mut stream) = ready.send_request(req, false).unwrap();
    stream.send_data(first.into(), false).unwrap();
    (resp, stream)
}

/// A gRPC frame prefix declaring `len` bytes, and `sent` of them.
fn prefix(len: u32, sent: usize) -> Vec<u8> {
    let mut f = vec![0u8];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend(std::iter::repeat_n(0u8, sent));
    f
}

async fn grpc_status(resp: h2::client::ResponseFuture) -> String {
    let resp = tokio::time::timeout(Duration::from_secs(5), resp).await.expect("answered at once").unwrap();
    let status = resp.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_string());
    status.unwrap_or_else(|| "none in the headers".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_messages_are_charged_from_their_prefix_before_they_are_read() {
    // The bytes budget is 4 × max_request_size: 4 MiB.
    let server = Server::start(&[("CELLPILOT_INGEST__MAX_REQUEST_SIZE", "1MiB")]);
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client;
    // Four calls declare 1 MiB each, send 16 KiB of it and stall: the whole budget is charged.
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open_call(&mut client, server.grpc, prefix(1 << 20, 16 << 10)).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A fifth is refused at once from its prefix alone, with the retryable answer.
    let (resp, _s) = open_call(&mut client, server.grpc, prefix(1 << 20, 0)).await;
    assert_eq!(grpc_status(resp).await, "14", "UNAVAILABLE: the budget is taken");
    // A prefix declaring more than the limit is refused before anything else is read.
    let (resp, _s) = open_call(&mut client, server.grpc, prefix(2 << 20, 0)).await;
    assert_eq!(grpc_status(resp).await, "8", "RESOURCE_EXHAUSTED");
    let text = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    let key = "cellpilot_ingest_overloaded_total{reason=\"inflight_bytes\"} ";
    let n: u64 = text.lines().find_map(|l| l.strip_prefix(key)).unwrap().trim().parse().unwrap();
    assert!(n >= 1, "{n}");
    // The stalled calls go away: their bytes are given back and a valid export is served.
    for (_, mut s) in held {
        s.send_reset(h2::Reason::CANCEL);
    }
    conn.abort();
    let span = traces(Some("web"), vec![server_span("a", 200, now_ns(), 1_000_000)]);
    crate::support::eventually(Duration::from_secs(10), "the budget is free again", || async {
        let (code, msg) = grpc_call(&server, false, "", &span).await;
        if code == 0 { Ok(()) } else { Err(format!("{code}: {msg}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_header_blocks_are_bounded() {
    let server = Server::start(&[]);
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = tonic::codegen::http::Request::post(format!(
        "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        server.grpc
    ))
    .header("content-type", "application/grpc")
    .header("x-padding", "p".repeat(200 << 10))
    .body(())
    .unwrap();
    let mut ready = client.ready().await.unwrap();
    let refused = match ready.send_request(req, true) {
        Err(_) => true,
        Ok((resp, _)) => match tokio::time::timeout(Duration::from_secs(5), resp).await.expect("answered") {
            Err(_) => true,
            Ok(r) => r.status() == 431,
        },
    };
    assert!(refused, "a 200 KiB header block is refused");
    conn.abort();
    // Others are served as before.
    let span = traces(Some("web"), vec![server_span("a", 200, now_ns(), 1_000_000)]);
    assert_eq!(grpc_call(&server, false, "", &span).await.0, 0);
}

/// The HTTP/2 rapid reset (CVE-2023-44487): streams opened and reset at once, thousands of
/// them. After 20 reset before being served the server ends the connection (GOAWAY), and
/// everyone else is served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_resets_end_the_connection() {
    let server = Server::start(&[]);
    let tcp = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..5_000 {
        let req = tonic::codegen::http::Request::post(format!(
            "http://{}/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            server.grpc
        ))
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
        let Ok(Ok(mut ready)) = tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await else {
            break;
        };
        let Ok((_, mut stream)) = ready.send_request(req, false) else { break };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
    assert!(sent < 5_000, "the server took {sent} reset streams on one connection");
    assert!(ended.is_ok(), "the connection was not ended");
    let span = traces(Some("web"), vec![server_span("a", 200, now_ns(), 1_000_000)]);
    assert_eq!(grpc_call(&server, false, "", &span).await.0, 0, "others are served");
}
