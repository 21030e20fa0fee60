//! The ADS gRPC service: one session per stream drives its state machine ([`Sotw`] or
//! [`Delta`]) from the node's requests and the table's changes, and tells the controller what
//! the node did — joined (holds an assignment), ACKed, NACKed, stalled, left — so a drain's
//! cut-over waits for every xDS node as it does for CellWeights gateways.

use crate::follower::Follower;
use crate::xds::delta::Delta;
use crate::xds::event::{Event, Limits, MAX_NODE_ID, Machine};
use crate::xds::resources::{Kind, Snapshots};
use crate::xds::sotw::Sotw;
use cellpilot_control::Controller;
use cellpilot_control::GatewayId;
use cellpilot_core::auth::Role;
use cellpilot_core::auth::{Authenticator, Principal};
use cellpilot_core::grpc::RoleGuard;
use cellpilot_core::status::StatusCode;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

/// The xDS management server.
#[derive(Debug, Clone)]
pub struct XdsService {
    snapshots: Arc<Snapshots>,
    auth: Authenticator,
    limits: Limits,
    names: NameBudget,
    /// An assignment neither ACKed nor NACKed by then: the node is not following.
    stall_after: Duration,
    shutdown: CancellationToken,
}

impl XdsService {
    /// The service over `snapshots`; every stream ends on `shutdown`.
    pub fn new(snapshots: Arc<Snapshots>, auth: Authenticator, shutdown: CancellationToken) -> Self {
        Self {
            snapshots,
            auth,
            limits: Limits::default(),
            names: NameBudget::of(&cellpilot_core::config::XdsConfig::default()),
            stall_after: crate::follower::STALL_AFTER,
            shutdown,
        }
    }

    /// Subscribed names bounded as `[xds] max_names_per_stream` and `max_names` say.
    pub fn name_caps(mut self, config: &cellpilot_core::config::XdsConfig) -> Self {
        self.names = NameBudget::of(config);
        self
    }

    /// How long a node may leave an assignment unanswered before it stops counting as watching.
    pub fn stall_after(mut self, d: Duration) -> Self {
        self.stall_after = d;
        self
    }

    /// As a tonic server behind the gateway-role interceptor, refusing requests over
    /// [`MAX_REQUEST_BYTES`].
    pub fn into_server(
        self,
    ) -> tonic::service::interceptor::InterceptedService<AggregatedDiscoveryServiceServer<Self>, RoleGuard> {
        let guard = RoleGuard::new(self.auth.clone(), Role::Gateway);
        let server = AggregatedDiscoveryServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES);
        tonic::service::interceptor::InterceptedService::new(server, guard)
    }

    fn session<M: Machine>(&self, req: Request<Streaming<M::Req>>, machine: M) -> ResponseStream<M::Resp> {
        let caller = cellpilot_core::grpc::caller(&req);
        let session = Session {
            incoming: req.into_inner(),
            caller,
            names: NameCharge { budget: self.names.clone(), held: 0 },
            machine,
            snapshots: self.snapshots.clone(),
            table: self.snapshots.controller().subscribe(),
            limits: self.limits,
            stall_after: self.stall_after,
            queue: VecDeque::new(),
            node: None,
            done: false,
            shutdown: self.shutdown.clone(),
        };
        Box::pin(futures::stream::unfold(session, Session::next))
    }
}

/// Largest request decoded: 1,024 names of 1 KiB fit with room for an Envoy node's metadata
/// and extension list (tens of KiB).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for XdsService {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.session(req, Sotw::new())))
    }

    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Ok(Response::new(self.session(req, Delta::new())))
    }
}

/// The node behind a stream, once its first request named it.
struct NodeGuard {
    follower: Follower,
    /// Since when an assignment has gone unanswered.
    awaiting_since: Option<Instant>,
}

