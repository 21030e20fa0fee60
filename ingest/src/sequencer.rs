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

pub use crate::export::{Applied, Export};
pub use crate::recovery::{Replayed, replay, replay_with};
use cellpilot_core::task::panic_message;

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

struct Worker {
    rx: Receiver<Job>,
    cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    mapper: Mapper,
    spec: WindowSpec,
    agg: SharedAggregator,
    /// The WAL writer while it is here (not with the logger, not lost).
    wal: Option<Box<WalWriter>>,
    /// Writes WAL groups; `None` without a WAL.
    logger: Option<Logger>,
    /// Writes checkpoints; `None` without a WAL.
    checkpoints: Option<Checkpoints>,
    /// Bytes the WAL holds, with the group being written (the cap is checked against it).
    wal_total: u64,
    /// The WAL's size cap.
    wal_max: u64,
    /// An empty group buffer to build the next group in.
    spare: Vec<u8>,
    clock: SharedClock,
    metrics: Metrics,
    watermark: Watermark,
    wal_fault: WalFault,
    wal_full: WalFull,
    max_wait: Duration,
}

/// The checkpoint thread and when the sequencer last handed it a checkpoint.
struct Checkpoints {
    thread: Checkpointer,
    every_ms: i64,
    /// When the last checkpoint's state was taken (clock ms).
    taken_ms: i64,
    /// When the state of the newest durable checkpoint was taken.
    durable_ms: i64,
    /// A checkpoint is being written (one at a time).
    writing: bool,
    /// Segments before this may go, once the writer is here.
    drop_before: Option<u64>,
}

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

