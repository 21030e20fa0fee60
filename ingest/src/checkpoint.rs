//! Checkpoints: the aggregator's state and the rows of closed windows not yet in Parquet,
//! saved every `[storage] checkpoint_interval`, so the WAL holds seconds of records rather
//! than the minutes a 5-minute Parquet bucket takes to be written.
//!
//! Files under `<dir>/wal/`, each checksummed and written atomically (a synced temporary file,
//! a rename, a synced directory):
//! - `<seq>.ckpt`: the aggregator's state as of the end of segment `seq - 1` (segments from
//!   `seq` on were logged after it), and the closed-row files it needs;
//! - `closed/<id>.rows`: the rows (Arrow IPC) of windows closed between two checkpoints,
//!   written once and removed when Parquet holds every one of them.
//!
//! The two newest checkpoints are kept, with every segment from the older one on: a newest
//! checkpoint found damaged on start falls back to the one before it plus the WAL.

use crate::error::{Error, Result};
use crate::wal::WalError;
use arrow::array::{Array, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use cellpilot_core::fs::{FileError, Fs};
use cellpilot_core::store::WindowBatches;
use crossbeam_channel::{Receiver, Sender};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const CHECKPOINT_MAGIC: &[u8; 8] = b"CPCKPT\0\x01";
const ROWS_MAGIC: &[u8; 8] = b"CPROWS\0\x01";
/// Magic, crc32 of the body, body length.
const HEAD: usize = 8 + 4 + 8;

/// A file of closed rows a checkpoint needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedFile {
    /// Its id (the sequence number of the checkpoint that wrote it).
    pub id: u64,
    /// End of its latest window: once Parquet holds windows up to here, it is not needed.
    pub max_end_ms: i64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// What a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The first segment logged after it.
    pub seq: u64,
    /// The closed-row files that hold the closed windows not yet in Parquet.
    pub closed: Vec<ClosedFile>,
    /// [`crate::aggregator::Aggregator::checkpoint`].
    pub state: Vec<u8>,
}

fn wal_dir(data: &Path) -> PathBuf {
    data.join("wal")
}

fn checkpoint_path(data: &Path, seq: u64) -> PathBuf {
    wal_dir(data).join(format!("{seq:020}.ckpt"))
}

fn closed_dir(data: &Path) -> PathBuf {
    wal_dir(data).join("closed")
}

