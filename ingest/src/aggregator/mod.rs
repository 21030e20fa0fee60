//! Window aggregation: per cell × service × route × window, request and error counts, errors by
//! cause and the latency distribution (sparse until the window closes).
//!
//! [`Aggregator`] is plain synchronous state; [`SharedAggregator`] puts it behind a mutex for the
//! receivers, the closer task and open-window queries.
//!
//! This module admits and applies observations and takes windows out; `index` holds the bounded
//! names, causes, cells and series; `rows` builds the Arrow rows; `checkpoint` the whole state
//! as bytes; `shared` the mutex, and the closed windows a checkpoint has not taken yet.

mod checkpoint;
mod index;
mod rows;
mod shared;

#[cfg(any(test, feature = "internals"))]
pub use checkpoint::RestoreError;
#[cfg(any(test, feature = "internals"))]
pub use rows::to_batches;
pub use shared::SharedAggregator;

use index::{name_addr, series_key};

use crate::batch::SpanBatch;
use crate::delta::{DeltaTracker, NoDelta};
use crate::mapping::{Buckets, NO_CAUSE, Observations, PointObs, Temporality};
use cellpilot_core::OVERFLOW;
use cellpilot_core::latency::SparseHistogram;
use cellpilot_core::window::WindowSpec;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Data more than this far ahead of the clock is rejected (API ranges stop there too).
pub use cellpilot_core::range::MAX_FUTURE_MS;
/// A service that sent spans this recently has its latency metrics ignored.
pub const SPANS_WIN_MS: i64 = 10 * 60 * 1000;
/// Cumulative streams not seen for this long are forgotten.
const STREAM_TTL_MS: i64 = 60 * 60 * 1000;
/// A cell with no live series keeps its slot (and its activity, for cut-overs) this long.
const CELL_TTL_MS: i64 = 10 * 60 * 1000;
/// Distinct error causes before new ones fold into `__overflow__` (ids are never reused).
const MAX_CAUSES: usize = 4096;
/// Not a cause id (ids stay below [`MAX_CAUSES`]).
const NO_CAUSE_ID: u32 = u32::MAX;

type SeriesId = u32;
/// A series by the addresses of its shared cell, service and route names (see [`name_addr`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeriesKey([usize; 3]);

impl std::hash::Hash for SeriesKey {
    /// One word: addresses differ in their low bits, and equality still compares all three.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let [a, b, c] = self.0;
        state.write_usize(a ^ b.rotate_left(21) ^ c.rotate_left(42));
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// Long-lived maps keyed by names clients choose: foldhash's seeded quality variant.
type NameMap<K, V> = HashMap<K, V, foldhash::quality::RandomState>;

/// One series' aggregate over one window.
#[derive(Debug, Clone, Default)]
pub struct WindowAgg {
    /// Window start, unix ms.
    start_ms: i64,
    requests: u64,
    errors: u64,
    /// Exact largest latency (the histogram only knows its bucket).
    max_us: u64,
    hist: SparseHistogram,
    /// The failed requests' latencies alone (also in `hist`), so slow successes are exact;
    /// boxed, as most windows have no failure.
    error_hist: Option<Box<SparseHistogram>>,
    /// (cause id, errors); a handful per window at most.
    causes: Vec<(u32, u64)>,
    /// False once a bucketed histogram contributed.
    exact: bool,
}

impl WindowAgg {
    fn new(start_ms: i64) -> Self {
        Self { start_ms, exact: true, ..Default::default() }
    }

    fn add_error(&mut self, cause: u32, n: u64) {
        self.errors = self.errors.saturating_add(n);
        match self.causes.iter_mut().find(|(c, _)| *c == cause) {
            Some((_, e)) => *e = e.saturating_add(n),
            None => self.causes.push((cause, n)),
        }
    }

    fn heap_bytes(&self) -> usize {
        self.hist.heap_bytes()
            + self.error_hist.as_ref().map_or(0, |h| std::mem::size_of::<SparseHistogram>() + h.heap_bytes())
            + self.causes.capacity() * std::mem::size_of::<(u32, u64)>()
    }
}

#[derive(Debug)]
struct Series {
    cell: Arc<str>,
    service: Arc<str>,
    route: Arc<str>,
    /// Open windows, usually one to four.
    windows: Vec<WindowAgg>,
}

/// A window taken out of the aggregator (closed, or copied for a query), with its names resolved.
#[derive(Debug, Clone)]
pub struct WindowRows {
    cell: Arc<str>,
    service: Arc<str>,
    route: Arc<str>,
    agg: WindowAgg,
    causes: Vec<(Arc<str>, u64)>,
}

/// A tracked cell: it holds one of the `max_cells` slots while it has series or recent requests.
#[derive(Debug, Clone, Copy, Default)]
struct CellSlot {
    /// Live series of this cell.
    series: usize,
    /// When it last saw a request.
    activity: Option<Activity>,
}

/// When a cell last saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Start of the latest request (span clock; the window start for metrics), unix ms.
    pub latest_start_ms: i64,
    /// Wall-clock ms the latest request arrived.
    pub arrived_ms: i64,
}

