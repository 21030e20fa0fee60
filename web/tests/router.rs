//! The web router in-process, without the binary: statuses, content types, escaping of names
//! that come from telemetry, and the auth layer's refusals.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use cellpilot_core::clock::{SharedClock, TestClock};
use cellpilot_core::config::Config;
use cellpilot_core::metrics::Metrics;
use cellpilot_web::AppState;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tower::ServiceExt;

const READER: &str = "Bearer r-secret";
const ADMIN: &str = "Bearer a-secret";
const INGEST: &str = "Bearer i-secret";

struct Web {
    state: AppState,
    _dir: tempfile::TempDir,
}

fn web(tokens: bool) -> Web {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.dir = dir.path().to_path_buf();
    // Cells an operator may pin: one configured, one an xDS cluster's locality.
    config.control.cells.insert("bj-unit-01".into(), Default::default());
    config.xds.clusters = vec![cellpilot_core::config::XdsCluster {
        name: "checkout".into(),
        cells: [("sh-unit-09".to_string(), vec!["127.0.0.1:9001".to_string()])].into(),
    }];
    if tokens {
        config.auth.read_tokens = vec!["reader=r-secret".into()];
        config.auth.admin_tokens = vec!["oncall=a-secret".into()];
        config.auth.ingest_tokens = vec!["collector=i-secret".into()];
    }
    let clock: SharedClock = Arc::new(TestClock::new(1_800_000_000 * 1_000_000_000));
    let config = Arc::new(config);
    let settings = cellpilot_query::StoreSettings::from_config(&config).unwrap();
    let store = Arc::new(cellpilot_query::RollupStore::open(settings).unwrap());
    let metrics = Metrics::new();
    let controller =
        cellpilot_control::Controller::open(&config.control, &config.storage.dir, clock.clone(), metrics.clone());
    let controller = Arc::new(controller.unwrap());
    let state = AppState::new(config, clock, metrics, store, controller).unwrap();
    state.ready.store(true, Ordering::Release);
    Web { state, _dir: dir }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: String,
}

