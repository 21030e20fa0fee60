//! What a report and a summary say: serialized as the JSON of `GET /api/v1/sla/{slo}`.

use serde::Serialize;

/// A drain to attribute: what the `cutovers` table says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Drain {
    /// Drained cell.
    pub cell: String,
    /// The drain's table version.
    pub version: Option<u64>,
    /// When it was decided (t0), unix ms.
    pub decided_at_ms: i64,
    /// When the cell served its last request, unix ms.
    pub completed_at_ms: Option<i64>,
    /// completed − decided.
    pub duration_ms: Option<i64>,
}

/// One entry of an attribution list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    /// The cell, service, route or cause.
    pub key: String,
    /// Bad events it accounts for.
    pub bad_events: u64,
    /// Fraction of the objective's bad events.
    pub share: f64,
}

/// An incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incident {
    /// `cell HH:MM–HH:MM`.
    pub key: String,
    /// The cell with the most bad events in it.
    pub cell: String,
    /// Start (RFC 3339).
    pub from: String,
    /// End (RFC 3339).
    pub to: String,
    /// Bad events in it.
    pub bad_events: u64,
    /// Fraction of the objective's bad events.
    pub share: f64,
}

/// A cut-over's cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoverShare {
    /// `cell vN`.
    pub key: String,
    /// Drained cell.
    pub cell: String,
    /// The drain's version.
    pub decision_version: Option<u64>,
    /// Bad events from failure onset to completion.
    pub bad_events: u64,
    /// Fraction of the objective's bad events.
    pub share: f64,
    /// Bad events after `decided_at + cutover_ms`: what a cut-over on target would have avoided.
    pub avoidable_at_target: u64,
}

/// Attribution of one objective.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attribution {
    /// By cell.
    pub cell: Vec<Share>,
    /// By service.
    pub service: Vec<Share>,
    /// By route.
    pub route: Vec<Share>,
    /// By cause (availability only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Vec<Share>>,
    /// By incident.
    pub incident: Vec<Incident>,
    /// By cut-over.
    pub cutover: Vec<CutoverShare>,
}

/// How an objective stands over a range: what the SLO cards show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    /// Latency threshold (latency objective only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_ms: Option<f64>,
    /// Target.
    pub target: f64,
    /// Bad events.
    pub bad_events: u64,
    /// 1 − bad/requests.
    pub observed: f64,
    /// target − observed (negative when met).
    pub gap: f64,
    /// (1 − target) × requests.
    pub budget: f64,
    /// Fraction of the budget spent.
    pub budget_spent: f64,
    /// Fraction of the budget left.
    pub budget_left: f64,
    /// Burn rate over the last hour of the range.
    pub burn_rate_1h: f64,
    /// Burn rate over the last 6 hours of the range.
    pub burn_rate_6h: f64,
}

/// One objective's numbers and where its bad events came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Objective {
    /// How it stands.
    #[serde(flatten)]
    pub standing: Standing,
    /// Where the bad events came from.
    pub attribution: Attribution,
}

/// Cut-over timing against the SLO's target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CutoverSummary {
    /// `cutover_ms`.
    pub target_ms: Option<u64>,
    /// Finished cut-overs in the range.
    pub count: usize,
    /// Median duration.
    pub p50_ms: Option<i64>,
    /// Longest.
    pub max_ms: Option<i64>,
    /// Over the target.
    pub over_target: usize,
}

/// `GET /api/v1/sla/{slo}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// SLO name.
    pub slo: String,
    /// Range start (RFC 3339).
    pub from: String,
    /// Range end (RFC 3339).
    pub to: String,
    /// Requests in the range.
    pub requests: u64,
    /// Availability objective.
    pub availability: Objective,
    /// Latency objective, when the SLO has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Objective>,
    /// Cut-over timing.
    pub cutover: CutoverSummary,
}

/// The SLO cards' view of a range: requests and how each objective stands.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Requests in the range.
    pub requests: u64,
    /// Availability objective.
    pub availability: Standing,
    /// Latency objective, when asked for and the SLO has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Standing>,
}