/// What happened to the observations of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Spans or points counted.
    pub accepted: u64,
    /// Rejected: their window had already closed.
    pub late: u64,
    /// Rejected: more than 5 min in the future.
    pub future: u64,
    /// Latency points accepted but not counted because the service sends spans.
    pub spans_preferred: u64,
    /// First points of long-running cumulative streams (counted from the next point on).
    pub baseline: u64,
    /// Cumulative points older than their stream's latest.
    pub out_of_order: u64,
    /// Observations folded into the overflow route.
    pub overflowed: u64,
    /// Observations folded into the overflow cell.
    pub cells_overflowed: u64,
    /// Replayed observations whose window is already in Parquet (not counted again).
    pub already_persisted: u64,
    /// End of the latest window anything was counted in (unix ms; `i64::MIN` when none).
    pub max_window_end_ms: i64,
}

impl Default for Outcome {
    fn default() -> Self {
        Self {
            accepted: 0,
            late: 0,
            future: 0,
            spans_preferred: 0,
            baseline: 0,
            out_of_order: 0,
            overflowed: 0,
            cells_overflowed: 0,
            already_persisted: 0,
            max_window_end_ms: i64::MIN,
        }
    }
}

/// Settings of the aggregator.
#[derive(Debug, Clone, Copy)]
pub struct AggregatorSettings {
    /// Window geometry.
    pub spec: WindowSpec,
    /// Cap on live series before new routes fold into `__overflow__`.
    pub max_series: usize,
    /// Cap on tracked cells before new cells fold into `__overflow__`.
    pub max_cells: usize,
}

impl AggregatorSettings {
    /// The settings of `[ingest]`.
    pub fn from_config(c: &cellpilot_core::config::IngestConfig) -> Self {
        Self {
            spec: WindowSpec::new(c.window.0, c.allowed_lateness.0),
            max_series: c.max_series,
            max_cells: c.max_cells,
        }
    }
}

/// The per-window state of every live series.
#[derive(Debug)]
pub struct Aggregator {
    settings: AggregatorSettings,
    /// (cell, service, route) -> series. Addresses are not the clients' choice, so a fast hash
    /// is enough.
    index: FastMap<SeriesKey, SeriesId>,
    series: Vec<Option<Series>>,
    free: Vec<SeriesId>,
    live: usize,
    open_windows: usize,
    /// Shared copies of cell/service/route names.
    names: HashSet<Arc<str>, foldhash::quality::RandomState>,
    causes: Vec<Arc<str>>,
    cause_ids: NameMap<Arc<str>, u32>,
    /// Service -> last wall-clock ms spans arrived from it.
    spans_seen: NameMap<Arc<str>, i64>,
    /// Tracked cells (at most `max_cells` plus the overflow cell), with their activity.
    cells: NameMap<Arc<str>, CellSlot>,
    deltas: DeltaTracker,
}

impl Aggregator {
    /// An empty aggregator.
    pub fn new(settings: AggregatorSettings) -> Self {
        Self {
            settings,
            index: FastMap::default(),
            series: Vec::new(),
            free: Vec::new(),
            live: 0,
            open_windows: 0,
            names: HashSet::default(),
            causes: Vec::new(),
            cause_ids: NameMap::default(),
            spans_seen: NameMap::default(),
            cells: NameMap::default(),
            deltas: DeltaTracker::default(),
        }
    }

    /// An empty aggregator with these settings.
    pub fn empty_like(&self) -> Aggregator {
        Aggregator::new(self.settings)
    }

    /// The window geometry.
    pub fn spec(&self) -> WindowSpec {
        self.settings.spec
    }

    /// Live series.
    pub fn live_series(&self) -> usize {
        self.live
    }

    /// Open (series, window) aggregates.
    pub fn open_windows(&self) -> usize {
        self.open_windows
    }

    /// Heap bytes held by series and their open windows (an estimate of the containers' capacity).
    pub fn heap_bytes(&self) -> usize {
        let index = self.index.capacity() * (std::mem::size_of::<(SeriesKey, SeriesId)>() + 1);
        let series: usize = self
            .series
            .iter()
            .flatten()
            .map(|s| {
                s.windows.capacity() * std::mem::size_of::<WindowAgg>()
                    + s.windows.iter().map(WindowAgg::heap_bytes).sum::<usize>()
            })
            .sum();
        let names: usize = self.names.iter().map(|n| n.len() + 16 + 8).sum();
        index + series + self.series.capacity() * std::mem::size_of::<Option<Series>>() + names
    }

