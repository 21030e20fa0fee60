//! Latency distributions in microseconds.
//!
//! Closed windows carry a real HdrHistogram (2 significant digits, 1 µs .. 1 h, V2 serialization):
//! 2 digits bound the relative error of any quantile by 1/128 < 1 %. Open windows hold the same
//! buckets sparsely ([`SparseHistogram`]): a dense 2-digit histogram is ~26 KiB while a window of a
//! typical series touches a few hundred buckets.

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Significant digits of every latency histogram.
pub const SIGFIG: u8 = 2;
/// Largest trackable latency (1 hour, in µs); larger values are clamped to it.
pub const MAX_US: u64 = 3_600_000_000;

/// Sub-buckets in the first HdrHistogram bucket for 2 significant digits.
const SUB_BUCKET_COUNT: u64 = 256;
/// Bits of the half sub-bucket count (128).
const SUB_BUCKET_HALF_BITS: u32 = 7;

/// A fresh, empty histogram with the process-wide latency configuration.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that HdrHistogram accepts.
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).unwrap_or_else(|_| unreachable!("static bounds"))
}

/// The HdrHistogram counts-array index of `value_us` (clamped to [`MAX_US`]).
pub fn bucket_index(value_us: u64) -> u16 {
    let v = value_us.min(MAX_US);
    if v < SUB_BUCKET_COUNT {
        return v as u16;
    }
    let shift = (63 - v.leading_zeros()) - SUB_BUCKET_HALF_BITS;
    let sub = (v >> shift) - (SUB_BUCKET_COUNT / 2);
    (SUB_BUCKET_COUNT + u64::from(shift - 1) * (SUB_BUCKET_COUNT / 2) + sub) as u16
}

/// The lowest value that lands in bucket `index` (inverse of [`bucket_index`]).
pub fn bucket_lowest(index: u16) -> u64 {
    let i = u64::from(index);
    if i < SUB_BUCKET_COUNT {
        return i;
    }
    let shift = (i - SUB_BUCKET_COUNT) / (SUB_BUCKET_COUNT / 2) + 1;
    let sub = (i - SUB_BUCKET_COUNT) % (SUB_BUCKET_COUNT / 2) + SUB_BUCKET_COUNT / 2;
    sub << shift
}

/// The highest value that lands in bucket `index` (what quantiles report).
pub fn bucket_highest(index: u16) -> u64 {
    let lo = bucket_lowest(index);
    let i = u64::from(index);
    let width = if i < SUB_BUCKET_COUNT { 1 } else { 1u64 << ((i - SUB_BUCKET_COUNT) / (SUB_BUCKET_COUNT / 2) + 1) };
    lo + width - 1
}

/// HdrHistogram's zigzag LEB128-64b9B varint.
fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    for _ in 0..8 {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Largest count one packed entry holds; a fuller bucket spills into a second entry.
const MAX_PACKED_COUNT: u32 = (1 << 20) - 1;

/// The buckets of one open window, sorted by bucket index, each packed as `index << 20 | count`
/// so a bucket costs 4 bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseHistogram {
    /// Packed (bucket index, count) pairs in index order; an index may repeat when a count overflows.
    entries: Vec<u32>,
}

impl SparseHistogram {
    /// Adds `n` samples of `value_us`.
    pub fn record_n(&mut self, value_us: u64, n: u64) {
        let index = u32::from(bucket_index(value_us));
        let mut left = n;
        while left > 0 {
            let pos = self.entries.partition_point(|e| (e >> 20) < index);
            // Find a non-full entry of this index, if any.
            let mut at = pos;
            while at < self.entries.len()
                && self.entries[at] >> 20 == index
                && self.entries[at] & MAX_PACKED_COUNT == MAX_PACKED_COUNT
            {
                at += 1;
            }
            if at < self.entries.len() && self.entries[at] >> 20 == index {
                let have = self.entries[at] & MAX_PACKED_COUNT;
                let add = left.min(u64::from(MAX_PACKED_COUNT - have)) as u32;
                self.entries[at] += add;
                left -= u64::from(add);
            } else {
                let add = left.min(u64::from(MAX_PACKED_COUNT)) as u32;
                self.entries.insert(at, (index << 20) | add);
                left -= u64::from(add);
            }
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, value_us: u64) {
        self.record_n(value_us, 1);
    }

    /// (lowest value of the bucket, count) for every occupied bucket, in value order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.entries.iter().map(|e| (bucket_lowest((e >> 20) as u16), u64::from(e & MAX_PACKED_COUNT)))
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u32>()
    }

