//! `cellpilot bench web`: server-side render time of `/` and `/sla/{slo}` for 100 cells
//! (`cellpilot generate` into a temp data dir: 30 days, the finest tier for the last 24 h), through
//! the real router: the first render of each page (nothing decoded or derived yet) and the median
//! of the renders after it (what a dashboard refreshing every 30 s sees).

use super::median;
use crate::generate::{self, Plan};
use cellpilot_core::auth::Authenticator;
use cellpilot_core::clock::{Clock, SharedClock, SystemClock};
use cellpilot_core::config::{Config, Dur, SloConfig};
use cellpilot_core::metrics::Metrics;
use cellpilot_query::tier::{DAY_MS, HOUR_MS};
use cellpilot_query::{RollupStore, StoreSettings};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tower::ServiceExt;

/// Runs the benchmark and prints the figures.
pub fn run(json: bool, runs: usize) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(measure(json, runs.max(1)))
}

async fn measure(json: bool, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let now = SystemClock.now_ms();
    let plan = Plan {
        cells: 100,
        services: 1,
        routes: 1,
        rps: 5.0,
        incidents: vec![generate::Incident::parse("cell-07@3h+15m:0.3", now)?],
        seed: 5,
        ..Plan::ending_before(Arc::new(cellpilot_query::storage::Storage::local(dir.path())), now)
    };
    generate::run(&plan)?;
    let mut config = Config::default();
    config.storage.dir = dir.path().to_path_buf();
    config.slo.push(SloConfig {
        name: "bench".into(),
        availability: 0.999,
        latency_p999_ms: Some(1_000.0),
        cutover_ms: Some(1_000),
        period: Dur::days(30),
        selector: Default::default(),
    });
    let store = Arc::new(RollupStore::open(StoreSettings {
        storage: plan.storage.clone(),
        fine_ms: 10_000,
        lateness_ms: 30_000,
        retention_ms: [48 * HOUR_MS, 30 * DAY_MS, 400 * DAY_MS],
    })?);
    let clock: SharedClock = Arc::new(SystemClock);
    let metrics = Metrics::new();
    let controller = Arc::new(
        cellpilot_control::Controller::open(&config.control, dir.path(), clock.clone(), metrics.clone())
            .map_err(anyhow::Error::msg)?,
    );
    let state = cellpilot_web::AppState {
        store,
        config: Arc::new(config),
        auth: Authenticator::default(),
        metrics,
        clock,
        ready: Arc::new(AtomicBool::new(true)),
        health: Default::default(),
        sql: Arc::new(cellpilot_query::sql::Executor::new(4)?),
        controller,
        alerts: Arc::default(),
    };
    let app = cellpilot_web::router(state);
    let time = |path: &'static str| {
        let app = app.clone();
        async move {
            let mut xs = Vec::new();
            for _ in 0..=runs {
                let req = axum::http::Request::get(path).body(axum::body::Body::empty())?;
                let t = cellpilot_core::clock::monotonic();
                let resp = app.clone().oneshot(req).await?;
                let status = resp.status();
                let _ = axum::body::to_bytes(resp.into_body(), 64 << 20).await?;
                xs.push(t.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(status == 200, "{path} answered {status}");
            }
            let first = xs.remove(0);
            anyhow::Ok((first, median(&mut xs)))
        }
    };
    let (overview_first, overview) = time("/").await?;
    let (sla_first, sla) = time("/sla/bench?range=24h").await?;
    let (sla_30d_first, sla_30d) = time("/sla/bench?range=30d").await?;
    let round = |x: f64| (x * 100.0).round() / 100.0;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "bench": "web", "cells": 100, "runs": runs,
                "overview_ms": round(overview), "sla_ms": round(sla), "sla_30d_ms": round(sla_30d),
                "overview_first_ms": round(overview_first), "sla_first_ms": round(sla_first),
                "sla_30d_first_ms": round(sla_30d_first),
            })
        );
    } else {
        println!(
            "render / : {overview:.1} ms (first {overview_first:.1})   /sla/bench 24 h: {sla:.1} ms (first \
             {sla_first:.1})   30 d: {sla_30d:.1} ms (first {sla_30d_first:.1})   (100 cells, medians of {runs})"
        );
    }
    Ok(())
}
