//! The sequencer: one thread that takes decoded exports in arrival order, maps them, appends
//! them to the WAL as a group, makes the group durable, applies it to the aggregator in the same
//! order, and only then answers. A second thread writes and syncs each group, so the sequencer
//! prepares the next group and applies the last durable one meanwhile. Replay after a restart runs the same mapping and aggregation
//! over the log, so it reproduces exactly what was acknowledged.

use crate::aggregator::{Outcome, SharedAggregator};
use crate::error::{Error, Result};
use crate::limiter::RETRY_AFTER;
use crate::mapping::{Mapper, Observations};
use crate::wal::{self, Kind, Sealed, WalWriter, WriterSettings};
use crate::wire::WireTraces;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::fs::Fs;
use cellpilot_core::metrics::Metrics;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use prost::bytes::Bytes;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Exports waiting for the sequencer before new ones get the overload answer.
pub const QUEUE: usize = 1024;
/// Largest group committed with one fsync.
const GROUP: usize = 256;

/// An export on its way to the sequencer.
#[derive(Debug)]
pub enum Export {
    /// Traces, decoded (OTLP JSON).
    Traces(ExportTraceServiceRequest),
    /// Traces in their protobuf encoding, mapped by the wire scanner.
    TracesWire(WireTraces),
    /// Traces in their protobuf encoding, already mapped by the task that received them.
    TracesMapped(WireTraces, Observations<'static>),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Logs.
    Logs(ExportLogsServiceRequest),
}

impl Export {
    fn kind(&self) -> Kind {
        match self {
            Export::Traces(_) | Export::TracesWire(_) | Export::TracesMapped(..) => Kind::Traces,
            Export::Metrics(_) => Kind::Metrics,
            Export::Logs(_) => Kind::Logs,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Export::Traces(r) => r.encode_to_vec(),
            Export::TracesWire(w) | Export::TracesMapped(w, _) => w.bytes().to_vec(),
            Export::Metrics(r) => r.encode_to_vec(),
            Export::Logs(r) => r.encode_to_vec(),
        }
    }

    /// A logged export; traces stay encoded (the scanner checks them as it maps them).
    fn decode(kind: Kind, bytes: &[u8]) -> std::result::Result<Self, prost::DecodeError> {
        Ok(match kind {
            Kind::Traces => Export::TracesWire(WireTraces::new(Bytes::copy_from_slice(bytes))),
            Kind::Metrics => Export::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Kind::Logs => Export::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    fn map<'a>(&'a self, mapper: &Mapper) -> Result<Observations<'a>> {
        match self {
            Export::Traces(r) => mapper.traces(r),
            Export::TracesWire(w) | Export::TracesMapped(w, _) => w.map(mapper),
            Export::Metrics(r) => mapper.metrics(r),
            Export::Logs(_) => Ok(Observations::default()),
        }
    }

    /// The observations a receiving task mapped already, taken out (once).
    fn take_mapped(&mut self) -> Option<Observations<'static>> {
        match self {
            Export::TracesMapped(_, obs) => Some(std::mem::take(obs)),
            _ => None,
        }
    }

    /// Log records in a logs export.
    pub fn log_records(&self) -> usize {
        match self {
            Export::Logs(r) => r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum(),
            _ => 0,
        }
    }
}

/// What the sequencer did with one export.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Counting outcome.
    pub outcome: Outcome,
    /// Spans that are not requests, or metrics that carry no latency.
    pub ignored: u64,
    /// Points refused while mapping, with reasons.
    pub unusable: Vec<(u64, String)>,
    /// Names cut to `max_attribute_length`.
    pub truncated: u64,
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
}

