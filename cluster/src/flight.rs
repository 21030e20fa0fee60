//! Rows not yet in any file, between nodes, over Arrow Flight: an ingest node answers `DoGet`
//! with its unwritten rows of one table over a range ([`UnwrittenService`]); a query node asks
//! every live ingest node at each scan ([`Peers`], the store's [`OtherNodes`]).
//!
//! A ticket is JSON, `{"table": "rollups" | "errors_by_cause", "from_ms": …, "to_ms": …}`. The
//! answer's `cellpilot-persisted-until` header is the end of the node's finest files when the
//! rows were taken, so the reader can tell whether its listing of that node's files is behind.

use crate::members::Members;
use crate::{Error, Result};
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest,
    HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use cellpilot_core::auth::{Authenticator, Role};
use cellpilot_core::grpc::RoleGuard;
use cellpilot_core::secret::Secret;
use cellpilot_core::status::StatusCode;
use cellpilot_core::status::grpc_status;
use cellpilot_query::RollupStore;
use cellpilot_query::files::{self, Table};
use cellpilot_query::store::{OtherNodes, Unwritten};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

/// Header carrying the answering node's finest-file watermark.
pub const PERSISTED_UNTIL: &str = "cellpilot-persisted-until";
/// Largest ticket accepted.
const MAX_TICKET_BYTES: usize = 1024;
/// How long a query node waits for one peer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer message a query node takes from a peer.
const MAX_ANSWER_MESSAGE: usize = 64 << 20;

/// What a ticket asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ask {
    table: String,
    from_ms: i64,
    to_ms: i64,
}

fn table_named(name: &str) -> Option<Table> {
    Table::ALL.into_iter().find(|t| t.dir_name() == name)
}

/// An ingest node's Flight service: its unwritten rows.
#[derive(Debug, Clone)]
pub struct UnwrittenService {
    store: Arc<RollupStore>,
    auth: Authenticator,
}

impl UnwrittenService {
    /// Answers from `store`; callers need role `read` when `[auth]` has tokens.
    pub fn new(store: Arc<RollupStore>, auth: Authenticator) -> Self {
        UnwrittenService { store, auth }
    }

    /// The tonic service behind the read-role interceptor.
    pub fn into_server(self) -> InterceptedService<FlightServiceServer<Self>, RoleGuard> {
        let guard = RoleGuard::new(self.auth.clone(), Role::Read);
        FlightServiceServer::with_interceptor(self, guard)
    }
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

fn unsupported<T>(what: &str) -> Result<T, Status> {
    Err(StatusCode::Unimplemented
        .status(format!("{what}: this Flight service answers DoGet with a cellpilot ticket only")))
}

#[tonic::async_trait]
impl FlightService for UnwrittenService {
    type HandshakeStream = Stream<HandshakeResponse>;
    type ListFlightsStream = Stream<FlightInfo>;
    type DoGetStream = Stream<FlightData>;
    type DoPutStream = Stream<PutResult>;
    type DoActionStream = Stream<arrow_flight::Result>;
    type ListActionsStream = Stream<ActionType>;
    type DoExchangeStream = Stream<FlightData>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unsupported("Handshake")
    }

    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        unsupported("ListFlights")
    }

    async fn get_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        unsupported("GetFlightInfo")
    }

    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }

    async fn get_schema(&self, _: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner().ticket;
        if ticket.len() > MAX_TICKET_BYTES {
            return Err(StatusCode::InvalidArgument.status(format!("ticket over {MAX_TICKET_BYTES} bytes")));
        }
        let ask: Ask = serde_json::from_slice(&ticket).map_err(|e| {
            StatusCode::InvalidArgument.status(format!("ticket is not {{table, from_ms, to_ms}} JSON: {e}"))
        })?;
        let table = table_named(&ask.table).ok_or_else(|| {
            StatusCode::InvalidArgument.status(format!("no table `{}` (rollups, errors_by_cause)", ask.table))
        })?;
        let store = self.store.clone();
        let (until, rows) = cellpilot_core::task::blocking(move || store.unwritten(table, ask.from_ms, ask.to_ms))
            .await
            .map_err(|e| grpc_status(&e))?
            .map_err(|e| grpc_status(&e))?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(files::schema(table))
            .build(futures::stream::iter(rows.into_iter().map(Ok)))
            .map_err(Status::from)
            .boxed();
        let mut response = Response::new(stream);
        let value = until.to_string().parse().map_err(|_| StatusCode::Internal.status("watermark header"))?;
        response.metadata_mut().insert(PERSISTED_UNTIL, value);
        Ok(response)
    }

    async fn do_put(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        unsupported("DoPut")
    }

    async fn do_action(&self, _: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        unsupported("DoAction")
    }

    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        unsupported("ListActions")
    }

    async fn do_exchange(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        unsupported("DoExchange")
    }
}

