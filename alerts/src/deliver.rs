//! Delivery: Alertmanager's `POST /api/v2/alerts` (firing alerts re-sent every
//! `resend_interval`, `endsAt` on resolve) and direct webhooks with Alertmanager's webhook payload
//! (version 4, grouped by `alertname` and `cell`), retried with exponential backoff. The outcome of
//! every attempt is kept per receiver and counted in `/metrics`.

use crate::engine::{Alert, AlertState};
use cellpilot_core::time::format_rfc3339_ms;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The last delivery to a receiver.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DeliveryStatus {
    /// Whether the last attempt succeeded.
    pub ok: bool,
    /// When it was made (RFC 3339).
    pub at: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Attempts it took (retries included).
    pub attempts: u32,
}

/// One alert in Alertmanager's API v2 shape.
pub(crate) fn am_alert(a: &Alert, external_url: &str) -> serde_json::Value {
    let mut v = serde_json::json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "generatorURL": format!("{}{}", external_url.trim_end_matches('/'), a.page),
    });
    if let Some(s) = a.starts_at_ms {
        v["startsAt"] = format_rfc3339_ms(s).into();
    }
    if let Some(e) = a.ends_at_ms {
        v["endsAt"] = format_rfc3339_ms(e).into();
    }
    v
}

/// Alertmanager's webhook payload (version 4) for one group of alerts.
pub(crate) fn webhook_payload(
    receiver: &str,
    group: &BTreeMap<String, String>,
    alerts: &[Alert],
    external_url: &str,
) -> serde_json::Value {
    let firing = alerts.iter().any(|a| a.state == AlertState::Firing);
    let common = |pick: fn(&Alert) -> &BTreeMap<String, String>| -> BTreeMap<String, String> {
        let mut it = alerts.iter().map(pick);
        let Some(first) = it.next() else { return BTreeMap::new() };
        let mut out = first.clone();
        for m in it {
            out.retain(|k, v| m.get(k) == Some(v));
        }
        out
    };
    let group_key =
        format!("{{}}:{{{}}}", group.iter().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join(", "));
    serde_json::json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": if firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": common(|a| &a.labels),
        "commonAnnotations": common(|a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts.iter().map(|a| serde_json::json!({
            "status": if a.state == AlertState::Firing { "firing" } else { "resolved" },
            "labels": a.labels,
            "annotations": a.annotations,
            "startsAt": a.starts_at_ms.map(format_rfc3339_ms).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "endsAt": a.ends_at_ms.map(format_rfc3339_ms).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            "generatorURL": format!("{}{}", external_url.trim_end_matches('/'), a.page),
            "fingerprint": a.fingerprint,
        })).collect::<Vec<_>>(),
    })
}

/// Groups alerts by `alertname` and `cell` (the direct webhooks' grouping).
pub(crate) fn groups(alerts: &[Alert]) -> BTreeMap<BTreeMap<String, String>, Vec<Alert>> {
    let mut out: BTreeMap<BTreeMap<String, String>, Vec<Alert>> = BTreeMap::new();
    for a in alerts {
        let key: BTreeMap<String, String> =
            ["alertname", "cell"].iter().filter_map(|k| a.labels.get(*k).map(|v| (k.to_string(), v.clone()))).collect();
        out.entry(key).or_default().push(a.clone());
    }
    out
}

/// POSTs `body` to `url`, retrying with exponential backoff (0.5 s, 1 s, 2 s) on failure.
pub(crate) async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    now: impl Fn() -> i64,
) -> DeliveryStatus {
    let mut backoff = Duration::from_millis(500);
    let mut last_error = None;
    for attempt in 1..=4u32 {
        let result = client.post(url).json(body).timeout(Duration::from_secs(5)).send().await;
        match result {
            Ok(r) if r.status().is_success() => {
                return DeliveryStatus { ok: true, at: format_rfc3339_ms(now()), error: None, attempts: attempt };
            }
            Ok(r) => last_error = Some(format!("HTTP {}", r.status())),
            Err(e) => last_error = Some(e.to_string()),
        }
        if attempt < 4 {
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
    DeliveryStatus { ok: false, at: format_rfc3339_ms(now()), error: last_error, attempts: 4 }
}
