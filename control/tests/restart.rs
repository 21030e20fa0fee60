//! A restart in the middle of a cut-over: the drain's cut-over is still measured afterwards (its
//! completion from the requests seen since; when gateways applied it is unknown), once.

use cellpilot_control::Controller;
use cellpilot_control::policy::CellInput;
use cellpilot_core::clock::{SharedClock, TestClock};
use cellpilot_core::config::ControlConfig;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::store::CellActivity;
use std::sync::Arc;

const T: i64 = 1_800_000_000_000;

fn input(cell: &str, requests: u64, errors: u64) -> CellInput {
    CellInput {
        cell: cell.into(),
        requests,
        errors,
        latest_requests: requests / 3,
        latest_errors: errors / 3,
        p50_ms: Some(20.0),
    }
}

/// The last request on cell `a` started at `.0` and arrived at `.1`.
#[derive(Debug)]
struct LastRequest(i64, i64);

impl CellActivity for LastRequest {
    fn latest_request(&self, cell: &str) -> Option<(i64, i64)> {
        (cell == "a").then_some((self.0, self.1))
    }
}

fn open(dir: &std::path::Path) -> Controller {
    let clock: SharedClock = Arc::new(TestClock::new(T * 1_000_000));
    Controller::open(&ControlConfig::default(), dir, clock, Metrics::new()).unwrap()
}

#[test]
fn a_cutover_in_flight_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let drained_at = T + 20_000;
    let version = {
        let c = open(dir.path());
        c.evaluate(T, &[input("a", 1000, 0), input("b", 1000, 0), input("c", 1000, 0)]);
        let d = c.evaluate(drained_at, &[input("a", 18_000, 900), input("b", 1000, 0), input("c", 1000, 0)]);
        assert_eq!(d.len(), 1, "a is drained");
        d[0].version
        // The process stops before the cut-over finishes.
    };
    let c = open(dir.path());
    let pending = c.cutovers();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].cell.as_str(), pending[0].decision_version), ("a", Some(version)));
    assert_eq!((pending[0].applied_at_ms, pending[0].completed_at_ms), (None, None));
    // Requests kept reaching a for 1.5 s after the drain; 5 s of quiet later it is final.
    let activity = LastRequest(drained_at + 1_500, drained_at + 1_600);
    c.finish_cutovers(drained_at + 3_000, &activity);
    assert_eq!(c.cutovers()[0].completed_at_ms, None, "not quiet long enough yet");
    c.finish_cutovers(drained_at + 7_000, &activity);
    let done = c.cutovers();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].completed_at_ms, done[0].duration_ms), (Some(drained_at + 1_500), Some(1_500)));
    assert_eq!(done[0].applied_at_ms, None, "which gateways applied it was lost with the process");
    drop(c);
    // Finished and logged: another restart neither resumes nor repeats it.
    let c = open(dir.path());
    assert_eq!(c.cutovers(), done);
}
