//! Recovery on start: the newest intact checkpoint is restored into the aggregator (its closed
//! rows handed back for the store), then the WAL logged after it is applied in order, through
//! the same code the live path runs, so what was acknowledged is counted exactly once.
//!
//! A checkpoint found damaged is moved to `wal/quarantine/` and said (`/readyz` shows it), and
//! recovery starts from the one before it, whose segments are still there. Without any
//! checkpoint (a fresh directory, or one a version 1 WAL wrote) every segment is replayed.

use crate::aggregator::{Outcome, SharedAggregator};
use crate::batch::SpanBatch;
use crate::checkpoint::{self, ClosedFile, Recovered};
use crate::error::Error;
use crate::export::Export;
use crate::mapping::Mapper;
use crate::wal::{self, Kind, Sealed};
use crate::wire::WireTraces;
use arrow::array::{BooleanArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use cellpilot_core::fs::Fs;
use cellpilot_core::store::{CutoverReports, WindowBatches};
use cellpilot_core::task::panic_message;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;
use prost::bytes::Bytes;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Summary of a recovery.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    /// WAL records read.
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
    /// Damage found, said for people (`/readyz` shows it).
    pub damage: Vec<String>,
    /// The checkpoint recovery started from.
    pub checkpoint: Option<u64>,
    /// Its closed windows that Parquet does not hold yet: the store's pending rows.
    pub closed: Vec<WindowBatches>,
    /// What the checkpoint thread starts from.
    pub recovered: Recovered,
}

