//! WAL replay reproduces what was acknowledged; once a segment's windows are in Parquet it is
//! dropped, and the cumulative-stream checkpoint it leaves keeps later deltas exact.

mod common;

use cellpilot_core::auth::{Authenticator, Principal};
use cellpilot_core::clock::{SharedClock, TestClock};
use cellpilot_core::config::{FsyncPolicy, IngestConfig};
use cellpilot_core::metrics::Metrics;
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::Ingest;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings, SharedAggregator};
use cellpilot_ingest::mapping::Mapper;
use cellpilot_ingest::pipeline::{IngestParts, Logs, MetricsSignal, Traces};
use cellpilot_ingest::sequencer::{WalSettings, replay};
use common::{counts, cumulative, kv};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::MS;
/// One second past a window boundary.
const T0: i64 = 1_800_000_001_000;

fn spans(cell: &str, end_ms: i64, n: usize) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; 16],
            span_id: vec![i as u8 + 1; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: ((end_ms - 5) * MS) as u64,
            end_time_unix_nano: (end_ms * MS) as u64,
            attributes: vec![kv("cell.id", cell)],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "web")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn aggregator() -> SharedAggregator {
    let spec = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
    SharedAggregator::new(Aggregator::new(AggregatorSettings { spec, max_series: 1000, max_cells: 1000 }))
}

fn ingest(dir: &Path, agg: &SharedAggregator, clock: &TestClock, watermark: i64) -> Ingest {
    let config = IngestConfig::default();
    let replayed = replay(dir, &Mapper::new(&config), &aggregator(), watermark).unwrap();
    let shared: SharedClock = Arc::new(clock.clone());
    let parts = IngestParts {
        aggregator: agg.clone(),
        auth: Authenticator::default(),
        metrics: Metrics::new(),
        clock: shared,
        wal: Some((WalSettings::new(dir, FsyncPolicy::Always, 1 << 30), replayed)),
        watermark: Arc::new(move || watermark),
        cutovers: None,
    };
    Ingest::new(&config, parts).unwrap()
}

fn replayed_counts(dir: &Path, durable_before: i64) -> BTreeMap<String, u64> {
    let agg = aggregator();
    replay(dir, &Mapper::new(&IngestConfig::default()), &agg, durable_before).unwrap();
    counts(&agg)
}

#[tokio::test]
async fn replay_reproduces_and_checkpoints_survive_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 * MS);
    let live = aggregator();

    // Segment 0: window A and the first cumulative point (a fresh stream: counts 5).
    let mut first = ingest(dir.path(), &live, &clock, i64::MIN);
    first.export::<Traces>(spans("a", T0 - 500, 10), None, &Principal::Anonymous).await.unwrap();
    first
        .export::<MetricsSignal>(cumulative("metrics-cell", T0 - 5_000, T0 - 400, 5), None, &Principal::Anonymous)
        .await
        .unwrap();
    // Six minutes on, anything seals segment 0.
    clock.advance(Duration::from_secs(360));
    first.export::<Logs>(ExportLogsServiceRequest::default(), None, &Principal::Anonymous).await.unwrap();
    // Segment 1: window B and the second point (+7).
    let t1 = T0 + 360_000;
    first.export::<Traces>(spans("b", t1 - 500, 10), None, &Principal::Anonymous).await.unwrap();
    first
        .export::<MetricsSignal>(cumulative("metrics-cell", T0 - 5_000, t1 - 400, 12), None, &Principal::Anonymous)
        .await
        .unwrap();
    first.shutdown();
    let acknowledged = counts(&live);
    assert_eq!(acknowledged["a"], 10);
    assert_eq!(acknowledged["metrics-cell"], 12);
    assert_eq!(replayed_counts(dir.path(), i64::MIN), acknowledged, "replay reproduces the acknowledged counts");

    // Window A's bucket is now in Parquet: segment 0 goes, its checkpoint stays.
    let a_end = T0 - T0 % 10_000 + 10_000;
    clock.advance(Duration::from_secs(10));
    let mut second = ingest(dir.path(), &aggregator(), &clock, a_end);
    second
        .export::<MetricsSignal>(cumulative("metrics-cell", T0 - 5_000, t1 + 9_000, 20), None, &Principal::Anonymous)
        .await
        .unwrap();
    second.shutdown();
    let segments: Vec<_> = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    assert!(!segments.iter().any(|n| n.starts_with("00000000000000000000")), "segment 0 dropped: {segments:?}");

    let after = replayed_counts(dir.path(), a_end);
    assert_eq!(after.get("a"), None, "persisted windows are not counted again");
    assert_eq!(after["b"], 10);
    assert_eq!(after["metrics-cell"], 7 + 8, "deltas after the dropped segment stay exact");
}
