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
//!
//! # Layout
//! - [`model`]: what a report and a summary say (the API's JSON).
//! - this module: [`report`], [`summary`], what they are asked ([`ReportRequest`],
//!   [`ReportSettings`]) and the scope every reading shares.
//! - `rows`: walking the selected rows of the tiers, and a row's bad events.
//! - `series`: counts per series and errors per cause, the splits.
//! - `standing`: how an objective stands over a range and its last 1 and 6 hours.
//! - `incidents`: 1-minute buckets and the runs of them that burn too fast.
//! - `cutovers`: what each drain cost, from its failure onset to its completion.

mod cutovers;
mod incidents;
pub mod model;
mod rows;
mod series;
mod standing;

pub use model::*;

use cellpilot_core::config::{Config, DashboardsConfig, SloConfig};
use cellpilot_core::objective::{self, Bad, Kind};
use cellpilot_core::time::format_rfc3339_ms;
use cellpilot_query::RollupStore;
use std::collections::HashMap;
use std::sync::Arc;

/// Requests and bad events.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) requests: u64,
    pub(crate) bad: Bad,
}

impl Counts {
    pub(crate) fn add(&mut self, requests: u64, bad: Bad) {
        self.requests = self.requests.saturating_add(requests);
        self.bad.add(bad);
    }
}

const MINUTE_MS: i64 = 60_000;

/// Every SLO has an availability objective ([`objective::Objective::of`]); this is the error if
/// that ever stops being so.
fn no_availability(slo: &SloConfig) -> cellpilot_query::Error {
    cellpilot_core::error::Internal::new(format!("SLO `{}` has no availability objective", slo.name)).into()
}

fn floor(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

fn fraction(part: u64, total: u64) -> f64 {
    if total == 0 { 0.0 } else { part as f64 / total as f64 }
}

/// What one reading of the rollups is about: the store, the SLO's selection, the range
/// `[from, to)` and now, and the latency threshold. Every reading takes it, so none has to be
/// handed a loose tuple of times.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    store: &'a RollupStore,
    slo: &'a SloConfig,
    from: i64,
    to: i64,
    now: i64,
    /// Requests slower than this (µs) are bad for the latency objective; `None`: no histogram is
    /// decoded.
    threshold_us: Option<u64>,
}

impl Scope<'_> {
    /// The same reading over `[from, to)`.
    fn over(self, from: i64, to: i64) -> Self {
        Scope { from, to, ..self }
    }
}

/// The settings attribution follows, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportSettings {
    /// A 1-minute bucket burning faster than this belongs to an incident.
    pub incident_burn_rate: f64,
    /// Incidents closer than this merge, ms.
    pub incident_gap_ms: i64,
    /// The error rate that drains a cell: where a drain's failure onset begins.
    pub drain_error_rate: f64,
}

impl ReportSettings {
    /// `[dashboards]` and the policy's `drain_error_rate`.
    pub fn new(dashboards: &DashboardsConfig, drain_error_rate: f64) -> Self {
        ReportSettings {
            incident_burn_rate: dashboards.incident_burn_rate,
            incident_gap_ms: dashboards.incident_gap.as_millis_i64(),
            drain_error_rate,
        }
    }

    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self::new(&config.dashboards, config.control.policy.drain_error_rate)
    }
}

/// What a report is asked about.
#[derive(Debug, Clone, Copy)]
pub struct ReportRequest<'a> {
    /// Where the rollups are.
    pub store: &'a RollupStore,
    /// The SLO.
    pub slo: &'a SloConfig,
    /// How attribution reads them.
    pub settings: ReportSettings,
    /// The cut-overs there are (those decided in the range are attributed).
    pub drains: &'a [Drain],
    /// Range start, unix ms.
    pub from_ms: i64,
    /// Range end (exclusive), unix ms.
    pub to_ms: i64,
    /// Now, unix ms.
    pub now_ms: i64,
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
    let threshold_us = objective::slow_above_us(slo).filter(|_| with_latency);
    let scope = Scope { store, slo, from: from_ms, to: to_ms, now: now_ms, threshold_us };
    let s = standing::spans(&scope, None)?;
    let (mut availability, mut latency) = (None, None);
    for o in objective::Objective::of(slo) {
        match o.kind {
            Kind::Availability => availability = Some(standing::standing(&o, &s)),
            Kind::Latency if with_latency => latency = Some(standing::standing(&o, &s)),
            Kind::Latency => {}
        }
    }
    let availability = availability.ok_or_else(|| no_availability(slo))?;
    Ok(Summary { requests: s.all.requests, availability, latency })
}

/// The report for `slo` over `[from_ms, to_ms)`; `drains` are the cut-overs of the range.
///
/// Totals, burn rates and the cell/service/route/cause splits are read through the tiers (whole
/// hours from the hourly tier: exact, and cheap over long ranges); incidents from one pass over
/// the finest rows without names, reading names again only inside incidents; cut-overs from the
/// drained cell's windows around each drain.
pub fn report(req: &ReportRequest<'_>) -> cellpilot_query::Result<Report> {
    let ReportRequest { store, slo, settings, drains, from_ms, to_ms, now_ms } = *req;
    let scope =
        Scope { store, slo, from: from_ms, to: to_ms, now: now_ms, threshold_us: objective::slow_above_us(slo) };
    let series = series::by_series(&scope)?;
    let mut all = Counts::default();
    for c in series.values() {
        all.add(c.requests, c.bad);
    }
    let spans = standing::spans(&scope, Some(all))?;
    let minutes = incidents::Minutes::read(&scope)?;
    let drains: Vec<Drain> = drains
        .iter()
        .filter(|d| d.decided_at_ms >= from_ms && d.decided_at_ms < to_ms)
        .filter(|d| slo.selector.cell.as_deref().is_none_or(|c| c == d.cell))
        .cloned()
        .collect();
    let mut costs = Vec::new();
    for d in &drains {
        if let Some(done) = d.completed_at_ms {
            costs.push(cutovers::drain_cost(&scope, d, done, settings.drain_error_rate)?);
        }
    }
    let split = |k: Kind, key: fn(&series::SeriesKey) -> &Arc<str>| {
        let mut m: HashMap<&str, u64> = HashMap::new();
        for (s, c) in &series {
            {
                let e = m.entry(key(s)).or_default();
                *e = e.saturating_add(c.bad[k]);
            }
        }
        series::shares(m.into_iter().map(|(k, v)| (k.to_string(), v)), spans.all.bad[k])
    };
    let attributed = |o: objective::Objective, cause: Option<Vec<Share>>| -> cellpilot_query::Result<Objective> {
        let k = o.kind;
        let total = spans.all.bad[k];
        let incident = incidents::incidents(&scope, &settings, &minutes, &o, total)?;
        Ok(Objective {
            standing: standing::standing(&o, &spans),
            attribution: Attribution {
                cell: split(k, |s| &s.0),
                service: split(k, |s| &s.1),
                route: split(k, |s| &s.2),
                cause,
                incident,
                cutover: cutovers::cutover_shares(&costs, k, total),
            },
        })
    };
    let mut availability = None;
    let mut latency = None;
    for o in objective::Objective::of(slo) {
        match o.kind {
            Kind::Availability => {
                // Causes are reasons of failure: they split availability's bad events only.
                let cause = series::shares(series::causes(&scope)?, spans.all.bad[o.kind]);
                availability = Some(attributed(o, Some(cause))?);
            }
            Kind::Latency => latency = Some(attributed(o, None)?),
        }
    }
    let availability = availability.ok_or_else(|| no_availability(slo))?;
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
