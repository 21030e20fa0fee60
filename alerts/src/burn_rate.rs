//! Burn rates: how fast an objective spends its error budget. A burn rate of 1 spends exactly the
//! budget over the SLO period; the multi-window pairs page at 14.4× (1h/5m) and 6× (6h/30m) and
//! open tickets at 3× (1d/2h) and 1× (3d/6h).

/// One multi-window rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// `page` or `ticket`.
    pub severity: &'static str,
    /// The `window` label, e.g. `1h/5m`.
    pub window: &'static str,
    /// Long window, ms.
    pub long_ms: i64,
    /// Short window, ms.
    pub short_ms: i64,
    /// Burn rate both windows must exceed.
    pub factor: f64,
    /// How long it must hold before firing, ms.
    pub for_ms: i64,
}

const M: i64 = 60_000;
const H: i64 = 60 * M;

/// The spec's four pairs.
pub const PAIRS: [Pair; 4] = [
    Pair { severity: "page", window: "1h/5m", long_ms: H, short_ms: 5 * M, factor: 14.4, for_ms: 2 * M },
    Pair { severity: "page", window: "6h/30m", long_ms: 6 * H, short_ms: 30 * M, factor: 6.0, for_ms: 15 * M },
    Pair { severity: "ticket", window: "1d/2h", long_ms: 24 * H, short_ms: 2 * H, factor: 3.0, for_ms: H },
    Pair { severity: "ticket", window: "3d/6h", long_ms: 72 * H, short_ms: 6 * H, factor: 1.0, for_ms: 3 * H },
];

/// Every window length the pairs use, ms.
pub fn windows() -> Vec<i64> {
    let mut w: Vec<i64> = PAIRS.iter().flat_map(|p| [p.long_ms, p.short_ms]).collect();
    w.sort_unstable();
    w.dedup();
    w
}

/// bad/total over the budget fraction (1 − target); 0 without traffic.
pub fn burn_rate(bad: u64, total: u64, target: f64) -> f64 {
    let budget = 1.0 - target;
    if total == 0 || budget <= 0.0 { 0.0 } else { (bad as f64 / total as f64) / budget }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_burn_rates() {
        // 0.1 % errors against a 99.9 % SLO spends the budget exactly: burn rate 1.
        assert!((burn_rate(1, 1000, 0.999) - 1.0).abs() < 1e-9);
        // 1.44 % errors against 99.9 %: 14.4×, the fast page threshold.
        assert!((burn_rate(144, 10_000, 0.999) - 14.4).abs() < 1e-9);
        assert_eq!(burn_rate(5, 0, 0.999), 0.0);
        // 0.5 % against 99.95 %: 10×.
        assert!((burn_rate(5, 1000, 0.9995) - 10.0).abs() < 1e-6);
    }

    #[test]
    fn which_pairs_a_burn_rate_trips() {
        let trips = |b: f64| PAIRS.iter().filter(|p| b > p.factor).map(|p| p.window).collect::<Vec<_>>();
        assert_eq!(trips(15.0), ["1h/5m", "6h/30m", "1d/2h", "3d/6h"]);
        assert_eq!(trips(6.5), ["6h/30m", "1d/2h", "3d/6h"]);
        assert_eq!(trips(3.5), ["1d/2h", "3d/6h"]);
        assert_eq!(trips(1.5), ["3d/6h"]);
        assert!(trips(0.9).is_empty());
        assert_eq!(windows().len(), 7, "6h serves two pairs");
    }
}
