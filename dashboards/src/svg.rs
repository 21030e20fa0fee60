//! Server-side SVG charts: no scripts, no external assets; every text is escaped, tooltips are
//! `<title>` elements, colours follow `currentColor` and CSS variables so light and dark modes work.

use std::fmt::Write;

/// Escapes text for HTML/SVG content and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A tiny line of `values` (no axes), for the cell grid.
pub fn sparkline(values: &[f64], title: &str) -> String {
    let (w, h) = (120.0, 28.0);
    let max = values.iter().copied().fold(0.0f64, f64::max).max(1e-9);
    let n = values.len().max(2) as f64 - 1.0;
    let mut pts: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", i as f64 / n * w, h - 2.0 - v / max * (h - 4.0)))
        .collect();
    // One point (a cell seen for a minute) still draws a short flat stroke.
    if let [only] = values {
        let y = h - 2.0 - only / max * (h - 4.0);
        pts = vec![format!("{:.1},{y:.1}", w - 6.0), format!("{w:.1},{y:.1}")];
    }
    format!(
        r#"<svg class="spark" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
        escape(title),
        pts.join(" ")
    )
}

/// A vertical marker on a chart (a decision or a cut-over).
#[derive(Debug, Clone)]
pub struct Marker {
    /// Unix ms.
    pub t_ms: i64,
    /// Tooltip.
    pub label: String,
    /// CSS class (`decision`, `cutover`).
    pub class: &'static str,
}

/// A line chart of `(t_ms, value)` points over `[from_ms, to_ms)` with axes, unit and markers.
pub fn line_chart(
    title: &str,
    unit: &str,
    points: &[(i64, f64)],
    from_ms: i64,
    to_ms: i64,
    markers: &[Marker],
) -> String {
    let (w, h, left, bottom, top) = (640.0, 214.0, 60.0, 24.0, 26.0);
    let plot_w = w - left - 28.0;
    let plot_h = h - bottom - top;
    let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let max = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let span = (to_ms - from_ms).max(1) as f64;
    let x = |t: i64| left + (t - from_ms) as f64 / span * plot_w;
    let y = |v: f64| top + plot_h - v / max * plot_h;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = escape(title)
    );
    let _ = write!(s, r#"<text class="label" x="{left}" y="14">{}</text>"#, escape(title));
    let _ = write!(s, r#"<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{}"/>"#, top + plot_h);
    let _ = write!(
        s,
        r#"<line class="axis" x1="{left}" y1="{}" x2="{}" y2="{}"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            s,
            r#"<text class="tick" x="{}" y="{:.1}" text-anchor="end">{} {}</text>"#,
            left - 4.0,
            y(v) + 4.0,
            fmt_num(v),
            escape(unit)
        );
    }
    for i in 0..=4 {
        let t = from_ms + (span * f64::from(i) / 4.0) as i64;
        let label = cellpilot_core::time::format_rfc3339_ms(t);
        let _ = write!(
            s,
            r#"<text class="tick" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x(t),
            h - 6.0,
            escape(label.get(11..16).unwrap_or(""))
        );
    }
    for m in markers.iter().filter(|m| m.t_ms >= from_ms && m.t_ms < to_ms) {
        let _ = write!(
            s,
            r#"<line class="marker {c}" x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{b}"><title>{l}</title></line>"#,
            c = m.class,
            x = x(m.t_ms),
            b = top + plot_h,
            l = escape(&m.label)
        );
    }
    if !points.is_empty() {
        let pts: Vec<String> = points.iter().map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v))).collect();
        let _ = write!(s, r#"<polyline class="line" fill="none" points="{}"/>"#, pts.join(" "));
        for (t, v) in points {
            let when = cellpilot_core::time::format_rfc3339_ms(*t);
            let _ = write!(
                s,
                r#"<circle class="dot" cx="{:.1}" cy="{:.1}" r="2"><title>{} {} {}</title></circle>"#,
                x(*t),
                y(*v),
                escape(&when),
                fmt_num(*v),
                escape(unit)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A horizontal bar for an attribution share (0..1).
pub fn bar(share: f64, title: &str) -> String {
    let w = (share.clamp(0.0, 1.0) * 200.0).max(1.0);
    format!(
        r#"<svg class="bar" viewBox="0 0 200 12" width="200" height="12" role="img"><title>{}</title><rect x="0" y="0" width="{w:.1}" height="12"/></svg>"#,
        escape(title)
    )
}

/// Compact number: 1234 -> 1.23k.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.2}k", v / 1e3)
    } else if a >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_draws() {
        assert_eq!(escape("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
        let c = line_chart(
            "p99.9 <b>",
            "ms",
            &[(0, 1.0), (10, 3.0)],
            0,
            20,
            &[Marker { t_ms: 5, label: "drain <x>".into(), class: "decision" }],
        );
        assert!(c.contains("<title>p99.9 &lt;b&gt;</title>"));
        assert!(c.contains("drain &lt;x&gt;"));
        assert!(!c.contains("<b>"));
        assert!(sparkline(&[1.0, 2.0], "x").contains("polyline"));
    }
}
