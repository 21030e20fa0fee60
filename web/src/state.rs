//! What every handler can reach: the store, config-derived settings, auth, metrics, readiness.
//! `server` opens the store and the controller and hands them in.

use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::Config;
use cellpilot_core::metrics::Metrics;
use cellpilot_query::RollupStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ApiError;

/// Why the web state could not be made.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The SQL executor's pool.
    #[error("SQL executor: {0}")]
    Sql(#[from] cellpilot_query::Error),
    /// The token lists of `[auth]`.
    #[error("auth: {0}")]
    Auth(#[from] cellpilot_core::Error),
}

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
    pub alerts: Arc<cellpilot_alerts::AlertsView>,
}

impl AppState {
    /// The state over a store and a controller the caller opened: token checks from `[auth]`,
    /// the SQL executor from `[query]`, an empty alerts view, no health checks yet. Not ready
    /// until [`AppState::ready`] is set.
    pub fn new(
        config: Arc<Config>,
        clock: SharedClock,
        metrics: Metrics,
        store: Arc<RollupStore>,
        controller: Arc<cellpilot_control::Controller>,
    ) -> Result<Self, OpenError> {
        Ok(AppState {
            store,
            auth: Authenticator::new(&config.auth)?,
            metrics,
            clock,
            ready: Arc::new(AtomicBool::new(false)),
            sql: Arc::new(cellpilot_query::sql::Executor::new(config.query.max_concurrent)?),
            health: cellpilot_core::health::Health::default(),
            controller,
            alerts: Arc::new(cellpilot_alerts::AlertsView::default()),
            config,
        })
    }

    /// Limits of one SQL query, from `[query]`.
    pub fn query_limits(&self) -> cellpilot_query::sql::Limits {
        let q = &self.config.query;
        cellpilot_query::sql::Limits {
            memory: q.memory_limit.as_usize(),
            timeout: q.timeout.0,
            max_rows: q.max_rows,
            spill: Some((self.config.storage.dir.join("tmp").join("sql-spill"), q.max_spill.0)),
        }
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
        Ok(cellpilot_dashboards::report(&cellpilot_dashboards::ReportRequest {
            store: &self.store,
            slo,
            settings: cellpilot_dashboards::ReportSettings::from_config(&self.config),
            drains,
            from_ms,
            to_ms,
            now_ms,
        })?)
    }

    /// What an API range may cover now: back to the longest retention, up to now + 5 min.
    pub fn range_bounds(&self) -> cellpilot_core::range::RangeBounds {
        cellpilot_core::range::RangeBounds::kept(&self.config.storage, self.clock.now_ms())
    }
}

/// Runs `f` (reading the store: blocking) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    cellpilot_core::task::blocking(f).await.map_err(|e| ApiError::Internal(e.into()))?
}
