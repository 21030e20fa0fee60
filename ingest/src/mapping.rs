//! OTLP -> observations: which spans are requests, and their cell, service, route, error and cause;
//! which metric points carry latency, in which unit and temporality.
//!
//! Mapping borrows from the decoded request so the hot path allocates only for new strings.

use crate::attrs::{Val, first_str, first_str_of, get_str, get_str_of, grpc_cause};
use crate::error::{Error, Result};
use crate::stream::StreamKey;
use cellpilot_core::config::IngestConfig;
use cellpilot_core::{UNKNOWN_CELL, UNKNOWN_SERVICE};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric::Data};
use std::borrow::Cow;

pub use crate::observations::*;

/// The mapping rules, from `[ingest]`.
#[derive(Debug, Clone)]
pub struct Mapper {
    cell_keys: Vec<String>,
    /// Bit i set: span kind i counts as a request.
    kinds: u8,
    latency_metrics: Vec<String>,
    /// Longest cell, service, route or cause name kept, in bytes.
    max_name: usize,
    /// Unit tests of the export path's isolation: mapping a span of this service panics.
    #[cfg(test)]
    pub(crate) panic_on_service: Option<&'static str>,
}

/// What one attribute scan found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan<'a> {
    cell: Option<&'a str>,
    cell_rank: usize,
    http_route: Option<&'a str>,
    rpc_service: Option<&'a str>,
    rpc_method: Option<&'a str>,
    http_status: Option<i64>,
    http_status_legacy: Option<i64>,
    grpc_status: Option<i64>,
    error_type: Option<&'a str>,
    cause: Option<&'a str>,
}

impl Default for Scan<'_> {
    fn default() -> Self {
        Scan {
            cell: None,
            cell_rank: usize::MAX,
            http_route: None,
            rpc_service: None,
            rpc_method: None,
            http_status: None,
            http_status_legacy: None,
            grpc_status: None,
            error_type: None,
            cause: None,
        }
    }
}

/// `code / 100` as the spec's cause names for HTTP status classes, without formatting.
const HTTP_CLASSES: [&str; 10] = ["0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx"];

impl<'a> Scan<'a> {
    fn of(attrs: &'a [KeyValue], cell_keys: &[String]) -> Self {
        let mut s = Scan::default();
        for kv in attrs {
            s.feed(kv.key.as_bytes(), Val::of(kv.value.as_ref()), cell_keys);
        }
        s
    }

    /// One attribute, in order: the best-ranked cell key wins (the first of equals), the other
    /// keys are last-wins (a later attribute of the same key replaces, even with nothing).
    #[inline]
    pub(crate) fn feed(&mut self, key: &[u8], v: Val<'a>, cell_keys: &[String]) {
        if let Some(rank) = cell_keys.iter().position(|k| k.as_bytes() == key)
            && rank < self.cell_rank
            && let Some(c) = v.str()
        {
            self.cell = Some(c);
            self.cell_rank = rank;
        }
        match key {
            b"http.route" => self.http_route = v.str(),
            b"rpc.service" => self.rpc_service = v.str(),
            b"rpc.method" => self.rpc_method = v.str(),
            b"http.response.status_code" => self.http_status = v.int(),
            b"http.status_code" => self.http_status_legacy = v.int(),
            b"rpc.grpc.status_code" => self.grpc_status = v.int(),
            b"error.type" => self.error_type = v.str(),
            b"cause" => self.cause = v.str(),
            _ => {}
        }
    }

