//! Gateways that stop cooperating: one whose host vanished without closing its connection
//! (HTTP/2 keepalive finds it) and one that keeps the connection but stops reading its Watch
//! stream (the stall watchdog finds it). Either way it stops counting as watching, so it holds
//! back no cut-over's `applied_at`, within keepalive interval + timeout (1 s + 1 s here).

use crate::support::Server;
use cellpilot_gateways::pb::WatchWeightsRequest;
use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

fn env() -> [(&'static str, &'static str); 3] {
    [
        ("CELLPILOT_TRANSPORT__KEEPALIVE_INTERVAL", "1s"),
        ("CELLPILOT_TRANSPORT__KEEPALIVE_TIMEOUT", "1s"),
        // The cell pinned to make versions (only known cells may be pinned).
        ("CELLPILOT_CONTROL__CELLS__CELL-1__BASE_WEIGHT", "100"),
    ]
}

async fn metric(server: &Server, name: &str) -> i64 {
    metric_as(server, name, None).await
}

async fn metric_as(server: &Server, name: &str, token: Option<&str>) -> i64 {
    let mut req = reqwest::Client::new().get(format!("http://{}/metrics", server.web));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let text = req.send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
        .unwrap_or_else(|| panic!("{name} missing from /metrics")) as i64
}

/// Polls `name` until it equals `want`, at most `limit`.
async fn wait_metric(server: &Server, name: &str, want: i64, limit: Duration) {
    let start = cellpilot_core::clock::monotonic();
    loop {
        let got = metric(server, name).await;
        if got == want {
            return;
        }
        assert!(start.elapsed() < limit, "{name} is {got}, not {want}, after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Copies `r` to `w` until `frozen`; then swallows everything and keeps both sockets open.
async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, frozen: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Forwards one connection to `to` until `frozen`, then holds it open and silent: a host that
/// dropped off the network.
async fn black_hole(to: SocketAddr, frozen: Arc<AtomicBool>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (client, _) = listener.accept().await.unwrap();
        let server = TcpStream::connect(to).await.unwrap();
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let _ = tokio::join!(pipe(cr, sw, frozen.clone()), pipe(sr, cw, frozen));
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_gateway_is_noticed_by_keepalive() {
    let server = Server::start(&env());
    let frozen = Arc::new(AtomicBool::new(false));
    let via = black_hole(server.control, frozen.clone()).await;
    let mut client = CellWeightsClient::connect(format!("http://{via}")).await.unwrap();
    let mut stream = client.watch(WatchWeightsRequest { gateway_id: "ghost".into() }).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some(), "the current table first");
    wait_metric(&server, "cellpilot_gateways_watching", 1, Duration::from_secs(5)).await;
    frozen.store(true, Ordering::Release);
    wait_metric(&server, "cellpilot_gateways_watching", 0, Duration::from_secs(15)).await;
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_reading_stops_holding_cutovers_back() {
    let server = Server::start(&env());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.control))
        .unwrap()
        .initial_stream_window_size(Some(256))
        .connect()
        .await
        .unwrap();
    let mut client = CellWeightsClient::new(channel);
    // Never read: after the first few hundred bytes the stream cannot hand anything on.
    let _stream = client.watch(WatchWeightsRequest { gateway_id: "deaf".into() }).await.unwrap();
    wait_metric(&server, "cellpilot_gateways_watching", 1, Duration::from_secs(5)).await;
    let http = reqwest::Client::new();
    for weight in 1..=30 {
        let r = http
            .post(format!("http://{}/api/v1/cells/cell-1/override", server.web))
            .json(&serde_json::json!({"weight": weight, "ttl": "1h", "reason": "make versions"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    wait_metric(&server, "cellpilot_watch_stalls_total", 1, Duration::from_secs(15)).await;
    assert_eq!(metric(&server, "cellpilot_gateways_watching").await, 0);
}

/// CellWeights Watch streams count against `[xds] max_streams_per_node` and
/// `max_streams_per_token` as xDS streams do, and a gateway token watches only as the ids its
/// name matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_and_bound_to_their_token() {
    let server = Server::start(&[
        ("CELLPILOT_AUTH__GATEWAY_TOKENS", "gw-eu-*=g4te"),
        ("CELLPILOT_AUTH__READ_TOKENS", "viewer=r3ad"),
        ("CELLPILOT_XDS__MAX_STREAMS_PER_NODE", "2"),
        ("CELLPILOT_XDS__MAX_STREAMS_PER_TOKEN", "3"),
    ]);
    let mut client = CellWeightsClient::connect(format!("http://{}", server.control)).await.unwrap();
    let watch = |id: &str| {
        let mut req = tonic::Request::new(WatchWeightsRequest { gateway_id: id.into() });
        req.metadata_mut().insert("authorization", "Bearer g4te".parse().unwrap());
        req
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(client.watch(watch("gw-eu-1")).await.unwrap());
    }
    let e = client.watch(watch("gw-eu-1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("max_streams_per_node"), "{}", e.message());
    held.push(client.watch(watch("gw-eu-2")).await.unwrap());
    let e = client.watch(watch("gw-eu-3")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("max_streams_per_token"), "{}", e.message());
    let e = client.watch(watch("gw-us-1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(e.message().contains("gw-us-1"), "{}", e.message());
    assert_eq!(metric_as(&server, "cellpilot_gateway_streams", Some("r3ad")).await, 3);
    // A stream that ends gives its place back.
    held.pop();
    let start = cellpilot_core::clock::monotonic();
    while metric_as(&server, "cellpilot_gateway_streams", Some("r3ad")).await != 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "the ended stream is still counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.watch(watch("gw-eu-3")).await.unwrap();
}
