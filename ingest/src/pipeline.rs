//! The transport-independent ingest pipeline: authenticate, admit, then hand the decoded export
//! to the [`Sequencer`] (map, WAL, aggregate) and build the OTLP response (`partial_success`).

use crate::aggregator::SharedAggregator;
use crate::decode::Encoding;
use crate::error::{Error, Result};
use crate::limiter::{Limiter, Permit, RETRY_AFTER};
use crate::mapping::Mapper;
use crate::prescan;
use crate::sequencer::{Applied, Export, Replayed, Sequencer, SequencerParts, WalSettings, Watermark};
use crate::wire::WireTraces;
use cellpilot_core::auth::{Authenticator, Denied, PeerCert, Principal, Role};
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::IngestConfig;
use cellpilot_core::metrics::Metrics;
use cellpilot_core::task::panic_message;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use prost::bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

/// Which transport a request came in on (a metrics label).
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP.
    Http,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        }
    }
}

/// One OTLP signal: its request and response types and how its response is built.
pub trait Signal: Send + Sync + 'static {
    /// The Export request.
    type Req: Message + Default + DeserializeOwned + Send + 'static;
    /// The Export response.
    type Resp: Message + Default + Serialize + Send + 'static;
    /// Fully qualified gRPC service name.
    const SERVICE: &'static str;
    /// `signal` label in `/metrics`.
    const LABEL: &'static str;
    /// The request's message, for the pre-decode count.
    const ROOT: prescan::Msg;
    /// What its items are called in messages.
    const ITEMS: &'static str;
    /// Whether its protobuf bodies reach the sequencer encoded, for the wire scanner to map.
    const WIRE: bool = false;
    /// The request as a sequencer export.
    fn wrap(req: Self::Req) -> Export;
    /// The export of a protobuf body: decoded here, unless the signal is mapped from the wire.
    fn from_protobuf(body: Bytes) -> Result<Export> {
        let req =
            Self::Req::decode(&body[..]).map_err(|e| Error::BadInput(format!("invalid protobuf payload: {e}")))?;
        Ok(Self::wrap(req))
    }
    /// The response for what the sequencer did.
    fn respond(ingest: &Ingest, applied: &Applied) -> Self::Resp;
}

/// Traces.
#[derive(Debug)]
pub struct Traces;
/// Metrics.
#[derive(Debug)]
pub struct MetricsSignal;
/// Logs.
#[derive(Debug)]
pub struct Logs;

impl Signal for Traces {
    type Req = ExportTraceServiceRequest;
    type Resp = ExportTraceServiceResponse;
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const LABEL: &'static str = "traces";
    const ROOT: prescan::Msg = prescan::Msg::ExportTraces;
    const ITEMS: &'static str = "spans";
    const WIRE: bool = true;
    fn wrap(req: Self::Req) -> Export {
        Export::Traces(req)
    }
    fn from_protobuf(body: Bytes) -> Result<Export> {
        Ok(Export::TracesWire(WireTraces::new(body)))
    }
    fn respond(ingest: &Ingest, a: &Applied) -> Self::Resp {
        ingest.record(a, "spans");
        ingest.metrics.ingest_spans.with_label_values(&["not_request"]).inc_by(a.ignored);
        let rejected = a.outcome.late + a.outcome.future;
        let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: reject_message(a, "spans"),
        });
        ExportTraceServiceResponse { partial_success }
    }
}

impl Signal for MetricsSignal {
    type Req = ExportMetricsServiceRequest;
    type Resp = ExportMetricsServiceResponse;
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const LABEL: &'static str = "metrics";
    const ROOT: prescan::Msg = prescan::Msg::ExportMetrics;
    const ITEMS: &'static str = "data points";
    fn wrap(req: Self::Req) -> Export {
        Export::Metrics(req)
    }
    fn respond(ingest: &Ingest, a: &Applied) -> Self::Resp {
        ingest.record(a, "points");
        let ignored = &ingest.metrics.ingest_points_ignored;
        ignored.with_label_values(&["not_latency"]).inc_by(a.ignored);
        ignored.with_label_values(&["spans_preferred"]).inc_by(a.outcome.spans_preferred);
        ignored.with_label_values(&["baseline"]).inc_by(a.outcome.baseline);
        ignored.with_label_values(&["out_of_order"]).inc_by(a.outcome.out_of_order);
        let unusable: u64 = a.unusable.iter().map(|(n, _)| n).sum();
        if unusable > 0 {
            ingest.metrics.ingest_points.with_label_values(&["rejected"]).inc_by(unusable);
            ingest.metrics.ingest_rejected.with_label_values(&["unusable_point"]).inc_by(unusable);
        }
        let rejected = a.outcome.late + a.outcome.future + unusable;
        let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: reject_message(a, "data points"),
        });
        ExportMetricsServiceResponse { partial_success }
    }
}

