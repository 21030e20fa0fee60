//! The write path of the store: closed windows in, complete buckets out to Parquet (cascading
//! to the coarser tiers), retention applied.

use super::{RollupStore, idx, split, starts};
use crate::Result;
use crate::files::{self, Table};
use crate::rollup;
use crate::tier::Tier;
use arrow::record_batch::RecordBatch;
use cellpilot_core::store::{RollupSink, WindowBatches};

impl super::TierState {
    /// Keeps the rows of closed windows until their bucket is written.
    fn push_closed(&mut self, closed: WindowBatches) {
        if closed.rollups.num_rows() > 0 {
            self.pending_rollups.push(closed.rollups);
        }
        if closed.errors_by_cause.num_rows() > 0 {
            self.pending_errors.push(closed.errors_by_cause);
        }
    }
}

impl RollupStore {
    /// Writes every bucket that is complete at `now_ms` to Parquet, cascading to coarser tiers,
    /// and applies retention.
    fn flush_due(&self, now_ms: i64) -> Result<()> {
        for tier in Tier::ALL {
            loop {
                let bucket = self.next_due_bucket(tier, now_ms)?;
                let Some(start) = bucket else { break };
                self.flush_bucket(tier, start)?;
            }
        }
        self.expire(now_ms)
    }

    /// The earliest bucket of `tier` with pending rows whose end + lateness has passed.
    fn next_due_bucket(&self, tier: Tier, now_ms: i64) -> Result<Option<i64>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let t = &state.tiers[idx(tier)];
        let bucket = tier.bucket_ms();
        let mut earliest: Option<i64> = None;
        for b in t.pending_rollups.iter().chain(&t.pending_errors) {
            if let Some(min) = arrow::compute::min(starts(b)?) {
                let start = min - min.rem_euclid(bucket);
                earliest = Some(earliest.map_or(start, |e| e.min(start)));
            }
        }
        Ok(earliest.filter(|s| s + bucket + self.settings.lateness_ms <= now_ms))
    }

    fn flush_bucket(&self, tier: Tier, start: i64) -> Result<()> {
        let end = start + tier.bucket_ms();
        let (rows, errs) = {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            let t = &state.tiers[idx(tier)];
            (split(&t.pending_rollups, start, end)?.0, split(&t.pending_errors, start, end)?.0)
        };
        let concat = |b: &[RecordBatch], table: Table| -> Result<Option<RecordBatch>> {
            if b.is_empty() {
                return Ok(None);
            }
            Ok(Some(arrow::compute::concat_batches(&files::schema(table), b)?))
        };
        let storage = &self.settings.storage;
        let rollups_file = match concat(&rows, Table::Rollups)? {
            Some(b) => Some(storage.write(Table::Rollups, tier, start, end, &b)?),
            None => None,
        };
        let errors_file = match concat(&errs, Table::ErrorsByCause)? {
            Some(b) => Some(storage.write(Table::ErrorsByCause, tier, start, end, &b)?),
            None => None,
        };
        let coarse = tier.coarser().map(|c| -> Result<_> {
            let w = c.width_ms(self.settings.fine_ms);
            Ok((c, rollup::rollups(&rows, w)?, rollup::errors_by_cause(&errs, w)?))
        });
        let coarse = coarse.transpose()?;
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let t = &mut state.tiers[idx(tier)];
        t.pending_rollups = split(&t.pending_rollups, start, end)?.1;
        t.pending_errors = split(&t.pending_errors, start, end)?.1;
        t.rollups_files.extend(rollups_file);
        t.errors_files.extend(errors_file);
        t.persisted_until = t.persisted_until.max(end);
        if let Some((c, r, e)) = coarse {
            let ct = &mut state.tiers[idx(c)];
            ct.pending_rollups.extend(r);
            ct.pending_errors.extend(e);
        }
        tracing::debug!(tier = %tier, start, rows = rows.iter().map(|b| b.num_rows()).sum::<usize>(), "bucket persisted");
        Ok(())
    }

    fn expire(&self, now_ms: i64) -> Result<()> {
        {
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if now_ms - state.last_expiry_ms < 60_000 {
                return Ok(());
            }
            state.last_expiry_ms = now_ms;
            for tier in Tier::ALL {
                let horizon = now_ms - self.settings.retention_ms[idx(tier)];
                let t = &mut state.tiers[idx(tier)];
                let dropped = t.rollups_files.iter().chain(&t.errors_files).filter(|f| f.end_ms <= horizon);
                t.dropped_until = dropped.map(|f| f.end_ms).fold(t.dropped_until, i64::max);
                t.rollups_files.retain(|f| f.end_ms > horizon);
                t.errors_files.retain(|f| f.end_ms > horizon);
            }
            let retention = self.settings.retention_ms;
            state.remote.expire(|tier| now_ms - retention[idx(tier)]);
        }
        let n = self.settings.storage.expire(|tier| now_ms - self.settings.retention_ms[idx(tier)])?;
        if n > 0 {
            tracing::info!(files = n, "expired by retention");
        }
        Ok(())
    }

    /// Adds rows of closed windows directly (used by `cellpilot generate` and tests).
    pub fn add_closed(&self, closed: WindowBatches) {
        self.state.write().unwrap_or_else(|e| e.into_inner()).tiers[0].push_closed(closed);
    }
}

impl RollupSink for RollupStore {
    fn close(
        &self,
        now_ms: i64,
        take: &mut dyn FnMut() -> cellpilot_core::Result<Option<WindowBatches>>,
    ) -> cellpilot_core::Result<()> {
        let _flushing = self.flush.lock().unwrap_or_else(|e| e.into_inner());
        {
            // Taking the windows under the store lock keeps readers from seeing them in neither place.
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if let Some(closed) = take()? {
                state.tiers[0].push_closed(closed);
            }
        }
        self.flush_due(now_ms)
            .map_err(|e| cellpilot_core::error::Internal::caused("persisting closed windows", e).into())
    }

    fn restore(&self, closed: WindowBatches) {
        self.add_closed(closed);
    }

    fn persisted_until(&self) -> i64 {
        RollupStore::persisted_until(self)
    }
}
