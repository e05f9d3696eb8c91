//! Disk slices as gzip streams, as Lume writes them (deflate at the default level,
//! gzip wrapping), made deterministic: no file name, no time stamp, so the same slice
//! always gives the same blob, and a re-push finds its blobs already in the registry.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};

use crate::store::hex;

/// What compressing a slice gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compressed {
    pub digest: String,
    pub size: u64,
    pub uncompressed_digest: String,
    pub uncompressed_size: u64,
}

/// Counts and hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn encoder<W: Write>(out: W) -> GzEncoder<W> {
    // mtime 0, no name, OS "unknown": the header never varies.
    GzBuilder::new().mtime(0).write(out, Compression::default())
}

/// Compresses `len` bytes of `disk` from `offset` into `out`.
pub fn compress_slice<W: Write>(
    disk: &File,
    offset: u64,
    len: u64,
    out: W,
) -> io::Result<Compressed> {
    compress_with(len, out, |buf, at| disk.read_exact_at(buf, offset + at))
}

/// Compresses `len` zero bytes (a slice that is all hole) into `out`.
pub fn compress_zeros<W: Write>(len: u64, out: W) -> io::Result<Compressed> {
    compress_with(len, out, |_, _| Ok(()))
}

/// Compresses `len` bytes into `out`, 1 MiB at a time, each piece filled (from a
/// zeroed buffer) by `fill(piece, position)`; both digests computed on the way.
fn compress_with<W: Write>(
    len: u64,
    out: W,
    mut fill: impl FnMut(&mut [u8], u64) -> io::Result<()>,
) -> io::Result<Compressed> {
    let mut enc = encoder(Hashing {
        inner: out,
        hash: Sha256::new(),
        bytes: 0,
    });
    let mut raw = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        fill(&mut buf[..n], at)?;
        raw.update(&buf[..n]);
        enc.write_all(&buf[..n])?;
        at += n as u64;
    }
    let mut h = enc.finish()?;
    h.flush()?;
    Ok(Compressed {
        digest: format!("sha256:{}", hex(&h.hash.finalize())),
        size: h.bytes,
        uncompressed_digest: format!("sha256:{}", hex(&raw.finalize())),
        uncompressed_size: len,
    })
}

/// Whether `len` bytes of `disk` from `offset` hold no data at all (a hole).
pub fn is_hole(disk: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a descriptor we borrow; it does not move any shared state we use
    // (reads are positional).
    let data = unsafe { libc::lseek(disk.as_raw_fd(), offset as i64, libc::SEEK_DATA) };
    if data < 0 {
        // ENXIO: no data after offset.
        return io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    data as u64 >= offset + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn compression_is_deterministic_and_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("disk");
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .unwrap();
        f.set_len(8 << 20).unwrap();
        f.write_all_at(b"hello disk", 3 << 20).unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let ca = compress_slice(&f, 2 << 20, 4 << 20, &mut a).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let cb = compress_slice(&f, 2 << 20, 4 << 20, &mut b).unwrap();
        assert_eq!(ca, cb);
        assert_eq!(a, b, "no time stamp in the header");
        assert_eq!(ca.size, a.len() as u64);
        assert_eq!(
            ca.digest,
            format!("sha256:{}", crate::store::sha256_hex(&a))
        );
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw.len(), 4 << 20);
        assert_eq!(&raw[1 << 20..(1 << 20) + 10], b"hello disk");
        assert_eq!(
            ca.uncompressed_digest,
            format!("sha256:{}", crate::store::sha256_hex(&raw))
        );

        let mut z = Vec::new();
        let cz = compress_zeros(2 << 20, &mut z).unwrap();
        let mut zz = Vec::new();
        assert_eq!(compress_slice(&f, 6 << 20, 2 << 20, &mut zz).unwrap(), cz);
        assert!(is_hole(&f, 6 << 20, 2 << 20));
        assert!(!is_hole(&f, 2 << 20, 2 << 20));
    }
}
