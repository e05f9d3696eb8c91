//! Paths inside a directory tree that is not ours to trust: an image being unpacked or
//! amended, a container's root file system. Every lookup is one `openat2(2)` relative to
//! the tree's root, so neither `..`, nor an absolute path, nor a symbolic link the tree
//! holds can lead to a file outside it, whatever is done to the tree meanwhile.
//!
//! Two policies for the tree's own symbolic links ([`Links`]):
//! - [`Links::InRoot`]: followed as the tree's own processes would see them, with `/`
//!   meaning the tree's root (`RESOLVE_IN_ROOT`): layers being applied, a container's
//!   files as its processes see them.
//! - [`Links::Refuse`]: a link anywhere on the way is an error (`RESOLVE_NO_SYMLINKS`):
//!   files cabin adds to an image, where a link would only be a trap.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;

/// The kernel's `struct open_how` (openat2(2)).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// What a symbolic link in the tree means on the way to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Followed, with absolute targets and `..` kept inside the root.
    InRoot,
    /// Not followed: a link on the way is an error.
    Refuse,
}

/// What [`Root::make_path`] makes at the end of a path that is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leaf {
    Dir,
    /// An empty regular file.
    File,
}

/// Whether `path` is absolute, below `/`, and climbs nowhere (no `..`): a path that
/// means the same wherever it is resolved from its root.
pub fn plain_absolute(path: &Path) -> bool {
    let mut parts = path.components();
    parts.next() == Some(Component::RootDir)
        && path.components().count() > 1
        && parts.all(|c| matches!(c, Component::Normal(_)))
}

/// A name or path as a C string; a NUL byte in it is an error, never a panic.
pub fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{:?}: a NUL byte in a path", String::from_utf8_lossy(bytes)),
        )
    })
}

/// A negative return of a libc call as the error it set.
pub fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// An open directory tree.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    links: Links,
}

/// `rel` as the path openat2 resolves below the root: leading `/` dropped ("." for the
/// root itself).
fn relative(rel: &Path) -> io::Result<CString> {
    let bytes = rel.as_os_str().as_bytes();
    let mut start = 0;
    while bytes.get(start) == Some(&b'/') {
        start += 1;
    }
    cstr(if start == bytes.len() {
        b"."
    } else {
        &bytes[start..]
    })
}

