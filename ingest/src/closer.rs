//! The window closer: once a second, takes the windows whose `window_end + allowed_lateness` has
//! passed and hands their rows to the [`RollupSink`].

use crate::aggregator::SharedAggregator;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::store::RollupSink;
use cellpilot_core::task::{self, Every};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How often due windows are looked for.
pub const TICK: Duration = Duration::from_secs(1);
/// Windows are taken this long after their deadline, so an export admitted just before the
/// deadline (and still being made durable) lands in its window rather than a second copy of it.
pub const CLOSE_GRACE_MS: i64 = 2_000;

/// Closes due windows once; returns how many rows were handed over.
pub fn close_once(agg: &SharedAggregator, sink: &dyn RollupSink, clock: &SharedClock, metrics: &Metrics) -> usize {
    let now = clock.now_ms() - CLOSE_GRACE_MS;
    let mut rows = 0;
    let mut take = || {
        let closed = agg.close_due(now)?;
        rows = closed.as_ref().map_or(0, |b| b.rollups.num_rows());
        Ok(closed)
    };
    if let Err(e) = sink.close(now, &mut take) {
        tracing::error!(error = %cellpilot_core::status::Chain(&e), "closing windows failed");
    }
    metrics.windows_closed.inc_by(rows as u64);
    metrics.rollup_rows.inc_by(rows as u64);
    {
        let a = agg.lock();
        metrics.windows_open.set(a.open_windows() as i64);
        metrics.series_live.set(a.live_series() as i64);
    }
    rows
}

/// Runs [`close_once`] every [`TICK`] until `shutdown` resolves.
pub async fn run(
    agg: SharedAggregator,
    sink: Arc<dyn RollupSink>,
    clock: SharedClock,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut every = Every::new(TICK, shutdown);
    while every.tick().await {
        let (agg, sink, clock, metrics) = (agg.clone(), sink.clone(), clock.clone(), metrics.clone());
        // Serializing histograms is CPU work; keep it off the async workers.
        if let Err(e) = task::blocking(move || close_once(&agg, sink.as_ref(), &clock, &metrics)).await {
            tracing::error!(error = %cellpilot_core::status::Chain(&e), "closing windows did not finish; the next tick retries");
        }
    }
}
