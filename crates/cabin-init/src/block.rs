//! The guest's block devices as cabin attaches them: found by the serial the host gave
//! each one, their cached pages dropped before a mount where an earlier disk's may be
//! cached, read-ahead sized for the host's page cache.
//!
//! The disks are looked up once, when init starts ([`scan`]): a VM's devices are fixed
//! for its life (virtio-mmio has no hotplug), and a VM resumed from a boot snapshot has
//! the devices, serials and settings of the VM the snapshot was taken of, so it finds
//! its disks without going through sysfs again (under TCG, code a resumed VM has not
//! run yet costs it about 15 ms).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// The disks found at start: (serial, device).
static DISKS: OnceLock<Vec<(String, PathBuf)>> = OnceLock::new();
/// Whether a disk was mounted since the VM started (in a boot snapshot's memory: no).
static MOUNTED_ONE: AtomicBool = AtomicBool::new(false);

/// Read-ahead for disks cabin attaches. The kernel's 128 KiB default means a dozen
/// round trips to the host to fault in a 2 MB binary; each costs far more than the extra
/// data, which comes from the host's page cache (about 10 ms less for busybox under TCG).
const READ_AHEAD_KIB: &str = "2048";

fn set_read_ahead(dev: &Path) {
    if let Some(name) = dev.file_name() {
        let knob = Path::new("/sys/block")
            .join(name)
            .join("queue/read_ahead_kb");
        // Only a speed-up: a kernel without the knob keeps its default.
        let _ = std::fs::write(knob, READ_AHEAD_KIB);
    }
}

/// Readies `dev` for a mount. The kernel drops a disk's cached pages when its last
/// user closes it and only init opens disks, so until a disk was mounted none has
/// pages cached (a boot snapshot is taken before any is); after that (a pooled VM's
/// warm-up mounted its scratch disk, whose pages a swapped disk would otherwise show),
/// the device's pages are dropped first.
pub fn before_mount(dev: &Path) -> io::Result<()> {
    if MOUNTED_ONE.swap(true, Ordering::SeqCst) {
        flush_buffers(dev)?;
    }
    Ok(())
}

fn flush_buffers(dev: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // Exclusively: a file system still alive on the device (an earlier container's,
    // unmounted lazily but held by something) holds it so, and a mount now would hand
    // that file system, not the disk swapped in, to the next container.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => io::Error::other(format!(
                "{} still holds an earlier container's file system; this VM cannot take another disk",
                dev.display()
            )),
            _ => e,
        })?;
    // SAFETY: BLKFLSBUF takes no argument; the descriptor is ours.
    if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), BLKFLSBUF, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// _IO(0x12, 97) from linux/fs.h.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// The VM's disks and their serials, as sysfs lists them now.
fn disks() -> io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let s = std::fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        found.push((
            s.trim_end().to_string(),
            Path::new("/dev").join(entry.file_name()),
        ));
    }
    Ok(found)
}

/// Looks the VM's disks up and sets their read-ahead, once, at init's start.
pub fn scan() -> io::Result<()> {
    let found = disks()?;
    for (_, dev) in &found {
        set_read_ahead(dev);
    }
    let _ = DISKS.set(found);
    Ok(())
}

/// Finds /dev/vdX for the virtio block device with the given serial: among those found
/// at start, else (init not started as the VM's init, a disk that came late) in sysfs
/// now.
pub fn block_device_by_serial(serial: &str) -> io::Result<PathBuf> {
    let known = DISKS
        .get()
        .and_then(|d| d.iter().find(|(s, _)| s == serial));
    if let Some((_, dev)) = known {
        return Ok(dev.clone());
    }
    if let Some((_, dev)) = disks()?.into_iter().find(|(s, _)| s == serial) {
        set_read_ahead(&dev);
        return Ok(dev);
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no block device with serial {serial:?}"),
    ))
}
