//! Helpers the ingest integration tests share: attributes, a cumulative histogram point, and
//! requests per cell read back from an aggregator.

#![allow(dead_code)]

use arrow::array::{Array, StringArray, UInt64Array};
use cellpilot_ingest::aggregator::{SharedAggregator, to_batches};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics, metric::Data,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::BTreeMap;

/// Unix ms to ns.
pub(crate) const MS: i64 = 1_000_000;

/// A string attribute.
pub(crate) fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(Value::StringValue(v.into())) }),
        ..Default::default()
    }
}

/// A point of one cumulative histogram stream of the metrics-only service `api` on `cell`:
/// `count` samples under 100 ms since `start_ms`, as of `time_ms`.
pub(crate) fn cumulative(cell: &str, start_ms: i64, time_ms: i64, count: u64) -> ExportMetricsServiceRequest {
    let point = HistogramDataPoint {
        attributes: vec![kv("cell.id", cell)],
        start_time_unix_nano: (start_ms * MS) as u64,
        time_unix_nano: (time_ms * MS) as u64,
        count,
        bucket_counts: vec![count, 0],
        explicit_bounds: vec![0.1],
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", "api")], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.request.duration".into(),
                    unit: "s".into(),
                    data: Some(Data::Histogram(Histogram {
                        data_points: vec![point],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Requests per cell in every window the aggregator holds.
pub(crate) fn counts(agg: &SharedAggregator) -> BTreeMap<String, u64> {
    let rows = agg.lock().snapshot(i64::MIN / 2, i64::MAX / 2);
    let b = to_batches(rows, 10_000).unwrap().rollups;
    let cell = b.column(2).as_any().downcast_ref::<StringArray>().unwrap();
    let req = b.column(5).as_any().downcast_ref::<UInt64Array>().unwrap();
    let mut out = BTreeMap::new();
    for i in 0..b.num_rows() {
        *out.entry(cell.value(i).to_string()).or_default() += req.value(i);
    }
    out
}
