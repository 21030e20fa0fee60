//! [`Export`]: one OTLP export on its way through the sequencer — folded, logged to the WAL
//! and applied — and [`Applied`], what applying it did.

use crate::aggregator::Outcome;
use crate::batch::SpanBatch;
use crate::error::Result;
use crate::mapping::{Mapper, Observations};
use crate::wal::Kind;
use crate::wire::WireTraces;
use cellpilot_core::window::WindowSpec;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use prost::bytes::Bytes;

/// An export on its way to the sequencer.
#[derive(Debug)]
pub enum Export {
    /// Traces, decoded (OTLP JSON), not folded yet.
    Traces(ExportTraceServiceRequest),
    /// Traces in their protobuf encoding, not folded yet (the wire scanner maps them).
    TracesWire(WireTraces),
    /// Traces folded to their span batch, with its WAL encoding.
    Spans(Box<SpanBatch>, Vec<u8>),
    /// Metrics.
    Metrics(ExportMetricsServiceRequest),
    /// Logs.
    Logs(ExportLogsServiceRequest),
}

impl Export {
    /// The request in protobuf, for a version 1 WAL record (metrics and logs still log it).
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Export::Traces(r) => r.encode_to_vec(),
            Export::TracesWire(w) => w.bytes().to_vec(),
            Export::Spans(_, encoded) => encoded.clone(),
            Export::Metrics(r) => r.encode_to_vec(),
            Export::Logs(r) => r.encode_to_vec(),
        }
    }

    pub(crate) fn map<'a>(&'a self, mapper: &Mapper) -> Result<Observations<'a>> {
        match self {
            Export::Traces(r) => mapper.traces(r),
            Export::TracesWire(w) => w.map(mapper),
            Export::Metrics(r) => mapper.metrics(r),
            Export::Spans(..) | Export::Logs(_) => Ok(Observations::default()),
        }
    }

    /// Traces folded to their span batch (what the WAL logs) with windows of `spec` at `now_ms`;
    /// other exports as they are.
    pub fn fold(self, mapper: &Mapper, spec: WindowSpec, now_ms: i64) -> Result<Self> {
        let batch = match &self {
            Export::Traces(_) | Export::TracesWire(_) => SpanBatch::from_spans(&self.map(mapper)?, spec, now_ms),
            _ => return Ok(self),
        };
        let mut encoded = Vec::new();
        batch.encode(&mut encoded);
        Ok(Export::Spans(Box::new(batch), encoded))
    }

    /// The WAL record's kind and payload (`raw`: the request's protobuf bytes, when at hand).
    pub(crate) fn record<'a>(&'a self, raw: &'a Option<Bytes>, scratch: &'a mut Vec<u8>) -> (Kind, &'a [u8]) {
        match (self, raw) {
            (Export::Spans(_, encoded), _) => (Kind::Spans, encoded),
            (Export::Metrics(_), Some(b)) => (Kind::Metrics, b),
            (Export::Logs(_), Some(b)) => (Kind::Logs, b),
            (e, _) => {
                *scratch = e.encode();
                let kind = match e {
                    Export::Logs(_) => Kind::Logs,
                    Export::Metrics(_) => Kind::Metrics,
                    _ => Kind::Traces,
                };
                (kind, scratch)
            }
        }
    }

    /// Log records in a logs export.
    pub fn log_records(&self) -> usize {
        match self {
            Export::Logs(r) => r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum(),
            _ => 0,
        }
    }
}

/// What the sequencer did with one export.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Counting outcome.
    pub outcome: Outcome,
    /// Spans that are not requests, or metrics that carry no latency.
    pub ignored: u64,
    /// Points refused while mapping, with reasons.
    pub unusable: Vec<(u64, String)>,
    /// Names cut to `max_attribute_length`.
    pub truncated: u64,
}
