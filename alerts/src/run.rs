//! The alert loop: at every tick, gather facts from the rollup store and the control loop, run
//! the rules and the state machine, hand what changed (and firing alerts every
//! `resend_interval`) to the receivers' outboxes, and keep firing alerts on disk so a restart
//! does not forget them.

use crate::burn_rate;
use crate::engine::{Alert, AlertState, Engine};
use crate::outbox::Outboxes;
use crate::rules::{self, CellFacts, CutoverFacts, Facts, Labels, ObjectiveFacts, SloFacts, Window};
pub(crate) use crate::view::AlertsView;
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::Config;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::objective::{self, Events, Objective};
use cellpilot_core::task::Every;
use cellpilot_query::RollupStore;
use cellpilot_query::slo::counts;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the alert rules need from the control loop.
pub trait ControlView: Send + Sync {
    /// Cells drained now.
    fn drained(&self) -> Vec<String>;
    /// Drains the guard or rate limit blocked, with why.
    fn blocked(&self) -> BTreeMap<String, String>;
    /// Cut-overs finished since `since_ms`: (cell, decision version, duration ms).
    fn finished_cutovers(&self, since_ms: i64) -> Vec<(String, Option<u64>, i64)>;
    /// Whether this node sends alerts: in a cluster only the control-loop leader does (every
    /// node still evaluates them, for its API and pages).
    fn leads(&self) -> bool {
        true
    }
}

fn state_path(config: &Config) -> PathBuf {
    config.storage.dir.join("alerts").join("firing.json")
}

/// Firing alerts saved by a previous run.
pub(crate) fn load_firing(config: &Config) -> Vec<Alert> {
    #[derive(serde::Deserialize)]
    struct Saved {
        fingerprint: String,
        labels: Labels,
        annotations: Labels,
        active_since_ms: i64,
        starts_at_ms: Option<i64>,
        page: String,
    }
    let Ok(bytes) = std::fs::read(state_path(config)) else { return Vec::new() };
    let saved: Vec<Saved> = serde_json::from_slice(&bytes).unwrap_or_default();
    saved
        .into_iter()
        .map(|s| Alert {
            fingerprint: s.fingerprint,
            labels: s.labels,
            annotations: s.annotations,
            state: AlertState::Firing,
            active_since_ms: s.active_since_ms,
            starts_at_ms: s.starts_at_ms,
            ends_at_ms: None,
            page: s.page,
        })
        .collect()
}

fn save_firing(config: &Config, firing: &[Alert]) {
    let path = state_path(config);
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(firing).unwrap_or_default())?;
        std::fs::rename(&tmp, &path)
    };
    if let Err(e) = write() {
        tracing::error!(error = %cellpilot_core::status::Chain(&e), "saving firing alerts failed");
    }
}

/// The facts the rules look at, at `now_ms`.
pub(crate) fn facts(
    store: &RollupStore,
    config: &Config,
    control: &dyn ControlView,
    now_ms: i64,
) -> cellpilot_query::Result<Facts> {
    let mut slos = Vec::new();
    for s in &config.slo {
        let sel = &s.selector;
        let mut objectives: Vec<ObjectiveFacts> = Objective::of(s)
            .into_iter()
            .map(|objective| ObjectiveFacts { objective, windows: BTreeMap::new() })
            .collect();
        for w in burn_rate::windows() {
            let c = counts(store, sel, now_ms - w, now_ms, now_ms, objective::slow_above_us(s))?;
            let events = Events { requests: c.requests, errors: c.errors, slow: c.slow };
            for o in &mut objectives {
                o.windows.insert(w, Window { bad: o.objective.bad(&events), total: c.requests });
            }
        }
        let selector: Labels = [("cell", &s.selector.cell), ("service", &s.selector.service)]
            .into_iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
            .collect();
        slos.push(SloFacts { name: s.name.clone(), objectives, selector });
    }
    let window = config.alerts.cell_error_rate_for.as_millis_i64();
    let recent = cellpilot_query::cells::cells(store, now_ms - window, now_ms, now_ms)?;
    let five: BTreeMap<String, f64> = cellpilot_query::cells::cells(store, now_ms - 300_000, now_ms, now_ms)?
        .into_iter()
        .map(|c| (c.cell, c.quantiles.p999_us as f64 / 1000.0))
        .collect();
    let drained = control.drained();
    let blocked = control.blocked();
    let mut names: Vec<String> =
        recent.iter().map(|c| c.cell.clone()).chain(drained.iter().cloned()).chain(blocked.keys().cloned()).collect();
    names.sort();
    names.dedup();
    let cells = names
        .into_iter()
        .map(|cell| {
            let r = recent.iter().find(|c| c.cell == cell);
            CellFacts {
                error_rate: r.map_or(0.0, |r| r.error_rate()),
                requests: r.map_or(0, |r| r.requests),
                drained: drained.contains(&cell),
                drain_blocked: blocked.get(&cell).cloned(),
                p999_5m_ms: five.get(&cell).copied(),
                cell,
            }
        })
        .collect();
    let default_target = config.alerts.cutover_slow.as_millis_i64();
    let cutovers = control
        .finished_cutovers(now_ms - 10 * 60_000)
        .into_iter()
        .map(|(cell, version, duration_ms)| {
            let target_ms = config
                .slo
                .iter()
                .filter(|s| s.selector.cell.as_ref().is_none_or(|c| *c == cell))
                .filter_map(|s| s.cutover_ms.map(|t| t as i64))
                .min()
                .unwrap_or(default_target);
            CutoverFacts { cell, version, duration_ms, target_ms }
        })
        .collect();
    Ok(Facts {
        slos,
        cells,
        cutovers,
        cell_error_rate: config.alerts.cell_error_rate.unwrap_or(config.control.policy.drain_error_rate),
        latency_thresholds: config
            .slo
            .iter()
            .filter_map(|s| s.latency_p999_ms.map(|t| (s.name.clone(), s.selector.cell.clone(), t)))
            .collect(),
    })
}

