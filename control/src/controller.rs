//! The [`Controller`]: the policy's rules and its state behind a lock, the decision and cut-over
//! logs, the published table (a watch channel, so slow watchers only ever miss intermediate
//! versions and never block anyone), the gateways' Acks and, in a cluster, the replication that
//! records each version before it is published.

use crate::cutover::{Cutover, Tracker};
use crate::gateways::{Ack, Full, Gateway, GatewayId, Gateways, StreamCaps};
use crate::log::{DecisionLog, JsonLog};
use crate::policy::{Decision, Inputs, Policy, PolicyState, State, WeightTable};
use crate::replica::{Entry, Recorded, Replication};
use cellpilot_core::auth::Principal;
use cellpilot_core::config::{ControlConfig, ControlMode};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Why a change was not published.
#[derive(Debug)]
enum NotPublished {
    /// Another node decides (where its API is, when known).
    NotLeader(Option<String>),
    /// The version could not be recorded.
    Unrecorded(String),
}

/// Everything the control loop, the API and the gRPC service share.
#[derive(Debug)]
pub struct Controller {
    policy: Policy,
    state: Mutex<PolicyState>,
    log: Mutex<DecisionLog>,
    cutover_log: Mutex<JsonLog<Cutover>>,
    tracker: Mutex<Tracker>,
    gateways: Mutex<Gateways>,
    clock: cellpilot_core::clock::SharedClock,
    metrics: cellpilot_core::metrics::Metrics,
    quiet_ms: i64,
    decisions: Mutex<Vec<Decision>>,
    table: watch::Sender<WeightTable>,
    mode: ControlMode,
    /// Set on a node of a cluster: where versions are recorded, and whether this node decides.
    replication: std::sync::RwLock<Option<Arc<dyn Replication>>>,
}

impl Controller {
    /// The controller for `[control]`, with state restored from the decision log under `data_dir`.
    pub fn open(
        config: &ControlConfig,
        data_dir: &std::path::Path,
        clock: cellpilot_core::clock::SharedClock,
        metrics: cellpilot_core::metrics::Metrics,
    ) -> crate::error::Result<Self> {
        let (log, past) = DecisionLog::open(data_dir, "decisions.jsonl")?;
        let (cutover_log, cutovers) = JsonLog::<Cutover>::open(data_dir, "cutovers.jsonl")?;
        let policy = Policy::new(config);
        let mut state = policy.start();
        for d in &past {
            policy.restore(&mut state, d);
        }
        let (table, _) = watch::channel(policy.table(&state));
        let mut tracker = Tracker::with(cutovers);
        // A drain still in force whose cut-over had not finished when the process stopped.
        let mut latest: BTreeMap<&str, &Decision> = BTreeMap::new();
        for d in &past {
            latest.insert(d.cell.as_str(), d);
        }
        for d in latest.values().filter(|d| d.state == State::Drained && d.actor == "policy") {
            tracker.resume(&d.cell, d.version, d.decided_at_ms);
        }
        Ok(Self {
            policy,
            state: Mutex::new(state),
            log: Mutex::new(log),
            cutover_log: Mutex::new(cutover_log),
            tracker: Mutex::new(tracker),
            gateways: Mutex::new(Gateways::new(config.max_gateways, StreamCaps::default())),
            clock,
            metrics,
            quiet_ms: config.quiet_period.as_millis_i64(),
            decisions: Mutex::new(past),
            table,
            mode: config.mode,
            replication: std::sync::RwLock::new(None),
        })
    }

    /// `enforce` or `dry-run`.
    pub fn mode(&self) -> ControlMode {
        self.mode
    }

    /// The published table.
    pub fn table(&self) -> WeightTable {
        self.table.borrow().clone()
    }

    /// The published table's version.
    pub fn version(&self) -> u64 {
        self.table.borrow().version
    }

