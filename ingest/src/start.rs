//! The crate's front door: [`start`] replays the WAL into the open windows and returns a
//! [`Handle`] whose routers and closer task the node serves; [`Deps`] is all it needs from the
//! rest of the process.

use crate::aggregator::{Aggregator, AggregatorSettings, SharedAggregator};
use crate::error::Error;
use crate::mapping::Mapper;
use crate::pipeline::{Ingest, IngestParts};
use crate::sequencer::{WalSettings, replay_with};
use crate::wal::WalError;
use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::{Config, IngestConfig};
use cellpilot_core::health::Health;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::store::{CutoverReports, RollupSink};
use std::sync::Arc;

/// The open windows every node keeps: an ingest node fills them, a query node's control loop
/// reads cell activity from them (empty there), and the store reads them as its open source.
pub fn windows(config: &IngestConfig) -> SharedAggregator {
    SharedAggregator::new(Aggregator::new(AggregatorSettings::from_config(config)))
}

/// What ingest needs from the rest of the node.
#[derive(Debug)]
pub struct Deps {
    /// Token and certificate checks.
    pub auth: Authenticator,
    /// Process metrics.
    pub metrics: Metrics,
    /// "Now".
    pub clock: SharedClock,
    /// `/readyz`: replay damage and a stopped sequencer are reported here.
    pub health: Health,
    /// Where closed windows go, and how far they have persisted.
    pub sink: Arc<dyn RollupSink>,
    /// Where cut-overs reported in OTLP logs go (also the ones found again in the WAL).
    pub cutovers: Option<Arc<dyn CutoverReports>>,
}

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The WAL could not be read back.
    #[error("replaying the WAL")]
    Replay(#[source] WalError),
    /// The export path (its WAL writer and sequencer) could not be started.
    #[error("starting the export path")]
    Pipeline(#[source] Error),
    /// The replay task did not finish.
    #[error("the WAL replay task failed")]
    Task(#[source] cellpilot_core::task::Interrupted),
}

/// A started ingest pipeline: what the OTLP listeners serve and the task that closes windows.
#[derive(Debug)]
pub struct Handle {
    ingest: Arc<Ingest>,
    windows: SharedAggregator,
    sink: Arc<dyn RollupSink>,
    clock: SharedClock,
    metrics: Metrics,
}

/// Replays the WAL into `windows` (closed windows of the checkpoint go back to the sink, replay
/// damage to `/readyz`), then starts the export path on it.
pub async fn start(config: &Config, windows: SharedAggregator, deps: Deps) -> Result<Handle, StartError> {
    let Deps { auth, metrics, clock, health, sink, cutovers } = deps;
    let durable_before = sink.persisted_until();
    let (dir, agg, reports) = (config.storage.dir.clone(), windows.clone(), cutovers.clone());
    let mapper = Mapper::new(&config.ingest);
    let mut replayed =
        cellpilot_core::task::blocking(move || replay_with(&dir, &mapper, &agg, durable_before, reports.as_deref()))
            .await
            .map_err(StartError::Task)?
            .map_err(StartError::Replay)?;
    metrics.wal_quarantined.inc_by(replayed.quarantined as u64);
    for d in &replayed.damage {
        health.notice(d.clone());
    }
    // The checkpoint's closed windows wait for their Parquet bucket in the store, as before.
    for rows in std::mem::take(&mut replayed.closed) {
        sink.restore(rows);
    }
    tracing::info!(
        checkpoint = ?replayed.checkpoint,
        records = replayed.records,
        counted = replayed.counted,
        already_persisted = replayed.already_persisted,
        "recovered"
    );
    let mut wal = WalSettings::new(&config.storage.dir, config.storage.fsync, config.storage.wal_max_size.0);
    wal.checkpoint_interval = config.storage.checkpoint_interval.0;
    let watermark = sink.clone();
    let ingest = Ingest::new(
        &config.ingest,
        IngestParts {
            aggregator: windows.clone(),
            auth,
            metrics: metrics.clone(),
            clock: clock.clone(),
            wal: Some((wal, replayed)),
            watermark: Arc::new(move || watermark.persisted_until()),
            cutovers,
        },
    )
    .map_err(StartError::Pipeline)?
    .with_body_read_timeout(config.transport.body_read_timeout.0);
    health.add(ingest.health_check());
    Ok(Handle { ingest: Arc::new(ingest), windows, sink, clock, metrics })
}

impl Handle {
    /// The tonic routes of the three OTLP collector services.
    pub fn grpc_routes(&self) -> tonic::service::Routes {
        crate::grpc::routes(self.ingest.clone())
    }

    /// The OTLP/HTTP routes (`/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub fn http_router(&self) -> axum::Router {
        crate::http::router(self.ingest.clone())
    }

    /// The task that closes windows on time and hands them to the sink; ends when `stop` does.
    pub fn closer<S>(&self, stop: S) -> impl Future<Output = ()> + Send + use<S>
    where
        S: Future<Output = ()> + Send,
    {
        let (windows, sink, clock, metrics) =
            (self.windows.clone(), self.sink.clone(), self.clock.clone(), self.metrics.clone());
        async move { crate::closer::run(windows, sink, clock, metrics, stop).await }
    }

    /// Stops the export path after the exports already queued, once the listeners have let go
    /// of it (their routers hold it); `false` while one still does.
    pub fn shutdown(&mut self) -> bool {
        match Arc::get_mut(&mut self.ingest) {
            Some(ingest) => {
                ingest.shutdown();
                true
            }
            None => false,
        }
    }
}
