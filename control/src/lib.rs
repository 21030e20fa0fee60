//! cellpilot-control: deciding cell weights — drain a failing cell, restore it slowly, bias by
//! latency — and recording every decision.
//!
//! The front door is the [`Controller`] (opened on the data directory, fed by [`run`], read by
//! the pages and the gateway services), the pure [`Policy`] it steps, and the types callers
//! pass in and get back.
//!
//! # Layout
//! - `policy`: the pure, clock-driven policy: inputs per cell in, decisions out.
//! - `decision`: what the policy reads (inputs, pins) and publishes (decisions, the table).
//! - `reason`: human-readable reasons ("error rate 2.31 % > 0.50 % for 30 s over 18,204 requests").
//! - `cutover`: how long each drain really took (observed and reported).
//! - `log`: the decision and cut-over logs that survive restarts.
//! - `pin`: what an operator's pin may ask for.
//! - `replica`: one control loop for many nodes: recording versions, following the leader.
//! - `gateways`: every gateway of either protocol (CellWeights, xDS): streams, ACKs, NACKs.
//! - `controller`: the [`Controller`]: policy state, logs, the published table, Acks, replication.
//! - `run`: the evaluation loop over the rollup store.
//! - `error`: the crate's error type (its logs on disk).
//! - `testing`: inputs the unit tests share.

mod controller;
mod cutover;
mod decision;
mod error;
mod gateways;
mod log;
mod pin;
mod policy;
mod reason;
mod replica;
mod run;
#[cfg(test)]
mod testing;

pub use controller::{Controller, MAX_CLOCK_SKEW_MS};
pub use cutover::{Cutover, Source};
pub use decision::{CellInput, CellWeight, Decision, Inputs, Pin, State, WeightTable};
pub use error::{Error, Result};
pub use gateways::{Gateway, GatewayId, MAX_NACK_DETAIL, Protocol, StreamCaps};
pub use pin::{PinError, PinRequest};
pub use policy::{Policy, PolicyState};
pub use replica::{Entry, Recorded, Replication};
pub use run::run;
