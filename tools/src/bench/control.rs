//! `cellpilot bench control`: decision-to-delivery latency with 100 gateways watching
//! CellWeights and 100 xDS nodes subscribed over ADS, over real gRPC on loopback — from the
//! evaluation that decides a drain (policy, decision log fsync, publish) to the last watcher
//! holding the new table, and to the last xDS node holding the new ClusterLoadAssignment (each
//! node ACKs every response, as Envoy and gRPC do). 20 cells; each evaluation drains the next
//! one while earlier ones ramp back.

use super::median;
use cellpilot_control::Controller;
use cellpilot_control::{CellInput, Inputs};
use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::{SharedClock, SystemClock};
use cellpilot_core::config::ControlConfig;
use cellpilot_core::metrics::Metrics;
use cellpilot_gateways::CellWeightsService;
use cellpilot_gateways::pb::WatchWeightsRequest;
use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCHERS: usize = 100;
/// ADS subscribers.
const NODES: usize = 100;
/// Cells in the table; drains cycle through them while earlier ones restore.
const CELLS: usize = 20;

fn percentile(xs: &mut [f64], q: f64) -> f64 {
    xs.sort_by(f64::total_cmp);
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// Runs the benchmark and prints the figures.
pub fn run(json: bool, drains: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(measure(json, drains.max(10)))
}

async fn measure(json: bool, drains: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = ControlConfig::default();
    // Every iteration drains one more cell: lift the guard and the rate limit.
    config.policy.max_drained_fraction = 1.0;
    config.policy.max_drains_per_minute = u32::MAX;
    config.policy.latency_alpha = 0.0;
    // Every cell enters the table at the first evaluation (else the first waits forever).
    config.discover_min_requests = 0;
    let clock: SharedClock = Arc::new(SystemClock);
    let controller =
        Arc::new(Controller::open(&config, dir.path(), clock.clone(), Metrics::new()).map_err(anyhow::Error::msg)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let service =
        CellWeightsService::new(controller.clone(), clock.clone(), Authenticator::default(), shutdown.clone());
    let stop = shutdown.clone();
    let mut server = tokio::task::JoinSet::new();
    server.spawn(tonic::transport::Server::builder().add_service(service.into_server()).serve_with_incoming_shutdown(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        stop.cancelled_owned(),
    ));

    let clusters = vec![cellpilot_core::config::XdsCluster {
        name: "bench".into(),
        cells: (0..CELLS).map(|i| (format!("cell-{i:04}"), vec![format!("127.0.0.1:{}", 20_000 + i)])).collect(),
    }];
    let snapshots = Arc::new(cellpilot_gateways::Snapshots::new(controller.clone(), clusters));
    let xds = cellpilot_gateways::XdsService::new(snapshots, Authenticator::default(), shutdown.clone());
    let xds_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let xds_addr = xds_listener.local_addr()?;
    let stop = shutdown.clone();
    server.spawn(tonic::transport::Server::builder().add_service(xds.into_server()).serve_with_incoming_shutdown(
        tonic::transport::server::TcpIncoming::from(xds_listener).with_nodelay(Some(true)),
        stop.cancelled_owned(),
    ));
    let (xtx, mut xrx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let mut nodes = tokio::task::JoinSet::new();
    for n in 0..NODES {
        nodes.spawn(subscribe(xds_addr, format!("node-{n}"), xtx.clone()));
    }
    drop(xtx);

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let mut watchers = tokio::task::JoinSet::new();
    for g in 0..WATCHERS {
        let tx = tx.clone();
        let mut client = CellWeightsClient::connect(format!("http://{addr}")).await?;
        let mut stream = client.watch(WatchWeightsRequest { gateway_id: format!("gw-{g}") }).await?.into_inner();
        watchers.spawn(async move {
            while let Ok(Some(t)) = stream.message().await {
                if tx.send((t.version, cellpilot_core::clock::monotonic())).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    // Everyone has the first table and assignment.
    for _ in 0..WATCHERS {
        rx.recv().await;
    }
    for _ in 0..NODES {
        xrx.recv().await;
    }

    let mut latencies = Vec::with_capacity(drains);
    let mut xds_latencies = Vec::with_capacity(drains);
    let healthy: Vec<CellInput> = (0..CELLS)
        .map(|i| CellInput {
            cell: format!("cell-{i:04}"),
            requests: 1000,
            errors: 0,
            latest_requests: 300,
            latest_errors: 0,
            p50_ms: None,
        })
        .collect();
    let mut now = clock.now_ms();
    controller.evaluate(now, &Inputs::cells(&healthy));
    let version = controller.version();
    // Cells entering at their base weight leave the assignment as it was: no xDS push.
    last_holder(&mut rx, WATCHERS, version, cellpilot_core::clock::monotonic()).await?;
    for i in 0..drains {
        let mut inputs = healthy.clone();
        inputs[i % CELLS].errors = 200;
        inputs[i % CELLS].latest_errors = 60;
        // Far enough apart that earlier drains restore meanwhile (and the table stays small).
        now += 100_000;
        let tick = cellpilot_core::clock::monotonic();
        let decided = controller.evaluate(now, &Inputs { cells: inputs });
        anyhow::ensure!(decided.iter().any(|d| d.new_weight == 0), "iteration {i} drained nothing");
        let version = controller.version();
        latencies.push(last_holder(&mut rx, WATCHERS, version, tick).await?);
        xds_latencies.push(last_holder(&mut xrx, NODES, version, tick).await?);
    }
    shutdown.cancel();
    watchers.abort_all();
    nodes.abort_all();
    while server.join_next().await.is_some() {}

    let p50 = median(&mut latencies.clone());
    let p99 = percentile(&mut latencies.clone(), 0.99);
    let max = latencies.iter().copied().fold(0.0, f64::max);
    let xds_p50 = median(&mut xds_latencies.clone());
    let xds_p99 = percentile(&mut xds_latencies.clone(), 0.99);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    if json {
        println!(
            "{}",
            serde_json::json!({"bench": "control", "p99_ms": round(p99), "p50_ms": round(p50), "max_ms": round(max), "watchers": WATCHERS, "xds_p99_ms": round(xds_p99), "xds_p50_ms": round(xds_p50), "xds_nodes": NODES, "drains": drains})
        );
    } else {
        println!(
            "decision -> last of {WATCHERS} watchers: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.3} ms ({drains} drains)"
        );
        println!("decision -> last of {NODES} xDS nodes: p50 {xds_p50:.3} ms, p99 {xds_p99:.3} ms");
    }
    Ok(())
}

/// Waits until `n` receivers report holding `version` (or later); ms from `tick` to the last.
async fn last_holder(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    n: usize,
    version: u64,
    tick: Instant,
) -> anyhow::Result<f64> {
    let mut last = tick;
    let mut got = 0;
    while got < n {
        let (v, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .map_err(|_| anyhow::anyhow!("{got} of {n} subscribers hold version {version} after 10 s"))?
            .ok_or_else(|| anyhow::anyhow!("a subscriber went away"))?;
        if v >= version {
            got += 1;
            last = last.max(at);
        }
    }
    Ok(last.duration_since(tick).as_secs_f64() * 1000.0)
}

/// One ADS (state of the world) node subscribed to the bench cluster's assignment: reports
/// each response's version when it arrives and ACKs it.
async fn subscribe(addr: std::net::SocketAddr, id: String, tx: tokio::sync::mpsc::UnboundedSender<(u64, Instant)>) {
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
    use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    let Ok(mut client) = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await else { return };
    let request = |nonce: String, version: String| DiscoveryRequest {
        version_info: version,
        node: Some(Node { id: id.clone(), ..Default::default() }),
        resource_names: vec!["bench".into()],
        type_url: cellpilot_gateways::Kind::Endpoints.type_url().into(),
        response_nonce: nonce,
        ..Default::default()
    };
    let (req_tx, req_rx) = tokio::sync::mpsc::channel(4);
    if req_tx.send(request(String::new(), String::new())).await.is_err() {
        return;
    }
    let Ok(stream) = client.stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(req_rx)).await
    else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(r)) = stream.message().await {
        if tx.send((r.version_info.parse().unwrap_or(0), cellpilot_core::clock::monotonic())).is_err()
            || req_tx.send(request(r.nonce, r.version_info)).await.is_err()
        {
            break;
        }
    }
}
