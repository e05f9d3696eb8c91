//! Applies OCI image layers (tar, optionally gzip-compressed) to a directory, with the
//! image spec's semantics: whiteouts, opaque directories, hard links, symlinks, device
//! nodes, FIFOs, ownership, permissions (setuid included), timestamps, xattrs.
//!
//! Layers are hostile input. Every entry is created relative to a directory descriptor
//! opened with `openat2(RESOLVE_IN_ROOT)`, so `..`, absolute paths and symlinks planted by
//! earlier entries all resolve inside the root; the final component is never followed.
//! Sizes and entry counts are bounded, which stops decompression bombs.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use cabin_base::confined::{check, clear_dir, cstr, remove_at, Leaf, Links, Root};

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {0:?} tries to leave the image's root")]
    Escape(String),
    #[error("layer is not a valid tar archive: {0}")]
    BadArchive(String),
    #[error("layer unpacks to more than {0} bytes (a decompression bomb?)")]
    TooBig(u64),
    #[error("layer has more than {0} entries")]
    TooManyEntries(u64),
    #[error("layer entry {path:?}: {source}")]
    Entry { path: String, source: io::Error },
    #[error(
        "the layer's content does not match the image's diff_id {expected} (it hashes to {actual})"
    )]
    DiffIdMismatch { expected: String, actual: String },
    #[error("reading the layer: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 64 << 30,
            max_entries: 4_000_000,
        }
    }
}

/// The entry's path as components relative to the root, or an escape error. Leading "/"
/// and "./" are dropped; ".." is refused outright rather than clamped.
fn clean_path(raw: &Path) -> Result<PathBuf, LayerError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::Escape(raw.display().to_string()))
            }
        }
    }
    Ok(out)
}

struct Applier {
    root: Root,
    as_root: bool,
    /// Paths this layer created: an opaque marker hides lower layers only.
    created: HashSet<PathBuf>,
}

