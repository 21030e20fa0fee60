//! `[probes]`: health probes of each cell's endpoints (reachability and the business `/healthz`),
//! their schedule and the thresholds that turn results into target states.

use super::Dur;
use crate::{Error, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `[probes]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ProbesConfig {
    /// How often each target is probed.
    pub interval: Dur,
    /// A probe that has not answered within this fails.
    pub timeout: Dur,
    /// Consecutive failures that make a target unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that make an unhealthy (or unknown) target healthy.
    pub healthy_threshold: u32,
    /// A cell is probe-failing when at least this fraction of its known targets is unhealthy.
    pub failing_fraction: f64,
    /// Probes in flight at once, over every target.
    pub max_concurrent: usize,
    /// Targets at most (configured and derived from `[xds.clusters]` together).
    pub max_targets: usize,
    /// Probe every endpoint of `[xds.clusters]` over TCP, for its cell.
    pub from_xds: bool,
    /// The configured targets (`[[probes.targets]]`).
    pub targets: Vec<ProbeTarget>,
}

impl Default for ProbesConfig {
    fn default() -> Self {
        Self {
            interval: Dur::secs(5),
            timeout: Dur::secs(2),
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            failing_fraction: 0.5,
            max_concurrent: 500,
            max_targets: 10_000,
            from_xds: true,
            targets: Vec::new(),
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// Connect within the timeout.
    Tcp,
    /// GET: healthy on 2xx (and every check), no redirects followed, the body read to 64 KiB.
    Http,
    /// `grpc.health.v1.Health/Check`: healthy on SERVING.
    Grpc,
    /// ICMP echo.
    Icmp,
    /// Redis `PING` answered `PONG`.
    Redis,
}

impl ProbeKind {
    /// The name used in the config, the API and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Http => "http",
            ProbeKind::Grpc => "grpc",
            ProbeKind::Icmp => "icmp",
            ProbeKind::Redis => "redis",
        }
    }
}

/// `[[probes.targets]]`: one endpoint of one cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    /// The cell it belongs to.
    pub cell: String,
    /// `tcp`, `http`, `grpc`, `icmp` or `redis`.
    pub kind: ProbeKind,
    /// Unique within the cell; `<kind>:<address or url>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `host:port` (tcp, grpc, redis) or a host (icmp).
    #[serde(default)]
    pub address: Option<String>,
    /// `http://...` (http).
    #[serde(default)]
    pub url: Option<String>,
    /// The service asked about (grpc); the server's overall health when absent.
    #[serde(default)]
    pub service: Option<String>,
    /// Numeric fields of the JSON body and their bounds (http).
    #[serde(default)]
    pub checks: Vec<ProbeCheck>,
}

/// A bound on a numeric field of a JSON health body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProbeCheck {
    /// Dotted path into the body (`db.pool.available_ratio`).
    pub field: String,
    /// Lowest healthy value.
    #[serde(default)]
    pub min: Option<f64>,
    /// Highest healthy value.
    #[serde(default)]
    pub max: Option<f64>,
}

impl ProbeTarget {
    /// Its name: as configured, or `<kind>:<address or url>`.
    pub fn name(&self) -> String {
        match &self.name {
            Some(n) => n.clone(),
            None => {
                let at = if self.kind == ProbeKind::Http { self.url.as_deref() } else { self.address.as_deref() };
                format!("{}:{}", self.kind.as_str(), at.unwrap_or(""))
            }
        }
    }
}

/// The longest name, cell or address a target may have (they become labels and table rows).
pub const MAX_PROBE_NAME: usize = 256;