    /// Whether an observation at `t_ns` is still accepted at `now_ms`: `Err(true)` late, `Err(false)` future.
    fn admit(&self, t_ns: i64, now_ms: i64) -> Result<i64, bool> {
        let start = self.settings.spec.start_of_ns(t_ns);
        if self.settings.spec.is_closed(start, now_ms) {
            return Err(true);
        }
        if t_ns.div_euclid(1_000_000) > now_ms + MAX_FUTURE_MS {
            return Err(false);
        }
        Ok(start)
    }

    /// Counts every request span and latency point of `obs` received at wall-clock `now_ms`
    /// (spans through [`SpanBatch::from_spans`] and [`Aggregator::apply_spans`], as the
    /// receivers and replay do).
    ///
    /// Windows starting before `durable_before` are already in Parquet (a WAL replay): their
    /// observations are accepted but not counted again, while cumulative streams still advance.
    pub fn apply(&mut self, obs: &Observations<'_>, now_ms: i64, durable_before: i64) -> Outcome {
        let mut out = if obs.spans.is_empty() {
            Outcome::default()
        } else {
            self.apply_spans(&SpanBatch::from_spans(obs, self.settings.spec, now_ms), now_ms, durable_before)
        };
        for p in &obs.points {
            self.apply_point(obs, p, now_ms, durable_before, &mut out);
        }
        out
    }

    /// Counts a batch of request spans received at wall-clock `now_ms`: each series-window of
    /// the batch, in order, is refused as late when its window has closed, skipped when it is
    /// already in Parquet (`durable_before`), and otherwise added to its series (created, or
    /// folded into an overflow series past the caps, in the batch's order).
    pub fn apply_spans(&mut self, b: &SpanBatch, now_ms: i64, durable_before: i64) -> Outcome {
        let spec = self.settings.spec;
        let width = spec.width_ms;
        let mut out = Outcome { future: b.future, ..Outcome::default() };
        for &svc in b.services() {
            let svc = b.string(svc);
            let room = self.spans_seen.len() < self.settings.max_series;
            match self.spans_seen.get_mut(svc) {
                Some(t) => *t = now_ms,
                // Bounded like the series: a flood of service names must not grow it.
                None if room => {
                    let n = self.name(svc);
                    self.spans_seen.insert(n, now_ms);
                }
                None => {}
            }
        }
        let strings = b.strings_len();
        // Each cell's slot name and whether it folded, by the batch's string id.
        let mut cells: Vec<Option<(Arc<str>, bool)>> = vec![None; strings];
        for &(c, _) in b.cells() {
            cells[c as usize] = Some(self.admit_cell(b.string(c)));
        }
        // The shared name's address of each string; 0 while it has none.
        let mut addrs = vec![0usize; strings];
        let mut causes = vec![NO_CAUSE_ID; strings];
        // Series that folded into an overflow series, found the long way once per batch.
        let mut folded_series: FastMap<(u32, u32, u32), (SeriesId, bool)> = FastMap::default();
        // A batch written by another window width (the config changed across a restart) is
        // counted in this width's windows.
        let realign = b.width_ms() != width;
        for (i, e) in b.entries().iter().enumerate() {
            let start = if realign { spec.start_of(e.start_ms) } else { e.start_ms };
            if spec.is_closed(start, now_ms) {
                out.late += e.requests;
                continue;
            }
            out.accepted += e.requests;
            if start < durable_before {
                out.already_persisted += e.requests;
                continue;
            }
            out.max_window_end_ms = out.max_window_end_ms.max(start + width);
            let (cell, folded) = match &cells[e.cell as usize] {
                Some((name, folded)) => (name.clone(), *folded),
                None => (self.name(OVERFLOW), true),
            };
            let service = self.addr_of(&mut addrs, e.service, b.string(e.service));
            let route = self.addr_of(&mut addrs, e.route, b.string(e.route));
            let live = match (service, route) {
                (Some(service), Some(route)) => {
                    self.index.get(&SeriesKey([name_addr(&cell), service, route])).copied().map(|id| (id, false))
                }
                _ => None,
            };
            let (id, overflowed) = match live.or_else(|| folded_series.get(&(e.cell, e.service, e.route)).copied()) {
                Some(v) => v,
                None => {
                    let v = self.series_id(&cell, b.string(e.service), b.string(e.route));
                    if v.1 {
                        folded_series.insert((e.cell, e.service, e.route), v);
                    }
                    v
                }
            };
            out.overflowed += if overflowed { e.requests } else { 0 };
            out.cells_overflowed += if folded { e.requests } else { 0 };
            let (buckets, error_buckets, entry_causes) = b.parts(i);
            for &(c, _) in entry_causes {
                if causes[c as usize] == NO_CAUSE_ID {
                    causes[c as usize] = self.cause_id(b.string(c));
                }
            }
            let w = self.window_mut(id, start);
            w.requests = w.requests.saturating_add(e.requests);
            w.max_us = w.max_us.max(e.max_us);
            for &(index, n) in buckets {
                w.hist.record_index_n(index, n);
            }
            for &(c, n) in entry_causes {
                w.add_error(causes[c as usize], n);
            }
            if !error_buckets.is_empty() {
                let h = w.error_hist.get_or_insert_default();
                for &(index, n) in error_buckets {
                    h.record_index_n(index, n);
                }
            }
        }
        for &(c, latest) in b.cells() {
            if let Some((name, _)) = &cells[c as usize] {
                self.saw(&name.clone(), latest, now_ms);
            }
        }
        out
    }

