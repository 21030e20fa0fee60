//! The control logs: decisions and finished cut-overs appended as JSON lines under
//! `<dir>/control/`, read back on start so states, versions and history survive restarts
//! (versions never go backwards).

use crate::error::{Error, Result};
use crate::policy::Decision;
use cellpilot_core::fs::{Fs, FsFile};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// An append-only JSON-lines file of `T`.
#[derive(Debug)]
pub(crate) struct JsonLog<T> {
    file: FsFile,
    /// Bytes of complete lines; appends go here and a failed one is cut back to it.
    len: u64,
    /// Rows a failed append could not write (what they record did happen): written first by
    /// the next append.
    unwritten: Vec<u8>,
    _rows: std::marker::PhantomData<T>,
}

/// Most bytes of rows kept for a retry while the disk refuses them.
const MAX_UNWRITTEN: usize = 16 << 20;

/// The decisions log.
pub(crate) type DecisionLog = JsonLog<Decision>;

impl<T: Serialize + DeserializeOwned> JsonLog<T> {
    /// Opens (creating) `<data_dir>/control/<name>` and returns it with every row it holds.
    pub(crate) fn open(data_dir: &Path, name: &str) -> Result<(Self, Vec<T>)> {
        Self::open_with(&Fs::real(), data_dir, name)
    }

    /// [`JsonLog::open`] through `fs`. A torn last line (a crash mid-append: no newline) is cut
    /// off, so the next row starts on a line of its own instead of being glued to it.
    pub(crate) fn open_with(fs: &Fs, data_dir: &Path, name: &str) -> Result<(Self, Vec<T>)> {
        let dir = data_dir.join("control");
        fs.create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let path = dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut rows = Vec::new();
        for (n, line) in bytes[..complete].split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<T>(line) {
                Ok(d) => rows.push(d),
                Err(e) => {
                    tracing::warn!(file = %path.display(), line = n + 1, error = %cellpilot_core::status::Chain(&e), "skipping an unreadable line")
                }
            }
        }
        let mut file = fs.open_rw(&path).map_err(|e| Error::io("opening", &path, e))?;
        if complete < bytes.len() {
            tracing::warn!(file = %path.display(), bytes = bytes.len() - complete, "cutting a torn last line");
            file.set_len(complete as u64)
                .and_then(|()| file.sync_data())
                .map_err(|e| Error::io("repairing", &path, e))?;
        }
        Ok((Self { file, len: complete as u64, unwritten: Vec::new(), _rows: std::marker::PhantomData }, rows))
    }

    /// Appends and syncs rows, after any a failed append left: all of them, or (on a failed
    /// write or sync) none, kept for the next append.
    pub(crate) fn append(&mut self, rows: &[T]) -> Result<()> {
        let mut buf = std::mem::take(&mut self.unwritten);
        for d in rows {
            serde_json::to_writer(&mut buf, d)?;
            buf.push(b'\n');
        }
        let written = self.file.write_at(self.len, &buf).and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut what did land; if that fails too, the next open drops the torn line.
                let _ = self.file.set_len(self.len);
                if buf.len() <= MAX_UNWRITTEN {
                    self.unwritten = buf;
                } else {
                    tracing::error!(file = %self.file.path().display(), bytes = buf.len(), "dropping unwritten rows");
                }
                Err(Error::io("writing", self.file.path(), e))
            }
        }
    }
}

/// Decisions as rows of the `decisions` table.
pub(crate) fn to_batch(decisions: &[Decision]) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array};
    use std::sync::Arc;
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from_iter_values(decisions.iter().map(|d| d.decided_at_ms)).with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values(decisions.iter().map(|d| d.version))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.cell.as_str()))),
        Arc::new(UInt32Array::from_iter_values(decisions.iter().map(|d| d.old_weight))),
        Arc::new(UInt32Array::from_iter_values(decisions.iter().map(|d| d.new_weight))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.state.as_str()))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.reason.as_str()))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.actor.as_str()))),
    ];
    arrow::record_batch::RecordBatch::try_new(cellpilot_core::schema::decisions_schema(), cols)
}

/// Cut-overs as rows of the `cutovers` table.
pub(crate) fn cutovers_batch(
    rows: &[crate::cutover::Cutover],
) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMillisecondArray, UInt64Array};
    use std::sync::Arc;
    let ts = |f: &dyn Fn(&crate::cutover::Cutover) -> Option<i64>| -> ArrayRef {
        Arc::new(TimestampMillisecondArray::from(rows.iter().map(f).collect::<Vec<_>>()).with_timezone("UTC"))
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|c| c.cell.as_str()))),
        Arc::new(UInt64Array::from(rows.iter().map(|c| c.decision_version).collect::<Vec<_>>())),
        ts(&|c| Some(c.decided_at_ms)),
        ts(&|c| c.applied_at_ms),
        ts(&|c| c.completed_at_ms),
        Arc::new(Int64Array::from(rows.iter().map(|c| c.duration_ms).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|c| c.source.as_str()))),
    ];
    arrow::record_batch::RecordBatch::try_new(cellpilot_core::schema::cutovers_schema(), cols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellpilot_core::fs::Faults;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Row {
        n: u32,
    }

    #[test]
    fn enum_names_are_their_serialized_names() {
        use crate::cutover::Source;
        use crate::policy::State;
        for s in [State::Active, State::Drained, State::Restoring, State::Pinned] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in [Source::Observed, Source::Reported] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn a_torn_last_line_is_cut_and_failed_appends_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, rows) = JsonLog::<Row>::open(dir.path(), "t.jsonl").unwrap();
        assert!(rows.is_empty());
        log.append(&[Row { n: 1 }, Row { n: 2 }]).unwrap();
        drop(log);
        let path = dir.path().join("control").join("t.jsonl");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"n\":");
        std::fs::write(&path, &bytes).unwrap();

        let faults = Faults::disarmed(false);
        let (mut log, rows) = JsonLog::<Row>::open_with(&Fs::faulty(faults.clone()), dir.path(), "t.jsonl").unwrap();
        assert_eq!(rows, [Row { n: 1 }, Row { n: 2 }]);
        for op in [1, 2] {
            faults.arm(op);
            assert!(log.append(&[Row { n: 99 }]).is_err(), "op {op}");
        }
        log.append(&[Row { n: 3 }]).unwrap();
        drop(log);
        let (_, rows) = JsonLog::<Row>::open(dir.path(), "t.jsonl").unwrap();
        let want = [1, 2, 99, 99, 3].map(|n| Row { n });
        assert_eq!(rows, want, "glued to nothing; rows that failed once are written by the next append");
    }
}
