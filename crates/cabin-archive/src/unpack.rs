//! An archive read into a directory: docker cp's placement rules, a staging directory,
//! and the move into place once everything has been read.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::reader::{Head, Kind, TarReader};
use crate::sys;
use crate::Error;

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Keep set-user-ID and set-group-ID bits. Off when the archive comes from
    /// somewhere less trusted than the place it is extracted to (a container's files
    /// on the host), so that a copy cannot hand out a set-ID program.
    pub keep_setid: bool,
    /// For [`place`]: the name the archive's top-level entry must have (see
    /// [`crate::top_name`]). An archive from elsewhere could otherwise choose the name
    /// its entry gets in an existing destination directory (`.bashrc`).
    pub top: Option<OsString>,
}

/// What an extraction did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    /// Device nodes and pipes, which are never created.
    pub skipped_special: u64,
}

type Comps = Vec<OsString>;

fn show(comps: &[OsString]) -> String {
    let v: Vec<_> = comps.iter().map(|c| c.to_string_lossy()).collect();
    v.join("/")
}

/// An archive path as components: relative, no `..`, no empty names.
fn components(path: &[u8]) -> Result<Comps, Error> {
    let lossy = || String::from_utf8_lossy(path).into_owned();
    if path.first() == Some(&b'/') {
        return Err(Error::archive(format!(
            "the archive has an absolute path: {}",
            lossy()
        )));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::archive(format!(
                    "the archive has a path that leads out with '..': {}",
                    lossy()
                )))
            }
            c if c.len() > 255 => {
                return Err(Error::archive(format!(
                    "the archive has a name longer than 255 bytes: {}",
                    lossy()
                )))
            }
            c => out.push(OsString::from_vec(c.to_vec())),
        }
    }
    Ok(out)
}

/// A fresh directory the archive is extracted into before it is moved into place;
/// removed with whatever is left in it when dropped.
struct Staging {
    path: PathBuf,
    fd: OwnedFd,
}

impl Staging {
    fn create(in_dir: &Path) -> Result<Staging, Error> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        for attempt in 0..100u32 {
            let name = format!(
                ".cabin-cp-{}-{}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            );
            let path = in_dir.join(name);
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let fd = sys::open_dir(&path).map_err(|e| Error::io(path.display(), e))?;
                    return Ok(Staging { path, fd });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!("creating a staging directory in {}", in_dir.display()),
                        e,
                    ))
                }
            }
        }
        Err(Error::destination(format!(
            "cannot create a staging directory in {}",
            in_dir.display()
        )))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

struct DirMeta {
    mode: u32,
    mtime: Option<i64>,
}

/// Writes entries beneath one directory, never through a link.
struct Extractor<'a> {
    root: &'a OwnedFd,
    mask: u32,
    /// Directories' modes and times, applied once everything is in place: a read-only
    /// directory must stay writable while it is filled and moved, and a directory's
    /// time changes with every entry added to it.
    dirs: HashMap<Comps, DirMeta>,
    done: Unpacked,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

