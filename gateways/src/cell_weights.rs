//! The CellWeights gRPC service over the [`Controller`]: `Watch` streams of the published table
//! (each a `Follower` with a stall watchdog), Acks and cut-over reports, behind the gateway-role
//! [`RoleGuard`] every gateway and peer listener uses.

use crate::follower::{Follower, MAX_GATEWAY_ID};
use crate::pb;
use cellpilot_control::GatewayId;
use cellpilot_control::{Controller, MAX_CLOCK_SKEW_MS};
use cellpilot_control::{State, WeightTable};
use cellpilot_core::auth::{Authenticator, Principal, Role};
use cellpilot_core::grpc::{RoleGuard, caller};
use cellpilot_core::status::StatusCode;
use cellpilot_core::status::grpc_status;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// A Watch stream's gateway and its caller as that gateway's owner, while the stream lives; its
/// stall watchdog ends with it.
struct Watching {
    follower: Arc<Mutex<Follower>>,
    owners: Owners,
    key: (String, String),
    /// Latest version the stream handed to the transport.
    sent: Arc<AtomicU64>,
    /// The stall watchdog; dropping the set (with this) aborts it.
    watchdog: tokio::task::JoinSet<()>,
}

impl Watching {
    /// The stream handed `version` on: a stalled gateway is watching again.
    fn sent(&self, version: u64) {
        self.sent.fetch_max(version, Ordering::AcqRel);
        self.follower.lock().unwrap_or_else(|e| e.into_inner()).resume();
    }
}

/// Watches the table for a Watch stream: a version the stream has not handed on within
/// `stall_after` means the gateway is not reading (the transport's flow-control window is the
/// most it holds).
fn watchdog(
    mut rx: tokio::sync::watch::Receiver<WeightTable>,
    follower: Arc<Mutex<Follower>>,
    sent: Arc<AtomicU64>,
    stall_after: std::time::Duration,
) -> tokio::task::JoinSet<()> {
    let mut owner = tokio::task::JoinSet::new();
    owner.spawn(async move {
        while rx.changed().await.is_ok() {
            let version = rx.borrow_and_update().version;
            tokio::time::sleep(stall_after).await;
            if sent.load(Ordering::Acquire) < version {
                follower.lock().unwrap_or_else(|e| e.into_inner()).stall();
            }
        }
    });
    owner
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.watchdog.abort_all();
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = owners.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                owners.remove(&self.key);
            }
        }
    }
}

/// Live Watch streams per (caller, gateway_id): who may Ack for which gateway.
type Owners = Arc<Mutex<std::collections::HashMap<(String, String), usize>>>;

fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

/// The table in its protobuf form.
pub fn to_proto(t: &WeightTable) -> pb::WeightTable {
    pb::WeightTable {
        version: t.version,
        decided_at: Some(timestamp(t.decided_at_ms)),
        cells: t
            .cells
            .iter()
            .map(|c| pb::CellWeight {
                cell: c.cell.clone(),
                weight: c.weight,
                state: match c.state {
                    State::Active => pb::CellState::Active,
                    State::Drained => pb::CellState::Drained,
                    State::Restoring => pb::CellState::Restoring,
                    State::Pinned => pb::CellState::Pinned,
                } as i32,
                reason: c.reason.clone(),
            })
            .collect(),
    }
}

/// The CellWeights gRPC service.
#[derive(Debug, Clone)]
pub struct CellWeightsService {
    controller: Arc<Controller>,
    clock: cellpilot_core::clock::SharedClock,
    auth: Authenticator,
    owners: Owners,
    /// A Watch stream that has not handed on a new version by then is not reading.
    stall_after: std::time::Duration,
    /// Ends every Watch stream on shutdown, so the server can stop gracefully.
    shutdown: tokio_util::sync::CancellationToken,
}

impl CellWeightsService {
    /// The service over `controller`.
    pub fn new(
        controller: Arc<Controller>,
        clock: cellpilot_core::clock::SharedClock,
        auth: Authenticator,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self { controller, clock, auth, owners: Owners::default(), stall_after: crate::follower::STALL_AFTER, shutdown }
    }

