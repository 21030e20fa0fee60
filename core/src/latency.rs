//! Latency distributions in microseconds.
//!
//! Closed windows carry a real HdrHistogram (2 significant digits, 1 µs .. 1 h, V2 serialization):
//! 2 digits bound the relative error of any quantile by 1/128 < 1 %. Open windows hold the same
//! buckets sparsely ([`SparseHistogram`]): a dense 2-digit histogram is ~26 KiB while a window of a
//! typical series touches a few hundred buckets.

use hdrhistogram::Histogram;

use std::io::Read;

mod serialized;
pub use serialized::*;

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

/// The largest bucket index a value can land in (that of [`MAX_US`]).
pub const MAX_INDEX: u16 = 3_286;

/// The lowest value that lands in bucket `index` (inverse of [`bucket_index`]).
pub fn bucket_lowest(index: u16) -> u64 {
    let i = u64::from(index);
    if i < SUB_BUCKET_COUNT {
        return i;
    }
    let shift = (i - SUB_BUCKET_COUNT) / (SUB_BUCKET_COUNT / 2) + 1;
    let sub = (i - SUB_BUCKET_COUNT) % (SUB_BUCKET_COUNT / 2) + SUB_BUCKET_COUNT / 2;
    // Indexes past the layout's counts array (only forged bytes have them) saturate.
    u32::try_from(shift).ok().and_then(|s| sub.checked_shl(s)).unwrap_or(u64::MAX)
}

/// The highest value that lands in bucket `index` (what quantiles report).
pub fn bucket_highest(index: u16) -> u64 {
    let lo = bucket_lowest(index);
    let i = u64::from(index);
    let shift = if i < SUB_BUCKET_COUNT { 0 } else { (i - SUB_BUCKET_COUNT) / (SUB_BUCKET_COUNT / 2) + 1 };
    let width = u32::try_from(shift).ok().and_then(|s| 1u64.checked_shl(s)).unwrap_or(u64::MAX);
    lo.saturating_add(width - 1)
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

/// Largest count stored inside a packed entry; fuller buckets keep their count in `wide`.
const INLINE_MAX: u16 = 15;
/// Largest count a bucket keeps; more saturates.
pub const MAX_COUNT: u64 = i64::MAX as u64;

/// The buckets of one open window, sorted by bucket index, each packed in two bytes as
/// `index << 4 | count` (indexes are below 4096): most buckets of a window hold a handful of
/// samples, so a bucket costs 2 bytes. Once any bucket holds more than 15, `wide` keeps every
/// bucket's count in 8 bytes beside it (a packed count of 0 says "see `wide`"), so recording `n`
/// samples costs the same for any `n` (client-sent counts may be anything).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseHistogram {
    /// Packed (bucket index, count or 0) pairs, one per bucket, in index order.
    entries: Vec<u16>,
    /// Empty, or one count per entry (used where the entry's own count is 0), saturating at
    /// [`MAX_COUNT`].
    wide: Vec<u64>,
}

impl SparseHistogram {
    fn count_at(&self, pos: usize) -> u64 {
        let inline = self.entries[pos] & INLINE_MAX;
        if inline != 0 { u64::from(inline) } else { self.wide[pos] }
    }

    /// An open window's histogram lives for its window and there are millions of them: grow by
    /// a quarter, not double, so spare room averages ~10 %, not ~30 %.
    fn grow<T>(v: &mut Vec<T>) {
        if v.len() == v.capacity() {
            v.reserve_exact((v.len() / 4).max(8));
        }
    }

    /// Adds `n` samples of `value_us`; a bucket's count saturates at [`MAX_COUNT`].
    pub fn record_n(&mut self, value_us: u64, n: u64) {
        self.record_index_n(bucket_index(value_us), n);
    }

    /// Adds `n` samples to bucket `index` (from [`bucket_index`] or
    /// [`SparseHistogram::buckets_with_counts`]): the same as recording `n` values that land
    /// there. Indexes past [`MAX_INDEX`] are clamped to it.
    pub fn record_index_n(&mut self, index: u16, n: u64) {
        if n == 0 {
            return;
        }
        let index = index.min(MAX_INDEX);
        let pos = self.entries.partition_point(|e| (e >> 4) < index);
        let found = self.entries.get(pos).is_some_and(|e| e >> 4 == index);
        let have = if found { self.count_at(pos) } else { 0 };
        let total = have.saturating_add(n).min(MAX_COUNT);
        let packed = if total <= u64::from(INLINE_MAX) { total as u16 } else { 0 };
        // `wide` is in use once non-empty (or from this sample on).
        let wide = packed == 0 || !self.wide.is_empty();
        if wide && self.wide.len() != self.entries.len() {
            self.wide.reserve_exact(self.entries.capacity());
            self.wide.extend(self.entries.iter().map(|&e| u64::from(e & INLINE_MAX)));
        }
        if found {
            self.entries[pos] = (index << 4) | packed;
            if wide {
                self.wide[pos] = total;
            }
        } else {
            Self::grow(&mut self.entries);
            self.entries.insert(pos, (index << 4) | packed);
            if wide {
                Self::grow(&mut self.wide);
                self.wide.insert(pos, total);
            }
        }
    }

