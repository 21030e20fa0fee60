//! A trace export folded to what the aggregator adds: per series and window, the latency
//! buckets, the failures' buckets and causes and the exact largest latency, plus the cells and
//! services its spans name.
//!
//! A batch is built once, on the task that received the export; the WAL logs its compact
//! encoding (a few bytes per span, where the request took ~360), and the live path and replay
//! apply the same value through [`crate::aggregator::Aggregator::apply_spans`], so replay rebuilds
//! exactly what was acknowledged. Nothing in a batch depends on the aggregator's state: what
//! does (which windows have closed, caps, overflow) is decided when it is applied, in order.

use crate::codec::{CodecError, Reader, put_bytes, put_i64, put_u64};
use crate::mapping::{NO_CAUSE, Observations};
use cellpilot_core::latency::{MAX_INDEX, bucket_index, bucket_lowest};
use cellpilot_core::range::MAX_FUTURE_MS;
use cellpilot_core::window::{MAX_START_MS, WindowSpec};
use std::collections::HashMap;

/// Version of the encoding, the first byte of every encoded batch.
const VERSION: u8 = 1;

/// One series' spans in one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Cell, service and route, as indexes into the batch's strings.
    pub(crate) cell: u32,
    pub(crate) service: u32,
    pub(crate) route: u32,
    /// Window start, unix ms.
    pub(crate) start_ms: i64,
    /// Exact largest latency (the buckets only know theirs).
    pub(crate) max_us: u64,
    /// Spans, and failed ones.
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Ends of this entry's runs in [`SpanBatch::buckets`], `error_buckets` and `causes`.
    buckets_end: u32,
    error_buckets_end: u32,
    causes_end: u32,
}

/// The spans of one trace export, folded per series and window.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SpanBatch {
    /// Window width the entries' starts are aligned to.
    width_ms: i64,
    /// Names the batch refers to.
    strings: Vec<Box<str>>,
    /// Services of every request span (late and future ones too), in order of first
    /// appearance: each marks its service as one that sends spans.
    services: Vec<u32>,
    /// Cells of the spans not refused as future, in order of first appearance (the order cells
    /// take their slots in), with the start of each one's latest request span (unix ms).
    cells: Vec<(u32, i64)>,
    /// Series-windows in order of first appearance (the order series are created in).
    entries: Vec<Entry>,
    /// (bucket index, spans) of every entry, entry after entry, indexes ascending.
    buckets: Vec<(u16, u64)>,
    /// The same for the failed spans alone.
    error_buckets: Vec<(u16, u64)>,
    /// (cause, failures) of every entry, causes ascending.
    causes: Vec<(u32, u64)>,
    /// Spans refused as more than 5 minutes ahead of the clock when the batch was built.
    pub(crate) future: u64,
    /// Spans that are not requests, and names cut to `max_attribute_length` (the answer says
    /// so; not logged).
    pub(crate) ignored: u64,
    pub(crate) truncated: u64,
}

/// One span on its way into a batch.
#[derive(Clone, Copy)]
struct Sample {
    /// Entry index << 16 | bucket index: the order the buckets are built in.
    key: u64,
    cause: u32,
}