impl Root {
    /// Opens the tree at `path` (the caller's own path: followed if it is a link).
    pub fn open(path: &Path, links: Links) -> io::Result<Root> {
        let dir = File::open(path)?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ));
        }
        Ok(Root {
            dir: dir.into(),
            links,
        })
    }

    /// The tree whose root directory `dir` is.
    pub fn from_fd(dir: OwnedFd, links: Links) -> Root {
        Root { dir, links }
    }

    fn resolve_flags(&self) -> u64 {
        match self.links {
            Links::InRoot => RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
            Links::Refuse => RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
        }
    }

    /// Opens `rel` (relative to the root; a leading `/` means the root) with open(2)'s
    /// `flags`, resolved inside the tree.
    pub fn open_in(&self, rel: &Path, flags: i32) -> io::Result<File> {
        let c = relative(rel)?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: self.resolve_flags(),
        };
        // SAFETY: a directory descriptor we hold, a NUL-terminated path and an open_how
        // of exactly the size passed.
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
        // SAFETY: the kernel just gave us this descriptor, and nothing else owns it.
        Ok(unsafe { File::from_raw_fd(fd as RawFd) })
    }

    /// Reads a small text file (at most `limit` bytes; more is an error, not a
    /// truncation).
    pub fn read_text(&self, rel: &Path, limit: u64) -> io::Result<String> {
        let file = self.open_in(rel, libc::O_RDONLY)?;
        let mut text = String::new();
        file.take(limit + 1).read_to_string(&mut text)?;
        if text.len() as u64 > limit {
            return Err(io::Error::other(format!(
                "{} is larger than {limit} bytes",
                rel.display()
            )));
        }
        Ok(text)
    }

    /// Makes sure `rel` exists in the tree, creating the directories missing on the way
    /// (with `mode`) and, at its end, `leaf`; returns it opened with `O_PATH`, so that
    /// what is done next (a mount on `/proc/self/fd/N`, an `*at` call) lands exactly
    /// there. Each missing name is made relative to the directory resolved just
    /// before it, so nothing in the name can lead elsewhere. Something on the way that
    /// is not a directory (or, with [`Links::Refuse`], a link) is an error of kind
    /// `NotADirectory` that names it.
    pub fn make_path(&self, rel: &Path, leaf: Leaf, mode: u32) -> io::Result<File> {
        let parts: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p),
                Component::ParentDir => Some(OsStr::new("..")),
                _ => None,
            })
            .collect();
        let mut dir = self.open_in(Path::new(""), libc::O_PATH | libc::O_DIRECTORY)?;
        let mut sofar = PathBuf::from("/");
        for (i, name) in parts.iter().enumerate() {
            sofar.push(name);
            let want_dir = i + 1 < parts.len() || leaf == Leaf::Dir;
            let flags = libc::O_PATH | if want_dir { libc::O_DIRECTORY } else { 0 };
            let not_a_dir = |e: io::Error| {
                if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) {
                    io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{} is not a directory", sofar.display()),
                    )
                } else {
                    io::Error::new(e.kind(), format!("{}: {e}", sofar.display()))
                }
            };
            match self.open_in(&sofar, flags) {
                Ok(f) => dir = f,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let c = cstr(name.as_bytes())?;
                    let made = if want_dir {
                        // SAFETY: a directory descriptor and a NUL-terminated single name.
                        check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) })
                    } else {
                        create_file_at(dir.as_fd(), &c, 0o644).map(drop)
                    };
                    match made {
                        Ok(()) if want_dir => {
                            // As asked, whatever the umask took away.
                            let d = self.open_in(&sofar, libc::O_RDONLY | libc::O_DIRECTORY)?;
                            std::fs::set_permissions(
                                format!("/proc/self/fd/{}", d.as_raw_fd()),
                                std::os::unix::fs::PermissionsExt::from_mode(mode),
                            )?;
                        }
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => {
                            return Err(io::Error::new(
                                e.kind(),
                                format!("creating {}: {e}", sofar.display()),
                            ))
                        }
                    }
                    dir = self.open_in(&sofar, flags).map_err(not_a_dir)?;
                }
                Err(e) => return Err(not_a_dir(e)),
            }
        }
        Ok(dir)
    }

    /// The directory that holds `rel` (made if missing, see [`Root::make_path`]) and
    /// `rel`'s last name.
    fn parent_of(&self, rel: &Path) -> io::Result<(File, CString)> {
        let name = rel.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: not a file's path", rel.display()),
            )
        })?;
        let parent = rel.parent().unwrap_or(Path::new(""));
        let dir = self.make_path(parent, Leaf::Dir, 0o755)?;
        Ok((dir, cstr(name.as_bytes())?))
    }

    /// Puts a file holding `data` (with `mode`) at `rel`, in place of whatever was there
    /// (a link there is removed, never written through).
    pub fn replace_file(&self, rel: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        remove_at(dir.as_fd(), &name)?;
        let mut f = create_file_at(dir.as_fd(), &name, mode)?;
        f.write_all(data)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
    }

    /// Puts a symbolic link to `target` at `rel`, in place of whatever was there.
    pub fn replace_with_symlink(&self, rel: &Path, target: &str) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        remove_at(dir.as_fd(), &name)?;
        let t = cstr(target.as_bytes())?;
        // SAFETY: NUL-terminated strings and a directory descriptor we hold.
        check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
    }

    /// Gives `rel` (resolved inside the tree, never through a final link) to `uid` and
    /// `gid`.
    pub fn chown(&self, rel: &Path, uid: u32, gid: u32) -> io::Result<()> {
        let f = self.open_in(rel, libc::O_PATH | libc::O_NOFOLLOW)?;
        // SAFETY: a descriptor we hold, an empty NUL-terminated path with AT_EMPTY_PATH
        // (the descriptor itself is changed).
        check(unsafe {
            libc::fchownat(
                f.as_raw_fd(),
                c"".as_ptr(),
                uid,
                gid,
                libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            )
        })
    }

    /// Removes whatever is at `rel` (a directory with its contents); nothing there is
    /// no error.
    pub fn remove(&self, rel: &Path) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        remove_at(dir.as_fd(), &name)
    }
}

impl AsFd for Root {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// Creates the regular file `name` in `dir` (it must not exist; a link there fails).
fn create_file_at(dir: BorrowedFd<'_>, name: &CString, mode: u32) -> io::Result<File> {
    // SAFETY: a directory descriptor, a NUL-terminated single name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, owned by nothing else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Removes `name` in `dir` whatever it is (a directory with everything in it, links not
/// followed); a missing name is no error.
pub fn remove_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<()> {
    // SAFETY: a zeroed stat is a valid buffer for fstatat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat of a single name, without following a final link, into our buffer.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(())
        } else {
            Err(e)
        };
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        // SAFETY: opening a directory below one we hold, not following a link.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned by nothing else.
        let sub = unsafe { OwnedFd::from_raw_fd(fd) };
        clear_dir(sub.as_fd(), &|_| true)?;
        // SAFETY: removing an (now empty) directory entry of a directory we hold.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
    } else {
        // SAFETY: removing a non-directory entry of a directory we hold.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) })
    }
}

