//! Attribution against a hand-computed fixture: one incident on cell b, a cause mix, a slow
//! cut-over. Every expected figure is worked out in the comments.

use cellpilot_core::config::{DashboardsConfig, Dur, Selector, SloConfig};
use cellpilot_core::latency::SparseHistogram;
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupsBuilder, RowKey};
use cellpilot_core::store::WindowBatches;
use cellpilot_dashboards::{Drain, report};
use cellpilot_query::{RollupStore, StoreSettings};

/// An hour boundary.
const T: i64 = 1_800_000_000_000;

#[test]
fn hand_computed_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let store = RollupStore::open(StoreSettings {
        dir: dir.path().to_path_buf(),
        fine_ms: 10_000,
        lateness_ms: 30_000,
        retention_ms: [i64::MAX / 4; 3],
    })
    .unwrap();
    // 10 minutes of 10 s windows; cells a and b; routes r1 and r2; 100 requests per row, all 20 ms.
    // b/r1 fails 50 of 100 in windows 18..=31 (T+180 s .. T+320 s): 14 × 50 = 700 errors, cause 5xx.
    // a/r2 fails 1 per window: 60 errors, cause timeout. Bad total 760 of 24,000 requests.
    let mut rollups = RollupsBuilder::default();
    let mut causes = ErrorsByCauseBuilder::default();
    let mut h = SparseHistogram::default();
    h.record_n(20_000, 100);
    for w in 0..60i64 {
        let ws = T + w * 10_000;
        for cell in ["a", "b"] {
            for route in ["r1", "r2"] {
                let errors = match (cell, route) {
                    ("b", "r1") if (18..=31).contains(&w) => 50,
                    ("a", "r2") => 1,
                    _ => 0,
                };
                let key = RowKey { window_start_ms: ws, window_end_ms: ws + 10_000, cell, service: "s1", route };
                rollups.push(key, 100, errors, &h.serialize(), h.quantiles(), true);
                if errors > 0 {
                    causes.push(key, if cell == "b" { "5xx" } else { "timeout" }, errors);
                }
            }
        }
    }
    store.add_closed(WindowBatches { rollups: rollups.finish().unwrap(), errors_by_cause: causes.finish().unwrap() });
    let slo = SloConfig {
        name: "shop".into(),
        availability: 0.99,
        latency_p999_ms: Some(100.0),
        cutover_ms: Some(1_000),
        period: Dur::days(30),
        selector: Selector::default(),
    };
    // b drained at T+300 s, its last request started at T+318 s.
    let drains = [Drain {
        cell: "b".into(),
        version: Some(7),
        decided_at_ms: T + 300_000,
        completed_at_ms: Some(T + 318_000),
        duration_ms: Some(18_000),
    }];
    let r = report(&store, &slo, &DashboardsConfig::default(), 0.05, &drains, T, T + 600_000, T + 600_000).unwrap();

    assert_eq!(r.requests, 24_000);
    let a = &r.availability;
    assert_eq!(a.bad_events, 760);
    assert!((a.observed - (1.0 - 760.0 / 24_000.0)).abs() < 1e-12);
    assert!((a.gap - (0.99 - (1.0 - 760.0 / 24_000.0))).abs() < 1e-12);
    assert!((a.budget - 240.0).abs() < 1e-9, "1 % of 24,000");
    assert!((a.budget_spent - 760.0 / 240.0).abs() < 1e-9);
    assert!((a.budget_left - (1.0 - 760.0 / 240.0)).abs() < 1e-9);
    let keys = |v: &[cellpilot_dashboards::attribution::Share]| {
        v.iter().map(|s| (s.key.clone(), s.bad_events)).collect::<Vec<_>>()
    };
    assert_eq!(keys(&a.attribution.cell), [("b".to_string(), 700), ("a".to_string(), 60)]);
    assert_eq!(keys(&a.attribution.route), [("r1".to_string(), 700), ("r2".to_string(), 60)]);
    assert_eq!(keys(&a.attribution.service), [("s1".to_string(), 760)]);
    assert_eq!(keys(a.attribution.cause.as_ref().unwrap()), [("5xx".to_string(), 700), ("timeout".to_string(), 60)]);
    for list in [&a.attribution.cell, &a.attribution.route, a.attribution.cause.as_ref().unwrap()] {
        assert!((list.iter().map(|s| s.share).sum::<f64>() - 1.0).abs() < 1e-12, "each split sums to 100 %");
    }
    // Minutes 3 and 4: 6 windows × 50 + 6 × 1 = 306 bad of 2,400 each = 12.75 % = 12.75× > 10×.
    // Minute 5 (windows 30, 31 fail): 106 of 2,400 = 4.4× — below, so one incident, 612 bad.
    assert_eq!(a.attribution.incident.len(), 1);
    let inc = &a.attribution.incident[0];
    assert_eq!((inc.cell.as_str(), inc.bad_events), ("b", 612));
    assert_eq!(inc.from, cellpilot_core::time::format_rfc3339_ms(T + 180_000));
    assert_eq!(inc.to, cellpilot_core::time::format_rfc3339_ms(T + 300_000));
    // Failure onset: window 18 (T+180 s); to completion (T+318 s): windows 18..=31 → 700 bad.
    // On target (T+300 s + 1 s) only window 31 (T+310 s) would have been avoided: 50.
    let c = &a.attribution.cutover[0];
    assert_eq!((c.key.as_str(), c.bad_events, c.avoidable_at_target), ("b v7", 700, 50));
    assert!((c.share - 700.0 / 760.0).abs() < 1e-12);
    // Every request took 20 ms: nothing is bad for the latency objective.
    let l = r.latency.as_ref().unwrap();
    assert_eq!((l.bad_events, l.threshold_ms), (0, Some(100.0)));
    assert!(l.gap < 0.0, "met: gap is negative");
    assert_eq!((r.cutover.count, r.cutover.max_ms, r.cutover.over_target), (1, Some(18_000), 1));
    // Three hours later the same incident and cut-over are still measured to the minute (the
    // finest tier is kept for 48 h), not smeared over hourly rows.
    let later =
        report(&store, &slo, &DashboardsConfig::default(), 0.05, &drains, T, T + 3 * 3_600_000, T + 3 * 3_600_000)
            .unwrap();
    assert_eq!(later.availability.bad_events, 760);
    assert_eq!(later.availability.attribution.incident[0].bad_events, 612);
    let c = &later.availability.attribution.cutover[0];
    assert_eq!((c.bad_events, c.avoidable_at_target), (700, 50));
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["availability"]["attribution"]["cause"].is_array());
    assert!(json["latency"]["attribution"].get("cause").is_none(), "no cause split for latency");
}