fn closed_path(data: &Path, id: u64) -> PathBuf {
    closed_dir(data).join(format!("{id:020}.rows"))
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> WalError {
    WalError::Io(FileError::new(action, path, source))
}

/// Why a checkpoint or closed-row file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the file failed.
    #[error(transparent)]
    Io(#[from] WalError),
    /// It is cut short, its checksum does not match, or it does not parse.
    #[error("{} is damaged: {why}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

fn framed(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a file `framed` wrote, checked.
fn unframed(magic: &[u8; 8], path: &Path) -> std::result::Result<Vec<u8>, ReadError> {
    let bytes = std::fs::read(path).map_err(|e| io("reading", path, e))?;
    let damaged = |why: &str| ReadError::Damaged { path: path.to_path_buf(), why: why.into() };
    if bytes.len() < HEAD || bytes[..8] != magic[..] {
        return Err(damaged("not a cellpilot checkpoint file of this version"));
    }
    let crc = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    let len = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    if len != (bytes.len() - HEAD) as u64 {
        return Err(damaged("its length does not match its header"));
    }
    if crc32fast::hash(&bytes[HEAD..]) != crc {
        return Err(damaged("its checksum does not match"));
    }
    Ok(bytes[HEAD..].to_vec())
}

fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut body = Vec::with_capacity(c.state.len() + 64);
    crate::codec::put_u64(&mut body, c.seq);
    crate::codec::put_u64(&mut body, c.closed.len() as u64);
    for f in &c.closed {
        crate::codec::put_u64(&mut body, f.id);
        crate::codec::put_i64(&mut body, f.max_end_ms);
        crate::codec::put_u64(&mut body, f.bytes);
    }
    body.extend_from_slice(&c.state);
    framed(CHECKPOINT_MAGIC, &body)
}

/// Writes checkpoint `c` atomically; returns its size.
pub fn write_checkpoint(fs: &Fs, data: &Path, c: &Checkpoint) -> std::result::Result<u64, WalError> {
    let bytes = encode_checkpoint(c);
    let path = checkpoint_path(data, c.seq);
    fs.write_atomic(&path, &bytes).map_err(|e| io("writing", &path, e))?;
    Ok(bytes.len() as u64)
}

/// Reads and checks checkpoint `seq`.
pub fn read_checkpoint(data: &Path, seq: u64) -> std::result::Result<Checkpoint, ReadError> {
    let path = checkpoint_path(data, seq);
    let body = unframed(CHECKPOINT_MAGIC, &path)?;
    let damaged = |e: crate::codec::CodecError| ReadError::Damaged { path: path.clone(), why: e.to_string() };
    let mut r = crate::codec::Reader::new(&body);
    let read_seq = r.u64().map_err(damaged)?;
    if read_seq != seq {
        return Err(ReadError::Damaged { path, why: format!("it names segment {read_seq}") });
    }
    let n = r.count(3).map_err(damaged)?;
    let mut closed = Vec::with_capacity(n);
    for _ in 0..n {
        closed.push(ClosedFile {
            id: r.u64().map_err(damaged)?,
            max_end_ms: r.i64().map_err(damaged)?,
            bytes: r.u64().map_err(damaged)?,
        });
    }
    Ok(Checkpoint { seq, closed, state: r.rest().to_vec() })
}

/// Checkpoints present, by sequence number ascending.
pub fn list_checkpoints(data: &Path) -> std::result::Result<Vec<u64>, WalError> {
    numbered(&wal_dir(data), ".ckpt")
}

/// Closed-row files present, by id ascending.
pub fn list_closed(data: &Path) -> std::result::Result<Vec<u64>, WalError> {
    numbered(&closed_dir(data), ".rows")
}

fn numbered(dir: &Path, suffix: &str) -> std::result::Result<Vec<u64>, WalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", dir, e)),
    };
    let mut out: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(suffix)).and_then(|n| n.parse().ok()))
        .collect();
    out.sort_unstable();
    Ok(out)
}

fn remove(path: &Path) -> std::result::Result<(), WalError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", path, e)),
    }
}

/// Removes checkpoint `seq`.
pub fn remove_checkpoint(data: &Path, seq: u64) -> std::result::Result<(), WalError> {
    remove(&checkpoint_path(data, seq))
}

/// Removes closed-row file `id`.
pub fn remove_closed(data: &Path, id: u64) -> std::result::Result<(), WalError> {
    remove(&closed_path(data, id))
}

/// Moves checkpoint `seq` (damaged) to `wal/quarantine/`.
pub fn quarantine_checkpoint(fs: &Fs, data: &Path, seq: u64) -> std::result::Result<(), WalError> {
    let dir = crate::wal::quarantine_dir(data);
    let from = checkpoint_path(data, seq);
    fs.create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    fs.rename(&from, &dir.join(format!("{seq:020}.ckpt"))).map_err(|e| io("quarantining", &from, e))
}

fn ipc(batches: &[&RecordBatch]) -> std::result::Result<Vec<u8>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    if let Some(first) = batches.first() {
        let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, first.schema_ref())?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(out)
}

fn max_end(batches: &[WindowBatches]) -> i64 {
    let mut end = i64::MIN;
    for b in batches {
        if let Some(col) = b.rollups.column_by_name("window_end")
            && let Some(a) = col.as_any().downcast_ref::<TimestampMillisecondArray>()
            && let Some(m) = arrow::compute::max(a)
        {
            end = end.max(m);
        }
        if let Some(col) = b.errors_by_cause.column_by_name("window_end")
            && let Some(a) = col.as_any().downcast_ref::<TimestampMillisecondArray>()
            && let Some(m) = arrow::compute::max(a)
        {
            end = end.max(m);
        }
    }
    end
}