impl WalSettings {
    /// The WAL under `dir` on the real filesystem with default segments.
    pub fn new(dir: &Path, fsync: cellpilot_core::config::FsyncPolicy, max_bytes: u64) -> Self {
        Self { dir: dir.to_path_buf(), writer: WriterSettings::new(fsync, max_bytes) }
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
}

/// When and why the WAL last failed to write, until a write succeeds again.
type WalFault = Arc<std::sync::Mutex<Option<(std::time::Instant, String)>>>;

/// How long a WAL failure keeps `/readyz` failing without a later success: long enough for a
/// load balancer to notice, short enough that a freed disk is tried again by new exports.
const WAL_FAULT_READINESS: Duration = Duration::from_secs(10);

/// The retryable answer while the sequencer is not running.
fn unavailable() -> Error {
    Error::Unavailable { retry_after: RETRY_AFTER }
}

/// The message of a caught panic.
pub(crate) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Clears the running flag when the sequencer thread ends, even by unwinding.
struct RunningGuard(Arc<AtomicBool>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Tells the sequencer how far Parquet has persisted (for dropping WAL segments).
pub type Watermark = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Summary of a replay.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// Records read.
    pub records: usize,
    /// Spans and points counted again.
    pub counted: u64,
    /// Spans and points whose windows were already in Parquet.
    pub already_persisted: u64,
    /// Segments found.
    pub segments: Vec<Sealed>,
    /// The sequence number new segments start at.
    pub next_seq: u64,
    /// Records, checkpoints and segments moved to `wal/quarantine/` instead of applied.
    pub quarantined: usize,
    /// Damage found in sealed segments, said for people (`/readyz` shows it).
    pub damage: Vec<String>,
}

/// Re-applies the WAL under `dir` to `agg` (windows before `durable_before` are skipped).
pub fn replay(
    dir: &Path,
    mapper: &Mapper,
    agg: &SharedAggregator,
    durable_before: i64,
) -> std::result::Result<Replayed, wal::WalError> {
    replay_with(dir, mapper, agg, durable_before, None)
}

/// [`replay`], also handing cut-overs reported in logged exports to `cutovers` (which must
/// ignore ones it already has).
pub fn replay_with(
    dir: &Path,
    mapper: &Mapper,
    agg: &SharedAggregator,
    durable_before: i64,
    cutovers: Option<&dyn cellpilot_core::store::CutoverReports>,
) -> std::result::Result<Replayed, wal::WalError> {
    let fs = Fs::real();
    let seqs = wal::list_segments(dir)?;
    let mut out = Replayed::default();
    if let Some(&first) = seqs.first()
        && first > 0
        && let Some(state) = wal::load_state(dir, first - 1)?
        && let Err(e) = agg.lock().restore_delta_state(&state)
    {
        // Cumulative streams then take a fresh baseline: their next point counts from the one after.
        tracing::error!(error = %e, "cumulative-stream checkpoint unreadable; moved to wal/quarantine");
        wal::quarantine_state(&fs, dir, first - 1)?;
        out.quarantined += 1;
    }
    for &seq in &seqs {
        let mut max_end = i64::MIN;
        let active = Some(&seq) == seqs.last();
        let records = match wal::read_segment(&fs, dir, seq, active) {
            Ok(r) => {
                if let Some(d) = r.damage {
                    out.damage.push(d);
                    out.quarantined += 1;
                }
                r.records
            }
            Err(e) => {
                tracing::error!(segment = seq, error = %e, "unreadable WAL segment moved to wal/quarantine");
                wal::quarantine_segment(&fs, dir, seq)?;
                out.damage.push(format!("WAL segment {seq} was unreadable ({e}); moved to wal/quarantine"));
                out.quarantined += 1;
                continue;
            }
        };
        let mut kept = Vec::with_capacity(records.len());
        for (i, rec) in records.iter().enumerate() {
            match replay_record(rec, mapper, agg, durable_before, cutovers) {
                Ok(o) => {
                    out.counted += o.accepted - o.already_persisted;
                    out.already_persisted += o.already_persisted;
                    max_end = max_end.max(o.max_window_end_ms);
                    kept.push(rec);
                }
                Err(why) => {
                    tracing::error!(segment = seq, record = i, reason = %why, "WAL record moved to wal/quarantine");
                    wal::quarantine_record(&fs, dir, seq, i, rec)?;
                    out.quarantined += 1;
                }
            }
        }
        if kept.len() < records.len() {
            // Moved, not copied: the next start must not meet (and count) them again.
            wal::rewrite_segment(&fs, dir, seq, &kept)?;
        }
        let bytes = kept.iter().map(|r| r.payload.len() as u64 + 17).sum::<u64>() + 16;
        out.records += records.len();
        out.segments.push(Sealed { seq, bytes, max_window_end_ms: max_end });
    }
    if let Some(&last) = seqs.last() {
        // The last segment was being written when we stopped: checkpoint it as sealed now.
        wal::write_state(&fs, dir, last, &agg.lock().delta_state())?;
    }
    out.next_seq = seqs.last().map_or(0, |s| s + 1);
    Ok(out)
}

/// Why a logged export could not be replayed (it is quarantined, and start-up goes on).
#[derive(Debug, thiserror::Error)]
enum Unreplayable {
    /// The bytes are not the export their kind says.
    #[error("undecodable: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// The mapping refuses it now (a rule changed since it was logged).
    #[error("refused by mapping: {0}")]
    Refused(#[source] Error),
    /// Mapping or aggregating it panicked.
    #[error("panicked: {0}")]
    Panicked(String),
}

/// Applies one logged export; an undecodable, unmappable or panicking record is an error (the
/// caller quarantines it, and start-up goes on).
fn replay_record(
    rec: &wal::Record,
    mapper: &Mapper,
    agg: &SharedAggregator,
    durable_before: i64,
    cutovers: Option<&dyn cellpilot_core::store::CutoverReports>,
) -> std::result::Result<Outcome, Unreplayable> {
    let export = Export::decode(rec.kind, &rec.payload)?;
    catch_unwind(AssertUnwindSafe(|| {
        if let (Export::Logs(req), Some(sink)) = (&export, cutovers) {
            for r in crate::logs::cutovers(req) {
                sink.reported(&r.cell, r.started_ms, r.completed_ms);
            }
        }
        let obs = export.map(mapper).map_err(Unreplayable::Refused)?;
        Ok(agg.lock().apply(&obs, rec.received_ms, durable_before))
    }))
    .unwrap_or_else(|p| Err(Unreplayable::Panicked(panic_message(p.as_ref()))))
}

struct Worker {
    rx: Receiver<Job>,
    cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    mapper: Mapper,
    agg: SharedAggregator,
    /// The WAL writer while it is here (not with the logger, not lost).
    wal: Option<Box<WalWriter>>,
    /// Writes WAL groups; `None` without a WAL.
    logger: Option<Logger>,
    /// Bytes the WAL holds, with the group being written (the cap is checked against it).
    wal_total: u64,
    /// The WAL's size cap.
    wal_max: u64,
    /// An empty group buffer to build the next group in.
    spare: Vec<u8>,
    /// The latest window end counted since the writer was last told.
    window_ends: i64,
    clock: SharedClock,
    metrics: Metrics,
    watermark: Watermark,
    wal_fault: WalFault,
    max_wait: Duration,
}

/// The queue-wait bound of tests and benchmarks (as `[ingest] max_queue_wait` defaults to).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(2);

/// What the sequencer thread works with.
pub struct SequencerParts {
    /// OTLP to observations.
    pub mapper: Mapper,
    /// Where observations are counted.
    pub aggregator: SharedAggregator,
    /// The WAL and what replay found in it; `None`: exports are only applied (benchmarks, tests).
    pub wal: Option<(WalSettings, Replayed)>,
    /// Now.
    pub clock: SharedClock,
    /// Process metrics.
    pub metrics: Metrics,
    /// Windows that end before this are already in Parquet (not counted again on replay).
    pub watermark: Watermark,
    /// Where cut-overs reported through OTLP logs go.
    pub cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    /// An export that waited longer in the queue gets the retry hint.
    pub max_wait: Duration,
}

impl SequencerParts {
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
    /// Starts the thread. With a WAL, exports are logged (segments after what replay found)
    /// before they are applied; without one they are only applied (benchmarks, tests). Exports
    /// that waited in the queue longer than `max_wait` are answered with the retry hint.
    pub fn start(parts: SequencerParts) -> Result<Self> {
        let SequencerParts { mapper, aggregator: agg, wal, clock, metrics, watermark, cutovers, max_wait } = parts;
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let wal = match wal {
            Some((s, replayed)) => Some(Box::new(
                WalWriter::open(&s.dir, replayed.next_seq, replayed.segments, &s.writer, clock.now_ms())
                    .map_err(|e| Error::Internal(e.into()))?,
            )),
            None => None,
        };
        let wal_fault = WalFault::default();
        let logger = wal.as_ref().map(|_| Logger::start()).transpose()?;
        let worker = Worker {
            rx,
            cutovers,
            mapper,
            agg,
            wal_total: wal.as_ref().map_or(0, |w| w.total_bytes()),
            wal_max: wal.as_ref().map_or(u64::MAX, |w| w.max_bytes()),
            wal,
            logger,
            spare: Vec::new(),
            window_ends: i64::MIN,
            clock,
            metrics,
            watermark,
            wal_fault: wal_fault.clone(),
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
        Ok(Self { tx: Some(tx), thread: Some(thread), running, wal_fault })
    }

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
    /// write succeeded since.
    pub fn wal_fault_probe(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let fault = self.wal_fault.clone();
        move || {
            let fault = fault.lock().unwrap_or_else(|e| e.into_inner());
            fault.as_ref().filter(|(at, _)| at.elapsed() < WAL_FAULT_READINESS).map(|(_, e)| {
                format!(
                    "the WAL cannot be written ({e}): exports are answered 503 / UNAVAILABLE until a write succeeds"
                )
            })
        }
    }

    /// Queues an export and waits until it is durable and applied.
    pub async fn submit(&self, export: Export, raw: Option<Bytes>) -> Result<Applied> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(unavailable)?;
        match tx.try_send(Job { export, queued_at: std::time::Instant::now(), raw, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Overloaded { retry_after: RETRY_AFTER }),
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

/// A group of exports, mapped and encoded for the WAL, on its way to being durable, applied and
/// answered.
struct Prepared {
    now: i64,
    exports: Vec<Export>,
    replies: Vec<oneshot::Sender<Result<Applied>>>,
    /// Each export's observations, or why it is refused; `Ok(None)`: they borrow the export
    /// (metric points) and are mapped again when applied.
    mapped: Vec<Result<Option<Observations<'static>>>>,
    /// Whether each export's record is in the group (the WAL's cap may leave some out).
    logged: Vec<bool>,
    /// The group's WAL records.
    records: Vec<u8>,
    /// The logger has the group.
    writing: bool,
    /// The WAL write failed: every logged export is refused with the retryable answer.
    unwritten: bool,
}

/// The thread that writes and syncs WAL groups, so the sequencer prepares the next group and
/// applies the last one meanwhile. The writer itself travels there and back, so it has one
/// owner at a time and its file operations keep their order.
struct Logger {
    to: Sender<Box<WalWriter>>,
    back: Receiver<(Box<WalWriter>, std::result::Result<(), wal::WalError>)>,
}

impl Logger {
    fn start() -> Result<Self> {
        let (to, rx) = crossbeam_channel::bounded::<Box<WalWriter>>(1);
        let (tx, back) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("cellpilot-wal".into())
            .spawn(move || {
                for mut w in rx {
                    let r = catch_unwind(AssertUnwindSafe(|| w.commit()))
                        .unwrap_or_else(|p| Err(wal::WalError::Panicked(panic_message(p.as_ref()))));
                    if tx.send((w, r)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting the WAL writer: {e}").into()))?;
        Ok(Self { to, back })
    }
}

impl Worker {
    fn run(mut self) {
        // The group being written; the next one is prepared meanwhile, and this one applied
        // while the next is written.
        let mut pending: Option<Prepared> = None;
        loop {
            let jobs = if pending.is_some() {
                self.more(Vec::new())
            } else {
                match self.rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(j) => self.more(vec![j]),
                    Err(RecvTimeoutError::Timeout) => {
                        self.maintain();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            // Exports fail alone inside `prepare` and `apply`; this is the last line, for their
            // own code: the group's replies are dropped (the clients hear UNAVAILABLE).
            let mut next = if jobs.is_empty() { None } else { self.guarded(|w| w.prepare(jobs)).flatten() };
            if let Some(mut p) = pending.take() {
                self.await_write(&mut p);
                // A segment is sealed with the state as of its last record: every group written
                // to it is applied first.
                let seal = self.wal.as_ref().is_some_and(|w| w.due_for_rotation(self.clock.now_ms()));
                if !seal && let Some(mut n) = next.take() {
                    self.start_write(&mut n);
                    pending = Some(n);
                }
                self.guarded(|w| w.apply(p));
                self.maintain();
            }
            if let Some(mut n) = next {
                self.start_write(&mut n);
                pending = Some(n);
            }
        }
        self.note_window_ends();
        if let Some(w) = self.wal.as_mut()
            && let Err(e) = w.commit()
        {
            tracing::error!(error = %e, "final WAL sync failed");
        }
    }

    /// `jobs` and whatever else is queued, up to a group.
    fn more(&self, mut jobs: Vec<Job>) -> Vec<Job> {
        while jobs.len() < GROUP {
            match self.rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        jobs
    }

    /// Runs `f`, counting and logging a panic.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(t) => Some(t),
            Err(p) => {
                self.metrics.ingest_panics.inc();
                tracing::error!(panic = %panic_message(p.as_ref()), "an export group panicked; it was refused");
                None
            }
        }
    }

    /// Answers exports that waited too long, maps the rest and encodes their WAL records.
    fn prepare(&mut self, jobs: Vec<Job>) -> Option<Prepared> {
        // Waited too long: its spans would land after their windows close and be refused as
        // late in a partial success, which exporters do not retry. The retry hint they do.
        let (jobs, stale): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.queued_at.elapsed() <= self.max_wait);
        if !stale.is_empty() {
            tracing::warn!(exports = stale.len(), max_wait = ?self.max_wait, "exports waited too long for the sequencer; answered with the retry hint");
        }
        for j in stale {
            let _ = j.reply.send(Err(Error::Overloaded { retry_after: RETRY_AFTER }));
        }
        if jobs.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        let mut records = std::mem::take(&mut self.spare);
        let (mut exports, mut replies, mut mapped, mut logged) =
            (Vec::with_capacity(jobs.len()), Vec::with_capacity(jobs.len()), Vec::new(), Vec::new());
        for Job { mut export, raw, reply, .. } in jobs {
            let m = match export.take_mapped() {
                Some(obs) => Ok(Some(obs)),
                None => catch_unwind(AssertUnwindSafe(|| export.map(&self.mapper).map(Observations::into_owned)))
                    .unwrap_or_else(|p| Err(self.panicked(p))),
            };
            let log = m.is_ok()
                && (self.logger.is_none() || {
                    let encoded;
                    let bytes = match &raw {
                        Some(b) => &b[..],
                        None => {
                            encoded = export.encode();
                            encoded.as_slice()
                        }
                    };
                    wal::fits(self.wal_total + records.len() as u64, bytes.len(), self.wal_max)
                        && wal::append_record(&mut records, export.kind(), now, bytes).is_ok()
                });
            exports.push(export);
            replies.push(reply);
            mapped.push(m);
            logged.push(log);
        }
        Some(Prepared { now, exports, replies, mapped, logged, records, writing: false, unwritten: false })
    }

    /// Hands `p`'s records to the logger (or writes them here if it is gone).
    fn start_write(&mut self, p: &mut Prepared) {
        if self.logger.is_none() {
            return;
        }
        self.note_window_ends();
        let Some(mut w) = self.wal.take() else {
            // A writer lost to a logger that stopped: nothing can be made durable.
            p.unwritten = true;
            return;
        };
        w.set_group(std::mem::take(&mut p.records));
        self.wal_total = w.total_bytes();
        let Some(logger) = self.logger.as_ref() else { return };
        match logger.to.send(w) {
            Ok(()) => p.writing = true,
            Err(crossbeam_channel::SendError(mut w)) => {
                let r = w.commit();
                self.written(w, r, p);
            }
        }
    }

    /// Waits until the logger has written `p`.
    fn await_write(&mut self, p: &mut Prepared) {
        if !std::mem::take(&mut p.writing) {
            return;
        }
        match self.logger.as_ref().map(|l| l.back.recv()) {
            Some(Ok((w, r))) => self.written(w, r, p),
            _ => p.unwritten = true,
        }
    }

    /// Takes the writer back after it wrote `p`, with what the write did.
    fn written(&mut self, mut w: Box<WalWriter>, r: std::result::Result<(), wal::WalError>, p: &mut Prepared) {
        let mut fault = self.wal_fault.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(()) => *fault = None,
            Err(e) => {
                tracing::error!(error = %e, "WAL write failed; the group is refused with the retryable answer");
                self.metrics.wal_failures.inc();
                *fault = Some((std::time::Instant::now(), e.to_string()));
                p.unwritten = true;
            }
        }
        drop(fault);
        self.spare = w.take_buffer();
        self.wal_total = w.total_bytes();
        self.metrics.wal_bytes.set(self.wal_total as i64);
        self.wal = Some(w);
    }

    /// Applies a durable group in order and answers it.
    fn apply(&mut self, p: Prepared) {
        let Prepared { now, exports, replies, mapped, logged, unwritten, .. } = p;
        let durable_before = (self.watermark)();
        let mut agg = self.agg.lock();
        let mut results = Vec::with_capacity(replies.len());
        for ((m, logged), export) in mapped.into_iter().zip(logged).zip(&exports) {
            results.push(match m {
                Err(e) => Err(e),
                Ok(_) if unwritten => Err(unavailable()),
                Ok(_) if !logged => Err(Error::Overloaded { retry_after: RETRY_AFTER }),
                Ok(pre) => match catch_unwind(AssertUnwindSafe(|| {
                    let obs = match pre {
                        Some(obs) => obs,
                        None => export.map(&self.mapper)?,
                    };
                    let outcome = agg.apply(&obs, now, durable_before);
                    Ok::<_, Error>((obs, outcome))
                })) {
                    // Logged already: replay meets the same panic and quarantines the record.
                    Err(p) => Err(self.panicked(p)),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok((obs, outcome))) => {
                        self.window_ends = self.window_ends.max(outcome.max_window_end_ms);
                        self.metrics.ingest_logs.inc_by(export.log_records() as u64);
                        if let (Export::Logs(req), Some(sink)) = (export, &self.cutovers) {
                            for r in crate::logs::cutovers(req) {
                                sink.reported(&r.cell, r.started_ms, r.completed_ms);
                            }
                        }
                        Ok(Applied {
                            outcome,
                            ignored: obs.ignored,
                            unusable: obs.rejected.clone(),
                            truncated: obs.truncated,
                        })
                    }
                },
            });
        }
        self.metrics.series_live.set(agg.live_series() as i64);
        self.metrics.windows_open.set(agg.open_windows() as i64);
        drop(agg);
        for (reply, r) in replies.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }

    /// Tells the writer (when it is here) the latest window end counted since it was last told.
    fn note_window_ends(&mut self) {
        if let Some(w) = self.wal.as_mut() {
            w.note_window_end(std::mem::replace(&mut self.window_ends, i64::MIN));
        }
    }

    /// The answer to an export whose mapping or aggregation panicked: it fails alone.
    fn panicked(&self, p: Box<dyn std::any::Any + Send>) -> Error {
        self.metrics.ingest_panics.inc();
        let detail = format!("an export panicked while being mapped or applied: {}", panic_message(p.as_ref()));
        Error::Internal(detail.into())
    }

    /// Seals old segments and drops those Parquet has made redundant (only while the writer is
    /// here and every group written is applied).
    fn maintain(&mut self) {
        self.note_window_ends();
        let Some(w) = self.wal.as_mut() else { return };
        let now = self.clock.now_ms();
        if w.due_for_rotation(now) {
            let state = self.agg.lock().delta_state();
            if let Err(e) = w.rotate(&state, now) {
                tracing::error!(error = %e, "sealing a WAL segment failed");
            }
        }
        match w.truncate((self.watermark)()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(segments = n, "dropped WAL segments persisted to Parquet"),
            Err(e) => tracing::error!(error = %e, "dropping WAL segments failed"),
        }
        self.wal_total = w.total_bytes();
        self.metrics.wal_bytes.set(self.wal_total as i64);
        self.metrics.wal_segments.set(w.segments() as i64);
    }
}

#[cfg(test)]
// Tests spawn freely and join or abort what they spawn before they end.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::aggregator::{Aggregator, AggregatorSettings};
    use cellpilot_core::clock::TestClock;
    use cellpilot_core::config::{FsyncPolicy, IngestConfig};
    use cellpilot_core::window::WindowSpec;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

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

    #[test]
    fn replay_quarantines_what_it_cannot_apply_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut w =
            WalWriter::open(dir.path(), 0, Vec::new(), &WriterSettings::new(FsyncPolicy::Never, 1 << 30), NOW_MS)
                .unwrap();
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
