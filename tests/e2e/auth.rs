//! Least privilege: every web route, every OTLP signal on both transports, reported cut-overs
//! every CellWeights RPC and the xDS stream, walked for every role, no token and a wrong one. Unknown callers
//! get 401 / UNAUTHENTICATED; known ones without the role 403 / PERMISSION_DENIED naming it.

use crate::support::{Server, kv, now_ns};
use cellpilot_gateways::pb::cell_weights_client::CellWeightsClient;
use cellpilot_gateways::pb::{AckRequest, GetWeightsRequest, WatchWeightsRequest};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tonic::Code;

/// (caller, secret, roles it holds). `reporter` is listed under ingest and gateway.
const CALLERS: [(&str, Option<&str>, &[&str]); 8] = [
    ("no token", None, &[]),
    ("wrong token", Some("nope"), &[]),
    ("ingest", Some("1ng"), &["ingest"]),
    ("read", Some("r3ad"), &["read"]),
    ("gateway", Some("g4te"), &["gateway"]),
    ("legacy tokens", Some("l3g"), &["ingest", "read"]),
    ("reporter", Some("rep0rt"), &["ingest", "gateway"]),
    ("admin", Some("adm1n"), &["ingest", "read", "gateway", "admin"]),
];

fn env() -> [(&'static str, &'static str); 6] {
    [
        ("CELLPILOT_AUTH__TOKENS", "legacy=l3g"),
        ("CELLPILOT_AUTH__INGEST_TOKENS", "collector=1ng,reporter=rep0rt"),
        ("CELLPILOT_AUTH__READ_TOKENS", "viewer=r3ad"),
        // A gateway token's name is the gateway id it may use; `gateway` is a pattern.
        ("CELLPILOT_AUTH__GATEWAY_TOKENS", "gateway*=g4te,reporter=rep0rt"),
        ("CELLPILOT_AUTH__ADMIN_TOKENS", "ops=adm1n"),
        // The cell the override route is tried on is configured (unknown cells are 404).
        ("CELLPILOT_CONTROL__CELLS__C1__BASE_WEIGHT", "100"),
    ]
}

/// What a caller without `role` must hear: 401 when unknown, 403 naming the role when known.
fn refusal(secret: Option<&str>) -> u16 {
    if matches!(secret, None | Some("nope")) { 401 } else { 403 }
}

/// Every web route with the role it needs (`None`: open).
const WEB: [(&str, &str, Option<&str>); 20] = [
    ("GET", "/", Some("read")),
    ("GET", "/cells/{cell}", Some("read")),
    ("GET", "/sla/{slo}", Some("read")),
    ("GET", "/decisions", Some("read")),
    ("GET", "/alerts", Some("read")),
    ("GET", "/query", Some("read")),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
    ("GET", "/metrics", Some("read")),
    ("GET", "/api/v1/cells", Some("read")),
    ("POST", "/api/v1/query", Some("read")),
    ("GET", "/api/v1/series", Some("read")),
    ("GET", "/api/v1/weights", Some("read")),
    ("GET", "/api/v1/decisions", Some("read")),
    ("GET", "/api/v1/gateways", Some("read")),
    ("GET", "/api/v1/cutovers", Some("read")),
    ("GET", "/api/v1/alerts", Some("read")),
    ("GET", "/api/v1/slos", Some("read")),
    ("GET", "/api/v1/sla/{slo}", Some("read")),
    ("POST", "/api/v1/cells/{cell}/override", Some("admin")),
];

/// The matrix here is written by hand, independently of the route table; the two must agree
/// route by route and role by role.
#[test]
fn the_matrix_names_every_web_route() {
    let table = cellpilot_web::routes::table();
    assert_eq!(table.len(), WEB.len(), "{table:?}");
    for r in table {
        let method = r.method.to_string();
        let role = match r.access {
            cellpilot_web::routes::Access::Open => None,
            a => Some(a.as_str()),
        };
        assert!(
            WEB.contains(&(method.as_str(), r.path, role)),
            "route {method} {} ({role:?}) is not in the matrix",
            r.path
        );
    }
}

