//! The configuration: serde structs mirroring the spec's TOML, with defaults that need no file.
//!
//! Loading order: defaults, then the file, then `CELLPILOT_<SECTION>__<KEY>` environment
//! overrides (see [`mod@env`]), then [`Config::validate`]. Unknown keys are errors naming the key.

mod alerts;
mod control;
pub mod env;
mod ingest;
mod probes;
pub mod reference;
mod security;
pub mod units;
mod web;

use crate::{Error, Result};
pub use alerts::*;
use control::valid_node_char;
pub use control::*;
pub use ingest::*;
pub use probes::*;
use schemars::JsonSchema;
pub use security::*;
use serde::{Deserialize, Serialize};
use std::path::Path;
pub use units::{Dur, Size};
pub use web::*;

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
    /// Health probes of each cell's endpoints.
    pub probes: ProbesConfig,
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
        let mut tree = toml::Table::try_from(Config::default())
            .map_err(|e| crate::error::Internal::caused("the defaults as TOML", e))?;
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
        CertRule::parse_all(&self.auth)?;
        self.probes.validate()?;
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
    use crate::secret::Secret;

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
