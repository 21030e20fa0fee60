//! Alerts end to end: a failing cell fires `CellErrorRateHigh`, recovery resolves it — delivered
//! straight to a webhook (cellpilot's own Alertmanager-style payload, checked field by field) and
//! through a real Prometheus Alertmanager.

use crate::support::{Server, now_ns, server_span, traces};
use axum::Json;
use axum::routing::post;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// A webhook receiver on loopback that keeps every payload.
async fn receiver() -> (std::net::SocketAddr, Received, tokio::task::JoinHandle<()>) {
    let got: Received = Arc::default();
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |Json(v): Json<serde_json::Value>| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(v);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, got, task)
}

fn spans(cell: &str, n: u64, failing: u64) -> Vec<u8> {
    let now = now_ns();
    traces(None, (0..n).map(|i| server_span(cell, if i < failing { 503 } else { 200 }, now, 2_000_000)).collect())
}

/// Sends 20 spans/100 ms to `cell`, `failing` of them errors, for `secs`.
async fn traffic(server: &Server, cell: &str, failing: u64, secs: u64) {
    let until = cellpilot_core::clock::monotonic() + Duration::from_secs(secs);
    while cellpilot_core::clock::monotonic() < until {
        server.post_otlp("traces", spans(cell, 20, failing)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a payload matching `pred` arrived.
async fn wait_for(got: &Received, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(30);
    loop {
        if let Some(v) = got.lock().unwrap().iter().find(|v| pred(v)).cloned() {
            return v;
        }
        assert!(cellpilot_core::clock::monotonic() < deadline, "no {what} payload: {:?}", got.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn config(extra: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    use std::io::Write;
    write!(
        f,
        r#"
[ingest]
window = "1s"
allowed_lateness = "2s"

[control]
mode = "dry-run"

[alerts]
cell_error_rate = 0.05
cell_error_rate_for = "3s"
{extra}
"#
    )
    .unwrap();
    f
}

fn is_cell_error(v: &serde_json::Value, status: &str) -> bool {
    v["status"] == status
        && v["alerts"].as_array().is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == "CellErrorRateHigh"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_webhook_payload_field_by_field() {
    let (addr, got, _task) = receiver().await;
    let cfg = config(&format!("[[alerts.webhooks]]\nname = \"test-hook\"\nurl = \"http://{addr}/hook\"\n"));
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], data.path(), &[]);
    traffic(&server, "w-bad", 6, 4).await;
    let firing = wait_for(&got, "firing", |v| is_cell_error(v, "firing")).await;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["receiver"], "test-hook");
    assert_eq!(firing["groupLabels"], serde_json::json!({"alertname": "CellErrorRateHigh", "cell": "w-bad"}));
    assert_eq!(firing["commonLabels"]["severity"], "page");
    assert_eq!(firing["groupKey"], "{}:{alertname=\"CellErrorRateHigh\", cell=\"w-bad\"}");
    assert!(firing["externalURL"].as_str().unwrap().starts_with("http://"));
    let alert = &firing["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["cell"], "w-bad");
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains("w-bad"));
    assert!(alert["annotations"]["description"].as_str().unwrap().contains("> 5.00 %"));
    assert!(alert["generatorURL"].as_str().unwrap().ends_with("/cells/w-bad"));
    let fp = alert["fingerprint"].as_str().unwrap();
    assert!(fp.len() == 16 && fp.chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
    assert!(alert["startsAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");

    // Recovery: healthy traffic until the trailing window is clean.
    traffic(&server, "w-bad", 0, 5).await;
    let resolved = wait_for(&got, "resolved", |v| is_cell_error(v, "resolved")).await;
    let r = &resolved["alerts"][0];
    assert_eq!(r["fingerprint"], fp, "the same alert resolves");
    assert!(r["endsAt"].as_str().unwrap() > r["startsAt"].as_str().unwrap());
    let api = server.get_json("/api/v1/alerts").await;
    assert_eq!(api["deliveries"]["test-hook"]["ok"], true, "{api}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs alertmanager"]
async fn through_a_real_alertmanager() {
    let (addr, got, _task) = receiver().await;
    let am_dir = tempfile::tempdir().unwrap();
    let am_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let am_config = am_dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: test\n  group_by: ['alertname', 'cell']\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: test\n    webhook_configs:\n      - url: http://{addr}/hook\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let mut am = std::process::Command::new("/usr/bin/prometheus-alertmanager")
        .arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", am_dir.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("/usr/bin/prometheus-alertmanager (Debian package prometheus-alertmanager)");
    let ready = format!("http://127.0.0.1:{am_port}/-/ready");
    let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(30);
    while !reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200) {
        assert!(cellpilot_core::clock::monotonic() < deadline, "alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let cfg = config(&format!("alertmanager_url = \"http://127.0.0.1:{am_port}\"\n"));
    let data = tempfile::tempdir().unwrap();
    let server = Server::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], data.path(), &[]);
    traffic(&server, "am-bad", 6, 4).await;
    let firing = wait_for(&got, "firing", |v| is_cell_error(v, "firing")).await;
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["receiver"], "test");
    assert_eq!(firing["groupLabels"]["cell"], "am-bad");
    assert!(firing["alerts"][0]["generatorURL"].as_str().unwrap().ends_with("/cells/am-bad"));
    traffic(&server, "am-bad", 0, 5).await;
    wait_for(&got, "resolved", |v| is_cell_error(v, "resolved")).await;
    let _ = am.kill();
    let _ = am.wait();
}
