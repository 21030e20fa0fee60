//! The configuration: serde structs mirroring the spec's TOML, with defaults that need no file.
//!
//! Loading order: defaults, then the file, then `CELLPILOT_<SECTION>__<KEY>` environment
//! overrides (see [`mod@env`]), then [`Config::validate`]. Unknown keys are errors naming the key.

pub mod env;
pub mod reference;
pub mod units;

use crate::secret::Secret;
use crate::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use units::{Dur, Size};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// OTLP receivers and the window aggregation.
    pub ingest: IngestConfig,
    /// WAL and Parquet tiers.
    pub storage: StorageConfig,
    /// Dashboard and JSON API listener.
    pub web: WebConfig,
    /// SQL limits.
    pub query: QueryConfig,
    /// Bearer/Basic tokens.
    pub auth: AuthConfig,
    /// Optional TLS for every listener.
    pub tls: TlsConfig,
    /// Connection, stream and keepalive limits of every listener.
    pub transport: TransportConfig,
    /// Cell-weight control loop.
    pub control: ControlConfig,
    /// The xDS (ADS) management server: the table as endpoint weights for Envoy and gRPC.
    pub xds: XdsConfig,
    /// Alert rules and delivery.
    pub alerts: AlertsConfig,
    /// Service-level objectives (`[[slo]]`).
    pub slo: Vec<SloConfig>,
    /// SLA gap attribution settings.
    pub dashboards: DashboardsConfig,
    /// This node's identity and role when several share one object store.
    pub cluster: ClusterConfig,
}

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// OTLP/gRPC listen address.
    pub grpc_listen: String,
    /// OTLP/HTTP listen address.
    pub http_listen: String,
    /// Largest request accepted, after decompression, on both transports.
    pub max_request_size: Size,
    /// Attribute keys naming the cell, tried in order (point/span first, then resource).
    pub cell_attributes: Vec<String>,
    /// Span kinds that count as requests.
    pub request_span_kinds: Vec<String>,
    /// Histogram metric names that carry request latency.
    pub latency_metrics: Vec<String>,
    /// Width of the finest window.
    pub window: Dur,
    /// How long after its end a window still accepts data.
    pub allowed_lateness: Dur,
    /// Cap on live cell × service × route series.
    pub max_series: usize,
    /// Cap on cells tracked at once (live series or a request in the last 10 minutes); new cells
    /// beyond it fold into cell `__overflow__`.
    pub max_cells: usize,
    /// Cap on spans, data points or log records in one export request (checked before decoding).
    pub max_items_per_request: usize,
    /// Cell, service, route and cause names longer than this many bytes are cut (at a character
    /// boundary): one client must not make every series key kilobytes long.
    pub max_attribute_length: usize,
    /// Export requests (both transports) being read, decoded or applied at once; one more is
    /// answered 429 / UNAVAILABLE with a retry hint before its body is read.
    pub max_concurrent_requests: usize,
    /// Longest an export may wait for the sequencer; past it, it is answered with the retry
    /// hint instead of being counted late (keep it well under `allowed_lateness`).
    pub max_queue_wait: Dur,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            grpc_listen: "127.0.0.1:4317".into(),
            http_listen: "127.0.0.1:4318".into(),
            max_request_size: Size::mib(64),
            cell_attributes: vec!["cell.id".into(), "cell".into()],
            request_span_kinds: vec!["server".into(), "consumer".into()],
            latency_metrics: vec![
                "http.server.request.duration".into(),
                "http.server.duration".into(),
                "rpc.server.duration".into(),
            ],
            window: Dur::secs(10),
            allowed_lateness: Dur::secs(30),
            max_series: 100_000,
            max_cells: 1_000,
            max_items_per_request: 100_000,
            max_attribute_length: 256,
            max_concurrent_requests: 64,
            max_queue_wait: Dur::secs(2),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory (WAL and Parquet).
    pub dir: PathBuf,
    /// WAL fsync policy.
    pub fsync: FsyncPolicy,
    /// Cap on WAL size; beyond it exports get the retryable overload answer (429 /
    /// UNAVAILABLE with a retry hint) until a checkpoint frees room.
    pub wal_max_size: Size,
    /// How often the aggregator's state and the closed windows not yet in Parquet are
    /// checkpointed; the WAL keeps the records of the last two intervals (so it holds seconds
    /// of ingest, a few bytes per span), and a restart replays at most that much.
    pub checkpoint_interval: Dur,
    /// Retention of the finest tier.
    pub retention_10s: Dur,
    /// Retention of the 5-minute tier.
    pub retention_5m: Dur,
    /// Retention of the 1-hour tier.
    pub retention_1h: Dur,
    /// Where closed windows' Parquet files go: empty for `dir` (this node alone), or
    /// `s3://bucket/prefix` for an S3-compatible object store every node of a cluster shares
    /// (each node writes under `nodes/<node_id>/`, every reader lists all of them). The WAL and
    /// the control logs stay in `dir`.
    pub url: String,
    /// S3 endpoint for stores other than AWS, e.g. `http://127.0.0.1:9000`; empty for AWS or
    /// `AWS_ENDPOINT`. A plain `http://` endpoint is allowed.
    pub endpoint: String,
    /// S3 region; empty for `AWS_REGION` (or `us-east-1`).
    pub region: String,
    /// S3 access key id; empty for `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// S3 secret access key; empty for `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./cellpilot-data"),
            fsync: FsyncPolicy::Batch,
            wal_max_size: Size::gib(4),
            checkpoint_interval: Dur::secs(10),
            retention_10s: Dur::hours(48),
            retention_5m: Dur::days(30),
            retention_1h: Dur::days(400),
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
        }
    }
}

