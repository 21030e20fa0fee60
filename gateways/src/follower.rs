//! One gateway's stream, whatever its protocol: who it is (the id it gave, checked against the
//! caller's token), the stream slot it holds under `[xds] max_streams*`, and whether it counts as
//! watching for cut-overs. A gateway that stops reading (it leaves a new version unanswered for
//! the stall time) stops counting, so it holds no drain's `applied_at`, and counts again once it
//! answers. Dropping the follower gives everything back.

use cellpilot_control::Controller;
use cellpilot_control::GatewayId;
use cellpilot_core::auth::Principal;
use cellpilot_core::status::StatusCode;
use cellpilot_core::status::grpc_status;
use std::sync::Arc;
use tonic::Status;

/// How long a gateway may leave a new version unanswered before it counts as not reading: the
/// transport's default keepalive interval plus timeout, so a gateway that is gone and one that
/// stopped reading are noticed alike.
pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

/// Longest gateway id (`gateway_id`, xDS node id) accepted.
pub(crate) const MAX_GATEWAY_ID: usize = 256;

/// A gateway's open stream.
#[derive(Debug)]
pub(crate) struct Follower {
    controller: Arc<Controller>,
    id: GatewayId,
    /// Who opened the stream (whose streams it counts against).
    caller: Principal,
    /// The stream follows the table (a Watch from its start, an xDS node once it holds an
    /// assignment).
    follows: bool,
    /// Left a version unanswered for the stall time.
    stalled: bool,
    /// What the controller counts now: `follows && !stalled`, once recorded.
    counted: bool,
}

impl Follower {
    /// Opens a stream for `id` if `caller` may act as it and a stream slot is free.
    pub(crate) fn open(controller: &Arc<Controller>, id: GatewayId, caller: &Principal) -> Result<Self, Status> {
        if id.id.len() > MAX_GATEWAY_ID {
            return Err(
                StatusCode::InvalidArgument.status(format!("a gateway id is longer than {MAX_GATEWAY_ID} bytes"))
            );
        }
        caller.check_acts_as(&id.id).map_err(|m| StatusCode::PermissionDenied.status(m))?;
        controller.open_stream(&id, caller).map_err(|e| grpc_status(&e))?;
        tracing::info!(gateway = %id, caller = %caller.actor(), "gateway connected");
        let caller = caller.clone();
        Ok(Self { controller: controller.clone(), id, caller, follows: false, stalled: false, counted: false })
    }

    /// The gateway this stream is.
    pub(crate) fn id(&self) -> &GatewayId {
        &self.id
    }

    /// The controller the stream reports to.
    pub(crate) fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Counted as watching now.
    pub(crate) fn counted(&self) -> bool {
        self.counted
    }

    /// The stream starts or stops following the table. Starting fails when `[control]
    /// max_gateways` others are remembered and connected.
    pub(crate) fn follow(&mut self, on: bool) -> Result<(), Status> {
        self.follows = on;
        self.sync()
    }

    /// The stream left a version unanswered for the stall time: it stops counting.
    pub(crate) fn stall(&mut self) {
        if !self.stalled {
            tracing::warn!(gateway = %self.id, "gateway is not reading its stream; it no longer holds cut-overs back");
            self.controller.metrics().watch_stalls.inc();
            self.stalled = true;
            // Stopping never fails.
            let _ = self.sync();
        }
    }

    /// The stream answered again after a stall.
    pub(crate) fn resume(&mut self) {
        if self.stalled {
            tracing::info!(gateway = %self.id, "gateway reads its stream again");
            self.stalled = false;
            if let Err(e) = self.sync() {
                tracing::warn!(gateway = %self.id, error = %e.message(), "gateway not counted as watching");
            }
        }
    }

    fn sync(&mut self) -> Result<(), Status> {
        let want = self.follows && !self.stalled;
        if want == self.counted {
            return Ok(());
        }
        if want {
            self.controller.watching(&self.id).map_err(|e| grpc_status(&e))?;
        } else {
            self.controller.left(&self.id);
        }
        self.counted = want;
        Ok(())
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        tracing::info!(gateway = %self.id, "gateway disconnected");
        self.follows = false;
        let _ = self.sync();
        self.controller.close_stream(&self.id, &self.caller);
    }
}
