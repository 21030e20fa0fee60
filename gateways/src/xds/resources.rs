//! The resources served for each `[[xds.clusters]]` entry, built once per table version: an API
//! Listener and its RouteConfiguration (what a proxyless gRPC client resolving `xds:///NAME`
//! asks for), an EDS Cluster with locality-weighted balancing, and the ClusterLoadAssignment
//! with one locality per cell weighted by the cell's current weight.

use cellpilot_control::{Controller, State};
use cellpilot_core::config::XdsCluster;
use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::google::protobuf::{Any, Duration, UInt32Value};
use prost::{Message, Name};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The resource types served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `envoy.config.listener.v3.Listener` (LDS).
    Listener,
    /// `envoy.config.route.v3.RouteConfiguration` (RDS).
    Route,
    /// `envoy.config.cluster.v3.Cluster` (CDS).
    Cluster,
    /// `envoy.config.endpoint.v3.ClusterLoadAssignment` (EDS): the weights.
    Endpoints,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Listener, Kind::Route, Kind::Cluster, Kind::Endpoints];

    /// The type URL clients name it by.
    pub fn type_url(self) -> &'static str {
        match self {
            Kind::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Kind::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            Kind::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Kind::Endpoints => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
        }
    }

    /// The kind of a type URL, if served.
    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Whether an empty subscription means every resource (LDS and CDS only).
    pub fn wildcard_by_default(self) -> bool {
        matches!(self, Kind::Listener | Kind::Cluster)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One resource: its encoding and a version that changes exactly when the encoding does.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `Any`-wrapped message.
    pub any: Any,
    /// FNV-1a of the encoding, hex (delta xDS's per-resource version).
    pub version: String,
}

impl Resource {
    fn of<M: Message + Name>(m: &M) -> Self {
        let value = m.encode_to_vec();
        let version = format!("{:016x}", fnv1a(&value));
        Self { any: Any { type_url: M::type_url(), value }, version }
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Every resource at one table version.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The weight table's version.
    pub version: u64,
    by_kind: [BTreeMap<String, Resource>; 4],
}

impl Snapshot {
    /// The resources of `kind`, by name.
    pub fn of(&self, kind: Kind) -> &BTreeMap<String, Resource> {
        &self.by_kind[kind.index()]
    }
}

/// The latest snapshot, rebuilt once per table version however many streams ask.
#[derive(Debug)]
pub struct Snapshots {
    controller: Arc<Controller>,
    clusters: Vec<XdsCluster>,
    current: Mutex<Option<Arc<Snapshot>>>,
}

impl Snapshots {
    /// Snapshots of `clusters` under `controller`'s table.
    pub fn new(controller: Arc<Controller>, clusters: Vec<XdsCluster>) -> Self {
        Self { controller, clusters, current: Mutex::new(None) }
    }

    /// The snapshot of the published table.
    pub fn current(&self) -> Arc<Snapshot> {
        let version = self.controller.version();
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = current.as_ref().filter(|s| s.version == version) {
            return s.clone();
        }
        let s = Arc::new(build(&self.controller, &self.clusters));
        *current = Some(s.clone());
        s
    }

    /// The controller whose table is served.
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }
}

/// The resources of every cluster at the controller's current table.
pub(crate) fn build(controller: &Controller, clusters: &[XdsCluster]) -> Snapshot {
    let table = controller.table();
    let weight = |cell: &str| match table.cells.iter().find(|c| c.cell == cell) {
        Some(c) => (c.state, c.weight),
        None => controller.cell_weight(cell),
    };
    let mut s = Snapshot { version: table.version, ..Snapshot::default() };
    for c in clusters {
        let name = c.name.clone();
        s.by_kind[Kind::Listener.index()].insert(name.clone(), Resource::of(&api_listener(&name)));
        s.by_kind[Kind::Route.index()].insert(name.clone(), Resource::of(&route_configuration(&name)));
        s.by_kind[Kind::Cluster.index()].insert(name.clone(), Resource::of(&eds_cluster(&name)));
        s.by_kind[Kind::Endpoints.index()].insert(name.clone(), Resource::of(&assignment(c, &weight)));
    }
    s
}

fn ads() -> core::ConfigSource {
    core::ConfigSource {
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(core::AggregatedConfigSource {})),
        resource_api_version: core::ApiVersion::V3 as i32,
        ..Default::default()
    }
}

fn any<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

/// The API Listener a proxyless gRPC client asks for: an HTTP connection manager whose routes
/// come from RDS over the same stream.
fn api_listener(name: &str) -> listener::Listener {
    let manager = hcm::HttpConnectionManager {
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: Some(ads()),
            route_config_name: name.to_string(),
        })),
        http_filters: vec![hcm::HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(&Router::default()))),
            ..Default::default()
        }],
        ..Default::default()
    };
    listener::Listener {
        name: name.to_string(),
        api_listener: Some(listener::ApiListener { api_listener: Some(any(&manager)) }),
        ..Default::default()
    }
}

