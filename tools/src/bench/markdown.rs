//! `cellpilot bench --markdown ...`: a bench's JSON figures as a section of
//! `docs/benchmarks.md`, so a re-measure regenerates the section instead of editing prose. Each
//! bench owns one section between `<!-- bench NAME -->` and `<!-- /bench NAME -->` under
//! "## Latest figures"; a missing one is appended, the others are left as they are.

use serde_json::Value;
use std::fmt::Write as _;

/// Heading the generated sections sit under.
const HEADING: &str = "## Latest figures";

/// When and where a bench ran.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The command as typed (without `--markdown`).
    pub command: String,
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The commit measured (`git rev-parse --short HEAD`), or `unknown`.
    pub commit: String,
    /// Cores the process could use.
    pub cores: usize,
}

/// The section of `bench` for `figures` (one JSON object, as `--json` prints it).
pub fn section(bench: &str, p: &Provenance, figures: &Value) -> String {
    let mut out = format!("<!-- bench {bench} -->\n");
    let _ = writeln!(
        out,
        "### `bench {bench}`\n\nMeasured {} at commit `{}` on {} cores with `{}`; written by that command, do not edit.\n",
        p.date, p.commit, p.cores, p.command
    );
    let mut scalars = Vec::new();
    let mut tables = Vec::new();
    flatten("", figures, &mut scalars, &mut tables);
    if !scalars.is_empty() {
        out.push_str("| figure | value |\n|---|---|\n");
        for (k, v) in &scalars {
            let _ = writeln!(out, "| `{k}` | {v} |");
        }
    }
    for (name, rows) in tables {
        let mut columns: Vec<String> = Vec::new();
        for r in &rows {
            for k in r.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
        let _ = writeln!(out, "\n`{name}`:\n");
        let _ = writeln!(out, "| {} |", columns.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(columns.len()));
        for r in &rows {
            let cells: Vec<String> = columns.iter().map(|c| r.get(c).map_or(String::new(), scalar)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    let _ = writeln!(out, "<!-- /bench {bench} -->");
    out
}

/// Scalars as `(dotted key, value)`, arrays of objects as their own tables.
fn flatten(
    prefix: &str,
    v: &Value,
    scalars: &mut Vec<(String, String)>,
    tables: &mut Vec<(String, Vec<serde_json::Map<String, Value>>)>,
) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, scalars, tables);
            }
        }
        Value::Array(xs) if !xs.is_empty() && xs.iter().all(Value::is_object) => {
            let rows = xs.iter().filter_map(|x| x.as_object().cloned()).collect();
            tables.push((prefix.to_string(), rows));
        }
        other => scalars.push((prefix.to_string(), scalar(other))),
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => thousands(u),
            (None, Some(i), _) if i < 0 => format!("-{}", thousands(i.unsigned_abs())),
            (_, _, Some(f)) if f.abs() >= 1000.0 => {
                let sign = if f < 0.0 { "-" } else { "" };
                format!("{sign}{}", thousands(f.abs().round() as u64))
            }
            (_, _, Some(f)) => format!("{f:.4}").trim_end_matches('0').trim_end_matches('.').to_string(),
            _ => n.to_string(),
        },
        Value::String(s) => s.replace('|', "\\|"),
        Value::Array(xs) => xs.iter().map(scalar).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `doc` with `bench`'s section replaced by `section`, or appended under "## Latest figures".
pub fn splice(doc: &str, bench: &str, section: &str) -> String {
    let (open, close) = (format!("<!-- bench {bench} -->"), format!("<!-- /bench {bench} -->"));
    if let (Some(a), Some(b)) = (doc.find(&open), doc.find(&close))
        && a < b
    {
        let end = b + close.len();
        let end = if doc[end..].starts_with('\n') { end + 1 } else { end };
        return format!("{}{section}{}", &doc[..a], &doc[end..]);
    }
    let mut out = doc.trim_end().to_string();
    if !out.contains(HEADING) {
        out.push_str("\n\n");
        out.push_str(HEADING);
        out.push_str("\n\nWritten by `cellpilot bench --markdown <bench> ...` from the repository root; a re-measure\nregenerates its section.\n");
    }
    out.push('\n');
    out.push_str(section);
    out
}

/// Replaces `bench`'s section of the file at `path` with `figures`.
pub fn write(path: &std::path::Path, bench: &str, p: &Provenance, figures: &Value) -> anyhow::Result<()> {
    use anyhow::Context;
    let doc = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (run from the repository root)", path.display()))?;
    let updated = splice(&doc, bench, &section(bench, p, figures));
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Provenance {
        Provenance {
            command: "cellpilot bench e2e --runs 3".into(),
            date: "2026-12-07".into(),
            commit: "abc1234".into(),
            cores: 2,
        }
    }

    #[test]
    fn figures_become_rows_and_arrays_of_objects_tables() {
        let v = serde_json::json!({
            "spans_per_sec": 1234567.8, "drift": -2500.4, "ratio": 5.25, "runs": 3, "by_series": [
                {"series": 1000, "bytes": 1352}, {"series": 10000, "bytes": 817, "note": "a|b"}
            ], "nested": {"p50_ms": 0.5}
        });
        let s = section("ingest", &p(), &v);
        assert!(s.starts_with("<!-- bench ingest -->\n### `bench ingest`"), "{s}");
        assert!(s.contains("| `spans_per_sec` | 1,234,568 |"), "{s}");
        assert!(s.contains("| `ratio` | 5.25 |"), "{s}");
        assert!(s.contains("| `drift` | -2,500 |"), "{s}");
        assert!(s.contains("| `runs` | 3 |"), "{s}");
        assert!(s.contains("| `nested.p50_ms` | 0.5 |"), "{s}");
        // Columns in key order (serde_json's maps are sorted), then keys only later rows have.
        assert!(s.contains("| `bytes` | `series` | `note` |"), "{s}");
        assert!(s.contains("| 817 | 10,000 | a\\|b |"), "{s}");
        assert!(s.contains("| 1,352 | 1,000 |  |"), "{s}");
        assert!(s.ends_with("<!-- /bench ingest -->\n"), "{s}");
    }

    #[test]
    fn a_section_is_appended_once_then_replaced_in_place() {
        let doc = "# Benchmarks\n\nProse.\n";
        let one = splice(doc, "e2e", &section("e2e", &p(), &serde_json::json!({"x": 1})));
        assert!(one.starts_with("# Benchmarks\n\nProse.\n\n## Latest figures\n"), "{one}");
        let two = splice(&one, "ingest", &section("ingest", &p(), &serde_json::json!({"y": 2})));
        let three = splice(&two, "e2e", &section("e2e", &p(), &serde_json::json!({"x": 7})));
        assert_eq!(three.matches("## Latest figures").count(), 1);
        assert_eq!(three.matches("<!-- bench e2e -->").count(), 1);
        assert!(three.contains("| `x` | 7 |") && !three.contains("| `x` | 1 |"), "{three}");
        assert!(three.contains("| `y` | 2 |"), "{three}");
        // The e2e section stays before the ingest one: replaced where it was.
        assert!(three.find("bench e2e").unwrap() < three.find("bench ingest").unwrap());
        assert_eq!(splice(&three, "e2e", &section("e2e", &p(), &serde_json::json!({"x": 7}))), three);
    }
}
