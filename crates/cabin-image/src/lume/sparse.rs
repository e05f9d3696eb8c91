//! Writing a decompressed disk part at its offset so that all-zero blocks stay holes:
//! data is gathered in 4 MiB buffers and only the non-zero 64 KiB runs of each are
//! written. The range is punched out first, so a part rewritten after an interrupted
//! pull leaves no stale data where its zeros are.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

const BUFFER: usize = 4 << 20;
const BLOCK: usize = 64 << 10;

/// Makes `len` bytes from `offset` a hole (reads give zeros). False where the file
/// system cannot punch holes.
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<bool> {
    if len == 0 {
        return Ok(true);
    }
    // SAFETY: fallocate on a descriptor we borrow, within its size (KEEP_SIZE).
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as i64,
            len as i64,
        )
    };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// Writes a part sequentially from `start`, refusing to go past `end`.
pub struct SparseWriter<'a> {
    file: &'a File,
    start: u64,
    end: u64,
    /// Bytes accepted so far.
    written: u64,
    buf: Vec<u8>,
    /// Zero blocks are written too (where the range could not be punched).
    write_zeros: bool,
    /// Some byte written was not zero.
    data: bool,
}

impl<'a> SparseWriter<'a> {
    /// A writer for `start..end` of `file`, which it punches out first.
    pub fn new(file: &'a File, start: u64, end: u64) -> io::Result<Self> {
        let punched = punch_hole(file, start, end - start)?;
        Ok(SparseWriter {
            file,
            start,
            end,
            written: 0,
            buf: Vec::with_capacity(BUFFER),
            write_zeros: !punched,
            data: false,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Whether any byte so far was not zero (false: the whole part is a hole).
    pub fn had_data(&self) -> bool {
        self.data
    }

    fn flush_buffer(&mut self) -> io::Result<()> {
        let base = self.start + self.written - self.buf.len() as u64;
        let mut i = 0;
        while i < self.buf.len() {
            let run_start = i;
            let nonzero = |b: &[u8]| b.iter().any(|&x| x != 0);
            let first = nonzero(&self.buf[i..(i + BLOCK).min(self.buf.len())]);
            i = (i + BLOCK).min(self.buf.len());
            while i < self.buf.len()
                && nonzero(&self.buf[i..(i + BLOCK).min(self.buf.len())]) == first
            {
                i = (i + BLOCK).min(self.buf.len());
            }
            self.data |= first;
            if first || self.write_zeros {
                self.file
                    .write_all_at(&self.buf[run_start..i], base + run_start as u64)?;
            }
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes what is buffered; returns the bytes written in all, and whether any was
    /// not zero.
    pub fn finish(mut self) -> io::Result<(u64, bool)> {
        self.flush_buffer()?;
        Ok((self.written, self.data))
    }
}

impl Write for SparseWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = self.end - self.start - self.written;
        if data.len() as u64 > room {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "decompresses to more than the {} bytes its manifest declares",
                    self.end - self.start
                ),
            ));
        }
        let n = data.len().min(BUFFER - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        self.written += n as u64;
        if self.buf.len() == BUFFER {
            self.flush_buffer()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes `to..to+len` of `file` read as zeros: a hole, or written zeros where the file
/// system cannot punch.
pub fn zero_range(file: &File, to: u64, len: u64) -> io::Result<()> {
    if punch_hole(file, to, len)? {
        return Ok(());
    }
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(zeros.len());
        file.write_all_at(&zeros[..n], to + at)?;
        at += n as u64;
    }
    Ok(())
}

/// Copies `len` bytes at `from` to `to` within one file, holes kept (a blob listed at
/// several offsets is fetched once and copied).
pub fn copy_within(file: &File, from: u64, to: u64, len: u64) -> io::Result<()> {
    let mut w = SparseWriter::new(file, to, to + len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], from + at)?;
        w.write_all(&buf[..n])?;
        at += n as u64;
    }
    w.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn zero_blocks_become_holes_and_stale_data_goes() {
        let t = tempfile::tempdir().unwrap();
        let f = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(t.path().join("d"))
            .unwrap();
        let size = 64u64 << 20;
        f.set_len(size).unwrap();
        // Stale data from an interrupted write, where the part has zeros.
        f.write_all_at(&[9u8; 1 << 20], 20 << 20).unwrap();
        let mut w = SparseWriter::new(&f, 16 << 20, 48 << 20).unwrap();
        let mut part = vec![0u8; 32 << 20];
        part[5] = 1;
        part[(30 << 20) + 7] = 2;
        for piece in part.chunks(1000) {
            w.write_all(piece).unwrap();
        }
        assert!(w.write_all(&[0]).is_err(), "nothing past the part's end");
        assert_eq!(w.finish().unwrap(), (32 << 20, true));
        let mut back = vec![0u8; 32 << 20];
        f.read_exact_at(&mut back, 16 << 20).unwrap();
        assert!(back == part, "content as written, stale bytes gone");
        let allocated = f.metadata().unwrap().blocks() * 512;
        assert!(
            allocated <= 256 << 10,
            "two 64 KiB blocks, not 32 MiB: {allocated}"
        );

        copy_within(&f, 16 << 20, 0, 16 << 20).unwrap();
        let mut first = vec![0u8; 16 << 20];
        f.read_exact_at(&mut first, 0).unwrap();
        assert!(first[..] == part[..16 << 20]);
        assert!(f.metadata().unwrap().blocks() * 512 <= 512 << 10);
    }
}
