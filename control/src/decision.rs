//! What the policy reads and what it publishes: each cell's numbers at a tick ([`Inputs`]), an
//! operator's [`Pin`], the [`Decision`]s it takes and the [`WeightTable`] gateways receive.

use serde::{Deserialize, Serialize};

/// What the policy knows about one cell at a tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellInput {
    /// Cell name.
    pub cell: String,
    /// Requests over the trailing `drain_for`.
    pub requests: u64,
    /// Errors over the trailing `drain_for`.
    pub errors: u64,
    /// Requests in the latest window.
    pub latest_requests: u64,
    /// Errors in the latest window.
    pub latest_errors: u64,
    /// Median latency over the trailing minute, when there were requests.
    pub p50_ms: Option<f64>,
}

/// A cell's state, as published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Taking traffic at its (latency-adjusted) weight.
    Active,
    /// Weight 0.
    Drained,
    /// Ramping back: 10 %, then 50 %.
    Restoring,
    /// Weight set by an operator until the pin expires.
    Pinned,
}

impl State {
    /// The name used in tables, the API and pages (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Drained => "drained",
            State::Restoring => "restoring",
            State::Pinned => "pinned",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change, as the `decisions` table records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// When (unix ms).
    pub decided_at_ms: i64,
    /// Table version this change is part of.
    pub version: u64,
    /// Cell.
    pub cell: String,
    /// Weight before.
    pub old_weight: u32,
    /// Weight after.
    pub new_weight: u32,
    /// State after.
    pub state: State,
    /// Why, for a person.
    pub reason: String,
    /// `policy` or the token name of whoever pinned.
    pub actor: String,
}

/// One row of the published table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellWeight {
    /// Cell.
    pub cell: String,
    /// Weight gateways use.
    pub weight: u32,
    /// State.
    pub state: State,
    /// Why it has this weight.
    pub reason: String,
    /// No requests for `stale_after`: keeps its weight, leaves the guard's total.
    pub stale: bool,
}

/// The table gateways receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightTable {
    /// Increases with every change.
    pub version: u64,
    /// When this version was decided (unix ms).
    pub decided_at_ms: i64,
    /// Cells, sorted by name.
    pub cells: Vec<CellWeight>,
}

/// What one step of the policy sees.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// Each cell's recent numbers, from the rollup store.
    pub cells: Vec<CellInput>,
}

/// An operator's pin: `cell` at `weight` until `until_ms`, or back to the policy with `None`.
#[derive(Debug, Clone, Copy)]
pub struct Pin<'a> {
    /// Cell.
    pub cell: &'a str,
    /// Weight to hold, or `None` to unpin.
    pub weight: Option<u32>,
    /// When the pin expires (unix ms).
    pub until_ms: i64,
    /// Why, as the operator said.
    pub reason: &'a str,
    /// Who (the token's name).
    pub actor: &'a str,
}

impl Inputs {
    /// Inputs of these cells.
    pub fn cells(cells: &[CellInput]) -> Self {
        Self { cells: cells.to_vec() }
    }
}
