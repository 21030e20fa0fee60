//! `checks` on a JSON health body: numeric fields at dotted paths and their bounds. A failed check
//! says which field and value (`mq_backlog 52000 > 10000`); a missing or non-numeric field fails.

use cellpilot_core::config::ProbeCheck;
use serde_json::Value;

/// The value of each check's field, or why the body fails.
pub(crate) fn run(checks: &[ProbeCheck], body: &[u8]) -> Result<Vec<(String, f64)>, String> {
    if checks.is_empty() {
        return Ok(Vec::new());
    }
    let json: Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let mut values = Vec::with_capacity(checks.len());
    for c in checks {
        let v = field(&json, &c.field)?;
        if let Some(min) = c.min
            && v < min
        {
            return Err(format!("{} {v} < {min}", c.field));
        }
        if let Some(max) = c.max
            && v > max
        {
            return Err(format!("{} {v} > {max}", c.field));
        }
        values.push((c.field.clone(), v));
    }
    Ok(values)
}

fn field(json: &Value, path: &str) -> Result<f64, String> {
    let mut at = json;
    for key in path.split('.') {
        at = at.get(key).ok_or_else(|| format!("{path} is missing from the body"))?;
    }
    at.as_f64().ok_or_else(|| format!("{path} is not a number ({})", short(at)))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(field: &str, min: Option<f64>, max: Option<f64>) -> ProbeCheck {
        ProbeCheck { field: field.into(), min, max }
    }

    #[test]
    fn fields_are_read_at_their_paths_and_bounded() {
        let body = br#"{"db": {"pool": {"available_ratio": 0.5}}, "mq_backlog": 52000, "name": "x"}"#;
        let ok = run(&[check("db.pool.available_ratio", Some(0.2), None)], body);
        assert_eq!(ok, Ok(vec![("db.pool.available_ratio".to_string(), 0.5)]));
        assert_eq!(run(&[check("mq_backlog", None, Some(10000.0))], body), Err("mq_backlog 52000 > 10000".into()));
        assert_eq!(
            run(&[check("db.pool.available_ratio", Some(0.6), None)], body),
            Err("db.pool.available_ratio 0.5 < 0.6".into())
        );
        assert_eq!(run(&[check("db.size", Some(1.0), None)], body), Err("db.size is missing from the body".into()));
        assert_eq!(run(&[check("name", Some(1.0), None)], body), Err("name is not a number (\"x\")".into()));
        assert!(run(&[check("a", Some(1.0), None)], b"<html>").unwrap_err().starts_with("the body is not JSON"));
        assert_eq!(run(&[], b"<html>"), Ok(vec![]), "no checks: the body is not read as JSON");
    }
}