impl NodeGuard {
    fn open(controller: &Arc<Controller>, node: &str, caller: &Principal) -> Result<Self, Status> {
        let follower = Follower::open(controller, GatewayId::xds(node), caller)?;
        controller.metrics().xds_streams.inc();
        Ok(Self { follower, awaiting_since: None })
    }

    fn record(&self, events: Vec<Event>) {
        let (controller, id) = (self.follower.controller(), self.follower.id());
        for e in events {
            let recorded = match e {
                Event::Ack { kind: Kind::Endpoints, version } | Event::Unchanged { version } => {
                    controller.ack(id, version, controller.clock().now_ms())
                }
                Event::Ack { .. } => Ok(()),
                Event::Nack { kind, version, error } => {
                    // A client's text, logged no longer than it is kept.
                    let detail = cellpilot_core::cut_str(&error, cellpilot_control::MAX_NACK_DETAIL);
                    if let Some(held_back) = nack_lines().allow(&id.id) {
                        tracing::warn!(node = %id.id, type_url = kind.type_url(), version, error = %detail, nacks_held_back = held_back, "xDS node refused a response (NACK)");
                    }
                    controller.metrics().xds_nacks.inc();
                    controller.nack(id, version, &error)
                }
            };
            if let Err(e) = recorded {
                tracing::warn!(node = %id.id, error = %e, "xDS node's answer not recorded");
            }
        }
    }
}

impl Drop for NodeGuard {
    fn drop(&mut self) {
        self.follower.controller().metrics().xds_streams.dec();
    }
}

struct Session<M: Machine> {
    incoming: Streaming<M::Req>,
    /// Who opened the stream: the node ids it may use, and whose streams it counts against.
    caller: Principal,
    names: NameCharge,
    machine: M,
    snapshots: Arc<Snapshots>,
    table: tokio::sync::watch::Receiver<cellpilot_control::WeightTable>,
    limits: Limits,
    stall_after: Duration,
    queue: VecDeque<M::Resp>,
    node: Option<NodeGuard>,
    done: bool,
    shutdown: CancellationToken,
}

enum Step<Req> {
    Request(Result<Option<Req>, Status>),
    Changed(bool),
    Stalled,
    Stop,
}

impl<M: Machine> Session<M> {
    /// The next response to send, `None` when the stream is over.
    async fn next(mut self) -> Option<(Result<M::Resp, Status>, Self)> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some((Ok(r), self));
            }
            if self.done {
                return None;
            }
            let stall_at = self
                .node
                .as_ref()
                .and_then(|n| n.awaiting_since.filter(|_| n.follower.counted()))
                .map(|t| t + self.stall_after);
            let step = tokio::select! {
                _ = self.shutdown.cancelled() => Step::Stop,
                r = self.incoming.message() => Step::Request(r),
                r = self.table.changed(), if self.node.is_some() => Step::Changed(r.is_ok()),
                _ = sleep_until(stall_at), if stall_at.is_some() => Step::Stalled,
            };
            match step {
                Step::Stop | Step::Request(Ok(None)) | Step::Changed(false) => return None,
                Step::Request(Err(status)) => {
                    // A request that cannot be read (over the size limit, malformed) ends the
                    // stream with the reason; a client that went away hears nothing anyway.
                    tracing::debug!(code = ?status.code(), message = status.message(), "xDS request unreadable");
                    self.done = true;
                    return Some((Err(status), self));
                }
                Step::Request(Ok(Some(req))) => {
                    if let Err(status) = self.request(&req) {
                        self.done = true;
                        return Some((Err(status), self));
                    }
                }
                Step::Changed(true) => {
                    self.table.borrow_and_update();
                    let snap = self.snapshots.current();
                    let (events, responses) = self.machine.snapshot(&snap);
                    self.queue.extend(responses);
                    self.settle(events);
                }
                Step::Stalled => {
                    if let Some(node) = self.node.as_mut() {
                        node.follower.stall();
                    }
                }
            }
        }
    }

    fn request(&mut self, req: &M::Req) -> Result<(), Status> {
        if self.node.is_none() {
            let id = M::node(req).map(|n| n.id.as_str()).unwrap_or_default();
            if id.is_empty() {
                return Err(StatusCode::InvalidArgument.status("the first request must carry node.id"));
            }
            if id.len() > MAX_NODE_ID {
                return Err(StatusCode::InvalidArgument.status(format!("node.id is longer than {MAX_NODE_ID} bytes")));
            }
            self.node = Some(NodeGuard::open(self.snapshots.controller(), id, &self.caller)?);
            self.table.borrow_and_update();
        }
        let snap = self.snapshots.current();
        let (events, responses) = self.machine.request(req, &snap, &self.limits)?;
        self.names.hold(self.machine.subscribed())?;
        self.queue.extend(responses);
        self.settle(events);
        Ok(())
    }

    /// Records the node's answers and whether it follows the table now.
    fn settle(&mut self, events: Vec<Event>) {
        let Some(node) = self.node.as_mut() else { return };
        let answered = events
            .iter()
            .any(|e| matches!(e, Event::Ack { kind: Kind::Endpoints, .. } | Event::Nack { kind: Kind::Endpoints, .. }));
        node.awaiting_since = match (self.machine.awaiting_assignment(), node.awaiting_since) {
            (false, _) => None,
            (true, Some(t)) if !answered => Some(t),
            (true, _) => Some(Instant::now()),
        };
        if answered {
            node.follower.resume();
        }
        // Join before recording: an ACK of the version that drained a cell counts for it.
        if let Err(e) = node.follower.follow(self.machine.holds_assignment()) {
            tracing::warn!(node = %node.follower.id().id, error = %e.message(), "xDS node not counted as watching");
        }
        node.record(events);
    }
}