    fn apply_point(
        &mut self,
        obs: &Observations<'_>,
        p: &PointObs<'_>,
        now_ms: i64,
        durable_before: i64,
        out: &mut Outcome,
    ) {
        let start = match self.admit(p.time_ns, now_ms) {
            Ok(s) => s,
            Err(true) => {
                out.late += 1;
                return;
            }
            Err(false) => {
                out.future += 1;
                return;
            }
        };
        let buckets = match p.temporality {
            Temporality::Delta => p.buckets.clone(),
            Temporality::Cumulative => {
                let fresh_ns = (self.settings.spec.width_ms + self.settings.spec.lateness_ms) * 1_000_000;
                match self.deltas.delta(&p.stream, p.start_ns, p.time_ns, &p.buckets, fresh_ns, now_ms) {
                    Ok(b) => b,
                    Err(NoDelta::Baseline) => {
                        out.baseline += 1;
                        return;
                    }
                    Err(NoDelta::OutOfOrder) => {
                        out.out_of_order += 1;
                        return;
                    }
                }
            }
        };
        let service = obs.strings.get(p.service);
        if self.spans_seen.get(service).is_some_and(|&t| now_ms - t <= SPANS_WIN_MS) {
            out.spans_preferred += 1;
            return;
        }
        let values = bucket_values(&buckets, if p.temporality == Temporality::Delta { p.max } else { None }, p.to_us);
        let count = values.iter().fold(0u64, |t, (_, n)| t.saturating_add(*n));
        out.accepted += 1;
        if start < durable_before {
            out.already_persisted += 1;
            return;
        }
        if count == 0 {
            return;
        }
        // Metrics-only cells are timed to the window.
        let (cell, folded) = self.admit_cell(obs.strings.get(p.cell));
        self.saw(&cell, start, now_ms);
        out.max_window_end_ms = out.max_window_end_ms.max(start + self.settings.spec.width_ms);
        let (id, overflowed) = self.series_id(&cell, service, obs.strings.get(p.route));
        out.overflowed += u64::from(overflowed);
        out.cells_overflowed += u64::from(folded);
        let cause = (p.cause != NO_CAUSE).then(|| self.cause_id(obs.strings.get(p.cause)));
        let w = self.window_mut(id, start);
        w.requests = w.requests.saturating_add(count);
        w.exact = false;
        for &(v, n) in &values {
            w.hist.record_n(v, n);
            w.max_us = w.max_us.max(v);
        }
        if let Some(c) = cause {
            w.add_error(c, count);
            let h = w.error_hist.get_or_insert_default();
            for (v, n) in values {
                h.record_n(v, n);
            }
        }
    }

    fn rows_of(&self, s: &Series, w: WindowAgg) -> WindowRows {
        let causes = w.causes.iter().map(|&(c, n)| (self.causes[c as usize].clone(), n)).collect();
        WindowRows { cell: s.cell.clone(), service: s.service.clone(), route: s.route.clone(), agg: w, causes }
    }

