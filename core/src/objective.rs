//! SLO objectives as one type. Each kind says which events are bad, what share of them may be
//! (its target) and what it is called, so the SLA page, the SLO cards and the burn-rate alerts
//! count every objective the same way. A new kind is a file beside these (its bad-event rule,
//! target, names and tests) and a variant of [`Kind`].
//!
//! # Layout
//! - `availability`: failed requests are bad; the target is the SLO's `availability`.
//! - `latency`: successful requests slower than the SLO's `latency_p999_ms` are bad; the target
//!   is 99.9 % (what a P99.9 threshold means).

mod availability;
mod latency;

use crate::config::SloConfig;

pub use latency::TARGET as LATENCY_TARGET;

/// What a stretch of rollups counts; every objective takes its bad events from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// All requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests slower than the latency threshold (0 when none was read).
    pub slow: u64,
}

/// The kinds of objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Requests that succeed.
    Availability,
    /// Successful requests that are fast enough.
    Latency,
}

impl Kind {
    /// Every kind, in the order reports show them.
    pub const ALL: [Kind; 2] = [Kind::Availability, Kind::Latency];

    /// Its name in alerts and reports (`availability`, `latency`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Availability => availability::NAME,
            Kind::Latency => latency::NAME,
        }
    }

    /// The `alertname` of its burn-rate alert.
    pub fn alert_name(self) -> &'static str {
        match self {
            Kind::Availability => availability::ALERT,
            Kind::Latency => latency::ALERT,
        }
    }

    /// Its bad events among `e`.
    pub fn bad(self, e: &Events) -> u64 {
        match self {
            Kind::Availability => availability::bad(e),
            Kind::Latency => latency::bad(e),
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One objective of an SLO.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective {
    /// What it counts.
    pub kind: Kind,
    /// The share of events that must be good (e.g. 0.999).
    pub target: f64,
    /// The latency threshold, ms, for a latency objective.
    pub threshold_ms: Option<f64>,
}

impl Objective {
    /// The objectives `slo` sets, in [`Kind::ALL`]'s order: availability always, latency when
    /// `latency_p999_ms` is set.
    pub fn of(slo: &SloConfig) -> Vec<Objective> {
        [Some(availability::of(slo)), latency::of(slo)].into_iter().flatten().collect()
    }

    /// The objective of `kind` that `slo` sets.
    pub fn find(slo: &SloConfig, kind: Kind) -> Option<Objective> {
        Self::of(slo).into_iter().find(|o| o.kind == kind)
    }

    /// Its bad events among `e`.
    pub fn bad(&self, e: &Events) -> u64 {
        self.kind.bad(e)
    }

    /// How fast `bad` of `total` events spend its budget (see [`crate::slo::burn_rate`]).
    pub fn burn_rate(&self, bad: u64, total: u64) -> f64 {
        crate::slo::burn_rate(bad, total, self.target)
    }

    /// Its heading on a page ("Availability", "Latency (requests slower than 250 ms)").
    pub fn title(&self) -> String {
        match self.kind {
            Kind::Availability => availability::title(),
            Kind::Latency => latency::title(self.threshold_ms.unwrap_or(0.0)),
        }
    }
}

/// The threshold above which `slo`'s successful requests are slow, µs; `None` when it has no
/// latency objective (then no histogram needs reading).
pub fn slow_above_us(slo: &SloConfig) -> Option<u64> {
    latency::of(slo).and_then(|o| o.threshold_ms).map(latency::threshold_us)
}

/// Bad events of each kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bad([u64; Kind::ALL.len()]);

impl Bad {
    /// The bad events of every kind among `e`.
    pub fn of(e: &Events) -> Self {
        let mut b = Bad::default();
        for k in Kind::ALL {
            b[k] = k.bad(e);
        }
        b
    }

    /// Adds `other`'s counts, saturating.
    pub fn add(&mut self, other: Bad) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }
}

impl std::ops::Index<Kind> for Bad {
    type Output = u64;
    fn index(&self, k: Kind) -> &u64 {
        &self.0[k.index()]
    }
}

impl std::ops::IndexMut<Kind> for Bad {
    fn index_mut(&mut self, k: Kind) -> &mut u64 {
        &mut self.0[k.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_slo_has_availability_and_latency_only_with_a_threshold() {
        let mut slo = SloConfig {
            name: "checkout".into(),
            availability: 0.995,
            latency_p999_ms: None,
            cutover_ms: None,
            period: crate::config::Dur::days(30),
            selector: Default::default(),
        };
        let o = Objective::of(&slo);
        assert_eq!(o.len(), 1);
        assert_eq!((o[0].kind, o[0].target, o[0].threshold_ms), (Kind::Availability, 0.995, None));
        assert_eq!(slow_above_us(&slo), None);
        slo.latency_p999_ms = Some(250.0);
        let o = Objective::of(&slo);
        assert_eq!(o.iter().map(|o| o.kind).collect::<Vec<_>>(), Kind::ALL);
        assert_eq!((o[1].target, o[1].threshold_ms), (0.999, Some(250.0)));
        assert_eq!(o[1].title(), "Latency (requests slower than 250 ms)");
        assert_eq!(slow_above_us(&slo), Some(250_000));
    }

    #[test]
    fn bad_events_add_up_per_kind() {
        let mut b = Bad::of(&Events { requests: 100, errors: 3, slow: 5 });
        assert_eq!((b[Kind::Availability], b[Kind::Latency]), (3, 5));
        b.add(Bad::of(&Events { requests: 10, errors: u64::MAX, slow: 1 }));
        assert_eq!((b[Kind::Availability], b[Kind::Latency]), (u64::MAX, 6));
        let o = Objective { kind: Kind::Availability, target: 0.999, threshold_ms: None };
        // 1 % errors against a 0.1 % budget: 10×.
        assert!((o.burn_rate(10, 1000) - 10.0).abs() < 1e-9);
    }
}
