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
        let mut cur = self.inflight.load(Ordering::Relaxed);
        loop {
            if cur > 0 && cur.saturating_add(bytes) > self.capacity {
                return Err(Error::Overloaded { retry_after: RETRY_AFTER });
            }
            match self.inflight.compare_exchange_weak(cur, cur + bytes, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.gauge.add(bytes as i64);
        Ok(Permit { inflight: self.inflight.clone(), bytes, gauge: self.gauge.clone() })
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
}