/// Writes `rows` as closed-row file `id`, atomically.
pub fn write_closed(
    fs: &Fs,
    data: &Path,
    id: u64,
    rows: &[WindowBatches],
) -> std::result::Result<ClosedFile, WalError> {
    let dir = closed_dir(data);
    fs.create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let path = closed_path(data, id);
    let encode = || -> std::result::Result<Vec<u8>, arrow::error::ArrowError> {
        let rollups: Vec<&RecordBatch> = rows.iter().map(|r| &r.rollups).collect();
        let errors: Vec<&RecordBatch> = rows.iter().map(|r| &r.errors_by_cause).collect();
        let mut body = Vec::new();
        crate::codec::put_bytes(&mut body, &ipc(&rollups)?);
        crate::codec::put_bytes(&mut body, &ipc(&errors)?);
        Ok(body)
    };
    let body = encode().map_err(|e| io("encoding", &path, std::io::Error::other(e)))?;
    let bytes = framed(ROWS_MAGIC, &body);
    fs.write_atomic(&path, &bytes).map_err(|e| io("writing", &path, e))?;
    Ok(ClosedFile { id, max_end_ms: max_end(rows), bytes: bytes.len() as u64 })
}

/// Reads closed-row file `f`: its rows, which must have this build's schemas.
pub fn read_closed(data: &Path, f: &ClosedFile) -> std::result::Result<WindowBatches, ReadError> {
    let path = closed_path(data, f.id);
    let body = unframed(ROWS_MAGIC, &path)?;
    let damaged = |why: String| ReadError::Damaged { path: path.clone(), why };
    let mut r = crate::codec::Reader::new(&body);
    let rollups = r.bytes().map_err(|e| damaged(e.to_string()))?;
    let errors = r.bytes().map_err(|e| damaged(e.to_string()))?;
    let read = |bytes: &[u8], schema: arrow::datatypes::SchemaRef| -> std::result::Result<RecordBatch, String> {
        if bytes.is_empty() {
            return Ok(RecordBatch::new_empty(schema));
        }
        let reader =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| e.to_string())?;
        if reader.schema() != schema {
            return Err("its rows have another schema".into());
        }
        let batches: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>().map_err(|e| e.to_string())?;
        arrow::compute::concat_batches(&schema, &batches).map_err(|e| e.to_string())
    };
    Ok(WindowBatches {
        rollups: read(rollups, cellpilot_core::schema::rollups_schema()).map_err(damaged)?,
        errors_by_cause: read(errors, cellpilot_core::schema::errors_by_cause_schema()).map_err(damaged)?,
    })
}

/// A checkpoint for the writer thread to make durable.
pub(crate) struct Job {
    pub(crate) seq: u64,
    pub(crate) state: Vec<u8>,
    /// Rows of the windows closed since the last checkpoint.
    pub(crate) rows: Vec<WindowBatches>,
    /// Parquet holds every window ending by then: closed-row files up to it are not needed.
    pub(crate) persisted_until: i64,
}

/// What became of a [`Job`].
#[derive(Debug)]
pub(crate) struct Done {
    pub(crate) seq: u64,
    pub(crate) result: std::result::Result<Written, WalError>,
}

/// A checkpoint made durable.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written {
    /// Segments before this are in no kept checkpoint's replay (the older of the two kept).
    pub(crate) keep_from: u64,
    /// Bytes of the checkpoint and the closed-row files it needs.
    pub(crate) bytes: u64,
}

/// What a checkpoint thread starts from: the checkpoints and closed-row files found on start.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Durable checkpoints kept, oldest first (at most two).
    pub checkpoints: Vec<u64>,
    /// The closed-row files the newest of them needs.
    pub closed: Vec<ClosedFile>,
}

