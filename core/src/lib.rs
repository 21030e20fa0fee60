//! cellpilot-core: the vocabulary every other crate shares.
//!
//! # Layout
//! - [`auth`]: bearer/basic token checks shared by every listener.
//! - [`config`]: the TOML configuration, its defaults, env overrides and validation.
//! - [`clock`]: the injectable wall clock (windows and policies run on a test clock) and the
//!   monotonic clock for timeouts and measured durations.
//! - [`window`]: epoch-aligned tumbling windows and their close deadlines.
//! - [`latency`]: the latency histogram (HdrHistogram, 2 significant digits, microseconds) and a
//!   sparse form of it that open windows hold.
//! - [`schema`]: the Arrow schemas of `rollups` and `errors_by_cause` and builders for them.
//! - [`slo`]: burn rates, shared by alerts and the dashboard.
//! - [`objective`]: SLO objectives as one type: each kind's bad events, target and names.
//! - [`store`]: the traits through which ingest hands rollups to whoever stores them.
//! - [`metrics`]: the process's Prometheus registry with the stable `cellpilot_` names.
//! - [`time`]: timestamp parsing and RFC 3339 formatting for APIs.
//! - [`role`]: what a caller may do ([`role::Role`], [`role::Roles`]).
//! - [`range`]: [`range::TimeRange`], the one parsed and bounded form of every API time range.
//! - [`grpc`]: the role check of the gateways' and peers' gRPC listeners, and its refusals.
//! - [`health`]: readiness checks behind `/readyz`.
//! - [`fs`]: the file layer write paths use, with fault injection for tests.
//! - [`link`]: paths of dashboard pages, as alerts and pages link to them.
//! - [`secret`]: [`secret::Secret`], a configured secret that never prints.
//! - [`task`]: periodic ticks that end on a stop signal, and blocking calls off the async workers.
//! - [`throttle`]: log lines a client can drive, at most one per interval with a held-back count.
//! - [`error`]: the crate's error type.
//! - [`status`]: what each kind of failure is answered with, over HTTP and gRPC, in one place.

pub mod auth;
pub mod clock;
pub mod config;
pub mod error;
pub mod fs;
pub mod grpc;
pub mod health;
pub mod latency;
pub mod link;
pub mod metrics;
pub mod objective;
pub mod range;
pub mod role;
pub mod schema;
pub mod secret;
pub mod slo;
pub mod status;
pub mod store;
pub mod task;
pub mod throttle;
pub mod time;
pub mod window;

pub use error::{Error, Result};

/// errors / requests; 0 without requests (an idle cell is not failing).
pub fn error_rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 { 0.0 } else { errors as f64 / requests as f64 }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cut_str(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let end = (0..=max).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    &s[..end]
}

/// The cell name used when no configured cell attribute is present.
pub const UNKNOWN_CELL: &str = "unknown";
/// The service name used when a resource carries no `service.name`.
pub const UNKNOWN_SERVICE: &str = "unknown_service";
/// The name new routes, cells, services and causes fold into once their cap is reached.
pub const OVERFLOW: &str = "__overflow__";
/// The route that new routes fold into once `max_series` is reached.
pub const OVERFLOW_ROUTE: &str = OVERFLOW;
