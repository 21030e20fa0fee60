//! The write-ahead log: every accepted export is appended here (group commit, fsync per policy)
//! before it is applied and acknowledged.
//!
//! Layout: `<dir>/wal/<seq>.wal` segments, each opening with a header (magic + schema version),
//! then records `[len u32][crc32 u32][kind u8][received_ms i64][payload]` where the payload is the
//! export request in protobuf. When a segment is sealed, `<seq>.state` holds the cumulative-stream
//! state as of its last record, so segments can be dropped once their windows are in Parquet
//! without losing the state later deltas depend on.

use cellpilot_core::config::FsyncPolicy;
use cellpilot_core::schema::SCHEMA_VERSION;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"CPWAL\0";
const RECORD_HEADER: usize = 4 + 4 + 1 + 8;
/// A segment is sealed once it reaches this size…
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// …or this age, so segments become droppable soon after their windows are persisted.
pub const SEGMENT_AGE_MS: i64 = 5 * 60 * 1000;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// `ExportTraceServiceRequest`
    Traces = 1,
    /// `ExportMetricsServiceRequest`
    Metrics = 2,
    /// `ExportLogsServiceRequest`
    Logs = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Traces),
            2 => Some(Kind::Metrics),
            3 => Some(Kind::Logs),
            _ => None,
        }
    }
}

/// One logged export.
#[derive(Debug, Clone)]
pub struct Record {
    /// Signal.
    pub kind: Kind,
    /// Wall-clock ms it was received at; replay decides lateness as of this instant.
    pub received_ms: i64,
    /// The request in protobuf.
    pub payload: Vec<u8>,
}

/// A sealed (read-only) segment.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Sequence number.
    pub seq: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// End of the latest window any of its records counted in.
    pub max_window_end_ms: i64,
}

fn wal_dir(data: &Path) -> PathBuf {
    data.join("wal")
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

fn state_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.state"))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Segment sequence numbers present, ascending.
pub fn list_segments(data: &Path) -> Result<Vec<u64>, String> {
    let dir = wal_dir(data);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("listing", &dir, e)),
    };
    let mut seqs: Vec<u64> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".wal")).and_then(|n| n.parse().ok()))
        .collect();
    seqs.sort_unstable();
    Ok(seqs)
}

/// The checkpoint saved when segment `seq` was sealed, if any.
pub fn load_state(data: &Path, seq: u64) -> Result<Option<Vec<u8>>, String> {
    let p = state_path(&wal_dir(data), seq);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading", &p, e)),
    }
}

/// Where records, checkpoints and segments replay could not use are kept for a person to read.
pub fn quarantine_dir(data: &Path) -> PathBuf {
    wal_dir(data).join("quarantine")
}

fn quarantine_move(data: &Path, from: &Path) -> Result<(), String> {
    let dir = quarantine_dir(data);
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let name = from.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    let to = dir.join(name);
    std::fs::rename(from, &to).map_err(|e| io("quarantining", from, e))
}

/// Moves segment `seq` (unreadable as a whole) to the quarantine directory.
pub fn quarantine_segment(data: &Path, seq: u64) -> Result<(), String> {
    quarantine_move(data, &segment_path(&wal_dir(data), seq))
}

/// Moves the checkpoint of segment `seq` (unreadable) to the quarantine directory.
pub fn quarantine_state(data: &Path, seq: u64) -> Result<(), String> {
    quarantine_move(data, &state_path(&wal_dir(data), seq))
}

/// Writes record `index` of segment `seq` to the quarantine directory, as a one-record segment
/// file (`<seq>-<index>.wal`, same header and record format), and syncs it.
pub fn quarantine_record(data: &Path, seq: u64, index: usize, rec: &Record) -> Result<(), String> {
    let dir = quarantine_dir(data);
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    write_atomic(&dir.join(format!("{seq:020}-{index:08}.wal")), &segment_bytes(&[rec])?)
}

/// A whole segment file holding `records`.
fn segment_bytes(records: &[&Record]) -> Result<Vec<u8>, String> {
    let mut bytes = header();
    for r in records {
        bytes.extend_from_slice(&record_header(r.kind, r.received_ms, &r.payload)?);
        bytes.extend_from_slice(&r.payload);
    }
    Ok(bytes)
}

/// Writes `path` through a synced temporary file and a rename, then syncs the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)
        .and_then(|()| File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| io("writing", path, e))?;
    if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Replaces segment `seq` with just `records`, atomically (after some were quarantined).
pub fn rewrite_segment(data: &Path, seq: u64, records: &[&Record]) -> Result<(), String> {
    write_atomic(&segment_path(&wal_dir(data), seq), &segment_bytes(records)?)
}

