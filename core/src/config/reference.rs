//! `docs/configuration.md`, generated from the config types: their doc comments and defaults,
//! read through the JSON Schema `schemars` derives, so the reference cannot drift from the code.

use super::Config;
use serde_json::{Map, Value};
use std::fmt::Write;

/// The configuration reference as Markdown.
pub fn markdown() -> String {
    let root = serde_json::to_value(schemars::schema_for!(Config)).unwrap_or_default();
    let defs = root.get("$defs").and_then(Value::as_object).cloned().unwrap_or_default();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the configuration types (`core/src/config.rs`) by\n\
         `CELLPILOT_WRITE_DOCS=1 cargo test -p cellpilot-core config::reference`; a test fails when\n\
         this file and the code disagree. Every key is optional: `serve` runs on the defaults with no\n\
         file. A file is TOML (`cellpilot serve --config FILE`; `cellpilot.example.toml` lists every\n\
         key), and any key can be set from the environment as `CELLPILOT_<SECTION>__<KEY>`, e.g.\n\
         `CELLPILOT_CONTROL__POLICY__DRAIN_FOR=3s` or `CELLPILOT_AUTH__TOKENS=a=1,b=2`.\n\
         Durations are written `\"500ms\"`, `\"10s\"`, `\"5m\"`, `\"30d\"`; sizes `\"64MiB\"`, `\"4GiB\"` or a\n\
         number of bytes. Unknown keys are refused, naming the key and its line.\n",
    );
    let Some(sections) = root.get("properties").and_then(Value::as_object) else {
        return out;
    };
    for (name, field) in sections {
        section(&mut out, &defs, name, field, &[]);
    }
    out
}

/// Writes the table of one `[section]` (or `[[section]]`), then its nested sections.
fn section(out: &mut String, defs: &Map<String, Value>, name: &str, field: &Value, parents: &[&str]) {
    let path: Vec<&str> = parents.iter().copied().chain([name]).collect();
    let (header, body) = match shape(defs, field) {
        Shape::Table(body) => (format!("[{}]", path.join(".")), body),
        Shape::ArrayOfTables(body) => (format!("[[{}]]", path.join(".")), body),
        Shape::MapOfTables(body) => (format!("[{}.\"<name>\"]", path.join(".")), body),
        Shape::Value(_) => return,
    };
    let _ = write!(out, "\n## `{header}`\n\n{}\n", text(field));
    let Some(props) = body.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> =
        body.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let mut nested = Vec::new();
    let mut rows = String::new();
    for (key, prop) in props {
        match shape(defs, prop) {
            Shape::Value(schema) => {
                let default = match prop.get("default") {
                    Some(Value::Null) | None if required.contains(&key.as_str()) => "required".to_string(),
                    Some(Value::Null) | None => "unset".to_string(),
                    Some(v) => format!("`{}`", toml_inline(v)),
                };
                let mut meaning = text(prop);
                if let Some(variants) = variants(&schema) {
                    let _ = write!(meaning, " {variants}");
                }
                let _ = writeln!(rows, "| `{key}` | {} | {default} | {} |", kind(&schema), meaning.replace('|', "\\|"));
            }
            _ => nested.push((key, prop)),
        }
    }
    if !rows.is_empty() {
        let _ = write!(out, "\n| key | type | default | meaning |\n|---|---|---|---|\n{rows}");
    }
    for (key, prop) in nested {
        section(out, defs, key, prop, &path);
    }
}

enum Shape {
    /// A scalar or a list of scalars: one row.
    Value(Value),
    /// A struct: a `[table]`.
    Table(Value),
    /// A list of structs: `[[tables]]`.
    ArrayOfTables(Value),
    /// A map of structs by name: `[table."<name>"]`.
    MapOfTables(Value),
}

fn shape(defs: &Map<String, Value>, schema: &Value) -> Shape {
    let schema = resolve(defs, schema);
    let is_table = |s: &Value| s.get("properties").is_some();
    if is_table(&schema) {
        return Shape::Table(schema);
    }
    if let Some(items) = schema.get("items").map(|i| resolve(defs, i))
        && is_table(&items)
    {
        return Shape::ArrayOfTables(items);
    }
    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()).map(|v| resolve(defs, v))
        && is_table(&values)
    {
        return Shape::MapOfTables(values);
    }
    Shape::Value(schema)
}

