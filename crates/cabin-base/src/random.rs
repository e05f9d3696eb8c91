//! Random bytes from the kernel's generator (getrandom(2)), for IDs, passwords, MAC
//! addresses and the guest's entropy. One policy: interrupted or short reads are
//! retried, and a generator that fails is an error for the caller to report; nothing
//! falls back to guessable values.

use std::io;

/// Fills `buf` with random bytes.
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into memory we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(io::Error::new(
                e.kind(),
                format!("reading random bytes from the kernel: {e}"),
            ));
        }
        done += n as usize;
    }
    Ok(())
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

/// Bytes as lower-case hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh 128-bit ID as 32 hexadecimal digits (containers, VMs, run directories).
pub fn id() -> io::Result<String> {
    Ok(hex(&bytes::<16>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_hex_and_buffers_are_filled() {
        let (a, b) = (id().unwrap(), id().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        let big = bytes::<4096>().unwrap();
        assert!(big.iter().any(|&b| b != 0));
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