    /// The published (state, weight) of `cell`; a cell not under control yet is active at its
    /// base weight.
    pub fn cell_weight(&self, cell: &str) -> (State, u32) {
        if let Some(c) = self.table.borrow().cells.iter().find(|c| c.cell == cell) {
            return (c.state, c.weight);
        }
        (State::Active, self.policy.base(cell))
    }

    /// The `decisions` and `cutovers` SQL tables, as of now.
    pub fn sql_tables(&self) -> Result<cellpilot_query::sql::ControlTables, arrow::error::ArrowError> {
        Ok(cellpilot_query::sql::ControlTables {
            decisions: Some(crate::log::to_batch(&self.decisions())?),
            cutovers: Some(crate::log::cutovers_batch(&self.cutovers())?),
        })
    }

    /// Every decision so far, oldest first.
    pub fn decisions(&self) -> Vec<Decision> {
        self.decisions.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drains the guard or rate limit blocked at the last tick.
    pub fn blocked(&self) -> BTreeMap<String, String> {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).blocked().clone()
    }

    /// Every gateway of either protocol: streams, latest ACK and NACK.
    pub fn gateways(&self) -> Vec<Gateway> {
        self.gateways.lock().unwrap_or_else(|e| e.into_inner()).all()
    }

    /// From now on, decide only while `replication` says this node leads, and publish a version
    /// only once it is recorded there.
    pub fn set_replication(&self, replication: Arc<dyn Replication>) {
        *self.replication.write().unwrap_or_else(|e| e.into_inner()) = Some(replication);
    }

    fn replication(&self) -> Option<Arc<dyn Replication>> {
        self.replication.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether this node decides weights (always, alone; while it holds the lease, in a cluster).
    pub fn leads(&self) -> bool {
        self.replication().is_none_or(|r| r.leads())
    }

    /// Publishes `table` with the `decisions` that made it (none when nothing changed).
    fn commit(&self, table: WeightTable, decisions: Vec<Decision>) {
        if decisions.is_empty() && table.version == self.table.borrow().version {
            return;
        }
        if !decisions.is_empty() {
            if let Err(e) = self.log.lock().unwrap_or_else(|e| e.into_inner()).append(&decisions) {
                tracing::error!(error = %cellpilot_core::status::Chain(&e), "recording decisions failed");
            }
            let watching = self.gateways.lock().unwrap_or_else(|e| e.into_inner()).watching();
            let mut tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            for d in decisions.iter().filter(|d| d.state == State::Drained && d.actor == "policy") {
                tracker.drained(&d.cell, d.version, d.decided_at_ms, watching.clone());
            }
            drop(tracker);
            self.metrics.decisions.inc_by(decisions.len() as u64);
            for d in &decisions {
                tracing::info!(cell = %d.cell, version = d.version, old = d.old_weight, new = d.new_weight, reason = %d.reason, "weight decision");
            }
            self.decisions.lock().unwrap_or_else(|e| e.into_inner()).extend(decisions);
        }
        self.table.send_replace(table);
    }

    /// Runs `change` on the policy and publishes what changed. In a cluster the change runs on
    /// a copy, which replaces the policy only once its version is recorded: a version another
    /// node recorded first (or one the store refused) leaves this node's policy as it was.
    fn change(
        &self,
        change: impl FnOnce(&Policy, &mut PolicyState) -> Vec<Decision>,
    ) -> Result<Vec<Decision>, NotPublished> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(replication) = self.replication() else {
            let decisions = change(&self.policy, &mut state);
            self.commit(self.policy.table(&state), decisions.clone());
            return Ok(decisions);
        };
        if !replication.leads() {
            return Err(NotPublished::NotLeader(replication.leader()));
        }
        let mut next = state.clone();
        let decisions = change(&self.policy, &mut next);
        let table = self.policy.table(&next);
        if decisions.is_empty() && table.version == self.table.borrow().version {
            *state = next;
            return Ok(decisions);
        }
        let entry = Entry { decisions, table };
        match replication.record(&entry) {
            Ok(Recorded::Done) => {
                *state = next;
                self.commit(entry.table, entry.decisions.clone());
                Ok(entry.decisions)
            }
            Ok(Recorded::Taken) => {
                tracing::warn!(version = entry.table.version, "another node recorded this version first: following it");
                Err(NotPublished::NotLeader(replication.leader()))
            }
            Err(e) => {
                tracing::error!(version = entry.table.version, error = %e, "recording a version failed: not published");
                Err(NotPublished::Unrecorded(e))
            }
        }
    }

