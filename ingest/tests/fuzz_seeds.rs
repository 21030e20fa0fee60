//! The fuzz targets' seed corpora (`fuzz/seeds/<target>/`) are built here from the same kinds of
//! requests the tests send, so they stay valid as the code changes: this test fails when a
//! committed seed differs from what it builds. `CELLPILOT_WRITE_FUZZ_SEEDS=1` rewrites them.

use cellpilot_core::config::FsyncPolicy;
use cellpilot_core::latency::SparseHistogram;
use cellpilot_ingest::sequencer::Export;
use cellpilot_ingest::wal::{Kind, WalWriter, WriterSettings};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics, metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The fuzz targets' clock (`cellpilot_fuzz::NOW_MS`).
const NOW_MS: i64 = 1_800_000_000_000;
const NS: u64 = NOW_MS as u64 * 1_000_000;

fn kv(k: &str, v: Value) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> Value {
    Value::StringValue(v.into())
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource { attributes: vec![kv("service.name", s(service)), kv("cell", s("res-cell"))], ..Default::default() })
}

fn traces() -> ExportTraceServiceRequest {
    let span = |cell: &str, route: &str, status: i64, latency_ms: u64| Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        name: "GET".into(),
        kind: 2,
        start_time_unix_nano: NS - 2_000_000_000 - latency_ms * 1_000_000,
        end_time_unix_nano: NS - 2_000_000_000,
        attributes: vec![
            kv("cell.id", s(cell)),
            kv("http.route", s(route)),
            kv("http.response.status_code", Value::IntValue(status)),
        ],
        status: (status >= 500).then(|| Status { code: 2, ..Default::default() }),
        ..Default::default()
    };
    let mut rpc = span("b", "/x", 200, 3);
    rpc.attributes = vec![
        kv("rpc.service", s("Pay")),
        kv("rpc.method", s("Charge")),
        kv("rpc.grpc.status_code", Value::IntValue(14)),
        kv("error.type", s("timeout")),
    ];
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource("checkout"),
            scope_spans: vec![ScopeSpans {
                spans: vec![span("a", "/pay", 200, 20), span("a", "/pay", 503, 900), span("b", "/cart", 200, 7), rpc],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn metrics() -> ExportMetricsServiceRequest {
    let explicit = HistogramDataPoint {
        attributes: vec![kv("cell.id", s("m")), kv("http.route", s("/api"))],
        start_time_unix_nano: NS - 8_000_000_000,
        time_unix_nano: NS - 2_000_000_000,
        count: 6,
        bucket_counts: vec![3, 2, 1],
        explicit_bounds: vec![0.01, 0.1],
        max: Some(0.4),
        ..Default::default()
    };
    let exponential = ExponentialHistogramDataPoint {
        attributes: vec![kv("cell.id", s("m")), kv("http.response.status_code", Value::IntValue(500))],
        start_time_unix_nano: NS - 8_000_000_000,
        time_unix_nano: NS - 2_000_000_000,
        scale: 3,
        zero_count: 1,
        positive: Some(Buckets { offset: -20, bucket_counts: vec![1, 0, 4, 2] }),
        negative: Some(Buckets { offset: 0, bucket_counts: vec![1] }),
        ..Default::default()
    };
    let metric = |data| Metric {
        name: "http.server.request.duration".into(),
        unit: "s".into(),
        data: Some(data),
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: resource("api"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![
                    metric(Data::Histogram(Histogram { data_points: vec![explicit], aggregation_temporality: 2 })),
                    metric(Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![exponential],
                        aggregation_temporality: 1,
                    })),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn logs() -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("gateway"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    event_name: "cell.cutover".into(),
                    attributes: vec![
                        kv("cell", s("a")),
                        kv("cutover.started", Value::IntValue((NS - 3_000_000_000) as i64)),
                        kv("cutover.completed", s("2027-01-15T08:00:00Z")),
                    ],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Traces with every message the scanner checks without reading: events, links, a scope with
/// attributes, entity refs, nested array and key-value list values, a status message.
fn rich_traces() -> ExportTraceServiceRequest {
    let mut req = traces();
    let nested = AnyValue {
        value: Some(Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue { value: Some(s("x")) },
                AnyValue {
                    value: Some(Value::KvlistValue(KeyValueList { values: vec![kv("inner", Value::IntValue(3))] })),
                },
            ],
        })),
    };
    let rs = &mut req.resource_spans[0];
    if let Some(r) = rs.resource.as_mut() {
        r.entity_refs =
            vec![EntityRef { r#type: "service".into(), id_keys: vec!["service.name".into()], ..Default::default() }];
    }
    let ss = &mut rs.scope_spans[0];
    ss.scope = Some(InstrumentationScope {
        name: "lib".into(),
        version: "1.0".into(),
        attributes: vec![kv("scope.attr", Value::BoolValue(true))],
        ..Default::default()
    });
    let span = &mut ss.spans[0];
    span.trace_state = "k=v".into();
    span.flags = 256;
    span.attributes.push(KeyValue { key: "nested".into(), value: Some(nested), ..Default::default() });
    span.events = vec![Event {
        time_unix_nano: NS,
        name: "exception".into(),
        attributes: vec![kv("exception.type", s("Timeout"))],
        ..Default::default()
    }];
    span.links = vec![Link { trace_id: vec![3; 16], span_id: vec![4; 8], flags: 1, ..Default::default() }];
    span.status = Some(Status { message: "upstream timed out".into(), code: 2 });
    req
}

/// Every seed: target -> file name -> bytes.
fn seeds() -> BTreeMap<&'static str, BTreeMap<String, Vec<u8>>> {
    let mut out: BTreeMap<&str, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
    let tagged = |signal: u8, body: Vec<u8>| [vec![signal], body].concat();
    let pb = out.entry("otlp_protobuf").or_default();
    pb.insert("traces".into(), tagged(0, traces().encode_to_vec()));
    pb.insert("metrics".into(), tagged(1, metrics().encode_to_vec()));
    pb.insert("logs".into(), tagged(2, logs().encode_to_vec()));
    let wire = out.entry("otlp_wire").or_default();
    wire.insert("traces".into(), traces().encode_to_vec());
    wire.insert("rich".into(), rich_traces().encode_to_vec());
    // A gRPC call body: the chunk size, then a framed export.
    let framed = |chunk: u8, msg: Vec<u8>| {
        [vec![chunk, 0], u32::try_from(msg.len()).unwrap().to_be_bytes().to_vec(), msg].concat()
    };
    let grpc = out.entry("grpc_frame").or_default();
    grpc.insert("small-chunks".into(), framed(3, traces().encode_to_vec()));
    grpc.insert("one-chunk".into(), framed(255, logs().encode_to_vec()));
    let json = out.entry("otlp_json").or_default();
    json.insert("traces".into(), tagged(0, serde_json::to_vec(&traces()).unwrap()));
    json.insert("metrics".into(), tagged(1, serde_json::to_vec(&metrics()).unwrap()));
    json.insert("logs".into(), tagged(2, serde_json::to_vec(&logs()).unwrap()));
    // The records of a WAL segment (what follows its header).
    let dir = tempfile::tempdir().unwrap();
    let mut w = WalWriter::open(dir.path(), 0, Vec::new(), &WriterSettings::new(FsyncPolicy::Never, 1 << 30)).unwrap();
    let spec = cellpilot_core::window::WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
    let mapper = cellpilot_ingest::mapping::Mapper::new(&cellpilot_core::config::IngestConfig::default());
    let Export::Spans(_, batch) = Export::Traces(traces()).fold(&mapper, spec, NOW_MS).unwrap() else {
        panic!("traces fold to a span batch")
    };
    w.append(Kind::Spans, NOW_MS, &batch).unwrap();
    let ckpt = out.entry("checkpoint").or_default();
    ckpt.insert("batch".into(), [&[0u8][..], &batch].concat());
    let mut agg = cellpilot_ingest::aggregator::Aggregator::new(cellpilot_ingest::aggregator::AggregatorSettings {
        spec,
        max_series: 64,
        max_cells: 8,
    });
    let rich = rich_traces();
    let obs = mapper.traces(&rich).unwrap();
    agg.apply(&obs, NOW_MS, i64::MIN);
    let mut state = Vec::new();
    agg.checkpoint(&mut state);
    ckpt.insert("state".into(), [&[1u8][..], &state].concat());
    w.append(Kind::Traces, NOW_MS, &traces().encode_to_vec()).unwrap();
    w.append(Kind::Metrics, NOW_MS, &metrics().encode_to_vec()).unwrap();
    w.append(Kind::Metrics, NOW_MS + 1000, &metrics().encode_to_vec()).unwrap();
    w.append(Kind::Logs, NOW_MS, &logs().encode_to_vec()).unwrap();
    w.commit().unwrap();
    drop(w);
    let segment = std::fs::read(dir.path().join("wal").join(format!("{:020}.wal", 0))).unwrap();
    let header = segment.iter().position(|b| *b == b'\n').unwrap() + 1;
    out.entry("wal_replay").or_default().insert("segment".into(), segment[header..].to_vec());
    let mut h = SparseHistogram::default();
    for v in [1u64, 5, 300, 20_000, 20_100, 1_500_000] {
        h.record_n(v, v % 7 + 1);
    }
    let hist = out.entry("histogram").or_default();
    hist.insert("v2".into(), h.serialize());
    let mut deflate = Vec::new();
    use hdrhistogram::serialization::Serializer;
    hdrhistogram::serialization::V2DeflateSerializer::new().serialize(&h.to_histogram(), &mut deflate).unwrap();
    hist.insert("v2-deflate".into(), deflate);
    let example = include_bytes!("../../cellpilot.example.toml").to_vec();
    out.entry("config").or_default().insert("example.toml".into(), example);
    out
}

#[test]
fn committed_fuzz_seeds_match_the_requests_the_tests_send() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("CELLPILOT_WRITE_FUZZ_SEEDS").is_some();
    for (target, files) in seeds() {
        for (name, bytes) in files {
            let path = root.join(target).join(&name);
            if write {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &bytes).unwrap();
            }
            let committed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(committed == bytes, "{} is stale: rerun with CELLPILOT_WRITE_FUZZ_SEEDS=1", path.display());
        }
    }
}
