//! The rollup store: closed windows kept in memory for the finest tier's retention, plus a view
//! of the windows ingest still has open, so readers see data received so far.

use crate::Result;
use arrow::array::{Array, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use cellpilot_core::schema::rollup_col;
use cellpilot_core::store::{OpenWindowSource, RollupSink, WindowBatches};
use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

/// A batch of closed windows with its time span, for pruning.
#[derive(Debug)]
struct Stored {
    /// Earliest window_start in the batch, unix ms.
    min_start_ms: i64,
    /// Latest window_end in the batch, unix ms.
    max_end_ms: i64,
    batches: WindowBatches,
}

/// Closed windows (memory) + open windows (ingest).
#[derive(Debug)]
pub struct RollupStore {
    closed: RwLock<VecDeque<Stored>>,
    open: RwLock<Option<Arc<dyn OpenWindowSource>>>,
    retention_ms: i64,
}

impl RollupStore {
    /// An empty store keeping closed windows for `retention_ms`.
    pub fn new(retention_ms: i64) -> Self {
        Self { closed: RwLock::new(VecDeque::new()), open: RwLock::new(None), retention_ms }
    }

    /// Where open windows are read from.
    pub fn set_open_source(&self, source: Arc<dyn OpenWindowSource>) {
        *self.open.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Every `rollups` batch (closed, then open) that may hold windows overlapping `[from_ms, to_ms)`.
    /// Rows must still be filtered by the caller.
    pub fn rollups(&self, from_ms: i64, to_ms: i64) -> Result<Vec<RecordBatch>> {
        Ok(self.batches(from_ms, to_ms)?.into_iter().map(|b| b.rollups).collect())
    }

    /// Like [`RollupStore::rollups`] for both tables.
    pub fn batches(&self, from_ms: i64, to_ms: i64) -> Result<Vec<WindowBatches>> {
        let mut out: Vec<WindowBatches> = self
            .closed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.min_start_ms < to_ms && s.max_end_ms > from_ms)
            .map(|s| s.batches.clone())
            .collect();
        let open = self.open.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(open) = open {
            out.push(open.open_windows(from_ms, to_ms)?);
        }
        Ok(out)
    }

    /// Drops closed batches entirely older than `now_ms - retention`.
    pub fn prune(&self, now_ms: i64) {
        let horizon = now_ms - self.retention_ms;
        self.closed.write().unwrap_or_else(|e| e.into_inner()).retain(|s| s.max_end_ms > horizon);
    }
}

fn span_of(batch: &RecordBatch) -> Option<(i64, i64)> {
    let col = |i| batch.column(i).as_any().downcast_ref::<TimestampMillisecondArray>().cloned();
    let (starts, ends) = (col(rollup_col::WINDOW_START)?, col(rollup_col::WINDOW_END)?);
    let min = arrow::compute::min(&starts)?;
    let max = arrow::compute::max(&ends)?;
    (starts.null_count() == 0).then_some((min, max))
}

impl RollupSink for RollupStore {
    fn append(&self, closed: WindowBatches) -> cellpilot_core::Result<()> {
        let Some((min_start_ms, max_end_ms)) = span_of(&closed.rollups) else {
            return Ok(());
        };
        let mut guard = self.closed.write().unwrap_or_else(|e| e.into_inner());
        guard.push_back(Stored { min_start_ms, max_end_ms, batches: closed });
        let horizon = max_end_ms - self.retention_ms;
        guard.retain(|s| s.max_end_ms > horizon);
        Ok(())
    }
}
