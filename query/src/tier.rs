//! The three storage tiers: the finest window (default 10 s), 5 minutes and 1 hour. Each coarser
//! tier is the histogram-merge of the finer one; each tier writes one Parquet file per bucket.

use std::fmt;

/// A storage tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The ingest window (`[ingest] window`, 10 s by default).
    Fine,
    /// 5-minute windows.
    FiveMin,
    /// 1-hour windows.
    Hour,
}

/// 5 minutes in ms.
pub const FIVE_MIN_MS: i64 = 5 * 60 * 1000;
/// 1 hour in ms.
pub const HOUR_MS: i64 = 60 * 60 * 1000;
/// 1 day in ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;

impl Tier {
    /// All tiers, finest first.
    pub const ALL: [Tier; 3] = [Tier::Fine, Tier::FiveMin, Tier::Hour];

    /// Directory name under the data dir.
    pub fn dir_name(self) -> &'static str {
        match self {
            Tier::Fine => "10s",
            Tier::FiveMin => "5m",
            Tier::Hour => "1h",
        }
    }

    /// SQL name of this tier's `rollups` table.
    pub fn rollups_table(self) -> &'static str {
        match self {
            Tier::Fine => "rollups",
            Tier::FiveMin => "rollups_5m",
            Tier::Hour => "rollups_1h",
        }
    }

    /// SQL name of this tier's `errors_by_cause` table.
    pub fn errors_table(self) -> &'static str {
        match self {
            Tier::Fine => "errors_by_cause",
            Tier::FiveMin => "errors_by_cause_5m",
            Tier::Hour => "errors_by_cause_1h",
        }
    }

    /// Window width of this tier.
    pub fn width_ms(self, fine_ms: i64) -> i64 {
        match self {
            Tier::Fine => fine_ms,
            Tier::FiveMin => FIVE_MIN_MS,
            Tier::Hour => HOUR_MS,
        }
    }

    /// Span of one Parquet file of this tier: a file holds every window of one bucket.
    pub fn bucket_ms(self) -> i64 {
        match self {
            Tier::Fine => FIVE_MIN_MS,
            Tier::FiveMin => HOUR_MS,
            Tier::Hour => DAY_MS,
        }
    }

    /// The next coarser tier.
    pub fn coarser(self) -> Option<Tier> {
        match self {
            Tier::Fine => Some(Tier::FiveMin),
            Tier::FiveMin => Some(Tier::Hour),
            Tier::Hour => None,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rollups_table())
    }
}
