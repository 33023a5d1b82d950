//! The layering check (a test, run by `./scripts/test.sh` and so by CI):
//! every module imports only from its own layer or below, only `store`
//! touches sled, and the rules (pure) do not reach the store either.
//!
//! The layers are the groups of `pub mod` lines in `lib.rs`, bottom to
//! top, each under a `// Name: …` comment; a new module must be declared in
//! one of them. Each file under `src/` belongs to the top-level module its
//! path starts with; every `crate::…` path in it (in `use` lines and inline,
//! test code included) must name a module of the same layer or a lower one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The layers from `lib.rs`: (layer name, its modules), bottom first.
fn layers(lib_rs: &str) -> Vec<(String, Vec<String>)> {
    let mut layers: Vec<(String, Vec<String>)> = Vec::new();
    for line in lib_rs.lines().map(str::trim) {
        if let Some(comment) = line.strip_prefix("// ") {
            if let Some((name, _)) = comment.split_once(':') {
                if !name.contains(' ') {
                    layers.push((name.to_string(), Vec::new()));
                }
            }
        } else if let Some(module) = line
            .strip_prefix("pub mod ")
            .and_then(|rest| rest.strip_suffix(';'))
        {
            if let Some((_, modules)) = layers.last_mut() {
                modules.push(module.to_string());
            }
        }
    }
    layers
}

/// The top-level modules every `crate::…` path in `source` names.
fn imported_modules(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (index, _) in source.match_indices("crate::") {
        let preceded_by_word = source[..index]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if preceded_by_word {
            continue;
        }
        let rest = &source[index + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `use crate::{a::X, b};`: every first segment in the braces.
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let name = item.trim().split("::").next().unwrap_or_default();
                found.extend(module_name(name));
            }
        } else {
            found.extend(module_name(rest));
        }
    }
    found
}

fn module_name(path: &str) -> Option<String> {
    let name: String = path
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some(name)
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(dir) = todo.pop() {
        // invariant: the source tree is readable (the crate just compiled).
        for entry in std::fs::read_dir(&dir).expect("source dir").flatten() {
            let path = entry.path();
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

/// The top-level module a file under `src` belongs to (`None`: the crate
/// root, the binary, this check, the fuzz targets: tests that reach every
/// layer from above).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!["lib", "main", "layers", "fuzz"].contains(&name)).then(|| name.to_string())
}

/// Upward imports as `file: module (layer) imports module (layer)`.
fn violations(src: &Path) -> Vec<String> {
    // invariant: lib.rs exists next to this file.
    let lib_rs = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut layer_of: HashMap<String, (usize, String)> = HashMap::new();
    for (index, (name, modules)) in layers(&lib_rs).into_iter().enumerate() {
        for module in modules {
            layer_of.insert(module, (index, name.clone()));
        }
    }
    let mut found = Vec::new();
    for file in rust_files(src) {
        let Some(module) = owner(src, &file) else {
            continue;
        };
        let shown = file
            .strip_prefix(src)
            .unwrap_or(&file)
            .display()
            .to_string();
        let Some((own, own_name)) = layer_of.get(&module).cloned() else {
            found.push(format!(
                "{shown}: module `{module}` is in no layer of lib.rs"
            ));
            continue;
        };
        // invariant: the file was just listed.
        let source = std::fs::read_to_string(&file).expect("source file");
        for imported in imported_modules(&source) {
            match layer_of.get(&imported) {
                Some((layer, name)) if *layer > own => found.push(format!(
                    "{shown}: `{module}` ({own_name}) imports `{imported}` ({name}), a layer above"
                )),
                Some(_) if own_name == "Rules" && imported == "store" => found.push(format!(
                    "{shown}: `{module}` is a rule, pure: it takes facts, it does not read the store"
                )),
                Some(_) => {}
                None => found.push(format!("{shown}: `crate::{imported}` is in no layer")),
            }
        }
        if module != "store" && (source.contains("sled::") || source.contains("use sled")) {
            found.push(format!("{shown}: only `store` touches sled"));
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    assert!(found.is_empty(), "layering broken:\n{}", found.join("\n"));
}

#[test]
fn the_layers_are_read_from_lib_rs_bottom_first() {
    let lib_rs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        // invariant: lib.rs is next to this file.
        .expect("lib.rs");
    let names: Vec<String> = layers(&lib_rs).into_iter().map(|(name, _)| name).collect();
    assert_eq!(
        names,
        ["Support", "Records", "Store", "Settings", "Rules", "Services", "Top"]
    );
}

#[test]
fn imports_are_found_in_use_lines_groups_and_inline_paths() {
    let source = "use crate::store::Store;\nuse crate::{records::Twin, clock};\n\
                  let x = crate::hours::week_of(c, 1);\nuse hub_crate::nope;\n// mycrate::no\n";
    assert_eq!(
        imported_modules(source),
        ["store", "records", "clock", "hours"]
    );
}
