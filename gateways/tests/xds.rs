//! The ADS server over real gRPC on loopback, driven by hand-written requests: the initial
//! request, ACK, NACK then recovery, unknown names, delta subscribe/unsubscribe, a reconnect
//! with a stale version, refusals, and a policy drain whose cut-over waits for the xDS ACK.

use cellpilot_control::PinRequest;
use cellpilot_control::Protocol;
use cellpilot_control::StreamCaps;
use cellpilot_control::{CellInput, Controller, Inputs};
use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::{SharedClock, SystemClock};
use cellpilot_core::config::{AuthConfig, ControlConfig, XdsCluster, XdsConfig};
use cellpilot_core::metrics::Metrics;
use cellpilot_gateways::{Kind, Snapshots, XdsService};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

struct Fixture {
    controller: Arc<Controller>,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

async fn start(stall_after: Duration) -> Fixture {
    start_with(stall_after, XdsConfig::default(), AuthConfig::default()).await
}

async fn start_with(stall_after: Duration, xds: XdsConfig, auth: AuthConfig) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let config = ControlConfig { discover_min_requests: 0, ..ControlConfig::default() };
    let controller = Arc::new(
        Controller::open(&config, dir.path(), clock, Metrics::new()).unwrap().stream_caps(StreamCaps::of(&xds)),
    );
    let clusters = vec![XdsCluster {
        name: "checkout".into(),
        cells: BTreeMap::from([
            ("a".to_string(), vec!["127.0.0.1:9001".to_string()]),
            ("b".to_string(), vec!["127.0.0.1:9002".to_string()]),
            ("c".to_string(), vec!["127.0.0.1:9003".to_string()]),
        ]),
    }];
    let snapshots = Arc::new(Snapshots::new(controller.clone(), clusters));
    let auth = Authenticator::new(&auth).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let service = XdsService::new(snapshots, auth, stop.clone()).stall_after(stall_after).name_caps(&xds);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token = stop.clone();
    let mut owner = tokio::task::JoinSet::new();
    owner.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                token.cancelled_owned(),
            )
            .await
            .unwrap();
    });
    // The server task lives as long as the test's runtime.
    owner.detach_all();
    Fixture { controller, addr, _dir: dir, _stop: stop.drop_guard() }
}

fn node(id: &str) -> Option<Node> {
    Some(Node { id: id.into(), ..Default::default() })
}

fn sotw(kind: Kind, names: &[&str], nonce: &str, version: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: version.into(),
        node: node("n1"),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: kind.type_url().into(),
        response_nonce: nonce.into(),
        ..Default::default()
    }
}

fn nack(mut r: DiscoveryRequest, message: &str) -> DiscoveryRequest {
    r.error_detail = Some(RpcStatus { code: 3, message: message.into(), details: vec![] });
    r
}

struct Stream<Req, Resp> {
    tx: mpsc::Sender<Req>,
    rx: Streaming<Resp>,
}

impl<Req, Resp> Stream<Req, Resp> {
    async fn send(&self, r: Req) {
        self.tx.send(r).await.unwrap();
    }

    async fn recv(&mut self) -> Resp {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("a response within 10 s")
            .expect("stream open")
            .expect("a response")
    }

    /// Nothing arrives within `d` (the server had nothing to say).
    async fn quiet(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.message()).await.is_err()
    }
}

async fn open_sotw(f: &Fixture) -> Stream<DiscoveryRequest, DiscoveryResponse> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", f.addr)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let rx = client.stream_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
    Stream { tx, rx }
}

/// A SotW stream opened with `token`, its first request naming `node`: the first answer, or
/// the refusal.
async fn first_answer_as(
    f: &Fixture,
    token: &str,
    node_id: &str,
    names: &[&str],
) -> (Stream<DiscoveryRequest, DiscoveryResponse>, Result<DiscoveryResponse, tonic::Status>) {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", f.addr)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let mut first = sotw(Kind::Endpoints, names, "", "");
    first.node = node(node_id);
    tx.send(first).await.unwrap();
    let mut rx = client.stream_aggregated_resources(req).await.unwrap().into_inner();
    let answer = tokio::time::timeout(Duration::from_secs(10), rx.message())
        .await
        .expect("an answer within 10 s")
        .map(|m| m.expect("a response"));
    (Stream { tx, rx }, answer)
}

