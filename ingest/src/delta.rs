//! Cumulative -> delta conversion per metric stream, with reset detection and the
//! first-cumulative-point rule of the spec.

use crate::mapping::{Buckets, total};
use crate::stream::{ENCODING, StreamKey};
use std::collections::HashMap;

/// What the previous cumulative point of a stream said.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StreamState {
    start_ns: i64,
    time_ns: i64,
    buckets: Buckets,
    /// Wall-clock ms of the last point, for eviction.
    seen_ms: i64,
}

/// Why a cumulative point produced no delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoDelta {
    /// The first point of a long-running stream: its counts predate us.
    Baseline,
    /// Older than the stream's latest point (reordered or duplicated export).
    OutOfOrder,
}

/// Why a cumulative-stream checkpoint could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Not a checkpoint this build wrote (damaged, or not JSON).
    #[error("invalid cumulative-stream checkpoint: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Written with a stream encoding newer than this build reads.
    #[error("cumulative-stream checkpoint uses stream encoding {0}; this build reads up to {ENCODING}")]
    NewerEncoding(u32),
}

/// Per-stream cumulative state, keyed by [`StreamKey::encode`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DeltaTracker {
    /// The stream encoding of `streams`' keys; absent (0) in checkpoints written before it.
    #[serde(default)]
    version: u32,
    #[serde(serialize_with = "in_key_order")]
    streams: HashMap<String, StreamState>,
    /// Streams restored from an unversioned checkpoint, keyed by [`StreamKey::legacy`], moved to
    /// `streams` when they next report (or evicted when they do not).
    #[serde(default, skip_serializing_if = "HashMap::is_empty", serialize_with = "in_key_order")]
    legacy: HashMap<String, StreamState>,
}

/// A map serialized in key order, so one state always checkpoints to the same bytes.
fn in_key_order<S: serde::Serializer>(map: &HashMap<String, StreamState>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(map.iter().collect::<std::collections::BTreeMap<_, _>>())
}

impl Default for DeltaTracker {
    fn default() -> Self {
        DeltaTracker { version: ENCODING, streams: HashMap::new(), legacy: HashMap::new() }
    }
}

impl DeltaTracker {
    /// Number of streams tracked.
    pub fn len(&self) -> usize {
        self.streams.len() + self.legacy.len()
    }

    /// Whether no stream is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Converts a cumulative point to the counts it adds since the stream's previous point.
    ///
    /// `fresh_ns` is `window + allowed_lateness`: a stream's first point counts from its start
    /// only when the start is that recent (a freshly started process); otherwise it is a baseline.
    pub fn delta(
        &mut self,
        stream: &StreamKey<'_>,
        start_ns: i64,
        time_ns: i64,
        buckets: &Buckets,
        fresh_ns: i64,
        now_ms: i64,
    ) -> Result<Buckets, NoDelta> {
        let key = stream.encode();
        if !self.legacy.is_empty()
            && !self.streams.contains_key(&key)
            && let Some(state) = self.legacy.remove(&stream.legacy())
        {
            self.streams.insert(key.clone(), state);
        }
        let Some(prev) = self.streams.get_mut(&key) else {
            self.streams.insert(key, StreamState { start_ns, time_ns, buckets: buckets.clone(), seen_ms: now_ms });
            let fresh = start_ns > 0 && time_ns.saturating_sub(start_ns) <= fresh_ns;
            return if fresh { Ok(buckets.clone()) } else { Err(NoDelta::Baseline) };
        };
        if time_ns < prev.time_ns {
            return Err(NoDelta::OutOfOrder);
        }
        prev.seen_ms = now_ms;
        let reset = start_ns != prev.start_ns || total(buckets) < total(&prev.buckets);
        let out = if reset {
            buckets.clone()
        } else {
            // A bucket that fell while the total did not is a reset in disguise.
            subtract(buckets, &prev.buckets).unwrap_or_else(|| buckets.clone())
        };
        prev.start_ns = start_ns;
        prev.time_ns = time_ns;
        prev.buckets = buckets.clone();
        Ok(out)
    }

    /// The state as bytes (a WAL checkpoint).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// State saved by [`DeltaTracker::to_bytes`], by this version or an earlier one.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let mut t: DeltaTracker = serde_json::from_slice(bytes)?;
        match t.version {
            0 => {
                t.legacy.extend(std::mem::take(&mut t.streams));
                t.version = ENCODING;
                Ok(t)
            }
            ENCODING => Ok(t),
            v => Err(CheckpointError::NewerEncoding(v)),
        }
    }

    /// Forgets streams not seen since `before_ms`.
    pub fn evict(&mut self, before_ms: i64) {
        self.streams.retain(|_, s| s.seen_ms >= before_ms);
        self.legacy.retain(|_, s| s.seen_ms >= before_ms);
    }
}

