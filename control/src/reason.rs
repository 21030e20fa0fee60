//! Reasons a person understands, written into every decision.

/// `18204` -> `18,204`.
pub(crate) fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `0.0231` -> `2.31 %`.
pub(crate) fn percent(rate: f64) -> String {
    format!("{:.2} %", rate * 100.0)
}

/// A duration in ms as `30 s`, `2 min`, `1 h`.
pub(crate) fn span(ms: i64) -> String {
    match ms {
        m if m > 0 && m % 3_600_000 == 0 => format!("{} h", m / 3_600_000),
        m if m > 0 && m % 60_000 == 0 => format!("{} min", m / 60_000),
        m if m % 1000 == 0 => format!("{} s", m / 1000),
        m => format!("{m} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(18_204), "18,204");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(percent(0.0231), "2.31 %");
        assert_eq!(span(30_000), "30 s");
        assert_eq!(span(120_000), "2 min");
    }
}
