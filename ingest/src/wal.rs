//! The write-ahead log: every accepted export is appended here (group commit, fsync per policy)
//! before it is applied and acknowledged.
//!
//! Layout: `<dir>/wal/<seq>.wal` segments, each opening with a header (magic + layout version),
//! then records `[len u32][crc32 u32][kind u8][received_ms i64][payload]` where the payload is a
//! trace export folded to its [`crate::batch::SpanBatch`] (a few bytes per span), or a metrics or
//! logs export request in protobuf. A segment is sealed at each checkpoint (or at 64 MiB) and
//! dropped once two later checkpoints hold what it logged ([`crate::checkpoint`]).
//!
//! Segments of layout version 1 (every export as its request, with a `<seq>.state` of the
//! cumulative streams beside each sealed one) are still read.

use cellpilot_core::config::FsyncPolicy;
use cellpilot_core::fs::{Fs, FsFile};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"CPWAL\0";
/// Version of the segment layout written (the tables' schema version does not change it): 2 adds
/// span batch records; 1 logged every export as its request.
const WAL_VERSION: &str = "2";
/// Layout versions read.
const READ_VERSIONS: [&str; 2] = ["1", "2"];
const RECORD_HEADER: usize = 4 + 4 + 1 + 8;
/// The unit of direct writes: their buffers, offsets and lengths are multiples of it (the
/// logical block of every common device divides it).
const BLOCK: usize = 4096;

/// One block of a direct write's buffer (aligned, so a `Vec` of them is a valid buffer).
#[derive(Debug, Clone, Copy, zerocopy::IntoBytes, zerocopy::FromBytes, zerocopy::Immutable, zerocopy::KnownLayout)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK]);

/// What writing around the page cache needs.
#[derive(Debug, Default)]
struct Direct {
    /// The active segment's last partial block as the file holds it (up to the committed end):
    /// the next write starts at that block and writes these bytes again, unchanged.
    tail: Vec<u8>,
    /// The partial block after the group being written, kept once it is durable.
    next_tail: Vec<u8>,
    /// Where a group is laid out in blocks.
    staging: Vec<Block>,
}

/// Largest write buffer kept for the next group.
const KEEP_BUFFER: usize = 32 << 20;
/// A segment is sealed once it reaches this size (and at every checkpoint).
pub const SEGMENT_BYTES: u64 = 64 << 20;

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
    /// A trace export's [`crate::batch::SpanBatch`].
    Spans = 4,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Kind::Traces),
            2 => Some(Kind::Metrics),
            3 => Some(Kind::Logs),
            4 => Some(Kind::Spans),
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
    /// The span batch, or the request in protobuf.
    pub payload: Vec<u8>,
}

/// A sealed (read-only) segment.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Sequence number.
    pub seq: u64,
    /// Bytes on disk.
    pub bytes: u64,
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