/// When the WAL fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every append.
    Always,
    /// Once per group commit.
    Batch,
    /// Never (the OS decides).
    Never,
}

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

/// `[auth]`: `name=secret` tokens by role. A secret listed under several roles has them all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Ingest and read (the role pair of the first version).
    pub tokens: Vec<Secret>,
    /// OTLP export only.
    pub ingest_tokens: Vec<Secret>,
    /// Pages, API, SQL and `/metrics`.
    pub read_tokens: Vec<Secret>,
    /// CellWeights Get/Watch/Ack (an Ack only for the gateway_id of the caller's own Watch),
    /// xDS, and reporting cut-overs as `cell.cutover` log events. A token's name binds it:
    /// `gw-eu-1=secret` may watch only as gateway id (or xDS node id) `gw-eu-1`, `gw-eu-*=secret`
    /// as any id the pattern matches (`*`: any run of characters).
    pub gateway_tokens: Vec<Secret>,
    /// Everything, weight overrides included.
    pub admin_tokens: Vec<Secret>,
    /// Roles of clients that present a verified certificate (`[tls] client_ca`) and no token:
    /// `"CN=gw-eu-1" = "gateway"`, or a SAN URI, `"URI=spiffe://prod/gw-eu-1" = "gateway"`;
    /// `*` in a key matches any run of characters (`"CN=gw-eu-*"`). Roles as the token lists
    /// name them, comma-separated (`"read,gateway"`). The caller's name is the certificate's
    /// CN or URI, so a gateway certificate is bound to the gateway id it names.
    pub cert_roles: BTreeMap<String, String>,
}

/// One parsed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Who holds it; recorded as the actor of what they do.
    pub name: String,
    /// The secret itself; never logged.
    pub secret: Secret,
    /// What it may do.
    pub roles: crate::auth::Roles,
}

impl AuthConfig {
    /// Every token, parsed, one per secret with the union of its roles.
    pub fn parsed(&self) -> Result<Vec<Token>> {
        use crate::auth::{Role, Roles};
        let lists: [(&str, &Vec<Secret>, Roles); 5] = [
            ("auth.tokens", &self.tokens, Roles::of(&[Role::Ingest, Role::Read])),
            ("auth.ingest_tokens", &self.ingest_tokens, Roles::of(&[Role::Ingest])),
            ("auth.read_tokens", &self.read_tokens, Roles::of(&[Role::Read])),
            ("auth.gateway_tokens", &self.gateway_tokens, Roles::of(&[Role::Gateway])),
            ("auth.admin_tokens", &self.admin_tokens, Roles::ALL),
        ];
        let mut out: Vec<Token> = Vec::new();
        for (key, list, roles) in lists {
            for (i, t) in list.iter().enumerate() {
                let Some((name, secret)) = t.expose().split_once('=') else {
                    return Err(Error::Config(format!("{key}[{i}]: expected `name=secret`")));
                };
                if name.is_empty() || secret.is_empty() {
                    return Err(Error::Config(format!("{key}[{i}]: name and secret must not be empty")));
                }
                match out.iter_mut().find(|t| t.secret.expose() == secret) {
                    Some(t) if t.name != name => {
                        return Err(Error::Config(format!(
                            "{key}[{i}]: token `{name}` has the same secret as `{}`",
                            t.name
                        )));
                    }
                    Some(t) => t.roles = t.roles.union(roles),
                    None => out.push(Token { name: name.into(), secret: Secret::new(secret), roles }),
                }
            }
        }
        Ok(out)
    }
}

