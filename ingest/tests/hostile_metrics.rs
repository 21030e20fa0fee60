//! Adversarial metric values through mapping and aggregation: counts up to `u64::MAX`, offsets and
//! scales at their edges, NaN and infinite bounds, unsorted bounds, timestamps at 0 and `u64::MAX`.
//! Nothing may panic, and what the aggregator holds stays proportional to the buckets sent.

use cellpilot_core::config::IngestConfig;
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings, to_batches};
use cellpilot_ingest::mapping::Mapper;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use opentelemetry_proto::tonic::metrics::v1::{
    ExponentialHistogram, ExponentialHistogramDataPoint, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
    ScopeMetrics, metric::Data,
};
use proptest::prelude::*;
use std::time::Duration;

const NOW_MS: i64 = 1_800_000_000_000;
const NOW_NS: u64 = NOW_MS as u64 * 1_000_000;

fn request(data: Data) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.server.request.duration".into(),
                    unit: "s".into(),
                    data: Some(data),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn count() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), Just(u64::MAX / 2 + 1), any::<u64>(), 0u64..1000]
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MAX),
        Just(-0.0),
        Just(1e-300),
        any::<f64>(),
        0.0f64..10.0
    ]
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(u64::MAX), Just(NOW_NS), Just(NOW_NS - 1), (NOW_NS - 60_000_000_000)..NOW_NS]
}

fn offset() -> impl Strategy<Value = i32> {
    prop_oneof![Just(i32::MAX), Just(i32::MAX - 3), Just(i32::MIN), Just(i32::MIN + 1), Just(0), any::<i32>()]
}

prop_compose! {
    fn exp_point()(
        scale in prop_oneof![Just(-10), Just(20), Just(i32::MIN), Just(i32::MAX), -12i32..22],
        offset in offset(),
        counts in proptest::collection::vec(count(), 0..40),
        neg in proptest::collection::vec(count(), 0..4),
        zero in count(),
        start in time(),
        t in time(),
        max in proptest::option::of(float()),
    ) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            scale,
            zero_count: zero,
            positive: Some(Buckets { offset, bucket_counts: counts }),
            negative: Some(Buckets { offset: 0, bucket_counts: neg }),
            start_time_unix_nano: start,
            time_unix_nano: t,
            max,
            ..Default::default()
        }
    }
}

prop_compose! {
    fn explicit_point()(
        bounds in proptest::collection::vec(float(), 0..12),
        extra in 0usize..3,
        seed in proptest::collection::vec(count(), 14),
        start in time(),
        t in time(),
        max in proptest::option::of(float()),
    ) -> HistogramDataPoint {
        // Usually bounds + 1 counts; sometimes a wrong number, which must be a clean refusal.
        let n = (bounds.len() + extra).min(seed.len());
        HistogramDataPoint {
            explicit_bounds: bounds,
            bucket_counts: seed[..n].to_vec(),
            start_time_unix_nano: start,
            time_unix_nano: t,
            max,
            ..Default::default()
        }
    }
}

fn aggregator() -> Aggregator {
    let spec = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
    Aggregator::new(AggregatorSettings { spec, max_series: 1000, max_cells: 1000 })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Two points of one stream (the second a cumulative successor of the first), both
    /// temporalities: mapped, applied, closed and built into rows without a panic.
    #[test]
    fn exponential_points_never_panic(a in exp_point(), b in exp_point(), cumulative in any::<bool>()) {
        let temporality = if cumulative { 2 } else { 1 };
        let mapper = Mapper::new(&IngestConfig::default());
        let mut agg = aggregator();
        let mut sent = 0usize;
        for p in [a, b] {
            sent += p.positive.as_ref().map_or(0, |b| b.bucket_counts.len()) + 2;
            let req = request(Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![p],
                aggregation_temporality: temporality,
            }));
            if let Ok(obs) = mapper.metrics(&req) {
                agg.apply(&obs, NOW_MS, i64::MIN);
            }
        }
        // Each bucket sent costs at most one packed entry (plus a wide count) and a window.
        prop_assert!(agg.heap_bytes() < 4096 + sent * 64, "{} bytes for {sent} buckets", agg.heap_bytes());
        let rows = agg.close_due(i64::MAX);
        prop_assert!(to_batches(rows, 10_000).is_ok());
    }

    #[test]
    fn explicit_points_never_panic(a in explicit_point(), b in explicit_point(), cumulative in any::<bool>()) {
        let temporality = if cumulative { 2 } else { 1 };
        let mapper = Mapper::new(&IngestConfig::default());
        let mut agg = aggregator();
        for p in [a, b] {
            let req = request(Data::Histogram(Histogram { data_points: vec![p], aggregation_temporality: temporality }));
            if let Ok(obs) = mapper.metrics(&req) {
                agg.apply(&obs, NOW_MS, i64::MIN);
            }
        }
        prop_assert!(agg.heap_bytes() < 64 * 1024);
        prop_assert!(to_batches(agg.close_due(i64::MAX), 10_000).is_ok());
    }
}

/// The report's case: two cumulative points of one stream with offsets near `i32::MAX`.
#[test]
fn cumulative_offsets_near_i32_max() {
    let mapper = Mapper::new(&IngestConfig::default());
    let mut agg = aggregator();
    for (i, offset) in [i32::MAX - 1, i32::MAX].into_iter().enumerate() {
        let p = ExponentialHistogramDataPoint {
            scale: 20 - i as i32 * 20,
            positive: Some(Buckets { offset, bucket_counts: vec![u64::MAX, 7, u64::MAX] }),
            start_time_unix_nano: NOW_NS - 5_000_000_000,
            time_unix_nano: NOW_NS - 4_000_000_000 + i as u64,
            ..Default::default()
        };
        let req = request(Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![p],
            aggregation_temporality: 2,
        }));
        let obs = mapper.metrics(&req).unwrap();
        let out = agg.apply(&obs, NOW_MS, i64::MIN);
        assert_eq!(out.accepted, 1);
    }
    let b = to_batches(agg.close_due(i64::MAX), 10_000).unwrap();
    assert_eq!(b.rollups.num_rows(), 1);
}
