//! Timestamps at the API boundary: RFC 3339 or unix milliseconds in, RFC 3339 UTC with millis out.

use crate::{Error, Result};
use std::time::UNIX_EPOCH;

/// Parses an API timestamp: unix milliseconds (all digits) or RFC 3339.
pub fn parse_api_time_ms(s: &str) -> Result<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().map_err(|_| Error::InvalidInput(format!("timestamp `{s}` is out of range")));
    }
    parse_rfc3339_ms(s)
}

/// Parses an RFC 3339 timestamp to unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64> {
    let ns = parse_rfc3339_ns(s)?;
    Ok(ns.div_euclid(1_000_000))
}

/// Parses an RFC 3339 timestamp to unix nanoseconds: `Z`, a `+HH:MM`/`-HH:MM` offset, or no zone
/// (UTC).
pub fn parse_rfc3339_ns(s: &str) -> Result<i64> {
    let (local, offset_s) = split_offset(s)?;
    let t = humantime::parse_rfc3339_weak(local)
        .map_err(|e| Error::InvalidInput(format!("`{s}` is not an RFC 3339 timestamp: {e}")))?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| Error::InvalidInput(format!("timestamp `{s}` is before 1970")))?;
    let ns =
        i64::try_from(d.as_nanos()).map_err(|_| Error::InvalidInput(format!("timestamp `{s}` is out of range")))?;
    // Local time is UTC plus the offset.
    ns.checked_sub(offset_s * 1_000_000_000)
        .filter(|ns| *ns >= 0)
        .ok_or_else(|| Error::InvalidInput(format!("timestamp `{s}` is out of range")))
}

/// Splits the zone off an RFC 3339 timestamp: (date and time, offset east of UTC in seconds).
fn split_offset(s: &str) -> Result<(&str, i64)> {
    if let Some(local) = s.strip_suffix(['Z', 'z']) {
        return Ok((local, 0));
    }
    let Some((local, zone)) = s.len().checked_sub(6).and_then(|i| Some((s.get(..i)?, s.get(i..)?))) else {
        return Ok((s, 0));
    };
    let z = zone.as_bytes();
    // A `-` six from the end of a bare date-time would be inside the time: only a zone has a sign
    // followed by HH:MM after the `T` (or space) separator.
    let is_zone = matches!(z[0], b'+' | b'-') && z[3] == b':' && local.len() >= 16 && local.contains(['T', ' ']);
    if !is_zone {
        return Ok((s, 0));
    }
    let bad = || Error::InvalidInput(format!("`{s}` has a malformed UTC offset `{zone}` (expected ±HH:MM)"));
    let hh: i64 = zone.get(1..3).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    let mm: i64 = zone.get(4..6).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
    if hh > 23 || mm > 59 {
        return Err(bad());
    }
    let sign = if z[0] == b'-' { -1 } else { 1 };
    Ok((local, sign * (hh * 3600 + mm * 60)))
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T05:00:00.000Z`;
/// a time outside RFC 3339's years (0000 to 9999) as its unix milliseconds.
pub fn format_rfc3339_ms(ms: i64) -> String {
    rfc3339_ms(ms).unwrap_or_else(|| ms.to_string())
}

/// RFC 3339 UTC with milliseconds, or `None` outside years 0000 to 9999 (which RFC 3339 cannot
/// write). Never panics, whatever `ms` a query or a span carries.
pub fn rfc3339_ms(ms: i64) -> Option<String> {
    const DAY_MS: i64 = 86_400_000;
    let (days, in_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (h, min, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    Some(format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z"))
}

/// (year, month, day) of a count of days since 1970-01-01 in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips() {
        let ms = 1_795_000_000_123;
        let s = format_rfc3339_ms(ms);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(parse_api_time_ms(&s).unwrap(), ms);
        assert_eq!(parse_api_time_ms("1795000000123").unwrap(), ms);
        assert!(parse_api_time_ms("yesterday").is_err());
    }

    #[test]
    fn every_millisecond_formats_without_panicking() {
        let cases = [
            (0, Some("1970-01-01T00:00:00.000Z")),
            (-1, Some("1969-12-31T23:59:59.999Z")),
            (951_782_400_000, Some("2000-02-29T00:00:00.000Z")),
            (253_402_300_799_999, Some("9999-12-31T23:59:59.999Z")),
            (253_402_300_800_000, None),
            (-62_167_219_200_000, Some("0000-01-01T00:00:00.000Z")),
            (-62_167_219_200_001, None),
            (i64::MIN, None),
            (i64::MAX, None),
        ];
        for (ms, want) in cases {
            assert_eq!(rfc3339_ms(ms).as_deref(), want, "{ms}");
        }
        assert_eq!(format_rfc3339_ms(i64::MAX), i64::MAX.to_string());
        // humantime, an independent formatter, agrees over 1970..9999.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ms = (x % 253_402_300_800_000) as i64;
            let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
            assert_eq!(rfc3339_ms(ms).unwrap(), humantime::format_rfc3339_millis(t).to_string());
        }
    }

    #[test]
    fn offsets_are_honoured() {
        let utc = parse_api_time_ms("2026-11-23T05:00:00Z").unwrap();
        assert_eq!(parse_api_time_ms("2026-11-23T13:00:00+08:00").unwrap(), utc);
        assert_eq!(parse_api_time_ms("2026-11-23T13:00:00.000+08:00").unwrap(), utc);
        assert_eq!(parse_api_time_ms("2026-11-22T23:30:00-05:30").unwrap(), utc);
        assert_eq!(parse_api_time_ms("2026-11-23T05:00:00+00:00").unwrap(), utc);
        assert_eq!(parse_api_time_ms("2026-11-23T05:00:00").unwrap(), utc, "no zone is UTC");
        let e = parse_api_time_ms("2026-11-23T13:00:00+25:00").unwrap_err().to_string();
        assert!(e.contains("+25:00"), "{e}");
        assert!(parse_api_time_ms("2026-11-23T13:00:00+0x:00").is_err());
        assert!(parse_api_time_ms("1970-01-01T05:00:00+08:00").is_err(), "before 1970 once shifted");
        assert!(parse_api_time_ms("é2026-11-23T13:00+08:00").is_err(), "multi-byte input is an error, not a panic");
    }
}