/// `[transport]`: limits every listener applies to its connections.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Open connections per listener, counted on accept; more are closed at once.
    pub max_connections: usize,
    /// Open connections per listener from one IP address; more are closed at once.
    pub max_connections_per_ip: usize,
    /// A connection that sends nothing for this long after it opens is closed.
    pub idle_timeout: Dur,
    /// Time a client has to send an export's body once its headers arrived; a body that stalls
    /// longer is dropped (408 / DEADLINE_EXCEEDED) and its ingest slot freed.
    pub body_read_timeout: Dur,
    /// HTTP/2 streams a gRPC client may open on one connection.
    pub max_concurrent_streams: u32,
    /// gRPC requests served at once per connection.
    pub concurrency_per_connection: usize,
    /// HTTP/2 PING interval on idle CellWeights connections (and TCP keepalive everywhere).
    pub keepalive_interval: Dur,
    /// A peer that does not answer a PING within this is disconnected (its Watch streams end).
    pub keepalive_timeout: Dur,
    /// Time a client has to send a request's headers (HTTP/1.1).
    pub header_read_timeout: Dur,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_connections: 1_024,
            max_connections_per_ip: 64,
            idle_timeout: Dur::secs(10),
            body_read_timeout: Dur::secs(30),
            max_concurrent_streams: 128,
            concurrency_per_connection: 64,
            keepalive_interval: Dur::secs(10),
            keepalive_timeout: Dur::secs(10),
            header_read_timeout: Dur::secs(10),
        }
    }
}

/// `[tls]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// PEM CA certificates: every listener asks clients for a certificate signed by one of
    /// them, and cluster nodes verify each other against them. Empty: no client certificates.
    pub client_ca: String,
    /// With `client_ca`: `required` (a handshake without a valid client certificate fails) or
    /// `optional` (a certificate offered is verified; clients without one use tokens).
    pub client_auth: ClientAuth,
}

/// `[tls] client_auth`
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAuth {
    /// Every connection presents a certificate signed by `client_ca`.
    #[default]
    Required,
    /// A certificate is verified when offered.
    Optional,
}

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

