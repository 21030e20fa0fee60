//! The control logs: decisions and finished cut-overs appended as JSON lines under
//! `<dir>/control/`, read back on start so states, versions and history survive restarts
//! (versions never go backwards).

use crate::policy::Decision;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// An append-only JSON-lines file of `T`.
#[derive(Debug)]
pub struct JsonLog<T> {
    path: PathBuf,
    file: File,
    _rows: std::marker::PhantomData<T>,
}

/// The decisions log.
pub type DecisionLog = JsonLog<Decision>;

impl<T: Serialize + DeserializeOwned> JsonLog<T> {
    /// Opens (creating) `<data_dir>/control/<name>` and returns it with every row it holds.
    pub fn open(data_dir: &Path, name: &str) -> Result<(Self, Vec<T>), String> {
        let dir = data_dir.join("control");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(name);
        let mut decisions = Vec::new();
        if let Ok(f) = File::open(&path) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
                match serde_json::from_str::<T>(&line) {
                    Ok(d) => decisions.push(d),
                    // A torn last line from a crash mid-append.
                    Err(e) => {
                        tracing::warn!(file = %path.display(), line = n + 1, error = %e, "skipping an unreadable line")
                    }
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Ok((Self { path, file, _rows: std::marker::PhantomData }, decisions))
    }

    /// Appends and syncs rows.
    pub fn append(&mut self, decisions: &[T]) -> Result<(), String> {
        let mut buf = Vec::new();
        for d in decisions {
            serde_json::to_writer(&mut buf, d).map_err(|e| e.to_string())?;
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| format!("writing {}: {e}", self.path.display()))
    }
}

/// Decisions as rows of the `decisions` table.
pub fn to_batch(decisions: &[Decision]) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{ArrayRef, StringArray, TimestampMillisecondArray, UInt32Array, UInt64Array};
    use std::sync::Arc;
    let state = |d: &Decision| {
        serde_json::to_value(d.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    };
    let cols: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from_iter_values(decisions.iter().map(|d| d.decided_at_ms)).with_timezone("UTC"),
        ),
        Arc::new(UInt64Array::from_iter_values(decisions.iter().map(|d| d.version))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.cell.as_str()))),
        Arc::new(UInt32Array::from_iter_values(decisions.iter().map(|d| d.old_weight))),
        Arc::new(UInt32Array::from_iter_values(decisions.iter().map(|d| d.new_weight))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(state))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.reason.as_str()))),
        Arc::new(StringArray::from_iter_values(decisions.iter().map(|d| d.actor.as_str()))),
    ];
    arrow::record_batch::RecordBatch::try_new(cellpilot_core::schema::decisions_schema(), cols)
}

/// Cut-overs as rows of the `cutovers` table.
pub fn cutovers_batch(
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
        Arc::new(StringArray::from_iter_values(rows.iter().map(|c| match c.source {
            crate::cutover::Source::Observed => "observed",
            crate::cutover::Source::Reported => "reported",
        }))),
    ];
    arrow::record_batch::RecordBatch::try_new(cellpilot_core::schema::cutovers_schema(), cols)
}
