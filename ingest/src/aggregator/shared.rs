//! [`SharedAggregator`]: the aggregator behind a mutex, for the receivers, the closer task and
//! open-window queries; and the cumulative-stream state WAL checkpoints save.

use super::{Aggregator, rows::to_batches};
use crate::delta::DeltaTracker;
use cellpilot_core::store::{OpenWindowSource, WindowBatches};
use std::sync::{Arc, Mutex, MutexGuard};

/// The aggregator shared by receivers, the closer and queries.
#[derive(Debug, Clone)]
pub struct SharedAggregator {
    inner: Arc<Mutex<Aggregator>>,
    width_ms: i64,
}

impl SharedAggregator {
    /// Wraps `agg`.
    pub fn new(agg: Aggregator) -> Self {
        let width_ms = agg.settings.spec.width_ms;
        Self { inner: Arc::new(Mutex::new(agg)), width_ms }
    }

    /// Locks the state; a panic elsewhere while holding it leaves consistent counters, so poison is ignored.
    pub fn lock(&self) -> MutexGuard<'_, Aggregator> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the windows closed at `now_ms` and builds their rows (outside the lock).
    pub fn close_due(&self, now_ms: i64) -> cellpilot_core::Result<Option<WindowBatches>> {
        let closed = self.lock().close_due(now_ms);
        if closed.is_empty() {
            return Ok(None);
        }
        to_batches(closed, self.width_ms).map(Some)
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

// Cumulative-stream state, for WAL checkpoints.
impl Aggregator {
    /// Serialized cumulative-stream state.
    pub fn delta_state(&self) -> Vec<u8> {
        self.deltas.to_bytes()
    }

    /// Restores cumulative-stream state saved by [`Aggregator::delta_state`].
    pub fn restore_delta_state(&mut self, bytes: &[u8]) -> Result<(), crate::delta::CheckpointError> {
        self.deltas = DeltaTracker::from_bytes(bytes)?;
        Ok(())
    }
}
