//! `[web]`, `[query]` and `[dashboards]`: the pages and API, SQL limits and SLA attribution.

use super::{Dur, Size};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[web]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct WebConfig {
    /// Dashboard and API listen address.
    pub listen: String,
    /// Base URL used in alert links; empty means `http://<listen>`.
    pub external_url: String,
}

impl Default for WebConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), external_url: String::new() }
    }
}

/// `[query]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Memory pool of one query.
    pub memory_limit: Size,
    /// Time limit of one query.
    pub timeout: Dur,
    /// Rows returned at most.
    pub max_rows: usize,
    /// Queries running at once; more are answered 429.
    pub max_concurrent: usize,
    /// Bytes queries may spill to `<storage.dir>/tmp/sql-spill` when their memory pool is full;
    /// past it the query fails naming the limit.
    pub max_spill: Size,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            memory_limit: Size::gib(1),
            timeout: Dur::secs(30),
            max_rows: 100_000,
            max_concurrent: 4,
            max_spill: Size::gib(1),
        }
    }
}

/// `[dashboards]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DashboardsConfig {
    /// Burn rate above which a 1-minute bucket belongs to an incident.
    pub incident_burn_rate: f64,
    /// Incidents closer than this merge.
    pub incident_gap: Dur,
}

impl Default for DashboardsConfig {
    fn default() -> Self {
        Self { incident_burn_rate: 10.0, incident_gap: Dur::mins(2) }
    }
}
