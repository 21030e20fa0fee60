//! The cell-weight policy, evaluated at each evaluation tick on the data received so far.
//! Pure and deterministic: time comes in as an argument, so every rule is tested on a test clock.
//!
//! Rules (SPEC › Control): drain on a sustained error rate with enough requests; never drain more
//! than `max_drained_fraction` of the base weight of non-stale cells, worst first, at most
//! `max_drains_per_minute`; re-admit drained cells on time (doubled per relapse in the last hour,
//! up to 8×) through a 10 % -> 50 % -> 100 % ramp; bias weights by p50 latency with a 10 %
//! deadband; honour pins until they expire; in dry-run, record but publish base weights.

pub(crate) use crate::decision::{CellInput, CellWeight, Decision, Inputs, Pin, State, WeightTable};
use crate::reason::{percent, span, thousands};
use cellpilot_core::config::{ControlConfig, ControlMode, PolicyConfig};
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
struct Cell {
    state: State,
    /// Published weight.
    weight: u32,
    reason: String,
    /// Weight from latency alone (what Active publishes, before the deadband).
    latency_weight: u32,
    /// Drained since / restoring step started at.
    since_ms: i64,
    /// 0 = 10 %, 1 = 50 % while restoring.
    step: u8,
    /// Relapse times (drains while restoring), for back-off.
    relapses: Vec<i64>,
    last_request_ms: Option<i64>,
    stale: bool,
    pinned_until_ms: i64,
}

/// The rules: the `[control]` settings, and nothing that changes. [`Policy::step`] reads a
/// [`PolicyState`] and the [`Inputs`] of one tick, at a time it is given, and returns what to
/// change: no I/O, no clock, so a test or a backtest replays any stretch of history in
/// milliseconds and the controller only feeds it and publishes what it returns.
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
    control: ControlConfig,
}

/// What the policy remembers from one step to the next: every cell under control, the table
/// version, recent drains (for the rate limit) and cells on their way in.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    cells: BTreeMap<String, Cell>,
    version: u64,
    decided_at_ms: i64,
    /// Drain times, for the per-minute limit.
    drains: Vec<i64>,
    /// Cells whose drain the guard or the rate limit blocked at the last tick, with why.
    blocked: BTreeMap<String, String>,
    /// Cells seen but not yet in the table: what they served so far (`discover_min_requests`).
    candidates: BTreeMap<String, Candidate>,
}

impl PolicyState {
    /// Whether `cell` is under control (in the table).
    pub fn has_cell(&self, cell: &str) -> bool {
        self.cells.contains_key(cell)
    }

    /// The current table version.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Drains blocked at the last step (cell -> why), for `CellDrainBlocked`.
    pub fn blocked(&self) -> &BTreeMap<String, String> {
        &self.blocked
    }
}

/// A cell on its way into the table.
#[derive(Debug, Clone, Copy, Default)]
struct Candidate {
    /// Requests over the windows it was seen in.
    requests: u64,
    /// Ticks whose latest window had requests of it.
    windows: u32,
    /// The last such tick (unix ms).
    last_ms: i64,
}

const RAMP: [f64; 2] = [0.1, 0.5];
const HOUR_MS: i64 = 3_600_000;

impl Policy {
    /// The policy of the `[control]` settings.
    pub fn new(control: &ControlConfig) -> Self {
        Self { cfg: control.policy.clone(), control: control.clone() }
    }

    /// The state before any step: configured cells active at their base weight.
    pub fn start(&self) -> PolicyState {
        let mut state = PolicyState::default();
        for cell in self.control.cells.keys() {
            self.ensure(&mut state, cell);
        }
        state
    }

    /// The configured base weight of `cell` (its own, else the policy's).
    pub fn base(&self, cell: &str) -> u32 {
        self.control.cells.get(cell).and_then(|c| c.base_weight).unwrap_or(self.cfg.base_weight)
    }

