//! Where the process reads time. Wall time (timestamps, windows, every decision) comes from an
//! injected [`Clock`]: production reads the system time, tests and replays move a [`TestClock`]
//! by hand. Elapsed time (timeouts, back-off, measured durations) comes from [`monotonic`].
//! clippy bans `SystemTime::now` and `Instant::now` everywhere else.

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

    /// Current time as a [`SystemTime`], to compare with times others wrote (object stores).
    fn now_system(&self) -> SystemTime {
        let ns = self.now_ns();
        match u64::try_from(ns) {
            Ok(ns) => UNIX_EPOCH + std::time::Duration::from_nanos(ns),
            Err(_) => UNIX_EPOCH - std::time::Duration::from_nanos(ns.unsigned_abs()),
        }
    }
}

/// The monotonic clock, for timeouts, back-off and measured durations: never for what the
/// product decides or records, which reads a [`Clock`].
#[allow(clippy::disallowed_methods)]
pub fn monotonic() -> std::time::Instant {
    std::time::Instant::now()
}

/// The shared clock handle passed around the process.
pub type SharedClock = Arc<dyn Clock>;

/// The system's real-time clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
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