    /// How long a Watch stream may hold a new version back before its gateway counts as not
    /// reading.
    pub fn stall_after(mut self, d: std::time::Duration) -> Self {
        self.stall_after = d;
        self
    }

    /// As a tonic server behind its interceptor.
    pub fn into_server(
        self,
    ) -> tonic::service::interceptor::InterceptedService<pb::cell_weights_server::CellWeightsServer<Self>, RoleGuard>
    {
        let guard = RoleGuard::new(self.auth.clone(), Role::Gateway);
        pb::cell_weights_server::CellWeightsServer::with_interceptor(self, guard)
    }
}

type TableStream = Pin<Box<dyn Stream<Item = Result<pb::WeightTable, Status>> + Send>>;

#[tonic::async_trait]
impl pb::cell_weights_server::CellWeights for CellWeightsService {
    async fn get(&self, _req: Request<pb::GetWeightsRequest>) -> Result<Response<pb::WeightTable>, Status> {
        Ok(Response::new(to_proto(&self.controller.table())))
    }

    type WatchStream = TableStream;

    async fn watch(&self, req: Request<pb::WatchWeightsRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let principal = caller(&req);
        let who = principal.actor().to_string();
        let gateway = req.into_inner().gateway_id;
        let rx = self.controller.subscribe();
        let mut follower = Follower::open(&self.controller, GatewayId::cell_weights(&gateway), &principal)?;
        follower.follow(true)?;
        *self.owners.lock().unwrap_or_else(|e| e.into_inner()).entry((who.clone(), gateway.clone())).or_default() += 1;
        let follower = Arc::new(Mutex::new(follower));
        let sent = Arc::new(AtomicU64::new(0));
        let dog = watchdog(rx.clone(), follower.clone(), sent.clone(), self.stall_after);
        let guard = Watching { follower, owners: self.owners.clone(), key: (who, gateway), sent, watchdog: dog };
        // The current table at once, then each change; a slow watcher skips to the latest
        // version instead of holding anyone up.
        let stream = futures::StreamExt::take_until(
            tokio_stream::wrappers::WatchStream::new(rx).map(move |t| {
                guard.sent(t.version);
                Ok(to_proto(&t))
            }),
            self.shutdown.clone().cancelled_owned(),
        );
        let stream: TableStream = Box::pin(stream);
        Ok(Response::new(stream))
    }

    async fn ack(&self, req: Request<pb::AckRequest>) -> Result<Response<pb::AckResponse>, Status> {
        let who = caller(&req);
        let a = req.into_inner();
        if a.gateway_id.is_empty() {
            return Err(StatusCode::InvalidArgument.status("gateway_id is required"));
        }
        if a.gateway_id.len() > MAX_GATEWAY_ID {
            return Err(StatusCode::InvalidArgument.status(format!("gateway_id is longer than {MAX_GATEWAY_ID} bytes")));
        }
        // A gateway token speaks for the gateways it watches as, not for every gateway.
        if let Principal::Token { name, .. } = &who
            && !who.has(Role::Admin)
            && !self
                .owners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&(name.clone(), a.gateway_id.clone()))
        {
            return Err(StatusCode::PermissionDenied.status(format!(
                "an Ack for gateway_id `{}` needs this token's own open Watch stream with that gateway_id",
                a.gateway_id
            )));
        }
        let now = self.clock.now_ms();
        let at = match a.applied_at {
            None => now,
            Some(t) => t
                .seconds
                .checked_mul(1000)
                .and_then(|ms| ms.checked_add(i64::from(t.nanos) / 1_000_000))
                .filter(|ms| {
                    (0..=now.saturating_add(MAX_CLOCK_SKEW_MS)).contains(ms) && (0..1_000_000_000).contains(&t.nanos)
                })
                .ok_or_else(|| {
                    StatusCode::InvalidArgument.status("applied_at must be a valid time no later than now + 5m")
                })?,
        };
        if let Err(e) = self.controller.ack(&GatewayId::cell_weights(&a.gateway_id), a.version, at) {
            return Err(grpc_status(&e));
        }
        Ok(Response::new(pb::AckResponse {}))
    }
}
