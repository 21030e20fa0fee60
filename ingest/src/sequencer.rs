//! The sequencer: one thread that takes exports in arrival order, appends them to the WAL as a
//! group (a trace export as its span batch, folded on the task that received it), makes the
//! group durable, applies it to the aggregator in the same order, and only then answers. A
//! second thread writes and syncs each group, so the sequencer prepares the next group and
//! applies the last durable one meanwhile; a third writes checkpoints, which the sequencer takes
//! every `checkpoint_interval` between groups, whatever the load, so the WAL holds seconds of
//! records. Recovery ([`replay`]) applies the same records through the same code.

use crate::aggregator::SharedAggregator;
use crate::checkpoint::{self, Checkpointer};
use crate::error::{Error, Result};
use crate::limiter::RETRY_AFTER;
use crate::mapping::Mapper;
use crate::wal::{self, WalWriter, WriterSettings};
use cellpilot_core::clock::SharedClock;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::throttle::Throttle;
use cellpilot_core::window::WindowSpec;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::bytes::Bytes;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

mod worker;

pub use crate::export::{Applied, Export};
#[cfg(any(test, feature = "internals"))]
pub use crate::recovery::replay;
pub use crate::recovery::{Replayed, replay_with};
use cellpilot_core::task::panic_message;
use worker::{Checkpoints, Logger, Worker};

/// Exports waiting for the sequencer before new ones get the overload answer.
pub const QUEUE: usize = 1024;
/// Largest group committed with one fsync.
const GROUP: usize = 256;

/// Logs `n` malformed `cell.cutover` events: one line a minute at most, however many arrive.
fn malformed_cutovers(n: u64) {
    static MALFORMED: Throttle = Throttle::new(cellpilot_core::throttle::EVERY);
    if n > 0
        && let Some(held_back) = MALFORMED.allow()
    {
        tracing::warn!(
            events = n,
            lines_held_back = held_back,
            "ignoring cell.cutover events without cell, cutover.started and cutover.completed"
        );
    }
}

struct Job {
    export: Export,
    /// When it was queued: one that waited past `max_wait` is answered with the retry hint.
    queued_at: std::time::Instant,
    /// The request's protobuf bytes when the transport had them (saves an encode).
    raw: Option<Bytes>,
    reply: oneshot::Sender<Result<Applied>>,
}

/// Where the WAL lives and how it writes.
#[derive(Debug, Clone)]
pub struct WalSettings {
    /// Data directory.
    pub dir: std::path::PathBuf,
    /// File layer, fsync policy, size cap and segment size.
    pub writer: WriterSettings,
    /// How often a checkpoint is taken (`[storage] checkpoint_interval`).
    pub checkpoint_interval: Duration,
}

/// The default `[storage] checkpoint_interval`.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

impl WalSettings {
    /// The WAL under `dir` on the real filesystem with default segments and checkpoints.
    pub fn new(dir: &Path, fsync: cellpilot_core::config::FsyncPolicy, max_bytes: u64) -> Self {
        Self {
            dir: dir.to_path_buf(),
            writer: WriterSettings::new(fsync, max_bytes),
            checkpoint_interval: CHECKPOINT_INTERVAL,
        }
    }
}

/// Handle to the sequencer thread; dropping every handle stops it after the queued exports.
#[derive(Debug)]
pub struct Sequencer {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// Cleared when the thread ends, however it ends (readiness and the retryable answer).
    running: Arc<AtomicBool>,
    /// The last WAL write failure not yet followed by a successful one.
    wal_fault: WalFault,
    /// Why exports are refused because the WAL is at its cap, while they are.
    wal_full: WalFull,
    metrics: Metrics,
}

/// When and why the WAL last failed to write, until a write succeeds again.
type WalFault = Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>;
/// What the WAL held when it was last found too full for an export, until one fits again.
type WalFull = Arc<std::sync::Mutex<Option<String>>>;

/// How long a WAL failure keeps `/readyz` failing without a later success: long enough for a
/// load balancer to notice, short enough that a freed disk is tried again by new exports.
const WAL_FAULT_READINESS: Duration = Duration::from_secs(10);

/// The retryable answer while the sequencer is not running.
fn unavailable() -> Error {
    Error::Unavailable { retry_after: RETRY_AFTER }
}