impl SpanBatch {
    /// Folds the request spans of `obs` (metric points are not spans: they are left alone) into
    /// windows of `spec`, refusing as future those more than 5 minutes ahead of `now_ms`.
    pub fn from_spans(obs: &Observations<'_>, spec: WindowSpec, now_ms: i64) -> Self {
        let strings: Vec<Box<str>> = obs.strings.strings().map(Box::from).collect();
        let mut b =
            SpanBatch { width_ms: spec.width_ms, ignored: obs.ignored, truncated: obs.truncated, ..Default::default() };
        let mut service_seen = vec![false; strings.len()];
        let mut cell_at = vec![u32::MAX; strings.len()];
        let mut entry_of: HashMap<(u32, u32, u32, i64), u32, foldhash::fast::RandomState> = HashMap::default();
        let mut samples = Vec::with_capacity(obs.spans.len());
        let mut last_service = None;
        for o in &obs.spans {
            if last_service != Some(o.service) {
                last_service = Some(o.service);
                if !std::mem::replace(&mut service_seen[o.service as usize], true) {
                    b.services.push(o.service);
                }
            }
            if o.end_ns.div_euclid(1_000_000) > now_ms + MAX_FUTURE_MS {
                b.future += 1;
                continue;
            }
            // A start after the end is forged or broken; the end bounds it.
            let t = o.start_ns.min(o.end_ns).div_euclid(1_000_000);
            match &mut cell_at[o.cell as usize] {
                at @ &mut u32::MAX => {
                    *at = b.cells.len() as u32;
                    b.cells.push((o.cell, t));
                }
                at => {
                    let latest = &mut b.cells[*at as usize].1;
                    *latest = (*latest).max(t);
                }
            }
            let start_ms = spec.start_of_ns(o.end_ns);
            let entries = &mut b.entries;
            let e = *entry_of.entry((o.cell, o.service, o.route, start_ms)).or_insert_with(|| {
                entries.push(Entry {
                    cell: o.cell,
                    service: o.service,
                    route: o.route,
                    start_ms,
                    max_us: 0,
                    requests: 0,
                    errors: 0,
                    buckets_end: 0,
                    error_buckets_end: 0,
                    causes_end: 0,
                });
                (entries.len() - 1) as u32
            });
            let entry = &mut b.entries[e as usize];
            entry.max_us = entry.max_us.max(o.latency_us);
            entry.requests += 1;
            entry.errors += u64::from(o.cause != NO_CAUSE);
            samples.push(Sample { key: (u64::from(e) << 16) | u64::from(bucket_index(o.latency_us)), cause: o.cause });
        }
        samples.sort_unstable_by_key(|s| s.key);
        b.strings = strings;
        let mut i = 0;
        for (e, entry) in b.entries.iter_mut().enumerate() {
            let mut causes: Vec<(u32, u64)> = Vec::new();
            while i < samples.len() && (samples[i].key >> 16) as usize == e {
                let key = samples[i].key;
                let index = (key & 0xffff) as u16;
                let (mut n, mut failed) = (0u64, 0u64);
                while i < samples.len() && samples[i].key == key {
                    n += 1;
                    let cause = samples[i].cause;
                    if cause != NO_CAUSE {
                        failed += 1;
                        match causes.iter_mut().find(|(c, _)| *c == cause) {
                            Some((_, k)) => *k += 1,
                            None => causes.push((cause, 1)),
                        }
                    }
                    i += 1;
                }
                b.buckets.push((index, n));
                if failed > 0 {
                    b.error_buckets.push((index, failed));
                }
            }
            causes.sort_unstable();
            b.causes.extend(causes);
            entry.buckets_end = b.buckets.len() as u32;
            entry.error_buckets_end = b.error_buckets.len() as u32;
            entry.causes_end = b.causes.len() as u32;
        }
        b
    }

    /// Window width the entries' starts are aligned to.
    pub(crate) fn width_ms(&self) -> i64 {
        self.width_ms
    }

    /// Spans in the batch's windows (refused future ones not included).
    pub fn spans(&self) -> u64 {
        self.entries.iter().map(|e| e.requests).sum()
    }

    pub(crate) fn string(&self, id: u32) -> &str {
        &self.strings[id as usize]
    }

    pub(crate) fn strings_len(&self) -> usize {
        self.strings.len()
    }

    pub(crate) fn services(&self) -> &[u32] {
        &self.services
    }

