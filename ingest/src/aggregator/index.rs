//! The aggregator's index: shared names, error causes, cells holding one of the `max_cells`
//! slots (with when each last saw a request), and series by cell × service × route — each
//! bounded, folding into `__overflow__` past its cap.

use super::{Activity, Aggregator, MAX_CAUSES, Series, SeriesId, SeriesKey, WindowAgg};
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
    ///
    /// `cell` is a shared name (from [`Aggregator::admit_cell`] or [`Aggregator::name`]): the
    /// index knows series by their names' addresses.
    pub(super) fn series_id(&mut self, cell: &Arc<str>, service: &str, route: &str) -> (SeriesId, bool) {
        if let Some(id) = self.find_series(cell, service, route) {
            return (id, false);
        }
        if self.live < self.settings.max_series {
            return (self.insert_series(cell, service, route), false);
        }
        if let Some(id) = self.find_series(cell, service, OVERFLOW_ROUTE) {
            return (id, true);
        }
        if self.live < self.settings.max_series + self.settings.max_cells {
            return (self.insert_series(cell, service, OVERFLOW_ROUTE), true);
        }
        match self.find_series(cell, OVERFLOW, OVERFLOW) {
            Some(id) => (id, true),
            None => (self.insert_series(cell, OVERFLOW, OVERFLOW), true),
        }
    }

    /// The live series of (cell, service, route), by name: a series holds its names, so a name
    /// missing from the shared ones has no series.
    pub(super) fn find_series(&self, cell: &Arc<str>, service: &str, route: &str) -> Option<SeriesId> {
        let service = self.names.get(service)?;
        let route = self.names.get(route)?;
        self.index.get(&series_key(cell, service, route)).copied()
    }

    /// The address of the shared copy of `name` (string `id` of a batch or request), if any
    /// series, cell or service holds one (nothing is added), remembered in `addrs` once found.
    pub(super) fn addr_of(&self, addrs: &mut [usize], id: u32, name: &str) -> Option<usize> {
        let a = &mut addrs[id as usize];
        if *a == 0 {
            *a = self.names.get(name).map_or(0, name_addr);
        }
        (*a != 0).then_some(*a)
    }

    pub(super) fn insert_series(&mut self, cell: &Arc<str>, service: &str, route: &str) -> SeriesId {
        let s =
            Series { cell: cell.clone(), service: self.name(service), route: self.name(route), windows: Vec::new() };
        let key = series_key(&s.cell, &s.service, &s.route);
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
        self.index.insert(key, id);
        self.live += 1;
        if let Some(c) = self.cells.get_mut(&**cell) {
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

/// Where a shared name lives: while a series holds its names, each is the one shared copy of
/// its string, so the address identifies the string.
pub(super) fn name_addr(name: &Arc<str>) -> usize {
    Arc::as_ptr(name).cast::<u8>().addr()
}

/// The index key of a series: the addresses of its shared names.
pub(super) fn series_key(cell: &Arc<str>, service: &Arc<str>, route: &Arc<str>) -> SeriesKey {
    SeriesKey([name_addr(cell), name_addr(service), name_addr(route)])
}
