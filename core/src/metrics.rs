//! The process's Prometheus metrics. Names are part of the contract: stable and `cellpilot_`-prefixed.

use prometheus::{Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

/// Every metric cellpilot exports, registered in one registry per process (tests run several).
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// OTLP export requests by `signal` (traces, metrics, logs), `transport` (grpc, http) and `result`.
    pub ingest_requests: IntCounterVec,
    /// Spans by `result` (accepted, rejected).
    pub ingest_spans: IntCounterVec,
    /// Metric data points by `result` (accepted, rejected, ignored).
    pub ingest_points: IntCounterVec,
    /// Rejected spans, points and requests by `reason`.
    pub ingest_rejected: IntCounterVec,
    /// Latency-metric points not counted, by `reason` (spans_preferred, baseline, not_latency).
    pub ingest_points_ignored: IntCounterVec,
    /// Log records received.
    pub ingest_logs: IntCounter,
    /// Bytes of decoded requests waiting for or inside the aggregator.
    pub ingest_inflight_bytes: IntGauge,
    /// Live cell × service × route series.
    pub series_live: IntGauge,
    /// Observations folded into the `__overflow__` route because `max_series` was reached.
    pub series_overflow: IntCounter,
    /// Observations folded into cell `__overflow__` because `max_cells` was reached.
    pub cells_overflow: IntCounter,
    /// Cell, service, route or cause names cut to `max_attribute_length`.
    pub names_truncated: IntCounter,
    /// Exports whose mapping or aggregation panicked (each answered with an error alone).
    pub ingest_panics: IntCounter,
    /// WAL records, damaged segment ends and checkpoints moved to `wal/quarantine/` by replay.
    pub wal_quarantined: IntCounter,
    /// WAL groups refused because a write or fsync failed (disk full, I/O error).
    pub wal_failures: IntCounter,
    /// SQL queries turned away because `[query] max_concurrent` were running.
    pub queries_rejected: IntCounter,
    /// Open (series, window) aggregates.
    pub windows_open: IntGauge,
    /// Windows closed and handed to storage.
    pub windows_closed: IntCounter,
    /// Rollup rows handed to storage.
    pub rollup_rows: IntCounter,
    /// Bytes of WAL segments on disk.
    pub wal_bytes: IntGauge,
    /// WAL segments on disk.
    pub wal_segments: IntGauge,
    /// Bytes of WAL records written (and synced per the fsync policy).
    pub wal_written: IntCounter,
    /// Exports answered with the retry hint (429 / UNAVAILABLE) by `reason`: `wal_full`,
    /// `queue_full`, `queue_wait`, `inflight_bytes`, `max_concurrent_requests`.
    pub ingest_overloaded: IntCounterVec,
    /// Seconds since the state of the newest durable checkpoint was taken.
    pub checkpoint_age: Gauge,
    /// Bytes of the newest checkpoint and the closed-row files it needs.
    pub checkpoint_bytes: IntGauge,
    /// Checkpoints by `result` (ok, failed).
    pub checkpoints: IntCounterVec,
    /// Cell-weight decisions made.
    pub decisions: IntCounter,
    /// Control-loop evaluations run.
    pub evaluations: IntCounter,
    /// Evaluation ticks (window boundaries) the control loop skipped because it fell behind.
    pub ticks_missed: IntCounter,
    /// Cut-overs finished (observed) or reported, by `source`.
    pub cutovers: IntCounterVec,
    /// Alert deliveries by `receiver` and `result` (ok, failed).
    pub alert_deliveries: IntCounterVec,
    /// Gateways with a live CellWeights Watch stream that keeps up.
    pub gateways_watching: IntGauge,
    /// Watch streams found not reading (their gateway stops holding cut-overs back).
    pub watch_stalls: IntCounter,
    /// xDS responses a node refused.
    pub xds_nacks: IntCounter,
    /// Live xDS (ADS) streams.
    pub xds_streams: IntGauge,
    /// Live gateway streams of either protocol (what `[xds] max_streams` caps).
    pub gateway_streams: IntGauge,
    /// Open connections by `listener`.
    pub connections_open: IntGaugeVec,
    /// Connections closed at once by `listener` and `reason` (`max_connections`,
    /// `max_connections_per_ip`), or later for sending nothing (`idle_timeout`).
    pub connections_refused: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(c.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    c
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    registry.register(Box::new(g.clone())).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    g
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    ///
    /// Names and labels are static, so registration cannot fail except by a bug here.
    pub fn new() -> Self {
        let m = Self::register();
        // Known label values start at 0 so rates and alerts work before the first event.
        for result in ["accepted", "rejected", "not_request"] {
            m.ingest_spans.with_label_values(&[result]);
        }
        for result in ["accepted", "rejected"] {
            m.ingest_points.with_label_values(&[result]);
        }
        for reason in [
            "late",
            "future",
            "bad_input",
            "aborted",
            "stalled",
            "unsupported",
            "too_large",
            "overloaded",
            "internal",
            "unusable_point",
        ] {
            m.ingest_rejected.with_label_values(&[reason]);
        }
        for reason in ["wal_full", "queue_full", "queue_wait", "inflight_bytes", "max_concurrent_requests"] {
            m.ingest_overloaded.with_label_values(&[reason]);
        }
        for result in ["ok", "failed"] {
            m.checkpoints.with_label_values(&[result]);
        }
        for source in ["observed", "reported"] {
            m.cutovers.with_label_values(&[source]);
        }
        for reason in ["not_latency", "spans_preferred", "baseline", "out_of_order"] {
            m.ingest_points_ignored.with_label_values(&[reason]);
        }
        m
    }

    fn register() -> Self {
        let r = Registry::new();
        Self {
            ingest_requests: counter_vec(
                &r,
                "cellpilot_ingest_requests_total",
                "OTLP export requests by signal, transport and result.",
                &["signal", "transport", "result"],
            ),
            ingest_spans: counter_vec(&r, "cellpilot_ingest_spans_total", "Request spans by result.", &["result"]),
            ingest_points: counter_vec(
                &r,
                "cellpilot_ingest_points_total",
                "Latency metric data points by result.",
                &["result"],
            ),
            ingest_rejected: counter_vec(
                &r,
                "cellpilot_ingest_rejected_total",
                "Rejected spans, points or whole requests by reason.",
                &["reason"],
            ),
            ingest_points_ignored: counter_vec(
                &r,
                "cellpilot_ingest_points_ignored_total",
                "Latency metric data points accepted but not counted, by reason.",
                &["reason"],
            ),
            ingest_logs: counter(&r, "cellpilot_ingest_log_records_total", "OTLP log records received."),
            ingest_inflight_bytes: gauge(
                &r,
                "cellpilot_ingest_inflight_bytes",
                "Decoded request bytes waiting for or inside the aggregator.",
            ),
            series_live: gauge(&r, "cellpilot_series_live", "Live cell x service x route series."),
            series_overflow: counter(
                &r,
                "cellpilot_series_overflow_total",
                "Observations folded into route __overflow__ because max_series was reached.",
            ),
            cells_overflow: counter(
                &r,
                "cellpilot_cells_overflow_total",
                "Observations folded into cell __overflow__ because max_cells was reached.",
            ),
            names_truncated: counter(
                &r,
                "cellpilot_names_truncated_total",
                "Cell, service, route or cause names cut to max_attribute_length.",
            ),
            ingest_panics: counter(
                &r,
                "cellpilot_ingest_panics_total",
                "Exports whose mapping or aggregation panicked; each was refused alone.",
            ),
            wal_quarantined: counter(
                &r,
                "cellpilot_wal_quarantined_total",
                "WAL records, damaged segment ends and checkpoints moved to wal/quarantine by replay.",
            ),
            wal_failures: counter(
                &r,
                "cellpilot_wal_write_failures_total",
                "WAL groups refused with a retryable answer because a write or fsync failed.",
            ),
            queries_rejected: counter(
                &r,
                "cellpilot_queries_rejected_total",
                "SQL queries refused because query.max_concurrent were running.",
            ),
            windows_open: gauge(&r, "cellpilot_windows_open", "Open series windows."),
            windows_closed: counter(&r, "cellpilot_windows_closed_total", "Windows closed and persisted."),
            rollup_rows: counter(&r, "cellpilot_rollup_rows_total", "Rollup rows written by closed windows."),
            wal_bytes: gauge(&r, "cellpilot_wal_bytes", "Bytes of write-ahead log segments on disk."),
            wal_segments: gauge(&r, "cellpilot_wal_segments", "Write-ahead log segments on disk."),
            wal_written: counter(&r, "cellpilot_wal_written_bytes_total", "Bytes of WAL records written."),
            ingest_overloaded: counter_vec(
                &r,
                "cellpilot_ingest_overloaded_total",
                "Exports answered with the retry hint (429 / UNAVAILABLE), by reason.",
                &["reason"],
            ),
            checkpoint_age: {
                let g = Gauge::new(
                    "cellpilot_checkpoint_age_seconds",
                    "Seconds since the state of the newest durable checkpoint was taken.",
                )
                .unwrap_or_else(|e| panic!("metric cellpilot_checkpoint_age_seconds: {e}"));
                r.register(Box::new(g.clone()))
                    .unwrap_or_else(|e| panic!("metric cellpilot_checkpoint_age_seconds: {e}"));
                g
            },
            checkpoint_bytes: gauge(
                &r,
                "cellpilot_checkpoint_bytes",
                "Bytes of the newest checkpoint and the closed-row files it needs.",
            ),
            checkpoints: counter_vec(&r, "cellpilot_checkpoints_total", "Checkpoints by result.", &["result"]),
            decisions: counter(&r, "cellpilot_decisions_total", "Cell-weight decisions made."),
            evaluations: counter(&r, "cellpilot_control_evaluations_total", "Control-loop evaluations run."),
            ticks_missed: counter(
                &r,
                "cellpilot_control_ticks_missed_total",
                "Window boundaries the control loop skipped because it fell behind.",
            ),
            cutovers: counter_vec(&r, "cellpilot_cutovers_total", "Cut-overs finished, by source.", &["source"]),
            gateways_watching: gauge(
                &r,
                "cellpilot_gateways_watching",
                "Gateways with a live CellWeights Watch stream that keeps up.",
            ),
            watch_stalls: counter(
                &r,
                "cellpilot_watch_stalls_total",
                "Watch streams that stopped reading; their gateway no longer holds cut-overs back.",
            ),
            xds_nacks: counter(&r, "cellpilot_xds_nacks_total", "xDS responses a node refused (NACKed)."),
            connections_open: gauge_vec(
                &r,
                "cellpilot_connections_open",
                "Open connections, by listener.",
                &["listener"],
            ),
            connections_refused: counter_vec(
                &r,
                "cellpilot_connections_refused_total",
                "Connections closed at once (max_connections, max_connections_per_ip) or for sending nothing (idle_timeout), by listener and reason.",
                &["listener", "reason"],
            ),
            xds_streams: gauge(&r, "cellpilot_xds_streams", "Live xDS (ADS) streams."),
            gateway_streams: gauge(
                &r,
                "cellpilot_gateway_streams",
                "Live gateway streams, CellWeights Watch and xDS ADS ([xds] max_streams caps them).",
            ),
            alert_deliveries: counter_vec(
                &r,
                "cellpilot_alert_deliveries_total",
                "Alert deliveries by receiver and result.",
                &["receiver", "result"],
            ),
            registry: r,
        }
    }

    /// The registry, for crates that add metrics of their own.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Everything in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec only fails on malformed metric families, which registration rules out.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_stable_names() {
        let m = Metrics::new();
        m.ingest_spans.with_label_values(&["accepted"]).inc_by(3);
        let text = m.render();
        assert!(text.contains("cellpilot_ingest_spans_total{result=\"accepted\"} 3"), "{text}");
        assert!(text.contains("# TYPE cellpilot_series_live gauge"));
    }
}