    pub(crate) fn cells(&self) -> &[(u32, i64)] {
        &self.cells
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entry `i`'s buckets, its failures' buckets and its causes.
    #[allow(clippy::type_complexity)]
    pub(crate) fn parts(&self, i: usize) -> (&[(u16, u64)], &[(u16, u64)], &[(u32, u64)]) {
        let (b0, eb0, c0) = match i.checked_sub(1).map(|p| &self.entries[p]) {
            Some(p) => (p.buckets_end, p.error_buckets_end, p.causes_end),
            None => (0, 0, 0),
        };
        let e = &self.entries[i];
        (
            &self.buckets[b0 as usize..e.buckets_end as usize],
            &self.error_buckets[eb0 as usize..e.error_buckets_end as usize],
            &self.causes[c0 as usize..e.causes_end as usize],
        )
    }

    /// The compact encoding the WAL logs (see [`SpanBatch::decode`]).
    ///
    /// Window starts are counted in widths from the first entry's; a bucket list is its first
    /// index, then gaps, with counts only when some bucket holds more than one span; the exact
    /// maximum is its offset in the top bucket; the failures' buckets are positions in the
    /// entry's own list. Requests and errors are the sums of the bucket and cause counts.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        put_u64(out, self.width_ms as u64);
        let base = self.entries.first().map_or(0, |e| e.start_ms);
        put_i64(out, base);
        put_u64(out, self.strings.len() as u64);
        for s in &self.strings {
            put_bytes(out, s.as_bytes());
        }
        put_u64(out, self.services.len() as u64);
        for &s in &self.services {
            put_u64(out, u64::from(s));
        }
        put_u64(out, self.cells.len() as u64);
        for &(c, latest) in &self.cells {
            put_u64(out, u64::from(c));
            put_i64(out, latest.wrapping_sub(base));
        }
        put_u64(out, self.future);
        put_u64(out, self.entries.len() as u64);
        for (i, e) in self.entries.iter().enumerate() {
            let (buckets, error_buckets, causes) = self.parts(i);
            put_u64(out, u64::from(e.cell));
            put_u64(out, u64::from(e.service));
            put_u64(out, u64::from(e.route));
            put_i64(out, (e.start_ms.wrapping_sub(base)) / self.width_ms.max(1));
            let ones = buckets.iter().all(|&(_, n)| n == 1);
            put_u64(out, ((buckets.len() as u64) << 1) | u64::from(ones));
            let mut next = 0u16;
            for &(index, n) in buckets {
                put_u64(out, u64::from(index - next));
                next = index + 1;
                if !ones {
                    put_u64(out, n);
                }
            }
            let top = buckets.last().map_or(0, |&(index, _)| index);
            put_i64(out, (e.max_us as i64).wrapping_sub(bucket_lowest(top) as i64));
            put_u64(out, causes.len() as u64);
            for &(c, n) in causes {
                put_u64(out, u64::from(c));
                put_u64(out, n);
            }
            if !causes.is_empty() {
                put_u64(out, error_buckets.len() as u64);
                let mut pos = 0usize;
                for &(index, n) in error_buckets {
                    let at = buckets[pos..].iter().position(|&(i, _)| i == index).map_or(0, |p| p + pos);
                    put_u64(out, (at - pos) as u64);
                    put_u64(out, n);
                    pos = at + 1;
                }
            }
        }
    }