    /// Releases spare capacity (after a burst of new buckets).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
    }

    /// Total samples.
    pub fn count(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e & MAX_PACKED_COUNT)).sum()
    }

    /// Occupied buckets (entries).
    pub fn buckets(&self) -> usize {
        self.entries.len()
    }

    /// The nearest-rank `q` quantile, exactly as the dense histogram's `value_at_quantile`
    /// reports it; `None` when empty.
    pub fn value_at_quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let q = q.min(1.0);
        let target = ((q * total as f64).ceil() as u64).max(1);
        // As the crate does: the 0th quantile is the lowest value of the first bucket.
        let value = |e: &u32| if q == 0.0 { bucket_lowest((e >> 20) as u16) } else { bucket_highest((e >> 20) as u16) };
        let mut seen = 0u64;
        for e in &self.entries {
            seen += u64::from(e & MAX_PACKED_COUNT);
            if seen >= target {
                return Some(value(e));
            }
        }
        self.entries.last().map(value)
    }

    /// Nearest-rank quantiles, exactly as the dense histogram would report them.
    pub fn quantiles(&self) -> Quantiles {
        let total = self.count();
        if total == 0 {
            return Quantiles::default();
        }
        let targets = [0.5, 0.99, 0.999].map(|q: f64| ((q * total as f64).ceil() as u64).max(1));
        let mut out = [0u64; 3];
        let mut seen = 0u64;
        let mut next = 0;
        let mut last = 0u16;
        for e in &self.entries {
            let idx = (e >> 20) as u16;
            seen += u64::from(e & MAX_PACKED_COUNT);
            last = idx;
            while next < 3 && seen >= targets[next] {
                out[next] = bucket_highest(idx);
                next += 1;
            }
        }
        Quantiles { p50_us: out[0], p99_us: out[1], p999_us: out[2], max_us: bucket_highest(last) }
    }

    /// The V2 serialization of these samples, byte-identical to [`serialize`] of the dense
    /// histogram but without building it.
    pub fn serialize(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(self.entries.len() * 2 + 8);
        if self.entries.is_empty() {
            payload.push(0);
        }
        let mut next_index: u32 = 0;
        let mut i = 0;
        while i < self.entries.len() {
            let idx = self.entries[i] >> 20;
            let mut count = 0u64;
            while i < self.entries.len() && self.entries[i] >> 20 == idx {
                count += u64::from(self.entries[i] & MAX_PACKED_COUNT);
                i += 1;
            }
            match idx - next_index {
                0 => {}
                // A lone empty bucket is written as a zero count, longer runs as negative lengths.
                1 => put_zigzag(&mut payload, 0),
                gap => put_zigzag(&mut payload, -i64::from(gap)),
            }
            put_zigzag(&mut payload, count as i64);
            next_index = idx + 1;
        }
        let mut out = Vec::with_capacity(V2_HEADER + payload.len());
        out.extend_from_slice(&V2_COOKIE.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&u32::from(SIGFIG).to_be_bytes());
        out.extend_from_slice(&1u64.to_be_bytes());
        out.extend_from_slice(&MAX_US.to_be_bytes());
        out.extend_from_slice(&1.0f64.to_bits().to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Adds every sample into a dense histogram.
    pub fn add_to(&self, h: &mut Histogram<u64>) {
        for (v, n) in self.iter() {
            // Values are clamped to MAX_US, which the histogram tracks.
            let _ = h.record_n(v, n);
        }
    }

    /// The dense HdrHistogram of these samples.
    pub fn to_histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        self.add_to(&mut h);
        h
    }
}

