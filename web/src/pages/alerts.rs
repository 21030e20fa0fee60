//! `/alerts`: alerts and the last delivery per receiver.

use super::*;

/// An alert row.
struct AlertRow {
    name: String,
    state: String,
    class: &'static str,
    labels: String,
    summary: String,
    since: String,
}

/// A delivery row.
struct DeliveryRow {
    receiver: String,
    result: &'static str,
    class: &'static str,
    detail: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    title: String,
    now: String,
    refresh: bool,
    rows: Vec<AlertRow>,
    deliveries: Vec<DeliveryRow>,
}

/// `/alerts`: pending, firing and recently resolved alerts and the last delivery per receiver.
pub async fn alerts(State(state): State<AppState>) -> Result<Response, ApiError> {
    let rows = state
        .alerts
        .alerts()
        .into_iter()
        .map(|a| {
            let st = a.state.as_str().to_string();
            AlertRow {
                name: a.labels.get("alertname").cloned().unwrap_or_default(),
                class: if st == "firing" { "bad" } else { "muted" },
                state: st,
                labels: a
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "alertname")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                summary: a.annotations.get("summary").cloned().unwrap_or_default(),
                since: format_rfc3339_ms(a.starts_at_ms.unwrap_or(a.active_since_ms)),
            }
        })
        .collect();
    let deliveries = state
        .alerts
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
    Ok(Page(AlertsPage {
        title: "alerts".into(),
        now: format_rfc3339_ms(state.clock.now_ms()),
        refresh: true,
        rows,
        deliveries,
    })
    .into_response())
}