impl Signal for Logs {
    type Req = ExportLogsServiceRequest;
    type Resp = ExportLogsServiceResponse;
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const LABEL: &'static str = "logs";
    const ROOT: prescan::Msg = prescan::Msg::ExportLogs;
    const ITEMS: &'static str = "log records";
    fn wrap(req: Self::Req) -> Export {
        Export::Logs(req)
    }
    fn respond(_ingest: &Ingest, _a: &Applied) -> Self::Resp {
        ExportLogsServiceResponse { partial_success: None }
    }
}

/// Everything a receiver needs; one per process, shared by both transports.
#[derive(Debug)]
pub struct Ingest {
    sequencer: Sequencer,
    limiter: Limiter,
    /// `max_concurrent_requests` slots, taken before a body is read.
    requests: Arc<tokio::sync::Semaphore>,
    auth: Authenticator,
    metrics: Metrics,
    max_request_size: usize,
    max_items: u64,
    /// How long a body may take to arrive.
    body_read_timeout: std::time::Duration,
    /// Maps and folds traces on the receiving task (the sequencer has a copy for the rest).
    mapper: Mapper,
    /// The aggregator's windows, which batches are folded into.
    spec: cellpilot_core::window::WindowSpec,
    /// Now, for the future-time bound of folded spans.
    clock: SharedClock,
}

/// `[transport] body_read_timeout`'s default.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Decoded bytes one request may take, as a multiple of `max_request_size`: with the raw body,
/// its WAL copy and the slack of growing vectors, one request at the size limit stays under
/// 512 MiB at the 64 MiB default.
const DECODED_PER_BYTE: u64 = 2;

/// What mapping one span from the wire may take, from above: its observation (40 bytes, twice
/// over for the vector's growth) and up to three new names in the request's string table.
const MAPPED_PER_SPAN: u64 = 256;

/// How the pipeline is put together.
pub struct IngestParts {
    /// The aggregator exports are applied to.
    pub aggregator: SharedAggregator,
    /// Token checks.
    pub auth: Authenticator,
    /// Process metrics.
    pub metrics: Metrics,
    /// "Now".
    pub clock: SharedClock,
    /// The WAL and what replay found; `None` runs without durability.
    pub wal: Option<(WalSettings, Replayed)>,
    /// How far Parquet has persisted.
    pub watermark: Watermark,
    /// Where cut-overs reported in OTLP logs go.
    pub cutovers: Option<std::sync::Arc<dyn cellpilot_core::store::CutoverReports>>,
}

impl Ingest {
    /// Wires the pipeline and starts its sequencer.
    pub fn new(config: &IngestConfig, parts: IngestParts) -> Result<Self> {
        let max_request_size = config.max_request_size.as_usize();
        // Four maximal requests may be in flight before new ones are turned away.
        let limiter = Limiter::new(max_request_size.saturating_mul(4), parts.metrics.ingest_inflight_bytes.clone());
        let spec = parts.aggregator.lock().spec();
        let clock = parts.clock.clone();
        let sequencer = Sequencer::start(SequencerParts {
            mapper: Mapper::new(config),
            aggregator: parts.aggregator,
            wal: parts.wal,
            clock: parts.clock,
            metrics: parts.metrics.clone(),
            watermark: parts.watermark,
            cutovers: parts.cutovers,
            max_wait: config.max_queue_wait.0,
        })?;
        let max_items = config.max_items_per_request as u64;
        let requests = Arc::new(tokio::sync::Semaphore::new(config.max_concurrent_requests));
        Ok(Self {
            sequencer,
            limiter,
            requests,
            auth: parts.auth,
            metrics: parts.metrics,
            max_request_size,
            max_items,
            body_read_timeout: BODY_READ_TIMEOUT,
            mapper: Mapper::new(config),
            spec,
            clock,
        })
    }

