//! Paths of dashboard pages. Names come from telemetry and may hold any character (`/`, `?`,
//! `<`): each is percent-encoded as one path segment, so a link always leads to its own page.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but unreserved characters (RFC 3986) is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `/cells/{cell}`.
pub fn cell_page(cell: &str) -> String {
    format!("/cells/{}", utf8_percent_encode(cell, SEGMENT))
}

/// `/sla/{slo}`.
pub fn sla_page(slo: &str) -> String {
    format!("/sla/{}", utf8_percent_encode(slo, SEGMENT))
}

/// The pages' range picker: `?range=` names and their lengths in ms.
pub const RANGES: [(&str, i64); 6] = [
    ("15m", 900_000),
    ("1h", 3_600_000),
    ("6h", 21_600_000),
    ("24h", 86_400_000),
    ("7d", 604_800_000),
    ("30d", 2_592_000_000),
];

/// The longest picker range no longer than `ms` (the shortest when all are longer).
pub fn range_within(ms: i64) -> &'static str {
    RANGES.iter().rev().find(|(_, r)| *r <= ms).map_or(RANGES[0].0, |(n, _)| n)
}

/// `page` over the longest picker range within `ms` (an SLO card links its period this way).
pub fn over(page: &str, ms: i64) -> String {
    format!("{page}?range={}", range_within(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_segment() {
        assert_eq!(cell_page("sh-unit-02"), "/cells/sh-unit-02");
        assert_eq!(cell_page("<script>alert(1)</script>"), "/cells/%3Cscript%3Ealert%281%29%3C%2Fscript%3E");
        assert_eq!(cell_page("a b?c#d"), "/cells/a%20b%3Fc%23d");
        assert_eq!(sla_page("checkout 99.9"), "/sla/checkout%2099.9");
    }

    #[test]
    fn a_period_links_the_longest_range_within_it() {
        assert_eq!(over("/sla/a", 30 * 86_400_000), "/sla/a?range=30d");
        assert_eq!(over("/sla/a", 2 * 86_400_000), "/sla/a?range=24h");
        assert_eq!(over("/sla/a", 60_000), "/sla/a?range=15m");
    }
}
