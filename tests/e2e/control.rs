//! The control loop end to end: OTLP traffic on three cells, a gateway watching CellWeights over
//! gRPC, one cell pushed to 20 % errors — the drained table arrives in time, the decision says
//! why, and the API agrees.

use crate::support::{CellTraffic, FAST_CONTROL, Server, eventually, now_ns};
use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
use cellpilot_gateways::pb::{AckRequest, CellState, WatchWeightsRequest};
use std::time::Duration;

const CELLS: [&str; 3] = ["c-1", "c-2", "c-bad"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_cell_is_drained_and_gateways_hear_it() {
    let server = Server::start(&[FAST_CONTROL.as_slice(), &[("CELLPILOT_CONTROL__QUIET_PERIOD", "1s")]].concat());
    let control = format!("http://{}", server.control);
    let mut client = CellWeightsClient::connect(control).await.unwrap();
    let mut watch = client.watch(WatchWeightsRequest { gateway_id: "gw-1".into() }).await.unwrap().into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert!(first.cells.is_empty(), "the current table arrives at once");

    // c-bad is sent nothing once the gateway applies the drain.
    let traffic = CellTraffic::start(server.http, &CELLS, "c-bad");
    // Healthy first, until every cell is in the table gateways receive.
    eventually(Duration::from_secs(15), "all three cells under control", || async {
        let w = server.get_json("/api/v1/weights").await;
        if w["cells"].as_array().is_some_and(|c| c.len() == 3) { Ok(()) } else { Err(w.to_string()) }
    })
    .await;
    traffic.set_failing(true);
    let errors_from = cellpilot_core::clock::monotonic();
    let drained = loop {
        let t = tokio::time::timeout(Duration::from_secs(15), watch.message())
            .await
            .expect("a table in time")
            .unwrap()
            .unwrap();
        if t.cells.iter().any(|c| c.cell == "c-bad" && c.state == CellState::Drained as i32) {
            break t;
        }
    };
    let took = errors_from.elapsed();
    assert!(took < Duration::from_secs(5), "drained {took:?} after the errors began (drain_for 3 s + two 1 s windows)");
    let bad = drained.cells.iter().find(|c| c.cell == "c-bad").unwrap();
    assert_eq!(bad.weight, 0);
    assert!(bad.reason.contains("error rate") && bad.reason.contains("> 0.50 %"), "{}", bad.reason);
    assert!(
        drained
            .cells
            .iter()
            .filter(|c| c.cell != "c-bad")
            .all(|c| c.state == CellState::Active as i32 && c.weight == 100)
    );
    // The gateway applies the table: c-bad gets no more requests from here on.
    traffic.set_routed(false);
    let last_sent = now_ns() / 1_000_000;
    client.ack(AckRequest { gateway_id: "gw-1".into(), version: drained.version, applied_at: None }).await.unwrap();
    // The other cells keep serving while the quiet period passes.
    let cutovers = eventually(Duration::from_secs(15), "the cut-over completes", || async {
        let c = server.get_json("/api/v1/cutovers").await;
        if c["cutovers"][0]["duration_ms"].is_i64() { Ok(c) } else { Err(c.to_string()) }
    })
    .await;
    traffic.stop().await;
    let c = &cutovers["cutovers"][0];
    assert_eq!((c["cell"].as_str(), c["source"].as_str()), (Some("c-bad"), Some("observed")), "{cutovers}");
    assert_eq!(c["decision_version"], drained.version);
    assert!(c["applied_at"].is_string(), "the watching gateway acked: {c}");
    let decided = unix_ms(c["decided_at"].as_str().unwrap());
    let duration = c["duration_ms"].as_i64().expect("completed after the quiet period");
    // The last request went to c-bad just before `last_sent`: the measured duration matches
    // what the test did, within one window.
    let expected = last_sent as i64 - decided;
    assert!((duration - expected).abs() <= 1_000, "duration {duration} ms, the test took {expected} ms");

    let weights = server.get_json("/api/v1/weights").await;
    assert_eq!(weights["version"], drained.version);
    assert_eq!(weights["mode"], "enforce");
    let decisions = server.get_json("/api/v1/decisions").await;
    let d = &decisions["decisions"][0];
    assert_eq!(
        (d["cell"].as_str(), d["state"].as_str(), d["new_weight"].as_u64()),
        (Some("c-bad"), Some("drained"), Some(0))
    );
    assert_eq!(d["actor"], "policy");
    let cell = server.cell("c-bad").await;
    assert_eq!((cell["state"].as_str(), cell["weight"].as_u64()), (Some("drained"), Some(0)));
}

fn unix_ms(s: &str) -> i64 {
    humantime::parse_rfc3339(s).unwrap().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_need_admin_and_decisions_survive_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let env = [
        ("CELLPILOT_AUTH__TOKENS", "reader=r3ad"),
        ("CELLPILOT_AUTH__ADMIN_TOKENS", "ops=adm1n"),
        // Only known cells may be pinned: this one is configured.
        ("CELLPILOT_CONTROL__CELLS__SH-UNIT-02__BASE_WEIGHT", "100"),
    ];
    let server = Server::start_in(data.path(), &env);
    let url = format!("http://{}/api/v1/cells/sh-unit-02/override", server.web);
    let body = serde_json::json!({"weight": 7, "ttl": "1h", "reason": "game day"});
    let client = reqwest::Client::new();
    let post = |token: &str| client.post(&url).bearer_auth(token).json(&body).send();
    let refused = post("r3ad").await.unwrap();
    assert_eq!(refused.status(), 403, "a read token may not override");
    assert!(refused.text().await.unwrap().contains("`admin` role"));
    let plain = client.post(&url).bearer_auth("adm1n").body(body.to_string()).send().await.unwrap();
    assert_eq!(plain.status(), 400, "Content-Type: application/json is required");
    let ok = post("adm1n").await.unwrap();
    assert_eq!(ok.status(), 200);
    let get = |path: &str| client.get(format!("http://{}{path}", server.web)).bearer_auth("r3ad").send();
    let weights: serde_json::Value = get("/api/v1/weights").await.unwrap().json().await.unwrap();
    let pinned = weights["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "sh-unit-02").unwrap().clone();
    assert_eq!((pinned["weight"].as_u64(), pinned["state"].as_str()), (Some(7), Some("pinned")));
    let version = weights["version"].as_u64().unwrap();
    let decisions: serde_json::Value = get("/api/v1/decisions").await.unwrap().json().await.unwrap();
    assert_eq!(decisions["decisions"][0]["actor"], "ops");
    // A reported cut-over through OTLP logs.
    let log = serde_json::json!({"resourceLogs": [{"scopeLogs": [{"logRecords": [{
    "eventName": "cell.cutover",
    "attributes": [
        {"key": "cell", "value": {"stringValue": "sh-unit-02"}},
        {"key": "cutover.started", "value": {"intValue": "1795000000000000000"}},
        {"key": "cutover.completed", "value": {"stringValue": "2026-11-18T11:06:40.250Z"}}
    ]}]}]}]});
    let report = |token: &'static str| {
        client
            .post(format!("http://{}/v1/logs", server.http))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(log.to_string())
            .send()
    };
    assert_eq!(report("r3ad").await.unwrap().status(), 403, "reporting cut-overs needs the gateway role");
    assert_eq!(report("adm1n").await.unwrap().status(), 200);
    drop(server);

    let server = Server::start_in(data.path(), &env);
    let get = |path: &str| client.get(format!("http://{}{path}", server.web)).bearer_auth("r3ad").send();
    let weights: serde_json::Value = get("/api/v1/weights").await.unwrap().json().await.unwrap();
    assert!(weights["version"].as_u64().unwrap() >= version, "versions never go backwards");
    let pinned = weights["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "sh-unit-02").unwrap().clone();
    assert_eq!(pinned["weight"], 7, "the pin survives the restart");
    let cutovers: serde_json::Value = get("/api/v1/cutovers").await.unwrap().json().await.unwrap();
    let rows = cutovers["cutovers"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "reported once, even after the WAL replay: {cutovers}");
    assert_eq!((rows[0]["source"].as_str(), rows[0]["duration_ms"].as_i64()), (Some("reported"), Some(250)));
}
