//! The alert state machine: a condition that starts holding is pending, fires once it has held
//! for its `for`, and resolves when it stops holding. Resolved alerts stay listed for an hour.

use crate::rules::{Condition, Labels};
use serde::Serialize;
use std::collections::BTreeMap;

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Holding, not yet for long enough.
    Pending,
    /// Firing.
    Firing,
    /// Stopped holding after firing.
    Resolved,
}

impl AlertState {
    /// The name used in the API and pages (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

impl std::fmt::Display for AlertState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Alert {
    /// Stable identity of the label set.
    pub fingerprint: String,
    /// Labels.
    pub labels: Labels,
    /// Annotations (refreshed while the condition holds).
    pub annotations: Labels,
    /// State.
    pub state: AlertState,
    /// When the condition began holding, unix ms.
    pub active_since_ms: i64,
    /// When it started firing, unix ms.
    pub starts_at_ms: Option<i64>,
    /// When it resolved, unix ms.
    pub ends_at_ms: Option<i64>,
    /// Dashboard page (path) for `generatorURL`.
    pub page: String,
}

/// How long resolved alerts stay listed.
const KEEP_RESOLVED_MS: i64 = 60 * 60_000;

/// FNV-1a 64 over the sorted label pairs: stable across restarts and processes.
pub(crate) fn fingerprint(labels: &Labels) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for b in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Every alert, by fingerprint.
#[derive(Debug, Default, Clone)]
pub(crate) struct Engine {
    alerts: BTreeMap<String, Alert>,
}

impl Engine {
    /// An engine that remembers `firing` alerts (restored after a restart).
    pub(crate) fn with(firing: Vec<Alert>) -> Self {
        Self { alerts: firing.into_iter().map(|a| (a.fingerprint.clone(), a)).collect() }
    }

    /// Applies the conditions holding at `now_ms`; returns the alerts whose state changed.
    pub(crate) fn evaluate(&mut self, now_ms: i64, conditions: &[Condition]) -> Vec<Alert> {
        let mut changed = Vec::new();
        let mut holding = std::collections::BTreeSet::new();
        for c in conditions {
            let fp = fingerprint(&c.labels);
            holding.insert(fp.clone());
            let a = self.alerts.entry(fp.clone()).or_insert_with(|| Alert {
                fingerprint: fp,
                labels: c.labels.clone(),
                annotations: c.annotations.clone(),
                state: AlertState::Pending,
                active_since_ms: now_ms,
                starts_at_ms: None,
                ends_at_ms: None,
                page: c.page.clone(),
            });
            a.annotations = c.annotations.clone();
            if a.state == AlertState::Resolved {
                // Holding again: a new episode.
                *a = Alert {
                    state: AlertState::Pending,
                    active_since_ms: now_ms,
                    starts_at_ms: None,
                    ends_at_ms: None,
                    ..a.clone()
                };
            }
            if a.state == AlertState::Pending && now_ms - a.active_since_ms >= c.for_ms {
                a.state = AlertState::Firing;
                a.starts_at_ms = Some(now_ms);
                changed.push(a.clone());
            }
        }
        self.alerts.retain(|fp, a| {
            if holding.contains(fp) {
                return true;
            }
            match a.state {
                AlertState::Pending => false,
                AlertState::Firing => {
                    a.state = AlertState::Resolved;
                    a.ends_at_ms = Some(now_ms);
                    changed.push(a.clone());
                    true
                }
                AlertState::Resolved => a.ends_at_ms.is_some_and(|t| now_ms - t < KEEP_RESOLVED_MS),
            }
        });
        changed
    }

    /// Every alert: pending, firing and recently resolved.
    pub(crate) fn alerts(&self) -> Vec<Alert> {
        self.alerts.values().cloned().collect()
    }

    /// Firing alerts.
    pub(crate) fn firing(&self) -> Vec<Alert> {
        self.alerts.values().filter(|a| a.state == AlertState::Firing).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_their_serialized_names() {
        for s in [AlertState::Pending, AlertState::Firing, AlertState::Resolved] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    fn cond(name: &str, for_ms: i64) -> Condition {
        let labels: Labels = [("alertname".to_string(), name.to_string())].into();
        Condition { labels, annotations: Labels::new(), for_ms, page: "/".into() }
    }

    #[test]
    fn pending_firing_resolved() {
        let mut e = Engine::default();
        assert!(e.evaluate(0, &[cond("A", 120_000)]).is_empty());
        assert_eq!(e.alerts()[0].state, AlertState::Pending);
        assert!(e.evaluate(60_000, &[cond("A", 120_000)]).is_empty());
        let fired = e.evaluate(120_000, &[cond("A", 120_000)]);
        assert_eq!((fired[0].state, fired[0].starts_at_ms), (AlertState::Firing, Some(120_000)));
        let resolved = e.evaluate(130_000, &[]);
        assert_eq!((resolved[0].state, resolved[0].ends_at_ms), (AlertState::Resolved, Some(130_000)));
        assert_eq!(e.alerts().len(), 1, "resolved alerts stay listed");
        assert_eq!(e.evaluate(130_000 + 3_600_000, &[]).len(), 0);
        assert!(e.alerts().is_empty());
    }

    #[test]
    fn pending_that_stops_never_fires_and_fingerprints_are_stable() {
        let mut e = Engine::default();
        e.evaluate(0, &[cond("B", 60_000)]);
        assert!(e.evaluate(30_000, &[]).is_empty());
        assert!(e.alerts().is_empty());
        let a = fingerprint(&cond("B", 0).labels);
        assert_eq!(a, fingerprint(&cond("B", 0).labels));
        assert_ne!(a, fingerprint(&cond("C", 0).labels));
    }
}
