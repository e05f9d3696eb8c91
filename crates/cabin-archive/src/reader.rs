//! A tar stream read header by header, with every size the archive states bounded
//! before anything is kept in memory. Only the `tar` crate's header parsing is used: its
//! own reader would read GNU long names and PAX records of any size the archive claims,
//! and takes an archive cut short at an entry boundary for a complete one.

use std::io::{self, Read};

use tar::{EntryType, Header};

use crate::Error;

/// The longest path (or link target) accepted, as Linux's PATH_MAX.
pub const MAX_PATH: usize = 4096;
/// The largest PAX extended header accepted.
const MAX_PAX: u64 = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    HardLink,
    /// Devices, pipes: never created by extraction.
    Special,
}

#[derive(Debug)]
pub struct Head {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub link: Vec<u8>,
}

pub struct TarReader<R> {
    inner: R,
    /// Data bytes of the current entry not read yet, then its padding.
    remaining: u64,
    padding: u64,
}

fn ended_early() -> Error {
    Error::archive("the archive ended early (it has no end-of-archive marker)")
}

fn read_block(r: &mut impl Read, block: &mut [u8; 512]) -> Result<(), Error> {
    r.read_exact(block).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ended_early(),
        _ => Error::io("reading the archive", e),
    })
}

fn checksum_ok(block: &[u8; 512], h: &Header) -> bool {
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                b as u32
            }
        })
        .sum();
    h.cksum().is_ok_and(|c| c == sum)
}

/// The text of a GNU long name or link entry, up to its first NUL.
fn until_nul(mut v: Vec<u8>) -> Vec<u8> {
    if let Some(i) = v.iter().position(|&b| b == 0) {
        v.truncate(i);
    }
    v
}

#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
}

