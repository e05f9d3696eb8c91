//! What the fuzz targets share: a scratch directory per process, emptied between
//! inputs, with a directory beside the one under test that nothing may touch, and the
//! input format of targets that take several parts.

use std::fs;
use std::path::{Path, PathBuf};

/// Parts of one input are separated by this line (it keeps the seeds readable).
pub const SEPARATOR: &[u8] = b"\n@@@@\n";

/// Splits an input into its parts (at most `n`; the last part keeps any separators).
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + SEPARATOR.len()..];
            }
            None => break,
        }
    }
    out.push(rest);
    out
}

/// A scratch directory: `work` is where a target writes, `outside` is beside it and
/// holds one file; both are recreated for each input.
pub struct Scratch {
    pub base: PathBuf,
    pub work: PathBuf,
    pub outside: PathBuf,
}

const SENTINEL: &str = "untouched";

impl Scratch {
    /// The scratch directory of this process for `target`, under the system's temp
    /// directory (`TMPDIR`).
    pub fn new(target: &str) -> Scratch {
        let base = std::env::temp_dir().join(format!("cabin-fuzz-{target}-{}", std::process::id()));
        Scratch {
            work: base.join("work"),
            outside: base.join("outside"),
            base,
        }
    }

    /// The scratch directory of this process's one target (each target is a binary of
    /// its own), made at the first call.
    pub fn shared(target: &str) -> &'static Scratch {
        static S: std::sync::OnceLock<Scratch> = std::sync::OnceLock::new();
        S.get_or_init(|| Scratch::new(target))
    }

    /// Empties the scratch directory and makes `work` and `outside` again.
    pub fn reset(&self) {
        make_writable(&self.base);
        let _ = fs::remove_dir_all(&self.base);
        fs::create_dir_all(&self.work).expect("scratch directory");
        fs::create_dir_all(&self.outside).expect("scratch directory");
        fs::write(self.outside.join(SENTINEL), SENTINEL).expect("sentinel");
    }

    /// A path in the scratch directory beside `work` (for an input file).
    pub fn file(&self, name: &str) -> PathBuf {
        self.base.join(name)
    }

    /// Panics (a finding) when the code under test wrote anywhere but `work`: a new
    /// name beside it, or anything in `outside`.
    pub fn assert_confined(&self, inputs: &[&str]) {
        for e in fs::read_dir(&self.base).expect("scratch directory") {
            let name = e.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                name == "work" || name == "outside" || inputs.contains(&name.as_ref()),
                "escaped: {name} was written beside the destination"
            );
        }
        let inside: Vec<_> = fs::read_dir(&self.outside)
            .expect("outside directory")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            inside,
            vec![std::ffi::OsString::from(SENTINEL)],
            "escaped into outside/"
        );
        assert_eq!(
            fs::read(self.outside.join(SENTINEL)).ok().as_deref(),
            Some(SENTINEL.as_bytes()),
            "escaped: outside/{SENTINEL} was changed"
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        make_writable(&self.base);
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// Gives the owner write and search permission on every directory under `dir`, so an
/// extracted read-only directory can be removed when the fuzzer does not run as root.
fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(
        dir,
        fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            make_writable(&e.path());
        }
    }
}
