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
}
