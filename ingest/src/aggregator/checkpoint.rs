//! The aggregator's whole state as bytes, for checkpoints: every series with its open windows,
//! the tracked cells and their activity, the services that send spans, the error causes in id
//! order and the cumulative streams. Restoring it into a fresh aggregator and applying the
//! WAL records logged after it rebuilds exactly the state the process had.

use super::{Activity, Aggregator, CellSlot, WindowAgg, index::name_addr};
use crate::codec::{CodecError, Reader, put_bytes, put_i64, put_u64};
use crate::delta::DeltaTracker;
use cellpilot_core::latency::{MAX_INDEX, SparseHistogram};
use std::collections::HashMap;
use std::sync::Arc;

/// Version of the layout, the first byte.
const VERSION: u8 = 1;

/// Why a checkpoint's aggregator state could not be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The bytes are damaged (or not this layout).
    #[error("aggregator state: {0}")]
    Codec(#[from] CodecError),
    /// The cumulative-stream part is unreadable.
    #[error("aggregator state: {0}")]
    Streams(#[from] crate::delta::CheckpointError),
    /// Restoring needs an aggregator that holds nothing yet.
    #[error("aggregator state is restored into an empty aggregator only")]
    NotEmpty,
}

fn put_hist(out: &mut Vec<u8>, h: &SparseHistogram) {
    put_u64(out, h.buckets() as u64);
    let mut next = 0u16;
    for (index, n) in h.buckets_with_counts() {
        put_u64(out, u64::from(index - next));
        put_u64(out, n);
        next = index + 1;
    }
}

fn read_hist(r: &mut Reader<'_>, into: &mut SparseHistogram) -> Result<u64, CodecError> {
    let n = r.count(2)?;
    let mut next = 0u64;
    let mut total = 0u64;
    for _ in 0..n {
        let index = next.checked_add(r.u64()?).filter(|&i| i <= u64::from(MAX_INDEX));
        let index = index.ok_or_else(|| r.err("a bucket index out of range"))?;
        let count = r.u64()?;
        if count == 0 {
            return Err(r.err("an empty bucket"));
        }
        into.record_index_n(index as u16, count);
        total = total.saturating_add(count);
        next = index + 1;
    }
    Ok(total)
}

/// Shared names by address: each is written once and referred to by position.
#[derive(Default)]
struct Names<'a> {
    ids: HashMap<usize, u64, foldhash::fast::RandomState>,
    list: Vec<&'a Arc<str>>,
}

impl<'a> Names<'a> {
    fn id(&mut self, n: &'a Arc<str>) -> u64 {
        *self.ids.entry(name_addr(n)).or_insert_with(|| {
            self.list.push(n);
            (self.list.len() - 1) as u64
        })
    }
}

impl Aggregator {
    /// Restores the cumulative streams a version 1 WAL saved beside its sealed segments.
    pub(crate) fn restore_streams(&mut self, bytes: &[u8]) -> Result<(), crate::delta::CheckpointError> {
        self.deltas = DeltaTracker::from_bytes(bytes)?;
        Ok(())
    }

    /// Appends the whole state to `out` (see the module docs).
    pub fn checkpoint(&self, out: &mut Vec<u8>) {
        let mut names = Names::default();
        let mut id_of = |n| names.id(n);
        let mut body = Vec::new();
        // Maps in name order, so one state always checkpoints to the same bytes.
        let mut cells: Vec<_> = self.cells.iter().collect();
        cells.sort_unstable_by(|a, b| a.0.cmp(b.0));
        put_u64(&mut body, cells.len() as u64);
        for (name, slot) in cells {
            put_u64(&mut body, id_of(name));
            match slot.activity {
                Some(a) => {
                    body.push(1);
                    put_i64(&mut body, a.latest_start_ms);
                    put_i64(&mut body, a.arrived_ms);
                }
                None => body.push(0),
            }
        }
        let mut seen: Vec<_> = self.spans_seen.iter().collect();
        seen.sort_unstable_by(|a, b| a.0.cmp(b.0));
        put_u64(&mut body, seen.len() as u64);
        for (name, ms) in seen {
            put_u64(&mut body, id_of(name));
            put_i64(&mut body, *ms);
        }
        let live: Vec<_> = self.series.iter().flatten().collect();
        put_u64(&mut body, live.len() as u64);
        for s in live {
            put_u64(&mut body, id_of(&s.cell));
            put_u64(&mut body, id_of(&s.service));
            put_u64(&mut body, id_of(&s.route));
            put_u64(&mut body, s.windows.len() as u64);
            for w in &s.windows {
                put_i64(&mut body, w.start_ms);
                put_u64(&mut body, w.requests);
                put_u64(&mut body, w.max_us);
                body.push(u8::from(w.exact));
                put_hist(&mut body, &w.hist);
                put_u64(&mut body, w.causes.len() as u64);
                for &(c, n) in &w.causes {
                    put_u64(&mut body, u64::from(c));
                    put_u64(&mut body, n);
                }
                match &w.error_hist {
                    Some(h) => put_hist(&mut body, h),
                    None => put_u64(&mut body, 0),
                }
            }
        }
        out.push(VERSION);
        put_u64(out, self.settings.spec.width_ms as u64);
        put_u64(out, names.list.len() as u64);
        for n in &names.list {
            put_bytes(out, n.as_bytes());
        }
        put_u64(out, self.causes.len() as u64);
        for c in &self.causes {
            put_bytes(out, c.as_bytes());
        }
        put_bytes(out, &self.deltas.to_bytes());
        out.extend_from_slice(&body);
    }

