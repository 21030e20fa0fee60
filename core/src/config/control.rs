//! `[control]`, `[xds]` and `[cluster]`: the cell-weight policy, the gateways' protocols and the nodes.

use super::Dur;
use crate::secret::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `[control]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ControlConfig {
    /// CellWeights gRPC listen address.
    pub listen: String,
    /// Whether decisions are published or only recorded.
    pub mode: ControlMode,
    /// Put every observed cell (but `unknown` and `__overflow__`) under control.
    pub auto_discover: bool,
    /// A discovered cell enters the table once it has served this many requests over at least
    /// two windows (0: at first sight), so a stray or forged `cell.id` never reaches gateways.
    pub discover_min_requests: u64,
    /// A cell with no requests for this long is stale.
    pub stale_after: Dur,
    /// A drained cell with no new request for this long has completed its cut-over.
    pub quiet_period: Dur,
    /// Delay after each window boundary before the policy evaluates.
    pub evaluation_delay: Dur,
    /// Drain/restore thresholds.
    pub policy: PolicyConfig,
    /// Per-cell settings.
    pub cells: BTreeMap<String, CellConfig>,
    /// Largest weight a cell may have, base or pinned: Envoy sums locality weights in 32 bits,
    /// so sums stay far below 2^32.
    pub max_weight: u32,
    /// Gateways (CellWeights and xDS nodes) remembered; one more evicts the one disconnected
    /// longest, or is refused when every one is connected.
    pub max_gateways: usize,
}

/// Highest `[control] max_weight`: 10,000 cells at it still sum below 2^32.
pub const MAX_WEIGHT_LIMIT: u32 = 400_000;

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            mode: ControlMode::Enforce,
            auto_discover: true,
            discover_min_requests: 100,
            stale_after: Dur::mins(5),
            quiet_period: Dur::secs(5),
            evaluation_delay: Dur::secs(1),
            policy: PolicyConfig::default(),
            cells: BTreeMap::new(),
            max_weight: 10_000,
            max_gateways: 1_000,
        }
    }
}

/// `[xds]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct XdsConfig {
    /// ADS listen address (TLS and auth as `[control] listen`, role `gateway`); empty disables it.
    pub listen: String,
    /// Resources served (`[[xds.clusters]]`): for each, a Listener and RouteConfiguration
    /// (proxyless gRPC, `xds:///NAME`), an EDS Cluster and its ClusterLoadAssignment.
    pub clusters: Vec<XdsCluster>,
    /// Live gateway streams in all, xDS ADS and CellWeights Watch alike; one more is refused
    /// with RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Live streams of one gateway id or xDS node id (one per Envoy; a proxyless gRPC fleet
    /// sharing a node id needs more).
    pub max_streams_per_node: usize,
    /// Live streams opened with one token (or client certificate), so no single token can take
    /// every stream; an open server (no `[auth]`) counts none.
    pub max_streams_per_token: usize,
    /// Resource names one xDS stream may hold subscribed, over every type (at most 1 KiB each).
    pub max_names_per_stream: usize,
    /// Resource names every xDS stream together may hold subscribed.
    pub max_names: usize,
}

impl Default for XdsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:18000".into(),
            clusters: Vec::new(),
            max_streams: 1_000,
            max_streams_per_node: 16,
            max_streams_per_token: 500,
            max_names_per_stream: 4_096,
            max_names: 65_536,
        }
    }
}

/// `[cluster]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the cluster: its files live under `nodes/<node_id>/`. Empty
    /// for the machine's host name. 1 to 64 of `A-Z a-z 0-9 . _ -`.
    pub node_id: String,
    /// What this node does: `all` (everything, the single-node default), `ingest` (OTLP, WAL,
    /// Parquet) or `query` (pages, API, SQL, CellWeights, xDS, alerts over every node's data).
    pub role: NodeRole,
    /// Internal listen address (Arrow Flight: open windows for query nodes).
    pub listen: String,
    /// Address other nodes reach this one at, written to its heartbeat; empty for `listen`.
    pub advertise: String,
    /// How long the control-loop leader's lease lasts without renewal; a node whose heartbeat
    /// is older than this is gone.
    pub lease_ttl: Dur,
    /// Secret this node presents to other nodes' internal listener (one of their `[auth]`
    /// tokens with role `read`); empty when `[auth]` has no tokens.
    pub token: Secret,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            role: NodeRole::All,
            listen: "127.0.0.1:50052".into(),
            advertise: String::new(),
            lease_ttl: Dur::secs(10),
            token: Secret::default(),
        }
    }
}

/// `[cluster] role`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Ingest and query in one process.
    All,
    /// OTLP receivers, WAL and Parquet writer.
    Ingest,
    /// Pages, API, SQL, control loop (when leader) and alerts.
    Query,
}

impl NodeRole {
    /// Whether this node receives OTLP.
    pub fn ingests(self) -> bool {
        matches!(self, NodeRole::All | NodeRole::Ingest)
    }

    /// Whether this node serves reads, the control loop and alerts.
    pub fn queries(self) -> bool {
        matches!(self, NodeRole::All | NodeRole::Query)
    }
}

impl ClusterConfig {
    /// `node_id`, or the host name when empty.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .unwrap_or_default();
        let host: String = host.trim().chars().filter(|c| valid_node_char(*c)).take(MAX_NODE_ID).collect();
        if host.is_empty() { "node".into() } else { host }
    }

    /// `advertise`, or `listen` when empty.
    pub fn advertise(&self) -> &str {
        if self.advertise.is_empty() { &self.listen } else { &self.advertise }
    }
}

/// Longest `[cluster] node_id`.
pub const MAX_NODE_ID: usize = 64;

pub(super) fn valid_node_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `[[xds.clusters]]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct XdsCluster {
    /// What clients ask for: `xds:///NAME`, or an Envoy cluster NAME.
    pub name: String,
    /// Each cell's entry endpoints, `ip:port` (one locality per cell, weighted by the cell's
    /// current weight).
    pub cells: BTreeMap<String, Vec<String>>,
}

/// Longest `[[xds.clusters]] name`.
pub const MAX_XDS_NAME: usize = 256;

/// `[control] mode`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ControlMode {
    /// Publish decisions to gateways.
    Enforce,
    /// Record decisions but publish base weights.
    DryRun,
}

/// `[control.policy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Weight of a healthy cell with no latency bias.
    pub base_weight: u32,
    /// Error rate above which a cell is drained.
    pub drain_error_rate: f64,
    /// Trailing window the drain rule averages over.
    pub drain_for: Dur,
    /// Requests needed in that window before the rule may fire.
    pub min_requests: u64,
    /// Largest fraction of base weight that may be drained at once.
    pub max_drained_fraction: f64,
    /// New drains allowed per minute.
    pub max_drains_per_minute: u32,
    /// Time a drained cell waits before it ramps back.
    pub restore_after: Dur,
    /// Time per ramp step (10 % -> 50 % -> 100 %).
    pub ramp_step: Dur,
    /// Latency bias strength α.
    pub latency_alpha: f64,
    /// Latency bias decay β (per ms of p50).
    pub latency_beta: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            base_weight: 100,
            drain_error_rate: 0.005,
            drain_for: Dur::secs(30),
            min_requests: 100,
            max_drained_fraction: 0.5,
            max_drains_per_minute: 2,
            restore_after: Dur::secs(60),
            ramp_step: Dur::secs(30),
            latency_alpha: 0.5,
            latency_beta: 0.02,
        }
    }
}

/// `[control.cells."name"]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct CellConfig {
    /// Base weight of this cell instead of the policy's.
    pub base_weight: Option<u32>,
}
