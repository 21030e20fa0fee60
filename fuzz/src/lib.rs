//! The bodies of cellpilot's fuzz targets (`fuzz_targets/*.rs` call these), kept in a library so
//! each target is one line. Every function takes arbitrary bytes and must neither panic nor
//! allocate without bound; where two paths must agree (the pre-scan and the decoder, the forward
//! and backward histogram walks), they are compared.
//!
//! Seeds live in `seeds/<target>/` (written by `cellpilot_ingest`'s `fuzz_seeds` test).

use cellpilot_core::config::{Config, IngestConfig};
use cellpilot_core::latency::{self, SparseHistogram};
use cellpilot_core::window::WindowSpec;
use cellpilot_ingest::aggregator::{Aggregator, AggregatorSettings, to_batches};
use cellpilot_ingest::mapping::{Mapper, Observations};
use cellpilot_ingest::prescan::{self, Msg};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::time::Duration;

/// The clock of every target; seeds put their timestamps just before it.
pub const NOW_MS: i64 = 1_800_000_000_000;

fn ingest_config() -> IngestConfig {
    IngestConfig { max_series: 64, max_cells: 8, max_attribute_length: 32, ..IngestConfig::default() }
}

fn aggregator(c: &IngestConfig) -> Aggregator {
    let spec = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
    Aggregator::new(AggregatorSettings { spec, max_series: c.max_series, max_cells: c.max_cells })
}

/// A decoded request of any signal.
enum Decoded {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Decoded {
    fn items(&self) -> u64 {
        let n: usize = match self {
            Decoded::Traces(r) => r.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum(),
            Decoded::Metrics(r) => {
                use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                r.resource_metrics
                    .iter()
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .map(|m| match &m.data {
                        Some(Data::Gauge(g)) => g.data_points.len(),
                        Some(Data::Sum(g)) => g.data_points.len(),
                        Some(Data::Histogram(g)) => g.data_points.len(),
                        Some(Data::ExponentialHistogram(g)) => g.data_points.len(),
                        Some(Data::Summary(g)) => g.data_points.len(),
                        None => 0,
                    })
                    .sum()
            }
            Decoded::Logs(r) => r.resource_logs.iter().flat_map(|r| &r.scope_logs).map(|s| s.log_records.len()).sum(),
        };
        n as u64
    }
}

/// Maps, aggregates, closes and builds rows: none of it may panic.
fn apply(decoded: &Decoded) {
    let config = ingest_config();
    let mapper = Mapper::new(&config);
    let mut agg = aggregator(&config);
    let obs: Result<Observations<'_>, _> = match decoded {
        Decoded::Traces(r) => mapper.traces(r),
        Decoded::Metrics(r) => mapper.metrics(r),
        Decoded::Logs(r) => {
            let _ = cellpilot_ingest::logs::cutovers(r);
            return;
        }
    };
    if let Ok(obs) = obs {
        // Twice: cumulative streams take their second point as a delta.
        agg.apply(&obs, NOW_MS, i64::MIN);
        agg.apply(&obs, NOW_MS + 1, i64::MIN);
        assert!(agg.live_series() <= 64 + 2 * 8 + 1, "series past their cap");
        let _ = to_batches(agg.close_due(i64::MAX / 2), 10_000);
    }
}

/// What the pre-scan refuses the decoder must refuse, and it never counts fewer items; then the
/// decoded request goes through mapping and aggregation.
fn compare_then_apply(counted: Result<prescan::Counted, prescan::PrescanError>, decoded: Option<Decoded>, decoder: &str) {
    match (&counted, &decoded) {
        (Err(e), Some(_)) => panic!("the pre-scan refused what {decoder} accepts: {e}"),
        (Ok(c), Some(d)) => {
            assert!(c.items >= d.items(), "pre-scan counted {} items, {decoder} decoded {}", c.items, d.items())
        }
        _ => {}
    }
    if let Some(d) = decoded {
        apply(&d);
    }
}

fn signal(which: u8) -> Msg {
    [Msg::ExportTraces, Msg::ExportMetrics, Msg::ExportLogs][usize::from(which) % 3]
}

