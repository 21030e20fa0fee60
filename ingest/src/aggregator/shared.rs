//! [`SharedAggregator`]: the aggregator behind a mutex, for the receivers, the closer task and
//! open-window queries; and what a checkpoint takes from it: the state, and the rows of the
//! windows closed since the last checkpoint.

use super::{Aggregator, rows::to_batches};
use cellpilot_core::store::{OpenWindowSource, WindowBatches};
use std::sync::{Arc, Mutex, MutexGuard};

/// The aggregator shared by receivers, the closer and queries.
#[derive(Debug, Clone)]
pub struct SharedAggregator {
    inner: Arc<Mutex<Aggregator>>,
    width_ms: i64,
    /// Held across a whole close (taking windows out and building their rows), so a checkpoint
    /// finds every window in the aggregator or in the rows closed since, never in neither.
    closed: Arc<Mutex<Closed>>,
}

/// Rows of windows closed since the last checkpoint took them.
#[derive(Debug, Default)]
struct Closed {
    /// Set once checkpoints are taken (otherwise nothing would ever take the rows).
    keep: bool,
    rows: Vec<WindowBatches>,
}

impl SharedAggregator {
    /// Wraps `agg`.
    pub fn new(agg: Aggregator) -> Self {
        let width_ms = agg.settings.spec.width_ms;
        Self { inner: Arc::new(Mutex::new(agg)), width_ms, closed: Arc::default() }
    }

    /// Locks the state; a panic elsewhere while holding it leaves consistent counters, so poison is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Aggregator> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_closed(&self) -> MutexGuard<'_, Closed> {
        self.closed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the windows closed at `now_ms` and builds their rows (outside the aggregator's lock).
    pub fn close_due(&self, now_ms: i64) -> cellpilot_core::Result<Option<WindowBatches>> {
        let mut kept = self.lock_closed();
        let closed = self.lock().close_due(now_ms);
        if closed.is_empty() {
            return Ok(None);
        }
        let rows = to_batches(closed, self.width_ms)?;
        if kept.keep {
            kept.rows.push(rows.clone());
        }
        Ok(Some(rows))
    }

    /// From now on, keeps the rows of closed windows for [`SharedAggregator::checkpoint`].
    pub fn keep_closed(&self) {
        self.lock_closed().keep = true;
    }

    /// The state as bytes ([`Aggregator::checkpoint`]) and the rows of the windows closed since
    /// the last call, taken at one instant.
    pub fn checkpoint(&self) -> (Vec<u8>, Vec<WindowBatches>) {
        let mut kept = self.lock_closed();
        let mut state = Vec::new();
        self.lock().checkpoint(&mut state);
        (state, std::mem::take(&mut kept.rows))
    }
}

impl cellpilot_core::store::CellActivity for SharedAggregator {
    fn latest_request(&self, cell: &str) -> Option<(i64, i64)> {
        self.lock().activity(cell).map(|a| (a.latest_start_ms, a.arrived_ms))
    }
}

impl OpenWindowSource for SharedAggregator {
    fn open_windows(&self, from_ms: i64, to_ms: i64) -> cellpilot_core::Result<WindowBatches> {
        let rows = self.lock().snapshot(from_ms, to_ms);
        to_batches(rows, self.width_ms)
    }
}