/// A query node's view of the other nodes' unwritten rows.
#[derive(Debug)]
pub struct Peers {
    members: Arc<Members>,
    runtime: tokio::runtime::Handle,
    token: Option<Secret>,
    tls: Option<tonic::transport::ClientTlsConfig>,
    max_answer_bytes: usize,
    channels: Mutex<HashMap<String, tonic::transport::Channel>>,
}

impl Peers {
    /// Asks the live nodes `members` lists, on `runtime`, presenting `token` (when `[auth]` is on).
    pub fn new(members: Arc<Members>, runtime: tokio::runtime::Handle, token: Option<Secret>) -> Self {
        Peers {
            members,
            runtime,
            token,
            tls: None,
            max_answer_bytes: cellpilot_core::config::QueryConfig::default().memory_limit.as_usize(),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// Peers are dialed over TLS with `tls` (their certificate verified, this node's presented).
    pub fn tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// One peer's answer may hold at most `bytes` of Arrow data (default: `[query]
    /// memory_limit`'s default); a larger one is that peer's error.
    pub fn max_answer_bytes(mut self, bytes: usize) -> Self {
        self.max_answer_bytes = bytes;
        self
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))
            .map_err(|e| Error::Config(format!("peer address `{addr}`: {e}")))?
            .connect_timeout(PEER_TIMEOUT)
            .timeout(PEER_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint =
                endpoint.tls_config(tls.clone()).map_err(|e| Error::Config(format!("[tls] for peer `{addr}`: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    async fn ask(
        channel: tonic::transport::Channel,
        token: Option<Secret>,
        max_bytes: usize,
        table: Table,
        ask: Ask,
    ) -> Result<(i64, Vec<RecordBatch>)> {
        let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_ANSWER_MESSAGE);
        let mut client = FlightClient::new_from_inner(inner);
        if let Some(t) = token {
            client
                .add_header("authorization", &format!("Bearer {}", t.expose()))
                .map_err(|e| Error::Peer(e.to_string()))?;
        }
        let ticket =
            serde_json::to_vec(&ask).map_err(|e| cellpilot_core::error::Internal::caused("encoding the ticket", e))?;
        let mut stream = client.do_get(Ticket::new(ticket)).await.map_err(|e| Error::Peer(e.to_string()))?;
        let until = stream
            .headers()
            .get(PERSISTED_UNTIL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| Error::Peer(format!("answer without a {PERSISTED_UNTIL} header")))?;
        let (mut rows, mut bytes) = (Vec::new(), 0usize);
        while let Some(batch) = stream.try_next().await.map_err(|e| Error::Peer(e.to_string()))? {
            bytes = bytes.saturating_add(batch.get_array_memory_size());
            if bytes > max_bytes {
                return Err(Error::Peer(format!(
                    "its answer passed {max_bytes} bytes of rows ([query] memory_limit); left out"
                )));
            }
            rows.push(batch);
        }
        // A peer one schema version behind (a rolling upgrade) still answers; anything else is
        // that peer's error, not the whole query's.
        let rows = rows
            .into_iter()
            .map(|b| files::conform(table, b))
            .collect::<cellpilot_query::Result<Vec<_>>>()
            .map_err(|e| Error::Peer(e.to_string()))?;
        Ok((until, rows))
    }
}

impl OtherNodes for Peers {
    fn unwritten(&self, table: Table, from_ms: i64, to_ms: i64) -> cellpilot_query::Result<Vec<Unwritten>> {
        let mut asks = Vec::new();
        for peer in self.members.others().into_iter().filter(|p| p.role.ingests()) {
            let channel = match self.channel(&peer.advertise) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(node = %peer.node_id, error = %cellpilot_core::status::Chain(&e), "peer left out of the answer");
                    continue;
                }
            };
            let ask = Ask { table: table.dir_name().to_string(), from_ms, to_ms };
            let fut = Self::ask(channel, self.token.clone(), self.max_answer_bytes, table, ask);
            asks.push((peer, self.runtime.spawn(fut)));
        }
        let mut out = Vec::new();
        for (peer, handle) in asks {
            // Each task is awaited here, so none outlives this call.
            match futures::executor::block_on(handle) {
                Ok(Ok((persisted_until, rows))) => out.push(Unwritten { node: peer.node_id, persisted_until, rows }),
                Ok(Err(e)) => {
                    tracing::warn!(node = %peer.node_id, error = %cellpilot_core::status::Chain(&e), "a live peer did not answer: its open windows are left out")
                }
                Err(e) => {
                    tracing::warn!(node = %peer.node_id, error = %cellpilot_core::status::Chain(&e), "asking a peer did not finish")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellpilot_query::StoreSettings;
    use cellpilot_query::storage::Storage;

    fn service(dir: &std::path::Path) -> UnwrittenService {
        service_with(dir, Authenticator::default())
    }

    fn service_with(dir: &std::path::Path, auth: Authenticator) -> UnwrittenService {
        let store = RollupStore::open(StoreSettings {
            storage: Arc::new(Storage::local(dir)),
            fine_ms: 10_000,
            lateness_ms: 30_000,
            retention_ms: [i64::MAX / 4; 3],
        })
        .unwrap();
        UnwrittenService::new(Arc::new(store), auth)
    }

    #[tokio::test]
    async fn callers_without_the_read_role_are_refused_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let auth = cellpilot_core::config::AuthConfig {
            read_tokens: vec!["peer=r3ad".into()],
            gateway_tokens: vec!["gw=g4te".into()],
            ..Default::default()
        };
        let authenticator = Authenticator::new(&auth).unwrap();
        let svc = service_with(dir.path(), authenticator.clone());
        let ticket = br#"{"table": "rollups", "from_ms": 0, "to_ms": 1}"#.to_vec();
        // Through the interceptor `into_server` puts in front, as a peer's request goes.
        let ask = |token: Option<&str>| {
            let mut req = Request::new(Ticket::new(ticket.clone()));
            if let Some(t) = token {
                req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
            }
            let guard = RoleGuard::new(authenticator.clone(), Role::Read);
            let svc = &svc;
            async move {
                guard.admit(&mut req)?;
                svc.do_get(req).await
            }
        };
        let code =
            |r: std::result::Result<Response<_>, Status>| r.map(|_| tonic::Code::Ok).unwrap_or_else(|s| s.code());
        assert_eq!(code(ask(None).await), tonic::Code::Unauthenticated);
        assert_eq!(code(ask(Some("nope")).await), tonic::Code::Unauthenticated);
        assert_eq!(code(ask(Some("g4te")).await), tonic::Code::PermissionDenied, "known, without the read role");
        assert_eq!(code(ask(Some("r3ad")).await), tonic::Code::Ok);
    }

    #[tokio::test]
    async fn tickets_are_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let ask = |t: Vec<u8>| svc.do_get(Request::new(Ticket::new(t)));
        for (ticket, names) in [
            (vec![b' '; MAX_TICKET_BYTES + 1], "ticket over"),
            (b"not json".to_vec(), "not {table, from_ms, to_ms}"),
            (br#"{"table": "rollups", "from_ms": 0}"#.to_vec(), "not {table, from_ms, to_ms}"),
            (br#"{"table": "rollups", "from_ms": 0, "to_ms": 1, "x": 1}"#.to_vec(), "not {table, from_ms, to_ms}"),
            (br#"{"table": "spans", "from_ms": 0, "to_ms": 1}"#.to_vec(), "no table `spans`"),
        ] {
            let Err(status) = ask(ticket).await else { panic!("accepted: {names}") };
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().contains(names), "{}", status.message());
        }
        let ok = ask(br#"{"table": "errors_by_cause", "from_ms": 0, "to_ms": 1}"#.to_vec()).await.unwrap();
        assert_eq!(ok.metadata().get(PERSISTED_UNTIL).unwrap(), i64::MIN.to_string().as_str());
    }

    /// A peer's answer is read batch by batch and refused once it passes the bound, rather than
    /// collected whole.
    #[tokio::test]
    async fn a_peer_answer_over_the_bound_is_refused() {
        use cellpilot_core::latency::SparseHistogram;
        use cellpilot_core::schema::{ErrorsByCauseBuilder, RollupValues, RollupsBuilder, RowKey};
        use cellpilot_core::store::WindowBatches;
        let dir = tempfile::tempdir().unwrap();
        let svc = service(dir.path());
        let mut rollups = RollupsBuilder::default();
        let mut h = SparseHistogram::default();
        h.record(1_000);
        let hist = h.serialize();
        for w in 0..5_000i64 {
            let key = RowKey {
                window_start_ms: w * 10_000,
                window_end_ms: w * 10_000 + 10_000,
                cell: "a",
                service: "s",
                route: "r",
            };
            let v = RollupValues {
                requests: 1,
                errors: 0,
                hist: &hist,
                error_hist: Some(&[]),
                quantiles: h.quantiles(),
                exact: true,
            };
            rollups.push(key, v);
        }
        let errors = ErrorsByCauseBuilder::default().finish().unwrap();
        svc.store.add_closed(WindowBatches { rollups: rollups.finish().unwrap(), errors_by_cause: errors });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let mut owner = tokio::task::JoinSet::new();
        owner.spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let stopped = async {
                let _ = stopped.await;
            };
            tonic::transport::Server::builder()
                .add_service(svc.into_server())
                .serve_with_incoming_shutdown(incoming, stopped)
                .await
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        let ask = || Ask { table: "rollups".into(), from_ms: 0, to_ms: i64::MAX };
        let (_, rows) = Peers::ask(channel.clone(), None, 1 << 30, Table::Rollups, ask()).await.unwrap();
        let total: usize = rows.iter().map(RecordBatch::get_array_memory_size).sum();
        assert_eq!(rows.iter().map(RecordBatch::num_rows).sum::<usize>(), 5_000);
        let e = Peers::ask(channel, None, total / 2, Table::Rollups, ask()).await.unwrap_err().to_string();
        assert!(e.contains("memory_limit"), "{e}");
        let _ = stop.send(());
        owner.shutdown().await;
    }
}
