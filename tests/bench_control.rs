//! `cellpilot bench control` runs to the end and reports both deliveries (CellWeights watchers
//! and xDS nodes) for every drain: correctness only, never its speed (a debug build).

#[test]
fn bench_control_reports_watchers_and_xds_nodes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cellpilot"))
        .args(["bench", "control", "--json", "--drains", "10"])
        .output()
        .expect("run the bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(
        (v["drains"].as_u64(), v["watchers"].as_u64(), v["xds_nodes"].as_u64()),
        (Some(10), Some(100), Some(100))
    );
    for key in ["p50_ms", "p99_ms", "xds_p50_ms", "xds_p99_ms"] {
        assert!(v[key].as_f64().is_some_and(|ms| ms > 0.0), "{key} in {v}");
    }
    assert!(v["p50_ms"].as_f64() <= v["p99_ms"].as_f64() && v["xds_p50_ms"].as_f64() <= v["xds_p99_ms"].as_f64());
}