    /// Runs the policy at `now_ms` and publishes what changed (nothing on a node that does not lead).
    pub fn evaluate(&self, now_ms: i64, inputs: &Inputs) -> Vec<Decision> {
        self.change(|policy, state| policy.step(state, inputs, now_ms)).unwrap_or_default()
    }

    /// Publishes a version the leading node recorded, when it is newer than this node's; returns
    /// whether it was.
    pub fn follow(&self, entry: &Entry) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if entry.table.version <= self.table.borrow().version {
            return false;
        }
        self.policy.follow(&mut state, &entry.decisions, &entry.table);
        self.commit(entry.table.clone(), entry.decisions.clone());
        true
    }

    /// Pins (or with no weight unpins) a cell's weight, as `actor`, once the request is within
    /// bounds (`max_name`: the longest cell name ingest keeps) and names a known cell: one the
    /// policy knows, or one `listed` elsewhere (an xDS cluster's locality).
    pub fn pin(
        &self,
        req: &crate::pin::PinRequest,
        max_name: usize,
        actor: &str,
        now_ms: i64,
        listed: impl Fn(&str) -> bool,
    ) -> Result<Vec<Decision>, crate::pin::PinError> {
        let max_weight = self.policy.max_weight();
        let known = self.policy.knows(&self.state.lock().unwrap_or_else(|e| e.into_inner()), &req.cell);
        let ttl_ms = req.check(max_name, max_weight)?;
        let until = now_ms.saturating_add(ttl_ms);
        if !known && !listed(&req.cell) {
            return Err(crate::pin::PinError::UnknownCell(req.cell.clone()));
        }
        let pin =
            crate::policy::Pin { cell: &req.cell, weight: req.weight, until_ms: until, reason: &req.reason, actor };
        self.change(|policy, state| policy.pin(state, &pin, now_ms)).map_err(|e| match e {
            NotPublished::NotLeader(at) => crate::pin::PinError::NotLeader(at.unwrap_or_else(|| "unknown".into())),
            NotPublished::Unrecorded(why) => crate::pin::PinError::Unrecorded(why),
        })
    }

    /// Records that `gateway` applied `version` at `at_ms`; `Err` (nothing recorded) when it is
    /// new and `[control] max_gateways` others are connected.
    pub fn ack(&self, gateway: &GatewayId, version: u64, at_ms: i64) -> Result<(), Full> {
        let now = self.clock.now_ms();
        self.gateways.lock().unwrap_or_else(|e| e.into_inner()).ack(gateway, Ack { version, at_ms }, now)?;
        self.tracker.lock().unwrap_or_else(|e| e.into_inner()).applied(gateway, Some(version), at_ms);
        Ok(())
    }

    /// Records that `gateway` refused `version` (it keeps the one before, so it still holds the
    /// cut-overs it has not applied).
    pub fn nack(&self, gateway: &GatewayId, version: u64, error: &str) -> Result<(), Full> {
        let now = self.clock.now_ms();
        self.gateways.lock().unwrap_or_else(|e| e.into_inner()).nack(gateway, version, error, now)
    }

    /// Gateway streams held to `caps` (`[xds] max_streams...`) instead of the defaults.
    pub fn stream_caps(self, caps: StreamCaps) -> Self {
        self.gateways.lock().unwrap_or_else(|e| e.into_inner()).set_caps(caps);
        self
    }

    /// A stream of `gateway` opened by `caller`; `Err` (nothing counted) over a stream cap, or
    /// when the gateway is new and there is no room.
    pub fn open_stream(&self, gateway: &GatewayId, caller: &Principal) -> Result<(), Full> {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        let opened = g.open(gateway, token_of(caller), self.clock.now_ms());
        self.metrics.gateway_streams.set(g.streams() as i64);
        opened
    }

    /// A stream of `gateway` opened by `caller` closed (call after [`Controller::left`] if it
    /// was watching).
    pub fn close_stream(&self, gateway: &GatewayId, caller: &Principal) {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        g.close(gateway, token_of(caller), self.clock.now_ms());
        self.metrics.gateway_streams.set(g.streams() as i64);
    }

    /// One of `gateway`'s streams follows the table: drains decided from now on wait for it.
    pub fn watching(&self, gateway: &GatewayId) -> Result<(), Full> {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        g.join(gateway, self.clock.now_ms())?;
        self.metrics.gateways_watching.set(g.watching_count() as i64);
        Ok(())
    }

    /// One of `gateway`'s streams stopped following the table (closed, or not keeping up).
    pub fn left(&self, gateway: &GatewayId) {
        let mut g = self.gateways.lock().unwrap_or_else(|e| e.into_inner());
        let last = g.leave(gateway);
        self.metrics.gateways_watching.set(g.watching_count() as i64);
        drop(g);
        if last {
            // A gateway that went away no longer holds a cut-over up.
            self.tracker.lock().unwrap_or_else(|e| e.into_inner()).applied(gateway, None, self.clock.now_ms());
        }
    }

    /// Finalizes cut-overs whose cell went quiet; call at every tick.
    pub fn finish_cutovers(&self, now_ms: i64, activity: &dyn cellpilot_core::store::CellActivity) {
        let done = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(now_ms, self.quiet_ms, |c| activity.latest_request(c));
        for c in &done {
            tracing::info!(cell = %c.cell, duration_ms = ?c.duration_ms, applied_at = ?c.applied_at_ms, "cut-over completed");
        }
        self.metrics.cutovers.with_label_values(&["observed"]).inc_by(done.len() as u64);
        if !done.is_empty()
            && let Err(e) = self.cutover_log.lock().unwrap_or_else(|e| e.into_inner()).append(&done)
        {
            tracing::error!(error = %cellpilot_core::status::Chain(&e), "recording cut-overs failed");
        }
    }

    /// Every cut-over: finished, then in flight.
    pub fn cutovers(&self) -> Vec<Cutover> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner()).all()
    }

    /// The clock decisions and ACKs are timed by.
    pub fn clock(&self) -> &cellpilot_core::clock::SharedClock {
        &self.clock
    }

    /// The process metrics.
    pub fn metrics(&self) -> &cellpilot_core::metrics::Metrics {
        &self.metrics
    }

    /// A receiver of every new table.
    pub fn subscribe(&self) -> watch::Receiver<WeightTable> {
        self.table.subscribe()
    }
}