impl Applier {
    /// The directory that holds `rel`, opened: missing ones are created (0755), each
    /// one resolved inside the root.
    fn parent_dir(&self, rel: &Path) -> io::Result<OwnedFd> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.root
            .make_path(parent, Leaf::Dir, 0o755)
            .map(OwnedFd::from)
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), LayerError> {
        let raw_path = entry
            .path()
            .map_err(|e| LayerError::BadArchive(e.to_string()))?
            .into_owned();
        let rel = clean_path(&raw_path)?;
        let shown = raw_path.display().to_string();
        let err = |source: io::Error| LayerError::Entry {
            path: shown.clone(),
            source,
        };
        let Some(file_name) = rel.file_name().map(|n| n.to_os_string()) else {
            return Ok(()); // the root itself
        };
        let parent = self.parent_dir(&rel).map_err(err)?;
        let name_bytes = file_name.as_bytes();

        // Whiteouts.
        if name_bytes == b".wh..wh..opq" {
            let dir_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let created = &self.created;
            clear_dir(parent.as_fd(), &|n| !created.contains(&dir_rel.join(n))).map_err(err)?;
            return Ok(());
        }
        if let Some(hidden) = name_bytes.strip_prefix(b".wh.") {
            let hidden = cstr(hidden).map_err(err)?;
            remove_at(parent.as_fd(), &hidden).map_err(err)?;
            return Ok(());
        }

        let name = cstr(name_bytes).map_err(err)?;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let pfd = parent.as_raw_fd();
        // Whatever is there goes, except a directory that stays a directory.
        // SAFETY: a zeroed stat is a valid buffer for fstatat to fill.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstatat without following the final symlink.
        let exists =
            unsafe { libc::fstatat(pfd, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0;
        let existing_dir = exists && st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if exists && !(kind.is_dir() && existing_dir) {
            remove_at(parent.as_fd(), &name).map_err(err)?;
        }
        // SAFETY: the calls below are *at calls relative to the parent directory we hold,
        // on the final component only (a NUL-terminated name), never following it, into
        // buffers we own.
        unsafe {
            match kind {
                tar::EntryType::Directory => {
                    if !existing_dir {
                        check(libc::mkdirat(pfd, name.as_ptr(), 0o700)).map_err(err)?;
                    }
                }
                tar::EntryType::Regular
                | tar::EntryType::Continuous
                | tar::EntryType::GNUSparse => {
                    let fd = libc::openat(
                        pfd,
                        name.as_ptr(),
                        libc::O_WRONLY
                            | libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_NOFOLLOW
                            | libc::O_CLOEXEC,
                        0o600,
                    );
                    if fd < 0 {
                        return Err(err(io::Error::last_os_error()));
                    }
                    let mut f = File::from_raw_fd(fd);
                    io::copy(entry, &mut f).map_err(err)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| err(io::Error::other("symlink without a target")))?;
                    let t = cstr(&target).map_err(err)?;
                    check(libc::symlinkat(t.as_ptr(), pfd, name.as_ptr())).map_err(err)?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|e| LayerError::BadArchive(e.to_string()))?
                        .ok_or_else(|| err(io::Error::other("hard link without a target")))?;
                    let target_rel = clean_path(&target)?;
                    // The target is resolved inside the root and must not be a directory.
                    let tfd = self
                        .root
                        .open_in(&target_rel, libc::O_PATH | libc::O_NOFOLLOW)
                        .map_err(err)?;
                    let proc_path = cstr(format!("/proc/self/fd/{}", tfd.as_raw_fd()).as_bytes())
                        .map_err(err)?;
                    check(libc::linkat(
                        libc::AT_FDCWD,
                        proc_path.as_ptr(),
                        pfd,
                        name.as_ptr(),
                        libc::AT_SYMLINK_FOLLOW,
                    ))
                    .map_err(err)?;
                    self.created.insert(rel);
                    return Ok(()); // a hard link shares its target's metadata
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let fmt = match kind {
                        tar::EntryType::Char => libc::S_IFCHR,
                        tar::EntryType::Block => libc::S_IFBLK,
                        _ => libc::S_IFIFO,
                    };
                    let dev = libc::makedev(
                        header.device_major().ok().flatten().unwrap_or(0),
                        header.device_minor().ok().flatten().unwrap_or(0),
                    );
                    let r = libc::mknodat(pfd, name.as_ptr(), fmt | 0o600, dev);
                    if r < 0 {
                        let e = io::Error::last_os_error();
                        // Without root, device nodes cannot be made; the container's
                        // /dev is cabin's own anyway.
                        if e.raw_os_error() == Some(libc::EPERM) && fmt != libc::S_IFIFO {
                            return Ok(());
                        }
                        return Err(err(e));
                    }
                }
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {
                    return Ok(());
                }
                other => {
                    return Err(err(io::Error::other(format!(
                        "unsupported entry type {other:?}"
                    ))));
                }
            }
            // Metadata: owner first (chown clears setuid bits), then mode, xattrs, times.
            let is_link = kind == tar::EntryType::Symlink;
            if self.as_root {
                let uid = header.uid().unwrap_or(0) as libc::uid_t;
                let gid = header.gid().unwrap_or(0) as libc::gid_t;
                check(libc::fchownat(
                    pfd,
                    name.as_ptr(),
                    uid,
                    gid,
                    libc::AT_SYMLINK_NOFOLLOW,
                ))
                .map_err(err)?;
            }
            if !is_link {
                check(libc::fchmodat(pfd, name.as_ptr(), mode as libc::mode_t, 0)).map_err(err)?;
                if let Ok(Some(exts)) = entry.pax_extensions() {
                    for ext in exts.flatten() {
                        let Some(attr) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                            continue;
                        };
                        let fd = libc::openat(
                            pfd,
                            name.as_ptr(),
                            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
                        );
                        if fd < 0 {
                            continue;
                        }
                        let f = OwnedFd::from_raw_fd(fd);
                        let a = cstr(attr).map_err(err)?;
                        let v = ext.value_bytes();
                        if libc::fsetxattr(f.as_raw_fd(), a.as_ptr(), v.as_ptr().cast(), v.len(), 0)
                            < 0
                            && self.as_root
                        {
                            return Err(err(io::Error::last_os_error()));
                        }
                    }
                }
            }
            let mtime = header.mtime().unwrap_or(0) as libc::time_t;
            let times = [
                libc::timespec {
                    tv_sec: mtime,
                    tv_nsec: 0,
                },
                libc::timespec {
                    tv_sec: mtime,
                    tv_nsec: 0,
                },
            ];
            libc::utimensat(
                pfd,
                name.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            );
        }
        self.created.insert(rel);
        Ok(())
    }
}

/// Applies one layer file (tar, gzip- or zstd-compressed tar: told apart by content, not
/// by the media type a registry claims) on top of `root`.
pub fn apply_layer(root: &Path, layer: &Path, limits: Limits) -> Result<(), LayerError> {
    apply_layer_checked(root, layer, limits, None).map(|_| ())
}