/// `schema` with a `$ref` replaced by its definition (the field's own keys kept over it).
fn resolve(defs: &Map<String, Value>, schema: &Value) -> Value {
    let Some(name) = schema.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/$defs/")) else {
        return schema.clone();
    };
    let mut out = defs.get(name).cloned().unwrap_or_default();
    if let (Some(out), Some(own)) = (out.as_object_mut(), schema.as_object()) {
        for (k, v) in own.iter().filter(|(k, _)| *k != "$ref") {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// The description on one line; a type's own `[section]` caption says nothing the heading does not.
fn text(schema: &Value) -> String {
    let d = schema.get("description").and_then(Value::as_str).unwrap_or("");
    if d.starts_with("`[") { String::new() } else { d.split_whitespace().collect::<Vec<_>>().join(" ") }
}

fn kind(schema: &Value) -> String {
    if let Some(format @ ("duration" | "size")) = schema.get("format").and_then(Value::as_str) {
        return format.to_string();
    }
    if schema.get("oneOf").is_some() || schema.get("enum").is_some() {
        return "one of".to_string();
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let optional = types.contains(&"null");
    let main = types.iter().find(|t| **t != "null").copied().unwrap_or("");
    let named = match main {
        "array" => format!("list of {}s", schema.get("items").map(kind).unwrap_or_default()),
        "object" => "table".to_string(),
        other => other.to_string(),
    };
    if optional { format!("{named}, optional") } else { named }
}

/// "`a`: what a means; `b`: …" for an enum.
fn variants(schema: &Value) -> Option<String> {
    let one_of = schema.get("oneOf").and_then(Value::as_array)?;
    let parts: Vec<String> = one_of
        .iter()
        .filter_map(|v| {
            let name = v.get("const").or_else(|| v.get("enum").and_then(|e| e.get(0)))?;
            Some(format!("`{}`: {}", toml_inline(name), text(v).trim_end_matches('.')))
        })
        .collect();
    Some(format!("{}.", parts.join("; ")))
}

/// A default as it is written in the TOML file.
fn toml_inline(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => format!("[{}]", items.iter().map(toml_inline).collect::<Vec<_>>().join(", ")),
        Value::Object(m) if m.is_empty() => "{}".to_string(),
        Value::Object(m) => {
            let kv: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {}", toml_inline(v))).collect();
            format!("{{ {} }}", kv.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo_file(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(name)
    }

    #[test]
    fn docs_configuration_md_is_current() {
        let path = repo_file("docs/configuration.md");
        let want = markdown();
        if std::env::var_os("CELLPILOT_WRITE_DOCS").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "docs/configuration.md differs from the config types; rewrite it with \
             CELLPILOT_WRITE_DOCS=1 cargo test -p cellpilot-core config::reference"
        );
    }

    /// The example file promises every key: each documented one appears in it (set or commented).
    #[test]
    fn the_example_file_lists_every_key() {
        let example = std::fs::read_to_string(repo_file("cellpilot.example.toml")).unwrap();
        let doc = markdown();
        let keys: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(k, _)| k))
            .collect();
        assert!(keys.len() > 60, "{} keys", keys.len());
        let set = |l: &str, k: &str| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{k} ="))
                || l.contains(&format!("{{ {k} ="))
                || l.contains(&format!(", {k} ="))
                // A table of its own: `[xds.clusters.cells]`.
                || (l.starts_with('[') && l.split(']').next().is_some_and(|h| h.ends_with(&format!(".{k}"))))
        };
        let missing: Vec<&&str> = keys.iter().filter(|k| !example.lines().any(|l| set(l, k))).collect();
        assert!(missing.is_empty(), "keys missing from cellpilot.example.toml: {missing:?}");
    }

    #[test]
    fn sections_rows_and_defaults_come_from_the_types() {
        let doc = markdown();
        for want in [
            "## `[ingest]`",
            "## `[control.policy]`",
            "## `[control.cells.\"<name>\"]`",
            "## `[[alerts.webhooks]]`",
            "## `[[slo]]`",
            "| `window` | duration | `\"10s\"` | Width of the finest window. |",
            "| `max_request_size` | size | `\"64MiB\"` |",
            "| `name` | string | required |",
            "| `cell_error_rate` | number, optional | unset |",
            "`\"dry-run\"`: Record decisions but publish base weights.",
        ] {
            assert!(doc.contains(want), "missing {want:?} in\n{doc}");
        }
    }
}
