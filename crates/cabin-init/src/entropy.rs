//! Reseeding the guest kernel's random number generator with bytes from the host.
//!
//! Every VM resumed from one saved state starts with the same pool and the same CRNG key,
//! so each would hand out the same "random" numbers. The host sends fresh bytes in its
//! Hello; they are credited to the input pool and the CRNG is reseeded from it at once.

use std::io;
use std::os::fd::AsRawFd;

/// The host sends 64 bytes; more than this is refused.
pub const MAX_BYTES: usize = 256;

// _IOW('R', 0x03, int[2]) and _IO('R', 0x07) from linux/random.h.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

pub fn add_and_reseed(bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} bytes of entropy, at most {MAX_BYTES}", bytes.len()),
        ));
    }
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + bytes.len());
    info.extend_from_slice(&((bytes.len() * 8) as i32).to_ne_bytes());
    info.extend_from_slice(&(bytes.len() as i32).to_ne_bytes());
    info.extend_from_slice(bytes);
    let random = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // SAFETY: both ioctls get the argument layout linux/random.h defines; `info` outlives
    // the call.
    unsafe {
        if libc::ioctl(random.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::ioctl(random.as_raw_fd(), RNDRESEEDCRNG, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