/// Every request to the cluster of the same name.
fn route_configuration(name: &str) -> route::RouteConfiguration {
    route::RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vec![route::VirtualHost {
            name: name.to_string(),
            domains: vec!["*".into()],
            routes: vec![route::Route {
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix(String::new())),
                    ..Default::default()
                }),
                action: Some(route::route::Action::Route(route::RouteAction {
                    cluster_specifier: Some(route::route_action::ClusterSpecifier::Cluster(name.to_string())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An EDS cluster over ADS; Envoy honours locality weights only with locality-weighted
/// balancing (gRPC always does).
fn eds_cluster(name: &str) -> cluster::Cluster {
    cluster::Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(
            cluster::cluster::DiscoveryType::Eds as i32,
        )),
        eds_cluster_config: Some(cluster::cluster::EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: name.to_string(),
        }),
        connect_timeout: Some(Duration { seconds: 1, nanos: 0 }),
        lb_policy: cluster::cluster::LbPolicy::RoundRobin as i32,
        common_lb_config: Some(cluster::cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    cluster::cluster::common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One locality per cell (its `sub_zone` is the cell name). Cells with weight leave at
/// priority 0 with their weight; a cell at weight 0 (drained, or pinned to 0) moves to priority
/// 1 at weight 1, where a client goes only when it has lost every active cell. With no cell
/// at weight, every cell is at priority 0, weight 1 (priorities must start at 0): the same
/// failover, said directly.
fn assignment(c: &XdsCluster, weight: &dyn Fn(&str) -> (State, u32)) -> endpoint::ClusterLoadAssignment {
    let weights: Vec<(&String, &Vec<String>, u32)> =
        c.cells.iter().map(|(cell, addrs)| (cell, addrs, weight(cell).1)).collect();
    let any_active = weights.iter().any(|(_, _, w)| *w > 0);
    let endpoints = weights
        .into_iter()
        .map(|(cell, addrs, w)| {
            let (priority, w) = match (w, any_active) {
                (0, true) => (1, 1),
                (0, false) => (0, 1),
                (w, _) => (0, w),
            };
            endpoint::LocalityLbEndpoints {
                locality: Some(core::Locality { sub_zone: cell.clone(), ..Default::default() }),
                lb_endpoints: addrs.iter().filter_map(|a| lb_endpoint(a)).collect(),
                load_balancing_weight: Some(UInt32Value { value: w }),
                priority,
                ..Default::default()
            }
        })
        .collect();
    endpoint::ClusterLoadAssignment { cluster_name: c.name.clone(), endpoints, ..Default::default() }
}

fn lb_endpoint(addr: &str) -> Option<endpoint::LbEndpoint> {
    // Config validation admits only ip:port.
    let addr: std::net::SocketAddr = addr.parse().ok()?;
    Some(endpoint::LbEndpoint {
        host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint::Endpoint {
            address: Some(core::Address {
                address: Some(core::address::Address::SocketAddress(core::SocketAddress {
                    protocol: core::socket_address::Protocol::Tcp as i32,
                    address: addr.ip().to_string(),
                    port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(addr.port()))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        health_status: core::HealthStatus::Healthy as i32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cluster() -> XdsCluster {
        XdsCluster {
            name: "checkout".into(),
            cells: BTreeMap::from([
                ("a".to_string(), vec!["127.0.0.1:9001".to_string()]),
                ("b".to_string(), vec!["127.0.0.1:9002".to_string(), "[::1]:9003".to_string()]),
            ]),
        }
    }

    fn localities(weights: &[(&str, u32)]) -> Vec<(String, u32, u32, usize)> {
        let w = |cell: &str| (State::Active, weights.iter().find(|(c, _)| *c == cell).map_or(100, |(_, w)| *w));
        assignment(&cluster(), &w)
            .endpoints
            .into_iter()
            .map(|l| {
                let locality = l.locality.unwrap_or_default().sub_zone;
                (locality, l.priority, l.load_balancing_weight.map_or(0, |w| w.value), l.lb_endpoints.len())
            })
            .collect()
    }

    #[test]
    fn a_drained_cell_leaves_priority_zero_but_stays_for_failover() {
        assert_eq!(localities(&[("a", 100), ("b", 300)]), [("a".into(), 0, 100, 1), ("b".into(), 0, 300, 2)]);
        assert_eq!(localities(&[("a", 0), ("b", 300)]), [("a".into(), 1, 1, 1), ("b".into(), 0, 300, 2)]);
        assert_eq!(localities(&[("a", 0), ("b", 0)]), [("a".into(), 0, 1, 1), ("b".into(), 0, 1, 2)]);
    }

    #[test]
    fn versions_follow_the_encoding() {
        let a = Resource::of(&eds_cluster("x"));
        assert_eq!(a, Resource::of(&eds_cluster("x")));
        assert_ne!(a.version, Resource::of(&eds_cluster("y")).version);
        assert_eq!(a.any.type_url, Kind::Cluster.type_url());
        assert_eq!(Resource::of(&api_listener("x")).any.type_url, Kind::Listener.type_url());
        assert_eq!(Resource::of(&route_configuration("x")).any.type_url, Kind::Route.type_url());
        let w = |_: &str| (State::Active, 1);
        assert_eq!(Resource::of(&assignment(&cluster(), &w)).any.type_url, Kind::Endpoints.type_url());
    }
}
