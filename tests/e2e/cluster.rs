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
