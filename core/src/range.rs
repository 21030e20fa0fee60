//! [`TimeRange`]: every API time range is parsed and bounded here, so handlers never see raw
//! integers. A range is clamped to what is kept (now − the longest retention) and to
//! now + 5 minutes; a series step is refused when it would produce more than [`MAX_POINTS`].

use crate::time::parse_api_time_ms;
use crate::{Error, Result};

/// Data more than this far ahead of the clock is never stored, so no range reaches past it.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;
/// Most points one series answer holds.
pub const MAX_POINTS: i64 = 10_000;

const HOUR_MS: i64 = 3_600_000;
const FIVE_MIN_MS: i64 = 300_000;

/// What a range may cover at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeBounds {
    /// "Now", unix ms.
    pub now_ms: i64,
    /// The longest retention of any tier: nothing older is kept.
    pub retention_ms: i64,
}

impl RangeBounds {
    /// What is kept under `storage` at `now_ms`: back to the longest retention of any tier.
    pub fn kept(storage: &crate::config::StorageConfig, now_ms: i64) -> Self {
        let s = storage;
        let retention_ms =
            [s.retention_10s, s.retention_5m, s.retention_1h].iter().map(|d| d.as_millis_i64()).max().unwrap_or(0);
        RangeBounds { now_ms, retention_ms }
    }

    fn earliest(&self) -> i64 {
        self.now_ms.saturating_sub(self.retention_ms)
    }

    fn latest(&self) -> i64 {
        self.now_ms.saturating_add(MAX_FUTURE_MS)
    }
}

/// A half-open range `[from, to)` of unix ms within [`RangeBounds`], never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    from_ms: i64,
    to_ms: i64,
}

impl TimeRange {
    /// Parses API `from`/`to` (RFC 3339 or unix ms): `to` defaults to now, `from` to
    /// `default_span_ms` before `to`. Both are clamped to the bounds; `from` not before `to`, or a
    /// range wholly outside what is kept, is an error naming the parameter.
    pub fn parse(from: Option<&str>, to: Option<&str>, default_span_ms: i64, bounds: RangeBounds) -> Result<Self> {
        let parse = |name: &str, v: Option<&str>| {
            v.map(|s| parse_api_time_ms(s).map_err(|e| Error::InvalidInput(format!("`{name}`: {e}")))).transpose()
        };
        // A `to` past what can exist is clamped first, so a missing `from` still means the
        // default span before the end of the data.
        let given_to = parse("to", to)?;
        let to = given_to.map_or(bounds.now_ms, |t| t.min(bounds.latest()));
        let from = parse("from", from)?.unwrap_or(to.saturating_sub(default_span_ms.max(1)));
        if from >= given_to.unwrap_or(to) {
            return Err(Error::InvalidInput("`from` must be before `to`".into()));
        }
        if from >= bounds.latest() {
            return Err(Error::InvalidInput("`from` is more than 5m in the future".into()));
        }
        if to <= bounds.earliest() {
            return Err(Error::InvalidInput(format!(
                "`to` is older than the longest retention ({} days): nothing is kept there",
                bounds.retention_ms / 86_400_000
            )));
        }
        Ok(Self { from_ms: from.max(bounds.earliest()), to_ms: to.min(bounds.latest()) })
    }

    /// The last `span_ms` before now (the pages' range picker), within the bounds.
    pub fn last(span_ms: i64, bounds: RangeBounds) -> Self {
        let span = span_ms.clamp(1, bounds.retention_ms.max(1));
        Self { from_ms: bounds.now_ms.saturating_sub(span), to_ms: bounds.now_ms }
    }

    /// Start, unix ms (inclusive).
    pub fn from_ms(&self) -> i64 {
        self.from_ms
    }

    /// End, unix ms (exclusive).
    pub fn to_ms(&self) -> i64 {
        self.to_ms
    }

