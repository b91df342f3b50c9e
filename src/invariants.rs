//! ARCHITECTURE.md's invariants, checked on the source: the `use crate::…` lines of every file
//! (outside its tests) make the import graph, and each invariant is a property of that graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// File (relative to `src/`, e.g. `store/mongo/mod.rs`) → the files its `use crate::` lines name.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    let mut graph = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let code = without_tests(&text);
        let name = relative(&src, &file);
        let mut targets = BTreeSet::new();
        for path in use_paths(code) {
            if let Some(target) = resolve(&src, &path) {
                if target != name {
                    targets.insert(target);
                }
            }
        }
        graph.insert(name, targets);
    }
    graph
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn relative(src: &Path, file: &Path) -> String {
    file.strip_prefix(src).unwrap_or(file).to_string_lossy().into_owned()
}

/// The code before the file's test module (`#[cfg(test)] mod tests { … }` closes every file that
/// has one); `#[cfg(test)] mod x;` lines are skipped by `use_paths` anyway.
fn without_tests(text: &str) -> &str {
    let mut from = 0;
    while let Some(at) = text[from..].find("#[cfg(test)]") {
        let after = text[from + at + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod ") && after.split_once('\n').is_some_and(|(l, _)| l.trim_end().ends_with('{')) {
            return &text[..from + at];
        }
        from += at + 1;
    }
    text
}

/// Every path a `use crate::…;` statement names, braces expanded: `a::{b, c::d}` → `a::b`, `a::c::d`.
fn use_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for statement in code.split(';') {
        let s = statement.trim_start();
        let s = s
            .strip_prefix("pub(crate) ")
            .or_else(|| s.strip_prefix("pub(super) "))
            .or_else(|| s.strip_prefix("pub "))
            .unwrap_or(s);
        let Some(rest) = s.strip_prefix("use crate::") else {
            continue;
        };
        let rest: String = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        expand(&rest, &mut Vec::new(), &mut out);
    }
    out
}

fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    match tree.find('{') {
        Some(open) if tree.ends_with('}') => {
            let head: Vec<String> = tree[..open]
                .split("::")
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let depth = prefix.len();
            prefix.extend(head);
            let inner = &tree[open + 1..tree.len() - 1];
            let mut level = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        expand(&inner[start..i], prefix, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&inner[start..], prefix, out);
            prefix.truncate(depth);
        }
        _ if tree.is_empty() => {}
        _ => {
            let mut path = prefix.clone();
            path.extend(
                tree.split("::")
                    .map(|s| s.split(" as ").next().unwrap_or(s).trim().to_string()),
            );
            out.push(path);
        }
    }
}

/// The deepest file a path reaches: `store::mongo::MongoStore` → `store/mongo/mod.rs`.
fn resolve(src: &Path, path: &[String]) -> Option<String> {
    let mut found = None;
    for i in 1..=path.len() {
        let dir = path[..i].join("/");
        if src.join(format!("{dir}.rs")).exists() {
            found = Some(format!("{dir}.rs"));
        } else if src.join(&dir).join("mod.rs").exists() {
            found = Some(format!("{dir}/mod.rs"));
        } else {
            break;
        }
    }
    found
}

/// The top-level module a file belongs to: `store/mongo/mod.rs` → `store`, `app.rs` → `app`.
fn module(file: &str) -> &str {
    let first = file.split('/').next().unwrap_or(file);
    first.strip_suffix(".rs").unwrap_or(first)
}

/// (file, imported file) pairs from files of module `from` into files `to` accepts.
fn imports(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: impl Fn(&str) -> bool,
    to: impl Fn(&str) -> bool,
) -> Vec<String> {
    graph
        .iter()
        .filter(|(f, _)| from(f))
        .flat_map(|(f, ts)| ts.iter().filter(|t| to(t)).map(move |t| format!("{f} → {t}")))
        .collect()
}

