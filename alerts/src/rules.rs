//! The rules: from facts about SLOs and cells to the alert conditions that hold now (pure).

use crate::burn_rate::PAIRS;
use cellpilot_core::objective::Objective;
use std::collections::BTreeMap;

/// Labels of an alert.
pub(crate) type Labels = BTreeMap<String, String>;

/// An alert condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    /// Identity (`alertname`, `severity`, `slo`, `cell`, `service`, `window`).
    pub labels: Labels,
    /// `summary`, `description`.
    pub annotations: Labels,
    /// How long it must hold before firing, ms.
    pub for_ms: i64,
    /// Dashboard page this alert links to (path).
    pub page: String,
}

/// Counts of one SLO objective over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Window {
    /// Bad events.
    pub bad: u64,
    /// All requests.
    pub total: u64,
}

/// What an SLO saw over each window length (ms).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SloFacts {
    /// SLO name.
    pub name: String,
    /// Each objective the SLO sets, with its counts per window.
    pub objectives: Vec<ObjectiveFacts>,
    /// The SLO's selector labels (`cell`, `service`).
    pub selector: Labels,
}

/// One objective of an SLO and its counts over each window length (ms).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObjectiveFacts {
    /// What it counts and its target.
    pub objective: Objective,
    /// Its bad events and all requests per window.
    pub windows: BTreeMap<i64, Window>,
}

/// What a cell looks like now.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct CellFacts {
    /// Cell.
    pub cell: String,
    /// Error rate over `cell_error_rate_for`.
    pub error_rate: f64,
    /// Requests over `cell_error_rate_for`.
    pub requests: u64,
    /// Drained by the policy.
    pub drained: bool,
    /// Why a drain was blocked, if it was.
    pub drain_blocked: Option<String>,
    /// P99.9 over the last 5 minutes, ms.
    pub p999_5m_ms: Option<f64>,
}

/// A finished cut-over.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CutoverFacts {
    /// Cell.
    pub cell: String,
    /// Its drain's version.
    pub version: Option<u64>,
    /// How long it took.
    pub duration_ms: i64,
    /// The target it is held to.
    pub target_ms: i64,
}

/// Everything the rules look at.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Facts {
    /// SLOs.
    pub slos: Vec<SloFacts>,
    /// Cells.
    pub cells: Vec<CellFacts>,
    /// Recently finished cut-overs.
    pub cutovers: Vec<CutoverFacts>,
    /// `CellErrorRateHigh` threshold.
    pub cell_error_rate: f64,
    /// Latency thresholds per SLO (name -> ms) with the SLO's cell selector, for `LatencyP999High`.
    pub latency_thresholds: Vec<(String, Option<String>, f64)>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every condition that holds for `facts`.