    /// Restores a state [`Aggregator::checkpoint`] wrote into this (empty) aggregator, leaving
    /// out windows that start before `durable_before` (in Parquet since). Windows of another
    /// width (the config changed across the restart) are merged into this width's windows.
    pub fn restore(&mut self, bytes: &[u8], durable_before: i64) -> Result<(), RestoreError> {
        if self.live > 0 || !self.cells.is_empty() || !self.causes.is_empty() || !self.deltas.is_empty() {
            return Err(RestoreError::NotEmpty);
        }
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(r.err("an unknown aggregator state version").into());
        }
        let width = i64::try_from(r.u64()?).ok().filter(|&w| w > 0).ok_or_else(|| r.err("a zero window width"))?;
        let realign = width != self.settings.spec.width_ms;
        let n = r.count(1)?;
        let mut names: Vec<Arc<str>> = Vec::with_capacity(n);
        for _ in 0..n {
            let s = r.str()?;
            names.push(self.name(s));
        }
        let name = |r: &mut Reader<'_>| -> Result<Arc<str>, CodecError> {
            Ok(names[r.below(names.len(), "a name index out of range")?].clone())
        };
        let n = r.count(1)?;
        for _ in 0..n {
            let c = r.str()?;
            self.cause_id(c);
        }
        if self.causes.len() != n {
            return Err(r.err("a cause listed twice").into());
        }
        self.deltas = DeltaTracker::from_bytes(r.bytes()?)?;
        let n = r.count(2)?;
        for _ in 0..n {
            let cell = name(&mut r)?;
            let activity = match r.u8()? {
                0 => None,
                1 => Some(Activity { latest_start_ms: r.i64()?, arrived_ms: r.i64()? }),
                _ => return Err(r.err("a bad activity flag").into()),
            };
            self.cells.insert(cell, CellSlot { series: 0, activity });
        }
        let n = r.count(2)?;
        for _ in 0..n {
            let service = name(&mut r)?;
            let ms = r.i64()?;
            self.spans_seen.insert(service, ms);
        }
        let n = r.count(4)?;
        for _ in 0..n {
            let (cell, service, route) = (name(&mut r)?, name(&mut r)?, name(&mut r)?);
            if self.find_series(&cell, &service, &route).is_some() {
                return Err(r.err("a series listed twice").into());
            }
            let id = self.insert_series(&cell, &service, &route);
            let windows = r.count(6)?;
            for _ in 0..windows {
                let start = r.i64()?;
                if start.abs() > cellpilot_core::window::MAX_START_MS {
                    return Err(r.err("a window start out of range").into());
                }
                let start = if realign { self.settings.spec.start_of(start) } else { start };
                let requests = r.u64()?;
                let max_us = r.u64()?;
                let exact = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(r.err("a bad exactness flag").into()),
                };
                let mut w = WindowAgg::new(start);
                read_hist(&mut r, &mut w.hist)?;
                let causes = r.count(2)?;
                for _ in 0..causes {
                    let c = r.below(self.causes.len(), "a cause id out of range")? as u32;
                    w.add_error(c, r.u64()?);
                }
                let mut error_hist = SparseHistogram::default();
                if read_hist(&mut r, &mut error_hist)? > 0 {
                    w.error_hist = Some(Box::new(error_hist));
                }
                if start < durable_before {
                    continue;
                }
                let into = self.window_mut(id, start);
                into.requests = into.requests.saturating_add(requests);
                into.max_us = into.max_us.max(max_us);
                into.exact &= exact;
                for (index, n) in w.hist.buckets_with_counts() {
                    into.hist.record_index_n(index, n);
                }
                for &(c, n) in &w.causes {
                    into.add_error(c, n);
                }
                if let Some(h) = w.error_hist {
                    let e = into.error_hist.get_or_insert_default();
                    for (index, n) in h.buckets_with_counts() {
                        e.record_index_n(index, n);
                    }
                }
            }
        }
        if !r.is_done() {
            return Err(r.err("bytes after the last series").into());
        }
        // Series whose every window is in Parquet are gone; so are names nothing holds.
        let empty: Vec<usize> = self
            .series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.as_ref().is_some_and(|s| s.windows.is_empty()))
            .map(|(i, _)| i)
            .collect();
        for id in empty {
            self.drop_series(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{AggregatorSettings, to_batches};
    use super::*;
    use crate::mapping::{NO_CAUSE, Observations, SpanObs};
    use cellpilot_core::window::WindowSpec;
    use std::borrow::Cow;
    use std::time::Duration;

    fn settings(width_s: u64) -> AggregatorSettings {
        AggregatorSettings {
            spec: WindowSpec::new(Duration::from_secs(width_s), Duration::from_secs(30)),
            max_series: 50,
            max_cells: 3,
        }
    }

    fn feed(a: &mut Aggregator, now: i64, seed: u64) {
        let mut o = Observations::default();
        for i in 0..400u64 {
            let k = i.wrapping_mul(seed | 1).wrapping_add(seed);
            let cell = o.strings.intern(Cow::Owned(format!("c{}", k % 5)));
            let service = o.strings.intern(Cow::Owned(format!("s{}", k % 3)));
            let route = o.strings.intern(Cow::Owned(format!("/r{}", k % 17)));
            let cause = if k % 7 == 0 { o.strings.intern(Cow::Owned(format!("e{}", k % 4))) } else { NO_CAUSE };
            let end_ns = (now - (k % 35_000) as i64) * 1_000_000;
            let latency_us = (k * 7919) % 3_000_000;
            o.spans.push(SpanObs { cell, service, route, cause, latency_us, end_ns, start_ns: end_ns - 1_000_000 });
        }
        a.apply(&o, now, i64::MIN);
    }

    fn rows(a: &Aggregator) -> cellpilot_core::store::WindowBatches {
        to_batches(a.snapshot(i64::MIN, i64::MAX), 10_000).unwrap()
    }

    #[test]
    fn a_restored_state_goes_on_exactly_as_the_original() {
        let now = 1_800_000_007_000;
        let mut a = Aggregator::new(settings(10));
        feed(&mut a, now, 3);
        feed(&mut a, now + 4_000, 11);
        let mut bytes = Vec::new();
        a.checkpoint(&mut bytes);
        let mut b = Aggregator::new(settings(10));
        b.restore(&bytes, i64::MIN).unwrap();
        assert_eq!(rows(&b).rollups, rows(&a).rollups);
        assert_eq!(rows(&b).errors_by_cause, rows(&a).errors_by_cause);
        assert_eq!(
            (b.live_series(), b.open_windows(), b.tracked_cells()),
            (a.live_series(), a.open_windows(), a.tracked_cells())
        );
        // The same next request, the same closes: the same state (caps and overflow included).
        for x in [&mut a, &mut b] {
            feed(x, now + 9_000, 29);
        }
        let (ca, cb) = (a.close_due(now + 60_000), b.close_due(now + 60_000));
        assert_eq!(to_batches(cb, 10_000).unwrap().rollups, to_batches(ca, 10_000).unwrap().rollups);
        assert_eq!(rows(&b).rollups, rows(&a).rollups);
        for c in ["c0", "c1", "c2", "c3", "c4", cellpilot_core::OVERFLOW] {
            assert_eq!(a.activity(c), b.activity(c));
        }
        let (mut again_a, mut again_b) = (Vec::new(), Vec::new());
        a.checkpoint(&mut again_a);
        b.checkpoint(&mut again_b);
        assert_eq!(again_a, again_b, "one state checkpoints to the same bytes");
        let (mut twice, mut fresh) = (Vec::new(), Vec::new());
        b.checkpoint(&mut twice);
        let mut c = Aggregator::new(settings(10));
        c.restore(&again_b, i64::MIN).unwrap();
        c.checkpoint(&mut fresh);
        assert_eq!(fresh, twice, "whatever each map's hasher");
    }

    #[test]
    fn persisted_windows_are_left_out_and_damage_is_an_error() {
        let now = 1_800_000_007_000;
        let mut a = Aggregator::new(settings(10));
        feed(&mut a, now, 5);
        let mut bytes = Vec::new();
        a.checkpoint(&mut bytes);
        let durable = now - now % 10_000;
        let mut b = Aggregator::new(settings(10));
        b.restore(&bytes, durable).unwrap();
        assert!(b.snapshot(i64::MIN, durable).is_empty());
        assert_eq!(b.snapshot(durable, i64::MAX).len(), a.snapshot(durable, i64::MAX).len());
        assert!(matches!(b.restore(&bytes, i64::MIN), Err(RestoreError::NotEmpty)));
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            assert!(Aggregator::new(settings(10)).restore(&bytes[..cut], i64::MIN).is_err(), "cut at {cut}");
        }
        for i in (0..bytes.len()).step_by(7) {
            let mut d = bytes.clone();
            d[i] ^= 0x5a;
            let _ = Aggregator::new(settings(10)).restore(&d, i64::MIN);
        }
    }

    #[test]
    fn another_width_is_merged_into_this_one() {
        let now = 1_800_000_007_000;
        let mut a = Aggregator::new(settings(5));
        feed(&mut a, now, 7);
        let mut bytes = Vec::new();
        a.checkpoint(&mut bytes);
        let mut b = Aggregator::new(settings(10));
        b.restore(&bytes, i64::MIN).unwrap();
        let total = |a: &Aggregator| a.snapshot(i64::MIN, i64::MAX).iter().map(|w| w.agg.requests).sum::<u64>();
        assert_eq!(total(&b), total(&a));
        assert!(b.snapshot(i64::MIN, i64::MAX).iter().all(|w| w.agg.start_ms % 10_000 == 0));
    }
}
