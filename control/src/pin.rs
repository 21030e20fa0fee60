//! Operator pins (`POST /api/v1/cells/{cell}/override`): what a pin may ask for. Pins reach every
//! gateway's table and the decision log, so names and reasons stay short and no pin outlives a
//! month.

use std::time::Duration;
use thiserror::Error;

/// Pin length when the request names none.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// Longest pin: a forgotten pin should not outlive a month.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// Longest reason, in bytes.
pub(crate) const MAX_REASON: usize = 1024;

/// A pin (or, with no weight, an unpin) as an operator asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PinRequest {
    /// The cell.
    pub cell: String,
    /// The weight to hold; `None` removes the pin.
    pub weight: Option<u32>,
    /// How long; `DEFAULT_TTL` when absent.
    pub ttl: Option<Duration>,
    /// Why, recorded in the decision.
    pub reason: String,
}

/// Why a pin request was refused; each message names the field.
#[derive(Debug, Error, PartialEq)]
pub enum PinError {
    /// `ttl` outside 1 ms ..= `MAX_TTL`.
    #[error("`ttl` must be between 1ms and 30d")]
    Ttl,
    /// `reason` over `MAX_REASON` bytes.
    #[error("`reason` is longer than {MAX_REASON} bytes")]
    Reason,
    /// The cell name is empty or longer than names may be.
    #[error("the cell name must be 1 to {0} bytes (ingest.max_attribute_length)")]
    Cell(usize),
    /// A weight over `[control] max_weight`.
    #[error("`weight` must be at most {0} (control.max_weight)")]
    Weight(u32),
    /// A cell nobody knows: not configured, not seen by ingest, not in an xDS cluster.
    #[error("cell `{0}` is unknown: not in [control.cells] or [[xds.clusters]], and ingest has not seen it")]
    UnknownCell(String),
    /// In a cluster, another node decides weights: pin there.
    #[error("this node does not decide weights; pin on the leading node ({0})")]
    NotLeader(String),
    /// The pin's version could not be recorded for the cluster; nothing changed.
    #[error("the pin could not be recorded for the cluster, nothing changed: {0}")]
    Unrecorded(String),
}

impl cellpilot_core::status::ErrorExt for PinError {
    fn status_code(&self) -> cellpilot_core::status::StatusCode {
        use cellpilot_core::status::StatusCode;
        match self {
            PinError::NotLeader(_) | PinError::Unrecorded(_) => StatusCode::Unavailable,
            PinError::UnknownCell(_) => StatusCode::NotFound,
            PinError::Ttl | PinError::Reason | PinError::Cell(_) | PinError::Weight(_) => StatusCode::InvalidArgument,
        }
    }
}

impl PinRequest {
    /// The pin's length in ms once the request is within bounds (`max_name`: the longest cell
    /// name ingest keeps; `max_weight`: `[control] max_weight`).
    pub fn check(&self, max_name: usize, max_weight: u32) -> Result<i64, PinError> {
        if self.weight.is_some_and(|w| w > max_weight) {
            return Err(PinError::Weight(max_weight));
        }
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(PinError::Ttl);
        }
        if self.cell.is_empty() || self.cell.len() > max_name {
            return Err(PinError::Cell(max_name));
        }
        if self.reason.len() > MAX_REASON {
            return Err(PinError::Reason);
        }
        i64::try_from(ttl.as_millis()).map_err(|_| PinError::Ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ttl: Option<Duration>, cell: &str, reason: usize) -> PinRequest {
        PinRequest { cell: cell.into(), weight: Some(0), ttl, reason: "r".repeat(reason) }
    }

    #[test]
    fn bounds() {
        assert_eq!(req(None, "a", 0).check(8, 10), Ok(3_600_000));
        let heavy = PinRequest { weight: Some(u32::MAX), ..req(None, "a", 0) };
        assert_eq!(heavy.check(8, 10_000), Err(PinError::Weight(10_000)));
        assert_eq!(PinRequest { weight: Some(10_000), ..heavy.clone() }.check(8, 10_000), Ok(3_600_000));
        assert_eq!(PinRequest { weight: None, ..heavy }.check(8, 10_000), Ok(3_600_000));
        assert_eq!(req(Some(MAX_TTL), "a", MAX_REASON).check(8, 10), Ok(30 * 86_400_000));
        assert_eq!(req(Some(Duration::ZERO), "a", 0).check(8, 10), Err(PinError::Ttl));
        assert_eq!(req(Some(MAX_TTL + Duration::from_millis(1)), "a", 0).check(8, 10), Err(PinError::Ttl));
        assert_eq!(req(Some(Duration::MAX), "a", 0).check(8, 10), Err(PinError::Ttl));
        assert_eq!(req(None, "", 0).check(8, 10), Err(PinError::Cell(8)));
        assert_eq!(req(None, "123456789", 0).check(8, 10), Err(PinError::Cell(8)));
        assert_eq!(req(None, "a", MAX_REASON + 1).check(8, 10), Err(PinError::Reason));
    }
}