/// Serializes a histogram in HdrHistogram's V2 format (the `latency_hist` column).
pub fn serialize(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing to a Vec cannot fail and our histograms are within V2's limits.
    let _ = V2Serializer::new().serialize(h, &mut out);
    out
}

/// Deserializes a V2 (or V2+deflate) histogram.
pub fn deserialize(bytes: &[u8]) -> Result<Histogram<u64>, String> {
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("invalid HdrHistogram serialization: {e:?}"))
}

/// HdrHistogram's V2 cookie (base 0x1c849303 with the 0x10 word-size flag).
const V2_COOKIE: u32 = 0x1c84_9313;
const V2_HEADER: usize = 40;

/// The payload of a V2-serialized histogram in this crate's layout (uncompressed, 2 significant
/// digits, lowest value 1), or `None` for any other layout.
fn v2_payload(bytes: &[u8]) -> Result<Option<&[u8]>, String> {
    let be_u32 = |at: usize| bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let fast = be_u32(0) == Some(V2_COOKIE)
        && be_u32(8) == Some(0)
        && be_u32(12) == Some(u32::from(SIGFIG))
        && bytes.get(16..24).map(|b| b == 1u64.to_be_bytes()) == Some(true);
    if !fast {
        return Ok(None);
    }
    let len = be_u32(4).ok_or("truncated histogram header")? as usize;
    bytes.get(V2_HEADER..V2_HEADER + len).map(Some).ok_or_else(|| "truncated histogram payload".to_string())
}

/// Walks a V2 payload: `f(bucket index, count)` for every non-empty bucket.
#[inline]
fn for_each_index(payload: &[u8], mut f: impl FnMut(u64, u64)) -> Result<(), String> {
    let mut index: u64 = 0;
    let mut pos = 0;
    while let Some(&first) = payload.get(pos) {
        // Most varints are one byte: counts and zero runs under 64.
        let (raw, used) = if first < 0x80 {
            (u64::from(first), 1)
        } else {
            leb128(&payload[pos..]).ok_or("malformed histogram varint")?
        };
        pos += used;
        let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if v < 0 {
            index += v.unsigned_abs();
        } else {
            if v > 0 {
                f(index, v as u64);
            }
            index += 1;
        }
    }
    Ok(())
}

/// Calls `f(lowest value of the bucket, count)` for every non-empty bucket of a V2-serialized
/// histogram, decoding the payload in place (the hot path of every merge). Other layouts
/// (compressed, another configuration) go through the general deserializer.
pub fn for_each_bucket(bytes: &[u8], mut f: impl FnMut(u64, u64)) -> Result<(), String> {
    let Some(payload) = v2_payload(bytes)? else {
        let h = deserialize(bytes)?;
        for v in h.iter_recorded() {
            f(h.lowest_equivalent(v.value_iterated_to()), v.count_at_value());
        }
        return Ok(());
    };
    let mut bad_index = false;
    for_each_index(payload, |i, n| match u16::try_from(i) {
        Ok(i) => f(bucket_lowest(i), n),
        Err(_) => bad_index = true,
    })?;
    if bad_index { Err("histogram index out of range".into()) } else { Ok(()) }
}

/// Adds a serialized histogram's counts into `into`.
pub fn add_serialized(bytes: &[u8], into: &mut Histogram<u64>) -> Result<(), String> {
    let mut err = None;
    for_each_bucket(bytes, |v, n| {
        if let Err(e) = into.record_n(v, n) {
            err = Some(format!("histogram value out of range: {e:?}"));
        }
    })?;
    err.map_or(Ok(()), Err)
}

