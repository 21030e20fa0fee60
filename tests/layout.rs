//! The layout rules of docs/architecture.md, checked: which crate may depend on which, and each
//! crate's `lib.rs` layout section naming every module it declares.

use std::path::Path;

const CRATES: [&str; 12] = [
    "core",
    "ingest",
    "query",
    "control",
    "alerts",
    "dashboards",
    "web",
    "server",
    "tools",
    "gateways",
    "cluster",
    "probes",
];

/// What each library crate may depend on (normal dependencies; tests may use more).
const ALLOWED: [(&str, &[&str]); 12] = [
    ("core", &[]),
    ("probes", &["core"]),
    ("ingest", &["core"]),
    ("query", &["core"]),
    ("control", &["core", "query"]),
    ("alerts", &["core", "query"]),
    ("dashboards", &["core", "query", "control", "alerts"]),
    ("gateways", &["core", "control"]),
    ("cluster", &["core", "query", "control"]),
    ("web", &["core", "query", "control", "alerts", "dashboards"]),
    ("server", &["core", "ingest", "query", "control", "alerts", "dashboards", "web", "gateways", "cluster"]),
    ("tools", &["core", "ingest", "query", "control", "web", "server", "gateways"]),
];

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

/// The `cellpilot-*` crates named in the `[dependencies]` table of a manifest.
fn our_dependencies(manifest: &str) -> Vec<String> {
    our_dependencies_in(manifest, "[dependencies]")
}

/// The `cellpilot-*` crates named in one table of a manifest.
fn our_dependencies_in(manifest: &str, table: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == table
            && let Some(name) = line.strip_prefix("cellpilot-")
        {
            out.push(name.split(['.', ' ', '=']).next().unwrap_or_default().to_string());
        }
    }
    out
}

#[test]
fn crates_depend_only_on_what_the_architecture_allows() {
    for (krate, allowed) in ALLOWED {
        for dep in our_dependencies(&read(&format!("{krate}/Cargo.toml"))) {
            assert!(
                allowed.contains(&dep.as_str()),
                "{krate} depends on {dep}; docs/architecture.md does not allow it"
            );
        }
    }
    assert_eq!(our_dependencies(&read("ingest/Cargo.toml")), ["core"]);
    // Nothing on serve's path depends on the tools, not even for its tests.
    for krate in CRATES.iter().filter(|k| **k != "tools") {
        let manifest = read(&format!("{krate}/Cargo.toml"));
        for table in ["[dependencies]", "[dev-dependencies]"] {
            assert!(!our_dependencies_in(&manifest, table).contains(&"tools".to_string()), "{krate} {table}");
        }
    }
}

/// Crates whose modules are private: callers see what `lib.rs` re-exports (and these modules).
const FRONT_DOORS: [(&str, &[&str]); 5] =
    [("ingest", &["error"]), ("control", &[]), ("alerts", &[]), ("gateways", &["pb"]), ("probes", &[])];

#[test]
fn domain_crates_are_entered_through_their_front_door() {
    for (krate, open) in FRONT_DOORS {
        let lib = read(&format!("{krate}/src/lib.rs"));
        for line in lib.lines() {
            let Some(name) = line.strip_prefix("pub mod ") else { continue };
            let name = name.trim_end_matches([';', ' ', '{']);
            assert!(
                open.contains(&name),
                "{krate}/src/lib.rs opens module `{name}`: re-export what callers need instead"
            );
        }
    }
}