    /// Reads what [`SpanBatch::encode`] wrote, checking everything it relies on: indexes in
    /// range, buckets ascending, counts that add up; damage or forgery is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let mut r = Reader::new(bytes);
        if r.u8()? != VERSION {
            return Err(r.err("an unknown span batch version"));
        }
        let width_ms = i64::try_from(r.u64()?).ok().filter(|&w| w > 0).ok_or_else(|| r.err("a zero window width"))?;
        let base = r.i64()?;
        let n = r.count(1)?;
        let mut strings = Vec::with_capacity(n);
        for _ in 0..n {
            strings.push(Box::from(r.str()?));
        }
        let n_str = strings.len();
        let n = r.count(1)?;
        let mut services = Vec::with_capacity(n);
        for _ in 0..n {
            services.push(r.below(n_str, "a service index out of range")? as u32);
        }
        let n = r.count(2)?;
        let mut cells = Vec::with_capacity(n);
        let mut is_cell = vec![false; n_str];
        for _ in 0..n {
            let c = r.below(n_str, "a cell index out of range")?;
            if std::mem::replace(&mut is_cell[c], true) {
                return Err(r.err("a cell listed twice"));
            }
            cells.push((c as u32, base.wrapping_add(r.i64()?)));
        }
        let future = r.u64()?;
        let n = r.count(7)?;
        let mut b = SpanBatch { width_ms, strings, services, cells, future, ..Default::default() };
        b.entries.reserve(n);
        for _ in 0..n {
            let cell = r.below(n_str, "a cell index out of range")?;
            if !is_cell[cell] {
                return Err(r.err("an entry of a cell the batch does not list"));
            }
            let service = r.below(n_str, "a service index out of range")? as u32;
            let route = r.below(n_str, "a route index out of range")? as u32;
            let start_ms = r
                .i64()?
                .checked_mul(width_ms)
                .and_then(|d| base.checked_add(d))
                .filter(|s| s.abs() <= MAX_START_MS)
                .ok_or_else(|| r.err("a window start out of range"))?;
            let head = r.u64()?;
            let (n_buckets, ones) = (head >> 1, head & 1 == 1);
            if n_buckets == 0 || n_buckets > u64::from(MAX_INDEX) + 1 {
                return Err(r.err("an entry without buckets, or with more than there are"));
            }
            let mut next = 0u64;
            let mut requests = 0u64;
            let first = b.buckets.len();
            for _ in 0..n_buckets {
                let index = next.checked_add(r.u64()?).filter(|&i| i <= u64::from(MAX_INDEX));
                let index = index.ok_or_else(|| r.err("a bucket index out of range"))?;
                let count = if ones { 1 } else { r.u64()? };
                if count == 0 {
                    return Err(r.err("an empty bucket"));
                }
                requests = requests.checked_add(count).ok_or_else(|| r.err("counts overflow"))?;
                b.buckets.push((index as u16, count));
                next = index + 1;
            }
            let top = (next - 1) as u16;
            let max_us = (bucket_lowest(top) as i64).wrapping_add(r.i64()?);
            let max_us = u64::try_from(max_us).map_err(|_| r.err("a negative largest latency"))?;
            if bucket_index(max_us) != top {
                return Err(r.err("a largest latency outside the top bucket"));
            }
            let n_causes = r.count(2)?;
            let mut errors = 0u64;
            let mut last_cause = None;
            for _ in 0..n_causes {
                let c = r.below(n_str, "a cause index out of range")? as u32;
                if last_cause.is_some_and(|l| l >= c) {
                    return Err(r.err("causes out of order"));
                }
                last_cause = Some(c);
                let n = r.u64()?;
                if n == 0 {
                    return Err(r.err("a cause without failures"));
                }
                errors = errors.checked_add(n).ok_or_else(|| r.err("counts overflow"))?;
                b.causes.push((c, n));
            }
            if n_causes > 0 {
                let n = r.count(2)?;
                let mut pos = 0usize;
                let mut failed = 0u64;
                for _ in 0..n {
                    let at = pos.checked_add(r.u64()? as usize).filter(|&a| a < b.buckets.len() - first);
                    let at = at.ok_or_else(|| r.err("a failures' bucket outside the entry's"))?;
                    let (index, all) = b.buckets[first + at];
                    let k = r.u64()?;
                    if k == 0 || k > all {
                        return Err(r.err("a failures' bucket with more spans than its bucket"));
                    }
                    failed += k;
                    b.error_buckets.push((index, k));
                    pos = at + 1;
                }
                if failed != errors {
                    return Err(r.err("failures' buckets that do not add up to the causes"));
                }
            }
            b.entries.push(Entry {
                cell: cell as u32,
                service,
                route,
                start_ms,
                max_us,
                requests,
                errors,
                buckets_end: b.buckets.len() as u32,
                error_buckets_end: b.error_buckets.len() as u32,
                causes_end: b.causes.len() as u32,
            });
        }
        if !r.is_done() {
            return Err(r.err("bytes after the last entry"));
        }
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapping::SpanObs;
    use proptest::prelude::*;
    use std::borrow::Cow;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_005_000;

