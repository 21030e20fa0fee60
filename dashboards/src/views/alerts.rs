//! The alerts' views: pending, firing and recently resolved alerts with the last delivery per
//! receiver, for the alerts page and `GET /api/v1/alerts`.

use cellpilot_alerts::{Alert, AlertState, AlertsView, DeliveryStatus};
use cellpilot_core::time::format_rfc3339_ms;
use serde::Serialize;
use std::collections::BTreeMap;

/// What the alerts page shows.
#[derive(Debug, Clone)]
pub struct AlertsPage {
    /// One row per alert.
    pub rows: Vec<AlertRow>,
    /// The last delivery per receiver.
    pub deliveries: Vec<DeliveryRow>,
}

/// An alert row of the page.
#[derive(Debug, Clone)]
pub struct AlertRow {
    /// `alertname`.
    pub name: String,
    /// `pending`, `firing` or `resolved`.
    pub state: String,
    /// `bad` while firing, else `muted`.
    pub class: &'static str,
    /// The other labels, `k=v` separated by spaces.
    pub labels: String,
    /// The `summary` annotation.
    pub summary: String,
    /// When it started firing, or became pending.
    pub since: String,
}

/// A delivery row of the page.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// The receiver's name.
    pub receiver: String,
    /// `ok` or `failing`.
    pub result: &'static str,
    /// `ok` or `bad`.
    pub class: &'static str,
    /// When, after how many attempts, and the error.
    pub detail: String,
}

/// The alerts page.
pub fn page(alerts: &AlertsView) -> AlertsPage {
    let rows = alerts
        .alerts()
        .into_iter()
        .map(|a| AlertRow {
            name: a.labels.get("alertname").cloned().unwrap_or_default(),
            class: if a.state == AlertState::Firing { "bad" } else { "muted" },
            state: a.state.as_str().to_string(),
            labels: a
                .labels
                .iter()
                .filter(|(k, _)| *k != "alertname")
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            summary: a.annotations.get("summary").cloned().unwrap_or_default(),
            since: format_rfc3339_ms(a.starts_at_ms.unwrap_or(a.active_since_ms)),
        })
        .collect();
    let deliveries = alerts
        .deliveries()
        .into_iter()
        .map(|(receiver, d)| DeliveryRow {
            receiver,
            result: if d.ok { "ok" } else { "failing" },
            class: if d.ok { "ok" } else { "bad" },
            detail: format!(
                "{} after {} attempt(s){}",
                d.at,
                d.attempts,
                d.error.map(|e| format!(": {e}")).unwrap_or_default()
            ),
        })
        .collect();
    AlertsPage { rows, deliveries }
}

/// `GET /api/v1/alerts`.
#[derive(Debug, Clone, Serialize)]
pub struct Alerts {
    /// Every alert the engine holds.
    pub alerts: Vec<AlertRecord>,
    /// The last delivery per receiver.
    pub deliveries: BTreeMap<String, DeliveryStatus>,
}

/// One alert as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    /// Stable over its life (Alertmanager's grouping key).
    pub fingerprint: String,
    /// `pending`, `firing` or `resolved`.
    pub state: AlertState,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339: when its condition first held.
    pub active_since: String,
    /// RFC 3339: when it started firing.
    pub starts_at: Option<String>,
    /// RFC 3339: when it resolved.
    pub ends_at: Option<String>,
}

impl From<Alert> for AlertRecord {
    fn from(a: Alert) -> Self {
        let t = |ms: Option<i64>| ms.map(format_rfc3339_ms);
        AlertRecord {
            fingerprint: a.fingerprint,
            state: a.state,
            labels: a.labels,
            annotations: a.annotations,
            active_since: format_rfc3339_ms(a.active_since_ms),
            starts_at: t(a.starts_at_ms),
            ends_at: t(a.ends_at_ms),
        }
    }
}

/// Every alert and the last delivery per receiver.
pub fn alerts(view: &AlertsView) -> Alerts {
    Alerts { alerts: view.alerts().into_iter().map(AlertRecord::from).collect(), deliveries: view.deliveries() }
}