#[cfg(any(test, feature = "internals"))]
/// Recovers the state under `dir` into `agg` (windows before `durable_before` are in Parquet
/// and left out).
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
    cutovers: Option<&dyn CutoverReports>,
) -> std::result::Result<Replayed, wal::WalError> {
    let fs = Fs::real();
    let mut out = Replayed::default();
    let seqs = wal::list_segments(dir)?;
    let checkpoints = checkpoint::list_checkpoints(dir)?;
    let mut chosen = None;
    for &seq in checkpoints.iter().rev() {
        match restore(dir, seq, agg, durable_before) {
            Ok(closed) => {
                chosen = Some((seq, closed));
                break;
            }
            Err(why) => {
                let what = format!(
                    "checkpoint {seq} could not be restored ({why}); moved to wal/quarantine, recovering from the one before it and the WAL"
                );
                tracing::error!("{what}");
                checkpoint::quarantine_checkpoint(&fs, dir, seq)?;
                out.damage.push(what);
                out.quarantined += 1;
            }
        }
    }
    let from = match &chosen {
        Some((seq, (files, rows))) => {
            out.checkpoint = Some(*seq);
            out.closed = rows.clone();
            out.recovered.closed = files.clone();
            out.recovered.checkpoints =
                checkpoints.iter().copied().filter(|&c| c < *seq).max().into_iter().chain([*seq]).collect();
            *seq
        }
        None => {
            restore_v1_streams(dir, &seqs, agg, &fs, &mut out)?;
            0
        }
    };
    tidy(dir, &checkpoints, &out.recovered)?;
    let mut malformed_cutovers = 0u64;
    for &seq in &seqs {
        if seq < from {
            // Held by the checkpoint; kept until a later one can stand in for it.
            let bytes = std::fs::metadata(dir.join("wal").join(format!("{seq:020}.wal"))).map_or(0, |m| m.len());
            out.segments.push(Sealed { seq, bytes });
            continue;
        }
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
            match replay_record(rec, mapper, agg, durable_before, cutovers, &mut malformed_cutovers) {
                Ok(o) => {
                    out.counted += o.accepted - o.already_persisted;
                    out.already_persisted += o.already_persisted;
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
        out.segments.push(Sealed { seq, bytes });
    }
    out.next_seq = seqs.last().map_or(0, |s| s + 1).max(from);
    if malformed_cutovers > 0 {
        // One line for the whole replay, however many there were.
        tracing::warn!(
            events = malformed_cutovers,
            "replay ignored cell.cutover events without cell, cutover.started and cutover.completed"
        );
    }
    Ok(out)
}

/// Restores checkpoint `seq` into `agg`: its closed-row files and their rows Parquet lacks.
/// On any error `agg` is left as it was.
fn restore(
    dir: &Path,
    seq: u64,
    agg: &SharedAggregator,
    durable_before: i64,
) -> std::result::Result<(Vec<ClosedFile>, Vec<WindowBatches>), String> {
    let c = checkpoint::read_checkpoint(dir, seq).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    let mut rows = Vec::new();
    for f in &c.closed {
        match checkpoint::read_closed(dir, f) {
            Ok(r) => {
                rows.push(not_before(r, durable_before).map_err(|e| e.to_string())?);
                files.push(f.clone());
            }
            // Removed once Parquet held it: nothing of it is needed.
            Err(_) if f.max_end_ms <= durable_before => {}
            Err(e) => return Err(format!("closed rows {}: {e}", f.id)),
        }
    }
    let mut fresh = agg.lock().empty_like();
    fresh.restore(&c.state, durable_before).map_err(|e| e.to_string())?;
    *agg.lock() = fresh;
    Ok((files, rows))
}

/// The rows of `b` whose window starts at or after `from_ms`.
fn not_before(b: WindowBatches, from_ms: i64) -> std::result::Result<WindowBatches, arrow::error::ArrowError> {
    let keep = |batch: &RecordBatch| -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
        let starts = batch
            .column_by_name("window_start")
            .and_then(|c| c.as_any().downcast_ref::<TimestampMillisecondArray>())
            .ok_or_else(|| arrow::error::ArrowError::SchemaError("no window_start".into()))?;
        let mask: BooleanArray = starts.iter().map(|s| s.map(|s| s >= from_ms)).collect();
        arrow::compute::filter_record_batch(batch, &mask)
    };
    Ok(WindowBatches { rollups: keep(&b.rollups)?, errors_by_cause: keep(&b.errors_by_cause)? })
}

/// Without a checkpoint, a version 1 WAL's cumulative-stream state beside the segment before
/// the first one still there.
fn restore_v1_streams(
    dir: &Path,
    seqs: &[u64],
    agg: &SharedAggregator,
    fs: &Fs,
    out: &mut Replayed,
) -> std::result::Result<(), wal::WalError> {
    if let Some(&first) = seqs.first()
        && first > 0
        && let Some(state) = wal::load_state(dir, first - 1)?
        && let Err(e) = agg.lock().restore_streams(&state)
    {
        // Cumulative streams then take a fresh baseline: their next point counts from the one after.
        tracing::error!(error = %e, "cumulative-stream state unreadable; moved to wal/quarantine");
        wal::quarantine_state(fs, dir, first - 1)?;
        out.quarantined += 1;
    }
    Ok(())
}

/// Removes checkpoints recovery will not use, closed-row files no kept checkpoint needs, and
/// temporary files a crash mid-write left.
fn tidy(dir: &Path, checkpoints: &[u64], kept: &Recovered) -> std::result::Result<(), wal::WalError> {
    for &c in checkpoints {
        if !kept.checkpoints.contains(&c) && dir.join("wal").join(format!("{c:020}.ckpt")).exists() {
            checkpoint::remove_checkpoint(dir, c)?;
        }
    }
    for id in checkpoint::list_closed(dir)? {
        if !kept.closed.iter().any(|f| f.id == id) {
            checkpoint::remove_closed(dir, id)?;
        }
    }
    for d in [dir.join("wal"), dir.join("wal").join("closed")] {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.ends_with(".tmp")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Why a logged export could not be replayed (it is quarantined, and start-up goes on).
#[derive(Debug, thiserror::Error)]
enum Unreplayable {
    /// The bytes are not the export their kind says.
    #[error("undecodable: {0}")]
    Undecodable(#[from] prost::DecodeError),
    /// The span batch is damaged.
    #[error("undecodable span batch: {0}")]
    Batch(#[from] crate::codec::CodecError),
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
    cutovers: Option<&dyn CutoverReports>,
    malformed: &mut u64,
) -> std::result::Result<Outcome, Unreplayable> {
    let export = match rec.kind {
        Kind::Spans => {
            let batch = SpanBatch::decode(&rec.payload)?;
            return catch_unwind(AssertUnwindSafe(|| agg.lock().apply_spans(&batch, rec.received_ms, durable_before)))
                .map_err(|p| Unreplayable::Panicked(panic_message(p.as_ref())));
        }
        // A version 1 WAL's traces stay encoded: the scanner checks them as it maps them.
        Kind::Traces => Export::TracesWire(WireTraces::new(Bytes::copy_from_slice(&rec.payload))),
        Kind::Metrics => Export::Metrics(ExportMetricsServiceRequest::decode(&rec.payload[..])?),
        Kind::Logs => Export::Logs(ExportLogsServiceRequest::decode(&rec.payload[..])?),
    };
    catch_unwind(AssertUnwindSafe(|| {
        if let (Export::Logs(req), Some(sink)) = (&export, cutovers) {
            let found = crate::logs::cutovers(req);
            for r in &found.reported {
                sink.reported(&r.cell, r.started_ms, r.completed_ms);
            }
            *malformed += found.malformed;
        }
        let obs = export.map(mapper).map_err(Unreplayable::Refused)?;
        Ok(agg.lock().apply(&obs, rec.received_ms, durable_before))
    }))
    .unwrap_or_else(|p| Err(Unreplayable::Panicked(panic_message(p.as_ref()))))
}