/// Saves the cumulative-stream checkpoint as of the last record of segment `seq`, atomically.
pub fn write_state(data: &Path, seq: u64, state: &[u8]) -> Result<(), String> {
    write_atomic(&state_path(&wal_dir(data), seq), state)
}

/// Every intact record of segment `seq`. A torn or corrupt tail (a crash mid-write) ends the
/// segment there and is cut off, so later appends never follow garbage.
pub fn read_segment(data: &Path, seq: u64) -> Result<Vec<Record>, String> {
    let path = segment_path(&wal_dir(data), seq);
    let mut bytes = Vec::new();
    File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| io("reading", &path, e))?;
    let header = header();
    if bytes.len() < header.len() || bytes[..MAGIC.len()] != MAGIC[..] {
        return Err(format!("{} is not a cellpilot WAL segment", path.display()));
    }
    if bytes[..header.len()] != header[..] {
        return Err(format!("{} was written by another schema version", path.display()));
    }
    let mut out = Vec::new();
    let mut pos = header.len();
    while pos + RECORD_HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap_or_default());
        let body_end = pos + RECORD_HEADER + len;
        if body_end > bytes.len() || crc32fast::hash(&bytes[pos + 8..body_end]) != crc {
            break;
        }
        let Some(kind) = Kind::from_u8(bytes[pos + 8]) else { break };
        let received_ms = i64::from_le_bytes(bytes[pos + 9..pos + 17].try_into().unwrap_or_default());
        out.push(Record { kind, received_ms, payload: bytes[pos + RECORD_HEADER..body_end].to_vec() });
        pos = body_end;
    }
    if pos < bytes.len() {
        tracing::warn!(segment = %path.display(), dropped_bytes = bytes.len() - pos, "cutting a torn WAL tail");
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(pos as u64).and_then(|()| f.sync_all()))
            .map_err(|e| io("truncating", &path, e))?;
    }
    Ok(out)
}

/// `[len][crc32][kind][received_ms]` of a record with `payload`.
fn record_header(kind: Kind, received_ms: i64, payload: &[u8]) -> Result<[u8; RECORD_HEADER], String> {
    let len = u32::try_from(payload.len()).map_err(|_| "record too large for the WAL".to_string())?;
    let mut head = [0u8; RECORD_HEADER];
    head[8] = kind as u8;
    head[9..17].copy_from_slice(&received_ms.to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&head[8..]);
    h.update(payload);
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&h.finalize().to_le_bytes());
    Ok(head)
}

fn header() -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(format!("v{SCHEMA_VERSION:>3}\n").as_bytes());
    h
}

/// The segment being appended to, plus the sealed ones still needed.
#[derive(Debug)]
pub struct WalWriter {
    dir: PathBuf,
    fsync: FsyncPolicy,
    max_bytes: u64,
    file: BufWriter<File>,
    seq: u64,
    size: u64,
    opened_ms: i64,
    max_window_end_ms: i64,
    /// Bytes of the records of the group not yet committed (rolled back on failure).
    group_start: u64,
    sealed: Vec<Sealed>,
}

impl WalWriter {
    /// Starts segment `seq` under `data`, after the `sealed` segments replay found.
    pub fn open(
        data: &Path,
        seq: u64,
        sealed: Vec<Sealed>,
        fsync: FsyncPolicy,
        max_bytes: u64,
        now_ms: i64,
    ) -> Result<Self, String> {
        let dir = wal_dir(data);
        std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let path = segment_path(&dir, seq);
        let mut file =
            OpenOptions::new().create_new(true).write(true).open(&path).map_err(|e| io("creating", &path, e))?;
        let h = header();
        file.write_all(&h).and_then(|()| file.sync_all()).map_err(|e| io("writing", &path, e))?;
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        let size = h.len() as u64;
        Ok(Self {
            dir,
            fsync,
            max_bytes,
            file: BufWriter::with_capacity(1 << 20, file),
            seq,
            size,
            opened_ms: now_ms,
            max_window_end_ms: i64::MIN,
            group_start: size,
            sealed,
        })
    }

    /// Bytes of every segment on disk.
    pub fn total_bytes(&self) -> u64 {
        self.size + self.sealed.iter().map(|s| s.bytes).sum::<u64>()
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.sealed.len() + 1
    }

    /// Whether the size cap leaves room for `n` more bytes.
    pub fn has_room(&self, n: usize) -> bool {
        self.total_bytes() + (n + RECORD_HEADER) as u64 <= self.max_bytes
    }

