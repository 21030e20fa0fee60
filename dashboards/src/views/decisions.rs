//! The control loop's views: decisions and cut-overs (the decisions page and their JSON), the
//! published table and the gateways following it (JSON).

use cellpilot_control::{Controller, Decision, Protocol, Source, State};
use cellpilot_core::config::ControlMode;
use cellpilot_core::link;
use cellpilot_core::time::format_rfc3339_ms;
use serde::Serialize;

/// The decisions page shows the newest this many decisions.
const PAGE_DECISIONS: usize = 500;

/// What the decisions page shows.
#[derive(Debug, Clone)]
pub struct DecisionsPage {
    /// The newest decisions, newest first.
    pub rows: Vec<DecisionRow>,
    /// Every cut-over, the newest decided first.
    pub cutovers: Vec<CutoverRow>,
}

/// A decision row of the page.
#[derive(Debug, Clone)]
pub struct DecisionRow {
    /// When it was decided.
    pub when: String,
    /// The table version it published.
    pub version: u64,
    /// The cell.
    pub cell: String,
    /// The cell's page.
    pub href: String,
    /// `old → new`.
    pub weights: String,
    /// The cell's state after it.
    pub state: String,
    /// Why, in words.
    pub reason: String,
    /// Who: the policy or an operator.
    pub actor: String,
}

/// A cut-over row of the page.
#[derive(Debug, Clone)]
pub struct CutoverRow {
    /// The drained cell.
    pub cell: String,
    /// When the drain was decided.
    pub decided: String,
    /// When a gateway applied it (`–` until then).
    pub applied: String,
    /// When the cell's traffic stopped (`–` until then).
    pub completed: String,
    /// How long it took, or `in progress`.
    pub duration: String,
    /// How the completion was known.
    pub source: String,
}

/// The decisions page.
pub fn page(controller: &Controller) -> DecisionsPage {
    let t = |ms: Option<i64>| ms.map(format_rfc3339_ms).unwrap_or_else(|| "–".into());
    let rows = controller
        .decisions()
        .into_iter()
        .rev()
        .take(PAGE_DECISIONS)
        .map(|d| DecisionRow {
            when: format_rfc3339_ms(d.decided_at_ms),
            version: d.version,
            weights: format!("{} → {}", d.old_weight, d.new_weight),
            href: link::cell_page(&d.cell),
            state: d.state.as_str().to_string(),
            cell: d.cell,
            reason: d.reason,
            actor: d.actor,
        })
        .collect();
    let cutovers = newest_cutovers(controller)
        .into_iter()
        .map(|c| CutoverRow {
            decided: format_rfc3339_ms(c.decided_at_ms),
            applied: t(c.applied_at_ms),
            completed: t(c.completed_at_ms),
            duration: c.duration_ms.map_or("in progress".into(), |d| format!("{d} ms")),
            source: c.source.as_str().to_string(),
            cell: c.cell,
        })
        .collect();
    DecisionsPage { rows, cutovers }
}

fn newest_cutovers(controller: &Controller) -> Vec<cellpilot_control::Cutover> {
    let mut cs = controller.cutovers();
    cs.sort_by_key(|c| std::cmp::Reverse(c.decided_at_ms));
    cs
}

/// `GET /api/v1/weights`: the published table.
#[derive(Debug, Clone, Serialize)]
pub struct Weights {
    /// The table's version.
    pub version: u64,
    /// RFC 3339.
    pub decided_at: String,
    /// `enforce` or `dry-run`, as configured.
    pub mode: ControlMode,
    /// In a cluster, whether this node decides (holds the control-loop lease); alone, always.
    pub leads: bool,
    /// Every cell's state and weight.
    pub cells: Vec<cellpilot_control::CellWeight>,
}

/// The published table.
pub fn weights(controller: &Controller) -> Weights {
    let t = controller.table();
    Weights {
        version: t.version,
        decided_at: format_rfc3339_ms(t.decided_at_ms),
        mode: controller.mode(),
        leads: controller.leads(),
        cells: t.cells,
    }
}

/// `GET /api/v1/decisions`.
#[derive(Debug, Clone, Serialize)]
pub struct Decisions {
    /// Every decision, newest first.
    pub decisions: Vec<DecisionRecord>,
}

