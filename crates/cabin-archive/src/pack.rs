//! A file tree written as a tar stream: one top-level entry (the source, under the name
//! the caller gives it), then everything below it, as `cp -a` would see it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header};

use crate::{Error, ErrorKind};

#[derive(Debug, Clone, Copy, Default)]
pub struct PackOptions {
    /// When the source itself is a symbolic link, archive what it points to (cp -L).
    /// Links below the source are always archived as links.
    pub follow_top: bool,
}

/// Kernel file systems whose contents are not files (their directories are archived
/// empty): proc, sysfs, cgroup2, devpts, mqueue, debugfs, tracefs, securityfs, bpf.
const VIRTUAL_FS: &[i64] = &[
    0x9fa0,
    0x6265_6572,
    0x6367_7270,
    0x1cd1,
    0x1980_0202,
    0x6462_6720,
    0x7472_6163,
    0x7363_6673,
    0xcafe_4a11,
];

fn is_virtual_fs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
    else {
        return false;
    };
    // SAFETY: a zeroed statfs is a valid buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and a buffer of the right type.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    VIRTUAL_FS.contains(&(st.f_type as i64))
}

struct Packer<W: Write> {
    out: Builder<W>,
    /// Files with more than one link already archived, by (device, inode): later ones
    /// become hard links to the first.
    seen: HashMap<(u64, u64), PathBuf>,
}

fn header(meta: &Metadata, kind: EntryType) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid() as u64);
    h.set_gid(meta.gid() as u64);
    h.set_mtime(meta.mtime().max(0) as u64);
    h.set_size(0);
    h
}

impl<W: Write> Packer<W> {
    fn add(
        &mut self,
        path: &Path,
        name: &Path,
        meta: &Metadata,
        follow: bool,
        parent_dev: Option<u64>,
    ) -> Result<(), Error> {
        let failed = |e: io::Error| Error::io(format!("archiving {}", path.display()), e);
        let ft = meta.file_type();
        if ft.is_dir() {
            let mut h = header(meta, EntryType::Directory);
            self.out
                .append_data(&mut h, name, io::empty())
                .map_err(failed)?;
            // A mount of a kernel file system (the container's /proc, /sys): its
            // directory but not its contents.
            if parent_dev != Some(meta.dev()) && is_virtual_fs(path) {
                return Ok(());
            }
            let mut children: Vec<_> = fs::read_dir(path)
                .map_err(failed)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(failed)?;
            children.sort();
            for child in children {
                let p = path.join(&child);
                let m = match fs::symlink_metadata(&p) {
                    Ok(m) => m,
                    // Gone since the directory was read: nothing to copy.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(format!("archiving {}", p.display()), e)),
                };
                self.add(&p, &name.join(&child), &m, false, Some(meta.dev()))?;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(path).map_err(failed)?;
            let mut h = header(meta, EntryType::Symlink);
            self.out
                .append_link(&mut h, name, &target)
                .map_err(failed)?;
        } else if ft.is_file() {
            if meta.nlink() > 1 {
                let key = (meta.dev(), meta.ino());
                if let Some(first) = self.seen.get(&key) {
                    let mut h = header(meta, EntryType::Link);
                    let first = first.clone();
                    return self.out.append_link(&mut h, name, &first).map_err(failed);
                }
                self.seen.insert(key, name.to_path_buf());
            }
            let mut opts = fs::OpenOptions::new();
            opts.read(true);
            if !follow {
                opts.custom_flags(libc::O_NOFOLLOW);
            }
            let file: File = opts.open(path).map_err(failed)?;
            let size = meta.len();
            let mut h = header(meta, EntryType::Regular);
            h.set_size(size);
            // Exactly `size` bytes, as the header says, even if the file changes while
            // it is read: cut off beyond, padded with zeros if it shrank.
            let data = file.take(size).chain(io::repeat(0)).take(size);
            self.out.append_data(&mut h, name, data).map_err(failed)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let kind = if ft.is_char_device() {
                EntryType::Char
            } else if ft.is_block_device() {
                EntryType::Block
            } else {
                EntryType::Fifo
            };
            let mut h = header(meta, kind);
            let rdev = meta.rdev();
            let _ = h.set_device_major(libc::major(rdev));
            let _ = h.set_device_minor(libc::minor(rdev));
            self.out
                .append_data(&mut h, name, io::empty())
                .map_err(failed)?;
        }
        // Sockets have no place in an archive.
        Ok(())
    }
}

/// Writes `src` (a file, directory or link) and everything below it to `out` as a tar
/// archive whose one top-level entry is named `top`.
pub fn pack(src: &Path, top: &OsStr, opts: PackOptions, out: impl Write) -> Result<(), Error> {
    let meta = if opts.follow_top {
        fs::metadata(src)
    } else {
        fs::symlink_metadata(src)
    };
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("no such file or directory: {}", src.display()),
            ))
        }
        Err(e) => return Err(Error::io(src.display(), e)),
    };
    let mut builder = Builder::new(out);
    // Plain entries only: the docker CLI (Go's archive/tar) cannot read GNU sparse ones.
    builder.sparse(false);
    let mut p = Packer {
        out: builder,
        seen: HashMap::new(),
    };
    p.add(src, Path::new(top), &meta, opts.follow_top, None)?;
    p.out
        .finish()
        .map_err(|e| Error::io("writing the archive", e))?;
    p.out
        .into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::io("writing the archive", e))
}