pub(crate) fn conditions(facts: &Facts) -> Vec<Condition> {
    let mut out = Vec::new();
    for slo in &facts.slos {
        for o in &slo.objectives {
            let (alertname, objective) = (o.objective.kind.alert_name(), o.objective.kind.name());
            for pair in PAIRS {
                let rate = |w: i64| o.windows.get(&w).map_or(0.0, |x| o.objective.burn_rate(x.bad, x.total));
                let (long, short) = (rate(pair.long_ms), rate(pair.short_ms));
                if long > pair.factor && short > pair.factor {
                    let cell = slo.selector.get("cell").map_or("", String::as_str);
                    let service = slo.selector.get("service").map_or("", String::as_str);
                    out.push(Condition {
                        labels: labels(&[
                            ("alertname", alertname),
                            ("severity", pair.severity),
                            ("slo", &slo.name),
                            ("window", pair.window),
                            ("cell", cell),
                            ("service", service),
                        ]),
                        annotations: labels(&[
                            ("summary", &format!("{} {objective} budget burning at {long:.1}× ({})", slo.name, pair.window)),
                            (
                                "description",
                                &format!(
                                    "{objective} burn rate {long:.2}× over {} and {short:.2}× over {}, above {}×: at this pace the {objective} budget of SLO {} is gone early",
                                    pair.window.split('/').next().unwrap_or(""),
                                    pair.window.split('/').nth(1).unwrap_or(""),
                                    pair.factor,
                                    slo.name
                                ),
                            ),
                        ]),
                        for_ms: pair.for_ms,
                        page: cellpilot_core::link::sla_page(&slo.name),
                    });
                }
            }
        }
    }
    for c in &facts.cells {
        let page = cellpilot_core::link::cell_page(&c.cell);
        if c.requests > 0 && c.error_rate > facts.cell_error_rate {
            out.push(Condition {
                labels: labels(&[("alertname", "CellErrorRateHigh"), ("severity", "page"), ("cell", &c.cell)]),
                annotations: labels(&[
                    ("summary", &format!("cell {} error rate {:.2} %", c.cell, c.error_rate * 100.0)),
                    (
                        "description",
                        &format!(
                            "error rate {:.2} % > {:.2} % over {} requests",
                            c.error_rate * 100.0,
                            facts.cell_error_rate * 100.0,
                            c.requests
                        ),
                    ),
                ]),
                for_ms: 0,
                page: page.clone(),
            });
        }
        if c.drained {
            out.push(Condition {
                labels: labels(&[("alertname", "CellDrained"), ("severity", "ticket"), ("cell", &c.cell)]),
                annotations: labels(&[
                    ("summary", &format!("cell {} is drained", c.cell)),
                    ("description", "the policy drained this cell; it will be restored on a ramp once healthy"),
                ]),
                for_ms: 0,
                page: page.clone(),
            });
        }
        if let Some(why) = &c.drain_blocked {
            out.push(Condition {
                labels: labels(&[("alertname", "CellDrainBlocked"), ("severity", "page"), ("cell", &c.cell)]),
                annotations: labels(&[
                    ("summary", &format!("cell {} should be drained but is not", c.cell)),
                    ("description", why),
                ]),
                for_ms: 0,
                page: page.clone(),
            });
        }
        for (slo, cell_sel, threshold) in &facts.latency_thresholds {
            if cell_sel.as_ref().is_some_and(|s| *s != c.cell) {
                continue;
            }
            if let Some(p) = c.p999_5m_ms
                && p > *threshold
            {
                out.push(Condition {
                    labels: labels(&[
                        ("alertname", "LatencyP999High"),
                        ("severity", "ticket"),
                        ("slo", slo),
                        ("cell", &c.cell),
                    ]),
                    annotations: labels(&[
                        ("summary", &format!("cell {} P99.9 {p:.0} ms", c.cell)),
                        ("description", &format!("P99.9 over 5 min {p:.0} ms > {threshold:.0} ms (SLO {slo})")),
                    ]),
                    for_ms: 5 * 60_000,
                    page: page.clone(),
                });
            }
        }
    }
    for c in &facts.cutovers {
        if c.duration_ms > c.target_ms {
            let version = c.version.map(|v| v.to_string()).unwrap_or_default();
            out.push(Condition {
                labels: labels(&[
                    ("alertname", "CutoverSlow"),
                    ("severity", "ticket"),
                    ("cell", &c.cell),
                    ("version", &version),
                ]),
                annotations: labels(&[
                    ("summary", &format!("cut-over of {} took {} ms", c.cell, c.duration_ms)),
                    (
                        "description",
                        &format!("draining {} took {} ms, target {} ms", c.cell, c.duration_ms, c.target_ms),
                    ),
                ]),
                for_ms: 0,
                page: format!("/cells/{}", c.cell),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::burn_rate::PAIRS;
    use cellpilot_core::objective::Kind;

    fn slo(rate_long: (u64, u64), rate_short: (u64, u64)) -> SloFacts {
        let mut w = BTreeMap::new();
        for p in PAIRS {
            w.insert(p.long_ms, Window { bad: rate_long.0, total: rate_long.1 });
            w.insert(p.short_ms, Window { bad: rate_short.0, total: rate_short.1 });
        }
        SloFacts {
            name: "checkout".into(),
            objectives: vec![ObjectiveFacts {
                objective: Objective { kind: Kind::Availability, target: 0.999, threshold_ms: None },
                windows: w,
            }],
            selector: Labels::new(),
        }
    }

    #[test]
    fn both_windows_must_burn() {
        // 2 % errors: 20× — every pair trips.
        let all = conditions(&Facts { slos: vec![slo((20, 1000), (20, 1000))], ..Default::default() });
        assert_eq!(all.len(), 4);
        assert_eq!(all[0].labels["severity"], "page");
        assert_eq!(all[0].labels["window"], "1h/5m");
        assert_eq!(all[0].for_ms, 120_000);
        // A spike that is over in the long window only trips nothing.
        let none = conditions(&Facts { slos: vec![slo((20, 1000), (0, 1000))], ..Default::default() });
        assert!(none.is_empty());
        // 0.7 %: 7× — the 6h/30m page and both tickets, not the fast page.
        let some = conditions(&Facts { slos: vec![slo((7, 1000), (7, 1000))], ..Default::default() });
        assert_eq!(some.iter().map(|c| c.labels["window"].as_str()).collect::<Vec<_>>(), ["6h/30m", "1d/2h", "3d/6h"]);
    }

    #[test]
    fn cell_rules() {
        let facts = Facts {
            cells: vec![
                CellFacts { cell: "a".into(), error_rate: 0.2, requests: 100, drained: true, ..Default::default() },
                CellFacts {
                    cell: "b".into(),
                    error_rate: 0.001,
                    requests: 100,
                    drain_blocked: Some("guard".into()),
                    ..Default::default()
                },
            ],
            cutovers: vec![CutoverFacts { cell: "a".into(), version: Some(3), duration_ms: 900, target_ms: 200 }],
            cell_error_rate: 0.005,
            ..Default::default()
        };
        let names: Vec<_> =
            conditions(&facts).iter().map(|c| format!("{} {}", c.labels["alertname"], c.labels["cell"])).collect();
        assert_eq!(names, ["CellErrorRateHigh a", "CellDrained a", "CellDrainBlocked b", "CutoverSlow a"]);
    }
}
