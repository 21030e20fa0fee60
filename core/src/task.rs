//! Background work the process runs: periodic ticks that end on a stop signal, blocking calls
//! moved off the async workers, and [`Pool`]s, runtimes of their own that keep one kind of work
//! (OTLP decoding, SQL, object-store requests) from taking the threads of the rest. clippy bans
//! bare `tokio::task::spawn_blocking` elsewhere, so a missed tick, a stop and a panic are
//! handled one way everywhere.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Interval, MissedTickBehavior};

/// A stop signal, polled alongside other waits: once it resolved, every wait ends at once.
pub struct Stop<'a> {
    signal: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    stopped: bool,
}

impl<'a> Stop<'a> {
    /// Stops once `signal` resolves.
    pub fn new(signal: impl Future<Output = ()> + Send + 'a) -> Self {
        Self { signal: Box::pin(signal), stopped: false }
    }

    /// Waits for `f`: `Some` of what it returns, or `None` once the stop signal resolved.
    pub async fn wait<T>(&mut self, f: impl Future<Output = T>) -> Option<T> {
        if self.stopped {
            return None;
        }
        tokio::select! {
            biased;
            _ = &mut self.signal => {
                self.stopped = true;
                None
            }
            out = f => Some(out),
        }
    }

    /// Sleeps `d` unless the stop signal resolves first: `true` when the sleep ran out.
    pub async fn sleep(&mut self, d: Duration) -> bool {
        self.wait(tokio::time::sleep(d)).await.is_some()
    }
}

impl std::fmt::Debug for Stop<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stop").field("stopped", &self.stopped).finish_non_exhaustive()
    }
}

/// A tick every `period` until a stop signal: `while every.tick().await { ... }`. The first tick
/// is at once; a tick that overruns delays the next rather than bunching them up.
#[derive(Debug)]
pub struct Every<'a> {
    interval: Interval,
    stop: Stop<'a>,
}

impl<'a> Every<'a> {
    /// Ticks every `period` (at least 1 ms) until `stop` resolves.
    pub fn new(period: Duration, stop: impl Future<Output = ()> + Send + 'a) -> Self {
        let mut interval = tokio::time::interval(period.max(Duration::from_millis(1)));
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, stop: Stop::new(stop) }
    }

    /// Waits for the next tick: `true`, or `false` once the stop signal resolved.
    pub async fn tick(&mut self) -> bool {
        self.stop.wait(self.interval.tick()).await.is_some()
    }
}

/// A blocking call that did not return: it panicked, or the runtime shut down under it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(String);

/// Runs `f` on the runtime's blocking pool and waits for what it returns.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Interrupted> {
    #[allow(clippy::disallowed_methods)]
    let handle = tokio::task::spawn_blocking(f);
    handle.await.map_err(interrupted)
}

fn interrupted(e: tokio::task::JoinError) -> Interrupted {
    match e.try_into_panic() {
        Ok(p) => Interrupted(format!("panicked: {}", panic_message(p.as_ref()))),
        Err(e) => Interrupted(e.to_string()),
    }
}

/// A runtime of its own for one kind of work: named threads, and a drop that shuts it down
/// without blocking (a pool may be dropped on an async worker of another runtime).
#[derive(Debug)]
pub struct Pool {
    /// Always `Some` until drop.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Pool {
    /// `workers` threads named `name` (and at most `max_blocking` blocking threads, when given),
    /// with timers and I/O.
    pub fn new(name: &str, workers: usize, max_blocking: Option<usize>) -> std::io::Result<Self> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers.max(1)).thread_name(name).enable_all();
        if let Some(n) = max_blocking {
            builder.max_blocking_threads(n.max(1));
        }
        Ok(Self { runtime: Some(builder.build()?) })
    }

    /// Runs `fut` on the pool; the returned future (owned by whoever awaits it) ends with it.
    pub fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> impl Future<Output = Result<T, Interrupted>> + Send + 'static {
        let handle = self.runtime.as_ref().map(|rt| rt.spawn(fut));
        async move {
            let handle = handle.ok_or_else(|| Interrupted("the pool has shut down".into()))?;
            handle.await.map_err(interrupted)
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_until_stopped() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut every = Every::new(Duration::from_secs(10), async move {
            let _ = rx.await;
        });
        let mut ticks = 0;
        while every.tick().await {
            ticks += 1;
            if ticks == 3 {
                let _ = tx.send(());
                break;
            }
        }
        assert_eq!(ticks, 3);
        assert!(!every.tick().await, "a stopped ticker never ticks again");
        assert!(!every.tick().await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_sleeps() {
        let mut running = Stop::new(std::future::pending());
        assert!(running.sleep(Duration::from_secs(3600)).await, "paused time runs the hour out at once");
        let mut stopped = Stop::new(async {});
        assert!(!stopped.sleep(Duration::from_secs(1)).await);
        assert_eq!(stopped.wait(async { 1 }).await, None, "and stays stopped");
    }

    #[test]
    fn a_pool_runs_work_and_reports_panics() {
        let pool = Pool::new("test-pool", 1, None).unwrap();
        let name = wait(pool.run(async { std::thread::current().name().map(str::to_string) }));
        assert_eq!(name.unwrap().as_deref(), Some("test-pool"));
        let ran: Result<(), _> = wait(pool.run(async { panic!("out of cheese") }));
        let e = ran.unwrap_err();
        assert_eq!(e.to_string(), "panicked: out of cheese");
    }

    /// Waits for `f` on a runtime of the test's own.
    fn wait<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[tokio::test]
    async fn blocking_returns_values_and_names_panics() {
        assert_eq!(blocking(|| 6 * 7).await.unwrap(), 42);
        let e = blocking(|| -> u8 { panic!("the disk is on fire") }).await.unwrap_err();
        assert_eq!(e.to_string(), "panicked: the disk is on fire");
    }
}
