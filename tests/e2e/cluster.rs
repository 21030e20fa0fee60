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
    let node = |id: &'static str, role: &'static str| -> Server {
        let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.extend([
            ("CELLPILOT_STORAGE__URL", "s3://rollups/fleet"),
            ("CELLPILOT_CLUSTER__NODE_ID", id),
            ("CELLPILOT_CLUSTER__ROLE", role),
            ("CELLPILOT_CLUSTER__LEASE_TTL", "3s"),
        ]);
        Server::start(&vars)
    };
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
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let got = cells(&query).await;
        if got == expected {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "query node: {got:?}\nsingle node: {expected:?}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // An ingest node serves no data pages: only health, readiness and metrics.
    let resp = reqwest::get(format!("http://{}/api/v1/cells", a.web)).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(reqwest::get(format!("http://{}/readyz", a.web)).await.unwrap().status(), 200);
}
