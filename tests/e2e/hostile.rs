//! Hostile input against the real binary, one attack per class: each is answered with a clear
//! refusal (or bounded), then a valid export is acknowledged and counted, `/readyz` is 200, and
//! after `kill -9` a restart on the same data still counts every acknowledged span.

use crate::support::{Server, eventually, kv, now_ms, now_ns, server_span, traces};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::io::Write;
use std::time::Duration;

/// Sends `n` valid spans of cell `cell`, asserts they are acknowledged in full.
async fn send_valid(server: &Server, cell: &str, n: usize) {
    let now = now_ns();
    let spans = (0..n).map(|_| server_span(cell, 200, now, 5_000_000)).collect();
    let resp = server.post_otlp("traces", traces(Some("web"), spans)).await;
    assert_eq!(resp.status(), 200, "a valid export after the attack");
    let body = resp.bytes().await.unwrap();
    assert!(body.is_empty() || !String::from_utf8_lossy(&body).contains("rejected"), "{body:?}");
}

async fn ready(server: &Server) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}/readyz", server.web)).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

async fn requests_of(server: &Server, cell: &str) -> u64 {
    server.cells().await.iter().find(|c| c["cell"] == cell).map_or(0, |c| c["requests"].as_u64().unwrap())
}

/// Afterwards: a valid export counted, ready, and the same after `kill -9` and a restart.
async fn still_serving(mut server: Server, cell: &str) {
    let before = requests_of(&server, cell).await;
    send_valid(&server, cell, 25).await;
    assert_eq!(requests_of(&server, cell).await, before + 25);
    let (status, body) = ready(&server).await;
    assert!(status == 200 && body.starts_with("ready\n"), "{status} {body}");
    server.kill();
    let data = server.data.take().expect("data dir");
    let again = Server::start_in(data.path(), &[]);
    assert_eq!(ready(&again).await.0, 200, "starts on its own data");
    assert_eq!(requests_of(&again, cell).await, before + 25, "every acknowledged span is still counted");
    send_valid(&again, cell, 5).await;
    assert_eq!(requests_of(&again, cell).await, before + 30);
}