    fn ensure(&self, state: &mut PolicyState, cell: &str) -> bool {
        if state.cells.contains_key(cell) {
            return false;
        }
        let base = self.base(cell);
        state.cells.insert(
            cell.to_string(),
            Cell {
                state: State::Active,
                weight: base,
                reason: "base weight".into(),
                latency_weight: base,
                since_ms: 0,
                step: 0,
                relapses: Vec::new(),
                last_request_ms: None,
                stale: false,
                pinned_until_ms: 0,
            },
        );
        true
    }

    /// Puts the cells of `inputs` that have proven themselves under control: with
    /// `discover_min_requests` > 0, at least that many requests over at least two windows, so
    /// one burst of forged `cell.id`s never reaches the gateways' table. True when one was added.
    fn discover(&self, state: &mut PolicyState, now_ms: i64, inputs: &[CellInput]) -> bool {
        let min = self.control.discover_min_requests;
        let mut added = false;
        for i in inputs {
            let name = i.cell.as_str();
            if name == cellpilot_core::UNKNOWN_CELL
                || name == cellpilot_core::OVERFLOW
                || state.cells.contains_key(name)
            {
                continue;
            }
            if min == 0 {
                added |= self.ensure(state, name);
                continue;
            }
            if i.latest_requests == 0 {
                continue;
            }
            let c = state.candidates.entry(i.cell.clone()).or_default();
            if c.last_ms != now_ms {
                c.windows += 1;
                c.requests = c.requests.saturating_add(i.latest_requests);
                c.last_ms = now_ms;
            }
            if c.windows >= 2 && c.requests >= min {
                state.candidates.remove(name);
                added |= self.ensure(state, name);
            }
        }
        let stale_ms = self.control.stale_after.as_millis_i64();
        state.candidates.retain(|_, c| now_ms - c.last_ms < stale_ms);
        added
    }

    /// Whether `cell` is known: in the table, configured, or seen by ingest on its way in.
    pub fn knows(&self, state: &PolicyState, cell: &str) -> bool {
        state.has_cell(cell) || self.control.cells.contains_key(cell) || state.candidates.contains_key(cell)
    }

    /// `[control] max_weight`.
    pub fn max_weight(&self) -> u32 {
        self.control.max_weight
    }

    /// The table gateways should use (base weights in dry-run).
    pub fn table(&self, state: &PolicyState) -> WeightTable {
        let dry = self.control.mode == ControlMode::DryRun;
        let cells = state
            .cells
            .iter()
            .map(|(name, c)| CellWeight {
                cell: name.clone(),
                weight: if dry { self.base(name) } else { c.weight },
                state: if dry { State::Active } else { c.state },
                reason: if dry {
                    format!("dry-run; policy says {} ({})", c.weight, c.reason)
                } else {
                    c.reason.clone()
                },
                stale: c.stale,
            })
            .collect();
        WeightTable { version: state.version, decided_at_ms: state.decided_at_ms, cells }
    }

    /// Restores a cell from the decision log (on start): its last decision wins.
    pub fn restore(&self, state: &mut PolicyState, d: &Decision) {
        self.ensure(state, &d.cell);
        if let Some(c) = state.cells.get_mut(&d.cell) {
            c.state = d.state;
            c.weight = d.new_weight;
            c.reason = d.reason.clone();
            c.since_ms = d.decided_at_ms;
            if d.state == State::Restoring {
                c.step = if d.new_weight as f64 >= 0.5 * f64::from(c.latency_weight) - 0.5 { 1 } else { 0 };
            }
        }
        if d.version > state.version {
            state.version = d.version;
            state.decided_at_ms = d.decided_at_ms;
        }
    }

