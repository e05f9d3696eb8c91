//! VM images to and from a registry in the tests: a fresh registry and data directory,
//! `cabin vm pull` against an address, and what a pull leaves or reports.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::{start_registry, stdout, vm_in, Registry};

/// The organization the tests push to and pull from.
pub const ORG: &str = "cabin";

/// A temporary directory with a registry (`reg/`) and a cabin data directory path
/// (`data/`).
pub fn fresh() -> (tempfile::TempDir, Registry, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let reg = start_registry(&t.path().join("reg"), |_| String::new());
    let data = t.path().join("data");
    (t, reg, data)
}

/// `cabin vm pull IMAGE NAME` from the registry at `addr` (a registry or a proxy).
pub fn pull(data: &Path, addr: &str, image: &str, name: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "pull",
        image,
        name,
        "--registry",
        addr,
        "--organization",
        ORG,
    ];
    args.extend_from_slice(extra);
    vm_in(data, &args)
}

/// `vm push NAME IMAGE` to `addr` in 1 MiB chunks, one at a time: a push slow and
/// fine-grained enough to be interrupted at a chosen point.
pub fn one_by_one_push_args<'a>(name: &'a str, image: &'a str, addr: &'a str) -> Vec<&'a str> {
    vec![
        "push",
        name,
        image,
        "--registry",
        addr,
        "--organization",
        ORG,
        "--chunk-size-mb",
        "1",
        "--parallel",
        "1",
    ]
}

/// Hidden directories (staging, pulls) left in a location.
pub fn hidden(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// The value of `key=` in a `Push complete`/`Pull complete` line.
pub fn field(line: &str, key: &str) -> String {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        .to_string()
}

/// The `Pull complete` line of a pull that must have succeeded.
pub fn pulled_ok(o: &Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), super::stderr(o));
    let out = stdout(o);
    out.lines()
        .find(|l| l.contains("Pull complete"))
        .unwrap_or_else(|| panic!("no Pull complete in {out}"))
        .to_string()
}
