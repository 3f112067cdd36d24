//! Embeds the catalogue (`modelfiles/<model>/<tag>.Modelfile` at the repository's root) into
//! whaled: writes `$OUT_DIR/catalogue.rs`, a slice of `("<model>/<tag>", text)`, and
//! `$OUT_DIR/templates.rs`, a slice of `("<kind>", text)` of `modelfiles/templates/<kind>.jinja`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../modelfiles");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for model in std::fs::read_dir(&root).expect("read modelfiles/") {
        let model = model.expect("read modelfiles/").path();
        if !model.is_dir() || model.file_name().is_some_and(|name| name == "templates") {
            continue;
        }
        for file in std::fs::read_dir(&model).expect("read a model's folder") {
            let path = file.expect("read a model's folder").path();
            if path.extension().is_some_and(|ext| ext == "Modelfile") {
                let key = format!(
                    "{}/{}",
                    model.file_name().unwrap().to_string_lossy(),
                    path.file_stem().unwrap().to_string_lossy()
                );
                files.push((key, path.canonicalize().expect("a Modelfile's path")));
            }
        }
    }
    write_slice("catalogue.rs", files);
    let mut templates = Vec::new();
    for file in std::fs::read_dir(root.join("templates")).expect("read modelfiles/templates/") {
        let path = file.expect("read modelfiles/templates/").path();
        if path.extension().is_some_and(|ext| ext == "jinja") {
            let key = path.file_stem().unwrap().to_string_lossy().into_owned();
            templates.push((key, path.canonicalize().expect("a template's path")));
        }
    }
    write_slice("templates.rs", templates);
}

/// Writes `$OUT_DIR/<name>`: a slice of `(key, include_str!(path))`, sorted by key.
fn write_slice(name: &str, mut files: Vec<(String, PathBuf)>) {
    files.sort();
    let mut out = String::from("&[\n");
    for (key, path) in files {
        writeln!(out, "    ({key:?}, include_str!({:?})),", path.display()).unwrap();
    }
    out.push_str("]\n");
    let target = Path::new(&std::env::var("OUT_DIR").unwrap()).join(name);
    std::fs::write(target, out).unwrap_or_else(|error| panic!("write {name}: {error}"));
}
