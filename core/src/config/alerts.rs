//! `[alerts]` and `[[slo]]`: alert delivery and service-level objectives.

use super::Dur;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Alertmanager base URL; empty disables delivery to it.
    pub alertmanager_url: String,
    /// How often firing alerts are re-sent.
    pub resend_interval: Dur,
    /// `CellErrorRateHigh` threshold; unset means the policy's `drain_error_rate`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell_error_rate: Option<f64>,
    /// Trailing window of `CellErrorRateHigh`.
    pub cell_error_rate_for: Dur,
    /// `CutoverSlow` threshold when an SLO sets no `cutover_ms`.
    pub cutover_slow: Dur,
    /// Direct webhook receivers.
    pub webhooks: Vec<WebhookConfig>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            alertmanager_url: String::new(),
            resend_interval: Dur::mins(1),
            cell_error_rate: None,
            cell_error_rate_for: Dur::secs(30),
            cutover_slow: Dur::secs(5),
            webhooks: Vec::new(),
        }
    }
}

/// `[[alerts.webhooks]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Receiver name, used as the payload's `receiver`.
    pub name: String,
    /// Where the payload is POSTed.
    pub url: String,
}

/// `[[slo]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SloConfig {
    /// Unique name, used in URLs and labels.
    pub name: String,
    /// Availability objective, e.g. 0.99995.
    pub availability: f64,
    /// Latency threshold: slower non-error requests are bad for the latency objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p999_ms: Option<f64>,
    /// Cut-over target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutover_ms: Option<u64>,
    /// Compliance period.
    #[serde(default = "default_period")]
    pub period: Dur,
    /// Which requests the SLO covers.
    #[serde(default)]
    pub selector: Selector,
}

fn default_period() -> Dur {
    Dur::days(30)
}

/// An SLO's selector; absent keys match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Selector {
    /// Cell to match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// Service to match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Route to match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}
