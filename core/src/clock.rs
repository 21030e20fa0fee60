//! An injectable wall clock: production reads the system time, tests move a [`TestClock`] by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of "now" in unix nanoseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Current time as nanoseconds since the unix epoch.
    fn now_ns(&self) -> i64;

    /// Current time as milliseconds since the unix epoch.
    fn now_ms(&self) -> i64 {
        self.now_ns().div_euclid(1_000_000)
    }
}

/// The shared clock handle passed around the process.
pub type SharedClock = Arc<dyn Clock>;

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone, Default)]
pub struct TestClock {
    now: Arc<AtomicI64>,
}

impl TestClock {
    /// A clock standing at `now_ns`.
    pub fn new(now_ns: i64) -> Self {
        Self { now: Arc::new(AtomicI64::new(now_ns)) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: std::time::Duration) {
        let ns = i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        self.now.fetch_add(ns, Ordering::SeqCst);
    }

    /// Sets the clock to `now_ns`.
    pub fn set(&self, now_ns: i64) {
        self.now.store(now_ns, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now_ns(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }
}
