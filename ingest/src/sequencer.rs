//! The sequencer: one thread that takes decoded exports in arrival order, maps them, appends
//! them to the WAL as a group, makes the group durable, applies it to the aggregator in the same
//! order, and only then answers. Replay after a restart runs the same mapping and aggregation
//! over the log, so it reproduces exactly what was acknowledged.

use crate::aggregator::{Outcome, SharedAggregator};
use crate::error::{Error, Result};
use crate::limiter::RETRY_AFTER;
use crate::mapping::{Mapper, Observations};
use crate::wal::{self, Kind, Sealed, WalWriter};
use cellpilot_core::clock::SharedClock;
use cellpilot_core::metrics::Metrics;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::oneshot;

/// Exports waiting for the sequencer before new ones get the overload answer.
pub const QUEUE: usize = 1024;
/// Largest group committed with one fsync.
const GROUP: usize = 256;

/// A decoded export.
#[derive(Debug)]
pub enum Export {
    /// Traces.
    Traces(ExportTraceServiceRequest),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Logs.
    Logs(ExportLogsServiceRequest),
}

impl Export {
    fn kind(&self) -> Kind {
        match self {
            Export::Traces(_) => Kind::Traces,
            Export::Metrics(_) => Kind::Metrics,
            Export::Logs(_) => Kind::Logs,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Export::Traces(r) => r.encode_to_vec(),
            Export::Metrics(r) => r.encode_to_vec(),
            Export::Logs(r) => r.encode_to_vec(),
        }
    }

    fn decode(kind: Kind, bytes: &[u8]) -> std::result::Result<Self, prost::DecodeError> {
        Ok(match kind {
            Kind::Traces => Export::Traces(ExportTraceServiceRequest::decode(bytes)?),
            Kind::Metrics => Export::Metrics(ExportMetricsServiceRequest::decode(bytes)?),
            Kind::Logs => Export::Logs(ExportLogsServiceRequest::decode(bytes)?),
        })
    }

    fn map<'a>(&'a self, mapper: &Mapper) -> Result<Observations<'a>> {
        match self {
            Export::Traces(r) => mapper.traces(r),
            Export::Metrics(r) => mapper.metrics(r),
            Export::Logs(_) => Ok(Observations::default()),
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
    /// The request's protobuf bytes when the transport had them (saves an encode).
    raw: Option<Vec<u8>>,
    reply: oneshot::Sender<Result<Applied>>,
}

/// Where the WAL lives and how it syncs.
#[derive(Debug, Clone)]
pub struct WalSettings {
    /// Data directory.
    pub dir: std::path::PathBuf,
    /// fsync policy.
    pub fsync: cellpilot_core::config::FsyncPolicy,
    /// Size cap.
    pub max_bytes: u64,
}

/// Handle to the sequencer thread; dropping every handle stops it after the queued exports.
#[derive(Debug)]
pub struct Sequencer {
    tx: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
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
}

/// Re-applies the WAL under `dir` to `agg` (windows before `durable_before` are skipped).
pub fn replay(
    dir: &Path,
    mapper: &Mapper,
    agg: &SharedAggregator,
    durable_before: i64,
) -> std::result::Result<Replayed, String> {
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
) -> std::result::Result<Replayed, String> {
    let seqs = wal::list_segments(dir)?;
    let mut out = Replayed::default();
    if let Some(&first) = seqs.first()
        && first > 0
        && let Some(state) = wal::load_state(dir, first - 1)?
    {
        agg.lock().restore_delta_state(&state)?;
    }
    for &seq in &seqs {
        let mut max_end = i64::MIN;
        let records = wal::read_segment(dir, seq)?;
        let bytes = records.iter().map(|r| r.payload.len() as u64 + 17).sum::<u64>() + 16;
        for rec in &records {
            let export = match Export::decode(rec.kind, &rec.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(segment = seq, error = %e, "skipping an undecodable WAL record");
                    continue;
                }
            };
            if let (Export::Logs(req), Some(sink)) = (&export, cutovers) {
                for r in crate::logs::cutovers(req) {
                    sink.reported(&r.cell, r.started_ms, r.completed_ms);
                }
            }
            let Ok(obs) = export.map(mapper) else { continue };
            let o = agg.lock().apply(&obs, rec.received_ms, durable_before);
            out.counted += o.accepted - o.already_persisted;
            out.already_persisted += o.already_persisted;
            max_end = max_end.max(o.max_window_end_ms);
        }
        out.records += records.len();
        out.segments.push(Sealed { seq, bytes, max_window_end_ms: max_end });
    }
    if let Some(&last) = seqs.last() {
        // The last segment was being written when we stopped: checkpoint it as sealed now.
        wal::write_state(dir, last, &agg.lock().delta_state())?;
    }
    out.next_seq = seqs.last().map_or(0, |s| s + 1);
    Ok(out)
}

