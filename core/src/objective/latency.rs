//! The latency objective: a successful request slower than the SLO's `latency_p999_ms` is bad
//! (a failed one already counts against availability); at most 0.1 % may be, which is what a
//! P99.9 threshold means.

use super::{Events, Kind, Objective};
use crate::config::SloConfig;

/// Target of every latency objective.
pub const TARGET: f64 = 0.999;

pub(super) const NAME: &str = "latency";
pub(super) const ALERT: &str = "SLOLatencyBurnRateHigh";

pub(super) fn of(slo: &SloConfig) -> Option<Objective> {
    slo.latency_p999_ms.map(|t| Objective { kind: Kind::Latency, target: TARGET, threshold_ms: Some(t) })
}

pub(super) fn bad(e: &Events) -> u64 {
    e.slow
}

pub(super) fn threshold_us(ms: f64) -> u64 {
    (ms * 1000.0) as u64
}

pub(super) fn title(threshold_ms: f64) -> String {
    format!("Latency (requests slower than {threshold_ms} ms)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_successes_are_bad_and_errors_are_not() {
        assert_eq!(bad(&Events { requests: 1000, errors: 7, slow: 40 }), 40);
        assert_eq!(threshold_us(0.5), 500);
    }
}
