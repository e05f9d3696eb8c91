//! Advisory locks (flock(2)) held by a value: the lock lasts as long as the [`Lock`]
//! (its descriptor) does, and dies with the process however it ends, which is what
//! makes cabin's liveness tests work ("a running VM is one whose lock is held").

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Exclusive for owners, shared for readers that only want to know nobody owns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Exclusive,
    Shared,
}

/// Whether taking a lock waits for its holder to let go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Block,
    NoWait,
}

/// A lock held until dropped.
#[derive(Debug)]
pub struct Lock(File);

impl Lock {
    /// The locked file.
    pub fn file(&self) -> &File {
        &self.0
    }
}

/// Locks an open file: `Ok(true)` when taken, `Ok(false)` when someone else holds it
/// and `wait` is [`Wait::NoWait`]. The lock belongs to the open file description.
pub fn lock_file(file: &File, mode: Mode, wait: Wait) -> io::Result<bool> {
    let mut op = match mode {
        Mode::Exclusive => libc::LOCK_EX,
        Mode::Shared => libc::LOCK_SH,
    };
    if wait == Wait::NoWait {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor the caller's File keeps open.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Opens (creating it if needed) and locks the file at `path`: `None` when another
/// holder has it and `wait` is [`Wait::NoWait`].
pub fn lock_path(path: &Path, mode: Mode, wait: Wait) -> io::Result<Option<Lock>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Ok(lock_file(&f, mode, wait)?.then_some(Lock(f)))
}

/// Takes `path`'s lock, waiting for it; the returned value holds it.
pub fn lock_path_waiting(path: &Path, mode: Mode) -> io::Result<Lock> {
    lock_path(path, mode, Wait::Block)?
        .ok_or_else(|| io::Error::other("a waiting lock was refused"))
}

/// Whether someone holds an exclusive lock on `path` (probed with a shared lock, given
/// back at once). A missing file is held by nobody.
pub fn is_held(path: &Path) -> io::Result<bool> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(!lock_file(&f, Mode::Shared, Wait::NoWait)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_keeps_others_out_until_dropped() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        assert!(!is_held(&p).unwrap(), "a missing file is free");
        let held = lock_path(&p, Mode::Exclusive, Wait::NoWait)
            .unwrap()
            .expect("free");
        assert!(lock_path(&p, Mode::Exclusive, Wait::NoWait)
            .unwrap()
            .is_none());
        assert!(lock_path(&p, Mode::Shared, Wait::NoWait).unwrap().is_none());
        assert!(is_held(&p).unwrap());
        drop(held);
        assert!(!is_held(&p).unwrap());
        let again = lock_path_waiting(&p, Mode::Exclusive).unwrap();
        assert!(held_by_other(&p));
        drop(again);
    }

    #[test]
    fn shared_locks_coexist_and_keep_an_owner_out() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("lock");
        let a = lock_path(&p, Mode::Shared, Wait::NoWait).unwrap().unwrap();
        let b = lock_path(&p, Mode::Shared, Wait::NoWait).unwrap().unwrap();
        assert!(held_by_other(&p));
        drop((a, b));
        assert!(!held_by_other(&p));
    }

    fn held_by_other(p: &Path) -> bool {
        lock_path(p, Mode::Exclusive, Wait::NoWait)
            .unwrap()
            .is_none()
    }
}
