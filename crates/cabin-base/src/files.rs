//! Files as cabin writes and reads its records: private directories, a file replaced
//! crash-safely (written aside, synced, renamed over the old one, the directory synced:
//! a crash leaves the old contents or the new, never a mix), reads bounded in size,
//! sparse disk images copied without filling their holes.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Creates `p` (and missing parents) readable by its owner only, and makes an existing
/// one so.
pub fn create_private_dir(p: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(0o700))
}

/// A file's path and, if it exists, its size, modification time and inode: what tells
/// a rebuilt or rewritten file (a kernel, QEMU, a disk) from the one a saved state was
/// made with, without reading it.
pub fn identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => format!(
            "{}\t{} {}.{} {}",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ),
        Err(_) => format!("{}\tmissing", path.display()),
    }
}

/// Replaces the file at `path` with `data` crash-safely (see the module comment), with
/// `mode`. The temporary file is hidden beside it and named after this process, so
/// that writers in several processes never share one.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file's path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Reads at most `limit` bytes of `path`; a larger file is an error of kind
/// `InvalidData`, not a truncation.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is larger than {limit} bytes", path.display()),
        ));
    }
    Ok(bytes)
}

/// Copies a disk image: a reflink if possible (instant), else only its data extents
/// with copy_file_range (holes stay holes), flushed. `dst` must not exist.
pub fn copy_sparse(src: &Path, dst: &Path) -> io::Result<()> {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    let from = File::open(src)?;
    let to = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)?;
    // SAFETY: FICLONE between two descriptors we own.
    if unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on our descriptor.
        let data = unsafe { libc::lseek(from.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // no more data: the rest is a hole
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(from.as_raw_fd(), data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        // The kernel copies the extent (and shares it where the file system can).
        let mut off_in: i64 = data;
        let mut off_out: i64 = data;
        while off_in < end {
            // SAFETY: copy_file_range between our descriptors with our offsets.
            let n = unsafe {
                libc::copy_file_range(
                    from.as_raw_fd(),
                    &mut off_in,
                    to.as_raw_fd(),
                    &mut off_out,
                    (end - off_in) as usize,
                    0,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // Another file system (or none of its support): copy it ourselves.
                    Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                        copy_range(&from, &to, off_in, end)?;
                        break;
                    }
                    _ => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
        }
        pos = end;
    }
    to.sync_all()
}

/// Copies bytes `start..end` through a buffer, leaving zero blocks as holes.
fn copy_range(from: &File, to: &File, start: i64, end: i64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 4 << 20];
    let mut at = start;
    while at < end {
        let n = ((end - at) as usize).min(buf.len());
        let got = from.read_at(&mut buf[..n], at as u64)?;
        if got == 0 {
            break;
        }
        if buf[..got].iter().any(|&b| b != 0) {
            to.write_all_at(&buf[..got], at as u64)?;
        }
        at += got as i64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_nothing_aside() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
        assert!(write_atomic(&t.path().join("missing/x"), b"", 0o600).is_err());
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn bounded_reads_refuse_what_is_too_big() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        fs::write(&p, b"12345").unwrap();
        assert_eq!(read_bounded(&p, 5).unwrap(), b"12345");
        assert_eq!(
            read_bounded(&p, 4).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let d = t.path().join("private/a");
        create_private_dir(&d).unwrap();
        assert_eq!(
            fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
