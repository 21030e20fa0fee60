//! The transport-independent ingest pipeline: authenticate, admit, map, aggregate, and the
//! OTLP responses (`partial_success`) both receivers send back.

use crate::aggregator::{Outcome, SharedAggregator};
use crate::error::{Error, Result};
use crate::limiter::{Limiter, Permit};
use crate::mapping::{Mapper, Observations};
use cellpilot_core::auth::{Authenticator, Principal};
use cellpilot_core::clock::SharedClock;
use cellpilot_core::config::IngestConfig;
use cellpilot_core::metrics::Metrics;
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

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

/// Everything a receiver needs; one per process, shared by both transports.
#[derive(Debug)]
pub struct Ingest {
    mapper: Mapper,
    aggregator: SharedAggregator,
    limiter: Limiter,
    auth: Authenticator,
    metrics: Metrics,
    clock: SharedClock,
    max_request_size: usize,
}

impl Ingest {
    /// Wires the pipeline.
    pub fn new(
        config: &IngestConfig,
        aggregator: SharedAggregator,
        auth: Authenticator,
        metrics: Metrics,
        clock: SharedClock,
    ) -> Self {
        let max_request_size = config.max_request_size.as_usize();
        // Four maximal requests may be in flight before new ones are turned away.
        let limiter = Limiter::new(max_request_size.saturating_mul(4), metrics.ingest_inflight_bytes.clone());
        Self { mapper: Mapper::new(config), aggregator, limiter, auth, metrics, clock, max_request_size }
    }

    /// Largest accepted request, after decompression.
    pub fn max_request_size(&self) -> usize {
        self.max_request_size
    }

    /// The process metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Checks the `Authorization` header value.
    pub fn authorize(&self, header: Option<&str>) -> Result<Principal> {
        self.auth.check(header).map_err(Error::Unauthenticated)
    }

    /// Reserves room for a request of `bytes` decoded bytes, or answers overloaded.
    pub fn admit(&self, bytes: usize) -> Result<Permit> {
        self.limiter.try_acquire(bytes)
    }

    /// Counts a request's result in `/metrics`, by its error kind or `ok`.
    pub fn count_request(&self, signal: &str, transport: Transport, error: Option<&Error>) {
        let label = match error {
            None => "ok",
            Some(Error::BadInput(_)) => "bad_input",
            Some(Error::Unsupported(_)) => "unsupported",
            Some(Error::TooLarge { .. }) => "too_large",
            Some(Error::Unauthenticated(_)) => "unauthenticated",
            Some(Error::Overloaded { .. }) => "overloaded",
            Some(Error::Internal(_)) => "internal",
        };
        self.metrics.ingest_requests.with_label_values(&[signal, transport.label(), label]).inc();
        if let Some(e) = error
            && !matches!(e, Error::Unauthenticated(_))
        {
            self.metrics.ingest_rejected.with_label_values(&[label]).inc();
        }
    }

    /// Aggregates the request spans of `req`.
    pub fn traces(&self, req: &ExportTraceServiceRequest) -> Result<ExportTraceServiceResponse> {
        let obs = self.mapper.traces(req)?;
        let out = self.aggregate(&obs);
        self.record(&out, "spans");
        self.metrics.ingest_spans.with_label_values(&["not_request"]).inc_by(obs.ignored);
        let rejected = out.late + out.future;
        let partial_success = (rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: reject_message(&out, &[], "spans"),
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }

    /// Aggregates the latency histogram points of `req`.
    pub fn metrics_export(&self, req: &ExportMetricsServiceRequest) -> Result<ExportMetricsServiceResponse> {
        let obs = self.mapper.metrics(req)?;
        let out = self.aggregate(&obs);
        self.record(&out, "points");
        let ignored = &self.metrics.ingest_points_ignored;
        ignored.with_label_values(&["not_latency"]).inc_by(obs.ignored);
        ignored.with_label_values(&["spans_preferred"]).inc_by(out.spans_preferred);
        ignored.with_label_values(&["baseline"]).inc_by(out.baseline);
        ignored.with_label_values(&["out_of_order"]).inc_by(out.out_of_order);
        let mapped_rejects: u64 = obs.rejected.iter().map(|(n, _)| n).sum();
        if mapped_rejects > 0 {
            self.metrics.ingest_points.with_label_values(&["rejected"]).inc_by(mapped_rejects);
            self.metrics.ingest_rejected.with_label_values(&["unusable_point"]).inc_by(mapped_rejects);
        }
        let rejected = out.late + out.future + mapped_rejects;
        let partial_success = (rejected > 0).then(|| ExportMetricsPartialSuccess {
            rejected_data_points: rejected as i64,
            error_message: reject_message(&out, &obs.rejected, "data points"),
        });
        Ok(ExportMetricsServiceResponse { partial_success })
    }

    /// Accepts logs; only `cell.cutover` events matter to cellpilot.
    pub fn logs(&self, req: &ExportLogsServiceRequest) -> Result<ExportLogsServiceResponse> {
        let n: usize = req.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum();
        self.metrics.ingest_logs.inc_by(n as u64);
        Ok(ExportLogsServiceResponse { partial_success: None })
    }

    fn record(&self, out: &Outcome, unit: &str) {
        let (accepted, rejected) = if unit == "spans" {
            (&self.metrics.ingest_spans, &self.metrics.ingest_spans)
        } else {
            (&self.metrics.ingest_points, &self.metrics.ingest_points)
        };
        accepted.with_label_values(&["accepted"]).inc_by(out.accepted);
        rejected.with_label_values(&["rejected"]).inc_by(out.late + out.future);
        self.metrics.ingest_rejected.with_label_values(&["late"]).inc_by(out.late);
        self.metrics.ingest_rejected.with_label_values(&["future"]).inc_by(out.future);
        self.metrics.series_overflow.inc_by(out.overflowed);
    }

    fn aggregate(&self, obs: &Observations<'_>) -> Outcome {
        let now = self.clock.now_ms();
        let mut agg = self.aggregator.lock();
        let out = agg.apply(obs, now);
        self.metrics.series_live.set(agg.live_series() as i64);
        self.metrics.windows_open.set(agg.open_windows() as i64);
        out
    }
}

/// A message a person can act on: how many were rejected and why.
fn reject_message(out: &Outcome, mapped: &[(u64, String)], unit: &str) -> String {
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
    for (n, why) in mapped {
        parts.push(format!("{n} {unit}: {why}"));
    }
    parts.join("; ")
}
