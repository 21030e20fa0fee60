//! Attribution against a hand-computed fixture: one incident on cell b, a cause mix, a slow
//! cut-over. Every expected figure is worked out in the comments.

use cellpilot_core::config::{DashboardsConfig, Dur, Selector, SloConfig};
use cellpilot_core::latency::{Quantiles, SparseHistogram};
use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};
use cellpilot_core::store::{RollupSink, WindowBatches};
use cellpilot_dashboards::{Drain, Report, ReportRequest, ReportSettings, summary};
use cellpilot_query::files::Table;
use cellpilot_query::tier::Tier;
use cellpilot_query::{RollupStore, StoreSettings};

/// The histogram of `n` failed requests, all 20 ms (the fixtures' failures are fast).
fn failed(n: u64) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let mut h = SparseHistogram::default();
    h.record_n(20_000, n);
    h.serialize()
}

fn row<'a>(requests: u64, errors: u64, hist: &'a [u8], failed: &'a [u8], quantiles: Quantiles) -> RollupValues<'a> {
    RollupValues { requests, errors, hist, error_hist: Some(failed), quantiles, exact: true }
}

/// The report with default `[dashboards]` settings and a 5 % drain threshold.
fn report(
    store: &RollupStore,
    slo: &SloConfig,
    drains: &[Drain],
    from_ms: i64,
    to_ms: i64,
    now_ms: i64,
) -> cellpilot_query::Result<Report> {
    let settings = ReportSettings::new(&DashboardsConfig::default(), 0.05);
    cellpilot_dashboards::report(&ReportRequest { store, slo, settings, drains, from_ms, to_ms, now_ms })
}

/// An hour boundary.
const T: i64 = 1_800_000_000_000;

/// An empty store that keeps every tier forever.
fn store() -> (tempfile::TempDir, RollupStore) {
    let dir = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        storage: std::sync::Arc::new(cellpilot_query::storage::Storage::local(dir.path())),
        fine_ms: 10_000,
        lateness_ms: 30_000,
        retention_ms: [i64::MAX / 4; 3],
    };
    let store = RollupStore::open(settings).unwrap();
    (dir, store)
}