/// OTLP protobuf (first byte picks the signal): the pre-scan, then prost, then mapping and
/// aggregation. What the pre-scan refuses prost refuses too, and it never counts fewer items.
pub fn otlp_protobuf(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let root = signal(which);
    let counted = prescan::scan_protobuf(root, body);
    let decoded = match root {
        Msg::ExportTraces => ExportTraceServiceRequest::decode(body).map(Decoded::Traces),
        Msg::ExportMetrics => ExportMetricsServiceRequest::decode(body).map(Decoded::Metrics),
        _ => ExportLogsServiceRequest::decode(body).map(Decoded::Logs),
    };
    compare_then_apply(counted, decoded.ok(), "prost");
}

/// Protobuf traces through the wire scanner and through prost + `Mapper::traces`: the same
/// verdict, and the same observations or mapping error (`wire::check_against_prost`); then the
/// scanner's observations through aggregation.
pub fn otlp_wire(body: &[u8]) {
    let config = ingest_config();
    let mapper = Mapper::new(&config);
    if let Err(e) = cellpilot_ingest::wire::check_against_prost(&mapper, body) {
        panic!("the wire scanner and prost disagree: {e}");
    }
    if let Ok(Ok(obs)) = cellpilot_ingest::wire::scan_traces(&mapper, body) {
        let mut agg = aggregator(&config);
        agg.apply(&obs, NOW_MS, i64::MIN);
        assert!(agg.live_series() <= 64 + 2 * 8 + 1, "series past their cap");
        let _ = to_batches(agg.close_due(i64::MAX / 2), 10_000);
    }
}

/// OTLP JSON, like [`otlp_protobuf`].
pub fn otlp_json(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let root = signal(which);
    let counted = prescan::scan_json(root, body);
    let decoded = match root {
        Msg::ExportTraces => serde_json::from_slice(body).map(Decoded::Traces),
        Msg::ExportMetrics => serde_json::from_slice(body).map(Decoded::Metrics),
        _ => serde_json::from_slice(body).map(Decoded::Logs),
    };
    compare_then_apply(counted, decoded.ok(), "serde");
}

/// A WAL segment whose records are these bytes: replay never fails or panics on them, moves
/// what it cannot apply to quarantine, and a second replay counts the same and moves nothing.
pub fn wal_replay(data: &[u8]) {
    use std::io::Write;
    let Ok(dir) = tempfile::tempdir() else { return };
    let fsync = cellpilot_core::config::FsyncPolicy::Never;
    let Ok(w) = cellpilot_ingest::wal::WalWriter::open(dir.path(), 0, Vec::new(), &cellpilot_ingest::wal::WriterSettings::new(fsync, 1 << 30)) else {
        return;
    };
    drop(w);
    let path = dir.path().join("wal").join(format!("{:020}.wal", 0));
    let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&path) else { return };
    if f.write_all(data).is_err() {
        return;
    }
    drop(f);
    let config = ingest_config();
    let mapper = Mapper::new(&config);
    let replay = |agg: Aggregator| {
        let agg = cellpilot_ingest::aggregator::SharedAggregator::new(agg);
        cellpilot_ingest::sequencer::replay(dir.path(), &mapper, &agg, i64::MIN)
    };
    let first = replay(aggregator(&config)).expect("replay of a readable directory succeeds");
    let second = replay(aggregator(&config)).expect("and again");
    assert_eq!(second.quarantined, 0, "quarantined records were moved, not copied");
    assert_eq!(first.counted, second.counted, "the same records count the same");
}

