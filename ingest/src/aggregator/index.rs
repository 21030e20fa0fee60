//! The aggregator's index: shared names, error causes, cells holding one of the `max_cells`
//! slots (with when each last saw a request), and series by cell × service × route — each
//! bounded, folding into `__overflow__` past its cap.

use super::{Activity, Aggregator, MAX_CAUSES, Series, SeriesId, WindowAgg};
use cellpilot_core::{OVERFLOW, OVERFLOW_ROUTE};
use std::sync::Arc;

impl Aggregator {
    pub(super) fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.names.insert(n.clone());
        n
    }

    pub(super) fn cause_id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.cause_ids.get(s) {
            return id;
        }
        if self.causes.len() >= MAX_CAUSES && s != OVERFLOW {
            return self.cause_id(OVERFLOW);
        }
        let n: Arc<str> = Arc::from(s);
        let id = self.causes.len() as u32;
        self.causes.push(n.clone());
        self.cause_ids.insert(n, id);
        id
    }

    /// The slot name of `cell`: itself while fewer than `max_cells` are tracked, else the overflow
    /// cell (the flag).
    pub(super) fn admit_cell(&mut self, cell: &str) -> (Arc<str>, bool) {
        if let Some((name, _)) = self.cells.get_key_value(cell) {
            return (name.clone(), false);
        }
        let tracked = self.cells.len() - usize::from(self.cells.contains_key(OVERFLOW));
        let (cell, folded) = if tracked >= self.settings.max_cells { (OVERFLOW, true) } else { (cell, false) };
        let name = self.name(cell);
        self.cells.entry(name.clone()).or_default();
        (name, folded)
    }

    /// The series of (cell, service, route), created if needed; the flag says it overflowed.
    ///
    /// Past `max_series`, a new route folds into (cell, service, `__overflow__`); once those
    /// overflow series number `max_cells` more, into (cell, `__overflow__`, `__overflow__`), one
    /// per tracked cell — so live series never exceed `max_series + 2 * max_cells + 1`, and the
    /// per-cell totals the control loop reads stay right.
    pub(super) fn series_id(&mut self, cell: &str, service: &str, route: &str) -> (SeriesId, bool) {
        let mut key = std::mem::take(&mut self.key_buf);
        series_key(&mut key, cell, service, route);
        let found = self.index.get(key.as_str()).copied();
        let result = match found {
            Some(id) => (id, false),
            None if self.live >= self.settings.max_series => {
                series_key(&mut key, cell, service, OVERFLOW_ROUTE);
                match self.index.get(key.as_str()).copied() {
                    Some(id) => (id, true),
                    None if self.live < self.settings.max_series + self.settings.max_cells => {
                        (self.insert_series(&key, cell, service, OVERFLOW_ROUTE), true)
                    }
                    None => {
                        series_key(&mut key, cell, OVERFLOW, OVERFLOW);
                        match self.index.get(key.as_str()).copied() {
                            Some(id) => (id, true),
                            None => (self.insert_series(&key, cell, OVERFLOW, OVERFLOW), true),
                        }
                    }
                }
            }
            None => (self.insert_series(&key, cell, service, route), false),
        };
        self.key_buf = key;
        result
    }

    pub(super) fn insert_series(&mut self, key: &str, cell: &str, service: &str, route: &str) -> SeriesId {
        let s =
            Series { cell: self.name(cell), service: self.name(service), route: self.name(route), windows: Vec::new() };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(s);
                id
            }
            None => {
                self.series.push(Some(s));
                (self.series.len() - 1) as SeriesId
            }
        };
        self.index.insert(key.into(), id);
        self.live += 1;
        if let Some(c) = self.cells.get_mut(cell) {
            c.series += 1;
        }
        id
    }

    pub(super) fn window_mut(&mut self, id: SeriesId, start_ms: i64) -> &mut WindowAgg {
        // Every id handed out points at a live series until close_due frees it.
        let series = self.series[id as usize].as_mut().unwrap_or_else(|| unreachable!("series {id} is live"));
        let pos = match series.windows.iter().position(|w| w.start_ms == start_ms) {
            Some(p) => p,
            None => {
                series.windows.push(WindowAgg::new(start_ms));
                self.open_windows += 1;
                series.windows.len() - 1
            }
        };
        &mut series.windows[pos]
    }

    /// Notes a request of an admitted cell (see [`Aggregator::admit_cell`]).
    pub(super) fn saw(&mut self, cell: &str, start_ms: i64, now_ms: i64) {
        let Some(slot) = self.cells.get_mut(cell) else { return };
        slot.activity = Some(match slot.activity {
            Some(a) => {
                Activity { latest_start_ms: a.latest_start_ms.max(start_ms), arrived_ms: a.arrived_ms.max(now_ms) }
            }
            None => Activity { latest_start_ms: start_ms, arrived_ms: now_ms },
        });
    }

    /// When `cell` last saw a request.
    pub fn activity(&self, cell: &str) -> Option<Activity> {
        self.cells.get(cell).and_then(|c| c.activity)
    }

    /// Cells tracked (each holds one of the `max_cells` slots; the overflow cell counts too).
    pub fn tracked_cells(&self) -> usize {
        self.cells.len()
    }
}

/// The index key of a series: "cell\x1fservice\x1froute", written into `key`.
pub(super) fn series_key(key: &mut String, cell: &str, service: &str, route: &str) {
    key.clear();
    key.push_str(cell);
    key.push('\x1f');
    key.push_str(service);
    key.push('\x1f');
    key.push_str(route);
}
