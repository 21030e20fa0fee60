//! Histograms in their serialized form (HdrHistogram V2, as Parquet stores them): writing them,
//! reading them with every size checked before anything is allocated, and answering questions
//! (buckets, counts above a threshold) straight from the bytes without inflating a histogram.

use super::*;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// Serializes a histogram in HdrHistogram's V2 format (the `latency_hist` column).
pub fn serialize(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    if V2Serializer::new().serialize(h, &mut out).is_ok() {
        return out;
    }
    // A bucket beyond V2's signed counts (merged client counts): write it saturated instead.
    let mut sparse = SparseHistogram::default();
    for v in h.iter_recorded() {
        sparse.record_n(v.value_iterated_to(), v.count_at_value());
    }
    sparse.serialize()
}

/// Largest counts array a histogram of another layout may make the general deserializer allocate
/// (this crate's layout needs 3,328).
const MAX_FOREIGN_COUNTS: u64 = 1 << 16;
/// Largest inflated size of a V2+deflate histogram (a dense one of this crate's layout is < 40 KiB).
const MAX_INFLATED: u64 = 1 << 20;

/// Why serialized histogram bytes (from a file, or a SQL literal) were refused.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// The header or payload ends early.
    #[error("truncated histogram {0}")]
    Truncated(&'static str),
    /// Neither of the V2 cookies.
    #[error("not an HdrHistogram V2 serialization (bad cookie)")]
    BadCookie,
    /// The header claims more bytes than there are.
    #[error("histogram claims a {claims}-byte payload but has {has}")]
    Length {
        /// Bytes the header claims.
        claims: u64,
        /// Bytes there are.
        has: u64,
    },
    /// The compressed payload does not inflate.
    #[error("invalid compressed histogram: {0}")]
    Inflate(#[source] std::io::Error),
    /// The compressed payload inflates past the bound.
    #[error("compressed histogram inflates past {MAX_INFLATED} bytes")]
    Inflated,
    /// A layout HdrHistogram cannot hold, or whose counts array would be too large.
    #[error("{} histogram layout: {digits} digits, {low}..{high}", if *.too_large { "too large a" } else { "unsupported" })]
    Layout {
        /// Significant digits.
        digits: u32,
        /// Lowest discernible value.
        low: u64,
        /// Highest trackable value.
        high: u64,
        /// Valid, but its counts array exceeds the bound.
        too_large: bool,
    },
    /// A varint of the payload is malformed or out of range.
    #[error("malformed histogram payload: {0}")]
    Payload(&'static str),
    /// A bucket or value outside what the layout holds.
    #[error("histogram {0} out of range")]
    OutOfRange(&'static str),
    /// HdrHistogram's own decoder refused it.
    #[error("invalid HdrHistogram serialization: {0}")]
    Decode(String),
}

/// Deserializes a V2 (or V2+deflate) histogram. The header is checked before anything is
/// allocated: a payload longer than the bytes, a layout whose counts array would be huge, or an
/// inflated size past 1 MiB is an error (these bytes can come from a SQL literal).
pub fn deserialize(bytes: &[u8]) -> Result<Histogram<u64>, HistogramError> {
    let inflated;
    let plain = match be_u32(bytes, 0) {
        Some(V2_COOKIE) => bytes,
        Some(V2_DEFLATE_COOKIE) => {
            let len = be_u32(bytes, 4).ok_or(HistogramError::Truncated("header"))? as usize;
            let data = bytes
                .get(8..)
                .filter(|d| d.len() >= len)
                .ok_or(HistogramError::Length { claims: len as u64, has: bytes.len().saturating_sub(8) as u64 })?;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(&data[..len])
                .take(MAX_INFLATED + 1)
                .read_to_end(&mut out)
                .map_err(HistogramError::Inflate)?;
            if out.len() as u64 > MAX_INFLATED {
                return Err(HistogramError::Inflated);
            }
            inflated = out;
            &inflated[..]
        }
        _ => return Err(HistogramError::BadCookie),
    };
    check_v2_header(plain)?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(plain))
        .map_err(|e| HistogramError::Decode(format!("{e:?}")))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at.checked_add(4)?).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// Rejects a V2 header whose payload is longer than the bytes or whose layout needs a counts
/// array larger than [`MAX_FOREIGN_COUNTS`].
fn check_v2_header(b: &[u8]) -> Result<(), HistogramError> {
    let truncated = HistogramError::Truncated("header");
    let len = u64::from(be_u32(b, 4).ok_or(truncated)?);
    let have = (b.len() as u64).saturating_sub(V2_HEADER as u64);
    if b.len() < V2_HEADER || len > have {
        return Err(HistogramError::Length { claims: len, has: have });
    }
    let digits = be_u32(b, 12).ok_or(HistogramError::Truncated("header"))?;
    let low = be_u64(b, 16).ok_or(HistogramError::Truncated("header"))?;
    let high = be_u64(b, 24).ok_or(HistogramError::Truncated("header"))?;
    if digits > 5 || low == 0 || high < low.saturating_mul(2) {
        return Err(HistogramError::Layout { digits, low, high, too_large: false });
    }
    if counts_len(digits, low, high) > MAX_FOREIGN_COUNTS {
        return Err(HistogramError::Layout { digits, low, high, too_large: true });
    }
    // The crate negates zero runs: a run of 2^63 (zigzag u64::MAX) overflows it.
    let mut payload = &b[V2_HEADER..V2_HEADER + len as usize];
    while !payload.is_empty() {
        let (raw, used) = leb128(payload).ok_or(HistogramError::Payload("bad varint"))?;
        if raw == u64::MAX {
            return Err(HistogramError::OutOfRange("zero run"));
        }
        payload = &payload[used..];
    }
    Ok(())
}

/// Length of HdrHistogram's counts array for a layout (its own arithmetic, in u64 with saturation).
pub(crate) fn counts_len(digits: u32, low: u64, high: u64) -> u64 {
    let single_unit = 2 * 10u64.pow(digits);
    let magnitude = 64 - (single_unit - 1).leading_zeros();
    let half_magnitude = magnitude.max(1) - 1;
    let sub_buckets = 1u64 << (half_magnitude + 1);
    let unit_magnitude = 63 - low.leading_zeros();
    // `checked_shl` only checks the shift amount, not lost bits: a huge `low` must saturate.
    let mut smallest_untrackable =
        if unit_magnitude > sub_buckets.leading_zeros() { u64::MAX } else { sub_buckets << unit_magnitude };
    let mut buckets = 1u64;
    while smallest_untrackable <= high {
        if smallest_untrackable > u64::MAX / 2 {
            buckets += 1;
            break;
        }
        smallest_untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * (sub_buckets / 2)
}

/// HdrHistogram's V2 cookie (base 0x1c849303 with the 0x10 word-size flag).
pub(crate) const V2_COOKIE: u32 = 0x1c84_9313;
/// The V2+deflate cookie.
pub(crate) const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;
pub(crate) const V2_HEADER: usize = 40;

/// The payload of a V2-serialized histogram in this crate's layout (uncompressed, 2 significant
/// digits, lowest value 1), or `None` for any other layout.
fn v2_payload(bytes: &[u8]) -> Result<Option<&[u8]>, HistogramError> {
    let fast = be_u32(bytes, 0) == Some(V2_COOKIE)
        && be_u32(bytes, 8) == Some(0)
        && be_u32(bytes, 12) == Some(u32::from(SIGFIG))
        && be_u64(bytes, 16) == Some(1);
    if !fast {
        return Ok(None);
    }
    let len = be_u32(bytes, 4).ok_or(HistogramError::Truncated("header"))? as usize;
    bytes.get(V2_HEADER..V2_HEADER + len).map(Some).ok_or(HistogramError::Truncated("payload"))
}

/// Walks a V2 payload: `f(bucket index, count)` for every non-empty bucket.
#[inline]
fn for_each_index(payload: &[u8], mut f: impl FnMut(u64, u64)) -> Result<(), HistogramError> {
    let mut index: u64 = 0;
    let mut pos = 0;
    while let Some(&first) = payload.get(pos) {
        // Most varints are one byte: counts and zero runs under 64.
        let (raw, used) = if first < 0x80 {
            (u64::from(first), 1)
        } else {
            leb128(&payload[pos..]).ok_or(HistogramError::Payload("bad varint"))?
        };
        pos += used;
        let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
        if v < 0 {
            index = index.saturating_add(v.unsigned_abs());
        } else {
            if v > 0 {
                f(index, v as u64);
            }
            index = index.saturating_add(1);
        }
    }
    Ok(())
}

/// Calls `f(lowest value of the bucket, count)` for every non-empty bucket of a V2-serialized
/// histogram, decoding the payload in place (the hot path of every merge). Other layouts
/// (compressed, another configuration) go through the general deserializer.
pub fn for_each_bucket(bytes: &[u8], mut f: impl FnMut(u64, u64)) -> Result<(), HistogramError> {
    let Some(payload) = v2_payload(bytes)? else {
        let h = deserialize(bytes)?;
        for v in h.iter_recorded() {
            f(h.lowest_equivalent(v.value_iterated_to()), v.count_at_value());
        }
        return Ok(());
    };
    let mut bad_index = false;
    for_each_index(payload, |i, n| match u16::try_from(i) {
        // Values are clamped to MAX_US, so no real bucket lies above its index.
        Ok(i) if i <= bucket_index(MAX_US) => f(bucket_lowest(i), n),
        _ => bad_index = true,
    })?;
    if bad_index { Err(HistogramError::OutOfRange("bucket index")) } else { Ok(()) }
}

/// Adds a serialized histogram's counts into `into`.
pub fn add_serialized(bytes: &[u8], into: &mut Histogram<u64>) -> Result<(), HistogramError> {
    let mut err = None;
    for_each_bucket(bytes, |v, n| {
        if into.record_n(v, n).is_err() {
            err = Some(HistogramError::OutOfRange("value"));
        }
    })?;
    err.map_or(Ok(()), Err)
}

/// Samples of a serialized histogram slower than `threshold_us` (to bucket precision: those in
/// buckets whose lowest value is above it). Compares bucket indexes, not values, on the fast path:
/// this runs once per window in SLO scans.
pub fn count_above(bytes: &[u8], threshold_us: u64) -> Result<u64, HistogramError> {
    let mut n = 0;
    match v2_payload(bytes)? {
        Some(payload) => {
            let first = u64::from(bucket_index(threshold_us)) + 1;
            for_each_index(payload, |i, c| {
                if i >= first {
                    n = u64::saturating_add(n, c);
                }
            })?;
        }
        None => for_each_bucket(bytes, |v, c| {
            if v > threshold_us {
                n = u64::saturating_add(n, c);
            }
        })?,
    }
    Ok(n)
}

/// [`count_above`] for a histogram whose largest recorded value is `max_us` (the rollups'
/// `max_us` column): the payload is read backwards from its last bucket, so only the buckets
/// above the threshold are decoded — SLO thresholds sit in the tail, most of a window's buckets
/// below them. Falls back to the forward walk on any layout it does not expect.
pub fn count_above_max(bytes: &[u8], threshold_us: u64, max_us: u64) -> Result<u64, HistogramError> {
    // Another layout buckets values differently: the shortcut below would misjudge it.
    let Some(payload) = v2_payload(bytes)? else { return count_above(bytes, threshold_us) };
    let first = i64::from(bucket_index(threshold_us)) + 1;
    let mut index = i64::from(bucket_index(max_us));
    if index < first {
        return Ok(0);
    }
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
            index = index.saturating_sub_unsigned(v.unsigned_abs());
        } else {
            n = u64::saturating_add(n, v as u64);
            index -= 1;
        }
        end = start;
    }
    Ok(n)
}

/// Successful requests slower than `threshold_us` in one rollups row: those of the whole
/// histogram `all` (largest value `max_us`) above it, less those of `errors_hist`, the failed
/// requests' own histogram. Both are counted in the same buckets, so the difference is the
/// successes' count to the same bucket precision. `None` is a row from before that histogram
/// was kept: the count then assumes every failure was slow (`slow - errors`), which undercounts
/// when a window's failures were fast.
pub fn slow_successes(
    all: &[u8],
    errors_hist: Option<&[u8]>,
    errors: u64,
    threshold_us: u64,
    max_us: u64,
) -> Result<u64, HistogramError> {
    // Nothing in a window whose slowest request was fast enough: skip the decode.
    if max_us <= threshold_us {
        return Ok(0);
    }
    let slow = count_above_max(all, threshold_us, max_us)?;
    Ok(match errors_hist {
        Some([]) => slow,
        Some(e) => slow.saturating_sub(count_above(e, threshold_us)?),
        None => slow.saturating_sub(errors),
    })
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
