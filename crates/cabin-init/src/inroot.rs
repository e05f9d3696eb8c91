//! Looks up paths inside a container's root filesystem as the container would see them:
//! absolute symlinks and `..` stay inside the root (openat2 with RESOLVE_IN_ROOT), so an
//! image can never make init read or trust a file of the guest itself.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const RESOLVE_IN_ROOT: u64 = 0x10;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

pub struct Root {
    dir: OwnedFd,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = File::open(path)?;
        Ok(Root { dir: dir.into() })
    }

    fn open_in(&self, path: &str, flags: i32) -> io::Result<File> {
        let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT,
        };
        // SAFETY: valid dirfd, NUL-terminated path and an open_how of the size we pass.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just gave us this descriptor.
        Ok(unsafe { File::from_raw_fd(fd as i32) })
    }

    /// Reads a small text file (at most `limit` bytes; more is an error, not a truncation).
    pub fn read_text(&self, path: &str, limit: u64) -> io::Result<String> {
        let file = self.open_in(path, libc::O_RDONLY)?;
        let mut text = String::new();
        file.take(limit + 1).read_to_string(&mut text)?;
        if text.len() as u64 > limit {
            return Err(io::Error::other(format!(
                "{path} is larger than {limit} bytes"
            )));
        }
        Ok(text)
    }

    fn stat(&self, path: &str) -> io::Result<std::fs::Metadata> {
        self.open_in(path, libc::O_PATH)?.metadata()
    }

    /// Makes sure `path` exists inside the root, creating missing directories (and, for
    /// `MountPoint::File`, an empty file) as the container would see them, and returns
    /// it opened with O_PATH: mounting on `/proc/self/fd/N` then lands exactly there,
    /// however the image's symlinks point.
    pub fn mount_point(&self, path: &str, kind: MountPoint) -> io::Result<File> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if parts.is_empty() {
            return Err(io::Error::other(format!(
                "{path:?}: cannot mount over the container's root"
            )));
        }
        let mut dir = self.open_in("/", libc::O_PATH | libc::O_DIRECTORY)?;
        for (i, name) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let sofar = format!("/{}", parts[..=i].join("/"));
            let want_dir = !last || kind == MountPoint::Dir;
            let flags = libc::O_PATH | if want_dir { libc::O_DIRECTORY } else { 0 };
            match self.open_in(&sofar, flags) {
                Ok(f) => dir = f,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // The name alone, relative to the directory resolved so far: nothing
                    // in it can lead elsewhere.
                    let c = CString::new(*name)
                        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                    // SAFETY: a directory descriptor and a NUL-terminated single name.
                    let r = unsafe {
                        if want_dir {
                            libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755)
                        } else {
                            let fd = libc::openat(
                                dir.as_raw_fd(),
                                c.as_ptr(),
                                libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                                0o644,
                            );
                            if fd >= 0 {
                                libc::close(fd);
                            }
                            fd.min(0)
                        }
                    };
                    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
                        let e = io::Error::last_os_error();
                        return Err(io::Error::new(e.kind(), format!("creating {sofar}: {e}")));
                    }
                    dir = self.open_in(&sofar, flags)?;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{sofar} exists in the container and is not a directory"),
                    ))
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("{sofar}: {e}"))),
            }
        }
        Ok(dir)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountPoint {
    Dir,
    File,
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
        let Ok(meta) = root.stat(&c) else { continue };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 != 0 {
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
        let root = Root::open(t.path()).unwrap();
        let f = root.mount_point("/data/sub/dir", MountPoint::Dir).unwrap();
        assert!(f.metadata().unwrap().is_dir());
        assert!(t.path().join("elsewhere/sub/dir").is_dir());
        assert!(
            !std::path::Path::new("/elsewhere").exists(),
            "nothing created outside"
        );
        assert!(root.mount_point("/dangling/x", MountPoint::Dir).is_err());
        let file = root.mount_point("/etc/hosts", MountPoint::File).unwrap();
        assert!(file.metadata().unwrap().is_file());
        assert!(t.path().join("etc/hosts").is_file());
        assert!(root.mount_point("/bin/tool/x", MountPoint::Dir).is_err());
        assert!(root.mount_point("/", MountPoint::Dir).is_err());
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
        let root = Root::open(t.path()).unwrap();
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
            ExecLookup::NotFound,
            "a directory is not a program"
        );
    }

    #[test]
    fn reads_are_bounded_and_confined() {
        let t = tree();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/big"), vec![b'a'; 100]).unwrap();
        let root = Root::open(t.path()).unwrap();
        assert!(root.read_text("/etc/big", 10).is_err());
        assert_eq!(root.read_text("/etc/big", 100).unwrap().len(), 100);
        assert!(root
            .read_text("/../../../../etc/hostname-not-there", 10)
            .is_err());
    }
}