impl cellpilot_core::store::CutoverReports for Controller {
    fn reported(&self, cell: &str, started_ms: i64, completed_ms: i64) {
        // Only plausible reports of cells under control: anything else is a client's invention.
        let now = self.clock.now_ms();
        let plausible = 0 <= started_ms
            && started_ms <= completed_ms
            && completed_ms.saturating_sub(started_ms) <= MAX_REPORTED_CUTOVER_MS
            && completed_ms <= now.saturating_add(MAX_CLOCK_SKEW_MS);
        let known = plausible && self.state.lock().unwrap_or_else(|e| e.into_inner()).has_cell(cell);
        if !known {
            tracing::debug!(%cell, started_ms, completed_ms, "ignoring an implausible or unknown cut-over report");
            return;
        }
        let row = self.tracker.lock().unwrap_or_else(|e| e.into_inner()).reported(cell, started_ms, completed_ms);
        if row.is_some() {
            self.metrics.cutovers.with_label_values(&["reported"]).inc();
        }
        if let Some(row) = row
            && let Err(e) = self.cutover_log.lock().unwrap_or_else(|e| e.into_inner()).append(&[row])
        {
            tracing::error!(error = %cellpilot_core::status::Chain(&e), "recording a reported cut-over failed");
        }
    }
}