/// A WAL span batch (first byte even) or a checkpoint's aggregator state (odd), read back from
/// disk: refused, or accepted and then stable — a batch encodes back to itself and applies
/// without panicking; a restored state checkpoints to bytes that restore to the same windows.
pub fn checkpoint(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else { return };
    let config = ingest_config();
    if which % 2 == 0 {
        let Ok(batch) = cellpilot_ingest::batch::SpanBatch::decode(bytes) else { return };
        let mut again = Vec::new();
        batch.encode(&mut again);
        let back = cellpilot_ingest::batch::SpanBatch::decode(&again).expect("a decoded batch encodes to a readable one");
        assert_eq!(back, batch, "a batch encodes back to itself");
        let mut agg = aggregator(&config);
        let out = agg.apply_spans(&batch, NOW_MS, i64::MIN);
        assert_eq!(out.accepted + out.late, batch.spans(), "every span of the batch is counted or late");
        return;
    }
    let mut agg = aggregator(&config);
    if agg.restore(bytes, i64::MIN).is_err() {
        return;
    }
    let mut state = Vec::new();
    agg.checkpoint(&mut state);
    let mut again = aggregator(&config);
    again.restore(&state, i64::MIN).expect("a restored state checkpoints to a restorable one");
    let rows = |a: &Aggregator| to_batches(a.snapshot(i64::MIN, i64::MAX), 10_000).ok().map(|b| b.rollups);
    assert_eq!(rows(&again), rows(&agg), "the same windows after a second checkpoint");
}

/// A serialized histogram: every reader answers or errors, the fast paths agree with each other
/// and with a re-serialization.
pub fn histogram(data: &[u8]) {
    let threshold = data.get(..8).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
    let _ = latency::deserialize(data);
    let mut buckets = Vec::new();
    if latency::for_each_bucket(data, |v, n| buckets.push((v, n))).is_err() {
        return;
    }
    let above = latency::count_above(data, threshold);
    if let (Ok(above), Some(&(max, _))) = (&above, buckets.iter().rev().find(|(_, n)| *n > 0)) {
        let backwards = latency::count_above_max(data, threshold, max);
        assert_eq!(backwards.as_ref().ok(), Some(above), "backward walk disagrees");
    }
    let mut sparse = SparseHistogram::default();
    for (v, n) in &buckets {
        sparse.record_n(*v, *n);
    }
    let again = sparse.serialize();
    let mut round = Vec::new();
    latency::for_each_bucket(&again, |v, n| round.push((v, n))).expect("our own serialization reads back");
    let total = |b: &[(u64, u64)]| b.iter().fold(0u64, |t, (_, n)| t.saturating_add(*n));
    assert!(total(&round) <= total(&buckets) || total(&buckets) == u64::MAX);
}

/// A configuration file: loaded and validated, or refused with a message; never a panic.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Config::from_parts(Some(text), Vec::<(String, String)>::new());
}

/// Largest message [`grpc_frame`] admits.
const GRPC_FRAME_LIMIT: usize = 4096;

/// A gRPC call body arriving in arbitrary chunks (the first byte picks the chunk size): the
/// declared length is charged once, from the prefix, before the message is read; a body or a
/// declared length over the limit is refused; what is accepted is exactly what was sent.
pub fn grpc_frame(data: &[u8]) {
    use cellpilot_ingest::decode::read_grpc_body;
    use cellpilot_ingest::error::Error;
    let Some((&chunk, body)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>> =
        body.chunks(chunk).map(|c| Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(c)))).collect();
    let stream = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a runtime");
    let mut admitted = Vec::new();
    let result = rt.block_on(read_grpc_body(stream, GRPC_FRAME_LIMIT, Duration::from_secs(5), |n| {
        admitted.push(n);
        Ok(n)
    }));
    assert!(admitted.len() <= 1, "charged more than once: {admitted:?}");
    if let Some(&n) = admitted.first() {
        assert!(n <= GRPC_FRAME_LIMIT, "admitted {n} over the limit");
        let declared = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        assert_eq!(n, declared, "charged a length other than the prefix's");
    }
    match result {
        Ok((bytes, permit)) => {
            assert_eq!(&bytes[..], body, "the body read is not the body sent");
            assert!(body.len() <= GRPC_FRAME_LIMIT + 5);
            assert_eq!(permit, admitted.first().copied());
        }
        Err(Error::TooLarge { .. }) => {
            let declared = (body.len() >= 5).then(|| u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize);
            assert!(
                body.len() > GRPC_FRAME_LIMIT + 5 || declared.is_some_and(|d| d > GRPC_FRAME_LIMIT),
                "refused a body within the limit"
            );
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}
