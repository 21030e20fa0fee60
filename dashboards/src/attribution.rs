//! SLA gap attribution: for an SLO over a range, per objective (availability, latency), observed
//! vs target, budget spent and left, burn rates, and the bad events split by cell, service, route
//! and cause (each summing to 100 %), by incident (runs of 1-minute buckets burning faster than
//! `incident_burn_rate`, merged across gaps shorter than `incident_gap`) and by cut-over (bad
//! events on a drained cell from its failure onset to the cut-over's completion, and how many a
//! cut-over meeting the target would have avoided).
//!
//! Reading: totals, burn rates and the splits go through the tiers (whole hours from the hourly
//! tier, exact); incidents need 1-minute buckets, so one pass over the finest rows sums them per
//! minute without names, and names are read again only inside incidents; cut-overs read the
//! drained cell's windows around each drain. Sums over whole Parquet files are derived once per
//! file and SLO selection ([`RollupStore::scan_derived`]), so a refresh reads only new rows.

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use cellpilot_core::config::{DashboardsConfig, SloConfig};
use cellpilot_core::latency;
use cellpilot_core::schema::{ErrorsByCauseColumns, RollupColumns};
use cellpilot_core::slo::{LATENCY_TARGET, burn_rate};
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_query::RollupStore;
use cellpilot_query::cells::Part;
use cellpilot_query::files::Table;
use cellpilot_query::store::Piece;
use cellpilot_query::tier::{FIVE_MIN_MS, Tier};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A drain to attribute: what the `cutovers` table says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    /// Drained cell.
    pub cell: String,
    /// The drain's table version.
    pub version: Option<u64>,
    /// When it was decided (t0), unix ms.
    pub decided_at_ms: i64,
    /// When the cell served its last request, unix ms.
    pub completed_at_ms: Option<i64>,
    /// completed − decided.
    pub duration_ms: Option<i64>,
}

/// One entry of an attribution list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    /// The cell, service, route or cause.
    pub key: String,
    /// Bad events it accounts for.
    pub bad_events: u64,
    /// Fraction of the objective's bad events.
    pub share: f64,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// `cell HH:MM–HH:MM`.
    pub key: String,
    /// The cell with the most bad events in it.
    pub cell: String,
    /// Start (RFC 3339).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
    /// Bad events in it.
    pub bad_events: u64,
    /// Fraction of the objective's bad events.
    pub share: f64,
}

/// A cut-over's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoverShare {
    /// `cell vN`.
    pub key: String,
    /// Drained cell.
    pub cell: String,
    /// The drain's version.
    pub decision_version: Option<u64>,
    /// Bad events from failure onset to completion.
    pub bad_events: u64,
    /// Fraction of the objective's bad events.
    pub share: f64,
    /// Bad events after `decided_at + cutover_ms`: what a cut-over on target would have avoided.
    pub avoidable_at_target: u64,
}

/// Attribution of one objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribution {
    /// By cell.
    pub cell: Vec<Share>,
    /// By service.
    pub service: Vec<Share>,
    /// By route.
    pub route: Vec<Share>,
    /// By cause (availability only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Vec<Share>>,
    /// By incident.
    pub incident: Vec<Incident>,
    /// By cut-over.
    pub cutover: Vec<CutoverShare>,
}

/// How an objective stands over a range: what the SLO cards show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    /// Latency threshold (latency objective only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<f64>,
    /// Target.
    pub target: f64,
    /// Bad events.
    pub bad_events: u64,
    /// 1 − bad/requests.
    pub observed: f64,
    /// target − observed (negative when met).
    pub gap: f64,
    /// (1 − target) × requests.
    pub budget: f64,
    /// Fraction of the budget spent.
    pub budget_spent: f64,
    /// Fraction of the budget left.
    pub budget_left: f64,
    /// Burn rate over the last hour of the range.
    pub burn_rate_1h: f64,
    /// Burn rate over the last 6 hours of the range.
    pub burn_rate_6h: f64,
}

/// One objective's numbers and where its bad events came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    /// How it stands.
    #[serde(flatten)]
    pub standing: Standing,
    /// Where the bad events came from.
    pub attribution: Attribution,
}

