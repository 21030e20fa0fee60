//! A cheap pass over a request before it is decoded: how many spans, data points or log records
//! it holds, and how many bytes decoding it would allocate. A protobuf message of a few bytes can
//! become a struct of hundreds (an empty span is 2 bytes on the wire and ~250 in memory), so the
//! size limit alone does not bound memory; this does, before anything is allocated.
//!
//! The protobuf walk knows which fields of the OTLP messages are sub-messages (and repeated
//! strings, and packed numbers); everything else is skipped as prost would skip it. The JSON walk
//! ([`scan_json`]) does the same over OTLP JSON's camelCase keys.

use crate::protowire::{Cur, FIXED32, FIXED64, LEN, Refused, START_GROUP, STRAY_END_GROUP, TOO_DEEP, VARINT};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile;
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::mem::size_of;

/// Deepest nesting walked: above the decoders' own limits (prost 100, serde_json 128), so what
/// this refuses they refuse too, and the walk's stack stays small.
pub const MAX_DEPTH: usize = 160;

/// What a request holds, counted before decoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// Spans, metric data points or log records.
    pub items: u64,
    /// Bytes the decoded request would allocate (structs, strings, numbers), estimated from above.
    pub decoded_bytes: u64,
}

/// The OTLP message types, as far as the walk needs to tell them apart.
#[allow(missing_docs)] // Each variant is the OTLP message of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// `ExportTraceServiceRequest`.
    ExportTraces,
    /// `ExportMetricsServiceRequest`.
    ExportMetrics,
    /// `ExportLogsServiceRequest`.
    ExportLogs,
    ResourceSpans,
    ScopeSpans,
    Span,
    Event,
    Link,
    Status,
    ResourceMetrics,
    ScopeMetrics,
    Metric,
    Gauge,
    Sum,
    Histogram,
    ExpHistogram,
    Summary,
    NumberPoint,
    HistogramPoint,
    ExpPoint,
    ExpBuckets,
    SummaryPoint,
    Quantile,
    Exemplar,
    ResourceLogs,
    ScopeLogs,
    LogRecord,
    Resource,
    EntityRef,
    Scope,
    KeyValue,
    AnyValue,
    ArrayValue,
    KvList,
}

/// What a field of a message is, to the walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// A sub-message (repeated or not).
    Msg(Msg),
    /// A repeated string: a `String` per element.
    Strings,
    /// Repeated varints (packed or not): a `u64` per element.
    Varints,
    /// Repeated 8-byte numbers (packed or not).
    Fixed64s,
    /// Anything else: scalars, strings and bytes (at most their length in heap), unknown fields.
    Other,
}

impl Msg {
    /// Bytes one decoded element of this message takes inline.
    fn size(self) -> u64 {
        (match self {
            Msg::ExportTraces | Msg::ExportMetrics | Msg::ExportLogs => 0,
            Msg::ResourceSpans => size_of::<ResourceSpans>(),
            Msg::ScopeSpans => size_of::<ScopeSpans>(),
            Msg::Span => size_of::<Span>(),
            Msg::Event => size_of::<Event>(),
            Msg::Link => size_of::<Link>(),
            Msg::Status => size_of::<Status>(),
            Msg::ResourceMetrics => size_of::<ResourceMetrics>(),
            Msg::ScopeMetrics => size_of::<ScopeMetrics>(),
            Msg::Metric => size_of::<Metric>(),
            Msg::Gauge => size_of::<Gauge>(),
            Msg::Sum => size_of::<Sum>(),
            Msg::Histogram => size_of::<Histogram>(),
            Msg::ExpHistogram => size_of::<ExponentialHistogram>(),
            Msg::Summary => size_of::<Summary>(),
            Msg::NumberPoint => size_of::<NumberDataPoint>(),
            Msg::HistogramPoint => size_of::<HistogramDataPoint>(),
            Msg::ExpPoint => size_of::<ExponentialHistogramDataPoint>(),
            Msg::ExpBuckets => size_of::<Buckets>(),
            Msg::SummaryPoint => size_of::<SummaryDataPoint>(),
            Msg::Quantile => size_of::<ValueAtQuantile>(),
            Msg::Exemplar => size_of::<Exemplar>(),
            Msg::ResourceLogs => size_of::<ResourceLogs>(),
            Msg::ScopeLogs => size_of::<ScopeLogs>(),
            Msg::LogRecord => size_of::<LogRecord>(),
            Msg::Resource => size_of::<Resource>(),
            Msg::EntityRef => size_of::<EntityRef>(),
            Msg::Scope => size_of::<InstrumentationScope>(),
            Msg::KeyValue => size_of::<KeyValue>(),
            Msg::AnyValue => size_of::<AnyValue>(),
            Msg::ArrayValue => size_of::<ArrayValue>(),
            Msg::KvList => size_of::<KeyValueList>(),
        }) as u64
    }