/// What went wrong with the log: which file, doing what, and the I/O error behind it.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    /// A file operation failed (a full disk, a failing one, permissions).
    #[error(transparent)]
    Io(#[from] cellpilot_core::fs::FileError),
    /// A file in the WAL directory is not a segment.
    #[error("{} is not a cellpilot WAL segment", .0.display())]
    NotASegment(PathBuf),
    /// A segment written by a different WAL schema version.
    #[error("{} was written by another schema version", .0.display())]
    OtherVersion(PathBuf),
    /// A record longer than a length field holds.
    #[error("a record of {0} bytes is too large for the WAL")]
    TooLarge(usize),
    /// Writing a group panicked (nothing of it is acknowledged).
    #[error("writing the WAL panicked: {0}")]
    Panicked(String),
    /// A checkpoint named a segment no later than one a kept checkpoint names: writing it
    /// would replace files the kept one needs.
    #[error("checkpoint {seq} is not after checkpoint {last}")]
    CheckpointOutOfOrder {
        /// The refused checkpoint's segment.
        seq: u64,
        /// The newest kept checkpoint's segment.
        last: u64,
    },
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> WalError {
    WalError::Io(cellpilot_core::fs::FileError::new(action, path, source))
}

/// Segment sequence numbers present, ascending.
pub fn list_segments(data: &Path) -> Result<Vec<u64>, WalError> {
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

/// The cumulative-stream state saved beside sealed segment `seq` of layout version 1, if any.
pub fn load_state(data: &Path, seq: u64) -> Result<Option<Vec<u8>>, WalError> {
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

fn quarantine_move(fs: &Fs, data: &Path, from: &Path) -> Result<(), WalError> {
    let dir = quarantine_dir(data);
    fs.create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let name = from.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    fs.rename(from, &dir.join(name)).map_err(|e| io("quarantining", from, e))
}

/// Moves segment `seq` (unreadable as a whole) to the quarantine directory.
pub fn quarantine_segment(fs: &Fs, data: &Path, seq: u64) -> Result<(), WalError> {
    quarantine_move(fs, data, &segment_path(&wal_dir(data), seq))
}

/// Moves the cumulative-stream state of version 1 segment `seq` (unreadable) to the quarantine
/// directory.
pub fn quarantine_state(fs: &Fs, data: &Path, seq: u64) -> Result<(), WalError> {
    quarantine_move(fs, data, &state_path(&wal_dir(data), seq))
}

/// Writes record `index` of segment `seq` to the quarantine directory, as a one-record segment
/// file (`<seq>-<index>.wal`, same header and record format), and syncs it.
pub fn quarantine_record(fs: &Fs, data: &Path, seq: u64, index: usize, rec: &Record) -> Result<(), WalError> {
    let dir = quarantine_dir(data);
    fs.create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let path = dir.join(format!("{seq:020}-{index:08}.wal"));
    fs.write_atomic(&path, &segment_bytes(&[rec])?).map_err(|e| io("writing", &path, e))
}

/// A whole segment file holding `records`.
fn segment_bytes(records: &[&Record]) -> Result<Vec<u8>, WalError> {
    let mut bytes = header();
    for r in records {
        bytes.extend_from_slice(&record_header(r.kind, r.received_ms, &r.payload)?);
        bytes.extend_from_slice(&r.payload);
    }
    Ok(bytes)
}

/// Replaces segment `seq` with just `records`, atomically (after some were quarantined).
pub fn rewrite_segment(fs: &Fs, data: &Path, seq: u64, records: &[&Record]) -> Result<(), WalError> {
    let path = segment_path(&wal_dir(data), seq);
    fs.write_atomic(&path, &segment_bytes(records)?).map_err(|e| io("writing", &path, e))
}

/// What reading a segment found.
#[derive(Debug, Default)]
pub struct SegmentRead {
    /// Every intact record before the first bad one.
    pub records: Vec<Record>,
    /// A sealed segment's damage, said for people (log, `/readyz`): where it was and where the
    /// bytes from there on were moved.
    pub damage: Option<String>,
}

/// Reads segment `seq`. Records end at the first bad one; the bytes from there on are moved to
/// `wal/quarantine/<seq>-at-<offset>.rest` and cut from the segment, so later appends never
/// follow garbage and nothing is destroyed. In the segment that was `active` when the process
/// stopped, that is a torn tail (a crash mid-group, never acknowledged); in a sealed one it is
/// damage, and [`SegmentRead::damage`] says so.
pub fn read_segment(fs: &Fs, data: &Path, seq: u64, active: bool) -> Result<SegmentRead, WalError> {
    let path = segment_path(&wal_dir(data), seq);
    let mut bytes = Vec::new();
    File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| io("reading", &path, e))?;
    let header = header();
    if bytes.len() < header.len() || bytes[..MAGIC.len()] != MAGIC[..] {
        return Err(WalError::NotASegment(path));
    }
    if !READ_VERSIONS.iter().any(|v| bytes[..header.len()] == header_of(v)[..]) {
        return Err(WalError::OtherVersion(path));
    }
    let mut out = SegmentRead::default();
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
        out.records.push(Record { kind, received_ms, payload: bytes[pos + RECORD_HEADER..body_end].to_vec() });
        pos = body_end;
    }
    if pos < bytes.len() && bytes.len() - pos < BLOCK && bytes[pos..].iter().all(|&b| b == 0) {
        // The padding of a direct write: the end of the log.
        fs.open_rw(&path)
            .and_then(|mut f| f.set_len(pos as u64).and_then(|()| f.sync_all()))
            .map_err(|e| io("truncating", &path, e))?;
    } else if pos < bytes.len() {
        let rest = bytes.len() - pos;
        let qdir = quarantine_dir(data);
        let kept = qdir.join(format!("{seq:020}-at-{pos:010}.rest"));
        fs.create_dir_all(&qdir)
            .and_then(|()| fs.write_atomic(&kept, &bytes[pos..]))
            .map_err(|e| io("quarantining the rest of", &path, e))?;
        if active {
            tracing::warn!(segment = %path.display(), bytes = rest, kept = %kept.display(), "cutting a torn WAL tail");
        } else {
            let what = format!(
                "WAL segment {} is damaged at byte {pos}: {rest} bytes after it moved to {}",
                path.display(),
                kept.display()
            );
            tracing::error!("{what}");
            out.damage = Some(what);
        }
        fs.open_rw(&path)
            .and_then(|mut f| f.set_len(pos as u64).and_then(|()| f.sync_all()))
            .map_err(|e| io("truncating", &path, e))?;
    }
    Ok(out)
}

/// `[len][crc32][kind][received_ms]` of a record with `payload`.
fn record_header(kind: Kind, received_ms: i64, payload: &[u8]) -> Result<[u8; RECORD_HEADER], WalError> {
    let len = u32::try_from(payload.len()).map_err(|_| WalError::TooLarge(payload.len()))?;
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

/// Whether a record with a payload of `n` bytes fits under the cap `max` after `total` bytes.
pub fn fits(total: u64, n: usize, max: u64) -> bool {
    total.saturating_add((n as u64).saturating_add(RECORD_HEADER as u64)) <= max
}

/// Adds one record to `group`, a group being built for [`WalWriter::set_group`].
pub fn append_record(group: &mut Vec<u8>, kind: Kind, received_ms: i64, payload: &[u8]) -> Result<(), WalError> {
    let head = record_header(kind, received_ms, payload)?;
    group.extend_from_slice(&head);
    group.extend_from_slice(payload);
    Ok(())
}

fn header() -> Vec<u8> {
    header_of(WAL_VERSION)
}

fn header_of(version: &str) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(format!("v{version:>3}\n").as_bytes());
    h
}

/// The segment being appended to, plus the sealed ones still needed.
///
/// A group's records are buffered here, not in the file, until [`WalWriter::commit`] writes
/// them at the end of what is committed and syncs: a failed write or sync cuts the file back to
/// that end, and the next group starts there with nothing left over from the failed one.
///
/// When groups are synced, they are written around the page cache (`O_DIRECT`) where the
/// filesystem allows it: the log is read only by replay, so caching it would only evict what
/// queries read, and filling fresh page-cache pages costs more than the device's own copy. A
/// direct write covers whole blocks, so it rewrites the last partial block (the same bytes) and
/// pads the new one with zeros, which replay reads as the end of the log.
#[derive(Debug)]
pub struct WalWriter {
    fs: Fs,
    dir: PathBuf,
    fsync: FsyncPolicy,
    max_bytes: u64,
    segment_bytes: u64,
    file: FsFile,
    seq: u64,
    /// Bytes committed to the active segment.
    size: u64,
    /// The current group, not yet written.
    group: Vec<u8>,
    /// The file may hold bytes past `size` (a rollback failed): cut them before writing again.
    dirty: bool,
    /// Set while writes go around the page cache.
    direct: Option<Direct>,
    sealed: Vec<Sealed>,
}

/// How a [`WalWriter`] writes.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// The file layer.
    pub fs: Fs,
    /// fsync policy.
    pub fsync: FsyncPolicy,
    /// Size cap over every segment.
    pub max_bytes: u64,
    /// A segment is sealed once it reaches this size.
    pub segment_bytes: u64,
}