/// One decision as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRecord {
    /// RFC 3339.
    pub decided_at: String,
    /// The table version it published.
    pub version: u64,
    /// The cell.
    pub cell: String,
    /// Its weight before.
    pub old_weight: u32,
    /// Its weight after.
    pub new_weight: u32,
    /// Its state after.
    pub state: State,
    /// Why, in words.
    pub reason: String,
    /// Who: the policy or an operator.
    pub actor: String,
}

impl From<Decision> for DecisionRecord {
    fn from(d: Decision) -> Self {
        DecisionRecord {
            decided_at: format_rfc3339_ms(d.decided_at_ms),
            version: d.version,
            cell: d.cell,
            old_weight: d.old_weight,
            new_weight: d.new_weight,
            state: d.state,
            reason: d.reason,
            actor: d.actor,
        }
    }
}

/// Every decision, newest first.
pub fn decisions(controller: &Controller) -> Decisions {
    Decisions { decisions: controller.decisions().into_iter().rev().map(DecisionRecord::from).collect() }
}

/// `GET /api/v1/cutovers`.
#[derive(Debug, Clone, Serialize)]
pub struct Cutovers {
    /// Every cut-over, the newest decided first.
    pub cutovers: Vec<CutoverRecord>,
}

/// One cut-over as the API answers it (in-flight ones have no completion).
#[derive(Debug, Clone, Serialize)]
pub struct CutoverRecord {
    /// The drained cell.
    pub cell: String,
    /// The table version of the drain.
    pub decision_version: Option<u64>,
    /// RFC 3339.
    pub decided_at: String,
    /// When a gateway applied it.
    pub applied_at: Option<String>,
    /// When the cell's traffic stopped.
    pub completed_at: Option<String>,
    /// How long it took.
    pub duration_ms: Option<i64>,
    /// How the completion was known.
    pub source: Source,
}

/// Every cut-over, the newest decided first.
pub fn cutovers(controller: &Controller) -> Cutovers {
    let t = |ms: Option<i64>| ms.map(format_rfc3339_ms);
    let cutovers = newest_cutovers(controller)
        .into_iter()
        .map(|c| CutoverRecord {
            cell: c.cell,
            decision_version: c.decision_version,
            decided_at: format_rfc3339_ms(c.decided_at_ms),
            applied_at: t(c.applied_at_ms),
            completed_at: t(c.completed_at_ms),
            duration_ms: c.duration_ms,
            source: c.source,
        })
        .collect();
    Cutovers { cutovers }
}

/// `GET /api/v1/gateways`.
#[derive(Debug, Clone, Serialize)]
pub struct Gateways {
    /// Every gateway of either protocol.
    pub gateways: Vec<GatewayRecord>,
}

/// One gateway as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayRecord {
    /// CellWeights or xDS.
    pub protocol: Protocol,
    /// Its id (CellWeights gateway id or xDS node id).
    pub id: String,
    /// Live streams.
    pub streams: usize,
    /// Whether one of its streams holds cut-overs until it acknowledges.
    pub watching: bool,
    /// RFC 3339.
    pub last_seen: String,
    /// Its last acknowledgement.
    pub last_ack: Option<AckRecord>,
    /// Its last refusal.
    pub last_nack: Option<NackRecord>,
    /// Refusals so far.
    pub nacks: u64,
}

/// A gateway's acknowledgement.
#[derive(Debug, Clone, Serialize)]
pub struct AckRecord {
    /// The table version.
    pub version: u64,
    /// RFC 3339.
    pub at: String,
}

/// A gateway's refusal.
#[derive(Debug, Clone, Serialize)]
pub struct NackRecord {
    /// The table version.
    pub version: u64,
    /// What the gateway said.
    pub error: String,
    /// RFC 3339.
    pub at: String,
}

/// Every gateway with its streams, last ACK and last NACK.
pub fn gateways(controller: &Controller) -> Gateways {
    let gateways = controller
        .gateways()
        .into_iter()
        .map(|g| GatewayRecord {
            watching: g.watching(),
            protocol: g.protocol,
            id: g.id,
            streams: g.streams,
            last_seen: format_rfc3339_ms(g.last_seen_ms),
            last_ack: g.last_ack.map(|a| AckRecord { version: a.version, at: format_rfc3339_ms(a.at_ms) }),
            last_nack: g.last_nack.map(|n| NackRecord {
                version: n.version,
                error: n.error,
                at: format_rfc3339_ms(n.at_ms),
            }),
            nacks: g.nacks,
        })
        .collect();
    Gateways { gateways }
}
