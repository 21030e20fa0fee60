//! cellpilot-probes: each cell's endpoints probed on a schedule, so a cell is seen even when no
//! traffic reaches it. TCP and HTTP probes (the HTTP one with bounds on numeric fields of a JSON
//! health body), Envoy-style target states, and the cells whose targets are failing.
//!
//! The front door is [`Probes`]: [`Probes::new`] reads `[probes]` (and `[xds.clusters]`),
//! [`Probes::run`] is the scheduler a node runs, and [`Probes::targets`] and
//! [`Probes::failing_cells`] are what the control loop and the pages read.
//!
//! # Layout
//! - `target`: the targets probed (configured, and derived from `[xds.clusters]`).
//! - `kinds`: one probe of one target, bounded by the timeout and the 64 KiB body.
//! - `check`: the `checks` on a JSON health body.
//! - `state`: a target's state from its consecutive results.
//! - `schedule`: the one scheduler.

mod check;
mod kinds;
mod schedule;
mod state;
mod target;

pub use kinds::{MAX_BODY, Outcome};
pub use state::State;
pub use target::Target;

use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::Config;
use serde::Serialize;
use state::{Thresholds, Tracker};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why the prober cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured kind this build cannot probe yet.
    #[error("{key}: {kind} probes are not available in this build (tcp and http are)")]
    NotBuilt {
        /// The key of the target's kind.
        key: String,
        /// The kind.
        kind: &'static str,
    },
    /// Configured and derived targets together are over the bound.
    #[error("{targets} targets (configured and from [xds.clusters]), over probes.max_targets ({max})")]
    TooManyTargets {
        /// Targets found.
        targets: usize,
        /// `probes.max_targets`.
        max: usize,
    },
}

/// Every target and what its probes found.
#[derive(Debug)]
pub struct Probes {
    targets: Vec<Target>,
    status: Mutex<Vec<Status>>,
    thresholds: Thresholds,
    interval: Duration,
    timeout: Duration,
    max_concurrent: usize,
    clock: SharedClock,
}

/// What the probes of one target found so far.
#[derive(Debug, Clone, Default)]
struct Status {
    tracker: Tracker,
    since_ms: Option<i64>,
    last: Option<Outcome>,
    attempts: u64,
    failures: u64,
    skipped: u64,
    on_time: u64,
}

/// One target as the API and pages show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetView {
    /// Its cell.
    pub cell: String,
    /// Its name.
    pub name: String,
    /// `tcp` or `http`.
    pub kind: &'static str,
    /// `unknown`, `healthy` or `unhealthy`.
    pub state: State,
    /// When it entered that state, unix ms (none while unknown).
    pub since_ms: Option<i64>,
    /// The last probe's latency, µs.
    pub last_latency_us: Option<u64>,
    /// The last probe's error.
    pub last_error: Option<String>,
    /// The last checked values (http).
    pub last_values: BTreeMap<String, f64>,
    /// Probes run.
    pub attempts: u64,
    /// Probes failed.
    pub failures: u64,
    /// Turns skipped because the previous probe had not ended.
    pub skipped: u64,
    /// Probes started within a tenth of the interval of their turn.
    pub on_time: u64,
}

/// A cell whose targets are failing: at least `failing_fraction` of its known targets unhealthy.
#[derive(Debug, Clone, PartialEq)]
pub struct FailingCell {
    /// Its unhealthy targets and their last errors.
    pub failing: Vec<(String, String)>,
    /// Its targets with a known state.
    pub known: usize,
}

impl Probes {
    /// The targets of `config` (`[probes]`, and `[xds.clusters]` with `from_xds`), none probed yet.
    pub fn new(config: &Config, clock: SharedClock) -> Result<Self, Error> {
        let p = &config.probes;
        let targets = target::targets(p, &config.xds)?;
        let status = Mutex::new(vec![Status::default(); targets.len()]);
        Ok(Probes {
            targets,
            status,
            thresholds: Thresholds { healthy: p.healthy_threshold, unhealthy: p.unhealthy_threshold },
            interval: p.interval.0,
            timeout: p.timeout.0,
            max_concurrent: p.max_concurrent,
            clock,
        })
    }

    /// Probes every target until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()> + Send) {
        schedule::run(self, stop).await;
    }

    fn record(&self, i: usize, late: Duration, outcome: Outcome) {
        let now = self.clock.now_ms();
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = status.get_mut(i) else { return };
        s.attempts += 1;
        if !outcome.ok {
            s.failures += 1;
        }
        if late < self.interval / 10 {
            s.on_time += 1;
        }
        if let Some(state) = s.tracker.record(outcome.ok, self.thresholds) {
            s.since_ms = Some(now);
            let t = &self.targets[i];
            match state {
                State::Unhealthy => tracing::warn!(
                    cell = %t.cell, target = %t.name, error = outcome.error.as_deref().unwrap_or(""),
                    "probe target unhealthy"
                ),
                _ => tracing::info!(cell = %t.cell, target = %t.name, state = state.as_str(), "probe target state"),
            }
        }
        s.last = Some(outcome);
    }

    fn skipped(&self, i: usize) {
        if let Some(s) = self.status.lock().unwrap_or_else(|e| e.into_inner()).get_mut(i) {
            s.skipped += 1;
        }
    }

    /// Every target, in configuration order.
    pub fn targets(&self) -> Vec<TargetView> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        self.targets
            .iter()
            .zip(status.iter())
            .map(|(t, s)| TargetView {
                cell: t.cell.clone(),
                name: t.name.clone(),
                kind: t.kind.as_str(),
                state: s.tracker.state(),
                since_ms: s.since_ms,
                last_latency_us: s.last.as_ref().map(|o| o.latency_us),
                last_error: s.last.as_ref().and_then(|o| o.error.clone()),
                last_values: s.last.as_ref().map(|o| o.values.iter().cloned().collect()).unwrap_or_default(),
                attempts: s.attempts,
                failures: s.failures,
                skipped: s.skipped,
                on_time: s.on_time,
            })
            .collect()
    }

    /// The cells at least `fraction` of whose known targets are unhealthy (targets still
    /// `unknown` count for neither side).
    pub fn failing_cells(&self, fraction: f64) -> BTreeMap<String, FailingCell> {
        let mut cells: BTreeMap<String, FailingCell> = BTreeMap::new();
        for t in self.targets() {
            if t.state == State::Unknown {
                continue;
            }
            let c = cells.entry(t.cell.clone()).or_insert(FailingCell { failing: Vec::new(), known: 0 });
            c.known += 1;
            if t.state == State::Unhealthy {
                c.failing.push((t.name, t.last_error.unwrap_or_default()));
            }
        }
        cells.retain(|_, c| !c.failing.is_empty() && c.failing.len() as f64 >= fraction * c.known as f64);
        cells
    }
}