    /// Adds one sample.
    pub fn record(&mut self, value_us: u64) {
        self.record_n(value_us, 1);
    }

    /// (bucket index, count) of every occupied bucket, in index order.
    pub fn buckets_with_counts(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.entries.iter().enumerate().map(|(i, &e)| (e >> 4, self.count_at(i)))
    }

    /// (lowest value of the bucket, count) for every occupied bucket, in value order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets_with_counts().map(|(idx, n)| (bucket_lowest(idx), n))
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u16>() + self.wide.capacity() * std::mem::size_of::<u64>()
    }

    /// Releases spare capacity (after a burst of new buckets).
    pub fn shrink(&mut self) {
        self.entries.shrink_to_fit();
        self.wide.shrink_to_fit();
    }

    /// Total samples (saturating).
    pub fn count(&self) -> u64 {
        self.buckets_with_counts().fold(0u64, |t, (_, n)| t.saturating_add(n))
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
        let value = |idx: u16| if q == 0.0 { bucket_lowest(idx) } else { bucket_highest(idx) };
        let mut seen = 0u64;
        for (idx, n) in self.buckets_with_counts() {
            seen = seen.saturating_add(n);
            if seen >= target {
                return Some(value(idx));
            }
        }
        self.entries.last().map(|e| value(e >> 4))
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
        for (idx, n) in self.buckets_with_counts() {
            seen = seen.saturating_add(n);
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
        for (idx, count) in self.buckets_with_counts() {
            let idx = u32::from(idx);
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
    use hdrhistogram::serialization::{Serializer, V2Serializer};
    use proptest::prelude::*;

    #[test]
    fn the_largest_index_is_that_of_the_largest_value() {
        assert_eq!(bucket_index(MAX_US), MAX_INDEX);
        assert_eq!(bucket_index(u64::MAX), MAX_INDEX);
        assert_eq!(bucket_index(bucket_lowest(MAX_INDEX)), MAX_INDEX);
    }

    proptest! {
        #[test]
        fn recording_by_index_equals_recording_values(values in proptest::collection::vec((0u64..4_000_000_000, 1u64..40), 0..300)) {
            let mut by_value = SparseHistogram::default();
            let mut by_index = SparseHistogram::default();
            for &(v, n) in &values {
                by_value.record_n(v, n);
                by_index.record_index_n(bucket_index(v), n);
            }
            prop_assert_eq!(by_value, by_index);
        }

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
    fn huge_counts_cost_one_bucket_and_saturate() {
        let mut s = SparseHistogram::default();
        s.record_n(1000, u64::MAX);
        s.record_n(1000, u64::MAX);
        s.record_n(10, 5);
        s.record_n(2000, u64::from(INLINE_MAX) + 1);
        assert_eq!(s.buckets(), 3);
        assert!(s.heap_bytes() < 256, "{}", s.heap_bytes());
        let total = MAX_COUNT + 5 + u64::from(INLINE_MAX) + 1;
        assert_eq!(s.count(), total);
        let bytes = s.serialize();
        let h = deserialize(&bytes).unwrap();
        assert_eq!(h.count_at(1000), MAX_COUNT);
        assert_eq!(h.count_at(2000), u64::from(INLINE_MAX) + 1);
        assert_eq!(count_above(&bytes, 1500).unwrap(), u64::from(INLINE_MAX) + 1);
        assert_eq!(count_above(&bytes, 0).unwrap(), total);
        s.record_n(3000, MAX_COUNT);
        assert_eq!(s.count(), u64::MAX, "saturates");
        // A dense merge past V2's signed counts still serializes, saturated.
        let mut dense = h.clone();
        dense.add(&h).unwrap();
        let again = deserialize(&serialize(&dense)).unwrap();
        assert_eq!(again.count_at(1000), MAX_COUNT);
    }

    #[test]
    fn forged_headers_are_refused_before_allocating() {
        let mut s = SparseHistogram::default();
        s.record(100);
        let good = s.serialize();
        // Another layout (3 digits) claiming a 4 GiB payload.
        let mut forged = good.clone();
        forged[12..16].copy_from_slice(&3u32.to_be_bytes());
        forged[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = deserialize(&forged).unwrap_err();
        assert!(matches!(e, HistogramError::Length { claims: 4_294_967_295, .. }), "{e}");
        assert!(for_each_bucket(&forged, |_, _| {}).is_err());
        // Our layout with a payload longer than the bytes.
        let mut short = good.clone();
        short[4..8].copy_from_slice(&1000u32.to_be_bytes());
        assert!(count_above(&short, 0).is_err());
        // A layout whose counts array would be gigabytes.
        let mut wide = good.clone();
        wide[12..16].copy_from_slice(&5u32.to_be_bytes());
        wide[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(deserialize(&wide).unwrap_err(), HistogramError::Layout { too_large: true, .. }));
        // A deflate header claiming more than it has, and garbage.
        let mut deflate = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        deflate.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(deserialize(&deflate).is_err());
        assert!(deserialize(b"nonsense").is_err());
        assert!(deserialize(&[]).is_err());
        // A zero run to the end of u64 is an out-of-range index, not an overflow.
        let mut runs = good[..V2_HEADER].to_vec();
        let mut payload = Vec::new();
        for _ in 0..3 {
            put_zigzag(&mut payload, i64::MIN + 1);
        }
        put_zigzag(&mut payload, 1);
        runs[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        runs.extend_from_slice(&payload);
        assert!(for_each_bucket(&runs, |_, _| {}).is_err());
        // Read backwards, the same runs must not overflow either (an answer or an error, no panic).
        let _ = count_above_max(&runs, 10, 1000);
    }

    #[test]
    fn fuzz_found_an_index_past_the_counts_array() {
        // A zero run that lands a count at index 60,000 (found by the `histogram` fuzz target).
        let crash = [
            0x1c, 0x84, 0x93, 0x13, 0, 0, 0, 0x0e, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xd6,
            0x93, 0xa4, 0, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x9f, 0xe5, 0x04, 0x0e, 0x89, 0x0c, 0x04, 0x08,
            0xb1, 0x0c, 0x0c,
        ];
        assert!(matches!(for_each_bucket(&crash, |_, _| {}).unwrap_err(), HistogramError::OutOfRange(_)));
        assert_eq!(bucket_lowest(u16::MAX), u64::MAX);
        // A lowest value of 2^56 and more made the layout arithmetic loop (found by the same target).
        let mut huge_low = crash.to_vec();
        huge_low[16..24].copy_from_slice(&0x013f_f000_ffff_ffffu64.to_be_bytes());
        huge_low[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(deserialize(&huge_low).is_err());
        assert_eq!(counts_len(2, 1 << 60, u64::MAX), 3 * 128);
        // A zero run of 2^63 overflowed the crate's negation (found by the same target).
        let mut run = crash[..V2_HEADER].to_vec();
        run[12..16].copy_from_slice(&3u32.to_be_bytes());
        let payload = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x04];
        run[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        run.extend_from_slice(&payload);
        assert!(matches!(deserialize(&run).unwrap_err(), HistogramError::OutOfRange("zero run")));
        // Another layout's buckets: the backward walk must not take its max at our precision.
        let mut h = Histogram::<u64>::new_with_bounds(1000, 10_000_000_000, 3).unwrap();
        h.record_n(1_000_500, 4).unwrap();
        let mut foreign = Vec::new();
        V2Serializer::new().serialize(&h, &mut foreign).unwrap();
        let max = h.lowest_equivalent(h.max());
        assert_eq!(count_above(&foreign, 1_000_000).unwrap(), 4);
        assert_eq!(count_above_max(&foreign, 1_000_000, max).unwrap(), 4);
        assert_eq!(bucket_highest(u16::MAX), u64::MAX);
    }

    /// The `histogram` fuzz target's invariant: where the buckets read, both walks agree.
    fn walks_agree(bytes: &[u8]) {
        let threshold = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let mut last = None;
        if for_each_bucket(bytes, |v, n| {
            if n > 0 {
                last = Some(v)
            }
        })
        .is_err()
        {
            return;
        }
        if let (Ok(above), Some(max)) = (count_above(bytes, threshold), last) {
            assert_eq!(count_above_max(bytes, threshold, max).unwrap(), above);
        }
    }

    #[test]
    fn fuzz_found_buckets_above_the_ceiling() {
        // A count at an index above MAX_US's bucket: the backward walk started from the wrong one.
        let crash = [
            0x1c, 0x84, 0x93, 0x13, 0x00, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x6c, 0x5b, 0xab,
            0xfa, 0x00, 0x00, 0x00, 0xd6, 0x93, 0xd6, 0x13, 0xfe, 0xff, 0xff, 0xa4, 0x00, 0x3f, 0x23, 0x10, 0x84, 0xff,
            0xbe, 0x14, 0xff, 0x1c, 0x93, 0x13, 0xa4, 0x00, 0x3f, 0x14, 0x1c, 0x84, 0x93, 0x13, 0xbe, 0xff, 0xff, 0xa4,
            0x00, 0x3f, 0x00, 0x10, 0x14, 0x12, 0x23, 0xa4, 0x00, 0x3f, 0x00, 0xff, 0x00, 0x0c, 0x0c, 0x00, 0x04, 0x00,
            0xf4, 0x04, 0x08, 0xb1, 0x0c, 0x0c,
        ];
        walks_agree(&crash);
    }

    #[test]
    fn foreign_layouts_still_read() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).unwrap();
        h.record_n(12_345, 7).unwrap();
        let mut plain = Vec::new();
        V2Serializer::new().serialize(&h, &mut plain).unwrap();
        let mut n = 0;
        for_each_bucket(&plain, |_, c| n += c).unwrap();
        assert_eq!(n, 7);
        assert_eq!(counts_len(2, 1, MAX_US), 3328);
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