impl Web {
    async fn send(&self, req: Request<Body>) -> Answer {
        let resp = cellpilot_web::router(self.state.clone()).oneshot(req).await.unwrap();
        let status = resp.status();
        let content_type =
            resp.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.unwrap();
        Answer { status, content_type, body: String::from_utf8_lossy(&bytes).into_owned() }
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> Answer {
        let mut req = Request::get(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post_json(&self, path: &str, auth: Option<&str>, body: &str) -> Answer {
        let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        self.send(req.body(Body::from(body.to_string())).unwrap()).await
    }
}

#[tokio::test]
async fn every_page_and_api_route_answers_with_its_content_type() {
    let w = web(false);
    for path in ["/", "/cells/bj-unit-01", "/decisions", "/alerts", "/query", "/cells/bj-unit-01?range=24h"] {
        let a = w.get(path, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        assert!(a.content_type.starts_with("text/html"), "{path}: {}", a.content_type);
        assert!(a.body.contains("</html>"), "{path}");
    }
    for path in ["/api/v1/cells", "/api/v1/series", "/api/v1/weights", "/api/v1/decisions", "/api/v1/cutovers"] {
        let a = w.get(path, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        assert_eq!(a.content_type, "application/json", "{path}");
        serde_json::from_str::<serde_json::Value>(&a.body).unwrap();
    }
    for path in ["/api/v1/alerts", "/api/v1/slos"] {
        assert_eq!(w.get(path, None).await.status, StatusCode::OK, "{path}");
    }
    let weights: serde_json::Value = serde_json::from_str(&w.get("/api/v1/weights", None).await.body).unwrap();
    assert_eq!(weights["mode"], "enforce", "{weights}");
    let m = w.get("/metrics", None).await;
    assert_eq!((m.status, m.content_type.as_str()), (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8"));
    assert!(m.body.contains("cellpilot_"), "{}", m.body);
    assert_eq!(w.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(w.get("/nope", None).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn readyz_says_why_until_ready() {
    let w = web(false);
    w.state.ready.store(false, Ordering::Release);
    let a = w.get("/readyz", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.body.contains("starting"), "{}", a.body);
    w.state.health.notice("1 damaged record quarantined");
    w.state.ready.store(true, Ordering::Release);
    let a = w.get("/readyz", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.starts_with("ready") && a.body.contains("notice: 1 damaged record"), "{}", a.body);
}

#[tokio::test]
async fn names_from_telemetry_are_escaped_in_pages() {
    let w = web(false);
    let a = w.get("/cells/%3Cscript%3Ealert(1)%3C%2Fscript%3E", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("<h2>Cell &#60;script&#62;alert(1)&#60;/script&#62;</h2>"), "{}", a.body);
    assert!(!a.body.contains("<script>alert"), "an unescaped name reached the page");
}

#[tokio::test]
async fn refusals_name_the_parameter() {
    let w = web(false);
    for (path, status, names) in [
        ("/api/v1/cells?from=yesterday", StatusCode::BAD_REQUEST, "from"),
        ("/api/v1/series?step=1ms&from=0", StatusCode::BAD_REQUEST, "step"),
        ("/api/v1/sla/nope", StatusCode::NOT_FOUND, "nope"),
        ("/sla/nope", StatusCode::NOT_FOUND, "nope"),
        ("/?range=2h", StatusCode::OK, ""),
        ("/cells/a?range=2h", StatusCode::BAD_REQUEST, "range"),
    ] {
        let a = w.get(path, None).await;
        assert_eq!(a.status, status, "{path}: {}", a.body);
        if status != StatusCode::OK {
            assert_eq!(a.content_type, "application/json", "{path}");
            assert!(a.body.contains(names), "{path}: {}", a.body);
        }
    }
    let a = w.post_json("/api/v1/query", None, "{\"sql\": \"DROP TABLE rollups\"}").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let plain = Request::post("/api/v1/query").body(Body::from("SELECT 1")).unwrap();
    let a = w.send(plain).await;
    assert!(a.status == StatusCode::BAD_REQUEST && a.body.contains("Content-Type"), "{}", a.body);
    let a = w.post_json("/api/v1/cells/a/override", None, "{\"weight\": 0, \"ttl\": \"31d\"}").await;
    assert!(a.status == StatusCode::BAD_REQUEST && a.body.contains("`ttl`"), "{}", a.body);
    let a = w.post_json("/api/v1/cells/a/override", None, "{\"weight\": 0, \"colour\": 1}").await;
    assert!(a.status == StatusCode::BAD_REQUEST && a.body.contains("colour"), "{}", a.body);
}

#[tokio::test]
async fn overrides_name_known_cells_and_bounded_weights() {
    let w = web(false);
    // Invented cells never enter the weight table.
    for i in 0..40 {
        let a = w.post_json(&format!("/api/v1/cells/invented-{i}/override"), None, "{\"weight\": 5}").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        assert!(a.body.contains(&format!("`invented-{i}` is unknown")), "{}", a.body);
    }
    // Envoy sums locality weights in 32 bits: a weight near 2^32 is refused.
    let a = w.post_json("/api/v1/cells/bj-unit-01/override", None, "{\"weight\": 4294967295}").await;
    assert!(a.status == StatusCode::BAD_REQUEST && a.body.contains("`weight` must be at most 10000"), "{}", a.body);
    for cell in ["bj-unit-01", "sh-unit-09"] {
        let a = w.post_json(&format!("/api/v1/cells/{cell}/override"), None, "{\"weight\": 10000}").await;
        assert_eq!(a.status, StatusCode::OK, "{cell}: {}", a.body);
    }
    let weights: serde_json::Value = serde_json::from_str(&w.get("/api/v1/weights", None).await.body).unwrap();
    let cells: Vec<&str> = weights["cells"].as_array().unwrap().iter().filter_map(|c| c["cell"].as_str()).collect();
    assert_eq!(cells, ["bj-unit-01", "sh-unit-09"], "{weights}");
}

#[tokio::test]
async fn sql_answers_json_rows_or_an_arrow_stream() {
    let w = web(false);
    let a = w.post_json("/api/v1/query", None, "{\"sql\": \"SELECT 40 + 2 AS x\"}").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert_eq!(v["rows"], serde_json::json!([[42]]), "{v}");
    let req = Request::post("/api/v1/query")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/vnd.apache.arrow.stream")
        .body(Body::from("{\"sql\": \"SELECT cell FROM decisions\"}"))
        .unwrap();
    let a = w.send(req).await;
    assert_eq!((a.status, a.content_type.as_str()), (StatusCode::OK, "application/vnd.apache.arrow.stream"));
}

#[tokio::test]
async fn the_auth_layer_refuses_by_role() {
    let w = web(true);
    // Probes stay open; everything else needs a token with the route's role.
    assert_eq!(w.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(w.get("/readyz", None).await.status, StatusCode::OK);
    for path in ["/", "/metrics", "/api/v1/weights", "/cells/a", "/no-such-route"] {
        assert_eq!(w.get(path, None).await.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(w.get(path, Some("Bearer wrong")).await.status, StatusCode::UNAUTHORIZED, "{path}");
        let a = w.get(path, Some(INGEST)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
        assert!(a.body.contains("`read`"), "{path}: {}", a.body);
    }
    assert_eq!(w.get("/", Some(READER)).await.status, StatusCode::OK);
    let pin = "{\"weight\": 0, \"ttl\": \"1h\", \"reason\": \"maintenance\"}";
    let a = w.post_json("/api/v1/cells/bj-unit-01/override", Some(READER), pin).await;
    assert!(a.status == StatusCode::FORBIDDEN && a.body.contains("`admin`"), "{}", a.body);
    let a = w.post_json("/api/v1/cells/bj-unit-01/override", Some(ADMIN), pin).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // The pin is published and its decision names the token that made it.
    let weights: serde_json::Value = serde_json::from_str(&w.get("/api/v1/weights", Some(READER)).await.body).unwrap();
    let cell = weights["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "bj-unit-01").cloned().unwrap();
    assert_eq!((cell["weight"].as_u64(), cell["state"].as_str()), (Some(0), Some("pinned")), "{weights}");
    let decisions: serde_json::Value =
        serde_json::from_str(&w.get("/api/v1/decisions", Some(READER)).await.body).unwrap();
    assert_eq!(decisions["decisions"][0]["actor"], "oncall", "{decisions}");
}

/// Every route of the table, with its parameters filled, answers a caller without credentials,
/// one with too small a role and one with the right role as its access says.
#[tokio::test]
async fn every_route_of_the_table_enforces_its_access() {
    use cellpilot_core::auth::Role;
    use cellpilot_web::routes::Access;
    let w = web(true);
    let mut checked = 0;
    for r in cellpilot_web::routes::table() {
        let path = r.path.replace("{cell}", "bj-unit-01").replace("{slo}", "none");
        let send = |auth: Option<&'static str>| {
            let mut req = Request::builder().method(r.method.clone()).uri(path.as_str());
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            w.send(req.body(Body::empty()).unwrap())
        };
        let (weaker, right) = match r.access {
            Access::Open => {
                assert_ne!(send(None).await.status, StatusCode::UNAUTHORIZED, "{} {path}", r.method);
                checked += 1;
                continue;
            }
            Access::Needs(Role::Read) => (INGEST, READER),
            Access::Needs(Role::Admin) => (READER, ADMIN),
            Access::Needs(role) => panic!("{} {path}: no web route should need {role:?}", r.method),
        };
        assert_eq!(send(None).await.status, StatusCode::UNAUTHORIZED, "{} {path}", r.method);
        let a = send(Some(weaker)).await;
        let role = r.access.as_str();
        assert!(
            a.status == StatusCode::FORBIDDEN && a.body.contains(&format!("`{role}`")),
            "{} {path}: {}",
            r.method,
            a.body
        );
        // Past the auth layer: the handler answers, whatever it makes of the empty request.
        let a = send(Some(right)).await;
        assert!(
            !matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
            "{} {path}: {}",
            r.method,
            a.body
        );
        checked += 1;
    }
    assert!(checked >= 19);
}
