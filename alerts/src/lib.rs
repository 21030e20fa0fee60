//! cellpilot-alerts: SLO burn-rate and cell rules, the pending -> firing -> resolved state
//! machine, and delivery to Prometheus Alertmanager (API v2) and Alertmanager-style webhooks.
//!
//! The front door is [`run`], the evaluation and delivery loop a query node runs, with the
//! [`ControlView`] it reads the controller through and the [`AlertsView`] the pages read.
//!
//! # Layout
//! - `burn_rate`: burn-rate math and the four multi-window pairs.
//! - `rules`: which alert conditions hold, from facts about SLOs and cells (pure).
//! - `engine`: the alert state machine on a test-able clock.
//! - `deliver`: Alertmanager and webhook payloads, retries with backoff, delivery status.
//! - `outbox`: one task and bounded queue per receiver, off the evaluation path.
//! - `run`: the evaluation loop over the rollup store.
//! - `view`: the alerts and delivery outcomes the API and pages show.

mod burn_rate;
mod deliver;
mod engine;
mod outbox;
mod rules;
mod run;
mod view;

pub use deliver::DeliveryStatus;
pub use engine::{Alert, AlertState};
pub use run::{ControlView, run};
pub use view::AlertsView;
