//! The CellWeights gRPC service over the [`Controller`]: `Watch` streams of the published table
//! (with their stall watchdog), Acks and cut-over reports, behind the gateway-role
//! [`RoleGuard`] every gateway and peer listener uses.

use crate::controller::{Controller, MAX_CLOCK_SKEW_MS};
use crate::gateways::GatewayId;
use crate::pb;
use crate::policy::{State, WeightTable};
use cellpilot_core::auth::{Authenticator, Principal, Role};
use cellpilot_core::grpc::{RoleGuard, caller};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

/// Keeps a gateway counted as watching, and its caller as that gateway's owner, while its
/// stream lives and keeps up; its stall watchdog ends with it.
struct Watching {
    controller: Arc<Controller>,
    owners: Owners,
    key: (String, String),
    gateway: GatewayId,
    /// Who opened the stream (whose streams it counts against).
    caller: Principal,
    /// Latest version the stream handed to the transport.
    sent: Arc<std::sync::atomic::AtomicU64>,
    /// Set while the stream is not reading (it then counts as gone for cut-overs).
    stalled: Arc<std::sync::atomic::AtomicBool>,
    /// The stall watchdog; dropping the set (with this) aborts it.
    watchdog: tokio::task::JoinSet<()>,
}

impl Watching {
    /// The stream handed `version` on: a stalled gateway is watching again.
    fn sent(&self, version: u64) {
        use std::sync::atomic::Ordering;
        self.sent.fetch_max(version, Ordering::AcqRel);
        if self.stalled.swap(false, Ordering::AcqRel) {
            tracing::info!(gateway = %self.key.1, "gateway reads its Watch stream again");
            if let Err(e) = self.controller.watching(&self.gateway) {
                tracing::warn!(gateway = %self.key.1, error = %e, "gateway not counted as watching");
            }
        }
    }
}

/// Watches the table for `gateway`'s stream: a version the stream has not handed on within
/// `stall_after` means the gateway is not reading (the transport's flow-control window is the
/// most it holds); it then stops counting as watching, so it holds no cut-over's `applied_at`.
fn watchdog(
    controller: Arc<Controller>,
    gateway: GatewayId,
    sent: Arc<std::sync::atomic::AtomicU64>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
    stall_after: std::time::Duration,
) -> tokio::task::JoinSet<()> {
    use std::sync::atomic::Ordering;
    let mut rx = controller.subscribe();
    let mut owner = tokio::task::JoinSet::new();
    owner.spawn(async move {
        while rx.changed().await.is_ok() {
            let version = rx.borrow_and_update().version;
            tokio::time::sleep(stall_after).await;
            if sent.load(Ordering::Acquire) < version && !stalled.swap(true, Ordering::AcqRel) {
                tracing::warn!(gateway = %gateway.id, version, "gateway is not reading its Watch stream; it no longer holds cut-overs back");
                controller.metrics().watch_stalls.inc();
                controller.left(&gateway);
            }
        }
    });
    owner
}

impl Drop for Watching {
    fn drop(&mut self) {
        tracing::info!(gateway = %self.key.1, "gateway stopped watching");
        self.watchdog.abort_all();
        if !self.stalled.load(std::sync::atomic::Ordering::Acquire) {
            self.controller.left(&self.gateway);
        }
        self.controller.close_stream(&self.gateway, &self.caller);
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

/// Default of [`CellWeightsService::stall_after`]: the transport's default keepalive interval
/// plus timeout, so a gateway that is gone and one that stopped reading are noticed alike.
pub const STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

impl CellWeightsService {
    /// The service over `controller`.
    pub fn new(
        controller: Arc<Controller>,
        clock: cellpilot_core::clock::SharedClock,
        auth: Authenticator,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self { controller, clock, auth, owners: Owners::default(), stall_after: STALL_AFTER, shutdown }
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
        check_gateway_id(&gateway)?;
        principal.check_acts_as(&gateway).map_err(Status::permission_denied)?;
        let rx = self.controller.subscribe();
        let id = GatewayId::cell_weights(&gateway);
        self.controller.open_stream(&id, &principal).map_err(|e| Status::resource_exhausted(e.to_string()))?;
        if let Err(e) = self.controller.watching(&id) {
            self.controller.close_stream(&id, &principal);
            return Err(Status::resource_exhausted(e.to_string()));
        }
        tracing::info!(%gateway, caller = %who, "gateway watching weights");
        *self.owners.lock().unwrap_or_else(|e| e.into_inner()).entry((who.clone(), gateway.clone())).or_default() += 1;
        let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let dog = watchdog(self.controller.clone(), id.clone(), sent.clone(), stalled.clone(), self.stall_after);
        let guard = Watching {
            controller: self.controller.clone(),
            owners: self.owners.clone(),
            key: (who, gateway),
            gateway: id,
            caller: principal,
            sent,
            stalled,
            watchdog: dog,
        };
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
            return Err(Status::invalid_argument("gateway_id is required"));
        }
        check_gateway_id(&a.gateway_id)?;
        // A gateway token speaks for the gateways it watches as, not for every gateway.
        if let Principal::Token { name, .. } = &who
            && !who.has(Role::Admin)
            && !self
                .owners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&(name.clone(), a.gateway_id.clone()))
        {
            return Err(Status::permission_denied(format!(
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
                .ok_or_else(|| Status::invalid_argument("applied_at must be a valid time no later than now + 5m"))?,
        };
        if let Err(e) = self.controller.ack(&GatewayId::cell_weights(&a.gateway_id), a.version, at) {
            return Err(Status::resource_exhausted(e.to_string()));
        }
        Ok(Response::new(pb::AckResponse {}))
    }
}

/// Longest `gateway_id` accepted.
const MAX_GATEWAY_ID: usize = 256;

fn check_gateway_id(id: &str) -> Result<(), Status> {
    if id.len() > MAX_GATEWAY_ID {
        return Err(Status::invalid_argument(format!("gateway_id is longer than {MAX_GATEWAY_ID} bytes")));
    }
    Ok(())
}
