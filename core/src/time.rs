//! Timestamps at the API boundary: RFC 3339 or unix milliseconds in, RFC 3339 UTC with millis out.

use crate::{Error, Result};
use std::time::{Duration, UNIX_EPOCH};

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

/// Parses an RFC 3339 timestamp to unix nanoseconds.
pub fn parse_rfc3339_ns(s: &str) -> Result<i64> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| Error::InvalidInput(format!("`{s}` is not an RFC 3339 timestamp: {e}")))?;
    let d = t.duration_since(UNIX_EPOCH).map_err(|_| Error::InvalidInput(format!("timestamp `{s}` is before 1970")))?;
    i64::try_from(d.as_nanos()).map_err(|_| Error::InvalidInput(format!("timestamp `{s}` is out of range")))
}

/// Formats unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T05:00:00.000Z`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let t = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = 1_795_000_000_123;
        let s = format_rfc3339_ms(ms);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(parse_api_time_ms(&s).unwrap(), ms);
        assert_eq!(parse_api_time_ms("1795000000123").unwrap(), ms);
        assert!(parse_api_time_ms("yesterday").is_err());
    }
}
