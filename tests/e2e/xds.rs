//! A real proxyless gRPC client (Python grpcio, `xds:///checkout`, the bootstrap file from
//! docs/xds/) following cellpilot's weights over ADS to one small gRPC backend per cell: the
//! share of calls follows the weights, a policy drain stops every call to the failing cell within
//! 1 s, the node's ACK is the cut-over's `applied_at`, and the ramp brings the cell back.

use crate::support::{CellTraffic, Server, eventually, now_ms};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const CELLS: [&str; 3] = ["c-1", "c-2", "c-bad"];
/// The node id in docs/xds/grpc-bootstrap.json.
const NODE: &str = "checkout-client-1";

/// tests/xds/proxyless.py: the grpcio client and its backends, one JSON line per command.
struct Proxyless {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Proxyless {
    fn start() -> (Self, BTreeMap<String, u16>) {
        let python = std::env::var("CELLPILOT_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xds/proxyless.py");
        let mut child = Command::new(&python)
            .arg(script)
            .args(CELLS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {python} (set CELLPILOT_PYTHON to a Python with grpcio): {e}"));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut p = Self { child, stdin, stdout };
        let ports = p.read()["backends"].as_object().expect("backends").clone();
        let ports = ports.into_iter().map(|(cell, port)| (cell, port.as_u64().unwrap() as u16)).collect();
        (p, ports)
    }

    fn read(&mut self) -> Json {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("a line from the client");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client said `{line}`: {e}"))
    }

    fn command(&mut self, cmd: Json) -> Json {
        tokio::task::block_in_place(|| {
            writeln!(self.stdin, "{cmd}").unwrap();
            self.stdin.flush().unwrap();
            self.read()
        })
    }

    /// Calls `n` times; each cell's share.
    fn shares(&mut self, n: u64) -> BTreeMap<String, f64> {
        let r = self.command(json!({"cmd": "count", "n": n}));
        assert_eq!(r["failed"], 0, "{r}");
        let counts = r["counts"].as_object().unwrap();
        CELLS
            .iter()
            .map(|c| (c.to_string(), counts.get(*c).and_then(Json::as_u64).unwrap_or(0) as f64 / n as f64))
            .collect()
    }
}

impl Drop for Proxyless {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_shares(got: &BTreeMap<String, f64>, want: &[(&str, f64)], tolerance: f64) {
    for (cell, share) in want {
        let g = got[*cell];
        assert!((g - share).abs() <= tolerance, "{cell}: share {g:.3}, want {share:.3} ± {tolerance} (all: {got:?})");
    }
}

fn rfc3339_ms(v: &Json) -> i64 {
    let t = humantime::parse_rfc3339(v.as_str().expect("a time")).expect("RFC 3339");
    t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The xDS node's entry on /api/v1/gateways.
async fn node(server: &Server) -> Json {
    let g = server.get_json("/api/v1/gateways").await;
    g["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["protocol"] == "xds" && g["id"] == NODE)
        .cloned()
        .unwrap_or(Json::Null)
}

/// Waits until the node has ACKed table `version` (or later).
async fn acked(server: &Server, version: u64) {
    eventually(Duration::from_secs(10), "the xDS node ACKs the version", || async {
        let n = node(server).await;
        if n["last_ack"]["version"].as_u64().is_some_and(|v| v >= version) { Ok(()) } else { Err(n.to_string()) }
    })
    .await;
}

async fn pin(server: &Server, cell: &str, weight: Option<u32>) -> u64 {
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/cells/{cell}/override", server.web))
        .json(&json!({"weight": weight, "reason": "xds test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json::<Json>().await.unwrap()["version"].as_u64().unwrap()
}

/// `cell`'s (state, weight) in the published table.
async fn weight(server: &Server, cell: &str) -> (String, u64) {
    let w = server.get_json("/api/v1/weights").await;
    let c = w["cells"].as_array().unwrap().iter().find(|c| c["cell"] == cell).cloned().unwrap_or(Json::Null);
    (c["state"].as_str().unwrap_or("").to_string(), c["weight"].as_u64().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs python grpcio"]
async fn proxyless_grpc_follows_drains_and_ramps() {
    let (mut client, ports) = Proxyless::start();
    let data = tempfile::tempdir().unwrap();
    let mut config = String::from("[[xds.clusters]]\nname = \"checkout\"\n[xds.clusters.cells]\n");
    for (cell, port) in &ports {
        config.push_str(&format!("\"{cell}\" = [\"127.0.0.1:{port}\"]\n"));
    }
    let config_path = data.path().join("cellpilot.toml");
    std::fs::write(&config_path, config).unwrap();
    let server = Server::spawn(
        &["serve", "--config", config_path.to_str().unwrap()],
        data.path(),
        &[
            crate::support::FAST_CONTROL.as_slice(),
            &[
                ("CELLPILOT_CONTROL__POLICY__RESTORE_AFTER", "3s"),
                ("CELLPILOT_CONTROL__POLICY__RAMP_STEP", "3s"),
                ("CELLPILOT_CONTROL__QUIET_PERIOD", "1s"),
            ],
        ]
        .concat(),
    );
    let xds = server.xds.expect("xDS listens");
    // The documented bootstrap, pointed at this server.
    let mut bootstrap: Json =
        serde_json::from_str(include_str!("../../docs/xds/grpc-bootstrap.json")).expect("bootstrap is JSON");
    bootstrap["xds_servers"][0]["server_uri"] = json!(xds.to_string());
    let bootstrap_path = data.path().join("grpc-bootstrap.json");
    std::fs::write(&bootstrap_path, bootstrap.to_string()).unwrap();
    let r = client.command(json!({"cmd": "connect", "bootstrap": bootstrap_path, "target": "xds:///checkout"}));
    assert_eq!(r["ok"], true);

    // Every cell at its base weight: a third each.
    assert_shares(&client.shares(600), &[("c-1", 1.0 / 3.0), ("c-2", 1.0 / 3.0), ("c-bad", 1.0 / 3.0)], 0.07);
    // Three times the weight, three times the calls.
    let v = pin(&server, "c-2", Some(300)).await;
    acked(&server, v).await;
    assert_shares(&client.shares(1000), &[("c-1", 0.2), ("c-2", 0.6), ("c-bad", 0.2)], 0.05);
    let v = pin(&server, "c-2", None).await;
    acked(&server, v).await;

    // Traffic on the three cells; c-bad receives OTLP only while it is routed to.
    let traffic = CellTraffic::start(server.http, &CELLS, "c-bad");
    eventually(Duration::from_secs(15), "all three cells under control", || async {
        let w = server.get_json("/api/v1/weights").await;
        if w["cells"].as_array().is_some_and(|c| c.len() == 3) { Ok(()) } else { Err(w.to_string()) }
    })
    .await;

    // c-bad fails; calls go on throughout.
    assert_eq!(client.command(json!({"cmd": "start"}))["ok"], true);
    traffic.set_failing(true);
    let drain = eventually(Duration::from_secs(20), "the policy drains c-bad", || async {
        let d = server.get_json("/api/v1/decisions").await;
        let found = d["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["cell"] == "c-bad" && d["state"] == "drained" && d["actor"] == "policy")
            .cloned();
        found.ok_or_else(|| d.to_string())
    })
    .await;
    traffic.set_routed(false);
    let (decided_at, version) = (rfc3339_ms(&drain["decided_at"]), drain["version"].as_u64().unwrap());
    acked(&server, version).await;
    let n = node(&server).await;
    let ack_at = rfc3339_ms(&n["last_ack"]["at"]);
    while now_ms() < decided_at + 2_500 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let calls = client.command(json!({"cmd": "stop"}));
    let calls: Vec<(f64, String)> = serde_json::from_value(calls["calls"].clone()).unwrap();
    let to_bad_before = calls.iter().filter(|(t, c)| c == "c-bad" && (*t as i64) < decided_at).count();
    let late: Vec<_> = calls.iter().filter(|(t, c)| c == "c-bad" && (*t as i64) > decided_at + 1_000).collect();
    let others_after = calls.iter().filter(|(t, c)| c != "c-bad" && (*t as i64) > decided_at + 1_000).count();
    assert!(
        to_bad_before > 0 && others_after > 0,
        "calls went on: {to_bad_before} to c-bad before, {others_after} after"
    );
    assert!(
        late.is_empty(),
        "{} calls reached c-bad more than 1 s after the drain: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );

    // Every xDS node ACKed the drain; the cut-over carries that ACK as applied_at.
    let gateways = server.get_json("/api/v1/gateways").await;
    for g in gateways["gateways"].as_array().unwrap().iter().filter(|g| g["protocol"] == "xds") {
        assert!(g["last_ack"]["version"].as_u64() >= Some(version), "{g}");
        assert_eq!(g["last_nack"], Json::Null, "{g}");
    }
    assert_eq!(n["watching"], true, "{n}");
    let cut = eventually(Duration::from_secs(10), "the cut-over's applied_at", || async {
        let c = server.get_json("/api/v1/cutovers").await;
        let row = c["cutovers"].as_array().unwrap().iter().find(|c| c["cell"] == "c-bad").cloned();
        row.filter(|r| !r["applied_at"].is_null()).ok_or_else(|| c.to_string())
    })
    .await;
    assert_eq!(cut["decision_version"].as_u64(), Some(version));
    if n["last_ack"]["version"].as_u64() == Some(version) {
        assert_eq!(rfc3339_ms(&cut["applied_at"]), ack_at, "applied_at is the node's ACK");
    }
    let applied = rfc3339_ms(&cut["applied_at"]);
    assert!(
        (decided_at..=decided_at + 1_000).contains(&applied),
        "applied {} ms after the decision",
        applied - decided_at
    );

    // Healthy again: the ramp brings c-bad back, 10 % first, then all of it.
    traffic.set_failing(false);
    let restoring = eventually(Duration::from_secs(15), "c-bad restoring", || async {
        match weight(&server, "c-bad").await {
            (state, w) if state == "restoring" && w == 10 => {
                Ok(server.get_json("/api/v1/weights").await["version"].as_u64().unwrap())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    traffic.set_routed(true);
    acked(&server, restoring).await;
    let shares = client.shares(300);
    assert!(shares["c-bad"] > 0.0 && shares["c-bad"] < 0.15, "10 % of a 100 weight beside two at 100: {shares:?}");
    let active = eventually(Duration::from_secs(20), "c-bad active again", || async {
        match weight(&server, "c-bad").await {
            (state, 100) if state == "active" => {
                Ok(server.get_json("/api/v1/weights").await["version"].as_u64().unwrap())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    acked(&server, active).await;
    assert_shares(&client.shares(600), &[("c-1", 1.0 / 3.0), ("c-2", 1.0 / 3.0), ("c-bad", 1.0 / 3.0)], 0.07);
    traffic.stop().await;
}