    /// Takes every window that is closed at `now_ms` and forgets series left with no window.
    pub fn close_due(&mut self, now_ms: i64) -> Vec<WindowRows> {
        let spec = self.settings.spec;
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        let mut series = std::mem::take(&mut self.series);
        for (id, slot) in series.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if !s.windows.iter().any(|w| spec.is_closed(w.start_ms, now_ms)) {
                continue;
            }
            let (closed, open): (Vec<_>, Vec<_>) =
                std::mem::take(&mut s.windows).into_iter().partition(|w| spec.is_closed(w.start_ms, now_ms));
            s.windows = open;
            self.open_windows -= closed.len();
            for w in closed {
                out.push(self.rows_of(s, w));
            }
            if s.windows.is_empty() {
                emptied.push(id);
            }
        }
        self.series = series;
        for id in emptied {
            self.drop_series(id);
        }
        self.spans_seen.retain(|_, t| now_ms - *t <= SPANS_WIN_MS);
        self.cells.retain(|_, c| c.series > 0 || c.activity.is_some_and(|a| now_ms - a.arrived_ms <= CELL_TTL_MS));
        self.deltas.evict(now_ms - STREAM_TTL_MS);
        // Names only the interner still holds belong to no series.
        self.names.retain(|n| Arc::strong_count(n) > 1);
        out
    }

    /// Forgets series `id` (its windows are gone).
    fn drop_series(&mut self, id: usize) {
        if let Some(s) = self.series.get_mut(id).and_then(Option::take) {
            self.index.remove(&series_key(&s.cell, &s.service, &s.route));
            self.free.push(id as SeriesId);
            self.live -= 1;
            self.open_windows -= s.windows.len();
            if let Some(c) = self.cells.get_mut(&*s.cell) {
                c.series = c.series.saturating_sub(1);
            }
        }
    }

    /// Copies of the open windows overlapping `[from_ms, to_ms)`.
    pub fn snapshot(&self, from_ms: i64, to_ms: i64) -> Vec<WindowRows> {
        let width = self.settings.spec.width_ms;
        self.series
            .iter()
            .flatten()
            .flat_map(|s| {
                s.windows
                    .iter()
                    .filter(move |w| w.start_ms < to_ms && w.start_ms + width > from_ms)
                    .map(move |w| self.rows_of(s, w.clone()))
            })
            .collect()
    }
}