impl WriterSettings {
    /// Real filesystem, default segment size.
    pub fn new(fsync: FsyncPolicy, max_bytes: u64) -> Self {
        Self { fs: Fs::real(), fsync, max_bytes, segment_bytes: SEGMENT_BYTES }
    }
}

impl WalWriter {
    /// Starts segment `seq` under `data`, after the `sealed` segments replay found.
    pub fn open(data: &Path, seq: u64, sealed: Vec<Sealed>, settings: &WriterSettings) -> Result<Self, WalError> {
        let fs = settings.fs.clone();
        let dir = wal_dir(data);
        fs.create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
        let path = segment_path(&dir, seq);
        let h = header();
        let opened = fs.create(&path).and_then(|mut f| {
            f.write_at(0, &h)?;
            f.sync_all()?;
            fs.sync_dir(&dir)?;
            Ok(f)
        });
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                // Never acknowledged into; a later attempt creates it afresh.
                let _ = std::fs::remove_file(&path);
                return Err(io("creating", &path, e));
            }
        };
        // Unsynced logs stay in the page cache: a direct write would wait for the device.
        let direct_file = (settings.fsync != FsyncPolicy::Never).then(|| fs.open_direct(&path).ok()).flatten();
        let (file, direct) = match direct_file {
            Some(d) => (d, Some(Direct { tail: h.clone(), ..Direct::default() })),
            None => (file, None),
        };
        Ok(Self {
            fs,
            dir,
            fsync: settings.fsync,
            max_bytes: settings.max_bytes,
            segment_bytes: settings.segment_bytes,
            file,
            seq,
            size: h.len() as u64,
            group: Vec::new(),
            dirty: false,
            direct,
            sealed,
        })
    }

    fn settings(&self) -> WriterSettings {
        WriterSettings {
            fs: self.fs.clone(),
            fsync: self.fsync,
            max_bytes: self.max_bytes,
            segment_bytes: self.segment_bytes,
        }
    }

    /// Bytes of every segment on disk, plus the group being built.
    pub fn total_bytes(&self) -> u64 {
        self.size + self.group.len() as u64 + self.sealed.iter().map(|s| s.bytes).sum::<u64>()
    }

    /// Segments on disk.
    pub fn segments(&self) -> usize {
        self.sealed.len() + 1
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether the size cap leaves room for `n` more bytes.
    pub fn has_room(&self, n: usize) -> bool {
        fits(self.total_bytes(), n, self.max_bytes)
    }

    /// The size cap over every segment.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    #[cfg(any(test, feature = "internals"))]
    /// Adds one record to the current group (nothing is written until [`WalWriter::commit`]).
    pub fn append(&mut self, kind: Kind, received_ms: i64, payload: &[u8]) -> Result<(), WalError> {
        append_record(&mut self.group, kind, received_ms, payload)
    }

    /// Adds records built with [`append_record`] to the current group.
    pub fn set_group(&mut self, records: Vec<u8>) {
        if self.group.is_empty() {
            self.group = records;
        } else {
            self.group.extend_from_slice(&records);
        }
    }

    /// An empty buffer to build the next group in: the last group's, once committed (and not
    /// oversized, so one huge group does not pin its memory).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        if !self.group.is_empty() {
            return Vec::new();
        }
        let b = std::mem::take(&mut self.group);
        if b.capacity() > KEEP_BUFFER { Vec::new() } else { b }
    }

    /// Writes the group after the committed bytes and syncs it (`always`: data and metadata;
    /// `batch`: data). On any failure the group is discarded and the file cut back to where it
    /// started, so nothing that is not acknowledged stays in the log.
    pub fn commit(&mut self) -> Result<(), WalError> {
        let path = segment_path(&self.dir, self.seq);
        if self.dirty
            && let Err(e) = self.rollback()
        {
            self.group.clear();
            return Err(io("cutting a failed group from", &path, e));
        }
        if self.group.is_empty() {
            return Ok(());
        }
        let written = self.write_group().and_then(|()| match self.fsync {
            FsyncPolicy::Always => self.file.sync_all(),
            FsyncPolicy::Batch => self.file.sync_data(),
            FsyncPolicy::Never => Ok(()),
        });
        let n = self.group.len() as u64;
        self.group.clear();
        match written {
            Ok(()) => {
                self.size += n;
                if let Some(d) = self.direct.as_mut() {
                    std::mem::swap(&mut d.tail, &mut d.next_tail);
                    if d.staging.len() * BLOCK > KEEP_BUFFER {
                        d.staging = Vec::new();
                    }
                }
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                if let Err(cut) = self.rollback() {
                    tracing::error!(error = %cut, "could not cut a failed WAL group yet; the next group tries first");
                }
                Err(io("writing", &path, e))
            }
        }
    }

    /// Writes the group after the committed bytes (not synced).
    fn write_group(&mut self) -> std::io::Result<()> {
        let Some(d) = self.direct.as_mut() else { return self.file.write_at(self.size, &self.group) };
        let start = self.size - d.tail.len() as u64;
        let used = d.tail.len() + self.group.len();
        let blocks = used.div_ceil(BLOCK);
        if d.staging.len() < blocks {
            d.staging.resize(blocks, Block([0; BLOCK]));
        }
        let buf = zerocopy::IntoBytes::as_mut_bytes(&mut d.staging[..blocks]);
        buf[..d.tail.len()].copy_from_slice(&d.tail);
        buf[d.tail.len()..used].copy_from_slice(&self.group);
        buf[used..].fill(0);
        d.next_tail.clear();
        d.next_tail.extend_from_slice(&buf[used - used % BLOCK..used]);
        match self.file.write_at(start, buf) {
            // The device's block is larger than ours: write through the page cache from now on.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::warn!(segment = %self.file.path().display(), error = %e, "direct WAL writes refused; writing through the page cache");
                self.direct = None;
                self.file = self.fs.open_rw(&segment_path(&self.dir, self.seq))?;
                self.file.write_at(self.size, &self.group)
            }
            r => r,
        }
    }

    /// Cuts the active segment back to its committed bytes.
    fn rollback(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.size)?;
        if self.fsync != FsyncPolicy::Never {
            self.file.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Whether the active segment has reached its size and should be sealed.
    pub fn due_for_rotation(&self) -> bool {
        self.size >= self.segment_bytes
    }

    /// Sequence number of the active segment.
    pub fn active_seq(&self) -> u64 {
        self.seq
    }

    /// Seals the active segment and opens the next one. On failure the active segment stays
    /// active.
    pub fn rotate(&mut self) -> Result<(), WalError> {
        self.commit()?;
        let data = self.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let next = Self::open(&data, self.seq + 1, Vec::new(), &self.settings())?;
        let sealed = Sealed { seq: self.seq, bytes: self.size };
        let mut sealed_list = std::mem::take(&mut self.sealed);
        sealed_list.push(sealed);
        *self = Self { sealed: sealed_list, ..next };
        Ok(())
    }

    /// Drops the sealed segments before `seq` (a checkpoint holds what they logged), with the
    /// cumulative-stream state files version 1 left beside them. Returns how many.
    pub fn drop_before(&mut self, seq: u64) -> Result<usize, WalError> {
        let n = self.sealed.iter().take_while(|s| s.seq < seq).count();
        for s in self.sealed.drain(..n) {
            let p = segment_path(&self.dir, s.seq);
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("removing", &p, e)),
            }
            let old = state_path(&self.dir, s.seq);
            if old.exists() {
                std::fs::remove_file(&old).map_err(|e| io("removing", &old, e))?;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellpilot_core::fs::Faults;
    use std::io::Write;

    fn settings(fsync: FsyncPolicy) -> WriterSettings {
        WriterSettings::new(fsync, 1 << 30)
    }

    #[test]
    fn records_round_trip_and_torn_tails_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 7, vec![], &settings(FsyncPolicy::Batch)).unwrap();
        w.append(Kind::Traces, 11, b"first").unwrap();
        w.append(Kind::Metrics, 12, b"second").unwrap();
        w.commit().unwrap();
        drop(w);
        let path = segment_path(&wal_dir(dir.path()), 7);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let read = read_segment(&Fs::real(), dir.path(), 7, true).unwrap();
        assert_eq!(read.records.len(), 2);
        assert!(read.damage.is_none(), "a torn tail of the active segment is no damage");
        assert_eq!(
            (read.records[1].kind, read.records[1].received_ms, read.records[1].payload.as_slice()),
            (Kind::Metrics, 12, &b"second"[..])
        );
        let again = read_segment(&Fs::real(), dir.path(), 7, false).unwrap();
        assert_eq!((again.records.len(), again.damage), (2, None), "the tail was cut once");
        assert_eq!(list_segments(dir.path()).unwrap(), vec![7]);
    }

    #[test]
    fn groups_across_block_boundaries_read_back_whole_and_the_padding_is_no_damage() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 1, vec![], &settings(FsyncPolicy::Batch)).unwrap();
        // Records ending just before, at and after block boundaries; groups of one and of many.
        let sizes = [1, BLOCK - 2 * RECORD_HEADER - 10, BLOCK, 3 * BLOCK + 5, 0, 70_000, 2, BLOCK - RECORD_HEADER];
        let payloads: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8 + 1; n]).collect();
        for (i, group) in payloads.chunks(3).enumerate() {
            for p in group {
                w.append(Kind::Traces, i as i64, p).unwrap();
            }
            w.commit().unwrap();
        }
        let committed = w.size;
        // A crash: the last block's padding stays in the file.
        drop(w);
        let path = segment_path(&wal_dir(dir.path()), 1);
        let on_disk = std::fs::metadata(&path).unwrap().len();
        assert!(on_disk == committed || on_disk == committed.div_ceil(BLOCK as u64) * BLOCK as u64);
        for active in [true, false] {
            let read = read_segment(&Fs::real(), dir.path(), 1, active).unwrap();
            let got: Vec<Vec<u8>> = read.records.into_iter().map(|r| r.payload).collect();
            assert_eq!(got, payloads);
            assert!(read.damage.is_none());
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), committed, "the padding is cut");
        assert!(!quarantine_dir(dir.path()).exists(), "padding is not a torn tail");
        // The next segment (opened after replay) takes direct appends again, synced in full.
        let mut w = WalWriter::open(dir.path(), 2, vec![], &settings(FsyncPolicy::Always)).unwrap();
        w.append(Kind::Logs, 9, b"after").unwrap();
        w.commit().unwrap();
        w.append(Kind::Logs, 10, b"again").unwrap();
        w.commit().unwrap();
        let read = read_segment(&Fs::real(), dir.path(), 2, true).unwrap();
        assert_eq!(read.records.iter().map(|r| r.payload.as_slice()).collect::<Vec<_>>(), [&b"after"[..], b"again"]);
    }

    #[test]
    fn damage_in_a_sealed_segment_moves_the_rest_to_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 3, vec![], &settings(FsyncPolicy::Never)).unwrap();
        for p in [&b"one"[..], b"two", b"three"] {
            w.append(Kind::Traces, 1, p).unwrap();
        }
        w.commit().unwrap();
        drop(w);
        let path = segment_path(&wal_dir(dir.path()), 3);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = header().len() + RECORD_HEADER + 3;
        bytes[second + RECORD_HEADER] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();

        let read = read_segment(&Fs::real(), dir.path(), 3, false).unwrap();
        assert_eq!(read.records.len(), 1);
        let damage = read.damage.expect("reported");
        assert!(damage.contains(&format!("byte {second}")), "{damage}");
        let kept = quarantine_dir(dir.path()).join(format!("{:020}-at-{second:010}.rest", 3));
        assert_eq!(std::fs::read(kept).unwrap(), bytes[second..], "nothing is destroyed");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), second as u64);
    }

    #[test]
    fn a_failed_group_leaves_nothing_and_the_next_starts_clean() {
        // op 1 fails the write (half of it lands), op 2 the sync; a sticky plan (a full disk)
        // fails the next group too.
        for (op, sticky) in [(1, false), (2, false), (1, true), (2, true)] {
            let dir = tempfile::tempdir().unwrap();
            let faults = Faults::disarmed(sticky);
            let mut s = settings(FsyncPolicy::Batch);
            s.fs = Fs::faulty(faults.clone());
            let mut w = WalWriter::open(dir.path(), 0, vec![], &s).unwrap();
            w.append(Kind::Traces, 1, b"acked").unwrap();
            w.commit().unwrap();
            faults.arm(op);
            w.append(Kind::Traces, 2, b"refused-refused-refused").unwrap();
            assert!(w.commit().is_err());
            if sticky {
                w.append(Kind::Traces, 3, b"refused too").unwrap();
                assert!(w.commit().is_err(), "a full disk fails every group");
                faults.disarm();
            }
            if op == 1 && !sticky {
                // As if the rollback had failed too: the next group cuts the leftover first.
                w.dirty = true;
                let path = segment_path(&wal_dir(dir.path()), 0);
                std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"leftover").unwrap();
            }
            w.append(Kind::Traces, 4, b"next").unwrap();
            w.commit().unwrap();
            drop(w);
            let read = read_segment(&Fs::real(), dir.path(), 0, false).unwrap();
            let payloads: Vec<_> = read.records.iter().map(|r| r.payload.as_slice()).collect();
            assert_eq!(payloads, [&b"acked"[..], b"next"], "op {op}, sticky {sticky}");
            assert!(read.damage.is_none());
        }
    }

    #[test]
    fn rotation_seals_and_dropping_keeps_what_a_checkpoint_needs() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = WalWriter::open(dir.path(), 0, vec![], &settings(FsyncPolicy::Never)).unwrap();
        w.append(Kind::Spans, 1, b"a").unwrap();
        w.rotate().unwrap();
        w.append(Kind::Traces, 2, b"b").unwrap();
        w.rotate().unwrap();
        assert_eq!((w.segments(), w.active_seq()), (3, 2));
        // A version 1 segment's cumulative-stream state goes with it.
        std::fs::write(state_path(&wal_dir(dir.path()), 0), b"{}").unwrap();
        assert_eq!(w.drop_before(1).unwrap(), 1);
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2]);
        assert_eq!(load_state(dir.path(), 0).unwrap(), None);
        assert_eq!(w.drop_before(1).unwrap(), 0);
        let read = read_segment(&Fs::real(), dir.path(), 1, false).unwrap();
        assert_eq!((read.records[0].kind, read.records[0].payload.as_slice()), (Kind::Traces, &b"b"[..]));
        assert!(!w.has_room(usize::MAX >> 1));
        // An empty active segment seals too (every checkpoint takes a fresh number).
        w.rotate().unwrap();
        assert_eq!((w.segments(), w.active_seq()), (3, 3));
        assert!(read_segment(&Fs::real(), dir.path(), 2, false).unwrap().records.is_empty());
    }

    #[test]
    fn version_1_segments_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header_of("1");
        bytes.extend_from_slice(&record_header(Kind::Traces, 5, b"old").unwrap());
        bytes.extend_from_slice(b"old");
        std::fs::create_dir_all(wal_dir(dir.path())).unwrap();
        std::fs::write(segment_path(&wal_dir(dir.path()), 3), &bytes).unwrap();
        let read = read_segment(&Fs::real(), dir.path(), 3, false).unwrap();
        assert_eq!(read.records[0].payload, b"old");
        let mut other = header_of("9");
        other.extend_from_slice(b"x");
        std::fs::write(segment_path(&wal_dir(dir.path()), 4), &other).unwrap();
        assert!(matches!(read_segment(&Fs::real(), dir.path(), 4, false), Err(WalError::OtherVersion(_))));
    }
}