    /// Whether one element is one item of the request (what `max_items_per_request` counts).
    fn is_item(self) -> bool {
        matches!(
            self,
            Msg::Span | Msg::NumberPoint | Msg::HistogramPoint | Msg::ExpPoint | Msg::SummaryPoint | Msg::LogRecord
        )
    }

    /// Field `tag` of this message (the OTLP protos' numbering).
    fn field(self, tag: u32) -> Field {
        use Field::{Fixed64s, Msg as M, Other, Strings, Varints};
        match (self, tag) {
            (Msg::ExportTraces, 1) => M(Msg::ResourceSpans),
            (Msg::ExportMetrics, 1) => M(Msg::ResourceMetrics),
            (Msg::ExportLogs, 1) => M(Msg::ResourceLogs),
            (Msg::ResourceSpans | Msg::ResourceMetrics | Msg::ResourceLogs, 1) => M(Msg::Resource),
            (Msg::ResourceSpans, 2) => M(Msg::ScopeSpans),
            (Msg::ResourceMetrics, 2) => M(Msg::ScopeMetrics),
            (Msg::ResourceLogs, 2) => M(Msg::ScopeLogs),
            (Msg::ScopeSpans | Msg::ScopeMetrics | Msg::ScopeLogs, 1) => M(Msg::Scope),
            (Msg::ScopeSpans, 2) => M(Msg::Span),
            (Msg::ScopeMetrics, 2) => M(Msg::Metric),
            (Msg::ScopeLogs, 2) => M(Msg::LogRecord),
            (Msg::Resource, 1) | (Msg::Scope, 3) | (Msg::KvList, 1) => M(Msg::KeyValue),
            (Msg::Resource, 3) => M(Msg::EntityRef),
            (Msg::EntityRef, 3 | 4) => Strings,
            (Msg::Span, 9) | (Msg::Event, 3) | (Msg::Link, 4) => M(Msg::KeyValue),
            (Msg::Span, 11) => M(Msg::Event),
            (Msg::Span, 13) => M(Msg::Link),
            (Msg::Span, 15) => M(Msg::Status),
            (Msg::Metric, 5) => M(Msg::Gauge),
            (Msg::Metric, 7) => M(Msg::Sum),
            (Msg::Metric, 9) => M(Msg::Histogram),
            (Msg::Metric, 10) => M(Msg::ExpHistogram),
            (Msg::Metric, 11) => M(Msg::Summary),
            (Msg::Metric, 12) => M(Msg::KeyValue),
            (Msg::Gauge | Msg::Sum, 1) => M(Msg::NumberPoint),
            (Msg::Histogram, 1) => M(Msg::HistogramPoint),
            (Msg::ExpHistogram, 1) => M(Msg::ExpPoint),
            (Msg::Summary, 1) => M(Msg::SummaryPoint),
            (Msg::NumberPoint, 7) | (Msg::HistogramPoint, 9) | (Msg::ExpPoint, 1) => M(Msg::KeyValue),
            (Msg::SummaryPoint, 7) | (Msg::Exemplar, 7) => M(Msg::KeyValue),
            (Msg::NumberPoint, 5) | (Msg::HistogramPoint, 8) | (Msg::ExpPoint, 11) => M(Msg::Exemplar),
            (Msg::HistogramPoint, 6 | 7) => Fixed64s,
            (Msg::ExpPoint, 8 | 9) => M(Msg::ExpBuckets),
            (Msg::ExpBuckets, 2) => Varints,
            (Msg::SummaryPoint, 6) => M(Msg::Quantile),
            (Msg::LogRecord, 5) | (Msg::KeyValue, 2) | (Msg::ArrayValue, 1) => M(Msg::AnyValue),
            (Msg::LogRecord, 6) => M(Msg::KeyValue),
            (Msg::AnyValue, 5) => M(Msg::ArrayValue),
            (Msg::AnyValue, 6) => M(Msg::KvList),
            _ => Other,
        }
    }
}