    fn route(&self) -> Option<Cow<'a, str>> {
        if let Some(r) = self.http_route {
            return Some(Cow::Borrowed(r));
        }
        match (self.rpc_service, self.rpc_method) {
            (Some(s), Some(m)) => Some(Cow::Owned(format!("{s}/{m}"))),
            _ => None,
        }
    }

    fn http_status(&self) -> Option<i64> {
        self.http_status.or(self.http_status_legacy)
    }

    /// Whether the attributes alone make this an error.
    fn is_error(&self) -> bool {
        self.http_status().is_some_and(|c| c >= 500) || self.grpc_status.is_some_and(|c| matches!(c, 2 | 4 | 13 | 14))
    }

    /// The spec's cause precedence: `error.type`, `cause`, HTTP status class, gRPC code, `error`.
    fn cause(&self) -> Cow<'a, str> {
        if let Some(c) = self.error_type.or(self.cause) {
            return Cow::Borrowed(c);
        }
        if let Some(code) = self.http_status() {
            return match usize::try_from(code / 100).ok().and_then(|c| HTTP_CLASSES.get(c)) {
                Some(class) => Cow::Borrowed(class),
                None => Cow::Owned(format!("{}xx", code / 100)),
            };
        }
        if let Some(code) = self.grpc_status {
            return Cow::Borrowed(grpc_cause(code));
        }
        Cow::Borrowed("error")
    }
}

/// What mapping a span needs of it besides its attributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpanView<'a> {
    pub(crate) trace_id_len: usize,
    pub(crate) span_id_len: usize,
    pub(crate) kind: i32,
    /// The span's name (UTF-8), the route when no attribute names one.
    pub(crate) name: &'a [u8],
    /// The span's status is ERROR.
    pub(crate) status_error: bool,
    pub(crate) start: u64,
    pub(crate) end: u64,
}

/// What mapping a span needs of its resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResourceView<'a> {
    service: StrId,
    cell: Option<&'a str>,
}

/// Where a span sits in its request, for error messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanAt {
    pub(crate) resource: usize,
    pub(crate) scope: usize,
    pub(crate) span: usize,
}

/// `Status.code` ERROR in the OTLP proto.
pub(crate) const SPAN_STATUS_ERROR: i32 = 2;

impl Mapper {
    /// Rules from the `[ingest]` section (validated there).
    pub fn new(config: &IngestConfig) -> Self {
        let mut kinds = 0u8;
        for k in &config.request_span_kinds {
            // SpanKind numbering of the OTLP proto.
            let bit = match k.as_str() {
                "internal" => 1,
                "server" => 2,
                "client" => 3,
                "producer" => 4,
                "consumer" => 5,
                _ => continue,
            };
            kinds |= 1 << bit;
        }
        Self {
            cell_keys: config.cell_attributes.clone(),
            kinds,
            latency_metrics: config.latency_metrics.clone(),
            max_name: config.max_attribute_length,
            #[cfg(test)]
            panic_on_service: None,
        }
    }

