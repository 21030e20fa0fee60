//! Burn-rate alerting: how fast an objective spends its error budget (the arithmetic is
//! [`cellpilot_core::slo`], shared with the dashboard). A burn rate of 1 spends exactly the
//! budget over the SLO period; the multi-window pairs page at 14.4× (1h/5m) and 6× (6h/30m) and
//! open tickets at 3× (1d/2h) and 1× (3d/6h).

/// One multi-window rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pair {
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
pub(crate) const PAIRS: [Pair; 4] = [
    Pair { severity: "page", window: "1h/5m", long_ms: H, short_ms: 5 * M, factor: 14.4, for_ms: 2 * M },
    Pair { severity: "page", window: "6h/30m", long_ms: 6 * H, short_ms: 30 * M, factor: 6.0, for_ms: 15 * M },
    Pair { severity: "ticket", window: "1d/2h", long_ms: 24 * H, short_ms: 2 * H, factor: 3.0, for_ms: H },
    Pair { severity: "ticket", window: "3d/6h", long_ms: 72 * H, short_ms: 6 * H, factor: 1.0, for_ms: 3 * H },
];

/// Every window length the pairs use, ms.
pub(crate) fn windows() -> Vec<i64> {
    let mut w: Vec<i64> = PAIRS.iter().flat_map(|p| [p.long_ms, p.short_ms]).collect();
    w.sort_unstable();
    w.dedup();
    w
}

#[cfg(test)]
mod tests {
    use super::*;

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
