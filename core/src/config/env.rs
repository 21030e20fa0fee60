//! `CELLPILOT_<SECTION>__<KEY>` environment overrides, applied to the TOML tree before it is typed.
//!
//! A value takes the type of the default it replaces (integer, float, bool, list split on commas,
//! string); keys without a default are taken as TOML scalars, and serde's `deny_unknown_fields`
//! then rejects the ones that do not exist.

use crate::{Error, Result};
use toml::{Table, Value};

const PREFIX: &str = "CELLPILOT_";

/// Recursively overlays `top` onto `base`; tables merge, everything else replaces.
pub fn merge(base: &mut Table, top: Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Applies every `CELLPILOT_A__B=value` variable of `vars` onto `tree`.
pub fn apply_overrides(tree: &mut Table, vars: impl IntoIterator<Item = (String, String)>) -> Result<()> {
    let mut vars: Vec<_> = vars.into_iter().filter(|(k, _)| k.starts_with(PREFIX) && k.contains("__")).collect();
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(String::is_empty) {
            return Err(Error::Config(format!("{name}: malformed variable name")));
        }
        set(tree, &path, &raw).map_err(|why| Error::Config(format!("{name}: {why}")))?;
    }
    Ok(())
}

fn set(tree: &mut Table, path: &[String], raw: &str) -> std::result::Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut node = tree;
    for p in parents {
        let entry = node.entry(p.clone()).or_insert_with(|| Value::Table(Table::new()));
        node = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("`{p}` is not a section")),
        };
    }
    let value = match node.get(last) {
        Some(Value::Integer(_)) => {
            Value::Integer(raw.trim().parse().map_err(|_| format!("`{raw}` is not an integer"))?)
        }
        Some(Value::Float(_)) => Value::Float(raw.trim().parse().map_err(|_| format!("`{raw}` is not a number"))?),
        Some(Value::Boolean(_)) => {
            Value::Boolean(raw.trim().parse().map_err(|_| format!("`{raw}` is not true/false"))?)
        }
        Some(Value::Array(_)) => Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect(),
        ),
        Some(Value::Table(_)) => return Err("names a section, not a key".into()),
        Some(_) => Value::String(raw.to_string()),
        None => {
            if !is_optional_key(path) {
                return Err("unknown configuration key".into());
            }
            scalar(raw)
        }
    };
    node.insert(last.clone(), value);
    Ok(())
}

/// Keys that exist but have no default (so they are absent from the default tree).
fn is_optional_key(path: &[String]) -> bool {
    matches!(path, [a, b] if a == "alerts" && b == "cell_error_rate")
        || matches!(path, [a, b, _, d] if a == "control" && b == "cells" && d == "base_weight")
}

fn scalar(raw: &str) -> Value {
    let t = raw.trim();
    if let Ok(i) = t.parse::<i64>() {
        Value::Integer(i)
    } else if let Ok(f) = t.parse::<f64>() {
        Value::Float(f)
    } else if let Ok(b) = t.parse::<bool>() {
        Value::Boolean(b)
    } else {
        Value::String(raw.to_string())
    }
}