/// Clears the running flag when the sequencer thread ends, even by unwinding.
struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Tells the sequencer how far Parquet has persisted (windows before it are not counted again,
/// closed-row files before it are not kept).
pub type Watermark = Arc<dyn Fn() -> i64 + Send + Sync>;

#[cfg(any(test, feature = "internals"))]
/// The queue-wait bound of tests and benchmarks (as `[ingest] max_queue_wait` defaults to).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);

/// What the sequencer thread works with.
pub struct SequencerParts {
    /// OTLP to observations.
    pub mapper: Mapper,
    /// Where observations are counted.
    pub aggregator: SharedAggregator,
    /// The WAL and what recovery found in it; `None`: exports are only applied (benchmarks,
    /// tests).
    pub wal: Option<(WalSettings, Replayed)>,
    /// Now.
    pub clock: SharedClock,
    /// Process metrics.
    pub metrics: Metrics,
    /// Windows that end before this are already in Parquet.
    pub watermark: Watermark,
    /// Where cut-overs reported through OTLP logs go.
    pub cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    /// An export that waited longer in the queue gets the retry hint.
    pub max_wait: Duration,
}

impl SequencerParts {
    #[cfg(any(test, feature = "internals"))]
    /// Parts without a WAL, reported cut-overs or a watermark, waiting at most
    /// [`DEFAULT_MAX_WAIT`].
    pub fn new(mapper: Mapper, aggregator: SharedAggregator, clock: SharedClock) -> Self {
        SequencerParts {
            mapper,
            aggregator,
            wal: None,
            clock,
            metrics: Metrics::new(),
            watermark: Arc::new(|| i64::MIN),
            cutovers: None,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

impl Sequencer {
    /// Starts the thread. With a WAL, exports are logged (segments after what recovery found)
    /// before they are applied, and checkpoints are taken; without one they are only applied
    /// (benchmarks, tests). Exports that waited in the queue longer than `max_wait` are
    /// answered with the retry hint.
    pub fn start(parts: SequencerParts) -> Result<Self> {
        let SequencerParts { mapper, aggregator: agg, wal, clock, metrics, watermark, cutovers, max_wait } = parts;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let now = clock.now_ms();
        let (wal, checkpoints) = match wal {
            Some((s, replayed)) => {
                let w = WalWriter::open(&s.dir, replayed.next_seq, replayed.segments, &s.writer)
                    .map_err(|e| Error::Internal(e.into()))?;
                let thread = Checkpointer::start(s.writer.fs.clone(), &s.dir, replayed.recovered)?;
                agg.keep_closed();
                let every_ms = i64::try_from(s.checkpoint_interval.as_millis()).unwrap_or(i64::MAX).max(1);
                let c =
                    Checkpoints { thread, every_ms, taken_ms: now, durable_ms: now, writing: false, drop_before: None };
                (Some(Box::new(w)), Some(c))
            }
            None => (None, None),
        };
        let (wal_fault, wal_full) = (WalFault::default(), WalFull::default());
        let logger = wal.as_ref().map(|_| Logger::start()).transpose()?;
        let spec = agg.lock().spec();
        let worker = Worker {
            rx,
            cutovers,
            mapper,
            spec,
            agg,
            wal_total: wal.as_ref().map_or(0, |w| w.total_bytes()),
            wal_max: wal.as_ref().map_or(u64::MAX, |w| w.max_bytes()),
            wal,
            logger,
            checkpoints,
            spare: Vec::new(),
            clock,
            metrics: metrics.clone(),
            watermark,
            wal_fault: wal_fault.clone(),
            wal_full: wal_full.clone(),
            max_wait,
        };
        let running = Arc::new(AtomicBool::new(true));
        let guard = RunningGuard(running.clone());
        let thread = std::thread::Builder::new()
            .name("cellpilot-sequencer".into())
            .spawn(move || {
                let _guard = guard;
                worker.run();
            })
            .map_err(|e| Error::Internal(format!("starting the sequencer: {e}").into()))?;
        Ok(Self { tx: Some(tx), thread: Some(thread), running, wal_fault, wal_full, metrics })
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether the thread is taking exports.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// A probe of [`Sequencer::is_running`] that outlives this handle (for readiness checks).
    pub fn running_probe(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let running = self.running.clone();
        move || running.load(Ordering::Acquire)
    }

    /// A readiness probe: why exports are being refused because the WAL cannot be written
    /// (a full disk, an I/O error), for `WAL_FAULT_READINESS` (10 s) after the last failure unless a
    /// write succeeded since; or because it is at its cap, while it is.
    pub fn wal_fault_probe(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let (fault, full) = (self.wal_fault.clone(), self.wal_full.clone());
        move || {
            let f = fault.lock().unwrap_or_else(|e| e.into_inner());
            let failed = f.as_ref().filter(|(at, _)| at.elapsed() < WAL_FAULT_READINESS).map(|(_, e)| {
                format!(
                    "the WAL cannot be written ({e}): exports are answered 503 / UNAVAILABLE until a write succeeds"
                )
            });
            drop(f);
            failed.or_else(|| full.lock().unwrap_or_else(|e| e.into_inner()).clone())
        }
    }

    /// Queues an export and waits until it is durable and applied.
    pub async fn submit(&self, export: Export, raw: Option<Bytes>) -> Result<Applied> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(unavailable)?;
        match tx.try_send(Job { export, queued_at: cellpilot_core::clock::monotonic(), raw, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.ingest_overloaded.with_label_values(&["queue_full"]).inc();
                return Err(Error::Overloaded { retry_after: RETRY_AFTER });
            }
            Err(TrySendError::Disconnected(_)) => return Err(unavailable()),
        }
        // A dropped reply means the group failed outside any one export: nothing was acknowledged.
        rx.await.map_err(|_| unavailable())?
    }

    /// Finishes the queued exports and stops the thread.
    pub fn shutdown(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sequencer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
// Tests spawn freely and join or abort what they spawn before they end.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::aggregator::{Aggregator, AggregatorSettings};
    use crate::wal::Kind;
    use cellpilot_core::clock::TestClock;
    use cellpilot_core::config::{FsyncPolicy, IngestConfig};
    use cellpilot_core::window::WindowSpec;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    const NOW_MS: i64 = 1_800_000_001_000;

    fn spans(service: &str, n: usize) -> Export {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
            ..Default::default()
        };
        let spans = (0..n)
            .map(|_| Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                kind: 2,
                start_time_unix_nano: (NOW_MS as u64 - 5) * 1_000_000,
                end_time_unix_nano: NOW_MS as u64 * 1_000_000,
                attributes: vec![kv("cell.id", "c")],
                ..Default::default()
            })
            .collect();
        Export::Traces(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        })
    }

    fn aggregator() -> SharedAggregator {
        let spec = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
        SharedAggregator::new(Aggregator::new(AggregatorSettings { spec, max_series: 100, max_cells: 100 }))
    }

    fn requests(agg: &SharedAggregator) -> u64 {
        let b = crate::aggregator::to_batches(agg.lock().snapshot(0, i64::MAX), 10_000).unwrap().rollups;
        let col = b.column(5).as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap();
        col.iter().flatten().sum()
    }

    fn start(dir: &Path, mapper: Mapper, agg: &SharedAggregator) -> Sequencer {
        let settings = WalSettings::new(dir, FsyncPolicy::Never, 1 << 30);
        let clock: SharedClock = Arc::new(TestClock::new(NOW_MS * 1_000_000));
        let mut parts = SequencerParts::new(mapper, agg.clone(), clock);
        parts.wal = Some((settings, Replayed::default()));
        Sequencer::start(parts).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_that_waited_past_max_wait_get_the_retry_hint() {
        let dir = tempfile::tempdir().unwrap();
        let agg = aggregator();
        let settings = WalSettings::new(dir.path(), FsyncPolicy::Never, 1 << 30);
        let clock: SharedClock = Arc::new(TestClock::new(NOW_MS * 1_000_000));
        let mut parts = SequencerParts::new(Mapper::new(&IngestConfig::default()), agg.clone(), clock);
        parts.wal = Some((settings, Replayed::default()));
        parts.max_wait = Duration::from_millis(100);
        let seq = Arc::new(Sequencer::start(parts).unwrap());
        // The aggregator is busy for 600 ms: the first export is being applied, the next two
        // wait in the queue far past 100 ms.
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let busy = {
            let agg = agg.clone();
            std::thread::spawn(move || {
                let _held = agg.lock();
                locked_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(600));
            })
        };
        locked_rx.recv().unwrap();
        let first = tokio::spawn({
            let seq = seq.clone();
            async move { seq.submit(spans("ok", 3), None).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (a, b) = tokio::join!(seq.submit(spans("ok", 4), None), seq.submit(spans("ok", 5), None));
        busy.join().unwrap();
        assert!(first.await.unwrap().is_ok(), "taken before the wait began");
        for r in [a, b] {
            assert!(matches!(r, Err(Error::Overloaded { .. })), "{r:?}");
        }
        assert_eq!(requests(&agg), 3, "nothing that waited too long was counted");
        assert!(seq.submit(spans("ok", 6), None).await.is_ok(), "and the next export goes through");
    }

    #[tokio::test]
    async fn a_panicking_export_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut mapper = Mapper::new(&IngestConfig::default());
        mapper.panic_on_service = Some("boom");
        let agg = aggregator();
        let seq = start(dir.path(), mapper, &agg);
        assert!(seq.submit(spans("ok", 3), None).await.is_ok());
        let err = seq.submit(spans("boom", 5), None).await.unwrap_err();
        assert!(matches!(err, Error::Internal(ref d) if d.to_string().contains("injected mapping panic")), "{err:?}");
        assert!(seq.submit(spans("ok", 4), None).await.is_ok(), "the sequencer goes on");
        assert!(seq.is_running());
        assert_eq!(requests(&agg), 7);
    }

    #[tokio::test]
    async fn a_stopped_sequencer_answers_retryably() {
        let dir = tempfile::tempdir().unwrap();
        let mut seq = start(dir.path(), Mapper::new(&IngestConfig::default()), &aggregator());
        let probe = seq.running_probe();
        seq.shutdown();
        assert!(!probe() && !seq.is_running());
        assert!(matches!(seq.submit(spans("ok", 1), None).await, Err(Error::Unavailable { .. })));
    }

    #[tokio::test]
    async fn checkpoints_taken_while_idle_keep_what_was_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let agg = aggregator();
        let clock = TestClock::new(NOW_MS * 1_000_000);
        let mut settings = WalSettings::new(dir.path(), FsyncPolicy::Never, 1 << 30);
        settings.checkpoint_interval = Duration::from_millis(1);
        let shared: SharedClock = Arc::new(clock.clone());
        let mut parts = SequencerParts::new(Mapper::new(&IngestConfig::default()), agg.clone(), shared);
        parts.wal = Some((settings, Replayed::default()));
        let mut seq = Sequencer::start(parts).unwrap();
        seq.submit(spans("ok", 3), None).await.unwrap();
        // Nothing arrives for a while: the idle sequencer checkpoints once a second, each time
        // with nothing logged since the one before.
        for _ in 0..4 {
            clock.advance(Duration::from_millis(5));
            tokio::time::sleep(Duration::from_millis(1_100)).await;
        }
        seq.shutdown();
        let back = aggregator();
        let r = replay(dir.path(), &Mapper::new(&IngestConfig::default()), &back, i64::MIN).unwrap();
        assert!(r.checkpoint.is_some(), "a checkpoint survives");
        assert_eq!(requests(&back), 3);
    }

    #[test]
    fn replay_quarantines_what_it_cannot_apply_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            WalWriter::open(dir.path(), 0, Vec::new(), &WriterSettings::new(FsyncPolicy::Never, 1 << 30)).unwrap();
        let good = spans("ok", 2).encode();
        let mut bad_ids = ExportTraceServiceRequest::decode(&good[..]).unwrap();
        bad_ids.resource_spans[0].scope_spans[0].spans[0].trace_id = vec![1; 3];
        w.append(Kind::Traces, NOW_MS, &good).unwrap();
        w.append(Kind::Traces, NOW_MS, b"\xff\xff not protobuf").unwrap();
        w.append(Kind::Traces, NOW_MS, &bad_ids.encode_to_vec()).unwrap();
        w.append(Kind::Traces, NOW_MS, &spans("boom", 9).encode()).unwrap();
        w.append(Kind::Traces, NOW_MS, &good).unwrap();
        w.commit().unwrap();
        drop(w);
        // A stray file that is no segment at all.
        std::fs::write(dir.path().join("wal").join(format!("{:020}.wal", 7)), b"garbage").unwrap();
        let mut mapper = Mapper::new(&IngestConfig::default());
        mapper.panic_on_service = Some("boom");
        let agg = aggregator();
        let r = replay(dir.path(), &mapper, &agg, i64::MIN).unwrap();
        assert_eq!((r.records, r.quarantined, r.counted), (5, 4, 4));
        assert_eq!(requests(&agg), 4);
        let mut q: Vec<_> = std::fs::read_dir(wal::quarantine_dir(dir.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        q.sort();
        assert_eq!(q.len(), 4, "{q:?}");
        assert!(q.iter().any(|n| n == &format!("{:020}.wal", 7)));
        // A quarantined record is a one-record segment again: it reads back as written.
        let one = dir.path().join("wal").join("quarantine").join(format!("{:020}-{:08}.wal", 0, 3));
        assert!(std::fs::read(one).unwrap().len() > spans("boom", 9).encode().len());
        // Start-up after that replays cleanly, and nothing is quarantined twice.
        let again = replay(dir.path(), &mapper, &aggregator(), i64::MIN).unwrap();
        assert_eq!((again.records, again.quarantined, again.counted), (2, 0, 4), "moved, not copied");
    }
}
