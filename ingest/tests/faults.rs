//! The WAL and its checkpoints under a failing disk: a scripted workload runs with the Nth
//! create, write, fsync, truncate or rename failing (once, and from then on as a full disk
//! does), for every N the workload reaches; a checkpoint is due after every round, so segment
//! seals, checkpoint writes and segment drops are among the operations that fail. After each
//! run the process "restarts" (recovery on a fresh aggregator, then one more export and another
//! restart): every acknowledged span and metric sample is counted exactly once, nothing refused
//! is counted, and every refusal was the retryable answer.

mod common;

use cellpilot_core::clock::{SharedClock, TestClock};
use cellpilot_core::config::{FsyncPolicy, IngestConfig};
use cellpilot_core::fs::{Faults, Fs};
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::Error;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings, SharedAggregator};
use cellpilot_ingest::mapping::Mapper;
use cellpilot_ingest::sequencer::{Export, Replayed, Sequencer, SequencerParts, WalSettings, replay};
use common::kv;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MS: u64 = 1_000_000;
/// One second past a window boundary.
const T0: u64 = 1_800_000_001_000;
const ROUNDS: u64 = 10;

fn spans(cell: &str, n: usize, trace_id_len: usize) -> Export {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![1; trace_id_len],
            span_id: vec![i as u8 + 1; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: (T0 - 5) * MS,
            end_time_unix_nano: T0 * MS,
            attributes: vec![kv("cell.id", cell)],
            ..Default::default()
        })
        .collect();
    Export::Traces(ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "web")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    })
}

/// Point of one cumulative histogram stream (cell `metrics`): `total` samples so far.
fn cumulative(total: u64) -> Export {
    let (t0, total_ms) = (T0 as i64, total as i64);
    Export::Metrics(common::cumulative("metrics", t0 - 60_000, t0 - 1_000 + total_ms, total))
}

fn aggregator() -> SharedAggregator {
    let spec = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(300));
    SharedAggregator::new(Aggregator::new(AggregatorSettings { spec, max_series: 1000, max_cells: 1000 }))
}

/// Requests per cell with any, in every window the aggregator holds.
fn counts(agg: &SharedAggregator) -> BTreeMap<String, u64> {
    let mut out = common::counts(agg);
    out.retain(|_, n| *n > 0);
    out
}

fn start(
    dir: &Path,
    fs: Fs,
    agg: &SharedAggregator,
    replayed: Replayed,
    clock: &TestClock,
) -> Result<Sequencer, Error> {
    let mut wal = WalSettings::new(dir, FsyncPolicy::Batch, 1 << 30);
    wal.writer.fs = fs;
    // Small segments, so the workload seals some on size too (creates, renames).
    wal.writer.segment_bytes = 600;
    // The workload's clock moves 1 ms a round: a checkpoint is due after each.
    wal.checkpoint_interval = Duration::from_millis(1);
    let clock: SharedClock = Arc::new(clock.clone());
    let mapper = Mapper::new(&IngestConfig::default());
    let mut parts = SequencerParts::new(mapper, agg.clone(), clock);
    parts.wal = Some((wal, replayed));
    Sequencer::start(parts)
}

fn restart(dir: &Path) -> (SharedAggregator, Replayed) {
    let agg = aggregator();
    let replayed = replay(dir, &Mapper::new(&IngestConfig::default()), &agg, i64::MIN).expect("replay");
    (agg, replayed)
}

/// What the workload got acknowledged, per cell (ground truth from the answers alone).
#[derive(Debug, Default)]
struct Acked {
    per_cell: BTreeMap<String, u64>,
    refused: usize,
}

impl Acked {
    fn answer(&mut self, r: Result<impl Sized, Error>, cell: &str, n: u64, faulty: bool) {
        match r {
            Ok(_) => *self.per_cell.entry(cell.to_string()).or_default() += n,
            Err(Error::Unavailable { .. }) if faulty => self.refused += 1,
            Err(e) => panic!("export to {cell} refused with {e:?}, not the retryable answer"),
        }
    }
}