fn valid_node_char(c: char) -> bool {
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

impl Config {
    /// Loads defaults, then `path` if given, then overrides from `vars` (normally `std::env::vars()`).
    pub fn load(path: Option<&Path>, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        let file = match path {
            Some(p) => Some(
                std::fs::read_to_string(p).map_err(|e| Error::Config(format!("cannot read {}: {e}", p.display())))?,
            ),
            None => None,
        };
        Self::from_parts(file.as_deref(), vars)
    }

    /// Like [`Config::load`] with the file's text given directly.
    pub fn from_parts(file: Option<&str>, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self> {
        if let Some(text) = file {
            // Parse the file alone first so errors point at its lines and keys.
            toml::from_str::<Config>(text).map_err(|e| Error::Config(e.to_string()))?;
        }
        let mut tree = toml::Table::try_from(Config::default()).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(text) = file {
            let file_tree: toml::Table = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
            env::merge(&mut tree, file_tree);
        }
        env::apply_overrides(&mut tree, vars)?;
        let config: Config =
            tree.try_into().map_err(|e: toml::de::Error| Error::Config(format!("after environment overrides: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges, formats and consistency. Messages name the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("{key}: {why}")));
        let i = &self.ingest;
        for (key, addr) in [
            ("ingest.grpc_listen", &i.grpc_listen),
            ("ingest.http_listen", &i.http_listen),
            ("web.listen", &self.web.listen),
            ("control.listen", &self.control.listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return bad(key, &format!("`{addr}` is not a socket address like 127.0.0.1:8080"));
            }
        }
        if i.window.0.as_millis() == 0 {
            return bad("ingest.window", "must be at least 1ms");
        }
        if !300_000u128.is_multiple_of(i.window.0.as_millis()) {
            return bad("ingest.window", "must divide 5m evenly so tiers align");
        }
        if i.max_series == 0 {
            return bad("ingest.max_series", "must be at least 1");
        }
        if self.query.max_concurrent == 0 {
            return bad("query.max_concurrent", "must be at least 1");
        }
        if i.max_cells == 0 {
            return bad("ingest.max_cells", "must be at least 1");
        }
        if i.max_concurrent_requests == 0 {
            return bad("ingest.max_concurrent_requests", "must be at least 1");
        }
        if i.max_queue_wait.0.is_zero() {
            return bad("ingest.max_queue_wait", "must be positive");
        }
        let t = &self.transport;
        if t.max_connections == 0
            || t.max_connections_per_ip == 0
            || t.max_concurrent_streams == 0
            || t.concurrency_per_connection == 0
        {
            return bad(
                "transport",
                "max_connections, max_connections_per_ip, max_concurrent_streams and concurrency_per_connection must be at least 1",
            );
        }
        if [t.keepalive_interval, t.keepalive_timeout, t.header_read_timeout, t.idle_timeout, t.body_read_timeout]
            .iter()
            .any(|d| d.0.is_zero())
        {
            return bad(
                "transport",
                "keepalive_interval, keepalive_timeout, header_read_timeout, idle_timeout and body_read_timeout must be positive",
            );
        }
        if i.max_items_per_request == 0 {
            return bad("ingest.max_items_per_request", "must be at least 1");
        }
        if i.max_attribute_length < 16 {
            return bad("ingest.max_attribute_length", "must be at least 16 bytes");
        }
        if i.max_request_size.0 == 0 {
            return bad("ingest.max_request_size", "must be positive");
        }
        if i.cell_attributes.is_empty() {
            return bad("ingest.cell_attributes", "must name at least one attribute");
        }
        for k in &i.request_span_kinds {
            if !["server", "consumer", "client", "producer", "internal"].contains(&k.as_str()) {
                return bad(
                    "ingest.request_span_kinds",
                    &format!("unknown span kind `{k}` (server, consumer, client, producer, internal)"),
                );
            }
        }
        let p = &self.control.policy;
        if !(0.0..=1.0).contains(&p.drain_error_rate) {
            return bad("control.policy.drain_error_rate", "must be within 0..1");
        }
        if !(0.0..=1.0).contains(&p.max_drained_fraction) {
            return bad("control.policy.max_drained_fraction", "must be within 0..1");
        }
        if self.control.max_gateways == 0 {
            return bad("control.max_gateways", "must be at least 1");
        }
        let max_w = self.control.max_weight;
        if max_w == 0 || max_w > MAX_WEIGHT_LIMIT {
            return bad("control.max_weight", &format!("must be 1 to {MAX_WEIGHT_LIMIT}"));
        }
        if p.base_weight > max_w {
            return bad("control.policy.base_weight", &format!("must be at most control.max_weight ({max_w})"));
        }
        for (cell, c) in &self.control.cells {
            if c.base_weight.is_some_and(|w| w > max_w) {
                return bad(
                    &format!("control.cells.{cell}.base_weight"),
                    &format!("must be at most control.max_weight ({max_w})"),
                );
            }
        }
        self.auth.parsed()?;
        crate::auth::CertRule::parse_all(&self.auth)?;
        if self.tls.cert.is_empty() != self.tls.key.is_empty() {
            return bad("tls", "set both cert and key, or neither");
        }
        if !self.tls.client_ca.is_empty() && self.tls.cert.is_empty() {
            return bad("tls.client_ca", "needs tls.cert and tls.key (client certificates are asked for over TLS)");
        }
        if !self.auth.cert_roles.is_empty() && self.tls.client_ca.is_empty() {
            return bad("auth.cert_roles", "needs tls.client_ca (only verified certificates stand for a caller)");
        }
        self.validate_xds()?;
        self.validate_cluster()?;
        let mut names = std::collections::BTreeSet::new();
        for (n, s) in self.slo.iter().enumerate() {
            if s.name.is_empty() {
                return bad(&format!("slo[{n}].name"), "must not be empty");
            }
            if !names.insert(&s.name) {
                return bad(&format!("slo[{n}].name"), &format!("`{}` is defined twice", s.name));
            }
            if !(s.availability > 0.0 && s.availability < 1.0) {
                return bad(&format!("slo[{n}].availability"), "must be between 0 and 1, e.g. 0.999");
            }
        }
        Ok(())
    }

    fn validate_cluster(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("{key}: {why}")));
        let (c, s) = (&self.cluster, &self.storage);
        if !c.node_id.is_empty() && (c.node_id.len() > MAX_NODE_ID || !c.node_id.chars().all(valid_node_char)) {
            return bad("cluster.node_id", &format!("must be 1..={MAX_NODE_ID} of A-Z a-z 0-9 . _ -"));
        }
        if c.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("cluster.listen", &format!("`{}` is not a socket address like 127.0.0.1:50052", c.listen));
        }
        if c.lease_ttl.0 < std::time::Duration::from_secs(1) {
            return bad("cluster.lease_ttl", "must be at least 1s");
        }
        let every = s.checkpoint_interval.0;
        if every < std::time::Duration::from_millis(100) || every > std::time::Duration::from_secs(300) {
            return bad("storage.checkpoint_interval", "must be between 100ms and 5m");
        }
        if !s.url.is_empty() {
            let Some(rest) = s.url.strip_prefix("s3://") else {
                return bad("storage.url", &format!("`{}` is not empty or s3://bucket[/prefix]", s.url));
            };
            if rest.split('/').next().is_none_or(str::is_empty) {
                return bad("storage.url", "names no bucket: use s3://bucket[/prefix]");
            }
        }
        if c.role != NodeRole::All && s.url.is_empty() {
            return bad(
                "cluster.role",
                "`ingest` and `query` nodes share their files through an object store: set [storage] url",
            );
        }
        Ok(())
    }

    fn validate_xds(&self) -> Result<()> {
        let bad = |key: &str, why: &str| Err(Error::Config(format!("{key}: {why}")));
        let x = &self.xds;
        if !x.listen.is_empty() && x.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "xds.listen",
                &format!("`{}` is not a socket address like 127.0.0.1:18000 (or empty)", x.listen),
            );
        }
        for (key, v) in [
            ("xds.max_streams", x.max_streams),
            ("xds.max_streams_per_node", x.max_streams_per_node),
            ("xds.max_streams_per_token", x.max_streams_per_token),
            ("xds.max_names_per_stream", x.max_names_per_stream),
            ("xds.max_names", x.max_names),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1");
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (n, c) in x.clusters.iter().enumerate() {
            let key = format!("xds.clusters[{n}]");
            if c.name.is_empty() || c.name.len() > MAX_XDS_NAME || c.name.contains(['/', '*']) {
                return bad(&format!("{key}.name"), &format!("must be 1..={MAX_XDS_NAME} bytes with no `/` or `*`"));
            }
            if !names.insert(&c.name) {
                return bad(&format!("{key}.name"), &format!("`{}` is defined twice", c.name));
            }
            if c.cells.is_empty() {
                return bad(&format!("{key}.cells"), "must name at least one cell");
            }
            for (cell, endpoints) in &c.cells {
                if endpoints.is_empty() {
                    return bad(&format!("{key}.cells.{cell}"), "must list at least one endpoint");
                }
                for e in endpoints {
                    if e.parse::<std::net::SocketAddr>().is_err() {
                        return bad(
                            &format!("{key}.cells.{cell}"),
                            &format!("`{e}` is not an ip:port (EDS endpoints are addresses, not names)"),
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::from_parts(None, no_env()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.ingest.window.0.as_secs(), 10);
        assert_eq!(c.ingest.max_request_size.0, 64 << 20);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::from_parts(Some("[ingest]\nwindow = \"10s\"\nwindw = \"5s\"\n"), no_env()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("windw") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn env_overrides_nested_and_lists() {
        let vars = vec![
            ("CELLPILOT_CONTROL__POLICY__DRAIN_FOR".to_string(), "3s".to_string()),
            ("CELLPILOT_AUTH__TOKENS".to_string(), "a=1,b=2".to_string()),
            ("CELLPILOT_INGEST__MAX_SERIES".to_string(), "7".to_string()),
            ("CELLPILOT_INGEST__GRPC_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("CELLPILOT_ALERTS__CELL_ERROR_RATE".to_string(), "0.02".to_string()),
            ("CELLPILOT_CONTROL__CELLS__SH-UNIT-02__BASE_WEIGHT".to_string(), "150".to_string()),
            ("HOME".to_string(), "/root".to_string()),
        ];
        let c = Config::from_parts(Some("[ingest]\nmax_series = 5\n"), vars).unwrap();
        assert_eq!(c.control.policy.drain_for.0.as_secs(), 3);
        assert_eq!(c.auth.tokens, vec![Secret::new("a=1"), Secret::new("b=2")]);
        assert_eq!(c.ingest.max_series, 7);
        assert_eq!(c.ingest.grpc_listen, "127.0.0.1:0");
        assert_eq!(c.alerts.cell_error_rate, Some(0.02));
        assert_eq!(c.control.cells["sh-unit-02"].base_weight, Some(150));
    }

    #[test]
    fn weights_stay_under_max_weight() {
        let msg = |file: &str| Config::from_parts(Some(file), no_env()).unwrap_err().to_string();
        assert!(msg("[control]\nmax_weight = 0\n").contains("control.max_weight"));
        assert!(msg("[control]\nmax_weight = 4294967295\n").contains("control.max_weight"));
        assert!(msg("[control.policy]\nbase_weight = 20000\n").contains("control.policy.base_weight"));
        assert!(msg("[control.cells.a]\nbase_weight = 10001\n").contains("control.cells.a.base_weight"));
        assert!(msg("[tls]\nclient_ca = \"ca.pem\"\n").contains("tls.client_ca: needs tls.cert"));
        assert!(msg("[auth.cert_roles]\n\"CN=a\" = \"read\"\n").contains("auth.cert_roles: needs tls.client_ca"));
        assert!(msg("[tls]\nclient_auth = \"sometimes\"\n").contains("client_auth"));
        assert!(msg("[xds]\nmax_streams = 0\n").contains("xds.max_streams: must be at least 1"));
        assert!(Config::from_parts(Some("[control.cells.a]\nbase_weight = 10000\n"), no_env()).is_ok());
    }

    #[test]
    fn secrets_never_reach_debug() {
        let file = "[auth]\ntokens = [\"ops=tok-secret-1\"]\ngateway_tokens = [\"gw=tok-secret-2\"]\n\
                    [storage]\nsecret_access_key = \"s3-secret-3\"\n[cluster]\ntoken = \"peer-secret-4\"\n";
        let c = Config::from_parts(Some(file), no_env()).unwrap();
        let auth = crate::auth::Authenticator::new(&c.auth).unwrap();
        let printed = format!("{c:?} {c:#?} {auth:?} {:?}", c.auth.parsed().unwrap());
        for s in ["tok-secret-1", "tok-secret-2", "s3-secret-3", "peer-secret-4"] {
            assert!(!printed.contains(s), "`{s}` printed");
        }
        assert!(auth.check(Some("Bearer tok-secret-2"), crate::auth::Role::Gateway).is_ok());
        assert_eq!(c.cluster.token.expose(), "peer-secret-4");
    }

    #[test]
    fn bad_env_key_is_named() {
        let vars = vec![("CELLPILOT_INGEST__NOPE".to_string(), "1".to_string())];
        let msg = Config::from_parts(None, vars).unwrap_err().to_string();
        assert!(msg.contains("CELLPILOT_INGEST__NOPE"), "{msg}");
    }

    #[test]
    fn validation_names_the_key() {
        let msg = Config::from_parts(Some("[ingest]\nwindow = \"7s\"\n"), no_env()).unwrap_err().to_string();
        assert!(msg.contains("ingest.window"), "{msg}");
        let msg =
            Config::from_parts(Some("[[slo]]\nname = \"a\"\navailability = 2.0\n"), no_env()).unwrap_err().to_string();
        assert!(msg.contains("slo[0].availability"), "{msg}");
    }

    #[test]
    fn cluster_settings_are_checked() {
        for (text, key) in [
            ("[cluster]\nnode_id = \"a/b\"\n", "cluster.node_id"),
            ("[cluster]\nrole = \"query\"\n", "cluster.role"),
            ("[cluster]\nlease_ttl = \"10ms\"\n", "cluster.lease_ttl"),
            ("[cluster]\nlisten = \"nowhere\"\n", "cluster.listen"),
            ("[storage]\nurl = \"gs://b\"\n", "storage.url"),
            ("[storage]\nurl = \"s3:///p\"\n", "storage.url"),
        ] {
            let msg = Config::from_parts(Some(text), no_env()).unwrap_err().to_string();
            assert!(msg.contains(key), "{text}: {msg}");
        }
        let c = Config::from_parts(
            Some("[storage]\nurl = \"s3://b/p\"\n[cluster]\nrole = \"ingest\"\nnode_id = \"i-1\"\n"),
            no_env(),
        )
        .unwrap();
        assert_eq!((c.cluster.node_id(), c.cluster.advertise()), ("i-1".to_string(), "127.0.0.1:50052"));
        assert!(!Config::default().cluster.node_id().is_empty(), "the host name when unset");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../cellpilot.example.toml");
        let c = Config::from_parts(Some(text), no_env()).unwrap();
        assert_eq!(c.slo.len(), 1);
        assert_eq!(c.control.cells["bj-unit-07"].base_weight, Some(200));
        assert_eq!(c.storage.retention_1h.0.as_secs(), 400 * 86_400);
    }
}
