//! What mapping produces: spans and latency points as observations (cell, service, route,
//! error, cause), with their strings interned and borrowed from the request.

use crate::stream::StreamKey;
use std::borrow::Cow;
use std::collections::HashMap;

/// Id of a string in an [`Interner`].
pub type StrId = u32;
/// "No cause": the observation is not an error.
pub const NO_CAUSE: StrId = u32::MAX;

/// Unique strings of one request, borrowed where possible.
#[derive(Debug, Default)]
pub struct Interner<'a> {
    list: Vec<Cow<'a, str>>,
    ids: HashMap<Cow<'a, str>, StrId, foldhash::fast::RandomState>,
}

impl<'a> Interner<'a> {
    /// Id of `s` cut to `max` bytes (at a character boundary), adding it if new; the flag says
    /// it was cut.
    pub fn intern_bounded(&mut self, s: Cow<'a, str>, max: usize) -> (StrId, bool) {
        if s.len() <= max {
            return (self.intern(s), false);
        }
        let end = cellpilot_core::cut_str(&s, max).len();
        let cut = match s {
            Cow::Borrowed(b) => Cow::Borrowed(&b[..end]),
            Cow::Owned(mut o) => {
                o.truncate(end);
                Cow::Owned(o)
            }
        };
        (self.intern(cut), true)
    }

    /// The same strings, owned, for reading by id: the lookup map stays behind (mapping, the
    /// only interning, is done), so each string is copied once and nothing is hashed again.
    pub(crate) fn into_owned(self) -> Interner<'static> {
        Interner { list: self.list.into_iter().map(|s| Cow::Owned(s.into_owned())).collect(), ids: HashMap::default() }
    }

    /// Id of `s`, adding it if new.
    pub fn intern(&mut self, s: Cow<'a, str>) -> StrId {
        if let Some(&id) = self.ids.get(s.as_ref()) {
            return id;
        }
        let id = self.list.len() as StrId;
        self.list.push(s.clone());
        self.ids.insert(s, id);
        id
    }

    /// Strings interned; their ids are `0..len`.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether nothing was interned.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every string, in id order.
    pub(crate) fn strings(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|s| s.as_ref())
    }

    /// The string of `id`.
    pub fn get(&self, id: StrId) -> &str {
        &self.list[id as usize]
    }
}

/// One request span.
#[derive(Debug, Clone, Copy)]
pub struct SpanObs {
    /// Cell.
    pub cell: StrId,
    /// Service.
    pub service: StrId,
    /// Route.
    pub route: StrId,
    /// Cause when the span is an error, else [`NO_CAUSE`].
    pub cause: StrId,
    /// End − start, µs.
    pub latency_us: u64,
    /// End time; picks the window.
    pub end_ns: i64,
    /// Start time; cut-over tracking needs the latest request start per cell.
    pub start_ns: i64,
}

/// Temporality of a metric point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    /// Counts since the previous point.
    Delta,
    /// Counts since `start_ns`.
    Cumulative,
}

/// Bucket counts of one histogram data point, in the metric's own unit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Buckets {
    /// Explicit bounds; `counts.len() == bounds.len() + 1`.
    Explicit {
        /// Upper bounds of all but the last bucket.
        bounds: Vec<f64>,
        /// Count per bucket.
        counts: Vec<u64>,
    },
    /// Base-2 exponential buckets.
    Exponential {
        /// Resolution: base = 2^(2^-scale).
        scale: i32,
        /// Samples at (or near) zero.
        zero_count: u64,
        /// Index of `counts[0]`.
        offset: i32,
        /// Count per positive bucket.
        counts: Vec<u64>,
    },
}

/// Sum of client-sent counts, which may add up past `u64::MAX`.
pub(crate) fn saturating_sum(counts: &[u64]) -> u64 {
    counts.iter().fold(0u64, |t, n| t.saturating_add(*n))
}

/// Samples in `b`, saturating.
pub(crate) fn total(b: &Buckets) -> u64 {
    match b {
        Buckets::Explicit { counts, .. } => saturating_sum(counts),
        Buckets::Exponential { zero_count, counts, .. } => zero_count.saturating_add(saturating_sum(counts)),
    }
}

/// One latency histogram data point.
#[derive(Debug, Clone)]
pub struct PointObs<'a> {
    /// Identity of the stream for cumulative -> delta: resource, scope, metric and attributes.
    pub stream: StreamKey<'a>,
    /// Cell.
    pub cell: StrId,
    /// Service.
    pub service: StrId,
    /// Route.
    pub route: StrId,
    /// Cause when the point's requests are errors, else [`NO_CAUSE`].
    pub cause: StrId,
    /// Start of the counting period.
    pub start_ns: i64,
    /// Time of the point; picks the window.
    pub time_ns: i64,
    /// Delta or cumulative.
    pub temporality: Temporality,
    /// The distribution.
    pub buckets: Buckets,
    /// Largest sample, in the metric's unit, when known (delta points only use it).
    pub max: Option<f64>,
    /// Multiplier from the metric's unit to µs.
    pub to_us: f64,
}

/// Everything one export request contributes.
#[derive(Debug, Default)]
pub struct Observations<'a> {
    /// Strings the observations refer to.
    pub strings: Interner<'a>,
    /// Request spans.
    pub spans: Vec<SpanObs>,
    /// Latency histogram points.
    pub points: Vec<PointObs<'a>>,
    /// Spans that are not requests (by kind) or metrics that do not carry latency.
    pub ignored: u64,
    /// Points rejected while mapping (e.g. a unit that is not a time unit), with the reason.
    pub rejected: Vec<(u64, String)>,
    /// Names cut to `max_attribute_length`.
    pub truncated: u64,
    /// `rpc.service` × `rpc.method` -> the interned `service/method` route (and whether it was
    /// cut), so a gRPC span formats its route once per request, not once per span.
    rpc_routes: HashMap<(&'a str, &'a str), (StrId, bool), foldhash::fast::RandomState>,
}

impl<'a> Observations<'a> {
    /// These observations with their strings owned, free of the request they were read from;
    /// `None` when they hold metric points (those borrow the decoded request).
    pub fn into_owned(self) -> Option<Observations<'static>> {
        if !self.points.is_empty() {
            return None;
        }
        Some(Observations {
            strings: self.strings.into_owned(),
            spans: self.spans,
            points: Vec::new(),
            ignored: self.ignored,
            rejected: self.rejected,
            truncated: self.truncated,
            rpc_routes: HashMap::default(),
        })
    }

    /// Interns a cell, service, route or cause name, cut to `max` bytes.
    pub(crate) fn name(&mut self, s: Cow<'a, str>, max: usize) -> StrId {
        let (id, cut) = self.strings.intern_bounded(s, max);
        self.truncated += u64::from(cut);
        id
    }

    /// Interns the route `service/method`, cut to `max` bytes.
    pub(crate) fn rpc_route(&mut self, service: &'a str, method: &'a str, max: usize) -> StrId {
        let (id, cut) = match self.rpc_routes.get(&(service, method)) {
            Some(&v) => v,
            None => {
                let v = self.strings.intern_bounded(Cow::Owned(format!("{service}/{method}")), max);
                self.rpc_routes.insert((service, method), v);
                v
            }
        };
        self.truncated += u64::from(cut);
        id
    }
}
