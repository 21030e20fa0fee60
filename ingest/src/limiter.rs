//! Backpressure: a cap on decoded request bytes inside the pipeline. When the aggregator falls
//! behind, requests pile up against the cap and new ones get the retryable overload answer
//! instead of queueing without bound.

use crate::error::{Error, Result};
use prometheus::IntGauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long overloaded clients are asked to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Shared in-flight byte budget.
#[derive(Debug, Clone)]
pub struct Limiter {
    inflight: Arc<AtomicUsize>,
    capacity: usize,
    gauge: IntGauge,
}

/// Holds part of the budget until dropped.
#[derive(Debug)]
pub struct Permit {
    inflight: Arc<AtomicUsize>,
    bytes: usize,
    capacity: usize,
    gauge: IntGauge,
}

impl Limiter {
    /// A budget of `capacity` bytes, mirrored in `gauge`.
    pub fn new(capacity: usize, gauge: IntGauge) -> Self {
        Self { inflight: Arc::new(AtomicUsize::new(0)), capacity, gauge }
    }

    /// Takes `bytes` of the budget, or answers overloaded. A request larger than the whole
    /// budget is admitted when nothing else is in flight, so no valid request is refused forever.
    pub fn try_acquire(&self, bytes: usize) -> Result<Permit> {
        let mut permit =
            Permit { inflight: self.inflight.clone(), bytes: 0, capacity: self.capacity, gauge: self.gauge.clone() };
        permit.resize(bytes)?;
        Ok(permit)
    }
}

impl Permit {
    /// Makes the permit hold `bytes`: shrinking always works; growing takes the difference
    /// under the same rule as [`Limiter::try_acquire`] (what this permit holds counts as free).
    pub fn resize(&mut self, bytes: usize) -> Result<()> {
        if bytes <= self.bytes {
            let less = self.bytes - bytes;
            self.inflight.fetch_sub(less, Ordering::AcqRel);
            self.gauge.sub(less as i64);
            self.bytes = bytes;
            return Ok(());
        }
        let more = bytes - self.bytes;
        let mut cur = self.inflight.load(Ordering::Relaxed);
        loop {
            let others = cur - self.bytes.min(cur);
            if others > 0 && others.saturating_add(bytes) > self.capacity {
                return Err(Error::Overloaded { retry_after: RETRY_AFTER });
            }
            match self.inflight.compare_exchange_weak(cur, cur + more, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.gauge.add(more as i64);
        self.bytes = bytes;
        Ok(())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inflight.fetch_sub(self.bytes, Ordering::AcqRel);
        self.gauge.sub(self.bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_capacity_and_releases_on_drop() {
        let l = Limiter::new(100, IntGauge::new("g", "g").unwrap());
        let a = l.try_acquire(60).unwrap();
        assert!(matches!(l.try_acquire(60), Err(Error::Overloaded { .. })));
        let b = l.try_acquire(40).unwrap();
        drop(a);
        drop(b);
        let big = l.try_acquire(500).unwrap();
        assert!(l.try_acquire(1).is_err());
        drop(big);
        assert!(l.try_acquire(1).is_ok());
    }

    #[test]
    fn a_permit_grows_within_capacity_and_shrinks_freely() {
        let g = IntGauge::new("g", "g").unwrap();
        let l = Limiter::new(100, g.clone());
        let mut a = l.try_acquire(70).unwrap();
        a.resize(20).unwrap();
        let b = l.try_acquire(50).unwrap();
        assert!(matches!(a.resize(60), Err(Error::Overloaded { .. })), "50 + 60 > 100");
        a.resize(50).unwrap();
        assert_eq!(g.get(), 100);
        drop(b);
        a.resize(500).unwrap();
        drop(a);
        assert_eq!(g.get(), 0);
    }
}
