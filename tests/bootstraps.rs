//! The Envoy and gRPC bootstrap files of docs/xds/, as docs/control.md shows them: each points its
//! ADS at cellpilot's default `[xds] listen`, asks for a cluster the example configuration
//! serves over EDS, and names only message types that exist. (The grpcio end-to-end test in
//! tests/e2e/xds.rs runs the gRPC one for real.)

use cellpilot_core::config::{Config, XdsConfig};
use prost::Name;
use serde_json::Value;
use std::path::Path;

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn example_clusters() -> Vec<String> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("cellpilot.example.toml");
    let config = Config::load(Some(&example), std::iter::empty()).unwrap();
    config.xds.clusters.into_iter().map(|c| c.name).collect()
}

/// Every `"@type"` value anywhere under `v`.
fn types(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("@type", Value::String(t)) => out.push(t.clone()),
                    _ => types(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| types(v, out)),
        _ => {}
    }
}

#[test]
fn the_envoy_bootstrap_follows_cellpilot_over_ads() {
    let text = read("docs/xds/envoy.yaml");
    assert!(read("docs/control.md").contains(&text), "docs/control.md shows docs/xds/envoy.yaml verbatim");
    let b: Value = serde_norway::from_str(&text).expect("YAML");
    let ads = &b["dynamic_resources"]["ads_config"];
    assert_eq!((ads["api_type"].as_str(), ads["transport_api_version"].as_str()), (Some("GRPC"), Some("V3")));
    let ads_cluster = ads["grpc_services"][0]["envoy_grpc"]["cluster_name"].as_str().unwrap();
    let clusters = b["static_resources"]["clusters"].as_array().unwrap();
    let find = |name: &str| clusters.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("cluster {name}"));
    // The ADS cluster: cellpilot's default xDS address, over HTTP/2.
    let xds = find(ads_cluster);
    let addr = &xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    let at = format!("{}:{}", addr["address"].as_str().unwrap(), addr["port_value"].as_u64().unwrap());
    assert_eq!(at, XdsConfig::default().listen);
    let options = &xds["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert!(options["explicit_http_config"]["http2_protocol_options"].is_object(), "ADS needs HTTP/2");
    // The EDS cluster: one the example configuration serves, over ADS, locality-weighted.
    let served = example_clusters();
    let eds: Vec<&Value> = clusters.iter().filter(|c| c["type"] == "EDS").collect();
    assert_eq!(eds.len(), 1);
    let name = eds[0]["name"].as_str().unwrap();
    assert!(served.iter().any(|s| s == name), "{name} is not among {served:?}");
    let config = &eds[0]["eds_cluster_config"]["eds_config"];
    assert!(config["ads"].is_object() && config["resource_api_version"] == "V3");
    assert!(eds[0]["common_lb_config"]["locality_weighted_lb_config"].is_object(), "weights need it");
    // The listener routes to it.
    let routes =
        &b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"];
    assert_eq!(routes["virtual_hosts"][0]["routes"][0]["route"]["cluster"].as_str(), Some(name));
    // Every typed config names a real message.
    use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    let known = [HttpConnectionManager::type_url(), Router::type_url(), HttpProtocolOptions::type_url()];
    let mut found = Vec::new();
    types(&b, &mut found);
    assert_eq!(found.len(), 3);
    for t in found {
        assert!(known.contains(&t), "{t} is not a known Envoy message");
    }
}

#[test]
fn the_grpc_bootstrap_points_at_cellpilot() {
    let text = read("docs/xds/grpc-bootstrap.json");
    assert!(read("docs/control.md").contains(&text), "docs/control.md shows docs/xds/grpc-bootstrap.json verbatim");
    let b: Value = serde_json::from_str(&text).expect("JSON");
    let server = &b["xds_servers"][0];
    assert_eq!(server["server_uri"].as_str(), Some(XdsConfig::default().listen.as_str()));
    assert_eq!(server["channel_creds"][0]["type"], "insecure");
    assert!(server["server_features"].as_array().unwrap().contains(&Value::from("xds_v3")));
    assert!(b["node"]["id"].as_str().is_some_and(|id| !id.is_empty() && id.len() <= 256), "a node id cellpilot takes");
    assert!(example_clusters().contains(&"checkout".to_string()), "docs/control.md's xds:///checkout is served");
}
