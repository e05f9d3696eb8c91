//! Looks up paths inside a container's root filesystem as the container would see them:
//! absolute symlinks and `..` stay inside the root (openat2 with RESOLVE_IN_ROOT), so an
//! image can never make init read or trust a file of the guest itself.

use std::fs::File;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use cabin_base::confined::Links;
pub use cabin_base::confined::{Leaf, Root};

/// The container's root file system at `path`, its links kept inside it.
pub fn open(path: &Path) -> io::Result<Root> {
    Root::open(path, Links::InRoot)
}

/// Makes sure `path` exists inside the root, creating missing directories (and, for
/// `Leaf::File`, an empty file) as the container would see them, and returns it opened
/// with O_PATH: mounting on `/proc/self/fd/N` then lands exactly there, however the
/// image's symlinks point.
pub fn mount_point(root: &Root, path: &str, kind: Leaf) -> io::Result<File> {
    let path = Path::new(path);
    if !path.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(io::Error::other(format!(
            "{:?}: cannot mount over the container's root",
            path.display()
        )));
    }
    root.make_path(path, kind, 0o755)
}

#[derive(Debug, PartialEq, Eq)]
pub enum ExecLookup {
    Found(String),
    NotFound,
    NotExecutable(String),
}

/// Finds the program `arg0` would run, with execvp's rules: a name with a slash is taken
/// as it is (relative to `cwd`), a bare name is searched in `path_var`; a file without
/// any execute bit is remembered and reported only if nothing better turns up.
pub fn find_executable(root: &Root, arg0: &str, path_var: &str, cwd: &str) -> ExecLookup {
    let candidates: Vec<String> = if arg0.contains('/') {
        if arg0.starts_with('/') {
            vec![arg0.to_string()]
        } else {
            vec![format!("{}/{}", cwd.trim_end_matches('/'), arg0)]
        }
    } else {
        path_var
            .split(':')
            .map(|dir| {
                let dir = if dir.is_empty() { "." } else { dir };
                format!("{}/{}", dir.trim_end_matches('/'), arg0)
            })
            .collect()
    };
    let mut not_executable = None;
    for c in candidates {
        let Ok(meta) = root
            .open_in(Path::new(&c), libc::O_PATH)
            .and_then(|f| f.metadata())
        else {
            continue;
        };
        // As execve: a directory (or anything but a file) cannot run, permission
        // denied, like a file without an execute bit.
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            return ExecLookup::Found(c);
        }
        not_executable.get_or_insert(c);
    }
    match not_executable {
        Some(p) => ExecLookup::NotExecutable(p),
        None => ExecLookup::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempdir::TempDir {
        let t = tempdir::TempDir::new();
        let p = t.path();
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::create_dir_all(p.join("usr/bin")).unwrap();
        std::fs::write(p.join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(p.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(p.join("usr/bin/data"), "x").unwrap();
        std::fs::set_permissions(
            p.join("usr/bin/data"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        // An absolute symlink must resolve inside the root, not on the host.
        symlink("/bin/tool", p.join("usr/bin/link")).unwrap();
        symlink("/etc/passwd", p.join("usr/bin/escape")).unwrap();
        t
    }

    #[test]
    fn mount_points_are_created_inside_the_root_through_symlinks() {
        let t = tree();
        // An image's absolute symlink: inside the root it means <root>/elsewhere.
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        symlink("/elsewhere", t.path().join("data")).unwrap();
        symlink("/nowhere", t.path().join("dangling")).unwrap();
        let root = open(t.path()).unwrap();
        let f = mount_point(&root, "/data/sub/dir", Leaf::Dir).unwrap();
        assert!(f.metadata().unwrap().is_dir());
        assert!(t.path().join("elsewhere/sub/dir").is_dir());
        assert!(
            !std::path::Path::new("/elsewhere").exists(),
            "nothing created outside"
        );
        assert!(mount_point(&root, "/dangling/x", Leaf::Dir).is_err());
        let file = mount_point(&root, "/etc/hosts", Leaf::File).unwrap();
        assert!(file.metadata().unwrap().is_file());
        assert!(t.path().join("etc/hosts").is_file());
        assert!(mount_point(&root, "/bin/tool/x", Leaf::Dir).is_err());
        assert!(mount_point(&root, "/", Leaf::Dir).is_err());
    }

    mod tempdir {
        pub struct TempDir(std::path::PathBuf);
        impl TempDir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "cabin-init-test-{}-{:?}",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let _ = std::fs::remove_dir_all(&p);
                std::fs::create_dir_all(&p).unwrap();
                TempDir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for TempDir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn searches_path_and_follows_symlinks_inside_root() {
        let t = tree();
        let root = open(t.path()).unwrap();
        let path = "/usr/bin:/bin";
        assert_eq!(
            find_executable(&root, "tool", path, "/"),
            ExecLookup::Found("/bin/tool".into())
        );
        assert_eq!(
            find_executable(&root, "link", path, "/"),
            ExecLookup::Found("/usr/bin/link".into())
        );
        assert_eq!(
            find_executable(&root, "escape", path, "/"),
            ExecLookup::NotFound
        );
        assert_eq!(
            find_executable(&root, "nope", path, "/"),
            ExecLookup::NotFound
        );
        assert_eq!(
            find_executable(&root, "data", path, "/"),
            ExecLookup::NotExecutable("/usr/bin/data".into())
        );
        assert_eq!(
            find_executable(&root, "./tool", path, "/bin"),
            ExecLookup::Found("/bin/./tool".into())
        );
        assert_eq!(
            find_executable(&root, "/bin", path, "/"),
            ExecLookup::NotExecutable("/bin".into()),
            "a directory cannot run: permission denied (126), as docker says"
        );
    }

    #[test]
    fn reads_are_bounded_and_confined() {
        let t = tree();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/big"), vec![b'a'; 100]).unwrap();
        let root = open(t.path()).unwrap();
        assert!(root.read_text(Path::new("/etc/big"), 10).is_err());
        assert_eq!(
            root.read_text(Path::new("/etc/big"), 100).unwrap().len(),
            100
        );
        assert!(root
            .read_text(Path::new("/../../../../etc/hostname-not-there"), 10)
            .is_err());
    }
}