/// `cur - prev` bucket by bucket; `None` when the layouts are incompatible or a bucket fell
/// (then the caller treats the point as a reset).
fn subtract(cur: &Buckets, prev: &Buckets) -> Option<Buckets> {
    match (cur, prev) {
        (Buckets::Explicit { bounds, counts }, Buckets::Explicit { bounds: pb, counts: pc }) => {
            if bounds != pb || counts.len() != pc.len() {
                return None;
            }
            let counts = counts.iter().zip(pc).map(|(c, p)| c.checked_sub(*p)).collect::<Option<Vec<_>>>()?;
            Some(Buckets::Explicit { bounds: bounds.clone(), counts })
        }
        (
            Buckets::Exponential { scale, zero_count, offset, counts },
            Buckets::Exponential { scale: ps, zero_count: pz, offset: po, counts: pc },
        ) => {
            // SDKs only ever lower the scale of a cumulative stream; bring both to the lower one.
            // Bucket indexes are i64 here: offsets near the i32 edges plus a length overflow i32.
            let target = (*scale).min(*ps);
            let (co, cc) = downscale(*offset, counts, *scale - target);
            let (po, pc) = downscale(*po, pc, *ps - target);
            let at = |o: i64, len: usize, idx: i64| usize::try_from(idx - o).ok().filter(|i| *i < len);
            let mut out = Vec::with_capacity(cc.len());
            for (i, c) in cc.iter().enumerate() {
                let p = at(po, pc.len(), co + i as i64).map_or(0, |j| pc[j]);
                out.push(c.checked_sub(p)?);
            }
            // A previous bucket outside the current range must have been empty.
            for (i, p) in pc.iter().enumerate() {
                if *p > 0 && at(co, cc.len(), po + i as i64).is_none() {
                    return None;
                }
            }
            Some(Buckets::Exponential {
                scale: target,
                zero_count: zero_count.checked_sub(*pz)?,
                offset: i32::try_from(co).ok()?,
                counts: out,
            })
        }
        _ => None,
    }
}