/// Why the pre-scan refused a request: it is not well-formed protobuf or JSON, or nests deeper
/// than any decoder would follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrescanError {
    /// Not well-formed protobuf: says what (a truncated varint or length, a wire type or field
    /// number protobuf does not have).
    #[error("{0}")]
    Malformed(&'static str),
    /// Groups, messages or JSON values nested past [`MAX_DEPTH`].
    #[error("{0} nested more than {MAX_DEPTH} deep")]
    TooDeep(&'static str),
    /// An end-group tag with no group open.
    #[error("unmatched end of group")]
    UnmatchedEndGroup,
    /// Not JSON, or not the JSON shape OTLP has; says what and at which byte.
    #[error("{what} at byte {at}")]
    Json {
        /// What was wrong.
        what: String,
        /// Where, in bytes from the start of the body.
        at: usize,
    },
}

/// Counts the items and the decoded size of a protobuf `root` message; malformed wire data is
/// an error (prost would refuse it too).
pub fn scan_protobuf(root: Msg, bytes: &[u8]) -> Result<Counted, PrescanError> {
    let mut out = Counted::default();
    walk(root, bytes, 0, &mut out)?;
    Ok(out)
}

impl From<Refused> for PrescanError {
    fn from(r: Refused) -> Self {
        match r.0 {
            TOO_DEEP => PrescanError::TooDeep("groups"),
            STRAY_END_GROUP => PrescanError::UnmatchedEndGroup,
            why => PrescanError::Malformed(why),
        }
    }
}

fn walk(msg: Msg, b: &[u8], depth: usize, out: &mut Counted) -> Result<(), PrescanError> {
    if depth > MAX_DEPTH {
        return Err(PrescanError::TooDeep("messages"));
    }
    let mut cur = Cur::new(b);
    while !cur.done() {
        let (tag, wt) = cur.key()?;
        let field = msg.field(tag);
        let add = |out: &mut Counted, n: u64| out.decoded_bytes = out.decoded_bytes.saturating_add(n);
        match wt {
            VARINT => {
                cur.varint()?;
                if field == Field::Varints {
                    add(out, 8);
                }
            }
            FIXED64 => {
                cur.take(8)?;
                if field == Field::Fixed64s {
                    add(out, 8);
                }
            }
            FIXED32 => {
                cur.take(4)?;
            }
            LEN => {
                let len = cur.varint()?;
                let body = cur.take(len)?;
                match field {
                    Field::Msg(child) => {
                        add(out, child.size());
                        if child.is_item() {
                            out.items += 1;
                        }
                        walk(child, body, depth + 1, out)?;
                    }
                    Field::Strings => add(out, size_of::<String>() as u64 + len),
                    Field::Varints => add(out, 8 * body.iter().filter(|b| **b & 0x80 == 0).count() as u64),
                    Field::Fixed64s | Field::Other => add(out, len),
                }
            }
            // Groups are not used by OTLP, but prost skips unknown ones: so does the walk, up to
            // MAX_DEPTH deep in all.
            START_GROUP => cur.skip(wt, tag, u32::try_from(MAX_DEPTH - depth).unwrap_or(0))?,
            _ => return Err(PrescanError::UnmatchedEndGroup),
        }
    }
    Ok(())
}

/// The same count over an OTLP JSON body (camelCase keys, as the OTLP JSON mapping has them).
/// Inside an `AnyValue` every JSON value is also charged for the buffer the deserializer keeps.
pub fn scan_json(root: Msg, bytes: &[u8]) -> Result<Counted, PrescanError> {
    json::scan(root, bytes)
}

mod json {
    //! A JSON tokenizer that tracks which OTLP message each object is.

    use super::{Counted, MAX_DEPTH, Msg, PrescanError};
    use std::mem::size_of;

    /// What the deserializer buffers for each value inside an `AnyValue` (serde's `Content`).
    const BUFFERED: u64 = 48;

    /// A JSON key of `msg` -> the message its value (or each element of its array) is.
    fn child(msg: Msg, key: &str) -> Option<Msg> {
        Some(match (msg, key) {
            (Msg::ExportTraces, "resourceSpans") => Msg::ResourceSpans,
            (Msg::ExportMetrics, "resourceMetrics") => Msg::ResourceMetrics,
            (Msg::ExportLogs, "resourceLogs") => Msg::ResourceLogs,
            (Msg::ResourceSpans | Msg::ResourceMetrics | Msg::ResourceLogs, "resource") => Msg::Resource,
            (Msg::ResourceSpans, "scopeSpans") => Msg::ScopeSpans,
            (Msg::ResourceMetrics, "scopeMetrics") => Msg::ScopeMetrics,
            (Msg::ResourceLogs, "scopeLogs") => Msg::ScopeLogs,
            (Msg::ScopeSpans | Msg::ScopeMetrics | Msg::ScopeLogs, "scope") => Msg::Scope,
            (Msg::ScopeSpans, "spans") => Msg::Span,
            (Msg::ScopeMetrics, "metrics") => Msg::Metric,
            (Msg::ScopeLogs, "logRecords") => Msg::LogRecord,
            (Msg::Resource, "entityRefs") => Msg::EntityRef,
            (Msg::Span, "events") => Msg::Event,
            (Msg::Span, "links") => Msg::Link,
            (Msg::Span, "status") => Msg::Status,
            (Msg::Metric, "gauge") => Msg::Gauge,
            (Msg::Metric, "sum") => Msg::Sum,
            (Msg::Metric, "histogram") => Msg::Histogram,
            (Msg::Metric, "exponentialHistogram") => Msg::ExpHistogram,
            (Msg::Metric, "summary") => Msg::Summary,
            (Msg::Gauge | Msg::Sum, "dataPoints") => Msg::NumberPoint,
            (Msg::Histogram, "dataPoints") => Msg::HistogramPoint,
            (Msg::ExpHistogram, "dataPoints") => Msg::ExpPoint,
            (Msg::Summary, "dataPoints") => Msg::SummaryPoint,
            (Msg::NumberPoint | Msg::HistogramPoint | Msg::ExpPoint, "exemplars") => Msg::Exemplar,
            (Msg::ExpPoint, "positive" | "negative") => Msg::ExpBuckets,
            (Msg::SummaryPoint, "quantileValues") => Msg::Quantile,
            (Msg::Exemplar, "filteredAttributes") => Msg::KeyValue,
            (Msg::LogRecord, "body") | (Msg::KeyValue, "value") => Msg::AnyValue,
            (Msg::ArrayValue, "values") => Msg::AnyValue,
            (Msg::KvList, "values") => Msg::KeyValue,
            (Msg::AnyValue, "arrayValue") => Msg::ArrayValue,
            (Msg::AnyValue, "kvlistValue") => Msg::KvList,
            (
                Msg::Resource
                | Msg::Scope
                | Msg::Span
                | Msg::Event
                | Msg::Link
                | Msg::NumberPoint
                | Msg::HistogramPoint
                | Msg::ExpPoint
                | Msg::SummaryPoint
                | Msg::LogRecord,
                "attributes",
            ) => Msg::KeyValue,
            (Msg::Metric, "metadata") => Msg::KeyValue,
            _ => return None,
        })
    }

    /// A container being read: the message of its objects (`None`: not one we track), whether it
    /// is an array, and whether it lies inside an `AnyValue` (buffered by the deserializer).
    #[derive(Clone, Copy)]
    struct Frame {
        msg: Option<Msg>,
        array: bool,
        buffered: bool,
    }

    struct Scanner<'a> {
        b: &'a [u8],
        pos: usize,
        out: Counted,
    }

    impl Scanner<'_> {
        fn add(&mut self, n: u64) {
            self.out.decoded_bytes = self.out.decoded_bytes.saturating_add(n);
        }

        fn ws(&mut self) {
            while self.b.get(self.pos).is_some_and(|c| c.is_ascii_whitespace()) {
                self.pos += 1;
            }
        }

        fn peek(&mut self) -> Result<u8, PrescanError> {
            self.ws();
            self.b
                .get(self.pos)
                .copied()
                .ok_or_else(|| PrescanError::Json { what: "unexpected end of JSON".into(), at: self.pos })
        }

        fn expect(&mut self, c: u8) -> Result<(), PrescanError> {
            if self.peek()? != c {
                return Err(PrescanError::Json { what: format!("expected `{}`", c as char), at: self.pos });
            }
            self.pos += 1;
            Ok(())
        }

        /// A string (after its opening quote is next): its raw bytes, without escapes resolved.
        fn string(&mut self) -> Result<&[u8], PrescanError> {
            self.expect(b'"')?;
            let start = self.pos;
            loop {
                match self.b.get(self.pos) {
                    None => return Err(PrescanError::Json { what: "unterminated JSON string".into(), at: self.pos }),
                    Some(b'"') => break,
                    Some(b'\\') => self.pos += 2,
                    Some(_) => self.pos += 1,
                }
            }
            let s = self
                .b
                .get(start..self.pos)
                .ok_or_else(|| PrescanError::Json { what: "unterminated JSON string".into(), at: start })?;
            self.pos += 1;
            Ok(s)
        }

        /// A key, escapes resolved (a key spelled with escapes is the same key to serde). Keys are
        /// only compared with OTLP's names, so a malformed one is just a key we do not track
        /// (serde skips unknown keys without checking them either).
        fn key(&mut self) -> Result<String, PrescanError> {
            let raw = self.string()?;
            if !raw.contains(&b'\\') {
                return Ok(String::from_utf8_lossy(raw).into_owned());
            }
            let mut quoted = Vec::with_capacity(raw.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(raw);
            quoted.push(b'"');
            Ok(serde_json::from_slice::<String>(&quoted).unwrap_or_default())
        }

        fn scalar(&mut self) -> Result<(), PrescanError> {
            let start = self.pos;
            while self.b.get(self.pos).is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace()) {
                self.pos += 1;
            }
            if self.pos == start {
                return Err(PrescanError::Json { what: "expected a JSON value".into(), at: start });
            }
            Ok(())
        }

        /// One value in `frame` (its container's context; `msg` is what an object here is).
        fn value(&mut self, msg: Option<Msg>, buffered: bool, depth: usize) -> Result<(), PrescanError> {
            if depth > MAX_DEPTH {
                return Err(PrescanError::TooDeep("JSON values"));
            }
            let buffered = buffered || msg == Some(Msg::AnyValue);
            if buffered {
                self.add(BUFFERED);
            }
            match self.peek()? {
                b'{' => {
                    self.pos += 1;
                    if let Some(m) = msg {
                        self.add(m.size());
                        if m.is_item() {
                            self.out.items += 1;
                        }
                    }
                    let frame = Frame { msg, array: false, buffered };
                    self.members(frame, depth)
                }
                b'[' => {
                    self.pos += 1;
                    let frame = Frame { msg, array: true, buffered };
                    self.members(frame, depth)
                }
                b'"' => {
                    let n = self.string()?.len() as u64;
                    // Numbers as strings (int64, bucket counts) become 8 bytes; strings their length.
                    self.add(n.max(8));
                    Ok(())
                }
                _ => {
                    self.add(8);
                    self.scalar()
                }
            }
        }

        fn members(&mut self, f: Frame, depth: usize) -> Result<(), PrescanError> {
            let close = if f.array { b']' } else { b'}' };
            if self.peek()? == close {
                self.pos += 1;
                return Ok(());
            }
            loop {
                if f.array {
                    self.value(f.msg, f.buffered, depth + 1)?;
                } else {
                    let key = self.key()?;
                    self.expect(b':')?;
                    let child = f.msg.and_then(|m| child(m, &key));
                    // Every key of a tracked object costs a little (a `String` while buffered).
                    if f.buffered {
                        self.add(size_of::<String>() as u64 + key.len() as u64);
                    }
                    self.value(child, f.buffered, depth + 1)?;
                }
                match self.peek()? {
                    b',' => self.pos += 1,
                    c if c == close => {
                        self.pos += 1;
                        return Ok(());
                    }
                    c => return Err(PrescanError::Json { what: format!("unexpected `{}`", c as char), at: self.pos }),
                }
            }
        }
    }

    pub(super) fn scan(root: Msg, b: &[u8]) -> Result<Counted, PrescanError> {
        let mut s = Scanner { b, pos: 0, out: Counted::default() };
        s.value(Some(root), false, 0)?;
        s.ws();
        if s.pos != b.len() {
            return Err(PrescanError::Json { what: "trailing characters after the JSON value".into(), at: s.pos });
        }
        Ok(s.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    fn traces(spans: usize, attrs: usize) -> ExportTraceServiceRequest {
        let kv = KeyValue { key: "k".into(), value: Some(AnyValue::default()), ..Default::default() };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..spans)
                        .map(|_| Span { attributes: vec![kv.clone(); attrs], ..Default::default() })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn counts_items_and_charges_structs() {
        let req = traces(1000, 3);
        let bytes = req.encode_to_vec();
        let c = scan_protobuf(Msg::ExportTraces, &bytes).unwrap();
        assert_eq!(c.items, 1000);
        let structs = 1000 * (size_of::<Span>() + 3 * (size_of::<KeyValue>() + size_of::<AnyValue>()));
        assert!(c.decoded_bytes >= structs as u64, "{} < {structs}", c.decoded_bytes);
        // The same in JSON.
        let json = serde_json::to_vec(&req).unwrap();
        let j = scan_json(Msg::ExportTraces, &json).unwrap();
        assert_eq!(j.items, 1000);
        assert!(j.decoded_bytes >= structs as u64);
    }

    #[test]
    fn empty_spans_are_cheap_on_the_wire_and_charged_in_full() {
        // 2 bytes per span: a 1 MiB body holds half a million.
        let mut body = Vec::new();
        let n = 500_000usize;
        let mut scope = Vec::new();
        for _ in 0..n {
            scope.extend_from_slice(&[0x12, 0x00]);
        }
        let mut rs = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut rs);
        rs.extend_from_slice(&scope);
        body.push(0x0a);
        prost::encoding::encode_varint(rs.len() as u64, &mut body);
        body.extend_from_slice(&rs);
        let c = scan_protobuf(Msg::ExportTraces, &body).unwrap();
        assert_eq!(c.items, n as u64);
        assert!(c.decoded_bytes >= (n * size_of::<Span>()) as u64);
        assert_eq!(
            ExportTraceServiceRequest::decode(&body[..]).unwrap().resource_spans[0].scope_spans[0].spans.len(),
            n
        );
    }

    #[test]
    fn wire_refusals_say_what_prost_would_refuse() {
        let scan = |b: &[u8]| scan_protobuf(Msg::ExportTraces, b).unwrap_err();
        // Field 15 as a group, nested 200 deep: past MAX_DEPTH, refused before it is walked.
        let deep: Vec<u8> = std::iter::repeat_n(0x7b, 200).chain(std::iter::repeat_n(0x7c, 200)).collect();
        assert_eq!(scan(&deep), PrescanError::TooDeep("groups"));
        assert_eq!(scan(&[0x0c]), PrescanError::UnmatchedEndGroup, "an end-group with none open");
        assert_eq!(scan(&[0xff, 0xff, 0xff, 0xff, 0x7f]), PrescanError::Malformed("key past 32 bits"));
        assert_eq!(
            scan(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            PrescanError::Malformed("varint past 64 bits")
        );
        assert_eq!(scan(&[0x0e]), PrescanError::Malformed("invalid wire type"));
        for bad in [&deep[..], &[0x0c], &[0xff, 0xff, 0xff, 0xff, 0x7f], &[0x0e]] {
            assert!(ExportTraceServiceRequest::decode(bad).is_err(), "prost refuses {bad:?} too");
        }
    }

    #[test]
    fn malformed_and_deep_input_is_refused() {
        assert!(scan_protobuf(Msg::ExportTraces, &[0x0a, 0x05, 0x00]).is_err(), "length past the end");
        assert!(scan_protobuf(Msg::ExportTraces, &[0x0b]).is_err(), "a group without its end");
        assert!(scan_protobuf(Msg::ExportTraces, &[0x7b, 0x08, 0x01, 0x7c]).is_ok(), "unknown groups are skipped");
        assert!(scan_protobuf(Msg::ExportTraces, &[0xff; 11]).is_err(), "long varint");
        // AnyValue -> ArrayValue -> AnyValue ... 200 deep.
        let mut v = Vec::new();
        for _ in 0..MAX_DEPTH + 10 {
            let mut arr = vec![0x0a];
            prost::encoding::encode_varint(v.len() as u64, &mut arr);
            arr.extend_from_slice(&v);
            let mut any = vec![0x2a];
            prost::encoding::encode_varint(arr.len() as u64, &mut any);
            any.extend_from_slice(&arr);
            v = any;
        }
        assert!(matches!(scan_protobuf(Msg::AnyValue, &v).unwrap_err(), PrescanError::TooDeep(_)));
        let deep = "{\"arrayValue\":{\"values\":[".repeat(MAX_DEPTH);
        assert!(matches!(scan_json(Msg::AnyValue, deep.as_bytes()).unwrap_err(), PrescanError::TooDeep(_)));
        assert!(scan_json(Msg::ExportTraces, b"{\"resourceSpans\": [}").is_err());
        assert!(scan_json(Msg::ExportTraces, b"{} x").is_err());
        assert!(scan_json(Msg::ExportTraces, b"\"unterminated").is_err());
    }

    #[test]
    fn malformed_unknown_keys_are_skipped_like_serde_skips_them() {
        // Found by the `otlp_json` fuzz target: serde ignores an unknown key without checking it.
        let body = b"{\"ignored\": {\"\xff\xfeKey\": 1}, \"resourceSpans\": []}";
        assert!(
            serde_json::from_slice::<opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest>(body)
                .is_ok()
        );
        assert_eq!(scan_json(Msg::ExportTraces, body).unwrap().items, 0);
    }

    #[test]
    fn escaped_keys_count_like_plain_ones() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"sp\u0061ns":[{},{},{}]}]}]}"#;
        assert_eq!(scan_json(Msg::ExportTraces, body).unwrap().items, 3);
    }
}
