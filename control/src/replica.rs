//! One control loop for many nodes: the seam between the [`crate::Controller`] and whatever
//! records published versions where every node reads them (the cluster's decision log in the
//! object store). The node holding the lease decides; a version is published only once it is
//! recorded, and recording a version another node already recorded fails, so no two nodes ever
//! publish different tables under one version. Every other node follows the recorded entries.

use crate::policy::{Decision, WeightTable};
use serde::{Deserialize, Serialize};

/// One published version: the decisions that made it (possibly none: a cell joining the table)
/// and the table itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Decisions of this version.
    pub decisions: Vec<Decision>,
    /// The table gateways receive.
    pub table: WeightTable,
}

/// How recording a version went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// This node's entry is the version's.
    Done,
    /// Another node recorded this version first: this node does not lead (any more).
    Taken,
}

/// Where versions are recorded, and whether this node decides.
pub trait Replication: Send + Sync + std::fmt::Debug {
    /// Whether this node decides weights now (it holds a lease that has not run out).
    fn leads(&self) -> bool;
    /// Records `entry` as version `entry.table.version` unless a node recorded it already.
    /// Blocking; `Err` names what failed (the version is then not published).
    fn record(&self, entry: &Entry) -> Result<Recorded, String>;
    /// Where the deciding node serves its API, for a follower's refusal (`None` when unknown).
    fn leader(&self) -> Option<String>;
}
