//! Recovery reproduces what was acknowledged; checkpoints release the WAL segments before them
//! (while keeping cumulative-stream deltas exact), and a damaged newest checkpoint falls back
//! to the one before it and the WAL.

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
    let replayed = replay(dir, &Mapper::new(&config), agg, watermark).unwrap();
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

fn segments(dir: &Path) -> Vec<u64> {
    let mut out: Vec<u64> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".wal")?.parse().ok())
        .collect();
    out.sort();
    out
}

fn checkpoints(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn replay_reproduces_and_checkpoints_release_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new(T0 * MS);
    let live = aggregator();

    // Window A and the first cumulative point (a fresh stream: counts 5), in segment 0.
    let mut first = ingest(dir.path(), &live, &clock, i64::MIN);
    first.export::<Traces>(spans("a", T0 - 500, 10), None, &Principal::Anonymous).await.unwrap();
    first
        .export::<MetricsSignal>(cumulative("metrics-cell", T0 - 5_000, T0 - 400, 5), None, &Principal::Anonymous)
        .await
        .unwrap();
    // Eleven seconds on, a checkpoint is due before the next export: segment 0 is sealed.
    clock.advance(Duration::from_secs(11));
    let t1 = T0 + 11_000;
    first.export::<Traces>(spans("b", t1 - 500, 10), None, &Principal::Anonymous).await.unwrap();
    first
        .export::<MetricsSignal>(cumulative("metrics-cell", T0 - 5_000, t1 - 400, 12), None, &Principal::Anonymous)
        .await
        .unwrap();
    first.export::<Logs>(ExportLogsServiceRequest::default(), None, &Principal::Anonymous).await.unwrap();
    // Shutting down takes a last checkpoint: two are kept, and the WAL from the older one on.
    first.shutdown();
    let acknowledged = counts(&live);
    assert_eq!((acknowledged["a"], acknowledged["b"], acknowledged["metrics-cell"]), (10, 10, 12));
    assert_eq!(checkpoints(dir.path()).len(), 2);
    assert!(!segments(dir.path()).contains(&0), "segment 0 is held by both checkpoints: {:?}", segments(dir.path()));
    assert_eq!(replayed_counts(dir.path(), i64::MIN), acknowledged, "recovery reproduces the acknowledged counts");

    // Window A is now in Parquet: recovery leaves it out, and the stream's deltas stay exact.
    let a_end = T0 - T0 % 10_000 + 10_000;
    clock.advance(Duration::from_secs(1));
    let mut second = ingest(dir.path(), &aggregator(), &clock, a_end);
    second
        .export::<MetricsSignal>(cumulative("metrics-cell", T0 - 5_000, t1 + 9_000, 20), None, &Principal::Anonymous)
        .await
        .unwrap();
    second.shutdown();
    let after = replayed_counts(dir.path(), a_end);
    assert_eq!(after.get("a"), None, "persisted windows are not counted again");
    assert_eq!(after["b"], 10);
    assert_eq!(after["metrics-cell"], 7 + 8, "deltas across checkpoints stay exact");

    // The newest checkpoint damaged: the one before it and the WAL after it give the same.
    let newest = checkpoints(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&newest, &bytes).unwrap();
    let agg = aggregator();
    let r = replay(dir.path(), &Mapper::new(&IngestConfig::default()), &agg, a_end).unwrap();
    assert_eq!(counts(&agg), after, "fallback to the previous checkpoint");
    assert_eq!(r.quarantined, 1);
    assert!(r.damage.iter().any(|d| d.contains("checksum")), "{:?}", r.damage);
    assert!(dir.path().join("wal/quarantine").join(newest.file_name().unwrap()).exists());
}
