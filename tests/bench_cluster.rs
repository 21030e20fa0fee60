//! `cellpilot bench cluster --small` runs to the end against a real `s3s-fs` and reports every
//! figure: correctness only, never its speed (a debug build). The bench itself refuses to finish
//! when the query node's count differs from the acknowledged spans or S3 and local disk differ.

#[test]
#[ignore = "needs s3s-fs"]
fn bench_cluster_reports_every_figure() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cellpilot"))
        .args(["bench", "cluster", "--json", "--small", "--runs", "1"])
        .output()
        .expect("run the bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let rates = v["ingest_spans_per_sec"].as_array().expect("a list of rates");
    assert_eq!(rates.len(), 2, "one rate per ingest node: {v}");
    assert!(rates.iter().all(|r| r.as_f64().is_some_and(|r| r > 0.0)), "{v}");
    assert!(v["ingest_acked_spans"].as_u64().is_some_and(|n| n > 0), "{v}");
    for key in ["p999_24h_s3_ms", "p999_24h_local_ms", "p999_24h_s3_cold_ms", "s3_ratio"] {
        assert!(v[key].as_f64().is_some_and(|ms| ms > 0.0), "{key} in {v}");
    }
    let points = |key: &str| -> Vec<(u64, u64, u64)> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} in {v}"))
            .iter()
            .map(|p| {
                assert!(p["ms"].as_f64().is_some_and(|ms| ms > 0.0), "{p}");
                (
                    p["writers"].as_u64().unwrap_or(0),
                    p["series"].as_u64().unwrap_or(0),
                    p["files"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    // The same 200 series over one and two writers: the second writer adds its own files.
    let by_files = points("p999_24h_by_files");
    assert_eq!(by_files.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), [(1, 200), (2, 200)], "{v}");
    assert!(by_files[0].2 > 0 && by_files[1].2 > by_files[0].2, "{v}");
    let by_series = points("p999_24h_by_series");
    assert_eq!(by_series.iter().map(|p| (p.0, p.1)).collect::<Vec<_>>(), [(2, 200), (2, 400)], "{v}");
}