struct Worker {
    rx: Receiver<Job>,
    cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    mapper: Mapper,
    agg: SharedAggregator,
    wal: Option<WalWriter>,
    clock: SharedClock,
    metrics: Metrics,
    watermark: Watermark,
}

impl Sequencer {
    /// Starts the thread. With `wal` set, exports are logged (segments after `replayed`) before
    /// they are applied; without it they are only applied (benchmarks, tests).
    pub fn start(
        mapper: Mapper,
        agg: SharedAggregator,
        wal: Option<(WalSettings, Replayed)>,
        clock: SharedClock,
        metrics: Metrics,
        watermark: Watermark,
        cutovers: Option<Arc<dyn cellpilot_core::store::CutoverReports>>,
    ) -> Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let wal = match wal {
            Some((s, replayed)) => Some(
                WalWriter::open(&s.dir, replayed.next_seq, replayed.segments, s.fsync, s.max_bytes, clock.now_ms())
                    .map_err(Error::Internal)?,
            ),
            None => None,
        };
        let worker = Worker { rx, cutovers, mapper, agg, wal, clock, metrics, watermark };
        let thread = std::thread::Builder::new()
            .name("cellpilot-sequencer".into())
            .spawn(move || worker.run())
            .map_err(|e| Error::Internal(format!("starting the sequencer: {e}")))?;
        Ok(Self { tx: Some(tx), thread: Some(thread) })
    }

    /// Queues an export and waits until it is durable and applied.
    pub async fn submit(&self, export: Export, raw: Option<Vec<u8>>) -> Result<Applied> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(|| Error::Internal("the sequencer has stopped".into()))?;
        match tx.try_send(Job { export, raw, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(Error::Overloaded { retry_after: RETRY_AFTER }),
            Err(TrySendError::Disconnected(_)) => return Err(Error::Internal("the sequencer has stopped".into())),
        }
        rx.await.map_err(|_| Error::Internal("the sequencer dropped an export".into()))?
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

impl Worker {
    fn run(mut self) {
        loop {
            let first = match self.rx.recv_timeout(Duration::from_secs(1)) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    self.maintain();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut jobs = vec![first];
            while jobs.len() < GROUP {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.group(jobs);
            self.maintain();
        }
        if let Some(w) = self.wal.as_mut()
            && let Err(e) = w.commit()
        {
            tracing::error!(error = %e, "final WAL sync failed");
        }
    }

    fn group(&mut self, jobs: Vec<Job>) {
        let now = self.clock.now_ms();
        let (exports, rest): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| ((j.export, j.raw), j.reply)).unzip();
        let replies = rest;
        let mapped: Vec<Result<Observations<'_>>> = exports.iter().map(|(e, _)| e.map(&self.mapper)).collect();
        let mut logged = vec![true; exports.len()];
        if let Some(w) = self.wal.as_mut() {
            for (i, ((export, raw), m)) in exports.iter().zip(&mapped).enumerate() {
                if m.is_err() {
                    logged[i] = false;
                    continue;
                }
                let encoded;
                let bytes = match raw {
                    Some(b) => b.as_slice(),
                    None => {
                        encoded = export.encode();
                        encoded.as_slice()
                    }
                };
                logged[i] = w.has_room(bytes.len()) && w.append(export.kind(), now, bytes).is_ok();
            }
            if let Err(e) = w.commit() {
                tracing::error!(error = %e, "WAL commit failed; the group is answered as overloaded");
                logged.iter_mut().for_each(|l| *l = false);
            }
            self.metrics.wal_bytes.set(w.total_bytes() as i64);
        }
        let durable_before = (self.watermark)();
        let mut agg = self.agg.lock();
        let mut results = Vec::with_capacity(replies.len());
        for ((m, logged), (export, _)) in mapped.into_iter().zip(logged).zip(&exports) {
            results.push(match m {
                Err(e) => Err(e),
                Ok(_) if !logged => Err(Error::Overloaded { retry_after: RETRY_AFTER }),
                Ok(obs) => {
                    let outcome = agg.apply(&obs, now, durable_before);
                    if let Some(w) = self.wal.as_mut() {
                        w.note_window_end(outcome.max_window_end_ms);
                    }
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
            });
        }
        self.metrics.series_live.set(agg.live_series() as i64);
        self.metrics.windows_open.set(agg.open_windows() as i64);
        drop(agg);
        for (reply, r) in replies.into_iter().zip(results) {
            let _ = reply.send(r);
        }
    }

    /// Seals old segments and drops those Parquet has made redundant.
    fn maintain(&mut self) {
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
        self.metrics.wal_bytes.set(w.total_bytes() as i64);
        self.metrics.wal_segments.set(w.segments() as i64);
    }
}