/// Samples of a serialized histogram slower than `threshold_us` (to bucket precision: those in
/// buckets whose lowest value is above it). Compares bucket indexes, not values, on the fast path:
/// this runs once per window in SLO scans.
pub fn count_above(bytes: &[u8], threshold_us: u64) -> Result<u64, String> {
    let mut n = 0;
    match v2_payload(bytes)? {
        Some(payload) => {
            let first = u64::from(bucket_index(threshold_us)) + 1;
            for_each_index(payload, |i, c| {
                if i >= first {
                    n += c;
                }
            })?;
        }
        None => for_each_bucket(bytes, |v, c| {
            if v > threshold_us {
                n += c;
            }
        })?,
    }
    Ok(n)
}

/// [`count_above`] for a histogram whose largest recorded value is `max_us` (the rollups'
/// `max_us` column): the payload is read backwards from its last bucket, so only the buckets
/// above the threshold are decoded — SLO thresholds sit in the tail, most of a window's buckets
/// below them. Falls back to the forward walk on any layout it does not expect.
pub fn count_above_max(bytes: &[u8], threshold_us: u64, max_us: u64) -> Result<u64, String> {
    let first = i64::from(bucket_index(threshold_us)) + 1;
    let mut index = i64::from(bucket_index(max_us));
    if index < first {
        return Ok(0);
    }
    let Some(payload) = v2_payload(bytes)? else { return count_above(bytes, threshold_us) };
    let (mut n, mut end) = (0, payload.len());
    while index >= first && end > 0 {
        // A varint's last byte is the only one without the continuation bit (a ninth byte
        // only follows eight continuation bytes, and only for counts beyond 2^55).
        let mut start = end - 1;
        while start > 0 && payload[start - 1] & 0x80 != 0 {
            start -= 1;
        }
        let decoded = if end - start <= 8 { leb128(&payload[start..end]) } else { None };
        let Some((raw, _)) = decoded.filter(|(_, used)| *used == end - start) else {
            return count_above(bytes, threshold_us);
        };
        let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if end == payload.len() && v <= 0 {
            // The last bucket written is always a non-empty one.
            return count_above(bytes, threshold_us);
        }
        if v < 0 {
            index -= v.unsigned_abs() as i64;
        } else {
            n += v as u64;
            index -= 1;
        }
        end = start;
    }
    Ok(n)
}

/// HdrHistogram's LEB128-64b9B varint: up to 8 bytes of 7 bits, then a full ninth byte.
fn leb128(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..8 {
        let byte = *b.get(i)?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    Some((v | (u64::from(*b.get(8)?) << 56), 9))
}

/// Nearest-rank quantiles of interest, precomputed into every rollup row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quantiles {
    /// Median, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest sample, µs (bucket-exact).
    pub max_us: u64,
}