/// Evaluates and delivers every window width until `shutdown` resolves.
pub async fn run(
    store: Arc<RollupStore>,
    config: Arc<Config>,
    control: Arc<dyn ControlView>,
    view: Arc<AlertsView>,
    metrics: Metrics,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send,
) {
    let mut engine = Engine::with(load_firing(&config));
    let external = if config.web.external_url.is_empty() {
        format!("http://{}", config.web.listen)
    } else {
        config.web.external_url.clone()
    };
    // Dropped when this loop ends, which stops every delivery task with it.
    let outboxes = Outboxes::start(&config.alerts, external, view.clone(), metrics, clock.clone());
    let resend = config.alerts.resend_interval.as_millis_i64();
    let tick_ms = config.ingest.window.as_millis_i64().clamp(1_000, 10_000);
    let mut last_sent: i64 = i64::MIN / 2;
    let mut leading = true;
    let mut every = Every::new(Duration::from_millis(tick_ms as u64), shutdown);
    while every.tick().await {
        let now = clock.now_ms();
        let (s, c, ctl) = (store.clone(), config.clone(), control.clone());
        let gathered = cellpilot_core::task::blocking(move || facts(&s, &c, ctl.as_ref(), now)).await;
        let facts = match gathered {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                tracing::error!(error = %cellpilot_core::status::Chain(&e), "gathering alert facts failed");
                continue;
            }
            Err(e) => {
                tracing::error!(error = %cellpilot_core::status::Chain(&e), "gathering alert facts did not finish");
                continue;
            }
        };
        let changed = engine.evaluate(now, &rules::conditions(&facts));
        view.set_alerts(engine.alerts());
        if !changed.is_empty() {
            save_firing(&config, &engine.firing());
            for a in &changed {
                tracing::info!(alert = ?a.labels, state = ?a.state, "alert");
            }
        }
        // Only the leader delivers; on becoming it, every firing alert is due again at once
        // (what changed while another node delivered may not have reached the receivers).
        let leads = control.leads();
        if !leads {
            leading = false;
            continue;
        }
        if !leading {
            tracing::info!("leading: delivering alerts from this node");
            leading = true;
            last_sent = i64::MIN / 2;
        }
        let resend_due = now - last_sent >= resend;
        let mut to_send: Vec<Alert> = changed.clone();
        if resend_due {
            to_send.extend(
                engine.firing().into_iter().filter(|a| !changed.iter().any(|c| c.fingerprint == a.fingerprint)),
            );
        }
        if to_send.is_empty() {
            continue;
        }
        if resend_due {
            last_sent = now;
        }
        outboxes.offer(to_send);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_alerts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.dir = dir.path().to_path_buf();
        let labels: Labels =
            [("alertname".to_string(), "CellDrained".to_string()), ("cell".to_string(), "a".to_string())].into();
        let cond = rules::Condition { labels, annotations: Labels::new(), for_ms: 0, page: "/cells/a".into() };
        let mut engine = Engine::default();
        engine.evaluate(1_000, std::slice::from_ref(&cond));
        save_firing(&config, &engine.firing());
        let restored = Engine::with(load_firing(&config));
        assert_eq!(restored.firing(), engine.firing());
        // Still holding after the restart: no new firing transition, so nothing is re-announced as new.
        let mut restored = restored;
        assert!(restored.evaluate(2_000, &[cond]).is_empty());
        assert!(restored.evaluate(3_000, &[]).iter().all(|a| a.state == AlertState::Resolved));
    }
}
