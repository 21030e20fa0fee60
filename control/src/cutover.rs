//! Cut-over tracking: how long a drain really took. For a drain decided at t0, `applied_at` is
//! when every gateway watching at t0 has Acked a version ≥ the drain's (or disconnected);
//! `completed_at` is the start of the last request seen on the cell after t0 (clamped to ≥ t0),
//! final once no request has arrived there for `quiet_period`. Cut-overs reported by gateways
//! through OTLP logs are kept beside them.

use crate::gateways::GatewayId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a cut-over's timing came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Measured by cellpilot.
    Observed,
    /// Reported by a gateway (`cell.cutover` log event).
    Reported,
}

impl Source {
    /// The name used in tables, the API and pages (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Observed => "observed",
            Source::Reported => "reported",
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the `cutovers` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cutover {
    /// Drained cell.
    pub cell: String,
    /// Table version of the drain (observed ones).
    pub decision_version: Option<u64>,
    /// t0, unix ms.
    pub decided_at_ms: i64,
    /// Every watching gateway applied it, unix ms.
    pub applied_at_ms: Option<i64>,
    /// Last request on the cell after t0, unix ms.
    pub completed_at_ms: Option<i64>,
    /// completed − decided.
    pub duration_ms: Option<i64>,
    /// Observed or reported.
    pub source: Source,
}

#[derive(Debug, Clone)]
struct Pending {
    row: Cutover,
    /// Gateways watching at t0 that have not applied the drain yet.
    waiting: BTreeSet<GatewayId>,
    /// Latest Ack time among those that did.
    last_ack_ms: i64,
}

/// Cut-overs in flight and done.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    pending: Vec<Pending>,
    done: Vec<Cutover>,
    /// Reported cut-overs kept: cell -> started -> completed (unix ms).
    reported: HashMap<String, BTreeMap<i64, i64>>,
    /// Entries of `reported`.
    reported_count: usize,
    /// The latest start among them, and the horizon last pruned to (pruning again before the
    /// horizon moves would find nothing).
    newest_reported_ms: i64,
    pruned_to_ms: i64,
}

/// Reported cut-overs remembered at most (older ones are forgotten first, see [`Tracker::reported`]).
pub(crate) const MAX_REPORTED: usize = 10_000;
/// Two reports of one cell starting closer than this are one cut-over: the later is dropped.
const REPORT_SPACING_MS: i64 = 60_000;
/// Reports older than this (by start, against the newest) are forgotten when room is needed.
const REPORT_HORIZON_MS: i64 = 30 * 86_400_000;

impl Tracker {
    /// A tracker holding `done` cut-overs from the log.
    pub(crate) fn with(done: Vec<Cutover>) -> Self {
        let mut t = Self::default();
        for c in done {
            if let (Source::Reported, Some(completed)) = (c.source, c.completed_at_ms) {
                t.remember(&c.cell, c.decided_at_ms, completed);
            }
            t.done.push(c);
        }
        t
    }

    fn remember(&mut self, cell: &str, started_ms: i64, completed_ms: i64) {
        let by_start = self.reported.entry(cell.to_string()).or_default();
        if by_start.insert(started_ms, completed_ms).is_none() {
            self.reported_count += 1;
        }
        self.newest_reported_ms = self.newest_reported_ms.max(started_ms);
    }

    /// A drain of `cell` at `decided_at_ms` (version `version`) while `watching` gateways listen.
    pub(crate) fn drained(&mut self, cell: &str, version: u64, decided_at_ms: i64, watching: BTreeSet<GatewayId>) {
        self.pending.retain(|p| p.row.cell != cell);
        let applied = watching.is_empty().then_some(decided_at_ms);
        self.pending.push(Pending {
            row: Cutover {
                cell: cell.to_string(),
                decision_version: Some(version),
                decided_at_ms,
                applied_at_ms: applied,
                completed_at_ms: None,
                duration_ms: None,
                source: Source::Observed,
            },
            waiting: watching,
            last_ack_ms: decided_at_ms,
        });
    }

    /// After a restart: a drain of `cell` (version `version`, decided at `decided_at_ms`) still in
    /// force whose cut-over had not finished. Its completion is measured as usual from the
    /// requests seen since (the WAL replay restores them); when the gateways applied it was lost
    /// with the process, so `applied_at` stays unknown. Nothing happens when it already finished.
    pub(crate) fn resume(&mut self, cell: &str, version: u64, decided_at_ms: i64) {
        let known = |c: &Cutover| c.cell == cell && c.decision_version == Some(version);
        if self.done.iter().any(known) || self.pending.iter().any(|p| known(&p.row)) {
            return;
        }
        self.pending.push(Pending {
            row: Cutover {
                cell: cell.to_string(),
                decision_version: Some(version),
                decided_at_ms,
                applied_at_ms: None,
                completed_at_ms: None,
                duration_ms: None,
                source: Source::Observed,
            },
            waiting: BTreeSet::new(),
            last_ack_ms: decided_at_ms,
        });
    }

    /// `gateway` applied `version` at `at_ms` (or, with `None`, disconnected at `at_ms`).
    pub(crate) fn applied(&mut self, gateway: &GatewayId, version: Option<u64>, at_ms: i64) {
        for p in &mut self.pending {
            let covers = version.is_none_or(|v| Some(v) >= p.row.decision_version);
            if covers && p.waiting.remove(gateway) {
                p.last_ack_ms = p.last_ack_ms.max(at_ms);
                if p.waiting.is_empty() && p.row.applied_at_ms.is_none() {
                    p.row.applied_at_ms = Some(p.last_ack_ms);
                }
            }
        }
    }