/// Rounds of three concurrent exports (two span batches and one point of a cumulative stream),
/// plus one export the mapping refuses, which is never counted.
async fn workload(seq: &Sequencer, clock: &TestClock, faulty: bool) -> Acked {
    let mut acked = Acked::default();
    for r in 0..ROUNDS {
        clock.advance(Duration::from_millis(1));
        let cell_a = format!("a{}", r % 3);
        let total = 10 * (r + 1);
        let (x, y, z) = tokio::join!(
            seq.submit(spans(&cell_a, (r + 1) as usize, 16), None),
            seq.submit(spans("b", 2, 16), None),
            seq.submit(cumulative(total), None),
        );
        acked.answer(x, &cell_a, r + 1, faulty);
        acked.answer(y, "b", 2, faulty);
        // The stream's count so far is what it has contributed once this point is counted:
        // a refused point's samples arrive with the next acknowledged one.
        if z.is_ok() {
            acked.per_cell.insert("metrics".into(), total);
        } else {
            acked.answer(z, "metrics", 0, faulty);
        }
        if r == 4 {
            let bad = seq.submit(spans("never", 3, 3), None).await;
            assert!(matches!(bad, Err(Error::BadInput(_)) | Err(Error::Unavailable { .. })), "{bad:?}");
        }
    }
    acked
}

/// Runs the workload under `faults` and checks both restarts; returns the file operations the
/// workload made, what it got acknowledged, and whether the first restart began at a checkpoint.
async fn run(faults: Option<Arc<Faults>>) -> (u64, Acked, bool) {
    let dir = tempfile::tempdir().unwrap();
    let fs = faults.clone().map_or_else(Fs::real, Fs::faulty);
    let live = aggregator();
    let mut acked = Acked::default();
    let calls;
    let clock = TestClock::new((T0 * MS) as i64);
    match start(dir.path(), fs, &live, Replayed::default(), &clock) {
        Ok(mut seq) => {
            acked = workload(&seq, &clock, faults.is_some()).await;
            seq.shutdown();
            calls = faults.as_ref().map_or(0, |f| f.calls());
            assert_eq!(counts(&live), acked.per_cell, "live counts = acknowledged");
        }
        // Not even the first segment could be created: nothing was taken.
        Err(e) => {
            assert!(faults.is_some(), "{e}");
            calls = 0;
        }
    }
    let label = faults.as_ref().map(|f| format!("{f:?}")).unwrap_or_default();

    let (agg, replayed) = restart(dir.path());
    let from_checkpoint = replayed.checkpoint.is_some();
    assert_eq!(counts(&agg), acked.per_cell, "after a restart, {label}");
    assert!(replayed.damage.is_empty(), "{label}: {:?}", replayed.damage);

    // The next process writes on from there and its own restart counts both.
    let mut seq = start(dir.path(), Fs::real(), &agg, replayed, &clock).expect("start on a healthy disk");
    seq.submit(spans("after", 7, 16), None).await.expect("a healthy disk takes exports");
    seq.shutdown();
    let (agg, _) = restart(dir.path());
    let mut want = acked.per_cell.clone();
    want.insert("after".into(), 7);
    assert_eq!(counts(&agg), want, "after a second restart, {label}");
    (calls, acked, from_checkpoint)
}

#[tokio::test]
async fn every_acknowledged_export_counts_once_whichever_file_operation_fails() {
    let (calls, clean, from_checkpoint) = run(Some(Faults::disarmed(false))).await;
    assert_eq!(clean.refused, 0);
    assert!(from_checkpoint, "the clean run's restart began at a checkpoint");
    assert!(calls > 30, "the workload reaches {calls} file operations");
    let (mut refused_any, mut without_checkpoint) = (0, 0);
    for n in 1..=calls + 1 {
        for faults in [Faults::once(n), Faults::from(n)] {
            let (_, acked, from_checkpoint) = run(Some(faults)).await;
            refused_any += usize::from(acked.refused > 0);
            without_checkpoint += usize::from(!from_checkpoint);
        }
    }
    eprintln!(
        "{calls} operations; faults reached exports in {refused_any} runs, left no checkpoint in {without_checkpoint}"
    );
    assert!(refused_any > calls as usize / 2, "faults reached exports in {refused_any} runs");
    assert!(without_checkpoint > 0, "faults kept every checkpoint from being written in some runs");
}
