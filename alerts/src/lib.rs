//! cellpilot-alerts: SLO burn-rate and cell rules, the pending -> firing -> resolved state
//! machine, and delivery to Prometheus Alertmanager (API v2) and Alertmanager-style webhooks.
//!
//! # Layout
//! - [`burn_rate`]: burn-rate math and the four multi-window pairs.
//! - [`rules`]: which alert conditions hold, from facts about SLOs and cells (pure).
//! - [`engine`]: the alert state machine on a test-able clock.
//! - [`deliver`]: Alertmanager and webhook payloads, retries with backoff, delivery status.
//! - [`outbox`]: one task and bounded queue per receiver, off the evaluation path.
//! - [`run`]: the evaluation loop over the rollup store.
//! - [`view`]: the alerts and delivery outcomes the API and pages show.

pub mod burn_rate;
pub mod deliver;
pub mod engine;
pub mod outbox;
pub mod rules;
pub mod run;
pub mod view;

pub use engine::{Alert, AlertState, Engine};
pub use rules::{CellFacts, Condition, CutoverFacts, Facts, SloFacts};