/// Longest cut-over a gateway may report.
const MAX_REPORTED_CUTOVER_MS: i64 = 3_600_000;
/// How far ahead of our clock an `applied_at` (or a reported completion) may be: as far as
/// ingest accepts data.
pub const MAX_CLOCK_SKEW_MS: i64 = cellpilot_core::range::MAX_FUTURE_MS;

/// The token a caller's streams count against; an open server's callers count against none.
pub(crate) fn token_of(caller: &Principal) -> Option<&str> {
    match caller {
        Principal::Anonymous => None,
        Principal::Token { name, .. } => Some(name),
    }
}

#[cfg(test)]
mod tests {
    //! A restart in the middle of a cut-over: the drain's cut-over is still measured afterwards
    //! (its completion from the requests seen since; when gateways applied it is unknown), once.

    use super::*;
    use crate::testing::input;
    use cellpilot_core::clock::{SharedClock, TestClock};
    use cellpilot_core::metrics::Metrics;
    use cellpilot_core::store::CellActivity;
    use std::sync::Arc;

    const T: i64 = 1_800_000_000_000;

    /// The last request on cell `a` started at `.0` and arrived at `.1`.
    #[derive(Debug)]
    struct LastRequest(i64, i64);

    impl CellActivity for LastRequest {
        fn latest_request(&self, cell: &str) -> Option<(i64, i64)> {
            (cell == "a").then_some((self.0, self.1))
        }
    }

    fn open(dir: &std::path::Path) -> Controller {
        let clock: SharedClock = Arc::new(TestClock::new(T * 1_000_000));
        let config = ControlConfig { discover_min_requests: 0, ..ControlConfig::default() };
        Controller::open(&config, dir, clock, Metrics::new()).unwrap()
    }

    #[test]
    fn a_cutover_in_flight_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let drained_at = T + 20_000;
        let version = {
            let c = open(dir.path());
            c.evaluate(T, &Inputs::cells(&[input("a", 1000, 0), input("b", 1000, 0), input("c", 1000, 0)]));
            let d = c.evaluate(
                drained_at,
                &Inputs::cells(&[input("a", 18_000, 900), input("b", 1000, 0), input("c", 1000, 0)]),
            );
            assert_eq!(d.len(), 1, "a is drained");
            d[0].version
            // The process stops before the cut-over finishes.
        };
        let c = open(dir.path());
        let pending = c.cutovers();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].cell.as_str(), pending[0].decision_version), ("a", Some(version)));
        assert_eq!((pending[0].applied_at_ms, pending[0].completed_at_ms), (None, None));
        // Requests kept reaching a for 1.5 s after the drain; 5 s of quiet later it is final.
        let activity = LastRequest(drained_at + 1_500, drained_at + 1_600);
        c.finish_cutovers(drained_at + 3_000, &activity);
        assert_eq!(c.cutovers()[0].completed_at_ms, None, "not quiet long enough yet");
        c.finish_cutovers(drained_at + 7_000, &activity);
        let done = c.cutovers();
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].completed_at_ms, done[0].duration_ms), (Some(drained_at + 1_500), Some(1_500)));
        assert_eq!(done[0].applied_at_ms, None, "which gateways applied it was lost with the process");
        drop(c);
        // Finished and logged: another restart neither resumes nor repeats it.
        let c = open(dir.path());
        assert_eq!(c.cutovers(), done);
    }
}
