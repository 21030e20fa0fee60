//! Nodes sharing one S3 bucket (a real S3-compatible server, `s3s-fs`, on loopback): history
//! written into the bucket by one node is answered exactly by every other node, in every tier,
//! whatever that node has of its own.

use crate::support::{Server, now_ms};
use cellpilot_tools::s3::LocalS3;

/// `SELECT sum(requests)` of `table` on `server`.
async fn sum_requests(server: &Server, table: &str) -> u64 {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/query", server.web))
        .json(&serde_json::json!({"sql": format!("SELECT sum(requests) AS n FROM {table}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    body["rows"][0][0].as_u64().unwrap_or_else(|| panic!("{table}: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs"]
async fn every_node_answers_history_written_to_the_bucket() {
    let s3 = LocalS3::start("rollups").unwrap();
    let env: Vec<(&str, String)> = s3.env();
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_cellpilot"))
        .args(["generate", "--url", "s3://rollups/fleet", "--node", "history", "--days", "2", "--fine-hours", "3"])
        .args(["--cells", "3", "--services", "1", "--routes", "2"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&generated.stdout);
    assert!(generated.status.success(), "{out} {}", String::from_utf8_lossy(&generated.stderr));
    // Ground truth: the requests generate drew, as it reports them.
    let requests: u64 = out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out}"));
    assert!(requests > 0);
    let node_dir = s3.root().join("rollups/fleet/nodes/history");
    for tier in ["10s", "5m", "1h"] {
        assert!(node_dir.join("rollups").join(tier).read_dir().unwrap().count() > 0, "{tier} files in the bucket");
    }

    let mut nodes = Vec::new();
    for id in ["query-1", "query-2"] {
        let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.extend([("CELLPILOT_STORAGE__URL", "s3://rollups/fleet"), ("CELLPILOT_CLUSTER__NODE_ID", id)]);
        nodes.push(Server::start(&vars));
    }
    for node in &nodes {
        let cells = node.get_json(&format!("/api/v1/cells?from={}&to={}", now_ms() - 3 * 86_400_000, now_ms())).await;
        let total: u64 = cells["cells"].as_array().unwrap().iter().map(|c| c["requests"].as_u64().unwrap()).sum();
        assert_eq!(total, requests, "{cells}");
        assert_eq!(cells["cells"].as_array().unwrap().len(), 3);
        // The coarse tiers hold everything too: daily files, then 5-minute and finest files past them.
        assert_eq!(sum_requests(node, "rollups_5m").await, requests);
        assert_eq!(sum_requests(node, "rollups_1h").await, requests);
    }
    assert!(!s3.root().join("rollups/fleet/nodes/query-1").exists(), "a node with no data writes nothing");
}

/// A node of the cluster in bucket `rollups` of the local S3 server (`env`), heartbeats and
/// lease lasting 3 s, plus `extra` settings.
fn cluster_node(env: &[(&str, String)], id: &str, role: &str, extra: &[(&str, &str)]) -> Server {
    let data = tempfile::tempdir().unwrap();
    let mut server = cluster_node_in(data.path(), env, id, role, extra);
    server.data = Some(data);
    server
}

/// [`cluster_node`] on the data directory `dir`.
fn cluster_node_in(
    dir: &std::path::Path,
    env: &[(&str, String)],
    id: &str,
    role: &str,
    extra: &[(&str, &str)],
) -> Server {
    let mut vars = cluster_vars(env, id, role);
    vars.extend_from_slice(extra);
    Server::start_in(dir, &vars)
}

/// The settings of node `id` with `role` in bucket `rollups` of the local S3 server (`env`).
fn cluster_vars<'a>(env: &'a [(&str, String)], id: &'a str, role: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    vars.extend([
        ("CELLPILOT_STORAGE__URL", "s3://rollups/fleet"),
        ("CELLPILOT_CLUSTER__NODE_ID", id),
        ("CELLPILOT_CLUSTER__ROLE", role),
        ("CELLPILOT_CLUSTER__LEASE_TTL", "3s"),
    ]);
    vars
}

/// The `(requests, errors, p999_ms)` of every cell `server` answers for the last 5 minutes.
async fn cells(server: &Server) -> std::collections::BTreeMap<String, (u64, u64, f64)> {
    let body = server.get_json("/api/v1/cells").await;
    body["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap();
            (c["cell"].as_str().unwrap().to_string(), (n("requests"), n("errors"), c["p999_ms"].as_f64().unwrap()))
        })
        .collect()
}

async fn post(server: &Server, body: Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs"]
async fn a_query_node_answers_two_ingest_nodes_as_one_node_would() {
    use crate::support::{now_ns, server_span, traces};
    use rand::{RngExt, SeedableRng};
    let s3 = LocalS3::start("rollups").unwrap();
    let env: Vec<(&str, String)> = s3.env();
    let node = |id: &'static str, role: &'static str| cluster_node(&env, id, role, &[]);
    let (a, b, query) = (node("ingest-a", "ingest"), node("ingest-b", "ingest"), node("query-1", "query"));
    assert!(a.cluster.is_some() && b.cluster.is_some() && query.cluster.is_none());
    let single = Server::start(&[]);

    // Six cells; c-1..c-3 reach ingest-a and c-4..c-6 ingest-b, but c-3 reaches both.
    let mut rng = rand::rngs::StdRng::seed_from_u64(15);
    for round in 0..20 {
        let now = now_ns();
        let (mut to_a, mut to_b, mut all) = (Vec::new(), Vec::new(), Vec::new());
        for cell in 1..=6 {
            for i in 0..40u64 {
                let latency = rng.random_range(1_000_000..40_000_000) * if rng.random_bool(0.01) { 20 } else { 1 };
                let status = if rng.random_bool(0.05 * cell as f64 / 3.0) { 503 } else { 200 };
                let span = server_span(&format!("c-{cell}"), status, now - (round * 40 + i) * 1_000, latency);
                match cell {
                    3 if i % 2 == 1 => to_b.push(span.clone()),
                    1..=3 => to_a.push(span.clone()),
                    _ => to_b.push(span.clone()),
                }
                all.push(span);
            }
        }
        post(&a, traces(Some("svc"), to_a)).await;
        post(&b, traces(Some("svc"), to_b)).await;
        post(&single, traces(Some("svc"), all)).await;
    }
    let expected = cells(&single).await;
    assert_eq!(expected.len(), 6);
    assert_eq!(expected["c-3"].0, 20 * 40);
    // The query node finds the ingest nodes by their heartbeats within a beat.
    let deadline = cellpilot_core::clock::monotonic() + std::time::Duration::from_secs(30);
    loop {
        let got = cells(&query).await;
        if got == expected {
            break;
        }
        assert!(cellpilot_core::clock::monotonic() < deadline, "query node: {got:?}\nsingle node: {expected:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // An ingest node serves no data pages: only health, readiness and metrics.
    let resp = reqwest::get(format!("http://{}/api/v1/cells", a.web)).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(reqwest::get(format!("http://{}/readyz", a.web)).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs"]
async fn a_follower_takes_over_the_control_loop_and_versions_continue() {
    use crate::support::{CellTraffic, eventually};
    use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
    use cellpilot_gateways::pb::{CellState, WatchWeightsRequest};
    use std::time::Duration;
    const CELLS: [&str; 3] = ["c-1", "c-2", "c-bad"];
    let fast = crate::support::FAST_CONTROL.as_slice();
    let s3 = LocalS3::start("rollups").unwrap();
    let env = s3.env();
    let ingest = cluster_node(&env, "ingest-a", "ingest", fast);
    let mut first = cluster_node(&env, "query-1", "query", fast);
    let leads = |server: &Server| {
        let web = server.web;
        async move {
            let w: serde_json::Value =
                reqwest::get(format!("http://{web}/api/v1/weights")).await.ok()?.json().await.ok()?;
            w["leads"].as_bool()
        }
    };
    eventually(Duration::from_secs(10), "query-1 leads", || async {
        if leads(&first).await == Some(true) { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
    let second = cluster_node(&env, "query-2", "query", fast);
    assert_eq!(leads(&second).await, Some(false), "one leader at a time");

    // A gateway follows the follower; every table it receives is kept.
    let mut client = CellWeightsClient::connect(format!("http://{}", second.control)).await.unwrap();
    let mut watch = client.watch(WatchWeightsRequest { gateway_id: "gw-f".into() }).await.unwrap().into_inner();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(t)) = watch.message().await {
                seen.lock().unwrap().push(t);
            }
        })
    };
    let traffic = CellTraffic::start(ingest.http, &CELLS, "c-bad");
    eventually(Duration::from_secs(20), "the follower publishes all three cells", || async {
        let w = second.get_json("/api/v1/weights").await;
        if w["cells"].as_array().is_some_and(|c| c.len() == 3) { Ok(()) } else { Err(w.to_string()) }
    })
    .await;
    // A pin sent to the follower is refused, naming the leader.
    let url = |s: &Server| format!("http://{}/api/v1/cells/c-1/override", s.web);
    let pin = serde_json::json!({"weight": 7, "ttl": "1h", "reason": "game day"});
    let refused = reqwest::Client::new().post(url(&second)).json(&pin).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    let why = refused.text().await.unwrap();
    assert!(why.contains(&first.web.to_string()), "{why}");

    traffic.set_failing(true);
    let drained = eventually(Duration::from_secs(20), "the leader's drain reaches the follower's gateway", || async {
        let tables = seen.lock().unwrap().clone();
        let hit =
            tables.iter().find(|t| t.cells.iter().any(|c| c.cell == "c-bad" && c.state == CellState::Drained as i32));
        hit.map(|t| t.version).ok_or_else(|| format!("{} tables so far", tables.len()))
    })
    .await;
    traffic.set_routed(false);

    // The leader dies; the follower takes the lease over and decides from the next version on.
    first.kill();
    let killed = cellpilot_core::clock::monotonic();
    eventually(Duration::from_secs(15), "query-2 leads", || async {
        if leads(&second).await == Some(true) { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
    let took = killed.elapsed();
    // lease_ttl 3 s + one 1 s evaluation tick, plus the lease's renewal cadence (a third of the
    // ttl) and the store's one-second modification times.
    assert!(took < Duration::from_secs(6), "took over {took:?} after the kill");
    let resp = reqwest::Client::new().post(url(&second)).json(&pin).send().await.unwrap();
    assert_eq!(resp.status(), 200, "the new leader takes the pin");
    let pinned = eventually(Duration::from_secs(10), "the new leader's version reaches the gateway", || async {
        let tables = seen.lock().unwrap().clone();
        let hit =
            tables.iter().find(|t| t.cells.iter().any(|c| c.cell == "c-1" && c.state == CellState::Pinned as i32));
        hit.map(|t| t.version).ok_or_else(|| format!("{} tables so far", tables.len()))
    })
    .await;
    assert!(pinned > drained, "versions continue: {drained} then {pinned}");
    eprintln!("takeover {took:?} after the kill; drain v{drained} from query-1, pin v{pinned} from query-2");
    traffic.stop().await;
    recorder.abort();
    let versions: Vec<u64> = seen.lock().unwrap().iter().map(|t| t.version).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "the gateway saw versions go forward only: {versions:?}");
    // Every version was decided once: the follower's decision log has no version twice over a cell.
    let decisions = second.get_json("/api/v1/decisions").await;
    let mut keys: Vec<(u64, String)> = decisions["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["version"].as_u64().unwrap(), d["cell"].as_str().unwrap().to_string()))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "{decisions}");
    assert!(keys.iter().any(|(v, c)| *v == drained && c == "c-bad"));
    assert!(keys.iter().any(|(v, c)| *v == pinned && c == "c-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs"]
async fn an_ingest_node_killed_mid_load_loses_nothing_it_acknowledged() {
    use crate::durability::{Load, holds_exactly};
    use crate::support::eventually;
    use std::time::Duration;
    let s3 = LocalS3::start("rollups").unwrap();
    let env = s3.env();
    let data = tempfile::tempdir().unwrap();
    let always = [("CELLPILOT_STORAGE__FSYNC", "always")];
    let mut ingest = cluster_node_in(data.path(), &env, "ingest-a", "ingest", &always);
    let query = cluster_node(&env, "query-1", "query", &[]);
    let load = Load::start(format!("http://{}/v1/traces", ingest.http));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ingest.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = load.stop().await;
    let acked: u64 = sent.values().filter(|(_, a)| *a).map(|(n, _)| n).sum();
    // Restarted on its WAL, under the same id (waiting out its own heartbeat from before the kill).
    let _restarted = cluster_node_in(data.path(), &env, "ingest-a", "ingest", &always);
    eventually(Duration::from_secs(20), "the query node sees the restarted node's windows", || async {
        let cells = query.cells().await;
        let n: u64 = cells.iter().map(|c| c["requests"].as_u64().unwrap()).sum();
        if n >= acked { Ok(()) } else { Err(format!("{n} of {acked}")) }
    })
    .await;
    holds_exactly(&query, &sent).await;
}

/// With `[tls]` and `client_ca`, the cluster listener serves TLS only, the query node dials its
/// peers over TLS, verifies them against `client_ca` and presents its own certificate, which
/// `[auth] cert_roles` gives the read role: the query node still answers the ingest node's open
/// windows, and a plaintext client of the cluster listener is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs s3s-fs"]
async fn nodes_speak_mutual_tls_to_each_other() {
    use crate::mtls::{Ca, https};
    use crate::support::{now_ns, server_span, traces};
    let s3 = LocalS3::start("rollups").unwrap();
    let certs = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster CA");
    let (node_cert, viewer) = (ca.leaf(certs.path(), "node-1"), ca.leaf(certs.path(), "viewer"));
    let file = certs.path().join("cellpilot.toml");
    std::fs::write(
        &file,
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n[auth.cert_roles]\n\"CN=node-*\" = \"read\"\n\"CN=viewer\" = \"read,ingest\"\n",
            node_cert.cert.display(),
            node_cert.key.display(),
            ca.write(certs.path(), "ca.pem").display()
        ),
    )
    .unwrap();
    let env = s3.env();
    let node = |id: &str, role: &str| {
        let dir = tempfile::tempdir().unwrap();
        let vars = cluster_vars(&env, id, role);
        let mut server = Server::spawn(&["serve", "--config", file.to_str().unwrap()], dir.path(), &vars);
        server.data = Some(dir);
        server
    };
    let (ingest, query) = (node("ingest-a", "ingest"), node("query-1", "query"));
    let client = https(&ca, Some(&viewer));
    let spans = (0..25).map(|i| server_span("tls-cluster", if i < 5 { 503 } else { 200 }, now_ns(), 1_000_000));
    let resp = client
        .post(format!("https://localhost:{}/v1/traces", ingest.http.port()))
        .header("content-type", "application/x-protobuf")
        .body(traces(Some("svc"), spans.collect()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = cellpilot_core::clock::monotonic() + std::time::Duration::from_secs(30);
    loop {
        let body: serde_json::Value = client
            .get(format!("https://localhost:{}/api/v1/cells", query.web.port()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let cell = body["cells"].as_array().into_iter().flatten().find(|c| c["cell"] == "tls-cluster").cloned();
        if let Some(c) = cell
            && c["requests"] == 25
        {
            assert_eq!(c["errors"], 5);
            break;
        }
        assert!(
            cellpilot_core::clock::monotonic() < deadline,
            "the query node never saw the ingest node's window: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // Plaintext to the cluster listener gets nothing.
    let addr = ingest.cluster.expect("an ingest node's cluster listener");
    let plain =
        match cellpilot_gateways::pb::cell_weights_client::CellWeightsClient::connect(format!("http://{addr}")).await {
            Ok(mut c) => c.get(cellpilot_gateways::pb::GetWeightsRequest {}).await.is_ok(),
            Err(_) => false,
        };
    assert!(!plain, "the cluster listener answered plaintext");
}
