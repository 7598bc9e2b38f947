//! The shape of the code, checked: every crate says what it may depend on
//! and depends on nothing else; no two modules of a crate import each other,
//! however long the way round; no source file is over 600 lines.
//!
//! Cargo already refuses a circle between crates. Inside a crate it does
//! not: modules may import each other freely, and a crate whose modules
//! close into a circle cannot be split or understood a piece at a time. So
//! this test reads every module's `crate::`, `super::` and `self::` paths
//! (comments left out) and checks, for every directory of modules, that
//! the graph among its sibling modules has no cycle. A module's use of its
//! own parent or children is not an edge: `mod.rs` declares its children
//! and they see its items through `super`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the binary crate lies in the workspace")
        .to_path_buf()
}

/// The native crates: the binary and the libraries under `crates/`.
fn crates() -> Vec<(String, PathBuf)> {
    let mut crates = vec![("wasmatic".to_string(), workspace().join("host"))];
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(workspace().join("crates"))
        .expect("crates/")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = format!("wasmatic-{}", dir.file_name().unwrap().to_string_lossy());
        crates.push((name, dir));
    }
    crates
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The module path of `file` in the crate whose sources are in `src`:
/// `lib.rs`/`main.rs` is the root, `a/mod.rs` and `a.rs` are `a`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// The code of `text` without its comments (whole-line and trailing ones;
/// a `//` inside a string is rare enough in our sources to be ignored).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                ""
            } else {
                match line.find(" // ") {
                    Some(at) if !line[..at].contains('"') => &line[..at],
                    _ => line,
                }
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths `code` names from its module `here`: `crate::a::b`, `super::c`,
/// `self::d`, resolved to absolute module paths (as long as they go; the
/// caller keeps the longest prefix that is a module).
fn named_paths(code: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(start) {
            let at = from + at;
            from = at + start.len();
            // Part of a longer word (`wasmatic_crate::`) is not a path.
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            // `super::super::x` is read from its first `super`.
            if at >= 7 && &bytes[at - 7..at] == b"super::" {
                continue;
            }
            let mut base: Vec<String> = match start {
                "crate::" => Vec::new(),
                "self::" => here.to_vec(),
                _ => here[..here.len().saturating_sub(1)].to_vec(),
            };
            let mut rest = &code[at + start.len()..];
            while let Some(more) = rest.strip_prefix("super::") {
                base.pop();
                rest = more;
            }
            // A grouped import names each of its members.
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for member in group[..end].split(',') {
                    let mut path = base.clone();
                    path.extend(segments(member.trim()));
                    found.push(path);
                }
                continue;
            }
            let mut path = base;
            path.extend(segments(rest));
            found.push(path);
        }
    }
    found
}

/// The leading `a::b::c` of `text`, as segments.
fn segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(more) => rest = more,
            None => break,
        }
    }
    out
}

/// A cycle in `graph`, if it has one, as the nodes around it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut circle = stack[from..].to_vec();
                    circle.push(next.clone());
                    return Some(circle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_module_circle_inside_any_crate() {
    let mut circles = Vec::new();
    for (name, dir) in crates() {
        let src = dir.join("src");
        let files = sources(&src);
        let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
        // Sibling edges, by parent module.
        let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for file in &files {
            let here = module_path(&src, file);
            let text = std::fs::read_to_string(file).expect("readable source");
            for mut target in named_paths(&code(&text), &here) {
                while !target.is_empty() && !modules.contains(&target) {
                    target.pop();
                }
                let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
                // An ancestor or descendant (or itself): not a sibling edge.
                if common == here.len() || common == target.len() {
                    continue;
                }
                graphs
                    .entry(here[..common].to_vec())
                    .or_default()
                    .entry(here[common].clone())
                    .or_default()
                    .insert(target[common].clone());
            }
        }
        for (parent, graph) in &graphs {
            if let Some(circle) = cycle(graph) {
                let at = if parent.is_empty() {
                    "the crate root".to_string()
                } else {
                    parent.join("::")
                };
                circles.push(format!("{name}, in {at}: {}", circle.join(" -> ")));
            }
        }
    }
    assert!(
        circles.is_empty(),
        "modules that import each other:\n{}",
        circles.join("\n")
    );
}

/// The internal crates `manifest` lists under `[dependencies]`.
fn internal_dependencies(manifest: &str) -> BTreeSet<String> {
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap_or("")
        .split("\n[")
        .next()
        .unwrap_or("");
    deps.lines()
        .filter_map(|l| l.split('=').next())
        .map(str::trim)
        .filter(|n| n.starts_with("wasmatic-"))
        .map(String::from)
        .collect()
}

/// The crates a crate's documentation says it may depend on: its
/// `May depend on:` paragraph, crate names in backquotes.
fn declared_dependencies(lib: &str) -> Option<BTreeSet<String>> {
    let docs: String = lib
        .lines()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .map(|l| l.trim_start_matches("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let at = docs.find("May depend on:")?;
    let paragraph = docs[at..].split("\n\n").next().unwrap_or("");
    Some(
        paragraph
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| w.starts_with("wasmatic-"))
            .map(String::from)
            .collect(),
    )
}

#[test]
fn every_library_crate_says_what_it_may_depend_on_and_keeps_to_it() {
    let mut wrong = Vec::new();
    for (name, dir) in crates().into_iter().skip(1) {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).expect("lib.rs");
        let actual = internal_dependencies(&manifest);
        match declared_dependencies(&lib) {
            None => wrong.push(format!("{name}: its crate doc has no `May depend on:`")),
            Some(declared) if declared != actual => wrong.push(format!(
                "{name}: its crate doc allows {declared:?}, Cargo.toml has {actual:?}"
            )),
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_source_file_is_over_600_lines() {
    let root = workspace();
    let mut dirs: Vec<PathBuf> = crates().into_iter().map(|(_, d)| d).collect();
    dirs.push(root.join("operator/src"));
    let mut long = Vec::new();
    for dir in dirs {
        for file in sources(&dir) {
            let lines = std::fs::read_to_string(&file)
                .expect("readable source")
                .lines()
                .count();
            if lines > 600 {
                long.push(format!(
                    "{} ({lines} lines)",
                    file.strip_prefix(&root).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by concern: {}",
        long.join(", ")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    // A circle of three, and a parent using its child (no edge).
    let mut graph = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a")] {
        graph
            .entry(a.to_string())
            .or_insert_with(BTreeSet::new)
            .insert(b.to_string());
    }
    assert_eq!(cycle(&graph).map(|c| c.len()), Some(4));
    graph.get_mut("c").unwrap().clear();
    assert_eq!(cycle(&graph), None);
    let here = vec!["node".to_string(), "fleet".to_string()];
    let paths = named_paths(
        &code("use super::ticks::Tick;\n// crate::nope\nuse crate::{a::b, c};\nlet x = wasmatic_crate::y;"),
        &here,
    );
    assert_eq!(
        paths,
        vec![
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string()],
            vec!["node".to_string(), "ticks".to_string(), "Tick".to_string()],
        ]
    );
    assert_eq!(
        declared_dependencies(
            "//! Job.\n//!\n//! May depend on: `wasmatic-api`,\n//! `wasmatic-state`.\n\nmod a;"
        ),
        Some(["wasmatic-api", "wasmatic-state"].map(String::from).into())
    );
}
