//! The one direction of dependencies the crate documentation describes, checked: every
//! `crate::<module>` path in a module's files names a module of the same layer or a lower one.

use std::fs;
use std::path::{Path, PathBuf};

/// Each top-level module and its layer (see the Architecture section of the crate docs).
const LAYERS: &[(&str, u8)] = &[
    ("context", 0),
    ("message", 0),
    ("step_error", 0),
    ("shared", 0),
    ("definition", 1),
    ("execution", 2),
    ("shard", 2),
    ("locks", 2),
    ("faults", 2),
    ("broker", 3),
    ("repository", 3),
    ("participant_store", 3),
    ("sql", 3),
    ("committer", 4),
    ("request_scope", 4),
    ("registry", 5),
    ("manager", 5),
    ("step_def", 5),
    ("transactional", 5),
    ("service", 6),
];

/// Modules every layer may name: the facades over the layers (they only re-export).
const FACADES: &[&str] = &["error", "prelude", "wiring", "__private"];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("the source folder reads") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None` for the crate root and this file).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.trim_end_matches(".rs");
    (module != "lib" && module != "architecture_tests").then(|| module.to_owned())
}

/// The top-level modules a file names through `crate::` paths (`use crate::a::b`, `crate::a::f()`,
/// and `use crate::{a::x, b::y}` groups), comments included: a doc link is a dependency too.
fn named_modules(text: &str) -> Vec<String> {
    let mut named = Vec::new();
    for (index, _) in text.match_indices("crate::") {
        let rest = &text[index + "crate::".len()..];
        let paths: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            group[..end].split(',').collect()
        } else {
            vec![rest]
        };
        for path in paths {
            let name: String = path
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                named.push(name);
            }
        }
    }
    named
}

#[test]
fn every_module_names_only_its_own_layer_or_lower_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let Some(module) = owner(&src, file) else {
            continue;
        };
        if FACADES.contains(&module.as_str()) {
            continue;
        }
        let own = layer(&module).unwrap_or_else(|| {
            panic!("module `{module}` has no layer: add it to LAYERS and the docs")
        });
        let text = fs::read_to_string(file).expect("a source file reads");
        for named in named_modules(&text) {
            if named == module || FACADES.contains(&named.as_str()) {
                continue;
            }
            match layer(&named) {
                Some(theirs) if theirs <= own => {}
                Some(theirs) => violations.push(format!(
                    "{} (layer {own}) names crate::{named} (layer {theirs})",
                    file.strip_prefix(&src).expect("under src").display()
                )),
                // Crate-root items (the macros' re-exports, `Context` at the root, ...).
                None => {}
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn paths_are_read_from_plain_imports_groups_and_calls() {
    let text = "use crate::definition::Saga;\nuse crate::{message::X, broker::Y};\ncrate::faults::reach(\"p\");";
    assert_eq!(
        named_modules(text),
        ["definition", "message", "broker", "faults"]
    );
}
