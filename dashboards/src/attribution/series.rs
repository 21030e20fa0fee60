//! Counts per series and errors per cause over the tiered reading of a range: the splits by
//! cell, service, route and cause.

use super::rows::{Names, Rows, each_row, selected, tiered};
use super::{Counts, Scope, Share, fraction};
use arrow::record_batch::RecordBatch;
use cellpilot_core::config::SloConfig;
use cellpilot_core::schema::ErrorsByCauseColumns;
use cellpilot_query::files::Table;
use cellpilot_query::store::Piece;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// (cell, service, route).
pub(super) type SeriesKey = (Arc<str>, Arc<str>, Arc<str>);

/// Per-series counts of the selected rows of one file.
type FileSeries = Vec<((String, String, String), Counts)>;

fn file_series(
    batches: &[RecordBatch],
    slo: &SloConfig,
    threshold_us: Option<u64>,
) -> cellpilot_query::Result<FileSeries> {
    let mut out: HashMap<(&str, &str, &str), Counts> = HashMap::new();
    for b in batches {
        let r = Rows::of(b)?;
        for i in 0..b.num_rows() {
            if selected(slo, r.cell, r.service, r.route, i) {
                let key = (r.cell.value(i), r.service.value(i), r.route.value(i));
                out.entry(key).or_default().add(r.requests.value(i), r.bad(i, threshold_us)?);
            }
        }
    }
    Ok(out.into_iter().map(|((c, sv, rt), n)| ((c.to_string(), sv.to_string(), rt.to_string()), n)).collect())
}

/// Counts per series over the tiered reading of `[from, to)`. Whole hourly and 5-minute files
/// are summed once per file and SLO selection, then reused by the store.
pub(super) fn by_series(s: &Scope<'_>) -> cellpilot_query::Result<HashMap<SeriesKey, Counts>> {
    let (store, slo, threshold_us) = (s.store, s.slo, s.threshold_us);
    let mut names = Names::default();
    let mut out: HashMap<SeriesKey, Counts> = HashMap::new();
    let key = format!("attribution series {:?} {threshold_us:?}", slo.selector);
    for part in tiered(s) {
        let pieces = store.scan_derived(Table::Rollups, part.tier, (part.from_ms, part.to_ms), &key, |b| {
            let list = file_series(b, slo, threshold_us)?;
            let names: usize = list.iter().map(|((c, sv, r), _)| c.len() + sv.len() + r.len()).sum();
            let bytes = names + list.len() * std::mem::size_of::<((String, String, String), Counts)>();
            Ok((list, bytes))
        })?;
        for piece in pieces {
            match piece {
                Piece::Derived(list) => {
                    for ((c, sv, rt), n) in list.iter() {
                        out.entry((names.get(c), names.get(sv), names.get(rt))).or_default().add(n.requests, n.bad);
                    }
                }
                Piece::Edge(_) => {
                    return Err(cellpilot_core::error::Internal::new("scan_derived gave an edge file").into());
                }
                Piece::Rows(batches) => each_row(&part, slo, &batches, |r, i| {
                    let key = (names.get(r.cell.value(i)), names.get(r.service.value(i)), names.get(r.route.value(i)));
                    out.entry(key).or_default().add(r.requests.value(i), r.bad(i, threshold_us)?);
                    Ok(())
                })?,
            }
        }
    }
    Ok(out)
}

/// Counts over the tiered reading of `[from, to)`.
pub(super) fn totals(s: &Scope<'_>) -> cellpilot_query::Result<Counts> {
    let mut out = Counts::default();
    for n in by_series(s)?.values() {
        out.add(n.requests, n.bad);
    }
    Ok(out)
}

/// Errors per cause over the tiered reading of `[from, to)`.
pub(super) fn causes(scope: &Scope<'_>) -> cellpilot_query::Result<BTreeMap<String, u64>> {
    let (store, slo) = (scope.store, scope.slo);
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for part in tiered(scope) {
        for b in store.scan(Table::ErrorsByCause, part.tier, part.from_ms, part.to_ms, None)? {
            let ErrorsByCauseColumns { start: s, end: e, cell: c, service: sv, route: r, cause, errors: n } =
                ErrorsByCauseColumns::of(&b)?;
            for i in 0..b.num_rows() {
                if part.holds(s.value(i), e.value(i)) && selected(slo, c, sv, r, i) {
                    match out.get_mut(cause.value(i)) {
                        Some(x) => *x = x.saturating_add(n.value(i)),
                        None => {
                            out.insert(cause.value(i).to_string(), n.value(i));
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

pub(super) fn shares(by: impl IntoIterator<Item = (String, u64)>, total: u64) -> Vec<Share> {
    let mut v: Vec<Share> = by
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(key, bad_events)| Share { key, bad_events, share: fraction(bad_events, total) })
        .collect();
    v.sort_by(|a, b| b.bad_events.cmp(&a.bad_events).then(a.key.cmp(&b.key)));
    v
}
