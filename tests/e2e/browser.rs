//! The pages in real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromedriver`, never a downloaded browser): every page loads with no console errors and shows
//! the seeded numbers; links, the range picker and the SQL console work when clicked; a cell named
//! `<script>alert(1)</script>` stays text; screenshots land in `target/screenshots/`.

use crate::support::{Server, eventually, now_ns, server_span, traces};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const EVIL: &str = "<script>alert(1)</script>";

/// `chromedriver` on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver)");
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// A headless Chromium session that keeps the browser's console log.
    async fn session(&self, profile: &Path) -> Client {
        let caps = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", format!("--user-data-dir={}", profile.display())],
            },
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let serde_json::Value::Object(caps) = caps else { unreachable!() };
        let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(20);
        loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&self.url).await {
                Ok(c) => return c,
                Err(e) if cellpilot_core::clock::monotonic() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ChromeDriver's browser log (`goog:loggingPrefs`), drained on every read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(r#"{"type":"browser"}"#.to_string()))
    }
}

/// A DevTools command through ChromeDriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(serde_json::Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.0.to_string()))
    }
}

/// Emulates `prefers-color-scheme: scheme` for the pages that follow.
async fn color_scheme(c: &Client, scheme: &str) {
    let cmd = serde_json::json!({
        "cmd": "Emulation.setEmulatedMedia",
        "params": {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    });
    c.issue_cmd(Cdp(cmd)).await.expect("Emulation.setEmulatedMedia");
}

/// Computed `property` of the first element matching `selector`.
async fn style(c: &Client, selector: &str, property: &str) -> String {
    let js = "return getComputedStyle(document.querySelector(arguments[0])).getPropertyValue(arguments[1])";
    let v = c.execute(js, vec![selector.into(), property.into()]).await.expect("computed style");
    v.as_str().unwrap_or_default().to_string()
}

/// Console errors and uncaught exceptions since the last call.
async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.expect("browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Loads `url` and saves a screenshot: the serialized DOM after scripts ran.
async fn visit(c: &Client, url: &str, shot: &Path) -> String {
    c.goto(url).await.unwrap_or_else(|e| panic!("loading {url}: {e}"));
    std::fs::write(shot, c.screenshot().await.expect("screenshot")).unwrap();
    c.source().await.expect("page source")
}

/// Clicks `link` (link text) inside `scope` and waits for the page it leads to.
async fn click_link(c: &Client, scope: &str, link: &str) -> url::Url {
    let before = c.current_url().await.unwrap();
    let el = c.find(Locator::Css(scope)).await.unwrap_or_else(|e| panic!("`{scope}` on {before}: {e}"));
    el.find(Locator::LinkText(link))
        .await
        .unwrap_or_else(|e| panic!("link `{link}` on {before}: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(10);
    loop {
        let now = c.current_url().await.unwrap();
        if now != before && c.execute("return document.readyState", vec![]).await.unwrap() == "complete" {
            return now;
        }
        assert!(cellpilot_core::clock::monotonic() < deadline, "clicking `{link}` on {before} went nowhere");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
        // The drain must come within seconds; the discovery guard has its own tests.
        ("CELLPILOT_CONTROL__DISCOVER_MIN_REQUESTS", "0"),
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
    // Until the pages have what the checks below look for: the drain and its alert.
    eventually(Duration::from_secs(40), "bj-unit-01 drained and CellErrorRateHigh raised", || async {
        let weights = server.get_json("/api/v1/weights").await;
        let drained = weights["cells"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["cell"] == "bj-unit-01" && c["state"] == "drained"));
        let alerts = server.get_json("/api/v1/alerts").await;
        let alerted = alerts["alerts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["labels"]["alertname"] == "CellErrorRateHigh"));
        if drained && alerted { Ok(()) } else { Err(format!("{weights} {alerts}")) }
    })
    .await;

    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let profile = tempfile::tempdir().unwrap();
    let driver = Driver::start();
    let c = driver.session(profile.path()).await;
    let base = format!("http://{}", server.web);
    let pages: [(&str, &str, &[&str]); 8] = [
        (
            "overview",
            "/",
            &["bj-unit-01", "drained", "&lt;script&gt;alert(1)&lt;/script&gt;", "7.000 %", "href=\"/sla/demo?range="],
        ),
        (
            "cell",
            "/cells/bj-unit-01?range=15m",
            &["requests per second", "class=\"marker decision drain\"", "class=\"on\""],
        ),
        ("cell-history", "/cells/cell-00?range=24h", &["requests per second", "<polyline"]),
        ("sla", "/sla/demo?range=24h", &["by cell", "by incident", "by cut-over", "cell-00", "bj-unit-01"]),
        ("decisions", "/decisions", &["bj-unit-01", "error rate"]),
        ("alerts", "/alerts", &["CellErrorRateHigh"]),
        ("query", "/query", &["Run"]),
        ("evil", "/cells/%3Cscript%3Ealert(1)%3C%2Fscript%3E", &["&lt;script&gt;alert(1)&lt;/script&gt;"]),
    ];
    for (name, path, expect) in pages {
        let dom = visit(&c, &format!("{base}{path}"), &shots.join(format!("{name}.png"))).await;
        let errors = console_errors(&c).await;
        assert!(errors.is_empty(), "{path}: console errors {errors:?}");
        assert!(!dom.contains(EVIL), "{path}: the evil cell name became markup");
        for e in expect {
            assert!(dom.contains(e), "{path}: `{e}` missing from\n{dom}");
        }
        // No script ran from a cell name: an alert would be open.
        assert!(c.get_alert_text().await.is_err(), "{path}: an alert opened");
    }

    // Links from the overview, clicked.
    c.goto(&format!("{base}/")).await.unwrap();
    let to = click_link(&c, "table", "bj-unit-01").await;
    assert_eq!(to.path(), "/cells/bj-unit-01");
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(click_link(&c, "body", "demo").await.path(), "/sla/demo");
    // The evil cell's link leads to its page, still as text.
    c.goto(&format!("{base}/")).await.unwrap();
    let to = click_link(&c, "table", EVIL).await;
    assert_eq!(to.path(), "/cells/%3Cscript%3Ealert%281%29%3C%2Fscript%3E");
    assert!(c.get_alert_text().await.is_err(), "an alert opened on the evil cell's page");
    assert!(
        c.find(Locator::Css("h2")).await.unwrap().text().await.unwrap().contains(EVIL),
        "the heading shows the name"
    );

    // Light and dark: the page follows the reader's color scheme, charts included.
    for (scheme, background, text) in
        [("light", "rgb(255, 255, 255)", "rgb(29, 35, 41)"), ("dark", "rgb(18, 22, 27)", "rgb(230, 233, 238)")]
    {
        color_scheme(&c, scheme).await;
        for (name, path) in [("overview", "/"), ("sla", "/sla/demo?range=24h"), ("cell", "/cells/bj-unit-01?range=1h")]
        {
            visit(&c, &format!("{base}{path}"), &shots.join(format!("{name}-{scheme}.png"))).await;
            assert_eq!(style(&c, "body", "background-color").await, background, "{path} in {scheme}");
            assert_eq!(style(&c, "body", "color").await, text, "{path} in {scheme}");
        }
        // Chart text uses the page's colours, not a fixed black.
        assert_eq!(style(&c, "svg text", "fill").await, text, "chart labels in {scheme}");
    }

    // The range picker: the chosen range is marked and the charts follow it.
    for (page, range) in [("/cells/bj-unit-01?range=15m", "24h"), ("/sla/demo", "24h"), ("/sla/demo?range=24h", "7d")] {
        c.goto(&format!("{base}{page}")).await.unwrap();
        let to = click_link(&c, ".ranges", range).await;
        assert_eq!(to.query(), Some(format!("range={range}").as_str()), "{page}");
        let on = c.find(Locator::Css(".ranges a.on")).await.unwrap().text().await.unwrap();
        assert_eq!(on, range, "{page}: the picker marks the range shown");
        assert!(console_errors(&c).await.is_empty(), "{page} -> {range}: console errors");
    }
    std::fs::write(shots.join("sla-7d.png"), c.screenshot().await.unwrap()).unwrap();

    // The SQL console runs a query through /api/v1/query and shows the rows.
    c.goto(&format!("{base}/query")).await.unwrap();
    c.find(Locator::Id("run")).await.unwrap().click().await.unwrap();
    let table =
        c.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#out table")).await.expect("query result");
    let text = table.text().await.unwrap();
    assert!(text.contains("bj-unit-01") && text.contains("p999_ms"), "query result: {text}");
    let status = c.find(Locator::Id("status")).await.unwrap().text().await.unwrap();
    assert!(status.ends_with("row(s)"), "status: {status}");
    assert!(console_errors(&c).await.is_empty(), "query console: console errors");
    // A refused statement shows the server's message, not a broken page.
    let sql = c.find(Locator::Id("sql")).await.unwrap();
    sql.clear().await.unwrap();
    sql.send_keys("DROP TABLE rollups").await.unwrap();
    c.find(Locator::Id("run")).await.unwrap().click().await.unwrap();
    let deadline = cellpilot_core::clock::monotonic() + Duration::from_secs(10);
    loop {
        let status = c.find(Locator::Id("status")).await.unwrap().text().await.unwrap();
        if !status.is_empty() && status != "running…" {
            assert!(!status.ends_with("row(s)"), "DROP TABLE ran: {status}");
            break;
        }
        assert!(cellpilot_core::clock::monotonic() < deadline, "no answer to a refused statement");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(shots.join("query-refused.png"), c.screenshot().await.unwrap()).unwrap();
    // The browser logs the 400 itself; nothing on the page threw.
    let errors = console_errors(&c).await;
    assert!(errors.iter().all(|e| e.contains("status of 400")), "query console: console errors {errors:?}");
    c.close().await.unwrap();
}
