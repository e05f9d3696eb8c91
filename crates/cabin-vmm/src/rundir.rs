//! A VM's private run directory (sockets, console log, QEMU's pid), owned by the process
//! holding its lock. Whatever a killed cabin left behind (a directory nobody holds, maybe
//! a QEMU that outlived it) is removed by the next cabin command.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cabin_base::files::create_private_dir;
use cabin_base::lock::{lock_file, Mode, Wait};

/// Run directories being created (see RunDir::create).
const STAGING_PREFIX: &str = ".new-";

pub struct RunDir {
    pub path: PathBuf,
    lock: Option<fs::File>,
}

fn try_lock(file: &fs::File) -> bool {
    lock_file(file, Mode::Exclusive, Wait::NoWait).unwrap_or(false)
}

impl RunDir {
    /// Creates the run directory of VM `id` under `run_root` (a short name: unix socket
    /// paths must stay under 108 bytes), locked by the returned value.
    pub fn create(run_root: &Path, id: &str) -> io::Result<RunDir> {
        // Unix socket paths are limited to 107 bytes; a short directory name keeps them
        // inside the limit for ordinary data directories.
        let short = &id[..12.min(id.len())];
        let path = run_root.join(short);
        let socket = path.join("agent.sock");
        if socket.as_os_str().len() > 107 {
            return Err(io::Error::other(format!(
                "the data directory path is too long for unix sockets ({}); use a shorter CABIN_DATA_DIR",
                socket.display()
            )));
        }
        create_private_dir(run_root)?;
        // The directory appears under its name already locked: made and locked under a
        // hidden name, then renamed. Otherwise another cabin's reap_stale could find it
        // between the lock file's creation and its flock, take the lock and delete it.
        let staging = run_root.join(format!("{STAGING_PREFIX}{short}"));
        create_private_dir(&staging)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(staging.join("lock"))?;
        if !try_lock(&lock) {
            return Err(io::Error::other(format!("{} is in use", staging.display())));
        }
        if let Err(e) = fs::rename(&staging, &path) {
            let _ = fs::remove_dir_all(&staging);
            return Err(io::Error::new(
                e.kind(),
                format!("{} is in use: {e}", path.display()),
            ));
        }
        Ok(RunDir {
            path,
            lock: Some(lock),
        })
    }

    pub fn record_vmm_pid(&self, pid: u32) -> io::Result<()> {
        fs::write(self.path.join("vmm.pid"), pid.to_string())
    }

    /// Removes the directory and releases it.
    pub fn remove(mut self) -> io::Result<()> {
        let r = fs::remove_dir_all(&self.path);
        self.lock.take();
        r
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.lock.is_some() {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Kills `pid` only if it is a process started for this run directory (its command line
/// names the directory), so a recycled pid is never hit.
fn kill_if_ours(pid: i32, dir: &Path) {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    if cmdline.windows(needle.len()).any(|w| w == needle) {
        // SAFETY: signalling a process we identified as ours.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Removes the run directories under `run_root` whose owner is gone. Returns how many
/// were removed.
pub fn reap_stale(run_root: &Path) -> usize {
    let Ok(entries) = fs::read_dir(run_root) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let dir = e.path();
        let staging = e.file_name().to_string_lossy().starts_with(STAGING_PREFIX);
        let lock = fs::OpenOptions::new().write(true).open(dir.join("lock"));
        let (Ok(lock), false) = (lock, staging) else {
            // Being created right now, or left by a creator that died while creating
            // it: only the second kind is old.
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60));
            if old && fs::remove_dir_all(&dir).is_ok() {
                removed += 1;
            }
            continue;
        };
        if !try_lock(&lock) {
            continue; // its owner is alive
        }
        if let Some(pid) = fs::read_to_string(dir.join("vmm.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            kill_if_ours(pid, &dir);
        }
        if fs::remove_dir_all(&dir).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use cabin_base::random::id;

    #[test]
    fn held_directories_survive_and_abandoned_ones_are_reaped() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("run");
        let held = RunDir::create(&root, &id().unwrap()).unwrap();
        // An abandoned directory: the lock file exists but nobody holds it.
        let abandoned = root.join("abandoned");
        fs::create_dir_all(&abandoned).unwrap();
        fs::write(abandoned.join("lock"), "").unwrap();
        fs::write(abandoned.join("vmm.pid"), "2147483646").unwrap();
        assert_eq!(reap_stale(&root), 1);
        assert!(held.path.exists());
        assert!(!abandoned.exists());
        let p = held.path.clone();
        held.remove().unwrap();
        assert!(!p.exists());
    }

    #[test]
    fn directories_being_created_are_left_alone() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("run");
        // What another cabin's create looks like between making its lock file and
        // locking it: an unheld lock, under the staging name.
        let staging = root.join(format!("{STAGING_PREFIX}0123456789ab"));
        fs::create_dir_all(&staging).unwrap();
        fs::write(staging.join("lock"), "").unwrap();
        assert_eq!(reap_stale(&root), 0);
        assert!(staging.exists());
        // A finished create shows up under its own name, held.
        let made = RunDir::create(&root, &id().unwrap()).unwrap();
        assert!(made.path.join("lock").exists());
        assert!(!made
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX));
        assert_eq!(reap_stale(&root), 0);
        assert!(made.path.exists());
    }
}