async fn open_delta(f: &Fixture) -> Stream<DeltaDiscoveryRequest, DeltaDiscoveryResponse> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", f.addr)).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let rx = client.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
    Stream { tx, rx }
}

/// (cell, priority, weight) of each locality.
fn localities(any_value: &[u8]) -> Vec<(String, u32, u32)> {
    let cla = ClusterLoadAssignment::decode(any_value).unwrap();
    cla.endpoints
        .into_iter()
        .map(|l| (l.locality.unwrap().sub_zone, l.priority, l.load_balancing_weight.unwrap().value))
        .collect()
}

fn pin(f: &Fixture, cell: &str, weight: Option<u32>) -> u64 {
    let req = PinRequest { cell: cell.into(), weight, ttl: None, reason: "test".into() };
    // The fixture's cluster lists cells a, b and c.
    f.controller.pin(&req, 256, "test", now(), |c| ["a", "b", "c"].contains(&c)).unwrap();
    f.controller.version()
}

fn now() -> i64 {
    cellpilot_core::clock::Clock::now_ms(&SystemClock)
}

fn gateway(f: &Fixture, id: &str) -> cellpilot_control::Gateway {
    f.controller.gateways().into_iter().find(|g| g.protocol == Protocol::Xds && g.id == id).expect("node listed")
}

