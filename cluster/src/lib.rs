//! cellpilot-cluster: nodes sharing one object store. Which nodes are alive (heartbeat objects
//! in the store, no static peer list), the rows an ingest node holds in no file yet, read by
//! query nodes over Arrow Flight, and the one control loop (a lease object and a decision log).
//!
//! # Layout
//! - [`members`]: heartbeats and the list of live nodes.
//! - [`flight`]: the Flight service answering a node's unwritten rows, and [`flight::Peers`],
//!   which asks every live ingest node for them at each scan.
//! - [`lease`]: [`lease::Leadership`], the control-loop lease and the decision log followers read.

pub mod flight;
pub mod lease;
pub mod members;

/// Result with the cluster [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong between nodes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object store refused or could not be reached.
    #[error("object store: {0}")]
    Store(String),
    /// A peer did not answer as it should.
    #[error("peer: {0}")]
    Peer(String),
    /// The settings cannot work (a node id in use elsewhere, a bad address).
    #[error("{0}")]
    Config(String),
    /// A bug, or stored data that is not what this build wrote.
    #[error(transparent)]
    Internal(#[from] cellpilot_core::error::Internal),
}

impl Error {
    fn store(what: &str, e: object_store::Error) -> Self {
        Error::Store(format!("{what}: {e}"))
    }
}