    /// Largest accepted request, after decompression.
    pub fn max_request_size(&self) -> usize {
        self.max_request_size
    }

    /// `[transport] body_read_timeout` (30 s unless set).
    pub fn with_body_read_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.body_read_timeout = timeout;
        self
    }

    /// How long a body may take to arrive.
    pub fn body_read_timeout(&self) -> std::time::Duration {
        self.body_read_timeout
    }

    #[cfg(any(test, feature = "internals"))]
    /// The process metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Checks the `Authorization` header value, or else the client certificate: the ingest
    /// role is needed.
    pub fn authorize(&self, header: Option<&str>, cert: Option<&PeerCert>) -> Result<Principal> {
        self.auth.check_peer(header, cert, Role::Ingest).map_err(Error::Unauthenticated)
    }

    /// Reserves room for a request of `bytes` decoded bytes, or answers overloaded.
    pub fn admit(&self, bytes: usize) -> Result<Permit> {
        self.limiter
            .try_acquire(bytes)
            .inspect_err(|_| self.metrics.ingest_overloaded.with_label_values(&["inflight_bytes"]).inc())
    }

    /// One of `max_concurrent_requests` slots, held while a request is read, decoded and
    /// applied; taken before its body is read, so a flood waits in no buffer of ours.
    pub fn admit_request(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.requests.clone().try_acquire_owned().map_err(|_| {
            self.metrics.ingest_overloaded.with_label_values(&["max_concurrent_requests"]).inc();
            Error::Overloaded { retry_after: RETRY_AFTER }
        })
    }

    /// Counts a request body's items and decoded size before it is decoded, refusing one over
    /// `max_items_per_request` or over 2 × `max_request_size` once decoded; returns the
    /// estimated decoded bytes (what admission charges besides the body).
    pub fn prescan<S: Signal>(&self, body: &[u8], enc: Encoding) -> Result<usize> {
        // Traces mapped from the wire allocate per request span, not per field: counting the
        // spans is enough (the scanner checks the rest). Levels above the spans that do not
        // parse get the full walk, which says what is wrong.
        let shallow = match enc {
            Encoding::Protobuf if S::WIRE => crate::wire::count_spans(body)
                .map(|items| prescan::Counted { items, decoded_bytes: items.saturating_mul(MAPPED_PER_SPAN) }),
            _ => None,
        };
        let counted = match (shallow, enc) {
            (Some(c), _) => c,
            (None, Encoding::Protobuf) => prescan::scan_protobuf(S::ROOT, body)
                .map_err(|e| Error::BadInput(format!("invalid protobuf payload: {e}")))?,
            (None, Encoding::Json) => prescan::scan_json(S::ROOT, body)
                .map_err(|e| Error::BadInput(format!("invalid OTLP JSON payload: {e}")))?,
        };
        if counted.items > self.max_items {
            return Err(Error::TooMany(format!(
                "the request holds {} {}, more than ingest.max_items_per_request ({}): send smaller batches",
                counted.items,
                S::ITEMS,
                self.max_items
            )));
        }
        let budget = (self.max_request_size as u64).saturating_mul(DECODED_PER_BYTE);
        if counted.decoded_bytes > budget {
            return Err(Error::TooMany(format!(
                "the request would take {} MiB once decoded, more than {} MiB (2 x ingest.max_request_size): send smaller batches",
                counted.decoded_bytes >> 20,
                budget >> 20
            )));
        }
        Ok(usize::try_from(counted.decoded_bytes).unwrap_or(usize::MAX))
    }

    /// Logs, applies and answers one decoded export `who` sent; `raw` is its protobuf encoding
    /// when at hand.
    pub async fn export<S: Signal>(&self, req: S::Req, raw: Option<Bytes>, who: &Principal) -> Result<S::Resp> {
        let export = self.premap(S::wrap(req))?;
        self.submit::<S>(export, raw, who).await
    }

    /// Logs, applies and answers one protobuf export `who` sent, `body` as it came (pre-scanned).
    pub async fn export_protobuf<S: Signal>(&self, body: Bytes, who: &Principal) -> Result<S::Resp> {
        let export = self.premap(S::from_protobuf(body.clone())?)?;
        self.submit::<S>(export, Some(body), who).await
    }

    /// Maps and folds traces here, on the task that received them, so the sequencer (one
    /// thread for every export) only logs and counts their span batch; a request the mapping
    /// refuses is answered without queueing.
    fn premap(&self, export: Export) -> Result<Export> {
        match catch_unwind(AssertUnwindSafe(|| export.fold(&self.mapper, self.spec, self.clock.now_ms()))) {
            Ok(r) => r,
            Err(p) => {
                self.metrics.ingest_panics.inc();
                let detail = format!("an export panicked while being mapped: {}", panic_message(p.as_ref()));
                Err(Error::Internal(detail.into()))
            }
        }
    }

    /// Reported cut-overs (`cell.cutover` log events) move gateways' figures, so they need the
    /// gateway role too.
    async fn submit<S: Signal>(&self, export: Export, raw: Option<Bytes>, who: &Principal) -> Result<S::Resp> {
        if let Export::Logs(logs) = &export
            && !who.has(Role::Gateway)
            && !crate::logs::cutovers(logs).reported.is_empty()
        {
            return Err(Error::Unauthenticated(Denied::Lacks(Role::Gateway)));
        }
        let applied = self.sequencer.submit(export, raw).await?;
        Ok(S::respond(self, &applied))
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether the sequencer is running (exports are answered 503 / UNAVAILABLE when not).
    pub fn is_running(&self) -> bool {
        self.sequencer.is_running()
    }

    /// A readiness check: `None` while the sequencer runs and the WAL writes, else why exports
    /// are refused.
    pub fn health_check(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let running = self.sequencer.running_probe();
        let wal = self.sequencer.wal_fault_probe();
        move || {
            if !running() {
                return Some("the ingest sequencer is not running: exports are answered 503 / UNAVAILABLE".into());
            }
            wal()
        }
    }

    /// Stops the sequencer after the exports already queued.
    pub fn shutdown(&mut self) {
        self.sequencer.shutdown();
    }

    /// Counts a request's result in `/metrics`, by its error kind or `ok`.
    pub fn count_request(&self, signal: &str, transport: Transport, error: Option<&Error>) {
        let label = match error {
            None => "ok",
            Some(Error::BadInput(_)) => "bad_input",
            Some(Error::Aborted(_)) => "aborted",
            Some(Error::Stalled { .. }) => "stalled",
            Some(Error::Unsupported(_)) => "unsupported",
            Some(Error::TooLarge { .. }) => "too_large",
            Some(Error::TooMany(_)) => "too_many",
            Some(Error::Unauthenticated(_)) => "unauthenticated",
            Some(Error::Overloaded { .. }) => "overloaded",
            Some(Error::Unavailable { .. }) => "unavailable",
            Some(Error::Internal(_)) => "internal",
        };
        self.metrics.ingest_requests.with_label_values(&[signal, transport.label(), label]).inc();
        if let Some(e) = error
            && !matches!(e, Error::Unauthenticated(_))
        {
            self.metrics.ingest_rejected.with_label_values(&[label]).inc();
        }
    }

    fn record(&self, a: &Applied, unit: &str) {
        let counter = if unit == "spans" { &self.metrics.ingest_spans } else { &self.metrics.ingest_points };
        let out = &a.outcome;
        counter.with_label_values(&["accepted"]).inc_by(out.accepted);
        counter.with_label_values(&["rejected"]).inc_by(out.late + out.future);
        self.metrics.ingest_rejected.with_label_values(&["late"]).inc_by(out.late);
        self.metrics.ingest_rejected.with_label_values(&["future"]).inc_by(out.future);
        self.metrics.series_overflow.inc_by(out.overflowed);
        self.metrics.cells_overflow.inc_by(out.cells_overflowed);
        self.metrics.names_truncated.inc_by(a.truncated);
    }
}

/// A message a person can act on: how many were rejected and why.
fn reject_message(a: &Applied, unit: &str) -> String {
    let out = &a.outcome;
    let mut parts = Vec::new();
    if out.late > 0 {
        parts.push(format!(
            "{} {unit} too late: their window is closed (window + allowed_lateness has passed)",
            out.late
        ));
    }
    if out.future > 0 {
        parts.push(format!("{} {unit} more than 5m in the future (check the sender's clock)", out.future));
    }
    for (n, why) in &a.unusable {
        parts.push(format!("{n} {unit}: {why}"));
    }
    parts.join("; ")
}