    /// Takes over a version another node decided: its decisions as [`Policy::restore`] does,
    /// then every cell of its table (cells join the table without a decision) and its version.
    pub fn follow(&self, state: &mut PolicyState, decisions: &[Decision], table: &WeightTable) {
        for d in decisions {
            self.restore(state, d);
        }
        let dry = self.control.mode == ControlMode::DryRun;
        for row in &table.cells {
            self.ensure(state, &row.cell);
            if let Some(c) = state.cells.get_mut(&row.cell) {
                // A dry-run table publishes base weights, not the policy's: keep the policy's.
                if !dry {
                    c.state = row.state;
                    c.weight = row.weight;
                    c.reason = row.reason.clone();
                }
                c.stale = row.stale;
            }
        }
        if table.version >= state.version {
            state.version = table.version;
            state.decided_at_ms = table.decided_at_ms;
        }
    }

    /// Applies an operator's pin (or unpin) at `now_ms`.
    pub fn pin(&self, state: &mut PolicyState, pin: &Pin<'_>, now_ms: i64) -> Vec<Decision> {
        let Pin { cell, weight, until_ms, reason, actor } = *pin;
        self.ensure(state, cell);
        let mut out = Vec::new();
        let version = state.version.saturating_add(1);
        let Some(c) = state.cells.get_mut(cell) else { return out };
        let old = c.weight;
        match weight {
            Some(w) => {
                c.state = State::Pinned;
                c.weight = w;
                c.pinned_until_ms = until_ms;
                c.reason = format!("pinned by {actor}: {reason}");
            }
            None => {
                c.state = State::Active;
                c.weight = c.latency_weight;
                c.pinned_until_ms = 0;
                c.reason = format!("unpinned by {actor}: {reason}");
            }
        }
        out.push(Decision {
            decided_at_ms: now_ms,
            version,
            cell: cell.to_string(),
            old_weight: old,
            new_weight: c.weight,
            state: c.state,
            reason: c.reason.clone(),
            actor: actor.to_string(),
        });
        state.version = version;
        state.decided_at_ms = now_ms;
        out
    }

    /// Evaluates every rule at `now_ms` on `inputs`; returns the changes (one version for all).
    /// The phases, in order: discover, observe, expired pins, failing cells, the guard and rate
    /// limit, ramps and latency bias, apply. A cell changed by an earlier phase is left alone by
    /// the later ones.
    pub fn step(&self, state: &mut PolicyState, inputs: &Inputs, now_ms: i64) -> Vec<Decision> {
        let inputs = inputs.cells.as_slice();
        let added = self.control.auto_discover && self.discover(state, now_ms, inputs);
        let by_cell: BTreeMap<&str, &CellInput> = inputs.iter().map(|i| (i.cell.as_str(), i)).collect();
        let bases: BTreeMap<String, u32> = state.cells.keys().map(|c| (c.clone(), self.base(c))).collect();
        self.observe(state, now_ms, &by_cell, &bases);
        let mut changes = self.expired_pins(state, now_ms);
        let candidates = self.drain_candidates(state, &by_cell);
        changes.extend(self.admit_drains(state, now_ms, candidates, &bases));
        let ramps = self.ramps(state, now_ms, &by_cell, &changes);
        changes.extend(ramps);
        if changes.is_empty() && !added {
            return Vec::new();
        }
        self.apply(state, now_ms, changes)
    }

    /// Phase 1: which cells are stale, and each cell's latency-biased weight.
    fn observe(
        &self,
        state: &mut PolicyState,
        now_ms: i64,
        by_cell: &BTreeMap<&str, &CellInput>,
        bases: &BTreeMap<String, u32>,
    ) {
        let stale_ms = self.control.stale_after.as_millis_i64();
        let (alpha, beta) = (self.cfg.latency_alpha, self.cfg.latency_beta);
        for (name, c) in state.cells.iter_mut() {
            let input = by_cell.get(name.as_str());
            if input.is_some_and(|i| i.latest_requests > 0) {
                c.last_request_ms = Some(now_ms);
            }
            c.stale = c.last_request_ms.is_none_or(|t| now_ms - t >= stale_ms) && c.state != State::Drained;
            if let Some(p50) = input.and_then(|i| i.p50_ms) {
                let base = f64::from(bases[name]);
                c.latency_weight = (base * (1.0 + alpha * (-beta * p50).exp())).round() as u32;
            }
        }
    }

