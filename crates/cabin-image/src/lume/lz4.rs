//! Apple's LZ4 stream (`COMPRESSION_LZ4`), the compression of Lume's legacy disk
//! layers. It is not the LZ4 frame format: a sequence of blocks, each
//!
//! - `bv41`, u32-LE decoded size, u32-LE encoded size, then a raw LZ4 block, or
//! - `bv4-`, u32-LE size, then that many bytes stored as they are,
//!
//! ended by `bv4$`. Block sizes are bounded (Apple writes 64 KiB blocks), every block
//! must decode to exactly its declared size, and a stream without its end marker, with
//! bytes after it, or with an unknown block is an error.

use std::io::{self, Read};

/// Largest decoded block accepted.
pub const MAX_BLOCK: usize = 4 << 20;

const COMPRESSED: &[u8; 4] = b"bv41";
const STORED: &[u8; 4] = b"bv4-";
const END: &[u8; 4] = b"bv4$";

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt LZ4 stream: {}", msg.into()),
    )
}

/// Decodes an Apple LZ4 stream read from `inner`.
pub struct Lz4Decoder<R> {
    inner: R,
    block: Vec<u8>,
    encoded: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl<R: Read> Lz4Decoder<R> {
    pub fn new(inner: R) -> Self {
        Lz4Decoder {
            inner,
            block: Vec::new(),
            encoded: Vec::new(),
            pos: 0,
            ended: false,
        }
    }

    fn read_u32(&mut self) -> io::Result<usize> {
        let mut b = [0u8; 4];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| bad("truncated block header"))?;
        Ok(u32::from_le_bytes(b) as usize)
    }

    /// Reads the next block into `self.block`; false at the end marker.
    fn next_block(&mut self) -> io::Result<bool> {
        let mut magic = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut magic[got..]) {
                Ok(0) => return Err(bad("the stream ends without its end marker (bv4$)")),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match &magic {
            END => {
                let mut extra = [0u8; 1];
                if self.inner.read(&mut extra)? != 0 {
                    return Err(bad("data after the end marker"));
                }
                Ok(false)
            }
            COMPRESSED => {
                let decoded = self.read_u32()?;
                let encoded = self.read_u32()?;
                if decoded > MAX_BLOCK || encoded > MAX_BLOCK {
                    return Err(bad(format!(
                        "a block of {decoded}/{encoded} bytes (at most {MAX_BLOCK})"
                    )));
                }
                self.encoded.resize(encoded, 0);
                self.inner
                    .read_exact(&mut self.encoded)
                    .map_err(|_| bad("truncated block"))?;
                self.block.resize(decoded, 0);
                let n = lz4_flex::block::decompress_into(&self.encoded, &mut self.block)
                    .map_err(|e| bad(format!("a block does not decode ({e})")))?;
                if n != decoded {
                    return Err(bad(format!(
                        "a block decodes to {n} bytes, not the {decoded} it declares"
                    )));
                }
                Ok(true)
            }
            STORED => {
                let size = self.read_u32()?;
                if size > MAX_BLOCK {
                    return Err(bad(format!("a stored block of {size} bytes")));
                }
                self.block.resize(size, 0);
                self.inner
                    .read_exact(&mut self.block)
                    .map_err(|_| bad("truncated stored block"))?;
                Ok(true)
            }
            other => Err(bad(format!("unknown block magic {:02x?}", other))),
        }
    }
}

impl<R: Read> Read for Lz4Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.block.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            self.pos = 0;
            self.block.clear();
            if !self.next_block()? {
                self.ended = true;
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.pos);
        buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Encodes `data` as an Apple LZ4 stream in 64 KiB blocks (what Lume's legacy push
/// wrote; used to make legacy images in tests and tools).
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in data.chunks(64 << 10) {
        let c = lz4_flex::block::compress(block);
        if c.len() < block.len() {
            out.extend_from_slice(COMPRESSED);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        } else {
            out.extend_from_slice(STORED);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(block);
        }
    }
    out.extend_from_slice(END);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(b: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Lz4Decoder::new(b).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn round_trip_with_compressed_and_stored_blocks() {
        let mut data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        // Incompressible bytes make a stored block.
        let mut x = 12345u32;
        data.extend((0..70_000).map(|_| {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            (x >> 16) as u8
        }));
        let enc = encode(&data);
        assert!(enc.windows(4).any(|w| w == STORED));
        assert!(enc.windows(4).any(|w| w == COMPRESSED));
        assert_eq!(decode(&enc).unwrap(), data);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let enc = encode(&vec![7u8; 100_000]);
        let msg = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert!(msg(&enc[..enc.len() - 4]).contains("without its end marker"));
        assert!(msg(&enc[..20]).contains("truncated"));
        let mut extra = enc.clone();
        extra.push(0);
        assert!(msg(&extra).contains("after the end marker"));
        assert!(msg(b"lz4!....").contains("unknown block magic"));
        let mut lie = enc.clone();
        lie[4] ^= 1; // the decoded size
        assert!(msg(&lie).contains("LZ4"));
        let mut huge = b"bv41".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&8u32.to_le_bytes());
        assert!(msg(&huge).contains("at most"));
    }
}