    /// Maps the request spans of `req`; malformed ids fail the whole request.
    pub fn traces<'a>(&self, req: &'a ExportTraceServiceRequest) -> Result<Observations<'a>> {
        let mut out = Observations::default();
        let total: usize = req.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        out.spans.reserve(total);
        let mut res_attrs = Vec::new();
        for (ri, rs) in req.resource_spans.iter().enumerate() {
            res_attrs.clear();
            let attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            res_attrs.extend(attrs.iter().map(|kv| (kv.key.as_bytes(), Val::of(kv.value.as_ref()))));
            let res = self.resource(&mut out, &res_attrs);
            for (si, ss) in rs.scope_spans.iter().enumerate() {
                for (pi, span) in ss.spans.iter().enumerate() {
                    let view = SpanView {
                        trace_id_len: span.trace_id.len(),
                        span_id_len: span.span_id.len(),
                        kind: span.kind,
                        name: span.name.as_bytes(),
                        status_error: span.status.as_ref().is_some_and(|s| s.code == SPAN_STATUS_ERROR),
                        start: span.start_time_unix_nano,
                        end: span.end_time_unix_nano,
                    };
                    let at = SpanAt { resource: ri, scope: si, span: pi };
                    let attrs = &span.attributes;
                    self.span(&mut out, &res, at, &view, || Scan::of(attrs, &self.cell_keys))?;
                }
            }
        }
        Ok(out)
    }

    /// The cell keys, in rank order.
    pub(crate) fn cell_keys(&self) -> &[String] {
        &self.cell_keys
    }

    /// Interns a resource's service and finds its cell.
    pub(crate) fn resource<'a>(&self, out: &mut Observations<'a>, attrs: &[(&[u8], Val<'a>)]) -> ResourceView<'a> {
        let service_name = get_str_of(attrs, "service.name");
        #[cfg(test)]
        if self.panic_on_service.is_some() && self.panic_on_service == service_name {
            panic!("injected mapping panic");
        }
        ResourceView {
            service: out.name(Cow::Borrowed(service_name.unwrap_or(UNKNOWN_SERVICE)), self.max_name),
            cell: first_str_of(attrs, &self.cell_keys),
        }
    }

    /// Maps one span: checks its ids, skips it unless its kind is a request, else adds it with
    /// the scan of its attributes (asked for only then).
    pub(crate) fn span<'a>(
        &self,
        out: &mut Observations<'a>,
        res: &ResourceView<'a>,
        at: SpanAt,
        span: &SpanView<'a>,
        scan: impl FnOnce() -> Scan<'a>,
    ) -> Result<()> {
        let SpanAt { resource: ri, scope: si, span: pi } = at;
        if span.trace_id_len != 16 {
            return Err(Error::BadInput(format!(
                "resource_spans[{ri}].scope_spans[{si}].spans[{pi}]: trace_id must be 16 bytes, got {}",
                span.trace_id_len
            )));
        }
        if span.span_id_len != 8 {
            return Err(Error::BadInput(format!(
                "resource_spans[{ri}].scope_spans[{si}].spans[{pi}]: span_id must be 8 bytes, got {}",
                span.span_id_len
            )));
        }
        if !(0..8).contains(&span.kind) || self.kinds & (1 << span.kind) == 0 {
            out.ignored += 1;
            return Ok(());
        }
        let scan = scan();
        let cell = scan.cell.or(res.cell).unwrap_or(UNKNOWN_CELL);
        let cell = out.name(Cow::Borrowed(cell), self.max_name);
        let route = match (scan.http_route, scan.rpc_service, scan.rpc_method) {
            (None, Some(svc), Some(method)) => out.rpc_route(svc, method, self.max_name),
            _ => {
                let name = || Cow::Borrowed(std::str::from_utf8(span.name).unwrap_or_default());
                out.name(scan.route().unwrap_or_else(name), self.max_name)
            }
        };
        let failed = span.status_error || scan.is_error();
        let cause = if failed { out.name(scan.cause(), self.max_name) } else { NO_CAUSE };
        let start_ns = clamp_ns(span.start);
        let end_ns = clamp_ns(span.end);
        out.spans.push(SpanObs {
            cell,
            service: res.service,
            route,
            cause,
            latency_us: (end_ns.saturating_sub(start_ns)).max(0) as u64 / 1000,
            end_ns,
            start_ns,
        });
        Ok(())
    }

    /// Maps the latency histogram points of `req`.
    pub fn metrics<'a>(&self, req: &'a ExportMetricsServiceRequest) -> Result<Observations<'a>> {
        let mut out = Observations::default();
        for rm in &req.resource_metrics {
            let res_attrs: &[KeyValue] = rm.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            let service_name = get_str(res_attrs, "service.name").unwrap_or(UNKNOWN_SERVICE);
            let service = out.name(Cow::Borrowed(service_name), self.max_name);
            let res_cell = first_str(res_attrs, &self.cell_keys);
            for sm in &rm.scope_metrics {
                for metric in &sm.metrics {
                    let points = match &metric.data {
                        Some(Data::Histogram(h)) => h.data_points.len(),
                        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                        _ => 0,
                    };
                    if !self.latency_metrics.contains(&metric.name) || points == 0 {
                        out.ignored += 1;
                        continue;
                    }
                    let Some(to_us) = unit_to_us(&metric.unit) else {
                        out.rejected.push((
                            points as u64,
                            format!(
                                "metric `{}` has unit `{}`, not a time unit (s, ms, us, ns)",
                                metric.name, metric.unit
                            ),
                        ));
                        continue;
                    };
                    let temporality_of = |t: i32| match AggregationTemporality::try_from(t) {
                        Ok(AggregationTemporality::Delta) => Some(Temporality::Delta),
                        Ok(AggregationTemporality::Cumulative) => Some(Temporality::Cumulative),
                        _ => None,
                    };
                    let mut push = |attrs: &'a [KeyValue],
                                    start: u64,
                                    time: u64,
                                    temporality: Temporality,
                                    buckets: Buckets,
                                    max: Option<f64>| {
                        let scan = Scan::of(attrs, &self.cell_keys);
                        // Field by field: `out.rejected` is borrowed outside this closure.
                        let (strings, cut, bound) = (&mut out.strings, &mut out.truncated, self.max_name);
                        let mut name = |s| {
                            let (id, was_cut) = strings.intern_bounded(s, bound);
                            *cut += u64::from(was_cut);
                            id
                        };
                        let cell = name(Cow::Borrowed(scan.cell.or(res_cell).unwrap_or(UNKNOWN_CELL)));
                        let route = name(scan.route().unwrap_or(Cow::Borrowed("unknown_route")));
                        let cause = if scan.is_error() { name(scan.cause()) } else { NO_CAUSE };
                        out.points.push(PointObs {
                            stream: StreamKey {
                                resource: res_attrs,
                                scope: sm.scope.as_ref(),
                                metric: &metric.name,
                                attrs,
                            },
                            cell,
                            service,
                            route,
                            cause,
                            start_ns: clamp_ns(start),
                            time_ns: clamp_ns(time),
                            temporality,
                            buckets,
                            max,
                            to_us,
                        });
                    };
                    match &metric.data {
                        Some(Data::Histogram(h)) => {
                            let Some(t) = temporality_of(h.aggregation_temporality) else {
                                out.rejected.push((
                                    points as u64,
                                    format!("metric `{}` has no aggregation temporality", metric.name),
                                ));
                                continue;
                            };
                            for p in &h.data_points {
                                if p.bucket_counts.len() != p.explicit_bounds.len() + 1 {
                                    if p.bucket_counts.is_empty() {
                                        // A point with only count/sum carries no distribution.
                                        out.rejected.push((
                                            1,
                                            format!("metric `{}`: a point has no bucket counts", metric.name),
                                        ));
                                        continue;
                                    }
                                    return Err(Error::BadInput(format!(
                                        "metric `{}`: {} bucket counts for {} explicit bounds (need bounds + 1)",
                                        metric.name,
                                        p.bucket_counts.len(),
                                        p.explicit_bounds.len()
                                    )));
                                }
                                let buckets = Buckets::Explicit {
                                    bounds: p.explicit_bounds.clone(),
                                    counts: p.bucket_counts.clone(),
                                };
                                push(&p.attributes, p.start_time_unix_nano, p.time_unix_nano, t, buckets, p.max);
                            }
                        }
                        Some(Data::ExponentialHistogram(h)) => {
                            let Some(t) = temporality_of(h.aggregation_temporality) else {
                                out.rejected.push((
                                    points as u64,
                                    format!("metric `{}` has no aggregation temporality", metric.name),
                                ));
                                continue;
                            };
                            for p in &h.data_points {
                                if !(-10..=20).contains(&p.scale) {
                                    return Err(Error::BadInput(format!(
                                        "metric `{}`: exponential histogram scale {} is outside -10..=20",
                                        metric.name, p.scale
                                    )));
                                }
                                let positive = p.positive.clone().unwrap_or_default();
                                // Latencies are never negative: negative buckets join the zero bucket.
                                let negative: u64 = p.negative.as_ref().map_or(0, |b| saturating_sum(&b.bucket_counts));
                                let buckets = Buckets::Exponential {
                                    scale: p.scale,
                                    zero_count: p.zero_count.saturating_add(negative),
                                    offset: positive.offset,
                                    counts: positive.bucket_counts,
                                };
                                push(&p.attributes, p.start_time_unix_nano, p.time_unix_nano, t, buckets, p.max);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Multiplier from a UCUM time unit to microseconds.
fn unit_to_us(unit: &str) -> Option<f64> {
    match unit {
        "s" => Some(1e6),
        "ms" => Some(1e3),
        "us" | "µs" => Some(1.0),
        "ns" => Some(1e-3),
        _ => None,
    }
}

/// OTLP timestamps are u64 nanoseconds; ours are i64 (good until 2262).
fn clamp_ns(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
    };

    fn kv(k: &str, v: Value) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
    }
    fn s(v: &str) -> Value {
        Value::StringValue(v.into())
    }

    fn span(attrs: Vec<KeyValue>) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            name: "GET".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_020_000_000,
            attributes: attrs,
            ..Default::default()
        }
    }

    fn request(res: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource { attributes: res, ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn maps_cell_route_error_and_cause() {
        let m = Mapper::new(&IngestConfig::default());
        let mut client = span(vec![]);
        client.kind = SpanKind::Client as i32;
        let mut failed = span(vec![
            kv("rpc.service", s("Pay")),
            kv("rpc.method", s("Charge")),
            kv("rpc.grpc.status_code", Value::IntValue(14)),
        ]);
        failed.name = "x".into();
        let mut status_err = span(vec![kv("cell", s("b")), kv("http.response.status_code", Value::IntValue(404))]);
        status_err.status = Some(Status { code: StatusCode::Error as i32, ..Default::default() });
        let req = request(
            vec![kv("service.name", s("checkout")), kv("cell", s("res-cell"))],
            vec![
                span(vec![
                    kv("cell.id", s("a")),
                    kv("cell", s("ignored")),
                    kv("http.route", s("/pay")),
                    kv("http.response.status_code", Value::IntValue(503)),
                ]),
                client,
                failed,
                status_err,
                span(vec![
                    kv("cell.id", s("")),
                    kv("error.type", s("timeout")),
                    kv("http.status_code", Value::StringValue("500".into())),
                ]),
            ],
        );
        let obs = m.traces(&req).unwrap();
        assert_eq!(obs.ignored, 1);
        let view: Vec<_> = obs
            .spans
            .iter()
            .map(|o| {
                let cause = if o.cause == NO_CAUSE { "-" } else { obs.strings.get(o.cause) };
                (obs.strings.get(o.cell), obs.strings.get(o.service), obs.strings.get(o.route), cause, o.latency_us)
            })
            .collect();
        assert_eq!(
            view,
            vec![
                ("a", "checkout", "/pay", "5xx", 20_000),
                ("res-cell", "checkout", "Pay/Charge", "grpc:UNAVAILABLE", 20_000),
                ("b", "checkout", "GET", "4xx", 20_000),
                ("res-cell", "checkout", "GET", "timeout", 20_000),
            ]
        );
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let m = Mapper::new(&IngestConfig { max_attribute_length: 16, ..Default::default() });
        let long_cell = "é".repeat(100);
        let req = request(
            vec![kv("service.name", s(&"s".repeat(1000)))],
            vec![span(vec![kv("cell.id", s(&long_cell)), kv("http.route", s("/short"))])],
        );
        let obs = m.traces(&req).unwrap();
        assert_eq!(obs.strings.get(obs.spans[0].cell), "é".repeat(8));
        assert_eq!(obs.strings.get(obs.spans[0].service).len(), 16);
        assert_eq!(obs.strings.get(obs.spans[0].route), "/short");
        assert_eq!(obs.truncated, 2);
    }

    #[test]
    fn no_cell_anywhere_is_unknown_and_bad_ids_fail() {
        let m = Mapper::new(&IngestConfig::default());
        let req = request(vec![], vec![span(vec![])]);
        let obs = m.traces(&req).unwrap();
        assert_eq!(obs.strings.get(obs.spans[0].cell), UNKNOWN_CELL);
        assert_eq!(obs.strings.get(obs.spans[0].service), UNKNOWN_SERVICE);
        let mut bad = span(vec![]);
        bad.trace_id = vec![1; 5];
        let err = m.traces(&request(vec![], vec![bad])).unwrap_err().to_string();
        assert!(err.contains("trace_id must be 16 bytes, got 5"), "{err}");
    }
}