impl<'a> Extractor<'a> {
    fn new(root: &'a OwnedFd, opts: &UnpackOptions) -> Extractor<'a> {
        Extractor {
            root,
            mask: if opts.keep_setid { 0o7777 } else { 0o1777 },
            dirs: HashMap::new(),
            done: Unpacked::default(),
        }
    }

    /// The directory `comps` beneath the root, each step opened without following
    /// links; missing directories are created when `create`.
    fn dir(&mut self, comps: &[OsString], create: bool) -> Result<OwnedFd, Error> {
        let mut fd = sys::open_dir_at(self.root.as_raw_fd(), OsStr::new("."))
            .map_err(|e| Error::io("opening the staging directory", e))?;
        for (i, c) in comps.iter().enumerate() {
            let here = || show(&comps[..=i]);
            fd = match sys::open_dir_at(fd.as_raw_fd(), c) {
                Ok(next) => next,
                Err(e) if errno(&e) == libc::ENOENT && create => {
                    sys::mkdir_at(fd.as_raw_fd(), c, 0o700)
                        .map_err(|e| Error::io(format!("creating {}", here()), e))?;
                    self.dirs.entry(comps[..=i].to_vec()).or_insert(DirMeta {
                        mode: 0o755,
                        mtime: None,
                    });
                    sys::open_dir_at(fd.as_raw_fd(), c)
                        .map_err(|e| Error::io(format!("opening {}", here()), e))?
                }
                Err(e) if errno(&e) == libc::ENOENT => {
                    return Err(Error::archive(format!(
                        "the archive refers to {}, which it does not have",
                        here()
                    )))
                }
                Err(e) if matches!(errno(&e), libc::ELOOP | libc::ENOTDIR) => {
                    return Err(Error::archive(format!(
                        "the archive puts an entry beneath {}, which is not a directory (a link or a file)",
                        here()
                    )))
                }
                Err(e) => return Err(Error::io(format!("opening {}", here()), e)),
            };
        }
        Ok(fd)
    }

    /// Makes room for a new non-directory entry.
    fn clear(&self, dir: &OwnedFd, name: &OsStr, comps: &[OsString]) -> Result<(), Error> {
        match sys::lstat_at(dir.as_raw_fd(), name) {
            Ok(None) => Ok(()),
            Ok(Some(st)) if sys::is_dir(&st) => Err(Error::archive(format!(
                "the archive replaces the directory {} with a non-directory",
                show(comps)
            ))),
            Ok(Some(_)) => sys::unlink_at(dir.as_raw_fd(), name)
                .map_err(|e| Error::io(format!("replacing {}", show(comps)), e)),
            Err(e) => Err(Error::io(show(comps), e)),
        }
    }

    fn entry(
        &mut self,
        comps: &[OsString],
        head: &Head,
        data: &mut impl Read,
        link_target: Option<&[OsString]>,
    ) -> Result<(), Error> {
        let Some((name, parents)) = comps.split_last() else {
            // "./": the directory extracted into; nothing to create.
            if head.kind == Kind::Dir {
                return Ok(());
            }
            return Err(Error::archive("the archive has an entry without a name"));
        };
        if head.kind == Kind::Special {
            self.done.skipped_special += 1;
            return Ok(());
        }
        let dir = self.dir(parents, true)?;
        let failed = |e: io::Error| Error::io(format!("extracting {}", show(comps)), e);
        match head.kind {
            Kind::Dir => {
                match sys::lstat_at(dir.as_raw_fd(), name).map_err(failed)? {
                    Some(st) if sys::is_dir(&st) => {}
                    Some(_) => {
                        sys::unlink_at(dir.as_raw_fd(), name).map_err(failed)?;
                        sys::mkdir_at(dir.as_raw_fd(), name, 0o700).map_err(failed)?;
                    }
                    None => sys::mkdir_at(dir.as_raw_fd(), name, 0o700).map_err(failed)?,
                }
                self.dirs.insert(
                    comps.to_vec(),
                    DirMeta {
                        mode: head.mode,
                        mtime: Some(head.mtime),
                    },
                );
            }
            Kind::File => {
                self.clear(&dir, name, comps)?;
                let mut f = sys::create_file_at(dir.as_raw_fd(), name).map_err(failed)?;
                let copied = io::copy(&mut data.take(head.size), &mut f).map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        Error::archive(format!(
                            "the archive ended in the middle of {}",
                            show(comps)
                        ))
                    } else {
                        failed(e)
                    }
                })?;
                if copied != head.size {
                    return Err(Error::archive(format!(
                        "the archive ended in the middle of {}",
                        show(comps)
                    )));
                }
                sys::set_mode(f.as_raw_fd(), head.mode & self.mask).map_err(failed)?;
                sys::set_mtime(f.as_raw_fd(), head.mtime).map_err(failed)?;
            }
            Kind::Symlink => {
                self.clear(&dir, name, comps)?;
                // A link is only ever created, never followed: every later path is
                // opened step by step without following links.
                sys::symlink_at(OsStr::from_bytes(&head.link), dir.as_raw_fd(), name)
                    .map_err(failed)?;
                sys::set_link_mtime(dir.as_raw_fd(), name, head.mtime).map_err(failed)?;
            }
            Kind::HardLink => {
                let target = link_target.unwrap_or_default();
                let Some((tname, tparents)) = target.split_last() else {
                    return Err(Error::archive(format!(
                        "the archive has a hard link without a target: {}",
                        show(comps)
                    )));
                };
                let tdir = self.dir(tparents, false)?;
                self.clear(&dir, name, comps)?;
                sys::link_at(tdir.as_raw_fd(), tname, dir.as_raw_fd(), name).map_err(|e| {
                    if matches!(errno(&e), libc::ENOENT | libc::EPERM) {
                        Error::archive(format!(
                            "the archive links {} to {}, which it does not have as a file",
                            show(comps),
                            show(target)
                        ))
                    } else {
                        failed(e)
                    }
                })?;
            }
            Kind::Special => unreachable!("handled above"),
        }
        self.done.entries += 1;
        Ok(())
    }

    /// Applies the directories' modes and times where they ended up: `final_root` is
    /// where the archive's first `strip` components went.
    fn finish_dirs(
        &self,
        final_root: &OwnedFd,
        strip: usize,
        skip_root: bool,
    ) -> Result<(), Error> {
        let mut dirs: Vec<(&Comps, &DirMeta)> = self.dirs.iter().collect();
        // Deepest first: a parent made unsearchable must not block its children.
        dirs.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        for (comps, meta) in dirs {
            let rel = &comps[strip.min(comps.len())..];
            if rel.is_empty() && skip_root {
                continue;
            }
            let failed =
                |e: io::Error| Error::io(format!("setting the mode of {}", show(comps)), e);
            let mut fd =
                sys::open_dir_at(final_root.as_raw_fd(), OsStr::new(".")).map_err(failed)?;
            for c in rel {
                fd = sys::open_dir_at(fd.as_raw_fd(), c).map_err(failed)?;
            }
            sys::set_mode(fd.as_raw_fd(), meta.mode & self.mask).map_err(failed)?;
            if let Some(t) = meta.mtime {
                sys::set_mtime(fd.as_raw_fd(), t).map_err(failed)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` in `src` can be merged into `dst_name` in `dst`: a directory goes
/// into a directory, anything else replaces a non-directory. Checked for everything
/// before anything moves.
fn check_merge(
    src: &OwnedFd,
    name: &OsStr,
    dst: &OwnedFd,
    dst_name: &OsStr,
    shown: &Path,
) -> Result<(), Error> {
    let failed = |e: io::Error| Error::io(shown.display(), e);
    let Some(s) = sys::lstat_at(src.as_raw_fd(), name).map_err(failed)? else {
        return Ok(());
    };
    let Some(d) = sys::lstat_at(dst.as_raw_fd(), dst_name).map_err(failed)? else {
        return Ok(());
    };
    match (sys::is_dir(&s), sys::is_dir(&d)) {
        (true, true) => {
            let sfd = sys::open_dir_at(src.as_raw_fd(), name).map_err(failed)?;
            let dfd = sys::open_dir_at(dst.as_raw_fd(), dst_name).map_err(failed)?;
            for child in sys::list_dir(&sfd).map_err(failed)? {
                check_merge(&sfd, &child, &dfd, &child, &shown.join(&child))?;
            }
            Ok(())
        }
        (false, true) => Err(Error::destination(format!(
            "cannot overwrite the directory {} with a non-directory",
            shown.display()
        ))),
        (true, false) => Err(Error::destination(format!(
            "cannot overwrite the non-directory {} with a directory",
            shown.display()
        ))),
        (false, false) => Ok(()),
    }
}

/// Moves `name` from `src` to `dst_name` in `dst`, merging directories (see
/// check_merge). Each file is replaced atomically.
fn merge(
    src: &OwnedFd,
    name: &OsStr,
    dst: &OwnedFd,
    dst_name: &OsStr,
    shown: &Path,
) -> Result<(), Error> {
    let failed = |e: io::Error| Error::io(format!("moving {} into place", shown.display()), e);
    let s = sys::lstat_at(src.as_raw_fd(), name)
        .map_err(failed)?
        .ok_or_else(|| failed(io::Error::from(io::ErrorKind::NotFound)))?;
    match sys::lstat_at(dst.as_raw_fd(), dst_name).map_err(failed)? {
        None => sys::rename_noreplace_at(src.as_raw_fd(), name, dst.as_raw_fd(), dst_name)
            .map_err(failed),
        Some(d) if sys::is_dir(&s) && sys::is_dir(&d) => {
            let sfd = sys::open_dir_at(src.as_raw_fd(), name).map_err(failed)?;
            let dfd = sys::open_dir_at(dst.as_raw_fd(), dst_name).map_err(failed)?;
            for child in sys::list_dir(&sfd).map_err(failed)? {
                merge(&sfd, &child, &dfd, &child, &shown.join(&child))?;
            }
            Ok(())
        }
        Some(d) if !sys::is_dir(&s) && !sys::is_dir(&d) => {
            sys::rename_at(src.as_raw_fd(), name, dst.as_raw_fd(), dst_name).map_err(failed)
        }
        Some(_) => check_merge(src, name, dst, dst_name, shown),
    }
}

fn canonical(p: &Path) -> Result<PathBuf, Error> {
    fs::canonicalize(p).map_err(|e| Error::io(p.display(), e))
}

fn open(p: &Path) -> Result<OwnedFd, Error> {
    sys::open_dir(p).map_err(|e| Error::io(p.display(), e))
}

/// Where the archive's top-level entry goes.
enum Target {
    /// The destination does not exist: the entry becomes it.
    New { dir: PathBuf, name: OsString },
    /// The destination is a file: the (non-directory) entry replaces it.
    Replace { dir: PathBuf, name: OsString },
    /// The destination is a directory: the entry goes inside it, or (`contents`) what
    /// the entry has merges into it.
    Into { dir: PathBuf, contents: bool },
}

impl Target {
    fn staging_dir(&self) -> &Path {
        match self {
            Target::New { dir, .. } | Target::Replace { dir, .. } | Target::Into { dir, .. } => dir,
        }
    }
}

fn target(dest: &Path, src_is_dir: bool, contents_only: bool) -> Result<Target, Error> {
    let bytes = dest.as_os_str().as_bytes();
    let names_a_dir = bytes.ends_with(b"/") || bytes.ends_with(b"/.");
    if contents_only && !src_is_dir {
        return Err(Error::destination(
            "the source is not a directory (only a directory's contents can be copied with /.)",
        ));
    }
    match fs::metadata(dest) {
        Ok(m) if m.is_dir() => Ok(Target::Into {
            dir: canonical(dest)?,
            contents: contents_only,
        }),
        Ok(_) if src_is_dir => Err(Error::destination(format!(
            "cannot copy a directory to a file: {}",
            dest.display()
        ))),
        Ok(_) if names_a_dir => Err(Error::destination(format!(
            "{} is not a directory",
            dest.display()
        ))),
        Ok(_) => {
            // Through the destination's links, as cp writes through them.
            let real = canonical(dest)?;
            let (Some(dir), Some(name)) = (real.parent(), real.file_name()) else {
                return Err(Error::destination(format!(
                    "cannot replace {}",
                    dest.display()
                )));
            };
            Ok(Target::Replace {
                dir: dir.to_path_buf(),
                name: name.to_os_string(),
            })
        }
        Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => {
            if names_a_dir && !src_is_dir {
                return Err(Error::destination(format!(
                    "the destination directory {} does not exist",
                    dest.display()
                )));
            }
            let name = dest.file_name().ok_or_else(|| {
                Error::destination(format!("invalid destination {}", dest.display()))
            })?;
            let parent = match dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            match fs::metadata(parent) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(Error::destination(format!(
                        "the destination's parent {} is not a directory",
                        parent.display()
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(Error::destination(format!(
                        "the destination's parent directory {} does not exist",
                        parent.display()
                    )))
                }
                Err(e) => return Err(Error::io(parent.display(), e)),
            }
            Ok(Target::New {
                dir: canonical(parent)?,
                name: name.to_os_string(),
            })
        }
        Err(e) => Err(Error::io(dest.display(), e)),
    }
}

/// Reads an archive made by [`crate::pack`] (one top-level entry) to `dest`, as docker
/// cp places a source: a missing `dest` becomes the entry (its parent must exist); an
/// existing directory receives it (or, with `contents_only`, what it contains); an
/// existing file is replaced by a file.
pub fn place(
    archive: impl Read,
    dest: &Path,
    contents_only: bool,
    opts: &UnpackOptions,
) -> Result<Unpacked, Error> {
    let mut tar = TarReader::new(archive);
    let first = tar
        .next()?
        .ok_or_else(|| Error::archive("the archive is empty"))?;
    let comps = components(&first.path)?;
    let [top] = comps.as_slice() else {
        return Err(Error::archive(
            "the archive does not start with the file or directory it copies",
        ));
    };
    let top = top.clone();
    if opts.top.as_ref().is_some_and(|want| *want != top) {
        return Err(Error::archive(format!(
            "the archive copies {} rather than what was asked for",
            top.to_string_lossy()
        )));
    }
    let target = target(dest, first.kind == Kind::Dir, contents_only)?;
    let staging = Staging::create(target.staging_dir())?;
    let mut x = Extractor::new(&staging.fd, opts);
    x.entry(&comps, &first, &mut tar.data(), None)?;
    while let Some(head) = tar.next()? {
        let comps = components(&head.path)?;
        let within = |c: &Comps| c.first() == Some(&top) && c.len() > 1;
        if !within(&comps) {
            return Err(Error::archive(format!(
                "the archive has {} besides {}",
                show(&comps),
                top.to_string_lossy()
            )));
        }
        let link = match head.kind {
            Kind::HardLink => {
                let t = components(&head.link)?;
                if !within(&t) && t != [top.clone()] {
                    return Err(Error::archive(format!(
                        "the archive links {} to something outside it",
                        show(&comps)
                    )));
                }
                Some(t)
            }
            _ => None,
        };
        x.entry(&comps, &head, &mut tar.data(), link.as_deref())?;
    }
    let src = &staging.fd;
    match &target {
        Target::New { dir, name } => {
            let d = open(dir)?;
            sys::rename_noreplace_at(src.as_raw_fd(), &top, d.as_raw_fd(), name)
                .map_err(|e| Error::io(format!("moving the copy to {}", dest.display()), e))?;
            if first.kind == Kind::Dir {
                let root = sys::open_dir_at(d.as_raw_fd(), name)
                    .map_err(|e| Error::io(dest.display(), e))?;
                x.finish_dirs(&root, 1, false)?;
            }
        }
        Target::Replace { dir, name } => {
            let d = open(dir)?;
            sys::rename_at(src.as_raw_fd(), &top, d.as_raw_fd(), name)
                .map_err(|e| Error::io(format!("replacing {}", dest.display()), e))?;
        }
        Target::Into {
            dir,
            contents: false,
        } => {
            let d = open(dir)?;
            let shown = dest.join(&top);
            check_merge(src, &top, &d, &top, &shown)?;
            merge(src, &top, &d, &top, &shown)?;
            if first.kind == Kind::Dir {
                let root = sys::open_dir_at(d.as_raw_fd(), &top)
                    .map_err(|e| Error::io(shown.display(), e))?;
                x.finish_dirs(&root, 1, false)?;
            }
        }
        Target::Into {
            dir,
            contents: true,
        } => {
            let d = open(dir)?;
            let inner = sys::open_dir_at(src.as_raw_fd(), &top)
                .map_err(|e| Error::io("the staging directory", e))?;
            let names = sys::list_dir(&inner).map_err(|e| Error::io("the staging directory", e))?;
            for n in &names {
                check_merge(&inner, n, &d, n, &dest.join(n))?;
            }
            for n in &names {
                merge(&inner, n, &d, n, &dest.join(n))?;
            }
            // The destination directory itself keeps its own mode and time.
            x.finish_dirs(&d, 1, true)?;
        }
    }
    Ok(x.done)
}

/// Extracts any archive (a user's, e.g. `cabin cp - CONTAINER:DIR`) into the existing
/// directory `dir`, merging with what is there.
pub fn extract_into(
    archive: impl Read,
    dir: &Path,
    opts: &UnpackOptions,
) -> Result<Unpacked, Error> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::destination(format!(
                "{} is not a directory (an archive is extracted into a directory)",
                dir.display()
            )))
        }
        Err(e) if matches!(errno(&e), libc::ENOENT | libc::ENOTDIR) => {
            return Err(Error::destination(format!(
                "the destination directory {} does not exist",
                dir.display()
            )))
        }
        Err(e) => return Err(Error::io(dir.display(), e)),
    }
    let real = canonical(dir)?;
    let staging = Staging::create(&real)?;
    let mut tar = TarReader::new(archive);
    let mut x = Extractor::new(&staging.fd, opts);
    while let Some(head) = tar.next()? {
        let comps = components(&head.path)?;
        let link = match head.kind {
            Kind::HardLink => Some(components(&head.link)?),
            _ => None,
        };
        x.entry(&comps, &head, &mut tar.data(), link.as_deref())?;
    }
    let d = open(&real)?;
    let names = sys::list_dir(&staging.fd).map_err(|e| Error::io("the staging directory", e))?;
    for n in &names {
        check_merge(&staging.fd, n, &d, n, &dir.join(n))?;
    }
    for n in &names {
        merge(&staging.fd, n, &d, n, &dir.join(n))?;
    }
    x.finish_dirs(&d, 0, true)?;
    Ok(x.done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_are_relative_and_stay_inside() {
        let c = |p: &str| components(p.as_bytes());
        assert_eq!(show(&c("a/./b//c/").unwrap()), "a/b/c");
        assert!(c("./").unwrap().is_empty());
        assert!(c("/etc/passwd").is_err());
        assert!(c("a/../../b").is_err());
        assert!(c("..").is_err());
        assert!(c(&"x".repeat(256)).is_err());
    }
}