/// (value in µs, count) for each non-empty bucket: the bucket's upper bound (capped by `max`),
/// and for the last explicit bucket, `max` or the last bound.
fn bucket_values(b: &Buckets, max: Option<f64>, to_us: f64) -> Vec<(u64, u64)> {
    let us = |v: f64| {
        let v = max.map_or(v, |m| v.min(m));
        // NaN becomes 0 and infinities the histogram's ceiling (float-to-int casts saturate).
        (v * to_us).round().clamp(0.0, cellpilot_core::latency::MAX_US as f64) as u64
    };
    match b {
        Buckets::Explicit { bounds, counts } => counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| {
                let v = match bounds.get(i) {
                    Some(&upper) => us(upper),
                    None => us(max.unwrap_or_else(|| bounds.last().copied().unwrap_or(0.0))),
                };
                (v, *c)
            })
            .collect(),
        Buckets::Exponential { scale, zero_count, offset, counts } => {
            let mut out = Vec::with_capacity(counts.len() + 1);
            if *zero_count > 0 {
                out.push((0, *zero_count));
            }
            let step = (-f64::from(*scale)).exp2();
            for (k, c) in counts.iter().enumerate() {
                if *c > 0 {
                    let upper = ((f64::from(*offset) + k as f64 + 1.0) * step).exp2();
                    out.push((us(upper), *c));
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::SpanObs;
    use crate::mapping::StrId;
    use cellpilot_core::OVERFLOW_ROUTE;
    use std::borrow::Cow;
    use std::time::Duration;

    /// A span counted in a series' window, waiting for the window pass.
    #[derive(Debug, Clone, Copy)]
    struct Counted {
        id: SeriesId,
        start_ms: i64,
        latency_us: u64,
        /// [`NO_CAUSE_ID`] unless it failed.
        cause: u32,
    }

    /// A cell as one request saw it.
    #[derive(Debug, Clone)]
    struct RequestCell {
        /// Its slot name.
        name: Arc<str>,
        /// Whether it folded into the overflow cell.
        folded: bool,
        /// Start of its latest request span, unix ms.
        latest_ms: Option<i64>,
    }

    impl Aggregator {
        /// The per-span counting of request spans before batches (the reference the batch path must equal).
        ///
        /// Windows starting before `durable_before` are already in Parquet (a WAL replay): their
        /// observations are accepted but not counted again, while cumulative streams still advance.
        fn apply_per_span(&mut self, obs: &Observations<'_>, now_ms: i64, durable_before: i64) -> Outcome {
            let width = self.settings.spec.width_ms;
            let mut out = Outcome::default();
            // Per request, by the request's own string ids (dense from 0).
            let strings = obs.strings.len();
            // The shared name's address of each string; 0 while it has none.
            let mut addrs = vec![0usize; strings];
            // Series that folded into an overflow series, found the long way once per request.
            let mut folded_series: FastMap<(StrId, StrId, StrId), (SeriesId, bool)> = FastMap::default();
            let mut causes = vec![NO_CAUSE_ID; strings];
            let mut cells: Vec<Option<RequestCell>> = vec![None; strings];
            let mut last_service = None;
            let mut counted = Vec::new();
            for o in &obs.spans {
                if last_service != Some(o.service) {
                    last_service = Some(o.service);
                    let svc = obs.strings.get(o.service);
                    let room = self.spans_seen.len() < self.settings.max_series;
                    match self.spans_seen.get_mut(svc) {
                        Some(t) => *t = now_ms,
                        // Bounded like the series: a flood of service names must not grow it.
                        None if room => {
                            let n = self.name(svc);
                            self.spans_seen.insert(n, now_ms);
                        }
                        None => {}
                    }
                }
                let start = self.admit(o.end_ns, now_ms);
                let mut folded = false;
                let mut cell_addr = 0;
                if start != Err(false) {
                    let slot = &mut cells[o.cell as usize];
                    if slot.is_none() {
                        let (name, folded) = self.admit_cell(obs.strings.get(o.cell));
                        *slot = Some(RequestCell { name, folded, latest_ms: None });
                    }
                    if let Some(slot) = slot {
                        // A start after the end is forged or broken; the end bounds it.
                        let t = o.start_ns.min(o.end_ns).div_euclid(1_000_000);
                        slot.latest_ms = Some(slot.latest_ms.map_or(t, |l| l.max(t)));
                        folded = slot.folded;
                        cell_addr = name_addr(&slot.name);
                    }
                }
                let start = match start {
                    Ok(s) => s,
                    Err(true) => {
                        out.late += 1;
                        continue;
                    }
                    Err(false) => {
                        out.future += 1;
                        continue;
                    }
                };
                if start < durable_before {
                    out.accepted += 1;
                    out.already_persisted += 1;
                    continue;
                }
                out.max_window_end_ms = out.max_window_end_ms.max(start + width);
                let service = self.addr_of(&mut addrs, o.service, obs.strings.get(o.service));
                let route = self.addr_of(&mut addrs, o.route, obs.strings.get(o.route));
                let live = match (service, route) {
                    (Some(service), Some(route)) => self.index.get(&SeriesKey([cell_addr, service, route])).copied(),
                    _ => None,
                };
                let (id, overflowed) = match live {
                    Some(id) => (id, false),
                    None => match folded_series.get(&(o.cell, o.service, o.route)) {
                        Some(&v) => v,
                        None => {
                            let cell =
                                cells[o.cell as usize].as_ref().map_or_else(|| self.name(OVERFLOW), |c| c.name.clone());
                            let v = self.series_id(&cell, obs.strings.get(o.service), obs.strings.get(o.route));
                            if v.1 {
                                folded_series.insert((o.cell, o.service, o.route), v);
                            }
                            v
                        }
                    },
                };
                out.overflowed += u64::from(overflowed);
                out.cells_overflowed += u64::from(folded);
                let cause = if o.cause == NO_CAUSE {
                    None
                } else {
                    let c = &mut causes[o.cause as usize];
                    if *c == NO_CAUSE_ID {
                        *c = self.cause_id(obs.strings.get(o.cause));
                    }
                    Some(*c)
                };
                counted.push(Counted {
                    id,
                    start_ms: start,
                    latency_us: o.latency_us,
                    cause: cause.unwrap_or(NO_CAUSE_ID),
                });
                out.accepted += 1;
            }
            for c in &counted {
                let w = self.window_mut(c.id, c.start_ms);
                w.requests += 1;
                w.hist.record(c.latency_us);
                w.max_us = w.max_us.max(c.latency_us);
                if c.cause != NO_CAUSE_ID {
                    w.add_error(c.cause, 1);
                    w.error_hist.get_or_insert_default().record(c.latency_us);
                }
            }
            for c in cells.into_iter().flatten() {
                if let Some(t) = c.latest_ms {
                    self.saw(&c.name, t, now_ms);
                }
            }
            for p in &obs.points {
                self.apply_point(obs, p, now_ms, durable_before, &mut out);
            }
            out
        }
    }

    fn settings(max_series: usize) -> AggregatorSettings {
        AggregatorSettings {
            spec: WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30)),
            max_series,
            max_cells: 1000,
        }
    }

    fn obs<'a>(spans: &[(&'a str, &'a str, u64, i64, Option<&'a str>)]) -> Observations<'a> {
        let mut o = Observations::default();
        let svc = o.strings.intern(Cow::Borrowed("svc"));
        for &(cell, route, latency_us, end_ms, cause) in spans {
            let cell = o.strings.intern(Cow::Borrowed(cell));
            let route = o.strings.intern(Cow::Borrowed(route));
            let cause = cause.map_or(NO_CAUSE, |c| o.strings.intern(Cow::Borrowed(c)));
            o.spans.push(SpanObs {
                cell,
                service: svc,
                route,
                cause,
                latency_us,
                end_ns: end_ms * 1_000_000,
                start_ns: 0,
            });
        }
        o
    }

    #[test]
    fn counts_per_window_and_rejects_late_and_future() {
        let mut a = Aggregator::new(settings(100));
        let now = 1_000_000;
        let out = a.apply(
            &obs(&[
                ("a", "/x", 100, now - 1, None),
                ("a", "/x", 300, now - 2, Some("5xx")),
                ("a", "/x", 200, now - 15_000, None),
                ("a", "/x", 1, now - 45_000, None),
                ("a", "/x", 1, now + 301_000, None),
            ]),
            now,
            i64::MIN,
        );
        assert_eq!((out.accepted, out.late, out.future), (3, 1, 1));
        assert_eq!(a.open_windows(), 2);
        let closed = a.close_due(now + 40_000);
        let b = to_batches(closed, 10_000).unwrap();
        assert_eq!(b.rollups.num_rows(), 2);
        assert_eq!(b.errors_by_cause.num_rows(), 1);
        assert_eq!(a.live_series(), 0);
        assert_eq!(a.open_windows(), 0);
    }

    #[test]
    fn overflow_route_caps_series() {
        let mut a = Aggregator::new(settings(2));
        let now = 1_000_000;
        let out = a.apply(
            &obs(&[
                ("a", "/1", 1, now, None),
                ("a", "/2", 1, now, None),
                ("a", "/3", 1, now, None),
                ("a", "/4", 1, now, None),
            ]),
            now,
            i64::MIN,
        );
        assert_eq!(out.overflowed, 2);
        assert_eq!(a.live_series(), 3);
        let b = to_batches(a.snapshot(0, i64::MAX), 10_000).unwrap();
        let routes = b.rollups.column(4).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        let mut r: Vec<_> = routes.iter().flatten().collect();
        r.sort();
        assert_eq!(r, ["/1", "/2", OVERFLOW_ROUTE]);
    }

    #[test]
    fn new_cells_past_the_cap_fold_and_slots_free_up() {
        let mut a = Aggregator::new(AggregatorSettings { max_cells: 3, ..settings(100) });
        let now = 1_000_000;
        let names: Vec<String> = (0..50).map(|i| format!("c{i}")).collect();
        let spans: Vec<_> = names.iter().map(|c| (c.as_str(), "/x", 1, now, None)).collect();
        let out = a.apply(&obs(&spans), now, i64::MIN);
        assert_eq!((out.accepted, out.cells_overflowed), (50, 47));
        assert_eq!(a.tracked_cells(), 4, "three cells and the overflow cell");
        assert!(a.activity("c0").is_some() && a.activity("c3").is_none());
        assert!(a.activity(OVERFLOW).is_some());
        let b = to_batches(a.snapshot(0, i64::MAX), 10_000).unwrap();
        let cells = b.rollups.column(2).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
        let requests = b.rollups.column(5).as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap();
        let folded: u64 =
            (0..b.rollups.num_rows()).filter(|&i| cells.value(i) == OVERFLOW).map(|i| requests.value(i)).sum();
        assert_eq!(folded, 47);
        // Once their series close and 10 minutes pass without a request, slots are free again.
        a.close_due(now + 40_000);
        assert_eq!(a.tracked_cells(), 4, "recent activity keeps the slots (cut-overs read it)");
        a.close_due(now + CELL_TTL_MS + 1);
        assert_eq!(a.tracked_cells(), 0);
        let out = a.apply(&obs(&[("c40", "/x", 1, now + CELL_TTL_MS + 2, None)]), now + CELL_TTL_MS + 2, i64::MIN);
        assert_eq!(out.cells_overflowed, 0);
    }

    #[test]
    fn series_stay_bounded_whatever_varies() {
        let (max_series, max_cells) = (10, 5);
        let mut a = Aggregator::new(AggregatorSettings { max_cells, ..settings(max_series) });
        let now = 1_000_000;
        let mut o = Observations::default();
        for i in 0..2000u32 {
            let cell = o.strings.intern(Cow::Owned(format!("cell{}", i % 7)));
            let service = o.strings.intern(Cow::Owned(format!("svc{i}")));
            let route = o.strings.intern(Cow::Borrowed(if i % 2 == 0 { OVERFLOW_ROUTE } else { "/r" }));
            o.spans.push(SpanObs {
                cell,
                service,
                route,
                cause: NO_CAUSE,
                latency_us: 1,
                end_ns: now * 1_000_000,
                start_ns: 0,
            });
        }
        let out = a.apply(&o, now, i64::MIN);
        assert_eq!(out.accepted, 2000);
        assert!(a.live_series() <= max_series + 2 * max_cells + 1, "{} series", a.live_series());
    }

    /// Requests of spans (cell, service, route, latency µs, end ms after `now`, cause, start
    /// before end ms), names drawn from small sets so series, cells and causes repeat.
    fn request_of(spans: &[(u8, u8, u8, u64, i64, u8, i64)]) -> Observations<'static> {
        let mut o = Observations::default();
        for &(cell, service, route, latency_us, end_ms, cause, before) in spans {
            let cell = o.strings.intern(Cow::Owned(format!("c{cell}")));
            let service = o.strings.intern(Cow::Owned(format!("s{service}")));
            let route = o.strings.intern(Cow::Owned(format!("/r{route}")));
            let cause = if cause < 3 { o.strings.intern(Cow::Owned(format!("e{cause}"))) } else { NO_CAUSE };
            let end_ns = end_ms * 1_000_000;
            o.spans.push(SpanObs {
                cell,
                service,
                route,
                cause,
                latency_us,
                end_ns,
                start_ns: end_ns - before * 1_000_000,
            });
        }
        o
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]
        /// Batches count exactly what counting span by span did: the same rows, outcomes, cells
        /// and activity, through caps, overflow, late, future and persisted windows, whether
        /// applied as built or as the WAL reads them back.
        #[test]
        fn batches_count_what_spans_counted(
            requests in proptest::collection::vec(proptest::collection::vec(
                (0u8..6, 0u8..3, 0u8..5, 0u64..4_000_000_000, -50_000i64..320_000, 0u8..6, -5i64..2_000), 0..80), 1..6),
            max_series in 1usize..30,
            max_cells in 1usize..6,
            durable_after in 0i64..3,
        ) {
            let settings = AggregatorSettings { max_cells, ..settings(max_series) };
            let (mut by_span, mut by_batch, mut decoded) =
                (Aggregator::new(settings), Aggregator::new(settings), Aggregator::new(settings));
            let mut now = 1_000_000_005_000i64;
            let durable = now - 30_000 + durable_after * 10_000;
            for r in &requests {
                let o = request_of(&r.iter().map(|s| { let mut s = *s; s.4 += now; s }).collect::<Vec<_>>());
                let b = SpanBatch::from_spans(&o, settings.spec, now);
                let mut bytes = Vec::new();
                b.encode(&mut bytes);
                let want = by_span.apply_per_span(&o, now, durable);
                proptest::prop_assert_eq!(&by_batch.apply_spans(&b, now, durable), &want);
                proptest::prop_assert_eq!(&decoded.apply_spans(&SpanBatch::decode(&bytes).unwrap(), now, durable), &want);
                now += 7_000;
            }
            let rows = |a: &Aggregator| to_batches(a.snapshot(i64::MIN, i64::MAX), 10_000).unwrap();
            let want = rows(&by_span);
            for a in [&by_batch, &decoded] {
                let got = rows(a);
                proptest::prop_assert_eq!(&got.rollups, &want.rollups);
                proptest::prop_assert_eq!(&got.errors_by_cause, &want.errors_by_cause);
                proptest::prop_assert_eq!(a.live_series(), by_span.live_series());
                proptest::prop_assert_eq!(a.open_windows(), by_span.open_windows());
                proptest::prop_assert_eq!(a.tracked_cells(), by_span.tracked_cells());
                for c in (0..6).map(|c| format!("c{c}")).chain([OVERFLOW.to_string()]) {
                    proptest::prop_assert_eq!(a.activity(&c), by_span.activity(&c), "cell {}", c);
                }
                let mut seen: Vec<_> = a.spans_seen.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                let mut want_seen: Vec<_> = by_span.spans_seen.iter().map(|(k, v)| (k.to_string(), *v)).collect();
                seen.sort();
                want_seen.sort();
                proptest::prop_assert_eq!(seen, want_seen);
            }
        }
    }

    #[test]
    fn explicit_bucket_values() {
        let b = Buckets::Explicit { bounds: vec![0.01, 0.1], counts: vec![1, 2, 3] };
        assert_eq!(bucket_values(&b, None, 1e6), vec![(10_000, 1), (100_000, 2), (100_000, 3)]);
        assert_eq!(bucket_values(&b, Some(0.5), 1e6), vec![(10_000, 1), (100_000, 2), (500_000, 3)]);
        let e = Buckets::Exponential { scale: 0, zero_count: 1, offset: 3, counts: vec![0, 4] };
        assert_eq!(bucket_values(&e, None, 1.0), vec![(0, 1), (32, 4)]);
    }
}
