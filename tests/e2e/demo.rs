//! `cellpilot demo` runs the whole loop: simulated cells send real OTLP to the embedded server,
//! incidents raise one cell's error rate, and it all shows through the JSON API.

use crate::support::{Server, eventually};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_live_cells_with_an_incident() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let args = [
        "demo",
        "--duration",
        "15s",
        "--rps",
        "400",
        "--first-incident",
        "1s",
        "--incident-every",
        "1h",
        "--incident-for",
        "1h",
        "--data-dir",
        &dir_arg,
    ];
    let env = [
        ("CELLPILOT_INGEST__WINDOW", "1s"),
        ("CELLPILOT_INGEST__ALLOWED_LATENESS", "2s"),
        ("CELLPILOT_CONTROL__EVALUATION_DELAY", "200ms"),
        ("CELLPILOT_CONTROL__QUIET_PERIOD", "1s"),
        ("CELLPILOT_CONTROL__POLICY__DRAIN_FOR", "2s"),
        ("CELLPILOT_CONTROL__POLICY__MIN_REQUESTS", "20"),
    ];
    let mut demo = Server::spawn(&args, dir.path(), &env);
    // The drain and its cut-over take ~5 s here; the demo runs for 15.
    eventually(Duration::from_secs(13), "the failing cell drained, its cut-over done, an alert raised", || async {
        let cutovers = demo.get_json("/api/v1/cutovers").await;
        let c = &cutovers["cutovers"][0];
        let done = c["cell"] == "bj-unit-01" && c["applied_at"].is_string() && c["duration_ms"].is_i64();
        let alerts = demo.get_json("/api/v1/alerts").await;
        let alerted = alerts["alerts"].as_array().is_some_and(|a| {
            a.iter()
                .any(|a| a["labels"]["alertname"] == "CellErrorRateHigh" || a["labels"]["alertname"] == "CellDrained")
        });
        if done && alerted { Ok(()) } else { Err(format!("{cutovers} {alerts}")) }
    })
    .await;
    let cells = demo.cells().await;
    let names: Vec<_> = cells.iter().map(|c| c["cell"].as_str().unwrap()).collect();
    assert_eq!(names, ["bj-unit-01", "bj-unit-02", "sh-unit-01", "sh-unit-02"]);
    for c in &cells {
        assert!(c["requests"].as_u64().unwrap() > 50, "{c}");
        let rate = c["error_rate"].as_f64().unwrap();
        if c["cell"] == "bj-unit-01" {
            assert!(rate > 0.03, "the incident cell fails: {c}");
        } else {
            assert!(rate < 0.02, "healthy cells stay healthy: {c}");
        }
    }
    // The failing cell was drained, the simulated gateway applied it, and the cut-over finished.
    let weights = demo.get_json("/api/v1/weights").await;
    let bad = weights["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "bj-unit-01").unwrap().clone();
    assert_eq!(bad["state"], "drained", "{weights}");
    let cutovers = demo.get_json("/api/v1/cutovers").await;
    let c = &cutovers["cutovers"][0];
    assert_eq!(c["cell"], "bj-unit-01", "{cutovers}");
    assert!(c["applied_at"].is_string() && c["duration_ms"].is_i64(), "applied and completed: {c}");
    // An alert fired for the incident, and the SLA report pins the bad events on that cell.
    let alerts = demo.get_json("/api/v1/alerts").await;
    let names: Vec<_> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "CellErrorRateHigh" || n == "CellDrained"), "{alerts}");
    let sla = demo.get_json("/api/v1/sla/demo").await;
    assert!(sla["availability"]["bad_events"].as_u64().unwrap() > 0, "{sla}");
    assert_eq!(sla["availability"]["attribution"]["cell"][0]["key"], "bj-unit-01");
    assert_eq!(sla["availability"]["attribution"]["cutover"][0]["cell"], "bj-unit-01");
    assert!(demo.wait(Duration::from_secs(30)).success(), "the demo stops cleanly after --duration");
}
