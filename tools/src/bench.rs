//! `cellpilot bench ...`: measurements that print ratios against a baseline run in the same
//! process, so figures from a noisy shared machine stay comparable.

pub mod cluster;
pub mod control;
pub mod e2e;
pub mod ingest;
pub mod markdown;
pub mod query;
pub mod sustained;
pub mod web;

/// Median of `xs` (sorted in place); 0 for an empty slice.
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}
