//! cellpilot-control: deciding cell weights — drain a failing cell, restore it slowly, bias by
//! latency — and recording every decision.
//!
//! # Layout
//! - [`policy`]: the pure, clock-driven policy: inputs per cell in, decisions out.
//! - [`decision`]: what the policy reads (inputs, pins) and publishes (decisions, the table).
//! - [`reason`]: human-readable reasons ("error rate 2.31 % > 0.50 % for 30 s over 18,204 requests").
//! - [`cutover`]: how long each drain really took (observed and reported).
//! - [`log`]: the decision and cut-over logs that survive restarts.
//! - [`pin`]: what an operator's pin may ask for.
//! - [`replica`]: one control loop for many nodes: recording versions, following the leader.
//! - [`gateways`]: every gateway of either protocol (CellWeights, xDS): streams, ACKs, NACKs.
//! - [`controller`]: the [`Controller`]: policy state, logs, the published table, Acks, replication.
//! - [`run`]: the evaluation loop over the rollup store.
//! - [`error`]: the crate's error type (its logs on disk).
//! - `testing`: inputs the unit tests share.

pub mod controller;
pub mod cutover;
pub mod decision;
pub mod error;
pub mod gateways;
pub mod log;
pub mod pin;
pub mod policy;
pub mod reason;
pub mod replica;
pub mod run;
#[cfg(test)]
mod testing;

pub use controller::Controller;

pub use policy::{CellInput, Decision, Inputs, Pin, Policy, PolicyState, State, WeightTable};