#[test]
fn every_module_is_in_its_crates_layout_section() {
    for krate in CRATES {
        let lib = read(&format!("{krate}/src/lib.rs"));
        let layout: String = lib.lines().take_while(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
        assert!(layout.contains("# Layout"), "{krate}/src/lib.rs has no layout section");
        for line in lib.lines() {
            let (public, rest) = match (line.strip_prefix("pub mod "), line.strip_prefix("mod ")) {
                (Some(r), _) => (true, r),
                (None, Some(r)) => (false, r),
                _ => continue,
            };
            let Some(name) = rest.strip_suffix(';') else { continue };
            // Private modules cannot be doc links; they are named in backticks.
            let want = if public { format!("[`{name}`]") } else { format!("`{name}`") };
            assert!(layout.contains(&want), "{krate}/src/lib.rs: module `{name}` is missing from the layout section");
        }
    }
}

/// README and docs/ link only to files of this repository (which exist) or to loopback.
#[test]
fn docs_link_only_inside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    assert!(pages.len() >= 4, "{pages:?}");
    for page in pages {
        let text = std::fs::read_to_string(&page).unwrap();
        for target in text.split("](").skip(1).filter_map(|t| t.split_once(')')).map(|(t, _)| t) {
            let target = target.split('#').next().unwrap_or_default();
            if target.starts_with("http://") || target.starts_with("https://") {
                assert!(
                    target.contains("://127.0.0.1") || target.contains("://localhost"),
                    "{}: link to {target} leaves the repository",
                    page.display()
                );
            } else if !target.is_empty() {
                let file = page.parent().unwrap().join(target);
                assert!(file.exists(), "{}: link to {target}, which does not exist", page.display());
            }
        }
    }
}

/// Non-test source of every module of `krate`, keyed by top-level module name.
fn modules(krate: &str) -> std::collections::BTreeMap<String, String> {
    fn walk(dir: &Path, top: Option<&str>, out: &mut std::collections::BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            let name = top.unwrap_or(&stem).to_string();
            if path.is_dir() {
                walk(&path, Some(&name), out);
            } else if path.extension().is_some_and(|e| e == "rs") && !(top.is_none() && stem == "lib") {
                let text = std::fs::read_to_string(&path).unwrap();
                // Comments (doc links among them) are not dependencies.
                let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
                for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                    out.entry(name.clone()).or_default().push_str(line);
                    out.entry(name.clone()).or_default().push('\n');
                }
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join(krate).join("src"), None, &mut out);
    out
}

/// The top-level modules `code` names through `crate::`.
fn crate_refs(code: &str) -> std::collections::BTreeSet<String> {
    let ident = |s: &str| s.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut out = std::collections::BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `cellpilot_core::`, `$crate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        out.insert(ident(&group[j..]));
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

/// No two modules of a crate reach each other, directly or round a longer loop: each idea leans
/// on the ones below it, so a file can be read knowing only what it imports.
#[test]
fn no_crate_has_module_cycles() {
    let mut cycles = Vec::new();
    for krate in CRATES {
        let modules = modules(krate);
        let edges: std::collections::BTreeMap<&str, Vec<String>> = modules
            .iter()
            .map(|(m, code)| {
                let refs = crate_refs(code).into_iter().filter(|r| r != m && modules.contains_key(r)).collect();
                (m.as_str(), refs)
            })
            .collect();
        // Depth-first search from each module for a path back to it.
        for start in edges.keys() {
            cycles.extend(cycle_through(krate, start, &edges));
        }
    }
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

fn cycle_through(krate: &str, start: &str, edges: &std::collections::BTreeMap<&str, Vec<String>>) -> Option<String> {
    let mut stack: Vec<Vec<&str>> = vec![vec![start]];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = *path.last().unwrap();
        for next in &edges[last] {
            if next == start {
                return Some(format!("{krate}: {} -> {start}", path.join(" -> ")));
            }
            if seen.insert(next.as_str()) {
                let mut longer = path.clone();
                longer.push(next);
                stack.push(longer);
            }
        }
    }
    None
}

/// Most lines a file's non-test code may have: past it, a file holds more than one idea.
const MAX_FILE_LINES: usize = 600;

#[test]
fn no_source_file_is_longer_than_one_idea() {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let lines = text.lines().take_while(|l| !l.starts_with("#[cfg(test)]")).count();
                if lines > MAX_FILE_LINES {
                    out.push(format!("{}: {lines} lines", path.display()));
                }
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut long = Vec::new();
    for krate in CRATES.iter().copied().chain(["."]) {
        walk(&root.join(krate).join("src"), &mut long);
    }
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines of non-test code:\n{}", long.join("\n"));
}
