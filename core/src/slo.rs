//! SLO arithmetic the alerts and the dashboard share (the objectives themselves are
//! [`crate::objective`]), so an SLO card and a burn-rate alert read
//! the same counts the same way and can never disagree.

/// How fast `bad` of `total` events spend the budget of `target`: bad/total over the budget
/// fraction (1 − target). 1 spends exactly the budget over the SLO period; 0 without traffic.
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
        assert_eq!(burn_rate(5, 10, 1.0), 0.0);
        // 0.5 % against 99.95 %: 10×.
        assert!((burn_rate(5, 1000, 0.9995) - 10.0).abs() < 1e-6);
    }
}
