//! The availability objective: a failed request is bad; the target is the SLO's `availability`.

use super::{Events, Kind, Objective};
use crate::config::SloConfig;

pub(super) const NAME: &str = "availability";
pub(super) const ALERT: &str = "SLOAvailabilityBurnRateHigh";

pub(super) fn of(slo: &SloConfig) -> Objective {
    Objective { kind: Kind::Availability, target: slo.availability, threshold_ms: None }
}

pub(super) fn bad(e: &Events) -> u64 {
    e.errors
}

pub(super) fn title() -> String {
    "Availability".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_bad_and_slow_successes_are_not() {
        assert_eq!(bad(&Events { requests: 1000, errors: 7, slow: 40 }), 7);
    }
}
