//! The control loop: at every evaluation tick (window boundary + `evaluation_delay`) it reads
//! each cell's recent numbers from the store (open windows included) and runs the policy.

use crate::controller::Controller;
use crate::policy::{CellInput, Inputs};
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::Config;
use cellpilot_core::task::{self, Stop};
use cellpilot_query::RollupStore;
use cellpilot_query::cells::cells;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Inputs for a tick at the window boundary `boundary_ms`.
pub(crate) fn inputs(
    store: &RollupStore,
    config: &Config,
    boundary_ms: i64,
    now_ms: i64,
) -> cellpilot_query::Result<Inputs> {
    let width = config.ingest.window.as_millis_i64();
    let trailing = cells(store, boundary_ms - config.control.policy.drain_for.as_millis_i64(), boundary_ms, now_ms)?;
    let latest: BTreeMap<_, _> =
        cells(store, boundary_ms - width, boundary_ms, now_ms)?.into_iter().map(|c| (c.cell.clone(), c)).collect();
    let minute: BTreeMap<_, _> =
        cells(store, boundary_ms - 60_000, boundary_ms, now_ms)?.into_iter().map(|c| (c.cell.clone(), c)).collect();
    let cells = trailing
        .into_iter()
        .map(|c| {
            let l = latest.get(&c.cell);
            CellInput {
                requests: c.requests,
                errors: c.errors,
                latest_requests: l.map_or(0, |l| l.requests),
                latest_errors: l.map_or(0, |l| l.errors),
                p50_ms: minute.get(&c.cell).filter(|m| m.requests > 0).map(|m| m.quantiles.p50_us as f64 / 1000.0),
                cell: c.cell,
            }
        })
        .collect();
    Ok(Inputs { cells })
}

/// Evaluates at every tick until `shutdown` resolves.
pub async fn run(
    controller: Arc<Controller>,
    store: Arc<RollupStore>,
    config: Arc<Config>,
    clock: SharedClock,
    activity: Arc<dyn cellpilot_core::store::CellActivity>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let width = config.ingest.window.as_millis_i64().max(1);
    let delay = config.control.evaluation_delay.as_millis_i64();
    let mut stop = Stop::new(shutdown);
    let mut last: Option<i64> = None;
    loop {
        let now = clock.now_ms();
        let boundary = now - now.rem_euclid(width);
        let mut next = boundary + delay;
        if next <= now {
            next += width;
        }
        if !stop.sleep(Duration::from_millis((next - now) as u64)).await {
            return;
        }
        let now = clock.now_ms();
        let boundary = now - now.rem_euclid(width);
        let metrics = controller.metrics().clone();
        if let Some(prev) = last {
            let skipped = ((boundary - prev) / width - 1).max(0);
            if skipped > 0 {
                tracing::warn!(skipped, "the control loop fell behind and skipped evaluation ticks");
                metrics.ticks_missed.inc_by(skipped as u64);
            }
        }
        last = Some(boundary);
        metrics.evaluations.inc();
        let (store, config, controller, activity) =
            (store.clone(), config.clone(), controller.clone(), activity.clone());
        let result = task::blocking(move || -> cellpilot_query::Result<()> {
            let inputs = inputs(&store, &config, boundary, now)?;
            controller.evaluate(now, &inputs);
            controller.finish_cutovers(now, activity.as_ref());
            Ok(())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %cellpilot_core::status::Chain(&e), "control evaluation failed"),
            Err(e) => tracing::error!(error = %cellpilot_core::status::Chain(&e), "control evaluation did not finish"),
        }
    }
}
