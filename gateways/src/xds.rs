//! The xDS management server. Envoy and proxyless gRPC clients follow the cell
//! weights over the Aggregated Discovery Service (state-of-the-world and delta); each node's
//! ACK of the version that drained a cell is that gateway applying it.
//!
//! # Layout
//! - `resources`: the Listener, RouteConfiguration, Cluster and ClusterLoadAssignment of each
//!   `[[xds.clusters]]` entry, built once per table version.
//! - `sotw`: the state-of-the-world stream state machine (subscriptions, nonces, ACK/NACK).
//! - `delta`: the incremental stream state machine.
//! - `event`: the state machine trait, what the machines report, and the bounds on requests.
//! - `server`: the ADS gRPC service that drives them and tells the controller.

mod delta;
mod event;
mod resources;
mod server;
mod sotw;

pub use resources::{Kind, Snapshots};
pub use server::{MAX_REQUEST_BYTES, XdsService};
