//! SLA gap attribution: for an SLO over a range, per objective (availability, latency), observed
//! vs target, budget spent and left, burn rates, and the bad events split by cell, service, route
//! and cause (each summing to 100 %), by incident (runs of 1-minute buckets burning faster than
//! `incident_burn_rate`, merged across gaps shorter than `incident_gap`) and by cut-over (bad
//! events on a drained cell from its failure onset to the cut-over's completion, and how many a
//! cut-over meeting the target would have avoided).

use arrow::array::{BinaryArray, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::record_batch::RecordBatch;
use cellpilot_core::config::{DashboardsConfig, SloConfig};
use cellpilot_core::latency;
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_query::RollupStore;
use cellpilot_query::cells::Part;
use cellpilot_query::files::Table;
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

/// One row of the selection: a window of one series.
#[derive(Debug, Clone)]
struct Row {
    start: i64,
    end: i64,
    cell: Arc<str>,
    service: Arc<str>,
    route: Arc<str>,
    requests: u64,
    errors: u64,
    /// Slow non-error requests (latency objective).
    slow: u64,
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

/// One objective's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
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

fn col<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> Option<&'a T> {
    b.column(b.schema().index_of(name).ok()?).as_any().downcast_ref::<T>()
}

fn matches(slo: &SloConfig, cell: &str, service: &str, route: &str) -> bool {
    let s = &slo.selector;
    s.cell.as_deref().is_none_or(|c| c == cell)
        && s.service.as_deref().is_none_or(|c| c == service)
        && s.route.as_deref().is_none_or(|c| c == route)
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

/// Calls `f(batch, rows)` with the rows of each batch of `table` in `[from, to)` that the SLO's
/// selector matches (columns are looked up once per batch, not per row).
fn for_each_selected(
    store: &RollupStore,
    slo: &SloConfig,
    table: Table,
    (from, to, now): (i64, i64, i64),
    mut f: impl FnMut(&RecordBatch, &[usize]) -> cellpilot_query::Result<()>,
) -> cellpilot_query::Result<()> {
    for part in fine_plan(store, from, to, now) {
        for b in store.scan(table, part.tier, part.from_ms, part.to_ms, None)? {
            let (Some(s), Some(e), Some(c), Some(sv), Some(r)) = (
                col::<TimestampMillisecondArray>(&b, "window_start"),
                col::<TimestampMillisecondArray>(&b, "window_end"),
                col::<StringArray>(&b, "cell"),
                col::<StringArray>(&b, "service"),
                col::<StringArray>(&b, "route"),
            ) else {
                continue;
            };
            let selected: Vec<usize> = (0..b.num_rows())
                .filter(|&i| part.holds(s.value(i), e.value(i)) && matches(slo, c.value(i), sv.value(i), r.value(i)))
                .collect();
            f(&b, &selected)?;
        }
    }
    Ok(())
}

fn rows(store: &RollupStore, slo: &SloConfig, from: i64, to: i64, now: i64) -> cellpilot_query::Result<Vec<Row>> {
    let threshold = slo.latency_p999_ms.map(|ms| (ms * 1000.0) as u64);
    let mut names = Names::default();
    let mut out = Vec::new();
    for_each_selected(store, slo, Table::Rollups, (from, to, now), |b, selected| {
        let (Some(s), Some(e), Some(c), Some(sv), Some(r), Some(rq), Some(er), Some(h), Some(mx)) = (
            col::<TimestampMillisecondArray>(b, "window_start"),
            col::<TimestampMillisecondArray>(b, "window_end"),
            col::<StringArray>(b, "cell"),
            col::<StringArray>(b, "service"),
            col::<StringArray>(b, "route"),
            col::<UInt64Array>(b, "requests"),
            col::<UInt64Array>(b, "errors"),
            col::<BinaryArray>(b, "latency_hist"),
            col::<UInt64Array>(b, "max_us"),
        ) else {
            return Ok(());
        };
        for &i in selected {
            let slow = match threshold {
                // Nothing in a window whose slowest request was fast enough: skip the decode.
                Some(t) if mx.value(i) > t => {
                    latency::count_above(h.value(i), t).map_err(cellpilot_query::Error::Internal)?
                }
                _ => 0,
            };
            out.push(Row {
                start: s.value(i),
                end: e.value(i),
                cell: names.get(c.value(i)),
                service: names.get(sv.value(i)),
                route: names.get(r.value(i)),
                requests: rq.value(i),
                errors: er.value(i),
                // Slow requests that failed already count against availability.
                slow: slow.saturating_sub(er.value(i)),
            });
        }
        Ok(())
    })?;
    Ok(out)
}

fn causes(
    store: &RollupStore,
    slo: &SloConfig,
    from: i64,
    to: i64,
    now: i64,
) -> cellpilot_query::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for_each_selected(store, slo, Table::ErrorsByCause, (from, to, now), |b, selected| {
        if let (Some(cause), Some(n)) = (col::<StringArray>(b, "cause"), col::<UInt64Array>(b, "errors")) {
            for &i in selected {
                *out.entry(cause.value(i).to_string()).or_default() += n.value(i);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

fn shares(by: BTreeMap<String, u64>, total: u64) -> Vec<Share> {
    let mut v: Vec<Share> = by
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(key, bad_events)| Share {
            key,
            bad_events,
            share: if total == 0 { 0.0 } else { bad_events as f64 / total as f64 },
        })
        .collect();
    v.sort_by(|a, b| b.bad_events.cmp(&a.bad_events).then(a.key.cmp(&b.key)));
    v
}

fn hhmm(ms: i64) -> String {
    let s = format_rfc3339_ms(ms);
    s.get(11..16).unwrap_or("").to_string()
}

struct Inputs<'a> {
    rows: &'a [Row],
    drains: &'a [Drain],
    dash: &'a DashboardsConfig,
    drain_error_rate: f64,
    cutover_ms: Option<u64>,
    to: i64,
}

fn objective(
    inp: &Inputs<'_>,
    target: f64,
    bad_of: fn(&Row) -> u64,
    causes: Option<BTreeMap<String, u64>>,
    threshold_ms: Option<f64>,
) -> Objective {
    let requests: u64 = inp.rows.iter().map(|r| r.requests).sum();
    let bad: u64 = inp.rows.iter().map(bad_of).sum();
    let observed = if requests == 0 { 1.0 } else { 1.0 - bad as f64 / requests as f64 };
    let budget = (1.0 - target) * requests as f64;
    let spent = if budget > 0.0 { bad as f64 / budget } else { 0.0 };
    let burn = |w: i64| {
        let (b, t) = inp
            .rows
            .iter()
            .filter(|r| r.end > inp.to - w)
            .fold((0u64, 0u64), |(b, t), r| (b + bad_of(r), t + r.requests));
        burn(b, t, target)
    };
    let group = |key: fn(&Row) -> &Arc<str>| {
        let mut m: HashMap<Arc<str>, u64> = HashMap::new();
        for r in inp.rows {
            *m.entry(key(r).clone()).or_default() += bad_of(r);
        }
        shares(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), bad)
    };
    Objective {
        threshold_ms,
        target,
        bad_events: bad,
        observed,
        gap: target - observed,
        budget,
        budget_spent: spent,
        budget_left: 1.0 - spent,
        burn_rate_1h: burn(3_600_000),
        burn_rate_6h: burn(6 * 3_600_000),
        attribution: Attribution {
            cell: group(|r| &r.cell),
            service: group(|r| &r.service),
            route: group(|r| &r.route),
            cause: causes.map(|c| shares(c, bad)),
            incident: incidents(inp, target, bad_of, bad),
            cutover: cutovers(inp, bad_of, bad),
        },
    }
}

fn burn(bad: u64, total: u64, target: f64) -> f64 {
    let budget = 1.0 - target;
    if total == 0 || budget <= 0.0 { 0.0 } else { (bad as f64 / total as f64) / budget }
}

/// (end, bad, requests, bad per cell) of a time bucket.
type Bucket = (i64, u64, u64, BTreeMap<Arc<str>, u64>);
/// (start, end, bad, bad per cell) of an incident.
type Run = (i64, i64, u64, BTreeMap<Arc<str>, u64>);

/// Runs of 1-minute buckets (or coarser windows where only coarse tiers remain) burning faster
/// than `incident_burn_rate`, merged across gaps shorter than `incident_gap`.
fn incidents(inp: &Inputs<'_>, target: f64, bad_of: fn(&Row) -> u64, total_bad: u64) -> Vec<Incident> {
    // bucket start -> (end, bad, requests, bad per cell)
    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    for r in inp.rows {
        let width = r.end - r.start;
        let (b0, b1) = if width < 60_000 {
            (r.start - r.start.rem_euclid(60_000), r.start - r.start.rem_euclid(60_000) + 60_000)
        } else {
            (r.start, r.end)
        };
        let e = buckets.entry(b0).or_insert_with(|| (b1, 0, 0, BTreeMap::new()));
        e.1 += bad_of(r);
        e.2 += r.requests;
        *e.3.entry(r.cell.clone()).or_default() += bad_of(r);
    }
    let gap = inp.dash.incident_gap.as_millis_i64();
    let mut runs: Vec<Run> = Vec::new();
    for (start, (end, bad, req, cells)) in buckets {
        if burn(bad, req, target) <= inp.dash.incident_burn_rate {
            continue;
        }
        match runs.last_mut() {
            Some(last) if start - last.1 < gap => {
                last.1 = end;
                last.2 += bad;
                for (c, n) in cells {
                    *last.3.entry(c).or_default() += n;
                }
            }
            _ => runs.push((start, end, bad, cells)),
        }
    }
    let mut out: Vec<Incident> = runs
        .into_iter()
        .map(|(from, to, bad, cells)| {
            let cell = cells
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            Incident {
                key: format!("{cell} {}–{}", hhmm(from), hhmm(to)),
                cell,
                from: format_rfc3339_ms(from),
                to: format_rfc3339_ms(to),
                bad_events: bad,
                share: if total_bad == 0 { 0.0 } else { bad as f64 / total_bad as f64 },
            }
        })
        .collect();
    out.sort_by_key(|x| std::cmp::Reverse(x.bad_events));
    out
}

/// For each drain: bad events on the cell from its failure onset (the start of the run of
/// over-threshold windows that led to the drain) to completion; those after
/// `decided_at + cutover_ms` were avoidable by a cut-over on target.
fn cutovers(inp: &Inputs<'_>, bad_of: fn(&Row) -> u64, total_bad: u64) -> Vec<CutoverShare> {
    let mut out = Vec::new();
    for d in inp.drains {
        let Some(done) = d.completed_at_ms else { continue };
        // Per window of the cell: errors / requests (the drain rule's view).
        let mut windows: BTreeMap<i64, (i64, u64, u64)> = BTreeMap::new();
        for r in inp.rows.iter().filter(|r| *r.cell == *d.cell) {
            let e = windows.entry(r.start).or_insert((r.end, 0, 0));
            e.1 += r.errors;
            e.2 += r.requests;
        }
        let mut onset = d.decided_at_ms;
        let mut in_run = false;
        for (start, (_, errors, requests)) in windows.range(..d.decided_at_ms).rev() {
            let over = *requests > 0 && *errors as f64 / *requests as f64 > inp.drain_error_rate;
            if over {
                onset = *start;
                in_run = true;
            } else if in_run {
                break;
            }
        }
        let target_end = inp.cutover_ms.map(|t| d.decided_at_ms + t as i64);
        let (mut bad, mut avoidable) = (0, 0);
        for r in inp.rows.iter().filter(|r| *r.cell == *d.cell && r.end > onset && r.start <= done) {
            bad += bad_of(r);
            if target_end.is_some_and(|t| r.start >= t) {
                avoidable += bad_of(r);
            }
        }
        let version = d.version.map(|v| format!("v{v}")).unwrap_or_else(|| "reported".into());
        out.push(CutoverShare {
            key: format!("{} {version}", d.cell),
            cell: d.cell.clone(),
            decision_version: d.version,
            bad_events: bad,
            share: if total_bad == 0 { 0.0 } else { bad as f64 / total_bad as f64 },
            avoidable_at_target: avoidable,
        });
    }
    out.sort_by_key(|x| std::cmp::Reverse(x.bad_events));
    out
}

/// The report for `slo` over `[from_ms, to_ms)`; `drains` are the cut-overs of the range.
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
    let rows = rows(store, slo, from_ms, to_ms, now_ms)?;
    let drains: Vec<Drain> = drains
        .iter()
        .filter(|d| d.decided_at_ms >= from_ms && d.decided_at_ms < to_ms)
        .filter(|d| slo.selector.cell.as_deref().is_none_or(|c| c == d.cell))
        .cloned()
        .collect();
    let inp = Inputs { rows: &rows, drains: &drains, dash, drain_error_rate, cutover_ms: slo.cutover_ms, to: to_ms };
    let causes = causes(store, slo, from_ms, to_ms, now_ms)?;
    let availability = objective(&inp, slo.availability, |r| r.errors, Some(causes), None);
    let latency = slo.latency_p999_ms.map(|t| objective(&inp, 0.999, |r| r.slow, None, Some(t)));
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
        requests: rows.iter().map(|r| r.requests).sum(),
        availability,
        latency,
        cutover,
    })
}
