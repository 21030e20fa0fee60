//! `cellpilot bench e2e` runs to the end over all three transports and reports each figure:
//! correctness only, never its speed (a debug build). The bench itself refuses to finish when the
//! server's count differs from the spans it acknowledged.

#[test]
fn bench_e2e_reports_every_transport() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cellpilot"))
        .args(["bench", "e2e", "--json", "--runs", "1", "--load", "1s"])
        .output()
        .expect("run the bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in ["http_acked_per_sec", "grpc_acked_per_sec", "grpc_gzip_acked_per_sec"] {
        assert!(v[key].as_f64().is_some_and(|r| r > 0.0), "{key} in {v}");
    }
    assert!(v["acked_spans"].as_u64().is_some_and(|n| n > 0), "{v}");
    assert_eq!(v["refused_spans"].as_u64(), Some(0), "nothing refused at a debug build's pace: {v}");
}
