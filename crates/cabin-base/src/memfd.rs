//! Memory files (memfd_create) sealed against every change: how cabin hands a VM user
//! a file it may read but must never alter (a boot file it could not open itself, a
//! snapshot template's RAM that many VMs map), even through a writable descriptor.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// The seals of a file nobody can change any more: no writes (a writable shared
/// mapping included; private copy-on-write mappings stay possible), no size change, no
/// further seals.
pub const FROZEN: i32 =
    libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A new, empty memory file named `name` (the name shows in /proc/PID/fd), close-on-exec
/// and sealable.
pub fn create(name: &CStr) -> io::Result<File> {
    // SAFETY: memfd_create with a NUL-terminated name; the descriptor is ours.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned here.
    Ok(unsafe { File::from_raw_fd(raw) })
}

/// Seals `file` with [`FROZEN`]. Fails while anyone still maps it shared and writable.
pub fn freeze(file: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, FROZEN) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `file` is a memory file sealed with at least [`FROZEN`].
pub fn is_frozen(file: &impl AsRawFd) -> bool {
    // SAFETY: fcntl on a descriptor the caller owns.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & FROZEN == FROZEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_frozen_memory_file_refuses_writes_and_size_changes_but_maps_privately() {
        let mut f = create(c"cabin-test").unwrap();
        f.write_all(b"template").unwrap();
        assert!(!is_frozen(&f));
        freeze(&f).unwrap();
        assert!(is_frozen(&f));
        assert!(f.write_at(b"X", 0).is_err());
        assert!(f.set_len(100).is_err());
        assert!(f.set_len(1).is_err());
        // A private writable mapping works, and its writes stay in it.
        // SAFETY: a fresh private mapping of a file we own, unmapped below.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            *(p as *mut u8) = b'X';
            libc::munmap(p, 4096);
        }
        let mut buf = [0u8; 8];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"template");
        // A shared writable one does not.
        // SAFETY: as above; the call is expected to fail.
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_eq!(shared, libc::MAP_FAILED);
        // Nor does a plain file count as frozen.
        assert!(!is_frozen(&tempfile::tempfile().unwrap()));
    }
}
