//! What a stream's state machine is (one per ADS variant), what it reports (ACKs, NACKs,
//! assignments that did not change) and the bounds every request is held to before anything is
//! kept from it.

use crate::xds::resources::{Kind, Snapshot};
use cellpilot_core::status::StatusCode;
use envoy_types::pb::envoy::config::core::v3::Node;
use tonic::Status;

/// One stream's state machine: requests and new snapshots in, responses and events out.
pub(crate) trait Machine: Send + 'static {
    /// The variant's request.
    type Req: Send + 'static;
    /// The variant's response.
    type Resp: Send + 'static;
    /// The node a request names.
    fn node(req: &Self::Req) -> Option<&Node>;
    /// A request: its ACK or NACK as events, and the response it calls for, if any.
    fn request(
        &mut self,
        req: &Self::Req,
        snap: &Snapshot,
        limits: &Limits,
    ) -> Result<(Vec<Event>, Option<Self::Resp>), Status>;
    /// A new snapshot: what to push, and [`Event::Unchanged`] for a node whose assignments it
    /// left alone while it holds every response it was sent.
    fn snapshot(&mut self, snap: &Snapshot) -> (Vec<Event>, Vec<Self::Resp>);
    /// Whether the node holds at least one assignment (it then follows the weights).
    fn holds_assignment(&self) -> bool;
    /// Whether an assignment response is neither ACKed nor NACKed yet.
    fn awaiting_assignment(&self) -> bool;
    /// Resource names held subscribed, over every type.
    fn subscribed(&self) -> usize;
}

/// Something the controller must hear about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The node applied the response of table `version`.
    Ack {
        /// Resource type.
        kind: Kind,
        /// Table version of the response.
        version: u64,
    },
    /// The node refused the response of table `version` and keeps what it had.
    Nack {
        /// Resource type.
        kind: Kind,
        /// Table version of the response.
        version: u64,
        /// Its `error_detail.message`.
        error: String,
    },
    /// Table `version` left the node's assignments as they were, and it holds them: it has
    /// nothing to apply.
    Unchanged {
        /// The new table version.
        version: u64,
    },
}

/// Bounds on what one request may name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Names in one request's list.
    pub max_names: usize,
    /// Bytes of one name.
    pub max_name_len: usize,
}

/// Longest node id kept (as CellWeights' `gateway_id`).
pub(crate) const MAX_NODE_ID: usize = crate::follower::MAX_GATEWAY_ID;

impl Default for Limits {
    fn default() -> Self {
        Self { max_names: 1024, max_name_len: 1024 }
    }
}

impl Limits {
    /// `INVALID_ARGUMENT` naming the field when `names` is over a bound.
    pub(crate) fn check_names<'a>(
        &self,
        names: impl ExactSizeIterator<Item = &'a String>,
        field: &str,
    ) -> Result<(), Status> {
        if names.len() > self.max_names {
            return Err(
                StatusCode::InvalidArgument.status(format!("{field} names more than {} resources", self.max_names))
            );
        }
        for n in names {
            if n.len() > self.max_name_len {
                return Err(StatusCode::InvalidArgument
                    .status(format!("{field} has a name longer than {} bytes", self.max_name_len)));
            }
        }
        Ok(())
    }
}
