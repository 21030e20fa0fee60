//! Inputs the unit tests share.

use crate::policy::CellInput;

/// A cell with `requests` and `errors` over the trailing window, a third of each in the latest.
pub(crate) fn input(cell: &str, requests: u64, errors: u64) -> CellInput {
    CellInput {
        cell: cell.into(),
        requests,
        errors,
        latest_requests: requests / 3,
        latest_errors: errors / 3,
        p50_ms: Some(20.0),
    }
}
