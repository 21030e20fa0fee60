//! Epoch-aligned tumbling windows: which window a timestamp falls in and when a window closes.

use std::time::Duration;

/// Window geometry shared by ingest and query: width and lateness, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    /// Width of one window; windows start at multiples of it since the epoch.
    pub width_ms: i64,
    /// How long after its end a window still accepts data.
    pub lateness_ms: i64,
}

/// Window starts read back from disk must lie within this many ms of the epoch (tens of
/// thousands of years): what span times can express, with room for the arithmetic on them.
pub const MAX_START_MS: i64 = 1 << 50;

impl WindowSpec {
    /// A spec from durations; a zero width is clamped to 1 ms so alignment never divides by zero.
    pub fn new(width: Duration, lateness: Duration) -> Self {
        Self {
            width_ms: i64::try_from(width.as_millis()).unwrap_or(i64::MAX).max(1),
            lateness_ms: i64::try_from(lateness.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Start (unix ms) of the window holding the instant `t_ms`.
    pub fn start_of(&self, t_ms: i64) -> i64 {
        t_ms - t_ms.rem_euclid(self.width_ms)
    }

    /// Start (unix ms) of the window holding the instant `t_ns`.
    pub fn start_of_ns(&self, t_ns: i64) -> i64 {
        self.start_of(t_ns.div_euclid(1_000_000))
    }

    /// The wall-clock instant (unix ms) at which the window starting at `start_ms` closes.
    pub fn close_at(&self, start_ms: i64) -> i64 {
        start_ms.saturating_add(self.width_ms).saturating_add(self.lateness_ms)
    }

    /// Whether the window starting at `start_ms` is closed at `now_ms`.
    pub fn is_closed(&self, start_ms: i64, now_ms: i64) -> bool {
        self.close_at(start_ms) <= now_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn aligns_to_epoch() {
        let w = WindowSpec::new(Duration::from_secs(10), Duration::from_secs(30));
        assert_eq!(w.start_of(0), 0);
        assert_eq!(w.start_of(9_999), 0);
        assert_eq!(w.start_of(10_000), 10_000);
        assert_eq!(w.start_of(-1), -10_000);
        assert_eq!(w.close_at(10_000), 50_000);
        assert!(!w.is_closed(10_000, 49_999));
        assert!(w.is_closed(10_000, 50_000));
    }

    proptest! {
        #[test]
        fn every_instant_is_in_its_window(t in -1_000_000_000_000i64..4_000_000_000_000, width in 1i64..3_600_000) {
            let w = WindowSpec { width_ms: width, lateness_ms: 0 };
            let s = w.start_of(t);
            prop_assert!(s <= t && t < s + width);
            prop_assert_eq!(s.rem_euclid(width), 0);
        }
    }
}