/// A group of exports, folded and encoded for the WAL, on its way to being durable, applied
/// and answered.
struct Prepared {
    now: i64,
    exports: Vec<Export>,
    replies: Vec<oneshot::Sender<Result<Applied>>>,
    /// Whether each export could be folded, or why it is refused.
    mapped: Vec<Result<()>>,
    /// Whether each export's record is in the group (the WAL's cap may leave some out).
    logged: Vec<bool>,
    /// The group's WAL records.
    records: Vec<u8>,
    /// Their bytes.
    bytes: u64,
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
                // Sealing a segment and taking a checkpoint need every group written applied
                // and the writer here: the next group waits for them.
                let due = self.maintenance_due();
                if !due && let Some(mut n) = next.take() {
                    self.start_write(&mut n);
                    pending = Some(n);
                }
                self.guarded(|w| w.apply(p));
                if due {
                    self.maintain();
                }
            } else if self.maintenance_due() {
                self.maintain();
            }
            if let Some(mut n) = next {
                self.start_write(&mut n);
                pending = Some(n);
            }
        }
        if let Some(w) = self.wal.as_mut()
            && let Err(e) = w.commit()
        {
            tracing::error!(error = %e, "final WAL sync failed");
        }
        self.final_checkpoint();
    }

    /// On shutdown, a checkpoint of everything applied, so the next start replays nothing.
    fn final_checkpoint(&mut self) {
        let Some(c) = self.checkpoints.as_mut() else { return };
        if c.writing
            && let Ok(done) = c.thread.back.recv()
        {
            self.note_checkpoint(done);
        }
        if let Some(c) = self.checkpoints.as_mut() {
            c.taken_ms = i64::MIN;
        }
        self.maintain();
        if let Some(c) = self.checkpoints.as_mut()
            && c.writing
            && let Ok(done) = c.thread.back.recv()
        {
            self.note_checkpoint(done);
            self.maintain();
        }
    }

    /// Notes a checkpoint the writer finished.
    fn note_checkpoint(&mut self, done: checkpoint::Done) {
        let Some(c) = self.checkpoints.as_mut() else { return };
        c.writing = false;
        match done.result {
            Ok(w) => {
                c.durable_ms = c.taken_ms;
                c.drop_before = Some(w.keep_from);
                self.metrics.checkpoint_bytes.set(w.bytes as i64);
                self.metrics.checkpoints.with_label_values(&["ok"]).inc();
                tracing::debug!(seq = done.seq, bytes = w.bytes, "checkpoint written");
            }
            Err(e) => {
                self.metrics.checkpoints.with_label_values(&["failed"]).inc();
                tracing::error!(seq = done.seq, error = %e, "writing a checkpoint failed; the WAL is kept until one succeeds");
            }
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

    /// Answers exports that waited too long, folds the rest and encodes their WAL records.
    fn prepare(&mut self, jobs: Vec<Job>) -> Option<Prepared> {
        // Waited too long: its spans would land after their windows close and be refused as
        // late in a partial success, which exporters do not retry. The retry hint they do.
        let (jobs, stale): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.queued_at.elapsed() <= self.max_wait);
        if !stale.is_empty() {
            tracing::warn!(exports = stale.len(), max_wait = ?self.max_wait, "exports waited too long for the sequencer; answered with the retry hint");
            self.metrics.ingest_overloaded.with_label_values(&["queue_wait"]).inc_by(stale.len() as u64);
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
        let mut full = None;
        for Job { export, raw, reply, .. } in jobs {
            let (mapper, spec) = (&self.mapper, self.spec);
            let folded = catch_unwind(AssertUnwindSafe(|| export.fold(mapper, spec, now)))
                .unwrap_or_else(|p| Err(self.panicked(p)));
            let (export, m) = match folded {
                Ok(e) => (e, Ok(())),
                Err(e) => (Export::Logs(ExportLogsServiceRequest::default()), Err(e)),
            };
            let log = m.is_ok()
                && (self.logger.is_none() || {
                    let mut scratch = Vec::new();
                    let (kind, bytes) = export.record(&raw, &mut scratch);
                    let fits = wal::fits(self.wal_total + records.len() as u64, bytes.len(), self.wal_max);
                    if !fits {
                        full = Some(self.wal_total + records.len() as u64);
                    }
                    fits && wal::append_record(&mut records, kind, now, bytes).is_ok()
                });
            exports.push(export);
            replies.push(reply);
            mapped.push(m);
            logged.push(log);
        }
        self.note_full(full, logged.iter().filter(|l| !**l).count());
        let bytes = records.len() as u64;
        Some(Prepared { now, exports, replies, mapped, logged, records, bytes, writing: false, unwritten: false })
    }

    /// Says (on `/readyz`) that the WAL holds `full` bytes, too many for another export, or
    /// that it has room again.
    fn note_full(&self, full: Option<u64>, refused: usize) {
        let mut state = self.wal_full.lock().unwrap_or_else(|e| e.into_inner());
        match full {
            Some(held) => {
                self.metrics.ingest_overloaded.with_label_values(&["wal_full"]).inc_by(refused as u64);
                if state.is_none() {
                    tracing::warn!(
                        bytes = held,
                        max = self.wal_max,
                        "WAL full: exports get the retry hint until a checkpoint frees it"
                    );
                }
                *state = Some(format!(
                    "wal full: the WAL holds {} MiB of storage.wal_max_size {} MiB; exports are answered 429 / UNAVAILABLE with a retry hint until the next checkpoint frees it",
                    held >> 20,
                    self.wal_max >> 20
                ));
            }
            None => *state = None,
        }
    }

    /// Hands `p`'s records to the logger (or writes them here if it is gone).
    fn start_write(&mut self, p: &mut Prepared) {
        if self.logger.is_none() {
            return;
        }
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
            Ok(()) => {
                *fault = None;
                self.metrics.wal_written.inc_by(p.bytes);
            }
            Err(e) => {
                tracing::error!(error = %e, "WAL write failed; the group is refused with the retryable answer");
                self.metrics.wal_failures.inc();
                *fault = Some((cellpilot_core::clock::monotonic(), e.to_string()));
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
                Ok(()) if unwritten => Err(unavailable()),
                Ok(()) if !logged => Err(Error::Overloaded { retry_after: RETRY_AFTER }),
                Ok(()) => match catch_unwind(AssertUnwindSafe(|| match export {
                    Export::Spans(b, _) => Ok(Applied {
                        outcome: agg.apply_spans(b, now, durable_before),
                        ignored: b.ignored,
                        unusable: Vec::new(),
                        truncated: b.truncated,
                    }),
                    _ => {
                        let obs = export.map(&self.mapper)?;
                        let outcome = agg.apply(&obs, now, durable_before);
                        Ok::<_, Error>(Applied {
                            outcome,
                            ignored: obs.ignored,
                            unusable: obs.rejected,
                            truncated: obs.truncated,
                        })
                    }
                })) {
                    // Logged already: recovery meets the same panic and quarantines the record.
                    Err(p) => Err(self.panicked(p)),
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(applied)) => {
                        self.metrics.ingest_logs.inc_by(export.log_records() as u64);
                        if let (Export::Logs(req), Some(sink)) = (export, &self.cutovers) {
                            let found = crate::logs::cutovers(req);
                            for r in &found.reported {
                                sink.reported(&r.cell, r.started_ms, r.completed_ms);
                            }
                            malformed_cutovers(found.malformed);
                        }
                        Ok(applied)
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

    /// The answer to an export whose mapping or aggregation panicked: it fails alone.
    fn panicked(&self, p: Box<dyn std::any::Any + Send>) -> Error {
        self.metrics.ingest_panics.inc();
        let detail = format!("an export panicked while being mapped or applied: {}", panic_message(p.as_ref()));
        Error::Internal(detail.into())
    }

    /// Whether a segment is to be sealed, a checkpoint taken or segments dropped (each needs
    /// the writer here with every group written applied). Notes finished checkpoints.
    fn maintenance_due(&mut self) -> bool {
        let now = self.clock.now_ms();
        while let Some(done) = self.checkpoints.as_ref().and_then(|c| c.thread.back.try_recv().ok()) {
            self.note_checkpoint(done);
        }
        let Some(c) = self.checkpoints.as_mut() else { return false };
        self.metrics.checkpoint_age.set((now - c.durable_ms).max(0) as f64 / 1000.0);
        c.drop_before.is_some()
            || (!c.writing && now.saturating_sub(c.taken_ms) >= c.every_ms)
            || self.wal.as_ref().is_some_and(|w| w.due_for_rotation())
    }

    /// Seals a full segment, takes a due checkpoint and drops segments checkpoints made
    /// redundant (only while the writer is here and every group written is applied).
    fn maintain(&mut self) {
        let due = self.maintenance_due();
        let (Some(w), Some(c)) = (self.wal.as_mut(), self.checkpoints.as_mut()) else { return };
        if !due {
            return;
        }
        if w.due_for_rotation()
            && let Err(e) = w.rotate()
        {
            tracing::error!(error = %e, "sealing a WAL segment failed");
        }
        let now = self.clock.now_ms();
        if !c.writing && now.saturating_sub(c.taken_ms) >= c.every_ms {
            // The checkpoint holds everything logged before the segment it names: a fresh one,
            // even when the active segment is empty (idle, or a failed group was cut back), so
            // each checkpoint and its closed-row file get a number of their own.
            if w.rotate().is_ok() {
                let (state, rows) = self.agg.checkpoint();
                let job = checkpoint::Job { seq: w.active_seq(), state, rows, persisted_until: (self.watermark)() };
                if c.thread.send(job) {
                    c.writing = true;
                } else {
                    tracing::error!("the checkpoint writer has stopped; the WAL is kept");
                }
                c.taken_ms = now;
            } else {
                tracing::error!("sealing a WAL segment for a checkpoint failed; trying again next time");
                c.taken_ms = now;
            }
        }
        if let Some(seq) = c.drop_before.take() {
            match w.drop_before(seq) {
                Ok(0) => {}
                Ok(n) => tracing::debug!(segments = n, "dropped WAL segments checkpoints hold"),
                Err(e) => tracing::error!(error = %e, "dropping WAL segments failed"),
            }
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