    /// Phase 2: pins whose time is up go back to their latency weight.
    fn expired_pins(&self, state: &PolicyState, now_ms: i64) -> Vec<Change> {
        state
            .cells
            .iter()
            .filter(|(_, c)| c.state == State::Pinned && c.pinned_until_ms <= now_ms)
            .map(|(name, c)| Change::new(name, c.latency_weight, State::Active, "pin expired"))
            .collect()
    }

    /// Phase 3: cells failing now (sustained and latest error rate over the threshold, with
    /// enough requests), worst first.
    fn drain_candidates(&self, state: &PolicyState, by_cell: &BTreeMap<&str, &CellInput>) -> Vec<Failing> {
        let cfg = &self.cfg;
        let thr = cfg.drain_error_rate;
        let mut candidates = Vec::new();
        for (name, c) in &state.cells {
            let Some(i) = by_cell.get(name.as_str()) else { continue };
            let scale = match c.state {
                State::Active => 1.0,
                State::Restoring => RAMP[c.step as usize],
                State::Drained | State::Pinned => continue,
            };
            let min = (cfg.min_requests as f64 * scale).ceil() as u64;
            let (r, latest) = (
                cellpilot_core::error_rate(i.errors, i.requests),
                cellpilot_core::error_rate(i.latest_errors, i.latest_requests),
            );
            if i.requests >= min && r > thr && latest > thr && i.latest_requests > 0 {
                let why = format!(
                    "error rate {} > {} for {} over {} requests",
                    percent(r),
                    percent(thr),
                    span(cfg.drain_for.as_millis_i64()),
                    thousands(i.requests)
                );
                candidates.push(Failing { cell: name.clone(), error_rate: r, why });
            }
        }
        candidates.sort_by(|a, b| b.error_rate.total_cmp(&a.error_rate).then(a.cell.cmp(&b.cell)));
        candidates
    }

    /// Phase 4: the candidates the guard (`max_drained_fraction` of the live base weight) and
    /// the rate limit (`max_drains_per_minute`) let through; the others are recorded as blocked.
    fn admit_drains(
        &self,
        state: &mut PolicyState,
        now_ms: i64,
        candidates: Vec<Failing>,
        bases: &BTreeMap<String, u32>,
    ) -> Vec<Change> {
        let (fraction, per_minute) = (self.cfg.max_drained_fraction, self.cfg.max_drains_per_minute as usize);
        state.drains.retain(|t| now_ms - t < 60_000);
        state.blocked.clear();
        let total: u64 = state.cells.iter().filter(|(_, c)| !c.stale).map(|(n, _)| u64::from(bases[n])).sum();
        let mut drained: u64 = state
            .cells
            .iter()
            .filter(|(_, c)| c.state == State::Drained && !c.stale)
            .map(|(n, _)| u64::from(bases[n]))
            .sum();
        let mut out = Vec::new();
        for Failing { cell, why, .. } in candidates {
            let base = u64::from(bases[&cell]);
            if (drained + base) as f64 > fraction * total as f64 {
                let blocked = format!("{why}, but draining it would exceed max_drained_fraction {fraction}");
                state.blocked.insert(cell, blocked);
                continue;
            }
            if state.drains.len() >= per_minute {
                let blocked = format!("{why}, but {} drains already happened this minute", state.drains.len());
                state.blocked.insert(cell, blocked);
                continue;
            }
            drained += base;
            state.drains.push(now_ms);
            let relapsed = state.cells[&cell].state == State::Restoring;
            let why = if relapsed { format!("relapsed while restoring: {why}") } else { why };
            out.push(Change::new(&cell, 0, State::Drained, why));
        }
        out
    }

