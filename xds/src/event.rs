//! What a stream's state machine reports (ACKs, NACKs, assignments that did not change) and
//! the bounds every request is held to before anything is kept from it.

use crate::resources::Kind;
use tonic::Status;

/// Something the controller must hear about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
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
pub struct Limits {
    /// Names in one request's list.
    pub max_names: usize,
    /// Bytes of one name.
    pub max_name_len: usize,
}

/// Longest node id kept (as CellWeights' `gateway_id`).
pub const MAX_NODE_ID: usize = 256;

impl Default for Limits {
    fn default() -> Self {
        Self { max_names: 1024, max_name_len: 1024 }
    }
}

impl Limits {
    /// `INVALID_ARGUMENT` naming the field when `names` is over a bound.
    pub fn check_names<'a>(&self, names: impl ExactSizeIterator<Item = &'a String>, field: &str) -> Result<(), Status> {
        if names.len() > self.max_names {
            return Err(Status::invalid_argument(format!("{field} names more than {} resources", self.max_names)));
        }
        for n in names {
            if n.len() > self.max_name_len {
                return Err(Status::invalid_argument(format!(
                    "{field} has a name longer than {} bytes",
                    self.max_name_len
                )));
            }
        }
        Ok(())
    }
}