/// Resource names every stream holds subscribed, against `[xds] max_names`, and the cap of one
/// stream, `max_names_per_stream`.
#[derive(Debug, Clone)]
struct NameBudget {
    held: Arc<AtomicUsize>,
    per_stream: usize,
    total: usize,
}

impl NameBudget {
    fn of(config: &cellpilot_core::config::XdsConfig) -> Self {
        Self { held: Arc::default(), per_stream: config.max_names_per_stream, total: config.max_names }
    }
}

/// One stream's part of the [`NameBudget`], given back when the stream ends.
#[derive(Debug)]
struct NameCharge {
    budget: NameBudget,
    held: usize,
}

impl NameCharge {
    /// The stream now holds `now` names; RESOURCE_EXHAUSTED (the stream then ends) over a cap.
    fn hold(&mut self, now: usize) -> Result<(), Status> {
        let b = &self.budget;
        if now > b.per_stream {
            return Err(StatusCode::LimitReached.status(format!(
                "this stream subscribes {now} resource names, more than {} ([xds] max_names_per_stream)",
                b.per_stream
            )));
        }
        if now > self.held {
            let more = now - self.held;
            let before = b.held.fetch_add(more, Ordering::AcqRel);
            if before + more > b.total {
                b.held.fetch_sub(more, Ordering::AcqRel);
                return Err(StatusCode::LimitReached.status(format!(
                    "xDS streams hold {before} subscribed resource names; {more} more would pass {} ([xds] max_names)",
                    b.total
                )));
            }
        } else {
            b.held.fetch_sub(self.held - now, Ordering::AcqRel);
        }
        self.held = now;
        Ok(())
    }
}

impl Drop for NameCharge {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.held, Ordering::AcqRel);
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// NACK lines: one per node a minute, the next saying how many were held back.
fn nack_lines() -> &'static cellpilot_core::throttle::KeyedThrottle {
    static LINES: std::sync::OnceLock<cellpilot_core::throttle::KeyedThrottle> = std::sync::OnceLock::new();
    LINES.get_or_init(|| cellpilot_core::throttle::KeyedThrottle::new(cellpilot_core::throttle::EVERY))
}
