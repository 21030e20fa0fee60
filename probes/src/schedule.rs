//! The one scheduler: each target every `interval`, first starts spread evenly over the
//! interval, a target never overlapping itself, at most `max_concurrent` probes in flight, each
//! ended by its timeout. Results go to [`Probes`]; a probe never waits on a reader.

use crate::Probes;
use crate::kinds;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Runs `probes`' targets until `stop` resolves.
pub(crate) async fn run(probes: Arc<Probes>, stop: impl Future<Output = ()> + Send) {
    let n = probes.targets.len();
    if n == 0 {
        stop.await;
        return;
    }
    let Ok(http) = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A new connection each probe, as blackbox_exporter does: a pooled one would hide a
        // listener that stopped accepting.
        .pool_max_idle_per_host(0)
        .build()
    else {
        tracing::error!("the HTTP client of the probes could not be built; no probes run");
        stop.await;
        return;
    };
    let (interval, timeout) = (probes.interval, probes.timeout);
    let start = cellpilot_core::clock::monotonic();
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> =
        (0..n).map(|i| Reverse((start + spread(interval, i, n), i))).collect();
    let mut in_flight = vec![false; n];
    let slots = Arc::new(Semaphore::new(probes.max_concurrent));
    let mut running: JoinSet<(usize, Duration, kinds::Outcome)> = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let next = due.peek().map(|Reverse((at, _))| *at).unwrap_or(start);
        tokio::select! {
            () = &mut stop => break,
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok((i, late, outcome)) = done {
                    in_flight[i] = false;
                    probes.record(i, late, outcome);
                }
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {
                let now = cellpilot_core::clock::monotonic();
                while let Some(Reverse((at, i))) = due.peek().copied() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    due.push(Reverse((at + interval, i)));
                    if in_flight[i] {
                        // Its last probe still holds a slot (the timeout bounds it): skip a turn.
                        probes.skipped(i);
                        continue;
                    }
                    in_flight[i] = true;
                    let (target, http, slots) = (probes.targets[i].clone(), http.clone(), slots.clone());
                    running.spawn(async move {
                        let slot = slots.acquire_owned().await;
                        // How late it starts: the schedule's measure (`bench probes`).
                        let late = cellpilot_core::clock::monotonic().saturating_duration_since(at);
                        let outcome = match slot {
                            Ok(_slot) => kinds::probe(&target, &http, timeout).await,
                            Err(_) => kinds::Outcome::failed("the prober is stopping"),
                        };
                        (i, late, outcome)
                    });
                }
            }
        }
    }
    running.shutdown().await;
}

/// Target `i` of `n` first starts this far into the interval.
fn spread(interval: Duration, i: usize, n: usize) -> Duration {
    interval.mul_f64(i as f64 / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_starts_are_spread_over_the_interval() {
        let i = Duration::from_secs(5);
        assert_eq!(spread(i, 0, 4), Duration::ZERO);
        assert_eq!(spread(i, 2, 4), Duration::from_millis(2500));
        assert!(spread(i, 9_999, 10_000) < i);
    }
}