/// PAX records: "LEN KEY=VALUE\n", LEN counting the whole record.
fn parse_pax(data: &[u8]) -> Result<Pax, Error> {
    let bad = || Error::archive("the archive has a malformed PAX header");
    let mut pax = Pax::default();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[space + 1..len - 1];
        rest = &rest[len..];
        let Some(eq) = record.iter().position(|&b| b == b'=') else {
            return Err(bad());
        };
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let number = || std::str::from_utf8(value).ok().map(str::to_string);
        match key {
            b"path" => pax.path = Some(value.to_vec()),
            b"linkpath" => pax.link = Some(value.to_vec()),
            b"size" => pax.size = Some(number().and_then(|s| s.parse().ok()).ok_or_else(bad)?),
            b"mtime" => {
                // Seconds with an optional fraction; the fraction is dropped.
                let s = number().ok_or_else(bad)?;
                let whole = s.split('.').next().unwrap_or("");
                pax.mtime = Some(whole.parse().map_err(|_| bad())?);
            }
            _ => {}
        }
    }
    Ok(pax)
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            remaining: 0,
            padding: 0,
        }
    }

    fn skip(&mut self, n: u64) -> Result<(), Error> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())
            .map_err(|e| Error::io("reading the archive", e))?;
        if copied != n {
            return Err(ended_early());
        }
        Ok(())
    }

    /// The data of a metadata entry, at most `limit` bytes.
    fn read_meta(&mut self, size: u64, limit: u64, what: &str) -> Result<Vec<u8>, Error> {
        if size > limit {
            return Err(Error::archive(format!(
                "the archive has a {what} of {size} bytes (at most {limit} are accepted)"
            )));
        }
        let mut v = vec![0u8; size as usize];
        self.inner.read_exact(&mut v).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => ended_early(),
            _ => Error::io("reading the archive", e),
        })?;
        self.skip(padding(size))?;
        Ok(v)
    }

    /// The next entry, or None at the end-of-archive marker. Whatever the caller did
    /// not read of the previous entry's data is skipped.
    pub fn next(&mut self) -> Result<Option<Head>, Error> {
        self.skip(self.remaining + self.padding)?;
        self.remaining = 0;
        self.padding = 0;
        let mut long_path = None;
        let mut long_link = None;
        let mut pax = Pax::default();
        loop {
            let mut block = [0u8; 512];
            read_block(&mut self.inner, &mut block)?;
            if block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            let h = Header::from_byte_slice(&block);
            if !checksum_ok(&block, h) {
                return Err(Error::archive(
                    "the archive is damaged or not a tar archive (a header's checksum is wrong)",
                ));
            }
            let size = h
                .entry_size()
                .map_err(|e| Error::archive(format!("the archive has a bad entry size: {e}")))?;
            let kind = match h.entry_type() {
                EntryType::GNULongName => {
                    let v = self.read_meta(size, MAX_PATH as u64 + 1, "long file name")?;
                    long_path = Some(until_nul(v));
                    continue;
                }
                EntryType::GNULongLink => {
                    let v = self.read_meta(size, MAX_PATH as u64 + 1, "long link name")?;
                    long_link = Some(until_nul(v));
                    continue;
                }
                EntryType::XHeader => {
                    pax = parse_pax(&self.read_meta(size, MAX_PAX, "PAX header")?)?;
                    continue;
                }
                EntryType::XGlobalHeader => {
                    self.skip(size + padding(size))?;
                    continue;
                }
                EntryType::Regular | EntryType::Continuous => Kind::File,
                EntryType::Directory => Kind::Dir,
                EntryType::Symlink => Kind::Symlink,
                EntryType::Link => Kind::HardLink,
                EntryType::Char | EntryType::Block | EntryType::Fifo => Kind::Special,
                other => {
                    return Err(Error::archive(format!(
                        "the archive has an entry of a type cabin does not extract ({:?})",
                        other.as_byte() as char
                    )))
                }
            };
            let path = pax
                .path
                .take()
                .or(long_path.take())
                .unwrap_or_else(|| h.path_bytes().into_owned());
            let link = pax
                .link
                .take()
                .or(long_link.take())
                .or_else(|| h.link_name_bytes().map(|l| l.into_owned()))
                .unwrap_or_default();
            if path.len() > MAX_PATH || link.len() > MAX_PATH {
                return Err(Error::archive(
                    "the archive has a path longer than 4096 bytes",
                ));
            }
            let size = pax.size.unwrap_or(size);
            let mode = h
                .mode()
                .map_err(|e| Error::archive(format!("the archive has a bad mode: {e}")))?;
            let mtime = match pax.mtime {
                Some(m) => m,
                None => h
                    .mtime()
                    .map(|m| m.min(i64::MAX as u64) as i64)
                    .unwrap_or(0),
            };
            self.remaining = size;
            self.padding = padding(size);
            return Ok(Some(Head {
                path,
                kind,
                size,
                mode: mode & 0o7777,
                mtime,
                link,
            }));
        }
    }

    /// The current entry's data.
    pub fn data(&mut self) -> EntryData<'_, R> {
        EntryData { r: self }
    }
}

fn padding(size: u64) -> u64 {
    (512 - size % 512) % 512
}

pub struct EntryData<'a, R> {
    r: &'a mut TarReader<R>,
}

impl<R: Read> Read for EntryData<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.r.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.r.remaining.min(usize::MAX as u64) as usize);
        let n = self.r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ended in the middle of a file",
            ));
        }
        self.r.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_parse_and_bad_ones_are_refused() {
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            // The length counts its own digits.
            let mut n = body.len() + 1;
            while body.len() + n.to_string().len() != n {
                n = body.len() + n.to_string().len();
            }
            format!("{n}{body}")
        };
        let data = format!(
            "{}{}{}{}",
            rec("path", "a/very/long/name"),
            rec("size", "12"),
            rec("mtime", "1700000000.5"),
            rec("uname", "x")
        );
        let p = parse_pax(data.as_bytes()).unwrap();
        assert_eq!(p.path.as_deref(), Some(&b"a/very/long/name"[..]));
        assert_eq!(p.size, Some(12));
        assert_eq!(p.mtime, Some(1_700_000_000));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"abc").is_err());
        assert!(parse_pax(b"8 size=x\n").is_err());
    }
}
