//! Builds the console's files into the binary: the project's own pages and scripts
//! (`web/console/`) and the pinned front-end libraries npm installed from the lockfile
//! (`web/node_modules/`: noVNC's core, xterm.js and its fit add-on, with their
//! licences). Nothing is fetched here: `scripts/setup.sh` runs `npm ci` first. Without
//! the libraries the build still succeeds, with a warning, and the console answers
//! their URLs with what to run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// (directory or file under web/node_modules, URL prefix under /vendor/)
const LIBRARIES: &[(&str, &str)] = &[
    ("@novnc/novnc/core", "novnc/core"),
    ("@novnc/novnc/vendor", "novnc/vendor"),
    ("@novnc/novnc/LICENSE.txt", "novnc/LICENSE.txt"),
    ("@xterm/xterm/lib/xterm.mjs", "xterm/xterm.mjs"),
    ("@xterm/xterm/css/xterm.css", "xterm/xterm.css"),
    ("@xterm/xterm/LICENSE", "xterm/LICENSE"),
    ("@xterm/addon-fit/lib/addon-fit.mjs", "xterm/addon-fit.mjs"),
    ("@xterm/addon-fit/LICENSE", "xterm/addon-fit.LICENSE"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let web = manifest.join("../../web");
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let own = web.join("console");
    println!("cargo:rerun-if-changed={}", own.display());
    walk(&own, "console", &mut files);
    let modules = web.join("node_modules");
    println!(
        "cargo:rerun-if-changed={}",
        web.join("package-lock.json").display()
    );
    let mut missing = Vec::new();
    for (from, to) in LIBRARIES {
        let path = modules.join(from);
        println!("cargo:rerun-if-changed={}", path.display());
        if !path.exists() {
            missing.push(*from);
            continue;
        }
        walk(&path, &format!("vendor/{to}"), &mut files);
    }
    if !missing.is_empty() {
        println!(
            "cargo:warning=the web console's libraries are not installed ({}): run `npm ci --prefix web` (scripts/setup.sh does), then build again",
            missing.join(", ")
        );
    }
    files.sort();
    let mut out = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    for (url, path) in &files {
        let path = path.canonicalize().unwrap();
        writeln!(
            out,
            "    ({url:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    out.push_str("];\n");
    let missing_list = format!("pub static MISSING: &[&str] = &{missing:?};\n");
    out.push_str(&missing_list);
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(dest, out).unwrap();
}

/// Every file under `path` (or `path` itself), with its URL under `prefix`. Source maps
/// and type declarations stay out: the browser does not need them.
fn walk(path: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) {
    if path.is_file() {
        out.push((prefix.to_string(), path.to_path_buf()));
        return;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".map") || name.ends_with(".d.ts") || name.starts_with('.') {
            continue;
        }
        walk(&entry.path(), &format!("{prefix}/{name}"), out);
    }
}