#[tokio::test]
async fn initial_request_ack_and_a_pushed_change() {
    let f = start(Duration::from_secs(20)).await;
    let mut s = open_sotw(&f).await;
    // Wildcard CDS: every cluster.
    s.send(sotw(Kind::Cluster, &[], "", "")).await;
    let r = s.recv().await;
    assert_eq!((r.type_url.as_str(), r.resources.len()), (Kind::Cluster.type_url(), 1));
    s.send(sotw(Kind::Cluster, &[], &r.nonce, &r.version_info)).await;
    s.send(sotw(Kind::Endpoints, &["checkout"], "", "")).await;
    let r = s.recv().await;
    assert_eq!(localities(&r.resources[0].value), [("a".into(), 0, 100), ("b".into(), 0, 100), ("c".into(), 0, 100)]);
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    // A pin to 0 is one new version, pushed.
    let version = pin(&f, "b", Some(0));
    let r = s.recv().await;
    assert_eq!(r.version_info, version.to_string());
    assert_eq!(localities(&r.resources[0].value), [("a".into(), 0, 100), ("b".into(), 1, 1), ("c".into(), 0, 100)]);
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    support_eventually(|| gateway(&f, "n1").last_ack.is_some_and(|a| a.version == version)).await;
    let g = gateway(&f, "n1");
    assert!(g.watching() && g.streams == 1);
    // The CDS stream got nothing new: the cluster did not change.
    assert!(s.quiet(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn nack_then_recovery() {
    let f = start(Duration::from_secs(20)).await;
    let mut s = open_sotw(&f).await;
    s.send(sotw(Kind::Endpoints, &["checkout"], "", "")).await;
    let r = s.recv().await;
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    let v1 = pin(&f, "a", Some(0));
    let r = s.recv().await;
    s.send(nack(sotw(Kind::Endpoints, &["checkout"], &r.nonce, "0"), "locality a rejected")).await;
    support_eventually(|| gateway(&f, "n1").last_nack.is_some()).await;
    let g = gateway(&f, "n1");
    let n = g.last_nack.unwrap();
    assert_eq!((n.version, n.error.as_str(), g.nacks), (v1, "locality a rejected", 1));
    assert_eq!(f.controller.metrics().xds_nacks.get(), 1);
    assert!(g.last_ack.is_none_or(|a| a.version < v1), "a NACK is not an ACK");
    // The next version is taken.
    let v2 = pin(&f, "a", None);
    let r = s.recv().await;
    assert_eq!(r.version_info, v2.to_string());
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    support_eventually(|| gateway(&f, "n1").last_ack.is_some_and(|a| a.version == v2)).await;
}

#[tokio::test]
async fn unknown_names_and_types() {
    let f = start(Duration::from_secs(20)).await;
    let mut s = open_sotw(&f).await;
    // A listener that does not exist: a response without it (the client knows it is absent).
    s.send(sotw(Kind::Listener, &["nope"], "", "")).await;
    let r = s.recv().await;
    assert!(r.resources.is_empty());
    // A type not served: ignored; the stream goes on.
    let mut other = sotw(Kind::Listener, &[], "", "");
    other.type_url = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret".into();
    s.send(other).await;
    s.send(sotw(Kind::Listener, &["nope", "checkout"], &r.nonce, &r.version_info)).await;
    let r = s.recv().await;
    assert_eq!(r.resources.len(), 1, "the known one only");
    // Delta: an unknown name comes back as removed.
    let mut d = open_delta(&f).await;
    d.send(DeltaDiscoveryRequest {
        node: node("n2"),
        type_url: Kind::Endpoints.type_url().into(),
        resource_names_subscribe: vec!["nope".into(), "checkout".into()],
        ..Default::default()
    })
    .await;
    let r = d.recv().await;
    assert_eq!(r.resources.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["checkout"]);
    assert_eq!(r.removed_resources, ["nope"]);
}

#[tokio::test]
async fn delta_subscribe_push_and_unsubscribe() {
    let f = start(Duration::from_secs(20)).await;
    let mut d = open_delta(&f).await;
    let req = |subscribe: &[&str], unsubscribe: &[&str], nonce: &str| DeltaDiscoveryRequest {
        node: node("n3"),
        type_url: Kind::Endpoints.type_url().into(),
        resource_names_subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        resource_names_unsubscribe: unsubscribe.iter().map(|s| s.to_string()).collect(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    d.send(req(&["checkout"], &[], "")).await;
    let r = d.recv().await;
    let first = r.resources[0].version.clone();
    d.send(req(&[], &[], &r.nonce)).await;
    let v = pin(&f, "c", Some(0));
    let r = d.recv().await;
    assert_eq!(r.system_version_info, v.to_string());
    assert_eq!(r.resources.len(), 1);
    assert_ne!(r.resources[0].version, first, "the resource's version follows its content");
    assert_eq!(localities(&r.resources[0].resource.as_ref().unwrap().value)[2], ("c".into(), 1, 1));
    d.send(req(&[], &[], &r.nonce)).await;
    support_eventually(|| gateway(&f, "n3").last_ack.is_some_and(|a| a.version == v)).await;
    assert!(gateway(&f, "n3").watching());
    // Unsubscribed: no more pushes, and it no longer holds cut-overs.
    d.send(req(&[], &["checkout"], "")).await;
    support_eventually(|| !gateway(&f, "n3").watching()).await;
    pin(&f, "c", None);
    assert!(d.quiet(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn reconnect_with_a_stale_version() {
    let f = start(Duration::from_secs(20)).await;
    let current = pin(&f, "a", Some(50));
    // SotW: a request carrying the old stream's version and nonce gets the current state.
    let mut s = open_sotw(&f).await;
    s.send(sotw(Kind::Endpoints, &["checkout"], "17", "1")).await;
    let r = s.recv().await;
    assert_eq!(r.version_info, current.to_string());
    assert_eq!(localities(&r.resources[0].value)[0], ("a".into(), 0, 50));
    // Delta: a node that holds the current version gets nothing; a stale one gets it again.
    let mut d = open_delta(&f).await;
    let held = {
        let mut probe = open_delta(&f).await;
        probe
            .send(DeltaDiscoveryRequest {
                node: node("probe"),
                type_url: Kind::Endpoints.type_url().into(),
                resource_names_subscribe: vec!["checkout".into()],
                ..Default::default()
            })
            .await;
        probe.recv().await.resources[0].version.clone()
    };
    let reconnect = |version: &str| DeltaDiscoveryRequest {
        node: node("n4"),
        type_url: Kind::Endpoints.type_url().into(),
        resource_names_subscribe: vec!["checkout".into()],
        initial_resource_versions: [("checkout".to_string(), version.to_string())].into(),
        ..Default::default()
    };
    d.send(reconnect(&held)).await;
    assert!(d.quiet(Duration::from_millis(300)).await, "it already holds the current assignment");
    let mut d = open_delta(&f).await;
    d.send(reconnect("0000000000000001")).await;
    assert_eq!(d.recv().await.resources[0].version, held);
}

#[tokio::test]
async fn requests_over_the_bounds_are_refused() {
    let f = start(Duration::from_secs(20)).await;
    let mut s = open_sotw(&f).await;
    let mut r = sotw(Kind::Endpoints, &["checkout"], "", "");
    r.node = None;
    s.send(r).await;
    let e = s.rx.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("node.id"), "{}", e.message());
    let mut s = open_sotw(&f).await;
    let names: Vec<String> = (0..2000).map(|i| format!("c{i}")).collect();
    let mut r = sotw(Kind::Endpoints, &[], "", "");
    r.resource_names = names;
    s.send(r).await;
    let e = s.rx.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("more than 1024"), "{}", e.message());
    let mut s = open_sotw(&f).await;
    let mut r = sotw(Kind::Endpoints, &["checkout"], "", "");
    r.node = node(&"n".repeat(257));
    s.send(r).await;
    assert_eq!(s.rx.message().await.unwrap_err().code(), tonic::Code::InvalidArgument);
    // A request over the decode limit is refused before it is decoded.
    let mut s = open_sotw(&f).await;
    let mut r = sotw(Kind::Endpoints, &["checkout"], "", "");
    r.node.as_mut().unwrap().user_agent_name = "x".repeat(cellpilot_gateways::MAX_REQUEST_BYTES);
    s.send(r).await;
    let e = s.rx.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    assert!(e.message().contains("too large"), "{}", e.message());
    // Delta subscriptions add up: at most 1,024 per type on one stream.
    let mut d = open_delta(&f).await;
    let subscribe = |from: usize, to: usize| DeltaDiscoveryRequest {
        node: node("n5"),
        type_url: Kind::Endpoints.type_url().into(),
        resource_names_subscribe: (from..to).map(|i| format!("c{i}")).collect(),
        ..Default::default()
    };
    d.send(subscribe(0, 1000)).await;
    assert_eq!(d.recv().await.removed_resources.len(), 1000, "none of them exist");
    d.send(subscribe(1000, 1100)).await;
    let e = d.rx.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("more than 1024"), "{}", e.message());
}

#[tokio::test]
async fn streams_are_capped_per_node_per_token_and_in_all() {
    let xds = XdsConfig { max_streams: 6, max_streams_per_node: 2, max_streams_per_token: 4, ..XdsConfig::default() };
    let auth = AuthConfig { gateway_tokens: vec!["gw-*=a".into(), "other-*=b".into()], ..AuthConfig::default() };
    let f = start_with(Duration::from_secs(20), xds, auth).await;
    let refusal = |r: &Result<DiscoveryResponse, tonic::Status>| {
        let e = r.as_ref().expect_err("refused");
        (e.code(), e.message().to_string())
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let (s, r) = first_answer_as(&f, "a", "gw-1", &["checkout"]).await;
        assert!(r.is_ok(), "{r:?}");
        held.push(s);
    }
    let (_, r) = first_answer_as(&f, "a", "gw-1", &["checkout"]).await;
    let (code, message) = refusal(&r);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(message.contains("`gw-1`") && message.contains("max_streams_per_node"), "{message}");
    for _ in 0..2 {
        let (s, r) = first_answer_as(&f, "a", "gw-2", &["checkout"]).await;
        assert!(r.is_ok(), "{r:?}");
        held.push(s);
    }
    let (_, r) = first_answer_as(&f, "a", "gw-3", &["checkout"]).await;
    let (code, message) = refusal(&r);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(message.contains("token `gw-*`") && message.contains("max_streams_per_token"), "{message}");
    for n in ["other-1", "other-2"] {
        let (s, r) = first_answer_as(&f, "b", n, &["checkout"]).await;
        assert!(r.is_ok(), "{r:?}");
        held.push(s);
    }
    let (_, r) = first_answer_as(&f, "b", "other-3", &["checkout"]).await;
    let (code, message) = refusal(&r);
    assert_eq!(code, tonic::Code::ResourceExhausted);
    assert!(message.contains("max_streams"), "{message}");
    // A token speaks only for the node ids its name matches.
    let (_, r) = first_answer_as(&f, "b", "gw-9", &["checkout"]).await;
    let (code, message) = refusal(&r);
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(message.contains("`gw-9`"), "{message}");
    // A stream that ends gives its place back.
    held.truncate(held.len() - 1);
    support_eventually(|| gateway(&f, "other-2").streams == 0).await;
    let (_s, r) = first_answer_as(&f, "b", "other-3", &["checkout"]).await;
    assert!(r.is_ok(), "{r:?}");
}

#[tokio::test]
async fn subscribed_names_are_capped_per_stream_and_in_all() {
    let xds = XdsConfig { max_names_per_stream: 8, max_names: 12, ..XdsConfig::default() };
    let f = start_with(Duration::from_secs(20), xds, AuthConfig::default()).await;
    let names = |n: usize| (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>();
    let ask = |n: usize, node: &'static str| {
        let names = names(n);
        let f = &f;
        async move { first_answer_as(f, "x", node, &names.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };
    let e = ask(9, "n1").await.1.expect_err("over the stream's cap");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("max_names_per_stream"), "{}", e.message());
    let (first, r) = ask(8, "n1").await;
    assert!(r.is_ok(), "{r:?}");
    let e = ask(5, "n2").await.1.expect_err("over the total");
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("max_names"), "{}", e.message());
    // Across types on one delta stream too, and the names of an ended stream are given back.
    drop(first);
    let mut d = open_delta(&f).await;
    let subscribe = |kind: Kind, n: usize| DeltaDiscoveryRequest {
        node: node("n3"),
        type_url: kind.type_url().into(),
        resource_names_subscribe: names(n),
        ..Default::default()
    };
    support_eventually(|| f.controller.gateways().iter().all(|g| g.streams == 0)).await;
    d.send(subscribe(Kind::Endpoints, 5)).await;
    assert_eq!(d.recv().await.removed_resources.len(), 5);
    d.send(subscribe(Kind::Cluster, 4)).await;
    let e = d.rx.message().await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
    assert!(e.message().contains("9 resource names"), "{}", e.message());
}

#[tokio::test]
async fn a_policy_drain_is_applied_when_the_node_acks_it() {
    let f = start(Duration::from_secs(20)).await;
    let mut s = open_sotw(&f).await;
    s.send(sotw(Kind::Endpoints, &["checkout"], "", "")).await;
    let r = s.recv().await;
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    support_eventually(|| gateway(&f, "n1").watching()).await;
    let input = |cell: &str, errors: u64| CellInput {
        cell: cell.into(),
        requests: 3000,
        errors,
        latest_requests: 1000,
        latest_errors: errors / 3,
        p50_ms: Some(20.0),
    };
    let t0 = now();
    f.controller.evaluate(t0 - 40_000, &Inputs::cells(&[input("a", 0), input("b", 0), input("c", 0)]));
    let r = s.recv().await;
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    let drained = f.controller.evaluate(t0, &Inputs::cells(&[input("a", 0), input("b", 900), input("c", 0)]));
    assert_eq!(drained.len(), 1, "b is drained");
    let cut = f.controller.cutovers().into_iter().find(|c| c.cell == "b").unwrap();
    assert_eq!(cut.applied_at_ms, None, "n1 has not applied it yet");
    let r = s.recv().await;
    assert_eq!(r.version_info, drained[0].version.to_string());
    assert_eq!(localities(&r.resources[0].value)[1], ("b".into(), 1, 1));
    let before_ack = now();
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    support_eventually(|| {
        f.controller.cutovers().into_iter().find(|c| c.cell == "b").is_some_and(|c| c.applied_at_ms.is_some())
    })
    .await;
    let applied = f.controller.cutovers().into_iter().find(|c| c.cell == "b").unwrap().applied_at_ms.unwrap();
    assert!(applied >= before_ack, "applied when the ACK arrived");
    assert_eq!(gateway(&f, "n1").last_ack.unwrap().at_ms, applied);
}

#[tokio::test]
async fn a_node_that_leaves_an_assignment_unanswered_stops_holding_cutovers() {
    let f = start(Duration::from_millis(500)).await;
    let mut s = open_sotw(&f).await;
    s.send(sotw(Kind::Endpoints, &["checkout"], "", "")).await;
    let r = s.recv().await;
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    support_eventually(|| gateway(&f, "n1").watching()).await;
    pin(&f, "a", Some(0));
    let r = s.recv().await;
    // No answer: after the stall time it no longer counts.
    support_eventually(|| !gateway(&f, "n1").watching()).await;
    assert_eq!(f.controller.metrics().watch_stalls.get(), 1);
    // Its late ACK brings it back.
    s.send(sotw(Kind::Endpoints, &["checkout"], &r.nonce, &r.version_info)).await;
    support_eventually(|| gateway(&f, "n1").watching()).await;
    drop(s);
    support_eventually(|| gateway(&f, "n1").streams == 0 && !gateway(&f, "n1").watching()).await;
}

/// Waits (up to 10 s) for `cond`.
async fn support_eventually(cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
