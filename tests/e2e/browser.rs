//! The pages in real headless Chromium (Debian's `chromium`, never a downloaded browser): every
//! page loads with no console errors and shows the seeded numbers; a cell named
//! `<script>alert(1)</script>` stays text; screenshots land in `target/screenshots/`.

use crate::support::{Server, now_ns, server_span, traces};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const EVIL: &str = "<script>alert(1)</script>";

/// Loads `url` in headless Chromium: (serialized DOM after scripts ran, console errors).
fn chromium(url: &str, screenshot: &std::path::Path, profile: &std::path::Path) -> (String, Vec<String>) {
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,1000",
    ];
    let profile = format!("--user-data-dir={}", profile.display());
    let dom = Command::new("chromium")
        .args(common)
        .arg(&profile)
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium (Debian package)");
    let shot = Command::new("chromium")
        .args(common)
        .arg(&profile)
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .output()
        .expect("chromium");
    assert!(screenshot.exists(), "screenshot of {url}: {}", String::from_utf8_lossy(&shot.stderr));
    let stderr = String::from_utf8_lossy(&dom.stderr);
    let errors = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("Uncaught") || l.contains("Error") || l.contains("Failed")))
        .map(str::to_string)
        .collect();
    (String::from_utf8_lossy(&dom.stdout).into_owned(), errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium"]
async fn every_page_in_headless_chromium() {
    let data = tempfile::tempdir().unwrap();
    // Two days of history written straight into the tiers...
    let generated = Command::new(env!("CARGO_BIN_EXE_cellpilot"))
        .args([
            "generate",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--days",
            "2",
            "--cells",
            "2",
            "--services",
            "1",
            "--routes",
            "2",
        ])
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    // ...and the live demo on top, with fast control settings so a drain happens.
    let env = [
        ("CELLPILOT_CONTROL__EVALUATION_DELAY", "200ms"),
        ("CELLPILOT_CONTROL__QUIET_PERIOD", "1s"),
        ("CELLPILOT_CONTROL__POLICY__DRAIN_FOR", "3s"),
        ("CELLPILOT_CONTROL__POLICY__MIN_REQUESTS", "20"),
    ];
    let dir = data.path().to_str().unwrap().to_string();
    let args = [
        "demo",
        "--duration",
        "60s",
        "--rps",
        "300",
        "--first-incident",
        "1s",
        "--incident-for",
        "1h",
        "--data-dir",
        &dir,
    ];
    let server = Server::spawn(&args, data.path(), &env);
    let now = now_ns();
    let spans = (0..100).map(|i| server_span(EVIL, if i < 7 { 500 } else { 200 }, now, 5_000_000)).collect();
    assert_eq!(server.post_otlp("traces", traces(None, spans)).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(15)).await;

    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://{}", server.web);
    let pages: [(&str, &str, &[&str]); 8] = [
        (
            "overview",
            "/",
            &["bj-unit-01", "drained", "&lt;script&gt;alert(1)&lt;/script&gt;", "7.000 %", "href=\"/sla/demo\""],
        ),
        ("cell", "/cells/bj-unit-01?range=15m", &["requests per second", "class=\"marker decision\"", "class=\"on\""]),
        ("cell-history", "/cells/cell-00?range=24h", &["requests per second", "<polyline"]),
        ("sla", "/sla/demo?range=24h", &["by cell", "by incident", "by cut-over", "cell-00", "bj-unit-01"]),
        ("decisions", "/decisions", &["bj-unit-01", "error rate"]),
        ("alerts", "/alerts", &["CellErrorRateHigh"]),
        ("query", "/query", &["Run"]),
        ("evil", "/cells/%3Cscript%3Ealert(1)%3C%2Fscript%3E", &["&lt;script&gt;alert(1)&lt;/script&gt;"]),
    ];
    for (name, path, expect) in pages {
        let (dom, errors) = chromium(&format!("{base}{path}"), &shots.join(format!("{name}.png")), profile.path());
        assert!(errors.is_empty(), "{path}: console errors {errors:?}");
        assert!(!dom.contains(EVIL), "{path}: the evil cell name became markup");
        for e in expect {
            assert!(dom.contains(e), "{path}: `{e}` missing from\n{dom}");
        }
    }
}