/// The thread that writes checkpoints, so the sequencer only takes the state.
pub(crate) struct Checkpointer {
    to: Option<Sender<Job>>,
    pub(crate) back: Receiver<Done>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Writer {
    fs: Fs,
    data: PathBuf,
    kept: Vec<u64>,
    closed: Vec<ClosedFile>,
    /// Rows of a checkpoint that failed to be written, written with the next one.
    carried: Vec<WindowBatches>,
}

impl Writer {
    fn write(&mut self, job: Job) -> std::result::Result<Written, WalError> {
        if let Some(&last) = self.kept.last()
            && job.seq <= last
        {
            // The sequencer seals a segment for every checkpoint; this is the last line.
            self.carried.extend(job.rows);
            return Err(WalError::CheckpointOutOfOrder { seq: job.seq, last });
        }
        let mut rows = std::mem::take(&mut self.carried);
        rows.extend(job.rows);
        let mut closed = self.closed.clone();
        let mut written = None;
        if rows.iter().any(|r| r.rollups.num_rows() + r.errors_by_cause.num_rows() > 0) {
            match write_closed(&self.fs, &self.data, job.seq, &rows) {
                Ok(f) => {
                    written = Some(f.id);
                    closed.push(f);
                }
                Err(e) => {
                    self.carried = rows;
                    return Err(e);
                }
            }
        }
        let (keep, done): (Vec<_>, Vec<_>) = closed.into_iter().partition(|f| f.max_end_ms > job.persisted_until);
        let c = Checkpoint { seq: job.seq, closed: keep, state: job.state };
        let bytes = match write_checkpoint(&self.fs, &self.data, &c) {
            Ok(b) => b,
            Err(e) => {
                if let Some(id) = written {
                    let _ = remove_closed(&self.data, id);
                }
                self.carried = rows;
                return Err(e);
            }
        };
        self.closed = c.closed;
        self.kept.push(job.seq);
        // Removals that fail leave files a later start ignores; they do not fail the checkpoint.
        for f in done {
            if let Err(e) = remove_closed(&self.data, f.id) {
                tracing::warn!(error = %e, "removing a closed-row file Parquet holds failed");
            }
        }
        while self.kept.len() > 2 {
            let old = self.kept.remove(0);
            if let Err(e) = remove_checkpoint(&self.data, old) {
                tracing::warn!(error = %e, "removing an old checkpoint failed");
            }
        }
        // With one checkpoint only, every segment stays: a damaged checkpoint falls back to them.
        let keep_from = if self.kept.len() >= 2 { self.kept[0] } else { 0 };
        Ok(Written { keep_from, bytes: bytes + self.closed.iter().map(|f| f.bytes).sum::<u64>() })
    }
}

impl Checkpointer {
    /// Starts the thread for the WAL under `data`, from what start-up found.
    pub(crate) fn start(fs: Fs, data: &Path, recovered: Recovered) -> Result<Self> {
        let (to, rx) = crossbeam_channel::bounded::<Job>(1);
        let (tx, back) = crossbeam_channel::bounded(1);
        let mut w = Writer {
            fs,
            data: data.to_path_buf(),
            kept: recovered.checkpoints,
            closed: recovered.closed,
            carried: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("cellpilot-checkpoint".into())
            .spawn(move || {
                for job in rx {
                    let seq = job.seq;
                    let result = catch_unwind(AssertUnwindSafe(|| w.write(job)))
                        .unwrap_or_else(|p| Err(WalError::Panicked(cellpilot_core::task::panic_message(p.as_ref()))));
                    if tx.send(Done { seq, result }).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("starting the checkpoint writer: {e}").into()))?;
        Ok(Self { to: Some(to), back, thread: Some(thread) })
    }

    /// Hands `job` over; `false` when the thread is gone.
    pub(crate) fn send(&self, job: Job) -> bool {
        self.to.as_ref().is_some_and(|t| t.send(job).is_ok())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The thread finishes the job it has (one at a time: its answer always has room) and ends.
        self.to = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};

    fn rows(start: i64) -> WindowBatches {
        let mut r = RollupsBuilder::default();
        let mut e = ErrorsByCauseBuilder::default();
        let key = RowKey { window_start_ms: start, window_end_ms: start + 10_000, cell: "c", service: "s", route: "/" };
        let hist = cellpilot_core::latency::SparseHistogram::default().serialize();
        r.push(
            key,
            RollupValues {
                requests: 3,
                errors: 1,
                hist: &hist,
                error_hist: Some(&hist),
                quantiles: Default::default(),
                exact: true,
            },
        );
        e.push(key, "5xx", 1);
        WindowBatches { rollups: r.finish().unwrap(), errors_by_cause: e.finish().unwrap() }
    }

    #[test]
    fn files_round_trip_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Fs::real();
        let f = write_closed(&fs, dir.path(), 7, &[rows(10_000), rows(20_000)]).unwrap();
        assert_eq!(f.max_end_ms, 30_000);
        let back = read_closed(dir.path(), &f).unwrap();
        assert_eq!(back.rollups.num_rows(), 2);
        assert_eq!(back.errors_by_cause.num_rows(), 2);
        let c = Checkpoint { seq: 9, closed: vec![f.clone()], state: b"state".to_vec() };
        write_checkpoint(&fs, dir.path(), &c).unwrap();
        assert_eq!(read_checkpoint(dir.path(), 9).unwrap(), c);
        assert_eq!(list_checkpoints(dir.path()).unwrap(), [9]);
        assert_eq!(list_closed(dir.path()).unwrap(), [7]);
        for path in [checkpoint_path(dir.path(), 9), closed_path(dir.path(), 7)] {
            let good = std::fs::read(&path).unwrap();
            for i in [0, 9, 15, good.len() - 1] {
                let mut bad = good.clone();
                bad[i] ^= 1;
                std::fs::write(&path, &bad).unwrap();
                let r = if path.extension().unwrap() == "ckpt" {
                    read_checkpoint(dir.path(), 9).map(|_| ())
                } else {
                    read_closed(dir.path(), &f).map(|_| ())
                };
                assert!(matches!(r, Err(ReadError::Damaged { .. })), "{i}: {r:?}");
            }
            std::fs::write(&path, &good[..good.len() - 3]).unwrap();
            std::fs::write(&path, &good).unwrap();
        }
    }

    #[test]
    fn the_writer_keeps_two_checkpoints_and_the_rows_parquet_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer { fs: Fs::real(), data: dir.path().into(), kept: vec![], closed: vec![], carried: vec![] };
        let job = |seq, rows, persisted_until| Job { seq, state: vec![1, 2, 3], rows, persisted_until };
        let a = w.write(job(1, vec![rows(10_000)], i64::MIN)).unwrap();
        assert_eq!(a.keep_from, 0, "no checkpoint to fall back to: every segment stays");
        w.write(job(2, vec![rows(20_000)], i64::MIN)).unwrap();
        let c = w.write(job(3, vec![], 20_000)).unwrap();
        assert_eq!(c.keep_from, 2, "checkpoint 1 removed, 2 kept as the fallback");
        assert_eq!(list_checkpoints(dir.path()).unwrap(), [2, 3]);
        assert_eq!(list_closed(dir.path()).unwrap(), [2], "file 1's windows are in Parquet");
        assert_eq!(read_checkpoint(dir.path(), 3).unwrap().closed.iter().map(|f| f.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_checkpoint_that_reuses_a_number_is_refused_and_its_rows_carried() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer { fs: Fs::real(), data: dir.path().into(), kept: vec![], closed: vec![], carried: vec![] };
        let job = |seq, rows| Job { seq, state: vec![seq as u8], rows, persisted_until: i64::MIN };
        w.write(job(4, vec![rows(10_000)])).unwrap();
        w.write(job(5, vec![rows(20_000)])).unwrap();
        // Reusing 5 would overwrite closed/5.rows; a third 5 would remove the only checkpoint 5.
        for _ in 0..2 {
            let r = w.write(job(5, vec![rows(30_000)]));
            assert!(matches!(r, Err(WalError::CheckpointOutOfOrder { seq: 5, last: 5 })), "{r:?}");
        }
        assert_eq!(list_checkpoints(dir.path()).unwrap(), [4, 5]);
        w.write(job(6, vec![])).unwrap();
        let ends: Vec<i64> = read_checkpoint(dir.path(), 6).unwrap().closed.iter().map(|f| f.max_end_ms).collect();
        assert_eq!(ends, [20_000, 30_000, 40_000], "the refused jobs' rows are written with the next");
        let c6 = read_checkpoint(dir.path(), 6).unwrap();
        let carried = read_closed(dir.path(), &c6.closed[2]).unwrap();
        assert_eq!(carried.rollups.num_rows(), 2, "both refused jobs' rows");
    }
}