/// Cut-over timing against the SLO's target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoverSummary {
    /// `cutover_ms`.
    pub target_ms: Option<u64>,
    /// Finished cut-overs in the range.
    pub count: usize,
    /// Median duration.
    pub p50_ms: Option<i64>,
    /// Longest.
    pub max_ms: Option<i64>,
    /// Over the target.
    pub over_target: usize,
}

/// `GET /api/v1/sla/{slo}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// SLO name.
    pub slo: String,
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end (RFC 3339).
    pub to: String,
    /// Requests in the range.
    pub requests: u64,
    /// Availability objective.
    pub availability: Objective,
    /// Latency objective, when the SLO has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Objective>,
    /// Cut-over timing.
    pub cutover: CutoverSummary,
}

/// The SLO cards' view of a range: requests and how each objective stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Requests in the range.
    pub requests: u64,
    /// Availability objective.
    pub availability: Standing,
    /// Latency objective, when asked for and the SLO has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Standing>,
}

/// Index of the availability objective in [`Bad`].
const AVAILABILITY: usize = 0;
/// Index of the latency objective in [`Bad`].
const LATENCY: usize = 1;
/// Bad events of a row for each objective.
type Bad = [u64; 2];

/// Requests and bad events.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    requests: u64,
    bad: Bad,
}

impl Counts {
    fn add(&mut self, requests: u64, bad: Bad) {
        self.requests += requests;
        self.bad[AVAILABILITY] += bad[AVAILABILITY];
        self.bad[LATENCY] += bad[LATENCY];
    }
}

const MINUTE_MS: i64 = 60_000;
/// How far before a drain its failure onset is looked for first (widened while the run of
/// failing windows reaches further back).
const ONSET_LOOKBACK_MS: i64 = 600_000;

fn internal(e: impl Into<String>) -> cellpilot_query::Error {
    cellpilot_query::Error::Internal(e.into())
}

fn floor(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

/// The columns of a rollups batch, with the bad events of a row.
struct Rows<'a>(RollupColumns<'a>);

impl<'a> std::ops::Deref for Rows<'a> {
    type Target = RollupColumns<'a>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<'a> Rows<'a> {
    fn of(b: &'a RecordBatch) -> cellpilot_query::Result<Self> {
        Ok(Self(RollupColumns::of(b)?))
    }

    /// Bad events of row `i`: errors, and slow non-error requests when a threshold is given.
    fn bad(&self, i: usize, threshold_us: Option<u64>) -> cellpilot_query::Result<Bad> {
        let errors = self.errors.value(i);
        let slow = match threshold_us {
            // Nothing in a window whose slowest request was fast enough: skip the decode.
            Some(t) if self.max_us.value(i) > t => {
                latency::count_above_max(self.hist.value(i), t, self.max_us.value(i)).map_err(internal)?
            }
            _ => 0,
        };
        // Rollups keep one histogram per window, errors included: slow requests that failed
        // already count against availability.
        Ok([errors, slow.saturating_sub(errors)])
    }
}

/// Whether row `i` of a batch with these name columns is in the SLO's selection.
fn selected(slo: &SloConfig, cell: &StringArray, service: &StringArray, route: &StringArray, i: usize) -> bool {
    let s = &slo.selector;
    s.cell.as_deref().is_none_or(|c| c == cell.value(i))
        && s.service.as_deref().is_none_or(|c| c == service.value(i))
        && s.route.as_deref().is_none_or(|c| c == route.value(i))
}