impl ProbesConfig {
    /// Checks every key; messages name the key (`probes.targets[2].url`).
    pub fn validate(&self) -> Result<()> {
        let bad = |key: String, why: &str| Err(Error::Config(format!("{key}: {why}")));
        if self.interval.0.is_zero() || self.timeout.0.is_zero() {
            return bad("probes".into(), "interval and timeout must be positive");
        }
        if self.timeout.0 > self.interval.0 {
            return bad("probes.timeout".into(), "must be at most probes.interval (a target never overlaps itself)");
        }
        if self.unhealthy_threshold == 0 || self.healthy_threshold == 0 {
            return bad("probes".into(), "unhealthy_threshold and healthy_threshold must be at least 1");
        }
        if !(self.failing_fraction > 0.0 && self.failing_fraction <= 1.0) {
            return bad("probes.failing_fraction".into(), "must be within (0, 1]");
        }
        if self.max_concurrent == 0 {
            return bad("probes.max_concurrent".into(), "must be at least 1");
        }
        if self.targets.len() > self.max_targets {
            return bad(
                "probes.targets".into(),
                &format!("{} targets, over probes.max_targets ({})", self.targets.len(), self.max_targets),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.targets.iter().enumerate() {
            let key = |k: &str| format!("probes.targets[{i}].{k}");
            if t.cell.is_empty() || t.cell.len() > MAX_PROBE_NAME {
                return bad(key("cell"), &format!("must be 1 to {MAX_PROBE_NAME} bytes"));
            }
            let needs_address = matches!(t.kind, ProbeKind::Tcp | ProbeKind::Grpc | ProbeKind::Redis);
            match t.kind {
                ProbeKind::Http => match t.url.as_deref() {
                    None => return bad(key("url"), "an http probe needs a url"),
                    Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                        return bad(key("url"), &format!("`{u}` is not an http:// or https:// URL"));
                    }
                    Some(u) if u.len() > 2048 => return bad(key("url"), "longer than 2048 bytes"),
                    Some(_) => {}
                },
                ProbeKind::Icmp => match t.address.as_deref() {
                    None | Some("") => return bad(key("address"), "an icmp probe needs a host"),
                    Some(a) if a.len() > MAX_PROBE_NAME => {
                        return bad(key("address"), &format!("longer than {MAX_PROBE_NAME} bytes"));
                    }
                    Some(_) => {}
                },
                _ if needs_address => match t.address.as_deref() {
                    None | Some("") => {
                        return bad(key("address"), &format!("a {} probe needs host:port", t.kind.as_str()));
                    }
                    Some(a)
                        if a.len() > MAX_PROBE_NAME
                            || a.rsplit_once(':').is_none_or(|(_, p)| p.parse::<u16>().is_err()) =>
                    {
                        return bad(key("address"), &format!("`{a}` is not host:port"));
                    }
                    Some(_) => {}
                },
                _ => {}
            }
            if !t.checks.is_empty() && t.kind != ProbeKind::Http {
                return bad(key("checks"), "only http probes read a body to check");
            }
            for (j, c) in t.checks.iter().enumerate() {
                let key = format!("probes.targets[{i}].checks[{j}]");
                if c.field.is_empty() || c.field.len() > MAX_PROBE_NAME || c.field.split('.').any(str::is_empty) {
                    return bad(format!("{key}.field"), "must be a dotted path like `db.pool.available_ratio`");
                }
                if c.min.is_none() && c.max.is_none() {
                    return bad(key, "needs min, max or both");
                }
                if c.min.iter().chain(c.max.iter()).any(|v| !v.is_finite()) {
                    return bad(key, "min and max must be finite numbers");
                }
            }
            let name = t.name();
            if name.is_empty() || name.len() > MAX_PROBE_NAME + 8 {
                return bad(key("name"), &format!("must be 1 to {MAX_PROBE_NAME} bytes"));
            }
            if !names.insert((t.cell.clone(), name.clone())) {
                return bad(key("name"), &format!("`{name}` is already a target of cell `{}`", t.cell));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(kind: ProbeKind) -> ProbeTarget {
        ProbeTarget {
            cell: "c1".into(),
            kind,
            name: None,
            address: Some("127.0.0.1:80".into()),
            url: Some("http://127.0.0.1/healthz".into()),
            service: None,
            checks: vec![],
        }
    }

    fn refused(targets: Vec<ProbeTarget>) -> String {
        let c = ProbesConfig { targets, ..Default::default() };
        c.validate().expect_err("refused").to_string()
    }

    #[test]
    fn invalid_targets_are_refused_naming_the_key() {
        let mut no_url = target(ProbeKind::Http);
        no_url.url = None;
        assert!(refused(vec![no_url]).contains("probes.targets[0].url"));
        let mut bad_url = target(ProbeKind::Http);
        bad_url.url = Some("ftp://x".into());
        assert!(refused(vec![bad_url]).contains("not an http"));
        let mut no_port = target(ProbeKind::Tcp);
        no_port.address = Some("db.local".into());
        assert!(refused(vec![no_port]).contains("probes.targets[0].address"));
        let twice = refused(vec![target(ProbeKind::Tcp), target(ProbeKind::Tcp)]);
        assert!(twice.contains("probes.targets[1].name") && twice.contains("already"), "{twice}");
        let mut check = target(ProbeKind::Http);
        check.checks = vec![ProbeCheck { field: "a..b".into(), min: Some(1.0), max: None }];
        assert!(refused(vec![check]).contains("checks[0].field"));
        let mut unbounded = target(ProbeKind::Http);
        unbounded.checks = vec![ProbeCheck { field: "a".into(), min: None, max: None }];
        assert!(refused(vec![unbounded]).contains("needs min, max"));
        let c = ProbesConfig {
            max_targets: 1,
            targets: vec![target(ProbeKind::Tcp), target(ProbeKind::Http)],
            ..Default::default()
        };
        assert!(c.validate().expect_err("over max").to_string().contains("probes.max_targets"));
    }

    #[test]
    fn a_target_is_named_by_kind_and_address_unless_named() {
        assert_eq!(target(ProbeKind::Tcp).name(), "tcp:127.0.0.1:80");
        assert_eq!(target(ProbeKind::Http).name(), "http:http://127.0.0.1/healthz");
        let mut named = target(ProbeKind::Tcp);
        named.name = Some("mysql".into());
        assert_eq!(named.name(), "mysql");
        assert!(
            ProbesConfig { targets: vec![target(ProbeKind::Tcp), target(ProbeKind::Http)], ..Default::default() }
                .validate()
                .is_ok()
        );
    }
}
