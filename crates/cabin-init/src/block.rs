//! The guest's block devices as cabin attaches them: found by the serial the host gave
//! each one, their cached pages dropped before a mount (a resumed boot snapshot may hold
//! another disk's), read-ahead sized for the host's page cache.

use std::io;
use std::path::{Path, PathBuf};

/// Read-ahead for disks cabin attaches. The kernel's 128 KiB default means a dozen
/// round trips to the host to fault in a 2 MB binary; each costs far more than the extra
/// data, which comes from the host's page cache (about 10 ms less for busybox under TCG).
const READ_AHEAD_KIB: &str = "2048";

pub fn set_read_ahead(dev: &Path) {
    if let Some(name) = dev.file_name() {
        let knob = Path::new("/sys/block")
            .join(name)
            .join("queue/read_ahead_kb");
        // Only a speed-up: a kernel without the knob keeps its default.
        let _ = std::fs::write(knob, READ_AHEAD_KIB);
    }
}

pub fn flush_buffers(dev: &Path) -> io::Result<()> {
    let f = std::fs::File::open(dev)?;
    // SAFETY: BLKFLSBUF takes no argument; the descriptor is ours.
    if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), BLKFLSBUF, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// _IO(0x12, 97) from linux/fs.h.
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Finds /dev/vdX for the virtio block device with the given serial.
pub fn block_device_by_serial(serial: &str) -> io::Result<PathBuf> {
    for entry in std::fs::read_dir("/sys/block")? {
        let entry = entry?;
        let s = std::fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if s.trim_end() == serial {
            return Ok(Path::new("/dev").join(entry.file_name()));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no block device with serial {serial:?}"),
    ))
}