    /// Length in ms (positive).
    pub fn span_ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }

    /// The series step: `step` as given (a duration such as `1m`), or about 60 points on a whole
    /// number of `fine_ms` windows, snapped to the 5-minute and hourly tiers when that coarse.
    /// More than [`MAX_POINTS`] points is an error.
    pub fn step(&self, step: Option<&str>, fine_ms: i64) -> Result<i64> {
        let fine = fine_ms.max(1);
        let step = match step {
            Some(s) => {
                let d = humantime::parse_duration(s.trim())
                    .map_err(|e| Error::InvalidInput(format!("`step`: {e} (e.g. 10s, 1m, 1h)")))?;
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                if ms <= 0 {
                    return Err(Error::InvalidInput("`step` must be at least 1ms".into()));
                }
                ms
            }
            None => {
                let raw = (self.span_ms() / 60).max(fine);
                let snap = [HOUR_MS, FIVE_MIN_MS].into_iter().find(|t| raw >= *t).unwrap_or(fine);
                raw - raw % snap
            }
        };
        if self.span_ms() / step > MAX_POINTS {
            return Err(Error::InvalidInput(format!(
                "`step` of {step} ms gives more than {MAX_POINTS} points over this range: use a larger one"
            )));
        }
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const B: RangeBounds = RangeBounds { now_ms: NOW, retention_ms: 400 * 86_400_000 };

    #[test]
    fn absurd_values_are_clamped_or_refused() {
        let r = TimeRange::parse(Some("0"), Some("9000000000000000"), 1, B).unwrap();
        assert_eq!((r.from_ms(), r.to_ms()), (NOW - B.retention_ms, NOW + MAX_FUTURE_MS));
        let e = TimeRange::parse(Some("99999999999999999999"), None, 1, B).unwrap_err().to_string();
        assert!(e.contains("`from`") && e.contains("out of range"), "{e}");
        let e = TimeRange::parse(Some("9000000000000000"), Some("9000000000000001"), 1, B).unwrap_err();
        assert!(e.to_string().contains("future"), "{e}");
        let e = TimeRange::parse(Some("0"), Some("1"), 1, B).unwrap_err();
        assert!(e.to_string().contains("retention"), "{e}");
        assert!(TimeRange::parse(Some("5"), Some("5"), 1, B).is_err());
        assert!(TimeRange::parse(Some("-5"), None, 1, B).is_err());
        // Defaults: the last span before now, or before `to`.
        let r = TimeRange::parse(None, None, 300_000, B).unwrap();
        assert_eq!((r.from_ms(), r.to_ms()), (NOW - 300_000, NOW));
        let r = TimeRange::parse(None, Some("9000000000000000"), 300_000, B).unwrap();
        assert_eq!((r.from_ms(), r.to_ms()), (NOW + MAX_FUTURE_MS - 300_000, NOW + MAX_FUTURE_MS));
        let r = TimeRange::parse(None, None, i64::MAX, B).unwrap();
        assert_eq!(r.from_ms(), NOW - B.retention_ms);
    }

    #[test]
    fn steps_are_bounded() {
        let day = TimeRange::parse(Some(&(NOW - 86_400_000).to_string()), None, 1, B).unwrap();
        assert_eq!(day.step(None, 10_000).unwrap(), 1_440_000 - 1_440_000 % 300_000);
        assert_eq!(day.step(Some("1h"), 10_000).unwrap(), HOUR_MS);
        assert!(day.step(Some("1ms"), 10_000).unwrap_err().to_string().contains("10000 points"));
        assert!(day.step(Some("0s"), 10_000).is_err());
        assert!(day.step(Some("soon"), 10_000).is_err());
        assert_eq!(day.step(Some("100000000d"), 10_000).unwrap(), 100_000_000 * 86_400_000);
        let all = TimeRange::parse(Some("0"), None, 1, B).unwrap();
        assert!(all.step(None, 10_000).is_ok(), "the default step fits any range");
        let last = TimeRange::last(i64::MAX, B);
        assert_eq!(last.span_ms(), B.retention_ms);
    }
}