impl Quantiles {
    /// Quantiles of `h`; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bucketing_matches_hdrhistogram(v in 0u64..MAX_US) {
            let h = new_histogram();
            let i = bucket_index(v);
            prop_assert_eq!(bucket_lowest(i), h.lowest_equivalent(v));
        }

        #[test]
        fn sparse_equals_dense(values in proptest::collection::vec(0u64..5_000_000, 1..400)) {
            let mut s = SparseHistogram::default();
            let mut d = new_histogram();
            for &v in &values {
                s.record(v);
                d.record(v).unwrap();
            }
            let from_sparse = s.to_histogram();
            prop_assert_eq!(from_sparse.len(), d.len());
            for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
                prop_assert_eq!(from_sparse.value_at_quantile(q), d.value_at_quantile(q));
            }
            let round = deserialize(&serialize(&from_sparse)).unwrap();
            prop_assert_eq!(round.value_at_quantile(0.999), d.value_at_quantile(0.999));
        }
    }

    proptest! {
        #[test]
        fn sparse_serialization_and_quantiles_match_the_crate(values in proptest::collection::vec(0u64..4_000_000_000, 0..400), big in 0u64..3_000_000) {
            let mut s = SparseHistogram::default();
            for v in &values { s.record(*v); }
            s.record_n(12_345, big);
            let dense = s.to_histogram();
            prop_assert_eq!(s.serialize(), serialize(&dense));
            prop_assert_eq!(s.quantiles(), Quantiles::of(&dense));
        }

        #[test]
        fn sparse_quantile_equals_dense(values in proptest::collection::vec(0u64..4_000_000_000, 1..300), q in 0.0f64..=1.0) {
            let mut s = SparseHistogram::default();
            for v in &values { s.record(*v); }
            let dense = s.to_histogram();
            prop_assert_eq!(s.value_at_quantile(q), Some(dense.value_at_quantile(q)));
            prop_assert_eq!(s.value_at_quantile(1.0), Some(dense.value_at_quantile(1.0)));
            prop_assert_eq!(s.value_at_quantile(0.0), Some(dense.value_at_quantile(0.0)));
        }

        #[test]
        fn fast_merge_equals_crate_merge(a in proptest::collection::vec(0u64..4_000_000_000, 0..300), b in proptest::collection::vec(0u64..100_000, 0..300)) {
            let mut ha = new_histogram();
            let mut hb = new_histogram();
            for v in &a { ha.record(*v.min(&MAX_US)).unwrap(); }
            for v in &b { hb.record(*v).unwrap(); }
            let mut fast = new_histogram();
            add_serialized(&serialize(&ha), &mut fast).unwrap();
            add_serialized(&serialize(&hb), &mut fast).unwrap();
            let mut slow = ha.clone();
            slow.add(&hb).unwrap();
            prop_assert_eq!(fast.len(), slow.len());
            for q in [0.0, 0.5, 0.99, 0.999, 1.0] {
                prop_assert_eq!(fast.value_at_quantile(q), slow.value_at_quantile(q));
            }
        }
    }

    proptest! {
        #[test]
        fn count_above_counts_whole_buckets_above(values in proptest::collection::vec(0u64..4_000_000_000, 0..400), threshold in 0u64..5_000_000_000, (heavy, times) in (0u64..4_000_000_000, 0u64..3_000_000)) {
            let mut s = SparseHistogram::default();
            for v in &values { s.record(*v); }
            // One bucket with a count that takes a multi-byte varint.
            s.record_n(heavy, times);
            let above = |v: u64| bucket_lowest(bucket_index(v)) > threshold;
            let expected = values.iter().filter(|v| above(**v)).count() as u64 + if above(heavy) { times } else { 0 };
            let values: Vec<u64> = values.into_iter().chain((times > 0).then_some(heavy)).collect();
            prop_assert_eq!(count_above(&s.serialize(), threshold).unwrap(), expected);
            // Read backwards from the max, as the SLO scans do.
            let max = values.iter().copied().max().unwrap_or(0);
            prop_assert_eq!(count_above_max(&s.serialize(), threshold, max).unwrap(), expected);
            // The general path (any other layout) agrees.
            let mut compressed = Vec::new();
            hdrhistogram::serialization::V2DeflateSerializer::new().serialize(&s.to_histogram(), &mut compressed).unwrap();
            prop_assert_eq!(count_above(&compressed, threshold).unwrap(), expected);
        }
    }

    #[test]
    fn largest_index_fits() {
        assert!(bucket_index(MAX_US) < 4096, "index must fit 12 bits");
        assert_eq!(bucket_index(u64::MAX), bucket_index(MAX_US));
    }

    #[test]
    fn counts_spill_over_packing() {
        let mut s = SparseHistogram::default();
        s.record_n(1000, 3_000_000);
        s.record_n(10, 1);
        let h = s.to_histogram();
        assert_eq!(h.len(), 3_000_001);
        assert_eq!(s.iter().map(|(_, n)| n).sum::<u64>(), 3_000_001);
    }

    #[test]
    fn quantile_error_is_under_one_percent() {
        let mut s = SparseHistogram::default();
        for v in 1..=100_000u64 {
            s.record(v * 37);
        }
        let q = Quantiles::of(&s.to_histogram());
        let exact = 99_900 * 37;
        let err = (q.p999_us as f64 - exact as f64).abs() / exact as f64;
        assert!(err < 0.01, "p999 {} vs {exact}", q.p999_us);
    }
}
