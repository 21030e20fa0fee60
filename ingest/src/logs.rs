//! OTLP logs: records with `event.name = cell.cutover` are cut-overs reported by gateways
//! (attributes `cell`, `cutover.started`, `cutover.completed` as unix-nano ints or RFC 3339);
//! every other log is accepted and ignored.

use crate::attrs::as_str;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// One reported cut-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// Drained cell.
    pub cell: String,
    /// `cutover.started`, unix ms.
    pub started_ms: i64,
    /// `cutover.completed`, unix ms.
    pub completed_ms: i64,
}

fn time_ms(v: Option<&AnyValue>) -> Option<i64> {
    match v?.value.as_ref()? {
        Value::IntValue(ns) => Some(ns.div_euclid(1_000_000)),
        Value::StringValue(s) => match s.trim().parse::<i64>() {
            Ok(ns) => Some(ns.div_euclid(1_000_000)),
            Err(_) => cellpilot_core::time::parse_rfc3339_ms(s).ok(),
        },
        _ => None,
    }
}

fn get<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref())
}

/// The `cell.cutover` events of an export.
#[derive(Debug, Default)]
pub struct Cutovers {
    /// The well-formed ones.
    pub reported: Vec<Reported>,
    /// Those without cell, `cutover.started` and `cutover.completed` (or ending before they
    /// start): ignored, and logged by the caller as a count, not a line each.
    pub malformed: u64,
}

/// Every `cell.cutover` event in `req`.
pub fn cutovers(req: &ExportLogsServiceRequest) -> Cutovers {
    let mut out = Cutovers::default();
    for rl in &req.resource_logs {
        for sl in &rl.scope_logs {
            for r in &sl.log_records {
                let name = if r.event_name.is_empty() {
                    as_str(get(&r.attributes, "event.name"))
                } else {
                    Some(r.event_name.as_str())
                };
                if name != Some("cell.cutover") {
                    continue;
                }
                let cell = as_str(get(&r.attributes, "cell"));
                let started = time_ms(get(&r.attributes, "cutover.started"));
                let completed = time_ms(get(&r.attributes, "cutover.completed"));
                match (cell, started, completed) {
                    (Some(cell), Some(started_ms), Some(completed_ms)) if completed_ms >= started_ms => {
                        out.reported.push(Reported { cell: cell.to_string(), started_ms, completed_ms })
                    }
                    _ => out.malformed += 1,
                }
            }
        }
    }
    out
}