fn cutover_report() -> ExportLogsServiceRequest {
    let attrs = vec![
        kv("cell", Value::StringValue("c1".into())),
        kv("cutover.started", Value::IntValue((now_ns() - 2_000_000_000) as i64)),
        kv("cutover.completed", Value::IntValue((now_ns() - 1_000_000_000) as i64)),
    ];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    event_name: "cell.cutover".into(),
                    attributes: attrs,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn grpc_request<T>(msg: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(s) = secret {
        req.metadata_mut().insert("authorization", format!("Bearer {s}").parse().unwrap());
    }
    req
}

fn code_of<T>(r: &Result<T, tonic::Status>) -> Code {
    r.as_ref().map_or_else(|s| s.code(), |_| Code::Ok)
}

fn expected_code(secret: Option<&str>, allowed: bool) -> Code {
    match (allowed, refusal(secret)) {
        (true, _) => Code::Ok,
        (false, 401) => Code::Unauthenticated,
        _ => Code::PermissionDenied,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_rpc_for_every_role() {
    let server = Server::start(&env());
    let client = reqwest::Client::new();
    for (caller, secret, roles) in CALLERS {
        let has = |role: &str| roles.contains(&role);

        for (method, path, role) in WEB {
            let url = format!("http://{}{}", server.web, path.replace("{cell}", "c1").replace("{slo}", "x"));
            let mut req = match method {
                "POST" if path.ends_with("/override") => {
                    client.post(&url).json(&serde_json::json!({"weight": 5, "ttl": "1m", "reason": "role matrix"}))
                }
                "POST" => client.post(&url).json(&serde_json::json!({"sql": "SELECT 1"})),
                _ => client.get(&url),
            };
            if let Some(s) = secret {
                req = req.bearer_auth(s);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            match role {
                Some(r) if !has(r) => {
                    assert_eq!(status, refusal(secret), "{caller}: {method} {path}: {body}");
                    if status == 403 {
                        assert!(body.contains(&format!("`{r}` role")), "{caller}: {method} {path}: {body}");
                    }
                }
                _ => assert!(![401, 403].contains(&status), "{caller}: {method} {path} answered {status}: {body}"),
            }
        }

        // OTLP over HTTP and gRPC: the ingest role.
        let empty = [("traces", Vec::new()), ("metrics", Vec::new()), ("logs", Vec::new())];
        for (signal, body) in empty {
            let mut req = client
                .post(format!("http://{}/v1/{signal}", server.http))
                .header("content-type", "application/x-protobuf")
                .body(body);
            if let Some(s) = secret {
                req = req.bearer_auth(s);
            }
            let status = req.send().await.unwrap().status().as_u16();
            let want = if has("ingest") { 200 } else { refusal(secret) };
            assert_eq!(status, want, "{caller}: OTLP/HTTP {signal}");
        }
        let grpc = format!("http://{}", server.grpc);
        let traces = TraceServiceClient::connect(grpc.clone())
            .await
            .unwrap()
            .export(grpc_request(Default::default(), secret))
            .await;
        let metrics = MetricsServiceClient::connect(grpc.clone())
            .await
            .unwrap()
            .export(grpc_request(ExportMetricsServiceRequest::default(), secret))
            .await;
        let mut logs_client = LogsServiceClient::connect(grpc).await.unwrap();
        let logs = logs_client.export(grpc_request(ExportLogsServiceRequest::default(), secret)).await;
        for (signal, code) in [("traces", code_of(&traces)), ("metrics", code_of(&metrics)), ("logs", code_of(&logs))] {
            assert_eq!(code, expected_code(secret, has("ingest")), "{caller}: OTLP/gRPC {signal}");
        }

        // Reported cut-overs: ingest and gateway.
        let may_report = has("ingest") && has("gateway");
        let report = logs_client.export(grpc_request(cutover_report(), secret)).await;
        assert_eq!(code_of(&report), expected_code(secret, may_report), "{caller}: cut-over over gRPC");
        if has("ingest") && !has("gateway") {
            assert!(report.unwrap_err().message().contains("`gateway` role"), "{caller}");
        }
        let mut req = client
            .post(format!("http://{}/v1/logs", server.http))
            .header("content-type", "application/x-protobuf")
            .body(cutover_report().encode_to_vec());
        if let Some(s) = secret {
            req = req.bearer_auth(s);
        }
        let status = req.send().await.unwrap().status().as_u16();
        assert_eq!(status, if may_report { 200 } else { refusal(secret) }, "{caller}: cut-over over HTTP");

        // CellWeights: the gateway role; an Ack only for the caller's own Watch.
        let mut cw = CellWeightsClient::connect(format!("http://{}", server.control)).await.unwrap();
        let gateway = has("gateway");
        let get = cw.get(grpc_request(GetWeightsRequest {}, secret)).await;
        assert_eq!(code_of(&get), expected_code(secret, gateway), "{caller}: Get");
        let ack = |id: &str| AckRequest { gateway_id: id.into(), version: 1, applied_at: None };
        let stranger = cw.ack(grpc_request(ack(&format!("gw-of-{caller}")), secret)).await;
        let own_only = gateway && !has("admin");
        let want = if own_only { Code::PermissionDenied } else { expected_code(secret, gateway) };
        assert_eq!(code_of(&stranger), want, "{caller}: Ack without a Watch");
        // A gateway token watches only as the ids its name matches.
        let id = caller.replace(' ', "-");
        let foreign = cw.watch(grpc_request(WatchWeightsRequest { gateway_id: "someone-else".into() }, secret)).await;
        let want = if own_only { Code::PermissionDenied } else { expected_code(secret, gateway) };
        assert_eq!(code_of(&foreign), want, "{caller}: Watch as another gateway");
        drop(foreign);
        let watch = cw.watch(grpc_request(WatchWeightsRequest { gateway_id: id.clone() }, secret)).await;
        assert_eq!(code_of(&watch), expected_code(secret, gateway), "{caller}: Watch");
        if let Ok(stream) = watch {
            let mut stream = stream.into_inner();
            assert!(stream.message().await.unwrap().is_some(), "{caller}: the current table first");
            let own = cw.ack(grpc_request(ack(&id), secret)).await;
            assert_eq!(code_of(&own), Code::Ok, "{caller}: Ack for its own Watch");
            let other = cw.ack(grpc_request(ack("someone-else"), secret)).await;
            let want = if own_only { Code::PermissionDenied } else { Code::Ok };
            assert_eq!(code_of(&other), want, "{caller}: Ack for another gateway");
            if own_only {
                assert!(other.unwrap_err().message().contains("someone-else"));
            }
        }

        // xDS: the gateway role, as CellWeights.
        let mut ads =
            AggregatedDiscoveryServiceClient::connect(format!("http://{}", server.xds.unwrap())).await.unwrap();
        let first = DiscoveryRequest {
            node: Some(Node { id: caller.replace(' ', "-"), ..Default::default() }),
            type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
            ..Default::default()
        };
        let stream = ads.stream_aggregated_resources(grpc_request(futures::stream::iter([first]), secret)).await;
        assert_eq!(code_of(&stream), expected_code(secret, gateway), "{caller}: xDS");
        if let Ok(stream) = stream {
            let answer = stream.into_inner().message().await;
            assert!(answer.is_ok_and(|m| m.is_some()), "{caller}: an xDS response");
        }
        if own_only {
            let first = DiscoveryRequest {
                node: Some(Node { id: "someone-else".into(), ..Default::default() }),
                type_url: "type.googleapis.com/envoy.config.cluster.v3.Cluster".into(),
                ..Default::default()
            };
            let stream = ads.stream_aggregated_resources(grpc_request(futures::stream::iter([first]), secret)).await;
            let refused = stream.unwrap().into_inner().message().await.unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied, "{caller}: xDS as another node");
            assert!(refused.message().contains("someone-else"), "{}", refused.message());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_callers_cannot_flood_the_log() {
    let server = Server::start(&env());
    let client = reqwest::Client::new();
    let mut traces = TraceServiceClient::connect(format!("http://{}", server.grpc)).await.unwrap();
    for i in 0..300 {
        let secret = format!("guess-{i}");
        let r = client.get(format!("http://{}/api/v1/weights", server.web)).bearer_auth(&secret).send().await.unwrap();
        assert_eq!(r.status(), 401);
        let r = client
            .post(format!("http://{}/v1/traces", server.http))
            .bearer_auth(&secret)
            .header("content-type", "application/x-protobuf")
            .body(Vec::new())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let e = traces.export(grpc_request(Default::default(), Some(&secret))).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // One line a minute from each of the three places that refuse, however many callers.
    for what in ["API request rejected", "OTLP/HTTP request rejected", "OTLP/gRPC request rejected"] {
        assert_eq!(server.log_lines(what), 1, "{what}");
    }
}
