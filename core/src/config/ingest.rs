//! `[ingest]` and `[storage]`: the OTLP receivers, the window aggregation, the WAL and the Parquet tiers.

use super::{Dur, Size};
use crate::secret::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[ingest]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// OTLP/gRPC listen address.
    pub grpc_listen: String,
    /// OTLP/HTTP listen address.
    pub http_listen: String,
    /// Largest request accepted, after decompression, on both transports.
    pub max_request_size: Size,
    /// Attribute keys naming the cell, tried in order (point/span first, then resource).
    pub cell_attributes: Vec<String>,
    /// Span kinds that count as requests.
    pub request_span_kinds: Vec<String>,
    /// Histogram metric names that carry request latency.
    pub latency_metrics: Vec<String>,
    /// Width of the finest window.
    pub window: Dur,
    /// How long after its end a window still accepts data.
    pub allowed_lateness: Dur,
    /// Cap on live cell × service × route series.
    pub max_series: usize,
    /// Cap on cells tracked at once (live series or a request in the last 10 minutes); new cells
    /// beyond it fold into cell `__overflow__`.
    pub max_cells: usize,
    /// Cap on spans, data points or log records in one export request (checked before decoding).
    pub max_items_per_request: usize,
    /// Cell, service, route and cause names longer than this many bytes are cut (at a character
    /// boundary): one client must not make every series key kilobytes long.
    pub max_attribute_length: usize,
    /// Export requests (both transports) being read, decoded or applied at once; one more is
    /// answered 429 / UNAVAILABLE with a retry hint before its body is read.
    pub max_concurrent_requests: usize,
    /// Longest an export may wait for the sequencer; past it, it is answered with the retry
    /// hint instead of being counted late (keep it well under `allowed_lateness`).
    pub max_queue_wait: Dur,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            grpc_listen: "127.0.0.1:4317".into(),
            http_listen: "127.0.0.1:4318".into(),
            max_request_size: Size::mib(64),
            cell_attributes: vec!["cell.id".into(), "cell".into()],
            request_span_kinds: vec!["server".into(), "consumer".into()],
            latency_metrics: vec![
                "http.server.request.duration".into(),
                "http.server.duration".into(),
                "rpc.server.duration".into(),
            ],
            window: Dur::secs(10),
            allowed_lateness: Dur::secs(30),
            max_series: 100_000,
            max_cells: 1_000,
            max_items_per_request: 100_000,
            max_attribute_length: 256,
            max_concurrent_requests: 64,
            max_queue_wait: Dur::secs(2),
        }
    }
}

/// `[storage]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory (WAL and Parquet).
    pub dir: PathBuf,
    /// WAL fsync policy.
    pub fsync: FsyncPolicy,
    /// Cap on WAL size; beyond it exports get the retryable overload answer (429 /
    /// UNAVAILABLE with a retry hint) until a checkpoint frees room.
    pub wal_max_size: Size,
    /// How often the aggregator's state and the closed windows not yet in Parquet are
    /// checkpointed; the WAL keeps the records of the last two intervals (so it holds seconds
    /// of ingest, a few bytes per span), and a restart replays at most that much.
    pub checkpoint_interval: Dur,
    /// Retention of the finest tier.
    pub retention_10s: Dur,
    /// Retention of the 5-minute tier.
    pub retention_5m: Dur,
    /// Retention of the 1-hour tier.
    pub retention_1h: Dur,
    /// Where closed windows' Parquet files go: empty for `dir` (this node alone), or
    /// `s3://bucket/prefix` for an S3-compatible object store every node of a cluster shares
    /// (each node writes under `nodes/<node_id>/`, every reader lists all of them). The WAL and
    /// the control logs stay in `dir`.
    pub url: String,
    /// S3 endpoint for stores other than AWS, e.g. `http://127.0.0.1:9000`; empty for AWS or
    /// `AWS_ENDPOINT`. A plain `http://` endpoint is allowed.
    pub endpoint: String,
    /// S3 region; empty for `AWS_REGION` (or `us-east-1`).
    pub region: String,
    /// S3 access key id; empty for `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// S3 secret access key; empty for `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Secret,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./cellpilot-data"),
            fsync: FsyncPolicy::Batch,
            wal_max_size: Size::gib(4),
            checkpoint_interval: Dur::secs(10),
            retention_10s: Dur::hours(48),
            retention_5m: Dur::days(30),
            retention_1h: Dur::days(400),
            url: String::new(),
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
        }
    }
}

/// When the WAL fsyncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every append.
    Always,
    /// Once per group commit.
    Batch,
    /// Never (the OS decides).
    Never,
}
