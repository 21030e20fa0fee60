//! cellpilot-control: deciding cell weights — drain a failing cell, restore it slowly, bias by
//! latency — and recording every decision.
//!
//! # Layout
//! - [`policy`]: the pure, clock-driven policy: inputs per cell in, decisions out.
//! - [`reason`]: human-readable reasons ("error rate 2.31 % > 0.50 % for 30 s over 18,204 requests").

pub mod policy;
pub mod reason;

pub use policy::{CellInput, Decision, Policy, State, WeightTable};
