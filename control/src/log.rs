//! The decision log: every decision appended as a JSON line under `<dir>/control/`, replayed on
//! start so states and versions survive restarts (versions never go backwards).

use crate::policy::Decision;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// Append-only decisions file.
#[derive(Debug)]
pub struct DecisionLog {
    path: PathBuf,
    file: File,
}

impl DecisionLog {
    /// Opens (creating) the log under `data_dir` and returns it with every decision it holds.
    pub fn open(data_dir: &Path) -> Result<(Self, Vec<Decision>), String> {
        let dir = data_dir.join("control");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("decisions.jsonl");
        let mut decisions = Vec::new();
        if let Ok(f) = File::open(&path) {
            for (n, line) in BufReader::new(f).lines().enumerate() {
                let line = line.map_err(|e| format!("reading {}: {e}", path.display()))?;
                match serde_json::from_str::<Decision>(&line) {
                    Ok(d) => decisions.push(d),
                    // A torn last line from a crash mid-append.
                    Err(e) => tracing::warn!(line = n + 1, error = %e, "skipping an unreadable decision"),
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))?;
        Ok((Self { path, file }, decisions))
    }

    /// Appends and syncs decisions.
    pub fn append(&mut self, decisions: &[Decision]) -> Result<(), String> {
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
