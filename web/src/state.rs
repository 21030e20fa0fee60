//! What every handler can reach: the store, config-derived settings, auth, metrics, readiness.

use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::Config;
use cellpilot_core::metrics::Metrics;
use cellpilot_query::RollupStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ApiError;

/// Shared state of the web listener.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Rollups, closed and open.
    pub store: Arc<RollupStore>,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Token checks.
    pub auth: Authenticator,
    /// Process metrics.
    pub metrics: Metrics,
    /// "Now", injectable.
    pub clock: SharedClock,
    /// Set once every listener is bound (and, with a WAL, replay is done).
    pub ready: Arc<AtomicBool>,
    /// Where SQL queries run, at most `[query] max_concurrent` at once.
    pub sql: Arc<cellpilot_query::sql::Executor>,
    /// Checks that must pass for `/readyz` to say ready (the sequencer runs, for one).
    pub health: cellpilot_core::health::Health,
    /// Cell weights and decisions.
    pub controller: Arc<cellpilot_control::Controller>,
    /// Alerts and their deliveries.
    pub alerts: Arc<cellpilot_alerts::run::AlertsView>,
}

impl AppState {
    /// Limits of one SQL query, from `[query]`.
    pub fn query_limits(&self) -> cellpilot_query::sql::Limits {
        let q = &self.config.query;
        cellpilot_query::sql::Limits { memory: q.memory_limit.as_usize(), timeout: q.timeout.0, max_rows: q.max_rows }
    }
}

impl AppState {
    /// Why `/readyz` does not answer 200: empty when ready.
    pub fn not_ready(&self) -> Vec<String> {
        if !self.ready.load(Ordering::Acquire) {
            return vec!["starting".into()];
        }
        self.health.problems()
    }

    /// The published (state, weight) of `cell`; cells not under control yet are active at base weight.
    pub fn cell_weight(&self, cell: &str) -> (cellpilot_control::State, u32) {
        self.controller
            .table()
            .cells
            .iter()
            .find(|c| c.cell == cell)
            .map(|c| (c.state, c.weight))
            .unwrap_or((cellpilot_control::State::Active, self.base_weight(cell)))
    }

    /// Every cut-over, as the attribution engine takes them.
    pub fn drains(&self) -> Vec<cellpilot_dashboards::Drain> {
        self.controller
            .cutovers()
            .into_iter()
            .map(|c| cellpilot_dashboards::Drain {
                cell: c.cell,
                version: c.decision_version,
                decided_at_ms: c.decided_at_ms,
                completed_at_ms: c.completed_at_ms,
                duration_ms: c.duration_ms,
            })
            .collect()
    }

    /// The SLO named `name`.
    pub fn slo(&self, name: &str) -> Result<cellpilot_core::config::SloConfig, ApiError> {
        self.config
            .slo
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .ok_or_else(|| ApiError::NotFound(format!("no SLO named `{name}` (see GET /api/v1/slos)")))
    }

    /// The SLA report of `slo` over `[from_ms, to_ms)` at `now_ms` (blocking: call off the async
    /// workers).
    pub fn report(
        &self,
        slo: &cellpilot_core::config::SloConfig,
        drains: &[cellpilot_dashboards::Drain],
        from_ms: i64,
        to_ms: i64,
        now_ms: i64,
    ) -> Result<cellpilot_dashboards::Report, ApiError> {
        Ok(cellpilot_dashboards::report(
            &self.store,
            slo,
            &self.config.dashboards,
            self.config.control.policy.drain_error_rate,
            drains,
            from_ms,
            to_ms,
            now_ms,
        )?)
    }

    /// What an API range may cover now: back to the longest retention, up to now + 5 min.
    pub fn range_bounds(&self) -> cellpilot_core::range::RangeBounds {
        let s = &self.config.storage;
        let retention_ms =
            [s.retention_10s, s.retention_5m, s.retention_1h].iter().map(|d| d.as_millis_i64()).max().unwrap_or(0);
        cellpilot_core::range::RangeBounds { now_ms: self.clock.now_ms(), retention_ms }
    }

    /// The configured base weight of `cell`.
    pub fn base_weight(&self, cell: &str) -> u32 {
        self.config
            .control
            .cells
            .get(cell)
            .and_then(|c| c.base_weight)
            .unwrap_or(self.config.control.policy.base_weight)
    }
}