    fn spec() -> WindowSpec {
        WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30))
    }

    /// Observations of spans (cell, route, latency µs, end offset ms from NOW, cause).
    fn obs(spans: &[(u8, u8, u64, i64, Option<u8>)]) -> Observations<'static> {
        let mut o = Observations::default();
        let svc = o.strings.intern(Cow::Borrowed("svc"));
        for &(cell, route, latency_us, end, cause) in spans {
            let cell = o.strings.intern(Cow::Owned(format!("cell-{cell}")));
            let route = o.strings.intern(Cow::Owned(format!("/r{route}")));
            let cause = cause.map_or(NO_CAUSE, |c| o.strings.intern(Cow::Owned(format!("cause-{c}"))));
            let end_ns = (NOW + end) * 1_000_000;
            o.spans.push(SpanObs { cell, service: svc, route, cause, latency_us, end_ns, start_ns: end_ns - 1_000 });
        }
        o
    }

    #[test]
    fn spans_fold_per_series_and_window() {
        let o = obs(&[
            (1, 1, 100, 0, None),
            (1, 1, 100, -1, Some(1)),
            (1, 1, 5_000, -2, Some(2)),
            (2, 1, 7, -11_000, None),
            (1, 1, 9, -20_000, None),
            (1, 1, 9, 400_000, None),
        ]);
        let b = SpanBatch::from_spans(&o, spec(), NOW);
        assert_eq!(b.future, 1);
        assert_eq!(b.entries.len(), 3);
        assert_eq!(b.spans(), 5);
        let (buckets, errors, causes) = b.parts(0);
        assert_eq!(buckets, [(bucket_index(100), 2), (bucket_index(5_000), 1)]);
        assert_eq!(errors, [(bucket_index(100), 1), (bucket_index(5_000), 1)]);
        assert_eq!(causes.len(), 2);
        assert_eq!((b.entries[0].requests, b.entries[0].errors, b.entries[0].max_us), (3, 2, 5_000));
        let cells: Vec<&str> = b.cells().iter().map(|&(c, _)| b.string(c)).collect();
        assert_eq!(cells, ["cell-1", "cell-2"], "first appearance");
        let mut bytes = Vec::new();
        b.encode(&mut bytes);
        let mut back = SpanBatch::decode(&bytes).unwrap();
        (back.ignored, back.truncated) = (b.ignored, b.truncated);
        assert_eq!(back, b);
    }

    #[test]
    fn damage_is_refused() {
        let o = obs(&[(1, 1, 100, 0, Some(1)), (1, 2, 300, 0, None), (1, 2, 300, 0, None)]);
        let mut bytes = Vec::new();
        SpanBatch::from_spans(&o, spec(), NOW).encode(&mut bytes);
        assert!(SpanBatch::decode(&bytes[..bytes.len() - 1]).is_err(), "cut");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SpanBatch::decode(&longer).is_err(), "trailing bytes");
        for i in 0..bytes.len() {
            for flip in [1u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                // Either refused or a batch that encodes back to the same bytes: never a panic.
                if let Ok(d) = SpanBatch::decode(&b) {
                    let mut again = Vec::new();
                    d.encode(&mut again);
                    assert_eq!(SpanBatch::decode(&again).unwrap(), d);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn encoding_round_trips(spans in proptest::collection::vec(
            (0u8..4, 0u8..6, 0u64..4_000_000_000, -40_000i64..310_000, proptest::option::of(0u8..3)), 0..300)
        ) {
            let b = SpanBatch::from_spans(&obs(&spans), spec(), NOW);
            let mut bytes = Vec::new();
            b.encode(&mut bytes);
            let mut back = SpanBatch::decode(&bytes).unwrap();
            (back.ignored, back.truncated) = (b.ignored, b.truncated);
            prop_assert_eq!(back, b);
        }
    }
}
