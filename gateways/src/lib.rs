//! cellpilot-gateways: how gateways follow the published weights. Two protocols over one
//! controller: cellpilot's own CellWeights service (`Watch`/`Ack`) and the xDS management server
//! (EDS over ADS for Envoy and proxyless gRPC). Both share gateway identity (a token's name
//! binds the ids it may use), the gateway-role check (`core::grpc::RoleGuard`), the stream caps
//! of `[xds]` and the stall detector, all in `follower`'s one type.
//!
//! # Layout
//! - `follower`: one gateway's stream: identity, stream slot, watching, stalls.
//! - `cell_weights`: the CellWeights gRPC service.
//! - `xds`: the xDS ADS server (resources, state-of-the-world and delta machines).
//! - [`pb`]: the generated CellWeights protobuf and gRPC types.

mod cell_weights;
mod follower;
mod xds;

/// Generated CellWeights protobuf and gRPC types.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod pb {
    tonic::include_proto!("cellpilot.control.v1");
}

pub use cell_weights::{CellWeightsService, to_proto};
pub use follower::STALL_AFTER;
pub use xds::{Kind, MAX_REQUEST_BYTES, Snapshots, XdsService};