#[test]
fn the_graph_is_read() {
    let graph = import_graph();
    assert!(graph["app.rs"].contains("config/mod.rs"), "{:?}", graph["app.rs"]);
    assert!(
        graph["store/mongo/mod.rs"].contains("retry.rs"),
        "{:?}",
        graph["store/mongo/mod.rs"]
    );
    let mut paths = Vec::new();
    expand("store::{query::{Filter, Query}, AnyStore}", &mut Vec::new(), &mut paths);
    assert_eq!(
        paths,
        [
            vec!["store", "query", "Filter"],
            vec!["store", "query", "Query"],
            vec!["store", "AnyStore"]
        ]
    );
}

/// Invariant "one direction": no file reaches itself through its imports.
#[test]
fn no_import_circle() {
    let graph = import_graph();
    // Tarjan's strongly connected components.
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        circles: Vec<Vec<&'g str>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.circles.push(component);
            }
        }
    }
    let mut s = State {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        circles: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    assert!(s.circles.is_empty(), "import circles: {:?}", s.circles);
}

/// Invariant "sources produce, stores persist": a source never looks at the store, and the store
/// never reaches up into what feeds or reads it.
#[test]
fn sources_never_see_the_store_and_the_store_sees_nothing_above_it() {
    let graph = import_graph();
    let found = imports(&graph, |f| module(f) == "source", |t| module(t) == "store");
    assert!(found.is_empty(), "sources import the store: {found:?}");
    // The alert vocabulary is the one part of the monitor the store keeps (alert records), a leaf.
    let above = ["source", "pipeline", "api", "monitor", "notify", "config", "app"];
    let found = imports(
        &graph,
        |f| module(f) == "store",
        |t| above.contains(&module(t)) && t != "monitor/vocabulary.rs",
    );
    assert!(found.is_empty(), "the store imports what is above it: {found:?}");
}

/// Invariant "the pipeline only moves": it knows no source, reader or store implementation.
#[test]
fn the_pipeline_knows_no_source_reader_or_store_implementation() {
    let graph = import_graph();
    let above = ["source", "api", "monitor", "notify", "config", "app"];
    let found = imports(&graph, |f| module(f) == "pipeline", |t| above.contains(&module(t)));
    assert!(found.is_empty(), "the pipeline imports {found:?}");
}

/// Invariant "one store interface": only `app.rs` (which chooses), the loader (which assembles
/// their config sections) and the store itself name an implementation (`store/embedded.rs`,
/// `store/mongo/`); everything else goes through the traits.
#[test]
fn only_the_app_names_a_store_implementation() {
    let graph = import_graph();
    let implementation = |t: &str| t == "store/embedded.rs" || t.starts_with("store/mongo/");
    let found = imports(
        &graph,
        |f| !["store", "config"].contains(&module(f)) && f != "app.rs",
        implementation,
    );
    assert!(
        found.is_empty(),
        "store implementations named outside store/ and app.rs: {found:?}"
    );
}

/// Invariant "the monitor reads the event stream and the store, never the sources".
#[test]
fn the_monitor_never_reads_the_sources_or_the_api() {
    let graph = import_graph();
    let found = imports(
        &graph,
        |f| module(f) == "monitor",
        |t| ["source", "api"].contains(&module(t)),
    );
    assert!(found.is_empty(), "the monitor imports {found:?}");
}

/// Invariant "leaves and the loader": `units`, `problems`, `retry`, the alert vocabulary, the allocator's
/// policy and the latency sketch depend on nothing of the crate
/// but each other, and only `app.rs` takes the whole configuration (each module owns its section).
#[test]
fn leaves_stay_leaves_and_only_the_app_takes_the_whole_configuration() {
    let graph = import_graph();
    let leaves = [
        "units.rs",
        "problems.rs",
        "retry.rs",
        "monitor/vocabulary.rs",
        "allocator.rs",
        "monitor/sketch.rs",
    ];
    for leaf in leaves {
        let beyond: Vec<&String> = graph[leaf].iter().filter(|t| !leaves.contains(&t.as_str())).collect();
        assert!(beyond.is_empty(), "{leaf} imports {beyond:?}");
    }
    let found = imports(
        &graph,
        |f| module(f) != "config" && f != "app.rs",
        |t| module(t) == "config",
    );
    assert!(found.is_empty(), "the configuration loader imported by {found:?}");
}