/// Removes everything in `dir` whose name `remove_if` accepts.
pub fn clear_dir(dir: BorrowedFd<'_>, remove_if: &dyn Fn(&OsStr) -> bool) -> io::Result<()> {
    let names: Vec<CString> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok())
        .filter(|e| remove_if(&e.file_name()))
        .map(|e| cstr(e.file_name().as_bytes()))
        .collect::<io::Result<_>>()?;
    for n in names {
        remove_at(dir, &n)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        t
    }

    #[test]
    fn plain_absolute_paths_climb_nowhere() {
        for good in ["/proc/sys", "/a/./b", "/run/cabin/pod/x/"] {
            assert!(plain_absolute(Path::new(good)), "{good}");
        }
        for bad in ["/", "proc/sys", "/a/../b", "/..", ""] {
            assert!(!plain_absolute(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn links_in_the_tree_stay_inside_it() {
        let t = tree();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host").unwrap();
        symlink(outside.path().join("secret"), t.path().join("abs")).unwrap();
        symlink("../../../../../../etc/passwd", t.path().join("up")).unwrap();
        let root = Root::open(t.path(), Links::InRoot).unwrap();
        // An absolute link means the tree's own path, which does not exist here.
        assert!(root.read_text(Path::new("/abs"), 100).is_err());
        // `..` stops at the root: the tree's passwd, not the host's.
        assert_eq!(
            root.read_text(Path::new("/up"), 100).unwrap(),
            "root:x:0:0::/root:/bin/sh\n"
        );
        assert!(
            root.read_text(Path::new("etc/passwd"), 4).is_err(),
            "bounded"
        );
        let refusing = Root::open(t.path(), Links::Refuse).unwrap();
        assert!(refusing.read_text(Path::new("up"), 100).is_err());
        assert!(refusing.read_text(Path::new("../x"), 100).is_err());
    }

    #[test]
    fn paths_are_made_inside_the_root_through_its_links() {
        let t = tree();
        std::fs::create_dir(t.path().join("elsewhere")).unwrap();
        symlink("/elsewhere", t.path().join("data")).unwrap();
        symlink("/nowhere", t.path().join("dangling")).unwrap();
        std::fs::write(t.path().join("file"), "").unwrap();
        let root = Root::open(t.path(), Links::InRoot).unwrap();
        let d = root
            .make_path(Path::new("/data/sub/dir"), Leaf::Dir, 0o700)
            .unwrap();
        assert!(d.metadata().unwrap().is_dir());
        let made = t.path().join("elsewhere/sub/dir");
        assert!(made.is_dir());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&made).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(root
            .make_path(Path::new("/dangling/x"), Leaf::Dir, 0o755)
            .is_err());
        let f = root
            .make_path(Path::new("/etc/hosts"), Leaf::File, 0o755)
            .unwrap();
        assert!(f.metadata().unwrap().is_file());
        let e = root
            .make_path(Path::new("/file/x"), Leaf::Dir, 0o755)
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
        assert_eq!(e.to_string(), "/file is not a directory");
    }

    #[test]
    fn with_links_refused_a_link_on_the_way_is_an_error_and_one_in_place_is_replaced() {
        let t = tree();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), t.path().join("lib")).unwrap();
        let root = Root::open(t.path(), Links::Refuse).unwrap();
        let e = root
            .replace_file(Path::new("lib/x"), b"x", 0o644)
            .unwrap_err();
        assert_eq!(e.to_string(), "/lib is not a directory");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        symlink(outside.path().join("victim"), t.path().join("etc/hostname")).unwrap();
        root.replace_file(Path::new("etc/hostname"), b"web\n", 0o600)
            .unwrap();
        assert!(!outside.path().join("victim").exists());
        assert_eq!(
            std::fs::read(t.path().join("etc/hostname")).unwrap(),
            b"web\n"
        );
        root.replace_with_symlink(Path::new("etc/resolv.conf"), "/proc/net/pnp")
            .unwrap();
        assert_eq!(
            std::fs::read_link(t.path().join("etc/resolv.conf")).unwrap(),
            Path::new("/proc/net/pnp")
        );
        std::fs::create_dir_all(t.path().join("etc/ssh/sub")).unwrap();
        root.remove(Path::new("etc/ssh")).unwrap();
        assert!(!t.path().join("etc/ssh").exists());
        root.remove(Path::new("etc/never")).unwrap();
        assert!(cstr(b"a\0b").is_err());
    }
}