/// Merges exponential buckets `by` scale steps (each step pairs neighbours): (offset, counts).
/// Linear in `counts`, whatever the offset; sums saturate.
fn downscale(offset: i32, counts: &[u64], by: i32) -> (i64, Vec<u64>) {
    let offset = i64::from(offset);
    if by <= 0 || counts.is_empty() {
        return (offset, counts.to_vec());
    }
    let by = by.min(62) as u32;
    let new_offset = offset >> by;
    let last = (offset + counts.len() as i64 - 1) >> by;
    // No more buckets than went in: the length is at most counts.len().
    let mut out = vec![0u64; (last - new_offset + 1) as usize];
    for (i, c) in counts.iter().enumerate() {
        let slot = &mut out[(((offset + i as i64) >> by) - new_offset) as usize];
        *slot = slot.saturating_add(*c);
    }
    (new_offset, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FRESH: i64 = 40_000_000_000;

    fn ex(counts: &[u64]) -> Buckets {
        Buckets::Explicit { bounds: vec![0.1, 1.0], counts: counts.to_vec() }
    }

    #[test]
    fn first_point_counts_only_when_fresh() {
        let mut t = DeltaTracker::default();
        let s = 1_000_000_000_000;
        assert_eq!(
            t.delta(&StreamKey::named("a"), s, s + 10_000_000_000, &ex(&[1, 2, 0]), FRESH, 0),
            Ok(ex(&[1, 2, 0]))
        );
        assert_eq!(
            t.delta(&StreamKey::named("b"), s, s + 3_600_000_000_000, &ex(&[1, 2, 0]), FRESH, 0),
            Err(NoDelta::Baseline)
        );
        assert_eq!(
            t.delta(&StreamKey::named("b"), s, s + 3_610_000_000_000, &ex(&[1, 5, 1]), FRESH, 0),
            Ok(ex(&[0, 3, 1]))
        );
    }

    #[test]
    fn repeated_export_adds_nothing_and_reset_counts_afresh() {
        let mut t = DeltaTracker::default();
        let s = 1_000_000_000_000;
        t.delta(&StreamKey::named("a"), s, s + 1, &ex(&[1, 1, 1]), FRESH, 0).unwrap();
        assert_eq!(t.delta(&StreamKey::named("a"), s, s + 1, &ex(&[1, 1, 1]), FRESH, 0), Ok(ex(&[0, 0, 0])));
        assert_eq!(t.delta(&StreamKey::named("a"), s, s + 2, &ex(&[2, 1, 1]), FRESH, 0), Ok(ex(&[1, 0, 0])));
        // Counter reset: falling count, same start.
        assert_eq!(t.delta(&StreamKey::named("a"), s, s + 3, &ex(&[1, 0, 0]), FRESH, 0), Ok(ex(&[1, 0, 0])));
        // Restart: new start time.
        assert_eq!(t.delta(&StreamKey::named("a"), s + 10, s + 20, &ex(&[0, 4, 0]), FRESH, 0), Ok(ex(&[0, 4, 0])));
        assert_eq!(
            t.delta(&StreamKey::named("a"), s + 10, s + 15, &ex(&[0, 9, 0]), FRESH, 0),
            Err(NoDelta::OutOfOrder)
        );
    }

    #[test]
    fn exponential_scale_change() {
        let mut t = DeltaTracker::default();
        let a = Buckets::Exponential { scale: 1, zero_count: 1, offset: 2, counts: vec![1, 1, 1] };
        t.delta(&StreamKey::named("e"), 1, 2, &a, FRESH, 0).unwrap();
        // Downscaled by one: indexes 2,3 -> 1 and 4 -> 2, plus one new sample in index 2.
        let b = Buckets::Exponential { scale: 0, zero_count: 1, offset: 1, counts: vec![2, 2] };
        assert_eq!(
            t.delta(&StreamKey::named("e"), 1, 3, &b, FRESH, 0),
            Ok(Buckets::Exponential { scale: 0, zero_count: 0, offset: 1, counts: vec![0, 1] })
        );
    }

    #[test]
    fn offsets_at_the_i32_edges() {
        let mut t = DeltaTracker::default();
        let edge = |scale, offset, counts: &[u64]| Buckets::Exponential {
            scale,
            zero_count: u64::MAX,
            offset,
            counts: counts.to_vec(),
        };
        t.delta(&StreamKey::named("e"), 1, 2, &edge(20, i32::MAX - 1, &[1, 2, 3, u64::MAX]), FRESH, 0).unwrap();
        // Downscaled from the top and from the bottom of i32, and a scale jump of 30.
        assert!(t.delta(&StreamKey::named("e"), 1, 3, &edge(10, i32::MAX, &[u64::MAX; 3]), FRESH, 0).is_ok());
        assert!(t.delta(&StreamKey::named("e"), 1, 4, &edge(-10, i32::MIN, &[5, u64::MAX]), FRESH, 0).is_ok());
        assert!(t.delta(&StreamKey::named("e"), 1, 5, &edge(20, i32::MIN, &[1; 64]), FRESH, 0).is_ok());
        let (o, c) = downscale(i32::MAX, &[1, 1, 1], 30);
        assert_eq!((o, c.iter().sum::<u64>()), ((i64::from(i32::MAX)) >> 30, 3));
        assert_eq!(total(&edge(0, 0, &[u64::MAX, 1])), u64::MAX);
    }

    #[test]
    fn an_unversioned_checkpoint_continues_its_streams() {
        use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
        let attrs = [KeyValue {
            key: "cell.id".into(),
            value: Some(AnyValue { value: Some(Value::StringValue("bj".into())) }),
            ..Default::default()
        }];
        let key = StreamKey { attrs: &attrs, ..StreamKey::named("lat") };
        // As written before the encoding was versioned: no `version`, prost Debug keys.
        let old = r#"{"streams":{"||lat|cell.id=Some(StringValue(\"bj\"))":
            {"start_ns":1,"time_ns":5,"buckets":{"Explicit":{"bounds":[0.1,1.0],"counts":[1,1,1]}},"seen_ms":7}}}"#;
        let mut t = DeltaTracker::from_bytes(old.as_bytes()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.delta(&key, 1, 6, &ex(&[2, 1, 1]), FRESH, 9), Ok(ex(&[1, 0, 0])));
        assert!(t.legacy.is_empty());
        // Saved again, it is version 1 and keyed canonically.
        let again = DeltaTracker::from_bytes(&t.to_bytes()).unwrap();
        assert_eq!((again.version, again.streams.keys().collect::<Vec<_>>()), (ENCODING, vec![&key.encode()]));
        let newer = br#"{"version":2,"streams":{}}"#;
        assert!(matches!(DeltaTracker::from_bytes(newer).unwrap_err(), CheckpointError::NewerEncoding(2)));
    }

    proptest! {
        /// Summing the deltas of a cumulative series gives back its last value.
        #[test]
        fn deltas_sum_to_the_cumulative(incs in proptest::collection::vec(proptest::collection::vec(0u64..50, 3), 1..20)) {
            let mut t = DeltaTracker::default();
            let mut cum = vec![0u64; 3];
            let mut sum = vec![0u64; 3];
            for (i, inc) in incs.iter().enumerate() {
                for k in 0..3 { cum[k] += inc[k]; }
                if let Ok(Buckets::Explicit { counts, .. }) = t.delta(&StreamKey::named("s"), 1, 1 + i as i64, &ex(&cum), FRESH, 0) {
                    for k in 0..3 { sum[k] += counts[k]; }
                }
            }
            prop_assert_eq!(sum, cum);
        }
    }
}