/// Two cumulative exponential-histogram points of one stream with offsets at `i32::MAX` and
/// counts at `u64::MAX`: they used to kill the sequencer, and its WAL record killed restarts.
fn edge_points(second: bool) -> ExportMetricsServiceRequest {
    let now = now_ns();
    let point = ExponentialHistogramDataPoint {
        attributes: vec![kv("cell.id", Value::StringValue("edge".into()))],
        scale: if second { 0 } else { 20 },
        positive: Some(Buckets {
            offset: if second { i32::MAX } else { i32::MAX - 1 },
            bucket_counts: vec![u64::MAX, 3, u64::MAX],
        }),
        zero_count: u64::MAX,
        negative: Some(Buckets { offset: i32::MIN, bucket_counts: vec![u64::MAX, u64::MAX] }),
        start_time_unix_nano: now - 5_000_000_000,
        time_unix_nano: now - if second { 1_000_000_000 } else { 2_000_000_000 },
        max: Some(f64::NAN),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", Value::StringValue("metrics-only".into()))],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.request.duration".into(),
                    unit: "s".into(),
                    data: Some(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![point],
                        aggregation_temporality: 2,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_values_at_the_edges_keep_the_sequencer_and_restarts_alive() {
    let server = Server::start(&[("CELLPILOT_STORAGE__FSYNC", "always")]);
    for second in [false, true] {
        let resp = server.post_otlp("metrics", edge_points(second).encode_to_vec()).await;
        assert_eq!(resp.status(), 200, "accepted (or refused per point), never a 500");
    }
    let mut client = MetricsServiceClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    for second in [false, true] {
        client.export(edge_points(second)).await.expect("gRPC export answered");
    }
    still_serving(server, "after-edges").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_ranges_are_bounded_or_refused() {
    let mut cfg = tempfile::NamedTempFile::new().unwrap();
    writeln!(cfg, "[[slo]]\nname = \"all\"\navailability = 0.999\nperiod = \"30d\"").unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::spawn(&["serve", "--config", cfg.path().to_str().unwrap()], data.path(), &[]);
    let web = server.web;
    let get = |path: String| async move {
        let resp = reqwest::get(format!("http://{web}{path}")).await.expect("answered");
        (resp.status().as_u16(), resp.text().await.unwrap())
    };
    // The report's attacks: clamped to retention .. now + 5m, answered.
    let (status, body) = get("/api/v1/sla/all?from=0&to=9000000000000000".into()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get("/api/v1/cells?to=9000000000000000".into()).await.0, 200);
    for (path, names) in [
        ("/api/v1/cells?to=99999999999999999999".to_string(), "`to`"),
        ("/api/v1/cells?from=-1".into(), "`from`"),
        ("/api/v1/cells?from=9000000000000000&to=9000000000000001".into(), "future"),
        ("/api/v1/series?from=0&step=1ms".into(), "`step`"),
        ("/api/v1/series?step=0s".into(), "`step`"),
        (format!("/api/v1/sla/all?from={}&to={}", now_ms(), now_ms() - 1), "`from`"),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(names), "{path}: {body}");
    }
    assert!(server.alive());
    server.data = Some(data);
    still_serving(server, "after-ranges").await;
}

/// Empty spans cost 2 bytes on the wire and hundreds once decoded.
fn empty_spans(n: usize) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_requests_are_refused_before_decoding() {
    let server = Server::start(&[]);
    // 15 MiB of empty spans: 7.8 million of them.
    let body = empty_spans(15 * 1024 * 1024 / 2);
    assert!(body.len() > 15 << 20);
    let resp = server.post_otlp("traces", body.clone()).await;
    assert_eq!(resp.status(), 413);
    let text = String::from_utf8_lossy(&resp.bytes().await.unwrap()).to_string();
    assert!(text.contains("max_items_per_request"), "{text}");
    let mut client = TraceServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap()
        .max_encoding_message_size(64 << 20);
    let status = client.export(ExportTraceServiceRequest::decode(&body[..]).unwrap()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("max_items_per_request"), "{}", status.message());
    // Under the item cap, but empty attributes by the million. Protobuf traces are mapped from
    // the wire, which allocates nothing per attribute: the scan goes through all four million
    // and answers what is wrong with the span (its ids).
    let attrs = vec![Default::default(); 4_000_000];
    let heavy = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span { attributes: attrs.clone(), ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let resp = server.post_otlp("traces", heavy.encode_to_vec()).await;
    assert_eq!(resp.status(), 400);
    assert!(String::from_utf8_lossy(&resp.bytes().await.unwrap()).contains("trace_id must be 16 bytes"));
    // Signals that are decoded whole are refused by their decoded size instead.
    let heavy_logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord { attributes: attrs, ..Default::default() }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let resp = server.post_otlp("logs", heavy_logs.encode_to_vec()).await;
    assert_eq!(resp.status(), 413);
    assert!(String::from_utf8_lossy(&resp.bytes().await.unwrap()).contains("once decoded"));
    // The same flood in OTLP JSON.
    let json = format!("{{\"resourceSpans\":[{{\"scopeSpans\":[{{\"spans\":[{}{{}}]}}]}}]}}", "{},".repeat(200_000));
    let resp = server.post_otlp_as("traces", "application/json", json).await;
    assert_eq!(resp.status(), 413);
    assert!(resp.text().await.unwrap().contains("200001 spans"));
    // A span whose attributes would take 120 MiB decoded: mapped from the wire, it is accepted
    // (nothing is allocated per attribute).
    let n = (120 << 20) / std::mem::size_of::<opentelemetry_proto::tonic::common::v1::KeyValue>();
    let mut span = server_span("worst", 200, now_ns(), 1_000_000);
    span.attributes.extend(std::iter::repeat_n(Default::default(), n));
    let resp = server.post_otlp("traces", traces(Some("web"), vec![span])).await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    // Its JSON counterpart: attributes whose values the deserializer buffers before decoding.
    let attr = r#"{"key":"k","value":{"stringValue":"v"}},"#;
    let mut json = String::from(
        r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"01010101010101010101010101010101","spanId":"0202020202020202","kind":2,"attributes":["#,
    );
    let mut accepted = 0;
    for n in [550_000usize, 450_000, 300_000] {
        let mut body = json.clone();
        body.push_str(&attr.repeat(n));
        body.push_str(r#"{"key":"cell.id","value":{"stringValue":"worst"}}]}]}]}]}"#);
        let resp = server.post_otlp_as("traces", "application/json", body).await;
        if resp.status() == 200 {
            accepted = n;
            break;
        }
        assert_eq!(resp.status(), 413);
    }
    json.clear();
    assert!(accepted > 0, "one of the JSON bodies fits the decoded budget");
    let peak = peak_rss_mib(&server);
    eprintln!("peak RSS after the largest accepted requests ({accepted} JSON attributes): {peak} MiB");
    assert!(peak < 512, "peak RSS {peak} MiB");
    still_serving(server, "after-floods").await;
}

/// The server's peak resident memory so far, MiB (Linux `VmHWM`).
fn peak_rss_mib(server: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cells_stay_out_of_the_weight_table() {
    let server = Server::start(&[("CELLPILOT_INGEST__MAX_CELLS", "100"), ("CELLPILOT_INGEST__WINDOW", "1s")]);
    // 20,000 spans, each with a new cell.id.
    let now = now_ns();
    for chunk in 0..4 {
        let spans = (0..5000).map(|i| server_span(&format!("forged-{chunk}-{i}"), 200, now, 1_000_000)).collect();
        let resp = server.post_otlp("traces", traces(Some("web"), spans)).await;
        assert_eq!(resp.status(), 200);
    }
    let cells = server.cells().await;
    assert!(cells.len() <= 101, "{} cells: at most max_cells plus __overflow__", cells.len());
    let overflow = cells.iter().find(|c| c["cell"] == "__overflow__").expect("overflow cell");
    assert_eq!(overflow["requests"], 19_900);
    // Two evaluations later none of them is in the table gateways stream.
    let before = server.evaluations().await;
    eventually(Duration::from_secs(15), "two more control evaluations", || async {
        let now = server.evaluations().await;
        if now >= before + 2 { Ok(()) } else { Err(format!("{now} evaluations (from {before})")) }
    })
    .await;
    let weights = server.get_json("/api/v1/weights").await;
    assert!(weights["cells"].as_array().unwrap().is_empty(), "{weights}");
    let metrics = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cellpilot_cells_overflow_total 19900"), "{metrics}");
    assert!(peak_rss_mib(&server) < 512);
    // A cell that holds one of the 100 slots (new ones fold until slots free up).
    still_serving(server, "forged-0-7").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_histogram_blobs_and_long_overrides_are_refused() {
    let server = Server::start(&[]);
    let query = |sql: String| {
        let web = server.web;
        async move {
            let resp = reqwest::Client::new()
                .post(format!("http://{web}/api/v1/query"))
                .header("content-type", "application/json")
                .body(serde_json::json!({ "sql": sql }).to_string())
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .expect("answered within 10 s");
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    // A V2 header of another layout claiming a 4 GiB payload.
    let forged = "1c849313ffffffff000000000000000300000000000000010000000000000e10";
    let (status, body) = query(format!("SELECT hdr_quantile(X'{forged}3ff0000000000000', 0.5)")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("payload"), "{body}");
    let (status, body) = query("SELECT hdr_quantile(X'00', 0.5)".into()).await;
    assert_eq!(status, 400, "{body}");
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/cells/x/override", server.web))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "weight": 0, "reason": "r".repeat(5000) }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("`reason`"));
    still_serving(server, "after-sql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_gateway_requests_are_refused() {
    use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
    use cellpilot_gateways::pb::{AckRequest, WatchWeightsRequest};
    let server = Server::start(&[]);
    let mut client = CellWeightsClient::connect(format!("http://{}", server.control)).await.unwrap();
    let long = "g".repeat(10_000);
    let e = client.watch(WatchWeightsRequest { gateway_id: long.clone() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = client.ack(AckRequest { gateway_id: long, version: 1, applied_at: None }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // A time at the end of i64 seconds used to overflow the millisecond conversion.
    let far = prost_types::Timestamp { seconds: i64::MAX, nanos: 999_999_999 };
    let e = client.ack(AckRequest { gateway_id: "gw".into(), version: 1, applied_at: Some(far) }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("applied_at"), "{}", e.message());
    still_serving(server, "after-gateways").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_on_disk_are_quarantined_and_serve_starts() {
    let data = tempfile::tempdir().unwrap();
    // Real history in every tier, then damage: every finest-tier file, and a stray WAL segment.
    let generated = std::process::Command::new(env!("CARGO_BIN_EXE_cellpilot"))
        .args(["generate", "--days", "1", "--fine-hours", "2", "--cells", "2", "--services", "1", "--routes", "1"])
        .arg("--data-dir")
        .arg(data.path())
        .status()
        .unwrap();
    assert!(generated.success());
    let fine = data.path().join("rollups").join("10s");
    for entry in std::fs::read_dir(&fine).unwrap() {
        std::fs::write(entry.unwrap().path(), b"PAR1 garbage PAR1").unwrap();
    }
    let wal = data.path().join("wal");
    std::fs::create_dir_all(&wal).unwrap();
    std::fs::write(wal.join(format!("{:020}.wal", 7)), b"not a WAL segment").unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    let (status, body) = ready(&server).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("notice: WAL segment 7 was unreadable"), "the operator is told: {body}");
    assert!(wal.join("quarantine").join(format!("{:020}.wal", 7)).exists());
    // Finest-tier files newer than the coarse tiers are read at start, the rest when a query
    // meets them: a 10 s series over three hours (two were generated) reads them all.
    let from = now_ms() - 3 * 3_600_000;
    // Answered (200), with the damaged files' rows left out.
    server.get_json(&format!("/api/v1/series?cell=cell-00&from={from}&step=10s")).await;
    let moved = std::fs::read_dir(data.path().join("quarantine").join("rollups").join("10s")).unwrap().count();
    assert!(moved > 0, "damaged files were moved aside");
    let metrics = reqwest::get(format!("http://{}/metrics", server.web)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("cellpilot_wal_quarantined_total 1"), "{metrics}");
    // The coarser history is intact (a day: the last hour alone may hold no complete 5-minute
    // bucket outside the damaged finest tier).
    let day = server.get_json(&format!("/api/v1/cells?from={}", now_ms() - 86_400_000)).await;
    let cell = day["cells"].as_array().unwrap().iter().find(|c| c["cell"] == "cell-00").cloned();
    assert!(cell.is_some_and(|c| c["requests"].as_u64() > Some(0)), "{day}");
    server.data = Some(data);
    still_serving(server, "after-disk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_cutover_events_cannot_flood_the_log() {
    let data = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(data.path(), &[]);
    // 40,000 `cell.cutover` events without cell or times: one export of a few hundred KiB.
    let records = (0..40_000).map(|_| LogRecord { event_name: "cell.cutover".into(), ..Default::default() }).collect();
    let body = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs { log_records: records, ..Default::default() }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    for _ in 0..3 {
        let r = server.post_otlp("logs", body.clone()).await;
        assert_eq!(r.status(), 200, "malformed events are ignored, the export accepted");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = server.log_lines("cell.cutover");
    assert_eq!(lines, 1, "120,000 malformed events: one line a minute, not one each");
    // Replay after a crash logs a summary, not a line per event.
    server.kill();
    let restarted = Server::start_in(data.path(), &[]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(restarted.log_lines("cell.cutover") <= 1, "{} lines on replay", restarted.log_lines("cell.cutover"));
}
