//! The targets probed: `[[probes.targets]]` and, with `from_xds`, a TCP probe of every endpoint in
//! `[xds.clusters]` for its cell; bounded by `max_targets`.

use crate::Error;
use cellpilot_core::config::{ProbeCheck, ProbeKind, ProbesConfig, XdsConfig};
use std::collections::HashSet;

/// One endpoint of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The cell it belongs to.
    pub cell: String,
    /// Unique within the cell.
    pub name: String,
    /// What the probe does.
    pub kind: ProbeKind,
    /// `host:port` (tcp) or the URL (http).
    pub at: String,
    /// Bounds on numeric fields of the body (http).
    pub checks: Vec<ProbeCheck>,
}

/// Every target of `probes` (and of `xds`'s clusters when `from_xds`), configured ones first.
pub(crate) fn targets(probes: &ProbesConfig, xds: &XdsConfig) -> Result<Vec<Target>, Error> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in probes.targets.iter().enumerate() {
        let at = match t.kind {
            ProbeKind::Tcp => t.address.clone(),
            ProbeKind::Http => t.url.clone(),
            kind @ (ProbeKind::Grpc | ProbeKind::Icmp | ProbeKind::Redis) => {
                return Err(Error::NotBuilt { key: format!("probes.targets[{i}].kind"), kind: kind.as_str() });
            }
        };
        let target = Target {
            cell: t.cell.clone(),
            name: t.name(),
            kind: t.kind,
            at: at.unwrap_or_default(),
            checks: t.checks.clone(),
        };
        seen.insert((target.cell.clone(), target.name.clone()));
        out.push(target);
    }
    if probes.from_xds {
        for cluster in &xds.clusters {
            for (cell, endpoints) in &cluster.cells {
                for ep in endpoints {
                    let name = format!("tcp:{ep}");
                    if seen.insert((cell.clone(), name.clone())) {
                        out.push(Target {
                            cell: cell.clone(),
                            name,
                            kind: ProbeKind::Tcp,
                            at: ep.clone(),
                            checks: Vec::new(),
                        });
                    }
                }
            }
        }
    }
    if out.len() > probes.max_targets {
        return Err(Error::TooManyTargets { targets: out.len(), max: probes.max_targets });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellpilot_core::config::{ProbeTarget, XdsCluster};

    fn xds() -> XdsConfig {
        let cells = [("c1".to_string(), vec!["10.0.0.1:80".to_string(), "10.0.0.2:80".to_string()])].into();
        XdsConfig { clusters: vec![XdsCluster { name: "shop".into(), cells }], ..Default::default() }
    }

    #[test]
    fn xds_endpoints_become_tcp_targets_unless_configured() {
        let configured = ProbeTarget {
            cell: "c1".into(),
            kind: ProbeKind::Tcp,
            name: None,
            address: Some("10.0.0.1:80".into()),
            url: None,
            service: None,
            checks: vec![],
        };
        let p = ProbesConfig { targets: vec![configured], ..Default::default() };
        let names: Vec<_> = targets(&p, &xds()).unwrap().into_iter().map(|t| (t.cell, t.name)).collect();
        assert_eq!(names, [("c1".into(), "tcp:10.0.0.1:80".into()), ("c1".into(), "tcp:10.0.0.2:80".into())]);
        let off = ProbesConfig { from_xds: false, ..Default::default() };
        assert!(targets(&off, &xds()).unwrap().is_empty());
        let small = ProbesConfig { max_targets: 1, ..Default::default() };
        assert!(targets(&small, &xds()).unwrap_err().to_string().contains("probes.max_targets"));
    }

    #[test]
    fn kinds_not_built_yet_refuse_to_start_naming_the_key() {
        let grpc = ProbeTarget {
            cell: "c1".into(),
            kind: ProbeKind::Grpc,
            name: None,
            address: Some("10.0.0.1:50051".into()),
            url: None,
            service: None,
            checks: vec![],
        };
        let p = ProbesConfig { targets: vec![grpc], ..Default::default() };
        let e = targets(&p, &XdsConfig::default()).unwrap_err().to_string();
        assert!(e.contains("probes.targets[0].kind") && e.contains("grpc"), "{e}");
    }
}
