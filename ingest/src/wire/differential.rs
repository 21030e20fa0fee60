//! The differential check of the wire scanner against prost, run by the tests and the
//! `otlp_wire` fuzz target.

use super::scan_traces;
use crate::mapping::{Mapper, Observations};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// The differential check the tests and the `otlp_wire` fuzz target run on any bytes: the
/// scanner and prost must both refuse the body, or both accept it and map it the same (the
/// same observations, or the same mapping error). `Err` says how they differ.
pub fn check_against_prost(mapper: &Mapper, body: &[u8]) -> std::result::Result<(), String> {
    let scanned = scan_traces(mapper, body);
    let decoded = ExportTraceServiceRequest::decode(body);
    match (scanned, decoded) {
        (Err(_), Err(_)) => Ok(()),
        (Err(refused), Ok(_)) => Err(format!("the scanner refused ({}) what prost decodes", refused.0)),
        (Ok(_), Err(e)) => Err(format!("the scanner accepted what prost refuses: {e}")),
        (Ok(scanned), Ok(req)) => match (scanned, mapper.traces(&req)) {
            (Ok(a), Ok(b)) => {
                let (a, b) = (Resolved::of(&a), Resolved::of(&b));
                if a == b { Ok(()) } else { Err(format!("observations differ:\nscanner {a:?}\nprost   {b:?}")) }
            }
            (Err(a), Err(b)) if a.to_string() == b.to_string() => Ok(()),
            (a, b) => Err(format!(
                "mapping differs: scanner {:?}, prost {:?}",
                a.map(|o| Resolved::of(&o)),
                b.map(|o| Resolved::of(&o))
            )),
        },
    }
}

/// One span observation with its names resolved: cell, service, route, cause, latency, end, start.
type ResolvedSpan = (String, String, String, Option<String>, u64, i64, i64);

/// Observations with their strings resolved, to compare two mappings.
#[derive(Debug, PartialEq)]
struct Resolved {
    spans: Vec<ResolvedSpan>,
    ignored: u64,
    truncated: u64,
}

impl Resolved {
    fn of(o: &Observations<'_>) -> Self {
        let s = |id| o.strings.get(id).to_string();
        let spans = o
            .spans
            .iter()
            .map(|x| {
                let cause = (x.cause != crate::mapping::NO_CAUSE).then(|| s(x.cause));
                (s(x.cell), s(x.service), s(x.route), cause, x.latency_us, x.end_ns, x.start_ns)
            })
            .collect();
        Self { spans, ignored: o.ignored, truncated: o.truncated }
    }
}
