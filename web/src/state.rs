//! What every handler can reach: the store, config-derived settings, auth, metrics, readiness.

use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::Config;
use cellpilot_core::metrics::Metrics;
use cellpilot_query::RollupStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::ApiError;

/// Why the web state could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The rollup store (its directory, a tier's files) or the SQL executor.
    #[error("rollup store: {0}")]
    Store(#[from] cellpilot_query::Error),
    /// The token lists of `[auth]`.
    #[error("auth: {0}")]
    Auth(#[from] cellpilot_core::Error),
    /// The decision or cut-over log under the data directory.
    #[error("control state: {0}")]
    Control(#[from] cellpilot_control::error::Error),
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
    pub alerts: Arc<cellpilot_alerts::run::AlertsView>,
}

impl AppState {
    /// Opens what the web listener serves from `config`: the rollup store under
    /// `[storage] dir` (its files read, open windows not attached yet), the controller with its
    /// logs, an empty alerts view and the SQL executor. Not ready until [`AppState::ready`] is set.
    pub fn open(config: Arc<Config>, clock: SharedClock, metrics: Metrics) -> Result<Self, OpenError> {
        let auth = Authenticator::new(&config.auth)?;
        let s = &config.storage;
        let spec = cellpilot_core::window::WindowSpec::new(config.ingest.window.0, config.ingest.allowed_lateness.0);
        let store = Arc::new(RollupStore::open(cellpilot_query::StoreSettings {
            storage: Arc::new(cellpilot_query::storage::Storage::from_config(s, &config.cluster.node_id())?),
            fine_ms: spec.width_ms,
            lateness_ms: spec.lateness_ms,
            retention_ms: [s.retention_10s, s.retention_5m, s.retention_1h].map(|d| d.as_millis_i64()),
        })?);
        let controller = Arc::new(
            cellpilot_control::Controller::open(&config.control, &s.dir, clock.clone(), metrics.clone())?
                .stream_caps(cellpilot_control::gateways::StreamCaps::of(&config.xds)),
        );
        Ok(AppState {
            store,
            auth,
            metrics,
            clock,
            ready: Arc::new(AtomicBool::new(false)),
            sql: Arc::new(cellpilot_query::sql::Executor::new(config.query.max_concurrent)?),
            health: cellpilot_core::health::Health::default(),
            controller,
            alerts: Arc::new(cellpilot_alerts::run::AlertsView::default()),
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
