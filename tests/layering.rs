//! No module cycles: the top-level modules of `src/` form a DAG, and so do
//! the sibling submodules inside each folder (`src/client/driver.rs` and
//! `src/client/verify.rs`, say). Every `crate::` and `super::` path in the
//! source counts, test code included, so a cycle cannot hide in a test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `client/driver.rs` -> ["client", "driver"]; `client/mod.rs` -> ["client"].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The identifiers that follow `prefix` in `text` (`crate::report` ->
/// "report"); a group names each of its items (`crate::{log, wire::x}` ->
/// "log", "wire").
fn paths_after<'t>(text: &'t str, prefix: &str) -> Vec<&'t str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        // `$crate::` is a macro's own crate, and `foo_crate::` is another name.
        if before.is_some_and(|c| c == '$' || c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            found.extend(group_items(group));
        } else {
            found.push(leading_identifier(rest));
        }
    }
    found.retain(|name| !name.is_empty() && *name != "self");
    found
}

fn leading_identifier(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first identifier of each item of a `{...}` group, `group` being the
/// text after its `{`.
fn group_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut item_start) = (0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(leading_identifier(&group[item_start..i]));
                break;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(leading_identifier(&group[item_start..i]));
                item_start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// `#[macro_export]` macros live at the crate root (`crate::warn!`) but
/// belong to the module that defines them: name -> that module.
fn exported_macros(src: &Path, files: &[PathBuf]) -> BTreeMap<String, String> {
    let mut macros = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(file).expect("read source");
        let mut exported = false;
        for line in text.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("macro_rules!") {
                if exported {
                    let module = module_of(src, file).remove(0);
                    macros.insert(leading_identifier(rest).to_owned(), module);
                }
            }
            exported = line == "#[macro_export]" || (exported && line.starts_with("#["));
        }
    }
    macros
}

fn graphs() -> (Graph, BTreeMap<String, Graph>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let macros = exported_macros(&src, &files);
    let mut top = Graph::new();
    let mut siblings: BTreeMap<String, Graph> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module.is_empty() || module == ["lib"] || module == ["main"] {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        let from = module[0].clone();
        top.entry(from.clone()).or_default();
        for to in paths_after(&text, "crate::") {
            let to = macros.get(to).map_or(to, String::as_str);
            if to != from {
                top.entry(from.clone()).or_default().insert(to.to_owned());
            }
        }
        // Sibling edges: `super::x` from folder/a.rs, `crate::folder::x` too.
        if module.len() == 2 {
            let folder = &module[0];
            let me = module[1].clone();
            let graph = siblings.entry(folder.clone()).or_default();
            graph.entry(me.clone()).or_default();
            let crate_prefix = format!("crate::{folder}::");
            for to in paths_after(&text, "super::")
                .into_iter()
                .chain(paths_after(&text, &crate_prefix))
            {
                let sibling = src.join(folder).join(format!("{to}.rs"));
                if to != me && sibling.exists() {
                    graph.entry(me.clone()).or_default().insert(to.to_owned());
                }
            }
        }
    }
    (top, siblings)
}

/// A cycle in `graph`, as the path that closes it.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let (top, _) = graphs();
    assert!(top.len() > 5, "the source was not found: {top:?}");
    assert!(
        top["client"].contains("report"),
        "the scan misses edges: {top:?}"
    );
    // Every edge ends at a module, so none is lost to a name the scan
    // cannot place (a macro, an item of lib.rs).
    for (from, targets) in &top {
        for to in targets {
            assert!(top.contains_key(to), "{from} -> {to}: not a module of src/");
        }
    }
    if let Some(cycle) = find_cycle(&top) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn sibling_submodules_form_no_cycle() {
    let (_, siblings) = graphs();
    assert!(siblings.contains_key("client") && siblings.contains_key("http"));
    for (folder, graph) in &siblings {
        if let Some(cycle) = find_cycle(graph) {
            panic!("module cycle in src/{folder}/: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g
        });
    let cycle = find_cycle(&graph).expect("a cycle");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4);
    assert_eq!(
        paths_after("use $crate::log; crate::wire::x", "crate::"),
        ["wire"]
    );
    assert_eq!(
        paths_after(
            "use crate::{\n    self, log::{a, b},\n    time::Rfc3339 as T,\n};",
            "crate::"
        ),
        ["log", "time"]
    );
}