    /// Finalizes cut-overs whose cell has been quiet for `quiet_ms`; `activity(cell)` gives
    /// (latest request start, its arrival) in unix ms. Returns the newly finished ones.
    pub(crate) fn finish(
        &mut self,
        now_ms: i64,
        quiet_ms: i64,
        activity: impl Fn(&str) -> Option<(i64, i64)>,
    ) -> Vec<Cutover> {
        let mut finished = Vec::new();
        self.pending.retain_mut(|p| {
            let t0 = p.row.decided_at_ms;
            let (completed, quiet_since) = match activity(&p.row.cell) {
                Some((start, arrived)) if arrived >= t0 => (start.max(t0), arrived),
                // No request after the decision: done at once.
                _ => (t0, t0),
            };
            if now_ms - quiet_since < quiet_ms {
                return true;
            }
            p.row.completed_at_ms = Some(completed);
            p.row.duration_ms = Some(completed - t0);
            finished.push(p.row.clone());
            false
        });
        self.done.extend(finished.iter().cloned());
        finished
    }

    /// A gateway's own report; `None` when it is already recorded (a WAL replay), when the cell
    /// has a report starting within a minute of it, or when [`MAX_REPORTED`] recent reports are
    /// kept — so a client cannot grow the table (or the log) with invented reports.
    pub(crate) fn reported(&mut self, cell: &str, started_ms: i64, completed_ms: i64) -> Option<Cutover> {
        let near = self.reported.get(cell).is_some_and(|m| {
            m.range(started_ms.saturating_sub(REPORT_SPACING_MS - 1)..started_ms.saturating_add(REPORT_SPACING_MS))
                .next()
                .is_some()
        });
        if near {
            return None;
        }
        if self.reported_count >= MAX_REPORTED {
            let cut = self.newest_reported_ms.max(started_ms).saturating_sub(REPORT_HORIZON_MS);
            if cut <= self.pruned_to_ms {
                return None;
            }
            self.pruned_to_ms = cut;
            for m in self.reported.values_mut() {
                let kept = m.split_off(&cut);
                self.reported_count -= m.len();
                *m = kept;
            }
            self.reported.retain(|_, m| !m.is_empty());
            if self.reported_count >= MAX_REPORTED {
                return None;
            }
        }
        self.remember(cell, started_ms, completed_ms);
        let row = Cutover {
            cell: cell.to_string(),
            decision_version: None,
            decided_at_ms: started_ms,
            applied_at_ms: None,
            completed_at_ms: Some(completed_ms),
            duration_ms: Some(completed_ms.saturating_sub(started_ms)),
            source: Source::Reported,
        };
        self.done.push(row.clone());
        Some(row)
    }

    /// Finished cut-overs, then those still in flight.
    pub(crate) fn all(&self) -> Vec<Cutover> {
        self.done.iter().cloned().chain(self.pending.iter().map(|p| p.row.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_when_every_watcher_acked_or_left() {
        let mut t = Tracker::default();
        let (g1, g2) = (GatewayId::cell_weights("g1"), GatewayId::xds("g2"));
        t.drained("a", 7, 1_000, [g1.clone(), g2.clone()].into());
        t.applied(&g1, Some(6), 1_100);
        t.applied(&g1, Some(7), 1_200);
        t.applied(&GatewayId::cell_weights("g2"), Some(7), 1_250);
        assert_eq!(t.all()[0].applied_at_ms, None, "the xDS node g2 has not applied yet");
        t.applied(&g2, None, 1_300);
        assert_eq!(t.all()[0].applied_at_ms, Some(1_300));
    }

    #[test]
    fn completes_on_the_last_request_after_a_quiet_period() {
        let mut t = Tracker::default();
        t.drained("a", 1, 10_000, BTreeSet::new());
        let activity = |_: &str| Some((11_500, 11_600));
        assert!(t.finish(15_000, 5_000, activity).is_empty(), "not quiet for 5 s yet");
        let done = t.finish(16_600, 5_000, activity);
        assert_eq!(
            (done[0].completed_at_ms, done[0].duration_ms, done[0].applied_at_ms),
            (Some(11_500), Some(1_500), Some(10_000))
        );
        // No request after the decision: 0 ms.
        t.drained("b", 2, 20_000, BTreeSet::new());
        let done = t.finish(25_000, 5_000, |_| Some((19_000, 19_500)));
        assert_eq!(done[0].duration_ms, Some(0));
    }

    #[test]
    fn reported_ones_are_kept_once() {
        let mut t = Tracker::default();
        assert!(t.reported("a", 1_000, 1_250).is_some());
        assert!(t.reported("a", 1_000, 1_250).is_none());
        assert_eq!(t.all()[0].duration_ms, Some(250));
        // The log's rows count as reported on a restart.
        let mut again = Tracker::with(t.all());
        assert!(again.reported("a", 1_000, 1_250).is_none());
    }

    #[test]
    fn invented_reports_cannot_grow_the_table() {
        let mut t = Tracker::default();
        // A flood for one cell: one per minute of start time is kept.
        let kept = (0..100_000i64).filter(|i| t.reported("a", i * 1_000, i * 1_000 + 10).is_some()).count();
        assert_eq!(kept, 1_667);
        // A flood over many cells: at most MAX_REPORTED recent ones.
        let kept = (0..50_000i64).filter(|i| t.reported(&format!("c{i}"), 5_000_000, 5_000_010).is_some()).count();
        assert_eq!(kept + 1_667, MAX_REPORTED);
        assert!(t.reported_count <= MAX_REPORTED);
        // Once they age past the horizon, new reports are taken again.
        assert!(t.reported("late", 5_000_000 + REPORT_HORIZON_MS + 1, 5_000_000 + REPORT_HORIZON_MS + 9).is_some());
    }
}
