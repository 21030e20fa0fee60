//! A target's state from its consecutive results, as Envoy's active health checking keeps it:
//! `unknown` until a threshold is first crossed, then `healthy` or `unhealthy`, flipping only
//! after `healthy_threshold` successes or `unhealthy_threshold` failures in a row.

use serde::Serialize;

/// Where a target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// No threshold crossed yet; never drains anything.
    Unknown,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
}

impl State {
    /// The name used in the API and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
        }
    }
}

/// The thresholds of `[probes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// Successes in a row that make a target healthy.
    pub(crate) healthy: u32,
    /// Failures in a row that make a target unhealthy.
    pub(crate) unhealthy: u32,
}

/// One target's consecutive results and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tracker {
    state: State,
    successes: u32,
    failures: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Self { state: State::Unknown, successes: 0, failures: 0 }
    }
}

impl Tracker {
    /// Its state now.
    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// Counts one result; returns the new state when it changed.
    pub(crate) fn record(&mut self, ok: bool, t: Thresholds) -> Option<State> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let next = if ok && self.successes >= t.healthy {
            State::Healthy
        } else if !ok && self.failures >= t.unhealthy {
            State::Unhealthy
        } else {
            self.state
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds { healthy: 2, unhealthy: 3 };

    fn run(results: &str) -> Vec<State> {
        let mut t = Tracker::default();
        results
            .chars()
            .map(|c| {
                t.record(c == '+', T);
                t.state()
            })
            .collect()
    }

    #[test]
    fn states_flip_only_after_a_run_of_results() {
        use State::{Healthy as H, Unhealthy as U, Unknown as N};
        assert_eq!(run("+"), [N]);
        assert_eq!(run("++"), [N, H]);
        assert_eq!(run("--"), [N, N]);
        assert_eq!(run("---"), [N, N, U]);
        // A failure between successes starts the count again.
        assert_eq!(run("++--+--"), [N, H, H, H, H, H, H]);
        assert_eq!(run("++---+-"), [N, H, H, H, U, U, U]);
        assert_eq!(run("---+++"), [N, N, U, U, H, H]);
    }
}