/// Calls `f(rows, i)` for every selected row of `batches` that `part` holds.
fn each_row(
    part: &Part,
    slo: &SloConfig,
    batches: &[RecordBatch],
    mut f: impl FnMut(&Rows<'_>, usize) -> cellpilot_query::Result<()>,
) -> cellpilot_query::Result<()> {
    for b in batches {
        let rows = Rows::of(b)?;
        for i in 0..b.num_rows() {
            if part.holds(rows.start.value(i), rows.end.value(i))
                && selected(slo, rows.cell, rows.service, rows.route, i)
            {
                f(&rows, i)?;
            }
        }
    }
    Ok(())
}

/// Calls `f(rows, i)` for every selected rollups row of `parts`.
fn walk(
    store: &RollupStore,
    slo: &SloConfig,
    parts: &[Part],
    mut f: impl FnMut(&Rows<'_>, usize) -> cellpilot_query::Result<()>,
) -> cellpilot_query::Result<()> {
    for part in parts {
        each_row(part, slo, &store.scan(Table::Rollups, part.tier, part.from_ms, part.to_ms, None)?, &mut f)?;
    }
    Ok(())
}

/// The coarsest exact reading of `[from, to)`: whole hours, whole 5 minutes, finest edges.
fn tiered(store: &RollupStore, from: i64, to: i64, now: i64) -> Vec<Part> {
    if from >= to {
        return Vec::new();
    }
    cellpilot_query::cells::plan(from, to, now - store.retention_ms(Tier::Fine))
}

/// The finest rows there are: the finest tier while it is retained (incidents need 1-minute
/// buckets, cut-overs the windows around their drain), 5-minute windows before that.
fn fine_plan(store: &RollupStore, from: i64, to: i64, now: i64) -> Vec<Part> {
    let horizon = now - store.retention_ms(Tier::Fine);
    let fine_start = from.max(horizon + (FIVE_MIN_MS - horizon.rem_euclid(FIVE_MIN_MS)) % FIVE_MIN_MS).min(to);
    let mut parts = Vec::new();
    if from < fine_start {
        parts.push(Part { tier: Tier::FiveMin, from_ms: from, to_ms: fine_start, inside: false });
    }
    if fine_start < to {
        parts.push(Part { tier: Tier::Fine, from_ms: fine_start, to_ms: to, inside: false });
    }
    parts
}

/// Shared copies of names, so a row costs no allocation.
#[derive(Default)]
struct Names(HashSet<Arc<str>>);

impl Names {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.0.get(s) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(s);
        self.0.insert(n.clone());
        n
    }
}

/// (cell, service, route).
type SeriesKey = (Arc<str>, Arc<str>, Arc<str>);

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
fn by_series(
    store: &RollupStore,
    slo: &SloConfig,
    (from, to, now): (i64, i64, i64),
    threshold_us: Option<u64>,
) -> cellpilot_query::Result<HashMap<SeriesKey, Counts>> {
    let mut names = Names::default();
    let mut out: HashMap<SeriesKey, Counts> = HashMap::new();
    let key = format!("attribution series {:?} {threshold_us:?}", slo.selector);
    for part in tiered(store, from, to, now) {
        let pieces = store.scan_derived(Table::Rollups, part.tier, (part.from_ms, part.to_ms), &key, |b| {
            let s = file_series(b, slo, threshold_us)?;
            let names: usize = s.iter().map(|((c, sv, r), _)| c.len() + sv.len() + r.len()).sum();
            let bytes = names + s.len() * std::mem::size_of::<((String, String, String), Counts)>();
            Ok((s, bytes))
        })?;
        for piece in pieces {
            match piece {
                Piece::Derived(list) => {
                    for ((c, sv, rt), n) in list.iter() {
                        out.entry((names.get(c), names.get(sv), names.get(rt))).or_default().add(n.requests, n.bad);
                    }
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
fn totals(
    store: &RollupStore,
    slo: &SloConfig,
    range: (i64, i64, i64),
    threshold_us: Option<u64>,
) -> cellpilot_query::Result<Counts> {
    let mut out = Counts::default();
    for n in by_series(store, slo, range, threshold_us)?.values() {
        out.add(n.requests, n.bad);
    }
    Ok(out)
}

/// Errors per cause over the tiered reading of `[from, to)`.
fn causes(
    store: &RollupStore,
    slo: &SloConfig,
    (from, to, now): (i64, i64, i64),
) -> cellpilot_query::Result<BTreeMap<String, u64>> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for part in tiered(store, from, to, now) {
        for b in store.scan(Table::ErrorsByCause, part.tier, part.from_ms, part.to_ms, None)? {
            let ErrorsByCauseColumns { start: s, end: e, cell: c, service: sv, route: r, cause, errors: n } =
                ErrorsByCauseColumns::of(&b)?;
            for i in 0..b.num_rows() {
                if part.holds(s.value(i), e.value(i)) && selected(slo, c, sv, r, i) {
                    match out.get_mut(cause.value(i)) {
                        Some(x) => *x += n.value(i),
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

fn shares(by: impl IntoIterator<Item = (String, u64)>, total: u64) -> Vec<Share> {
    let mut v: Vec<Share> = by
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(key, bad_events)| Share { key, bad_events, share: fraction(bad_events, total) })
        .collect();
    v.sort_by(|a, b| b.bad_events.cmp(&a.bad_events).then(a.key.cmp(&b.key)));
    v
}

fn fraction(part: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { part as f64 / total as f64 }
}

fn hhmm(ms: i64) -> String {
    let s = format_rfc3339_ms(ms);
    s.get(11..16).unwrap_or("").to_string()
}

/// Counts over the range and over its last 1 and 6 hours.
struct Spans {
    all: Counts,
    last_1h: Counts,
    last_6h: Counts,
}

fn standing(k: usize, target: f64, threshold_ms: Option<f64>, s: &Spans) -> Standing {
    let (bad, requests) = (s.all.bad[k], s.all.requests);
    let observed = if requests == 0 { 1.0 } else { 1.0 - bad as f64 / requests as f64 };
    let budget = (1.0 - target) * requests as f64;
    let spent = if budget > 0.0 { bad as f64 / budget } else { 0.0 };
    Standing {
        threshold_ms,
        target,
        bad_events: bad,
        observed,
        gap: target - observed,
        budget,
        budget_spent: spent,
        budget_left: 1.0 - spent,
        burn_rate_1h: burn_rate(s.last_1h.bad[k], s.last_1h.requests, target),
        burn_rate_6h: burn_rate(s.last_6h.bad[k], s.last_6h.requests, target),
    }
}

/// The range's counts and those of its last 1 and 6 hours (the burn rates), all read through
/// the tiers; `all` is given when the caller already has it.
fn spans(
    store: &RollupStore,
    slo: &SloConfig,
    (from, to, now): (i64, i64, i64),
    threshold_us: Option<u64>,
    all: Option<Counts>,
) -> cellpilot_query::Result<Spans> {
    let last = |w: i64| totals(store, slo, (from.max(to - w), to, now), threshold_us);
    let all = match all {
        Some(c) => c,
        None => totals(store, slo, (from, to, now), threshold_us)?,
    };
    Ok(Spans { all, last_1h: last(3_600_000)?, last_6h: last(6 * 3_600_000)? })
}

/// How the SLO stands over `[from_ms, to_ms)`: the SLO cards. Only whole-window counts are read
/// (through the tiers), so a 30-day period costs a few thousand rows; the latency objective (which
/// decodes histograms) only when `with_latency`.
pub fn summary(
    store: &RollupStore,
    slo: &SloConfig,
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
    with_latency: bool,
) -> cellpilot_query::Result<Summary> {
    let threshold_ms = slo.latency_p999_ms.filter(|_| with_latency);
    let s = spans(store, slo, (from_ms, to_ms, now_ms), threshold_ms.map(threshold_us), None)?;
    Ok(Summary {
        requests: s.all.requests,
        availability: standing(AVAILABILITY, slo.availability, None, &s),
        latency: threshold_ms.map(|t| standing(LATENCY, LATENCY_TARGET, Some(t), &s)),
    })
}

fn threshold_us(ms: f64) -> u64 {
    (ms * 1000.0) as u64
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
struct Minutes {
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
    fn read(
        store: &RollupStore,
        slo: &SloConfig,
        (from, to, now): (i64, i64, i64),
        threshold_us: Option<u64>,
    ) -> cellpilot_query::Result<Self> {
        let first = floor(from, MINUTE_MS);
        let n = usize::try_from((to - first + MINUTE_MS - 1) / MINUTE_MS).unwrap_or(0);
        let mut m = Minutes { first, slots: vec![Bucket::default(); n] };
        let key = format!("attribution minutes {:?} {threshold_us:?}", slo.selector);
        for part in fine_plan(store, from, to, now) {
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

/// Incidents of objective `k`: maximal runs of buckets burning faster than `incident_burn_rate`,
/// merged across gaps shorter than `incident_gap`, each named after the cell with the most bad
/// events in its hot buckets.
#[allow(clippy::too_many_arguments)]
fn incidents(
    store: &RollupStore,
    slo: &SloConfig,
    minutes: &Minutes,
    (k, target, threshold_us): (usize, f64, Option<u64>),
    dash: &DashboardsConfig,
    now: i64,
    total_bad: u64,
) -> cellpilot_query::Result<Vec<Incident>> {
    let gap = dash.incident_gap.as_millis_i64();
    let hot: Vec<bool> = minutes
        .slots
        .iter()
        .map(|b| {
            b.counts.requests > 0 && burn_rate(b.counts.bad[k], b.counts.requests, target) > dash.incident_burn_rate
        })
        .collect();
    let mut runs: Vec<Run> = Vec::new();
    for (idx, b) in minutes.slots.iter().enumerate().filter(|(i, _)| hot[*i]) {
        let start = minutes.start(idx);
        match runs.last_mut() {
            Some(last) if start - last.1 < gap => {
                last.1 = b.end;
                last.2 += b.counts.bad[k];
            }
            _ => runs.push((start, b.end, b.counts.bad[k])),
        }
    }
    let mut out = Vec::with_capacity(runs.len());
    for (from, to, bad) in runs {
        // Which cell: only the run's own minutes are read again, and only its hot buckets count.
        let mut cells: BTreeMap<String, u64> = BTreeMap::new();
        walk(store, slo, &fine_plan(store, from, to, now), |r, i| {
            let (s, e) = (r.start.value(i), r.end.value(i));
            if e <= from || !hot.get(minutes.slot(s.max(minutes.first))).copied().unwrap_or(false) {
                return Ok(());
            }
            let n = r.bad(i, threshold_us)?[k];
            if n > 0 {
                match cells.get_mut(r.cell.value(i)) {
                    Some(x) => *x += n,
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

/// What one drain cost each objective: bad events from its failure onset to completion, and
/// those after `decided_at + cutover_ms`.
struct DrainCost {
    drain: Drain,
    bad: Bad,
    avoidable: Bad,
}

/// The cost of drain `d` (completed at `done`): the cell's finest windows around it are read,
/// from the run of windows over `drain_error_rate` that led to the drain (the failure onset) to
/// completion.
fn drain_cost(
    store: &RollupStore,
    slo: &SloConfig,
    d: &Drain,
    done: i64,
    (from, to, now): (i64, i64, i64),
    (threshold_us, drain_error_rate, cutover_ms): (Option<u64>, f64, Option<u64>),
) -> cellpilot_query::Result<DrainCost> {
    let end = (done + 1).min(to);
    let mut back = ONSET_LOOKBACK_MS;
    loop {
        let lo = d.decided_at_ms.saturating_sub(back).max(from).min(end);
        // Per window of the cell: (end, errors, requests, bad).
        let mut windows: BTreeMap<i64, (i64, u64, u64, Bad)> = BTreeMap::new();
        walk(store, slo, &fine_plan(store, lo, end, now), |r, i| {
            if r.cell.value(i) != d.cell {
                return Ok(());
            }
            let bad = r.bad(i, threshold_us)?;
            let w = windows.entry(r.start.value(i)).or_insert((r.end.value(i), 0, 0, [0, 0]));
            w.1 += r.errors.value(i);
            w.2 += r.requests.value(i);
            w.3[AVAILABILITY] += bad[AVAILABILITY];
            w.3[LATENCY] += bad[LATENCY];
            Ok(())
        })?;
        let mut onset = d.decided_at_ms;
        let mut in_run = false;
        for (start, (_, errors, requests, _)) in windows.range(..d.decided_at_ms).rev() {
            if cellpilot_core::error_rate(*errors, *requests) > drain_error_rate {
                onset = *start;
                in_run = true;
            } else if in_run {
                break;
            }
        }
        // The run reaches the first window read: it may have begun earlier.
        if in_run && windows.keys().next() == Some(&onset) && lo > from {
            back = back.saturating_mul(4);
            continue;
        }
        let target_end = cutover_ms.map(|t| d.decided_at_ms + t as i64);
        let (mut bad, mut avoidable) = ([0u64; 2], [0u64; 2]);
        for (start, (wend, _, _, b)) in windows.range(..end) {
            if *wend <= onset || *start > done {
                continue;
            }
            for k in [AVAILABILITY, LATENCY] {
                bad[k] += b[k];
                if target_end.is_some_and(|t| *start >= t) {
                    avoidable[k] += b[k];
                }
            }
        }
        return Ok(DrainCost { drain: d.clone(), bad, avoidable });
    }
}

fn cutover_shares(costs: &[DrainCost], k: usize, total_bad: u64) -> Vec<CutoverShare> {
    let mut out: Vec<CutoverShare> = costs
        .iter()
        .map(|c| {
            let version = c.drain.version.map(|v| format!("v{v}")).unwrap_or_else(|| "reported".into());
            CutoverShare {
                key: format!("{} {version}", c.drain.cell),
                cell: c.drain.cell.clone(),
                decision_version: c.drain.version,
                bad_events: c.bad[k],
                share: fraction(c.bad[k], total_bad),
                avoidable_at_target: c.avoidable[k],
            }
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.bad_events));
    out
}

/// The report for `slo` over `[from_ms, to_ms)`; `drains` are the cut-overs of the range.
///
/// Totals, burn rates and the cell/service/route/cause splits are read through the tiers (whole
/// hours from the hourly tier: exact, and cheap over long ranges); incidents from one pass over
/// the finest rows without names, reading names again only inside incidents; cut-overs from the
/// drained cell's windows around each drain.
#[allow(clippy::too_many_arguments)]
pub fn report(
    store: &RollupStore,
    slo: &SloConfig,
    dash: &DashboardsConfig,
    drain_error_rate: f64,
    drains: &[Drain],
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> cellpilot_query::Result<Report> {
    let range = (from_ms, to_ms, now_ms);
    let threshold = slo.latency_p999_ms.map(threshold_us);
    let series = by_series(store, slo, range, threshold)?;
    let mut all = Counts::default();
    for c in series.values() {
        all.add(c.requests, c.bad);
    }
    let spans = spans(store, slo, range, threshold, Some(all))?;
    let minutes = Minutes::read(store, slo, range, threshold)?;
    let drains: Vec<Drain> = drains
        .iter()
        .filter(|d| d.decided_at_ms >= from_ms && d.decided_at_ms < to_ms)
        .filter(|d| slo.selector.cell.as_deref().is_none_or(|c| c == d.cell))
        .cloned()
        .collect();
    let mut costs = Vec::new();
    for d in &drains {
        if let Some(done) = d.completed_at_ms {
            costs.push(drain_cost(store, slo, d, done, range, (threshold, drain_error_rate, slo.cutover_ms))?);
        }
    }
    let split = |k: usize, key: fn(&SeriesKey) -> &Arc<str>| {
        let mut m: HashMap<&str, u64> = HashMap::new();
        for (s, c) in &series {
            *m.entry(key(s)).or_default() += c.bad[k];
        }
        shares(m.into_iter().map(|(k, v)| (k.to_string(), v)), spans.all.bad[k])
    };
    let objective = |k: usize,
                     target: f64,
                     threshold_ms: Option<f64>,
                     cause: Option<Vec<Share>>|
     -> cellpilot_query::Result<Objective> {
        let total = spans.all.bad[k];
        let incident = incidents(store, slo, &minutes, (k, target, threshold), dash, now_ms, total)?;
        Ok(Objective {
            standing: standing(k, target, threshold_ms, &spans),
            attribution: Attribution {
                cell: split(k, |s| &s.0),
                service: split(k, |s| &s.1),
                route: split(k, |s| &s.2),
                cause,
                incident,
                cutover: cutover_shares(&costs, k, total),
            },
        })
    };
    let cause = shares(causes(store, slo, range)?, spans.all.bad[AVAILABILITY]);
    let availability = objective(AVAILABILITY, slo.availability, None, Some(cause))?;
    let latency = match slo.latency_p999_ms {
        Some(t) => Some(objective(LATENCY, LATENCY_TARGET, Some(t), None)?),
        None => None,
    };
    let mut durations: Vec<i64> = drains.iter().filter_map(|d| d.duration_ms).collect();
    durations.sort_unstable();
    let cutover = CutoverSummary {
        target_ms: slo.cutover_ms,
        count: durations.len(),
        p50_ms: durations.get(durations.len().saturating_sub(1) / 2).copied(),
        max_ms: durations.last().copied(),
        over_target: slo.cutover_ms.map_or(0, |t| durations.iter().filter(|d| **d > t as i64).count()),
    };
    Ok(Report {
        slo: slo.name.clone(),
        from: format_rfc3339_ms(from_ms),
        to: format_rfc3339_ms(to_ms),
        requests: spans.all.requests,
        availability,
        latency,
        cutover,
    })
}
