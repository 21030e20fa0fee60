//! Shared helpers: start the binary, find its ports, query its API, and exact ground truth.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A control loop that decides within seconds: 1 s windows, drains after 3 s of errors over at
/// least 50 requests, weights from errors alone.
pub(crate) const FAST_CONTROL: [(&str, &str); 6] = [
    ("CELLPILOT_INGEST__WINDOW", "1s"),
    ("CELLPILOT_INGEST__ALLOWED_LATENESS", "2s"),
    ("CELLPILOT_CONTROL__EVALUATION_DELAY", "200ms"),
    ("CELLPILOT_CONTROL__POLICY__DRAIN_FOR", "3s"),
    ("CELLPILOT_CONTROL__POLICY__MIN_REQUESTS", "50"),
    ("CELLPILOT_CONTROL__POLICY__LATENCY_ALPHA", "0"),
];

/// A running `cellpilot serve`, killed on drop.
pub(crate) struct Server {
    child: Child,
    /// The data directory; removed with the server unless the test took it over.
    pub(crate) data: Option<tempfile::TempDir>,
    pub(crate) grpc: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) web: SocketAddr,
    pub(crate) control: SocketAddr,
    /// xDS, unless disabled.
    pub(crate) xds: Option<SocketAddr>,
    /// The internal Arrow Flight listener of an ingest node in a cluster.
    pub(crate) cluster: Option<SocketAddr>,
    /// What it wrote to stderr (its log), also passed on to the test's stderr.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the server with every listener on port 0 plus `env` overrides.
    pub(crate) fn start(env: &[(&str, &str)]) -> Server {
        let data = tempfile::tempdir().expect("temp data dir");
        let mut server = Self::start_in(data.path(), env);
        server.data = Some(data);
        server
    }

    /// Starts the server on the data directory `dir`.
    pub(crate) fn start_in(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
        Self::spawn(&["serve"], dir, env)
    }

    /// `cellpilot ARGS` on `dir`, every listener on a free loopback port.
    pub(crate) fn command(args: &[&str], dir: &std::path::Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cellpilot"));
        cmd.args(args)
            .env("CELLPILOT_INGEST__GRPC_LISTEN", "127.0.0.1:0")
            .env("CELLPILOT_INGEST__HTTP_LISTEN", "127.0.0.1:0")
            .env("CELLPILOT_WEB__LISTEN", "127.0.0.1:0")
            .env("CELLPILOT_CONTROL__LISTEN", "127.0.0.1:0")
            .env("CELLPILOT_XDS__LISTEN", "127.0.0.1:0")
            .env("CELLPILOT_CLUSTER__LISTEN", "127.0.0.1:0")
            .env("CELLPILOT_LOG", "warn")
            .env("CELLPILOT_STORAGE__DIR", dir);
        cmd
    }

    /// Runs `cellpilot ARGS` (a command that serves and prints the ready line) on `dir`.
    pub(crate) fn spawn(args: &[&str], dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Self::command(args, dir);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start cellpilot");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("cellpilot ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                if kept.len() < 1_000_000 {
                    kept.push(line);
                }
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(60)).expect("cellpilot printed no ready line");
        let field = |key: &str| -> &str {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{key} missing from `{line}`"))
        };
        // A listener the node's role does not run is `off`: 0.0.0.0:0, which nothing reaches.
        let addr = |key: &str| -> SocketAddr {
            match field(key) {
                "off" => SocketAddr::from(([0, 0, 0, 0], 0)),
                a => a.parse().expect("socket address"),
            }
        };
        Server {
            grpc: addr("otlp_grpc"),
            http: addr("otlp_http"),
            web: addr("web"),
            control: addr("control"),
            xds: field("xds").parse().ok(),
            cluster: field("cluster").parse().ok(),
            child,
            data: None,
            log,
        }
    }

    /// Lines of its log so far that contain `needle`.
    pub(crate) fn log_lines(&self, needle: &str) -> usize {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|l| l.contains(needle)).count()
    }

    /// `GET` a web path and parse the JSON body, asserting 200.
    pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = reqwest::get(format!("http://{}{path}", self.web)).await.expect("GET");
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.json().await.expect("JSON body")
    }

    /// POSTs a protobuf OTLP export to `/v1/{signal}`.
    pub(crate) async fn post_otlp(&self, signal: &str, body: Vec<u8>) -> reqwest::Response {
        self.post_otlp_as(signal, "application/x-protobuf", body).await
    }

    /// POSTs an OTLP export of `content_type` to `/v1/{signal}`.
    pub(crate) async fn post_otlp_as(
        &self,
        signal: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("http://{}/v1/{signal}", self.http))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST OTLP")
    }

    /// `/api/v1/cells` over a range wide enough for everything a test sent.
    pub(crate) async fn cells(&self) -> Vec<serde_json::Value> {
        let now = now_ms();
        let v = self.get_json(&format!("/api/v1/cells?from={}&to={}", now - 3_600_000, now + 600_000)).await;
        v["cells"].as_array().expect("cells array").clone()
    }

    /// The cell named `name` in `/api/v1/cells`.
    pub(crate) async fn cell(&self, name: &str) -> serde_json::Value {
        self.cells()
            .await
            .into_iter()
            .find(|c| c["cell"] == name)
            .unwrap_or_else(|| panic!("cell {name} not in /api/v1/cells"))
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub(crate) fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("wait");
    }

    /// Waits for the process to exit by itself; its exit status.
    pub(crate) fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = cellpilot_core::clock::monotonic() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(cellpilot_core::clock::monotonic() < deadline, "the process did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it returns `Some`, and returns that; panics naming `what`
/// (and the last value seen) when `limit` passes first. Tests wait on conditions this way, never
/// on the wall clock alone: a fast machine goes on at once, a loaded one gets the whole limit.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let last = match check().await {
            Ok(v) => return v,
            Err(last) => last,
        };
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {limit:?}; last seen: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Server {
    /// `cellpilot_control_evaluations_total` now.
    pub(crate) async fn evaluations(&self) -> u64 {
        let metrics = reqwest::get(format!("http://{}/metrics", self.web)).await.unwrap().text().await.unwrap();
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("cellpilot_control_evaluations_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

pub(crate) fn now_ms() -> i64 {
    cellpilot_core::clock::Clock::now_ms(&cellpilot_core::clock::SystemClock)
}

pub(crate) fn now_ns() -> u64 {
    cellpilot_core::clock::Clock::now_ns(&cellpilot_core::clock::SystemClock) as u64
}

/// Nearest-rank quantile of raw samples: the ceil(q·n)-th smallest.
pub(crate) fn nearest_rank(samples: &[u64], q: f64) -> u64 {
    let mut s = samples.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// Asserts `got_ms` is within 1 % of `exact_us`.
pub(crate) fn assert_within_1pct(what: &str, got_ms: f64, exact_us: u64) {
    let exact_ms = exact_us as f64 / 1000.0;
    let err = (got_ms - exact_ms).abs() / exact_ms;
    assert!(err <= 0.01, "{what}: got {got_ms} ms, exact {exact_ms} ms ({:.3} % off)", err * 100.0);
}

/// Seeded heavy-tailed latencies in µs: lognormal around 20 ms, 0.5 % uniformly 1–3 s.
pub(crate) fn heavy_tailed(seed: u64, n: usize) -> Vec<u64> {
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Distribution, LogNormal};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let body = LogNormal::new(20_000f64.ln(), 0.6).unwrap();
    (0..n)
        .map(
            |_| {
                if rng.random_bool(0.005) {
                    rng.random_range(1_000_000..3_000_000)
                } else {
                    body.sample(&mut rng) as u64
                }
            },
        )
        .collect()
}

/// An OTLP attribute.
pub(crate) fn kv(
    k: &str,
    v: opentelemetry_proto::tonic::common::v1::any_value::Value,
) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    opentelemetry_proto::tonic::common::v1::KeyValue {
        key: k.into(),
        value: Some(opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

/// OTLP/HTTP traffic on `cells`, one [`cell_batch`] every 100 ms until [`CellTraffic::stop`]:
/// `bad` fails 20 % of its spans while `failing` is set, and receives spans only while `routed`
/// is (a gateway that applied its drain sends it nothing).
pub(crate) struct CellTraffic {
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    routed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: tokio::task::JoinHandle<()>,
}

impl CellTraffic {
    /// Starts sending healthy traffic to `http`.
    pub(crate) fn start(http: SocketAddr, cells: &'static [&'static str], bad: &'static str) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let (failing, routed, stop) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(true)), Arc::new(AtomicBool::new(false)));
        let (f, r, s) = (failing.clone(), routed.clone(), stop.clone());
        let sender = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut seq = 0;
            while !s.load(Ordering::Relaxed) {
                seq += 1;
                let live: Vec<&str> =
                    cells.iter().copied().filter(|c| *c != bad || r.load(Ordering::Relaxed)).collect();
                let _ = client
                    .post(format!("http://{http}/v1/traces"))
                    .header("content-type", "application/x-protobuf")
                    .body(cell_batch(&live, bad, f.load(Ordering::Relaxed), seq))
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Self { failing, routed, stop, sender }
    }

    /// `bad` starts (or stops) failing.
    pub(crate) fn set_failing(&self, on: bool) {
        self.failing.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// `bad` is (or is no longer) sent traffic.
    pub(crate) fn set_routed(&self, on: bool) {
        self.routed.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops sending and waits for the sender.
    pub(crate) async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sender.await.expect("the traffic sender");
    }
}

/// An OTLP/protobuf export of ten spans per cell ending now; `bad` fails 20 % of its spans
/// when `failing` (which ones turns with `seq`).
pub(crate) fn cell_batch(cells: &[&str], bad: &str, failing: bool, seq: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    let now = now_ns();
    let spans = cells
        .iter()
        .flat_map(|cell| (0..10u64).map(move |i| (cell, i)))
        .map(|(cell, i)| {
            let error = failing && *cell == bad && (seq * 10 + i).is_multiple_of(5);
            Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                name: "GET /x".into(),
                kind: 2,
                start_time_unix_nano: now - 4_000_000,
                end_time_unix_nano: now,
                attributes: vec![
                    kv("cell.id", Value::StringValue(cell.to_string())),
                    kv("http.response.status_code", Value::IntValue(if error { 503 } else { 200 })),
                ],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

/// A SERVER span `GET /` on `cell` with HTTP `status`, ending at `end_ns` after `latency_ns`.
pub(crate) fn server_span(
    cell: &str,
    status: i64,
    end_ns: u64,
    latency_ns: u64,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET /".into(),
        kind: 2,
        start_time_unix_nano: end_ns - latency_ns,
        end_time_unix_nano: end_ns,
        attributes: vec![
            kv("cell.id", Value::StringValue(cell.into())),
            kv("http.response.status_code", Value::IntValue(status)),
        ],
        ..Default::default()
    }
}

/// An export of `spans`, from `service` when given.
pub(crate) fn traces(service: Option<&str>, spans: Vec<opentelemetry_proto::tonic::trace::v1::Span>) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use prost::Message;
    let resource = service
        .map(|s| Resource { attributes: vec![kv("service.name", Value::StringValue(s.into()))], ..Default::default() });
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}
