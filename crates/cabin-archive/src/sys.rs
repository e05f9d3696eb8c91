//! The few *at(2) calls extraction is built on: everything relative to an open
//! directory, never following a symbolic link in the name.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Opens directory `name` in `dir`; a symbolic link fails (ELOOP/ENOTDIR).
pub fn open_dir_at(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: NUL-terminated name, a directory descriptor we hold.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory by path (following links: the caller's own path).
pub fn open_dir(path: &std::path::Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: as above.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdir_at(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: as above.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode as libc::mode_t) })
}

/// lstat of `name` in `dir`; None if it does not exist.
pub fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: a zeroed stat is a valid buffer for fstatat to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Creates a new regular file (never opening an existing one or a link).
pub fn create_file_at(dir: RawFd, name: &OsStr) -> io::Result<File> {
    let c = cstr(name)?;
    // SAFETY: as above.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened.
    Ok(unsafe { File::from_raw_fd(fd) })
}

pub fn unlink_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: as above.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), 0) })
}

pub fn symlink_at(target: &OsStr, dir: RawFd, name: &OsStr) -> io::Result<()> {
    let (t, c) = (cstr(target)?, cstr(name)?);
    // SAFETY: as above.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) })
}

/// A hard link; a symbolic link as the target is linked itself, not followed.
pub fn link_at(from_dir: RawFd, from: &OsStr, to_dir: RawFd, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: as above.
    check(unsafe { libc::linkat(from_dir, f.as_ptr(), to_dir, t.as_ptr(), 0) })
}

pub fn rename_at(from_dir: RawFd, from: &OsStr, to_dir: RawFd, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: as above.
    check(unsafe { libc::renameat(from_dir, f.as_ptr(), to_dir, t.as_ptr()) })
}

/// Renames unless `to` exists (where the file system cannot tell, a plain rename).
pub fn rename_noreplace_at(
    from_dir: RawFd,
    from: &OsStr,
    to_dir: RawFd,
    to: &OsStr,
) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: as above.
    let r = unsafe {
        libc::renameat2(
            from_dir,
            f.as_ptr(),
            to_dir,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            return rename_at(from_dir, from, to_dir, to);
        }
        return Err(e);
    }
    Ok(())
}

fn times(mtime: i64) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ]
}

/// Sets the modification time of an open file or directory.
pub fn set_mtime(fd: RawFd, mtime: i64) -> io::Result<()> {
    let t = times(mtime);
    // SAFETY: two timespecs, as futimens expects.
    check(unsafe { libc::futimens(fd, t.as_ptr()) })
}

/// Sets the modification time of a symbolic link itself.
pub fn set_link_mtime(dir: RawFd, name: &OsStr, mtime: i64) -> io::Result<()> {
    let c = cstr(name)?;
    let t = times(mtime);
    // SAFETY: as above.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), t.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
}

pub fn set_mode(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: fchmod on a descriptor we hold.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) })
}

/// The names in an open directory, without `.` and `..`. Reads through a duplicate of
/// the descriptor (no /proc needed: in a container's mount namespace it may not be
/// ours).
pub fn list_dir(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    // SAFETY: dup of a descriptor we hold; fdopendir takes ownership of the duplicate
    // and closedir releases it.
    unsafe {
        let dup = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if dup < 0 {
            return Err(io::Error::last_os_error());
        }
        let d = libc::fdopendir(dup);
        if d.is_null() {
            let e = io::Error::last_os_error();
            libc::close(dup);
            return Err(e);
        }
        // A duplicate shares the file offset: start from the beginning.
        libc::rewinddir(d);
        let mut names = Vec::new();
        loop {
            *libc::__errno_location() = 0;
            let ent = libc::readdir(d);
            if ent.is_null() {
                let errno = *libc::__errno_location();
                libc::closedir(d);
                if errno != 0 {
                    return Err(io::Error::from_raw_os_error(errno));
                }
                break;
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        names.sort();
        Ok(names)
    }
}