    /// Phase 5: drained cells whose wait is over start their ramp, ramping cells take their next
    /// step, and active cells follow their latency weight (with a 10 % deadband) — each cell not
    /// already changed by an earlier phase.
    fn ramps(
        &self,
        state: &PolicyState,
        now_ms: i64,
        by_cell: &BTreeMap<&str, &CellInput>,
        earlier: &[Change],
    ) -> Vec<Change> {
        let cfg = &self.cfg;
        let mut out = Vec::new();
        for (name, c) in &state.cells {
            if earlier.iter().any(|ch| &ch.cell == name) {
                continue;
            }
            match c.state {
                State::Drained => {
                    let recent = c.relapses.iter().filter(|t| now_ms - **t < HOUR_MS).count().min(3) as u32;
                    let wait = cfg.restore_after.as_millis_i64() * (1 << recent);
                    if now_ms - c.since_ms >= wait {
                        let w = (f64::from(c.latency_weight) * RAMP[0]).round().max(1.0) as u32;
                        let why = format!("restoring after {} drained: 10 %", span(wait));
                        out.push(Change::new(name, w, State::Restoring, why));
                    }
                }
                State::Restoring if now_ms - c.since_ms >= cfg.ramp_step.as_millis_i64() => {
                    if c.step == 0 {
                        let w = (f64::from(c.latency_weight) * RAMP[1]).round().max(1.0) as u32;
                        out.push(Change::new(name, w, State::Restoring, "restoring: 50 %"));
                    } else {
                        out.push(Change::new(name, c.latency_weight, State::Active, "restored: 100 %"));
                    }
                }
                State::Active => {
                    // Latency bias, with a deadband so noise does not churn the table.
                    let (old, new) = (f64::from(c.weight), f64::from(c.latency_weight));
                    if old > 0.0 && (new - old).abs() / old >= 0.1 {
                        let p50 = by_cell.get(name.as_str()).and_then(|i| i.p50_ms).unwrap_or(0.0);
                        let why = format!("latency bias: p50 {p50:.1} ms");
                        out.push(Change::new(name, c.latency_weight, State::Active, why));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Phase 6: the changes become the next table version, one decision each.
    fn apply(&self, state: &mut PolicyState, now_ms: i64, changes: Vec<Change>) -> Vec<Decision> {
        let version = state.version.saturating_add(1);
        let mut out = Vec::new();
        for Change { cell, weight, state: to, reason } in changes {
            let Some(c) = state.cells.get_mut(&cell) else { continue };
            let old = c.weight;
            if to == State::Drained && c.state == State::Restoring {
                c.relapses.push(now_ms);
            }
            c.step = match (c.state, to) {
                (State::Restoring, State::Restoring) => 1,
                _ => 0,
            };
            c.state = to;
            c.weight = weight;
            c.since_ms = now_ms;
            c.reason = reason.clone();
            out.push(Decision {
                decided_at_ms: now_ms,
                version,
                cell,
                old_weight: old,
                new_weight: weight,
                state: to,
                reason,
                actor: "policy".into(),
            });
        }
        state.version = version;
        state.decided_at_ms = now_ms;
        out
    }
}

/// What one phase of an evaluation decided for one cell.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    cell: String,
    weight: u32,
    state: State,
    reason: String,
}

impl Change {
    fn new(cell: &str, weight: u32, state: State, reason: impl Into<String>) -> Self {
        Change { cell: cell.to_string(), weight, state, reason: reason.into() }
    }
}

/// A cell failing now, before the guard and the rate limit.
#[derive(Debug)]
struct Failing {
    cell: String,
    error_rate: f64,
    why: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::input;
    use cellpilot_core::config::{CellConfig, Dur};

    const T: i64 = 1_800_000_000_000;

    /// The policy and its state, stepped as the controller steps them.
    struct Run {
        policy: Policy,
        state: PolicyState,
    }

    impl Run {
        fn new(control: &ControlConfig) -> Self {
            let policy = Policy::new(control);
            let state = policy.start();
            Self { policy, state }
        }

        fn evaluate(&mut self, now_ms: i64, cells: &[CellInput]) -> Vec<Decision> {
            self.policy.step(&mut self.state, &Inputs::cells(cells), now_ms)
        }

        fn pin(
            &mut self,
            cell: &str,
            weight: Option<u32>,
            until_ms: i64,
            reason: &str,
            actor: &str,
            now: i64,
        ) -> Vec<Decision> {
            self.policy.pin(&mut self.state, &Pin { cell, weight, until_ms, reason, actor }, now)
        }

        fn table(&self) -> WeightTable {
            self.policy.table(&self.state)
        }

        fn version(&self) -> u64 {
            self.state.version()
        }

        fn blocked(&self) -> &BTreeMap<String, String> {
            self.state.blocked()
        }
    }

    fn config() -> ControlConfig {
        ControlConfig {
            policy: PolicyConfig { latency_alpha: 0.0, ..Default::default() },
            // Discovery has its own test; the others put cells under control at first sight.
            discover_min_requests: 0,
            ..Default::default()
        }
    }

    fn healthy(cells: &[&str]) -> Vec<CellInput> {
        cells.iter().map(|c| input(c, 1000, 0)).collect()
    }

    fn state(p: &Run, cell: &str) -> (State, u32) {
        let t = p.table();
        let c = t.cells.iter().find(|c| c.cell == cell).unwrap();
        (c.state, c.weight)
    }

    #[test]
    fn discovered_cells_join_after_enough_requests_in_two_windows() {
        let mut p = Run::new(&ControlConfig { discover_min_requests: 100, ..config() });
        let cells = |t: &WeightTable| t.cells.iter().map(|c| c.cell.clone()).collect::<Vec<_>>();
        // One burst: 20,000 forged cells with a request each, and one cell with 5,000 in one window.
        let mut burst: Vec<CellInput> = (0..20_000).map(|i| input(&format!("forged-{i}"), 3, 0)).collect();
        burst.push(input("big", 15_000, 0));
        burst.push(input("steady", 180, 0));
        burst.push(input(cellpilot_core::OVERFLOW, 30_000, 0));
        assert!(p.evaluate(T, &burst).is_empty());
        assert!(p.table().cells.is_empty(), "one window is never enough");
        // Re-evaluating the same tick counts nothing twice.
        p.evaluate(T, &burst);
        assert!(p.table().cells.is_empty());
        // The next window: `steady` has served 60 + 60 and `big` more; the forged ones are gone.
        p.evaluate(
            T + 10_000,
            &[input("big", 300, 0), input("steady", 180, 0), input(cellpilot_core::OVERFLOW, 9000, 0)],
        );
        assert_eq!(cells(&p.table()), ["big", "steady"]);
        // A cell that trickles joins once its total reaches the minimum.
        for k in 0..40 {
            p.evaluate(T + 20_000 + k * 10_000, &[input("slow", 9, 0)]);
        }
        assert!(cells(&p.table()).contains(&"slow".to_string()));
        assert!(p.state.candidates.is_empty(), "candidates leave once admitted or stale");
    }

    #[test]
    fn drains_on_sustained_errors_with_enough_requests() {
        let mut p = Run::new(&config());
        assert_eq!(p.evaluate(T, &healthy(&["a", "b", "c"])).len(), 0, "discovery alone changes no weight");
        assert_eq!(p.version(), 1, "but a new table version lists the new cells");
        // Too few requests: no drain, whatever the rate.
        let mut few = healthy(&["a", "b", "c"]);
        few[0] = input("a", 90, 45);
        assert!(p.evaluate(T + 10_000, &few).is_empty());
        let mut bad = healthy(&["a", "b", "c"]);
        bad[0] = input("a", 18_204, 420);
        let d = p.evaluate(T + 20_000, &bad);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].cell.as_str(), d[0].old_weight, d[0].new_weight, d[0].state), ("a", 100, 0, State::Drained));
        assert_eq!(d[0].reason, "error rate 2.31 % > 0.50 % for 30 s over 18,204 requests");
        assert_eq!(d[0].version, p.version());
        assert_eq!(state(&p, "a"), (State::Drained, 0));
    }

    #[test]
    fn latest_window_must_agree() {
        let mut p = Run::new(&config());
        let mut i = input("a", 5000, 100);
        i.latest_errors = 0;
        assert!(
            p.evaluate(T, &[i, input("b", 1000, 0), input("c", 1000, 0)]).iter().all(|d| d.state != State::Drained)
        );
    }

    #[test]
    fn guard_blocks_beyond_half_the_weight_worst_first() {
        let mut p = Run::new(&config());
        let inputs = vec![input("a", 1000, 30), input("b", 1000, 90), input("c", 1000, 60), input("d", 1000, 0)];
        let d = p.evaluate(T, &inputs);
        let drained: Vec<_> = d.iter().filter(|d| d.state == State::Drained).map(|d| d.cell.as_str()).collect();
        assert_eq!(drained, ["b", "c"], "the worst two of four, half the weight");
        assert!(p.blocked().contains_key("a"), "{:?}", p.blocked());
        assert!(p.blocked()["a"].contains("max_drained_fraction"));
    }

    #[test]
    fn drain_rate_limit() {
        let mut cfg = config();
        cfg.policy.max_drained_fraction = 1.0;
        cfg.policy.max_drains_per_minute = 1;
        let mut p = Run::new(&cfg);
        let inputs = vec![input("a", 1000, 90), input("b", 1000, 60), input("c", 1000, 0)];
        assert_eq!(p.evaluate(T, &inputs).iter().filter(|d| d.state == State::Drained).count(), 1);
        assert!(p.blocked()["b"].contains("drains already happened"));
        assert_eq!(p.evaluate(T + 30_000, &inputs).len(), 0, "still inside the minute");
        let d = p.evaluate(T + 61_000, &inputs);
        assert_eq!(d.iter().filter(|d| d.state == State::Drained).map(|d| d.cell.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn restores_on_a_ramp_and_backs_off_after_relapse() {
        let mut p = Run::new(&config());
        let cells = ["a", "b", "c"];
        let mut bad = healthy(&cells);
        bad[0] = input("a", 1000, 100);
        p.evaluate(T, &bad);
        // Drained cells get no traffic: their inputs are empty.
        let quiet =
            vec![CellInput { cell: "a".into(), ..Default::default() }, input("b", 1000, 0), input("c", 1000, 0)];
        assert!(p.evaluate(T + 59_000, &quiet).is_empty());
        let d = p.evaluate(T + 60_000, &quiet);
        assert_eq!((d[0].state, d[0].new_weight), (State::Restoring, 10));
        let d = p.evaluate(T + 90_000, &healthy(&cells));
        assert_eq!((d[0].state, d[0].new_weight), (State::Restoring, 50));
        // Relapse during the ramp: min_requests scaled to 50 %.
        let mut relapse = healthy(&cells);
        relapse[0] = input("a", 60, 30);
        let d = p.evaluate(T + 100_000, &relapse);
        assert_eq!(d[0].state, State::Drained);
        assert!(d[0].reason.starts_with("relapsed while restoring"));
        // Back-off: 120 s now.
        assert!(p.evaluate(T + 100_000 + 60_000, &quiet).is_empty());
        let d = p.evaluate(T + 100_000 + 120_000, &quiet);
        assert_eq!(d[0].state, State::Restoring);
        let d = p.evaluate(T + 100_000 + 150_000, &healthy(&cells));
        assert_eq!(d[0].new_weight, 50);
        let d = p.evaluate(T + 100_000 + 180_000, &healthy(&cells));
        assert_eq!((d[0].state, d[0].new_weight), (State::Active, 100));
    }

    #[test]
    fn flapping_is_suppressed_by_the_back_off() {
        let mut p = Run::new(&config());
        let cells = ["a", "b", "c"];
        let mut bad = healthy(&cells);
        bad[0] = input("a", 1000, 100);
        let quiet =
            vec![CellInput { cell: "a".into(), ..Default::default() }, input("b", 1000, 0), input("c", 1000, 0)];
        let mut t = T;
        let mut drains = Vec::new();
        // The cell fails every time it comes back.
        for _ in 0..40 {
            for d in p.evaluate(t, &bad) {
                if d.state == State::Drained {
                    drains.push(t);
                }
            }
            t += 30_000;
            p.evaluate(t, &quiet);
            t += 30_000;
        }
        let gaps: Vec<i64> = drains.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "back-off never shrinks: {gaps:?}");
        assert!(*gaps.last().unwrap() >= 8 * 60_000, "up to 8× restore_after: {gaps:?}");
    }

    #[test]
    fn latency_bias_with_deadband() {
        let cfg = ControlConfig { discover_min_requests: 0, ..ControlConfig::default() };
        let mut p = Run::new(&cfg);
        let with = |p50: f64| vec![CellInput { p50_ms: Some(p50), ..input("a", 1000, 0) }, input("b", 1000, 0)];
        p.evaluate(T, &with(20.0));
        // base × (1 + 0.5·e^(−0.02·20)) = 100 × 1.335 = 134 (from 100: beyond the deadband).
        assert_eq!(state(&p, "a"), (State::Active, 134));
        // p50 22 ms -> 132: under 10 % change, nothing published.
        assert!(p.evaluate(T + 10_000, &with(22.0)).iter().all(|d| d.cell != "a"));
        assert_eq!(state(&p, "a").1, 134);
        // p50 100 ms -> 107: beyond the deadband.
        let d = p.evaluate(T + 20_000, &with(100.0));
        assert_eq!(d.iter().find(|d| d.cell == "a").unwrap().new_weight, 107);
    }

    #[test]
    fn pins_win_until_they_expire() {
        let mut p = Run::new(&config());
        p.evaluate(T, &healthy(&["a", "b"]));
        let d = p.pin("a", Some(5), T + 60_000, "game day", "ops", T);
        assert_eq!((d[0].new_weight, d[0].state, d[0].actor.as_str()), (5, State::Pinned, "ops"));
        let mut bad = healthy(&["a", "b"]);
        bad[0] = input("a", 1000, 500);
        assert!(p.evaluate(T + 10_000, &bad).is_empty(), "a pinned cell is not drained");
        let d = p.evaluate(T + 60_000, &healthy(&["a", "b"]));
        assert_eq!((d[0].state, d[0].new_weight, d[0].reason.as_str()), (State::Active, 100, "pin expired"));
    }

    #[test]
    fn stale_cells_leave_the_guard() {
        let mut p = Run::new(&config());
        p.evaluate(T, &healthy(&["a", "b", "c", "d"]));
        // c and d stop sending: after stale_after they no longer count toward the total.
        let two = vec![input("a", 1000, 0), input("b", 1000, 0)];
        p.evaluate(T + 300_000, &two);
        assert!(p.table().cells.iter().filter(|c| c.stale).count() == 2);
        let bad = vec![input("a", 1000, 100), input("b", 1000, 100)];
        let d = p.evaluate(T + 310_000, &bad);
        assert_eq!(d.iter().filter(|d| d.state == State::Drained).count(), 1, "half of the two live cells");
        assert_eq!(state(&p, "c"), (State::Active, 100), "stale cells keep their weight");
    }

    #[test]
    fn dry_run_records_but_publishes_base_weights() {
        let mut cfg = config();
        cfg.mode = ControlMode::DryRun;
        cfg.cells.insert("a".into(), CellConfig { base_weight: Some(200) });
        let mut p = Run::new(&cfg);
        let d = p.evaluate(T, &[input("a", 1000, 100), input("b", 1000, 0), input("c", 1000, 0)]);
        assert_eq!((d[0].cell.as_str(), d[0].old_weight, d[0].new_weight), ("a", 200, 0));
        assert_eq!(state(&p, "a"), (State::Active, 200), "the published table keeps the base weight");
        let _ = Dur::secs(1);
    }
}