    /// Buffers one record of the current group.
    pub fn append(&mut self, kind: Kind, received_ms: i64, payload: &[u8]) -> Result<(), String> {
        let head = record_header(kind, received_ms, payload)?;
        let r = self.file.write_all(&head).and_then(|()| self.file.write_all(payload));
        self.size += (RECORD_HEADER + payload.len()) as u64;
        r.map_err(|e| format!("appending to the WAL: {e}"))?;
        if self.fsync == FsyncPolicy::Always {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), String> {
        self.file.flush().map_err(|e| format!("writing the WAL: {e}"))?;
        if self.fsync != FsyncPolicy::Never {
            self.file.get_ref().sync_data().map_err(|e| format!("syncing the WAL: {e}"))?;
        }
        Ok(())
    }

    /// Makes the group durable. On failure the group's bytes are cut off again, so nothing that
    /// is not acknowledged stays in the log.
    pub fn commit(&mut self) -> Result<(), String> {
        match self.sync() {
            Ok(()) => {
                self.group_start = self.size;
                Ok(())
            }
            Err(e) => {
                let keep = self.group_start;
                let file = self.file.get_mut();
                let cut = file.set_len(keep).and_then(|()| file.seek(SeekFrom::Start(keep)).map(|_| ()));
                if let Err(cut) = cut {
                    tracing::error!(error = %cut, "could not roll back a failed WAL group");
                }
                self.size = keep;
                Err(e)
            }
        }
    }

    /// Notes that the current segment counted data up to window end `end_ms`.
    pub fn note_window_end(&mut self, end_ms: i64) {
        self.max_window_end_ms = self.max_window_end_ms.max(end_ms);
    }

    /// Whether the active segment should be sealed.
    pub fn due_for_rotation(&self, now_ms: i64) -> bool {
        self.size > header().len() as u64 && (self.size >= SEGMENT_BYTES || now_ms - self.opened_ms >= SEGMENT_AGE_MS)
    }

    /// Seals the active segment with `state` (the cumulative-stream checkpoint as of its last
    /// record) and opens the next one.
    pub fn rotate(&mut self, state: &[u8], now_ms: i64) -> Result<(), String> {
        self.commit()?;
        let data = self.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        write_state(&data, self.seq, state)?;
        let sealed = Sealed { seq: self.seq, bytes: self.size, max_window_end_ms: self.max_window_end_ms };
        let mut sealed_list = std::mem::take(&mut self.sealed);
        sealed_list.push(sealed);
        *self = Self::open(&data, self.seq + 1, sealed_list, self.fsync, self.max_bytes, now_ms)?;
        Ok(())
    }

    /// Drops the oldest sealed segments whose windows all end at or before `persisted_until`
    /// (a prefix only, so replay always starts from a checkpoint). Returns how many.
    pub fn truncate(&mut self, persisted_until: i64) -> Result<usize, String> {
        let n = self.sealed.iter().take_while(|s| s.max_window_end_ms <= persisted_until).count();
        if n == 0 {
            return Ok(0);
        }
        for s in self.sealed.drain(..n) {
            let p = segment_path(&self.dir, s.seq);
            std::fs::remove_file(&p).map_err(|e| io("removing", &p, e))?;
            // Earlier checkpoints are superseded by this segment's.
            if s.seq > 0 {
                let old = state_path(&self.dir, s.seq - 1);
                if old.exists() {
                    std::fs::remove_file(&old).map_err(|e| io("removing", &old, e))?;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 7, vec![], FsyncPolicy::Batch, 1 << 30, 0).unwrap();
        w.append(Kind::Traces, 11, b"first").unwrap();
        w.append(Kind::Metrics, 12, b"second").unwrap();
        w.commit().unwrap();
        drop(w);
        let path = segment_path(&wal_dir(dir.path()), 7);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let recs = read_segment(dir.path(), 7).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[1].kind, recs[1].received_ms, recs[1].payload.as_slice()),
            (Kind::Metrics, 12, &b"second"[..])
        );
        assert_eq!(read_segment(dir.path(), 7).unwrap().len(), 2, "the tail was cut once");
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
    }

    #[test]
    fn rotation_and_truncation_keep_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 0, vec![], FsyncPolicy::Never, 1 << 30, 0).unwrap();
        w.append(Kind::Traces, 1, b"a").unwrap();
        w.note_window_end(10_000);
        w.rotate(b"state-0", 1).unwrap();
        w.append(Kind::Traces, 2, b"b").unwrap();
        w.note_window_end(20_000);
        w.rotate(b"state-1", 2).unwrap();
        assert_eq!(w.segments(), 3);
        assert_eq!(w.truncate(15_000).unwrap(), 1);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
        assert_eq!(load_state(dir.path(), 0).unwrap().as_deref(), Some(&b"state-0"[..]));
        assert_eq!(w.truncate(20_000).unwrap(), 1);
        assert_eq!(load_state(dir.path(), 0).unwrap(), None);
        assert_eq!(load_state(dir.path(), 1).unwrap().as_deref(), Some(&b"state-1"[..]));
        assert!(!w.has_room(usize::MAX >> 1));
    }
}