/// As [`apply_layer`], and the uncompressed content must hash to `diff_id` (the image
/// config's record of it). Returns the uncompressed size.
pub fn apply_layer_checked(
    root: &Path,
    layer: &Path,
    limits: Limits,
    diff_id: Option<&str>,
) -> Result<u64, LayerError> {
    let mut f = BufReader::new(File::open(layer)?);
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        let got = f.read(&mut magic[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let head = std::io::Cursor::new(magic[..n].to_vec()).chain(f);
    let reader: Box<dyn Read> = if magic[..n].starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(head))
    } else if magic[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
        Box::new(zstd::stream::read::Decoder::new(head)?)
    } else {
        Box::new(head)
    };
    let (actual, bytes) = apply_tar(root, reader, limits)?;
    match diff_id {
        Some(expected) if expected != actual => Err(LayerError::DiffIdMismatch {
            expected: expected.to_string(),
            actual,
        }),
        _ => Ok(bytes),
    }
}

/// Counts (against the size limit) and hashes (for the diff_id) what the tar reader reads.
struct Counting<R> {
    inner: R,
    count: u64,
    limit: u64,
    hasher: sha2::Sha256,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other("size limit"));
        }
        Ok(n)
    }
}

/// Applies a tar stream; returns the digest of everything read ("sha256:<hex>") and its
/// size.
pub fn apply_tar(
    root: &Path,
    reader: impl Read,
    limits: Limits,
) -> Result<(String, u64), LayerError> {
    let mut applier = Applier {
        root: Root::open(root, Links::InRoot)?,
        // SAFETY: geteuid has no side effects.
        as_root: unsafe { libc::geteuid() } == 0,
        created: HashSet::new(),
    };
    let counting = Counting {
        inner: reader,
        count: 0,
        limit: limits.max_bytes,
        hasher: sha2::Sha256::default(),
    };
    let mut archive = tar::Archive::new(counting);
    let entries = archive
        .entries()
        .map_err(|e| LayerError::BadArchive(e.to_string()))?;
    let mut n = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            if e.to_string().contains("size limit") {
                LayerError::TooBig(limits.max_bytes)
            } else {
                LayerError::BadArchive(e.to_string())
            }
        })?;
        n += 1;
        if n > limits.max_entries {
            return Err(LayerError::TooManyEntries(limits.max_entries));
        }
        match applier.apply_entry(&mut entry) {
            Err(LayerError::Entry { source, .. }) if source.to_string().contains("size limit") => {
                return Err(LayerError::TooBig(limits.max_bytes))
            }
            r => r?,
        }
    }
    // The end-of-archive padding belongs to the hashed content too.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| {
        if e.to_string().contains("size limit") {
            LayerError::TooBig(limits.max_bytes)
        } else {
            LayerError::Io(e)
        }
    })?;
    use sha2::Digest;
    let size = rest.count;
    Ok((
        format!("sha256:{}", crate::store::hex(&rest.hasher.finalize())),
        size,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    /// Builds a tar in memory. Names go into the header verbatim, so hostile ones can be
    /// written (tar::Builder's own path setters refuse them).
    struct Tar(tar::Builder<Vec<u8>>);

    impl Tar {
        fn new() -> Self {
            Tar(tar::Builder::new(Vec::new()))
        }
        fn header(name: &str, kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_size(size);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_600_000_000);
            h
        }
        fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
            let mut h = Self::header(name, tar::EntryType::Regular, mode, data.len() as u64);
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        fn dir(mut self, name: &str) -> Self {
            let mut h = Self::header(name, tar::EntryType::Directory, 0o755, 0);
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(name, kind, 0o777, 0);
            h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn special(mut self, name: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
            let mut h = Self::header(name, kind, 0o666, 0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            self.0.append(&h, io::empty()).unwrap();
            self
        }
        fn bytes(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
    }

    fn apply(root: &Path, tar: Vec<u8>) -> Result<(), LayerError> {
        apply_tar(root, io::Cursor::new(tar), Limits::default()).map(|_| ())
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn files_links_and_metadata_are_applied() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        let tar = Tar::new()
            .dir("./etc/")
            .file("./etc/hosts", 0o644, b"127.0.0.1 localhost\n")
            .file("bin/su", 0o4755, b"#!/bin/sh\n") // parent created on the fly
            .link(tar::EntryType::Symlink, "bin/sh", "/bin/su")
            .link(tar::EntryType::Link, "bin/su-again", "bin/su")
            .special("run/fifo", tar::EntryType::Fifo, 0, 0)
            .special("dev/null", tar::EntryType::Char, 1, 3)
            .bytes();
        apply(r, tar).unwrap();
        assert_eq!(
            std::fs::read(r.join("etc/hosts")).unwrap(),
            b"127.0.0.1 localhost\n"
        );
        let su = std::fs::metadata(r.join("bin/su")).unwrap();
        assert_eq!(su.permissions().mode() & 0o7777, 0o4755, "setuid survives");
        assert_eq!(su.mtime(), 1_600_000_000);
        assert_eq!(su.nlink(), 2, "hard link shares the inode");
        assert_eq!(
            std::fs::read_link(r.join("bin/sh")).unwrap(),
            Path::new("/bin/su")
        );
        assert!(std::fs::metadata(r.join("run/fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        if is_root() {
            assert!(std::fs::metadata(r.join("dev/null"))
                .unwrap()
                .file_type()
                .is_char_device());
        }
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_lower_layers() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        apply(
            r,
            Tar::new()
                .file("a/x", 0o644, b"x")
                .file("a/y", 0o644, b"y")
                .file("b/deep/file", 0o644, b"b")
                .file("d/old", 0o644, b"old")
                .bytes(),
        )
        .unwrap();
        apply(
            r,
            Tar::new()
                .file("a/.wh.x", 0o644, b"")
                .file(".wh.b", 0o644, b"")
                .file("d/new", 0o644, b"new")
                .file("d/.wh..wh..opq", 0o644, b"")
                .bytes(),
        )
        .unwrap();
        assert!(!r.join("a/x").exists());
        assert!(r.join("a/y").exists());
        assert!(
            !r.join("a/.wh.x").exists(),
            "whiteout markers are not files"
        );
        assert!(
            !r.join("b").exists(),
            "a whited-out directory goes with its contents"
        );
        assert!(!r.join("d/old").exists(), "opaque hides the lower layer");
        assert!(
            r.join("d/new").exists(),
            "but not what the same layer added"
        );
    }

    #[test]
    fn a_file_replaces_a_directory_and_vice_versa() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        apply(
            r,
            Tar::new()
                .file("p/q", 0o644, b"1")
                .file("f", 0o644, b"2")
                .bytes(),
        )
        .unwrap();
        apply(
            r,
            Tar::new().file("p", 0o644, b"now a file").dir("f").bytes(),
        )
        .unwrap();
        assert_eq!(std::fs::read(r.join("p")).unwrap(), b"now a file");
        assert!(r.join("f").is_dir());
    }

    #[test]
    fn paths_that_leave_the_root_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let e = apply(&root, Tar::new().file("../evil", 0o644, b"x").bytes()).unwrap_err();
        assert!(matches!(e, LayerError::Escape(_)), "{e}");
        assert!(!t.path().join("evil").exists());
        let e = apply(&root, Tar::new().file("a/../../evil", 0o644, b"x").bytes()).unwrap_err();
        assert!(matches!(e, LayerError::Escape(_)), "{e}");
        let e = apply(
            &root,
            Tar::new()
                .link(tar::EntryType::Link, "h", "../outside")
                .bytes(),
        )
        .unwrap_err();
        assert!(matches!(e, LayerError::Escape(_)), "{e}");
    }

    #[test]
    fn symlinks_cannot_carry_writes_or_links_outside() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "host data").unwrap();
        let out = outside.to_str().unwrap().trim_start_matches('/');
        // An absolute symlink to the host directory, then a file written through it: the
        // symlink resolves inside the root, where that directory does not exist, so the
        // entry fails; it never reaches the host directory.
        let tar = Tar::new()
            .link(tar::EntryType::Symlink, "esc", outside.to_str().unwrap())
            .file("esc/pwned", 0o644, b"x")
            .bytes();
        let r = apply(&root, tar);
        assert!(
            !outside.join("pwned").exists(),
            "nothing written outside the root"
        );
        if r.is_ok() {
            assert!(root.join(out).join("pwned").exists());
        }
        // The same once the directory exists inside the root: the write lands there.
        std::fs::create_dir_all(root.join(out)).unwrap();
        let tar = Tar::new()
            .link(tar::EntryType::Symlink, "esc2", outside.to_str().unwrap())
            .file("esc2/pwned", 0o644, b"x")
            .link(tar::EntryType::Symlink, "up", "../../../../..")
            .file("up/pwned2", 0o644, b"y")
            .bytes();
        apply(&root, tar).unwrap();
        assert!(!outside.join("pwned").exists());
        assert!(
            root.join(out).join("pwned").exists(),
            "the write landed inside the root"
        );
        assert!(
            root.join("pwned2").exists(),
            "'..' through a symlink stops at the root"
        );
        // A hard link through a symlink to a host file is not a link to the host file.
        let tar = Tar::new()
            .link(
                tar::EntryType::Symlink,
                "hostdir",
                outside.to_str().unwrap(),
            )
            .link(tar::EntryType::Link, "stolen", "hostdir/secret")
            .bytes();
        let e = apply(&root, tar).unwrap_err();
        assert!(matches!(e, LayerError::Entry { .. }), "{e}");
        assert!(!root.join("stolen").exists());
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host data"
        );
        // A file entry never follows a symlink in its own name.
        let tar = Tar::new()
            .link(
                tar::EntryType::Symlink,
                "victim",
                outside.join("secret").to_str().unwrap(),
            )
            .file("victim", 0o644, b"overwritten")
            .bytes();
        apply(&root, tar).unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("secret")).unwrap(),
            "host data"
        );
        assert_eq!(std::fs::read(root.join("victim")).unwrap(), b"overwritten");
    }

    #[test]
    fn pax_xattrs_are_applied() {
        let t = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.cabin", b"kept".as_slice())])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("with-xattr").unwrap();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        apply(&root, b.into_inner().unwrap()).unwrap();
        let path = std::ffi::CString::new(root.join("with-xattr").as_os_str().as_bytes()).unwrap();
        let mut buf = [0u8; 16];
        // SAFETY: getxattr into our buffer.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                c"user.cabin".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(n, 4, "{}", io::Error::last_os_error());
        assert_eq!(&buf[..4], b"kept");
    }

    #[test]
    fn gzip_and_zstd_layers_are_recognised_by_content() {
        let t = tempfile::tempdir().unwrap();
        let tar = Tar::new().file("hello", 0o644, b"compressed").bytes();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            io::Write::write_all(&mut e, &tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 3).unwrap();
        let diff_id = format!("sha256:{}", crate::store::sha256_hex(&tar));
        for (name, bytes) in [("plain", tar.clone()), ("gz", gz), ("zst", zst)] {
            let layer = t.path().join(name);
            std::fs::write(&layer, bytes).unwrap();
            let root = t.path().join(format!("root-{name}"));
            std::fs::create_dir(&root).unwrap();
            apply_layer_checked(&root, &layer, Limits::default(), Some(&diff_id)).unwrap();
            assert_eq!(
                std::fs::read(root.join("hello")).unwrap(),
                b"compressed",
                "{name}"
            );
            let wrong = format!("sha256:{}", "0".repeat(64));
            let e =
                apply_layer_checked(&root, &layer, Limits::default(), Some(&wrong)).unwrap_err();
            assert!(matches!(e, LayerError::DiffIdMismatch { .. }), "{e}");
        }
    }

    #[test]
    fn bombs_and_garbage_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let big = Tar::new().file("zeros", 0o644, &vec![0u8; 4 << 20]).bytes();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        io::Write::write_all(&mut gz, &big).unwrap();
        let layer = t.path().join("bomb.tar.gz");
        std::fs::write(&layer, gz.finish().unwrap()).unwrap();
        assert!(
            std::fs::metadata(&layer).unwrap().len() < 64 << 10,
            "small on the wire"
        );
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let limits = Limits {
            max_bytes: 1 << 20,
            max_entries: 100,
        };
        let e = apply_layer(&root, &layer, limits).unwrap_err();
        assert!(matches!(e, LayerError::TooBig(_)), "{e}");

        let mut many = Tar::new();
        for i in 0..20 {
            many = many.file(&format!("f{i}"), 0o644, b"");
        }
        let e = apply_tar(
            &root,
            io::Cursor::new(many.bytes()),
            Limits {
                max_bytes: 1 << 20,
                max_entries: 10,
            },
        )
        .unwrap_err();
        assert!(matches!(e, LayerError::TooManyEntries(10)), "{e}");

        let mut truncated = Tar::new().file("f", 0o644, &[7u8; 5000]).bytes();
        truncated.truncate(1500);
        assert!(apply(&root, truncated).is_err());
        let garbage = vec![0x42u8; 4096];
        assert!(apply(&root, garbage).is_err());
    }
}