#[test]
fn hand_computed_fixture() {
    let (dir, store) = store();
    // 10 minutes of 10 s windows; cells a and b; routes r1 and r2; 100 requests per row, all 20 ms.
    // b/r1 fails 50 of 100 in windows 18..=31 (T+180 s .. T+320 s): 14 × 50 = 700 errors, cause 5xx.
    // a/r2 fails 1 per window: 60 errors, cause timeout. Bad total 760 of 24,000 requests.
    // a/r1 is slow in windows 40..=45 (T+400 s .. T+450 s): 10 of its 100 requests take 500 ms,
    // none fail: 60 bad for the latency objective (threshold 100 ms).
    let mut rollups = RollupsBuilder::default();
    let mut causes = ErrorsByCauseBuilder::default();
    let mut h = SparseHistogram::default();
    h.record_n(20_000, 100);
    let mut slow = SparseHistogram::default();
    slow.record_n(20_000, 90);
    slow.record_n(500_000, 10);
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
                let hist = if (cell, route) == ("a", "r1") && (40..=45).contains(&w) { &slow } else { &h };
                rollups.push(key, row(100, errors, &hist.serialize(), &failed(errors), hist.quantiles()));
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
    let r = report(&store, &slo, &drains, T, T + 600_000, T + 600_000).unwrap();

    assert_eq!(r.requests, 24_000);
    let a = &r.availability.standing;
    assert_eq!(a.bad_events, 760);
    assert!((a.observed - (1.0 - 760.0 / 24_000.0)).abs() < 1e-12);
    assert!((a.gap - (0.99 - (1.0 - 760.0 / 24_000.0))).abs() < 1e-12);
    assert!((a.budget - 240.0).abs() < 1e-9, "1 % of 24,000");
    assert!((a.budget_spent - 760.0 / 240.0).abs() < 1e-9);
    assert!((a.budget_left - (1.0 - 760.0 / 240.0)).abs() < 1e-9);
    let a = &r.availability;
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
    // Latency: 60 slow of 24,000; budget 0.1 % = 24, so 2.5× spent.
    let l = r.latency.as_ref().unwrap();
    assert_eq!((l.standing.bad_events, l.standing.threshold_ms), (60, Some(100.0)));
    assert!((l.standing.budget_spent - 60.0 / 24.0).abs() < 1e-9);
    assert_eq!(keys(&l.attribution.cell), [("a".to_string(), 60)]);
    assert_eq!(keys(&l.attribution.route), [("r1".to_string(), 60)]);
    assert!(l.attribution.cause.is_none());
    // Minute 6 (windows 36..=41) has 20 slow of 2,400: 0.83 % = 8.3× the 0.1 % budget — below 10×.
    // Minute 7 (windows 42..=47) has 40: 16.7× — one incident on a, T+420 s .. T+480 s, 40 bad.
    assert_eq!(l.attribution.incident.len(), 1);
    let inc = &l.attribution.incident[0];
    assert_eq!((inc.cell.as_str(), inc.bad_events), ("a", 40));
    assert_eq!(inc.from, cellpilot_core::time::format_rfc3339_ms(T + 420_000));
    assert_eq!(inc.to, cellpilot_core::time::format_rfc3339_ms(T + 480_000));
    assert!((inc.share - 40.0 / 60.0).abs() < 1e-12);
    // Drained b was never slow.
    assert_eq!(l.attribution.cutover[0].bad_events, 0);
    assert_eq!((r.cutover.count, r.cutover.max_ms, r.cutover.over_target), (1, Some(18_000), 1));
    // Three hours later the same incident and cut-over are still measured to the minute (the
    // finest tier is kept for 48 h), not smeared over hourly rows.
    let later = report(&store, &slo, &drains, T, T + 3 * 3_600_000, T + 3 * 3_600_000).unwrap();
    assert_eq!(later.availability.standing.bad_events, 760);
    assert_eq!(later.latency.as_ref().unwrap().standing.bad_events, 60);
    assert_eq!(later.latency.as_ref().unwrap().attribution.incident[0].bad_events, 40);
    assert_eq!(later.availability.attribution.incident[0].bad_events, 612);
    let c = &later.availability.attribution.cutover[0];
    assert_eq!((c.bad_events, c.avoidable_at_target), (700, 50));
    // Once the rows are in Parquet files, whole files are summed per file and remembered: the
    // same report, read from files, then from the remembered sums.
    store.close(T + 3 * 3_600_000, &mut || Ok(None)).unwrap();
    assert!(!cellpilot_query::files::list(dir.path(), Table::Rollups, Tier::Fine).unwrap().is_empty());
    for _ in 0..2 {
        let from_files = report(&store, &slo, &drains, T, T + 3 * 3_600_000, T + 3 * 3_600_000).unwrap();
        assert_eq!(from_files, later);
    }
    // The SLO cards' summary reads the same numbers (through the hourly tier here).
    let sum = summary(&store, &slo, T, T + 3 * 3_600_000, T + 3 * 3_600_000, true).unwrap();
    assert_eq!(sum.requests, 24_000);
    assert_eq!(sum.availability, later.availability.standing);
    assert_eq!(sum.latency.as_ref(), Some(&later.latency.as_ref().unwrap().standing));
    // Burn rates: the last hour of T..T+3 h saw nothing; the last 6 hours are the whole range.
    assert_eq!(sum.availability.burn_rate_1h, 0.0);
    assert!((sum.availability.burn_rate_6h - (760.0 / 24_000.0) / 0.01).abs() < 1e-9);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["availability"]["bad_events"], 760, "numbers sit beside the attribution");
    assert!(json["availability"]["attribution"]["cause"].is_array());
    assert!(json["latency"]["attribution"].get("cause").is_none(), "no cause split for latency");
}

/// A drain after 40 minutes of failures: the onset is found however far back the run of failing
/// windows goes, and windows before it are not the cut-over's.
#[test]
fn failure_onset_far_before_the_drain() {
    let (_dir, store) = store();
    // One hour of windows on cell c: 10 errors of 100 in windows 30..270 (T+5 min .. T+45 min),
    // 1 error in window 20 (under the 5 % drain threshold, so not part of the run).
    let mut rollups = RollupsBuilder::default();
    let mut h = SparseHistogram::default();
    h.record_n(20_000, 100);
    for w in 0..360i64 {
        let ws = T + w * 10_000;
        let errors = match w {
            30..270 => 10,
            20 => 1,
            _ => 0,
        };
        let key = RowKey { window_start_ms: ws, window_end_ms: ws + 10_000, cell: "c", service: "s", route: "r" };
        rollups.push(key, row(100, errors, &h.serialize(), &failed(errors), h.quantiles()));
    }
    store.add_closed(WindowBatches {
        rollups: rollups.finish().unwrap(),
        errors_by_cause: ErrorsByCauseBuilder::default().finish().unwrap(),
    });
    let slo = SloConfig {
        name: "c".into(),
        availability: 0.99,
        latency_p999_ms: None,
        cutover_ms: Some(1_000),
        period: Dur::days(30),
        selector: Selector::default(),
    };
    // Decided at T+45 min, done 25 s later (windows 270.. have no errors).
    let drains = [Drain {
        cell: "c".into(),
        version: Some(3),
        decided_at_ms: T + 2_700_000,
        completed_at_ms: Some(T + 2_725_000),
        duration_ms: Some(25_000),
    }];
    let end = T + 3_600_000;
    let r = report(&store, &slo, &drains, T, end, end).unwrap();
    assert_eq!(r.availability.standing.bad_events, 240 * 10 + 1);
    let c = &r.availability.attribution.cutover[0];
    // 240 failing windows × 10, none of them after decided + 1 s.
    assert_eq!((c.bad_events, c.avoidable_at_target), (2_400, 0));
    assert!(r.latency.is_none());
}
