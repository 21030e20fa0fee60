//! Health, readiness and `/metrics` (checked by Prometheus's own `promtool`).

use crate::support::Server;

#[tokio::test]
async fn health_and_readiness() {
    let server = Server::start(&[]);
    let h = reqwest::get(format!("http://{}/healthz", server.web)).await.unwrap();
    assert_eq!(h.status(), 200);
    let r = reqwest::get(format!("http://{}/readyz", server.web)).await.unwrap();
    assert_eq!(r.status(), 200, "ready once the ready line is printed");
    let bad = reqwest::get(format!("http://{}/api/v1/cells?from=yesterday", server.web)).await.unwrap();
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("`from`"), "{body}");
}

#[tokio::test]
#[ignore = "needs promtool"]
async fn metrics_pass_promtool() {
    let server = Server::start(&[]);
    // Touch a few counters with labels first.
    let _ = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", server.http))
        .header("content-type", "application/x-protobuf")
        .body(b"garbage".to_vec())
        .send()
        .await
        .unwrap();
    let text = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    for name in [
        "cellpilot_ingest_requests_total",
        "cellpilot_ingest_spans_total",
        "cellpilot_series_live",
        "cellpilot_windows_open",
    ] {
        assert!(text.contains(&format!("# TYPE {name}")), "{name} missing:\n{text}");
    }
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool on PATH (Debian package `prometheus`)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
