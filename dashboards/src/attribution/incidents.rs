//! Incidents: the range in 1-minute buckets (from the finest rows there are), and the runs of
//! buckets burning faster than `incident_burn_rate`, each named after the cell behind most of it.

use super::rows::{Rows, each_row, fine_plan, selected, walk};
use super::{Counts, Incident, MINUTE_MS, ReportSettings, Scope, floor, fraction};
use arrow::record_batch::RecordBatch;
use cellpilot_core::config::SloConfig;
use cellpilot_core::objective::Objective;
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_query::files::Table;
use cellpilot_query::store::Piece;
use std::collections::BTreeMap;

fn hhmm(ms: i64) -> String {
    let s = format_rfc3339_ms(ms);
    s.get(11..16).unwrap_or("").to_string()
}

/// One incident bucket: a minute of finest windows, or one coarser window where only coarse
/// tiers remain.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    end: i64,
    counts: Counts,
}

/// The incident bucket of a window: its minute, or itself when it is a minute or longer.
fn bucket_of(start: i64, end: i64) -> (i64, i64) {
    if end - start < MINUTE_MS {
        let m = floor(start, MINUTE_MS);
        (m, m + MINUTE_MS)
    } else {
        (start, end)
    }
}

/// Per-bucket counts of the selected rows of one file.
type FileMinutes = Vec<((i64, i64), Counts)>;

fn file_minutes(
    batches: &[RecordBatch],
    slo: &SloConfig,
    threshold_us: Option<u64>,
) -> cellpilot_query::Result<FileMinutes> {
    let mut out: BTreeMap<i64, ((i64, i64), Counts)> = BTreeMap::new();
    for b in batches {
        let r = Rows::of(b)?;
        for i in 0..b.num_rows() {
            if selected(slo, r.cell, r.service, r.route, i) {
                let bucket = bucket_of(r.start.value(i), r.end.value(i));
                let e = out.entry(bucket.0).or_insert((bucket, Counts::default()));
                e.0.1 = e.0.1.max(bucket.1);
                e.1.add(r.requests.value(i), r.bad(i, threshold_us)?);
            }
        }
    }
    Ok(out.into_values().collect())
}

/// Buckets of `[from, to)` indexed by minute from `floor(from, 1 min)`, from the finest rows.
pub(super) struct Minutes {
    first: i64,
    slots: Vec<Bucket>,
}

impl Minutes {
    fn slot(&self, start: i64) -> usize {
        usize::try_from((floor(start, MINUTE_MS) - self.first) / MINUTE_MS).unwrap_or(0)
    }

    /// Adds a bucket's counts.
    fn add(&mut self, (start, end): (i64, i64), counts: Counts) {
        let idx = self.slot(start.max(self.first));
        if let Some(b) = self.slots.get_mut(idx) {
            b.end = b.end.max(end);
            b.counts.add(counts.requests, counts.bad);
        }
    }

    /// Reads the buckets. Files wholly inside the range are summed once per file and SLO
    /// selection, then reused by the store: a refresh reads only the newest rows.
    pub(super) fn read(s: &Scope<'_>) -> cellpilot_query::Result<Self> {
        let (store, slo, threshold_us, from, to) = (s.store, s.slo, s.threshold_us, s.from, s.to);
        let first = floor(from, MINUTE_MS);
        let n = usize::try_from((to - first + MINUTE_MS - 1) / MINUTE_MS).unwrap_or(0);
        let mut m = Minutes { first, slots: vec![Bucket::default(); n] };
        let key = format!("attribution minutes {:?} {threshold_us:?}", slo.selector);
        for part in fine_plan(s) {
            let pieces = store.scan_derived(Table::Rollups, part.tier, (part.from_ms, part.to_ms), &key, |b| {
                let m = file_minutes(b, slo, threshold_us)?;
                let bytes = m.len() * std::mem::size_of::<((i64, i64), Counts)>();
                Ok((m, bytes))
            })?;
            for piece in pieces {
                match piece {
                    Piece::Derived(list) => {
                        for (bucket, counts) in list.iter() {
                            m.add(*bucket, *counts);
                        }
                    }
                    Piece::Edge(_) => {
                        return Err(cellpilot_core::error::Internal::new("scan_derived gave an edge file").into());
                    }
                    Piece::Rows(batches) => each_row(&part, slo, &batches, |r, i| {
                        let c = Counts { requests: r.requests.value(i), bad: r.bad(i, threshold_us)? };
                        m.add(bucket_of(r.start.value(i), r.end.value(i)), c);
                        Ok(())
                    })?,
                }
            }
        }
        Ok(m)
    }

    fn start(&self, idx: usize) -> i64 {
        self.first + idx as i64 * MINUTE_MS
    }
}

/// A run of hot buckets: (start, end, bad).
type Run = (i64, i64, u64);

/// Incidents of objective `o`: maximal runs of buckets burning faster than `incident_burn_rate`,
/// merged across gaps shorter than `incident_gap`, each named after the cell with the most bad
/// events in its hot buckets.
pub(super) fn incidents(
    s: &Scope<'_>,
    settings: &ReportSettings,
    minutes: &Minutes,
    o: &Objective,
    total_bad: u64,
) -> cellpilot_query::Result<Vec<Incident>> {
    let k = o.kind;
    let gap = settings.incident_gap_ms;
    let hot: Vec<bool> = minutes
        .slots
        .iter()
        .map(|b| b.counts.requests > 0 && o.burn_rate(b.counts.bad[k], b.counts.requests) > settings.incident_burn_rate)
        .collect();
    let mut runs: Vec<Run> = Vec::new();
    for (idx, b) in minutes.slots.iter().enumerate().filter(|(i, _)| hot[*i]) {
        let start = minutes.start(idx);
        match runs.last_mut() {
            Some(last) if start - last.1 < gap => {
                last.1 = b.end;
                last.2 = last.2.saturating_add(b.counts.bad[k]);
            }
            _ => runs.push((start, b.end, b.counts.bad[k])),
        }
    }
    let mut out = Vec::with_capacity(runs.len());
    for (from, to, bad) in runs {
        // Which cell: only the run's own minutes are read again, and only its hot buckets count.
        let mut cells: BTreeMap<String, u64> = BTreeMap::new();
        walk(s, &fine_plan(&s.over(from, to)), |r, i| {
            let (start, end) = (r.start.value(i), r.end.value(i));
            if end <= from || !hot.get(minutes.slot(start.max(minutes.first))).copied().unwrap_or(false) {
                return Ok(());
            }
            let n = r.bad(i, s.threshold_us)?[k];
            if n > 0 {
                match cells.get_mut(r.cell.value(i)) {
                    Some(x) => *x = x.saturating_add(n),
                    None => {
                        cells.insert(r.cell.value(i).to_string(), n);
                    }
                }
            }
            Ok(())
        })?;
        let cell =
            cells.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(c, _)| c).unwrap_or_default();
        out.push(Incident {
            key: format!("{cell} {}–{}", hhmm(from), hhmm(to)),
            cell,
            from: format_rfc3339_ms(from),
            to: format_rfc3339_ms(to),
            bad_events: bad,
            share: fraction(bad, total_bad),
        });
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.bad_events));
    Ok(out)
}
