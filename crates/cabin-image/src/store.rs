//! The content-addressed image store: blobs by sha256, names to manifest digests, and one
//! ready-to-use ext4 disk per image.
//!
//! ```text
//! <data>/images/blobs/sha256/<hex>     every blob, verified before it becomes visible
//! <data>/images/ingest/                blobs being written (removed if abandoned)
//! <data>/images/refs.json              {"name:tag": "sha256:<manifest hex>"}
//! <data>/images/disks/<hex>.ext4       the unpacked root filesystem of a manifest
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {source}{}", no_space_hint(.source))]
    Io { path: PathBuf, source: io::Error },
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    BadDigest(String),
    #[error("digest mismatch: expected {expected}, the content hashes to {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {0} is not in the store")]
    MissingBlob(String),
    #[error("blob {digest} is larger than {limit} bytes")]
    TooLarge { digest: String, limit: u64 },
    #[error("the image store's name index {0} is corrupt: {1}; remove it to start over (the blobs stay)")]
    CorruptRefs(PathBuf, String),
}

fn no_space_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        "; free some space (or point CABIN_DATA_DIR elsewhere) and run the same command again: it resumes"
    } else {
        ""
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The hex part of a "sha256:<hex>" digest, validated.
pub fn digest_hex(digest: &str) -> Result<&str, StoreError> {
    match digest.strip_prefix("sha256:") {
        Some(h)
            if h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(h)
        }
        _ => Err(StoreError::BadDigest(digest.to_string())),
    }
}

struct HashSink<'a>(&'a mut Sha256);

impl Write for HashSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Store {
    root: PathBuf,
    /// Set once this handle has swept what dead writers left (its first write).
    swept: std::sync::Once,
}

/// Writes a blob while hashing it; it enters the store only through [`BlobWriter::commit`].
pub struct BlobWriter {
    file: fs::File,
    path: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed (or committed: then the path is gone already).
        let _ = fs::remove_file(&self.path);
    }
}

impl Store {
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        // The store is its owner's only: images may hold secrets, and no other user
        // (a VM's own QEMU user included) reads them by path.
        cabin_base::files::create_private_dir(&root).map_err(io_err(&root))?;
        for d in ["blobs/sha256", "ingest", "disks", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        Ok(Store {
            root,
            swept: std::sync::Once::new(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self.root.join("blobs/sha256").join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.is_file()).unwrap_or(false)
    }

    /// What writers that were killed left in the store: blobs half written
    /// (`ingest/PID-...`; resumable downloads are `ingest/partial-*` and stay) and name
    /// indexes half replaced (`refs.json.PID`), of processes that are gone.
    pub fn abandoned_writes(&self) -> Vec<PathBuf> {
        let writers = crate::rootfs::abandoned(&self.root.join("ingest"), "")
            .into_iter()
            .filter(|p| {
                // Any name not starting with a live pid counts for `abandoned` without a
                // prefix: keep to the writers' `PID-...` names.
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                name.split('-')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok())
            });
        writers
            .chain(crate::rootfs::abandoned(&self.root, "refs.json."))
            .collect()
    }

    /// Removes [`Store::abandoned_writes`], once per handle, before its first write: a
    /// killed command's retry leaves the store as clean as an uninterrupted run.
    fn sweep_abandoned_writes(&self) {
        self.swept.call_once(|| {
            for path in self.abandoned_writes() {
                let _ = fs::remove_file(path);
            }
        });
    }

    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        self.sweep_abandoned_writes();
        let dir = self.root.join("ingest");
        let path = dir.join(format!(
            "{}-{}",
            std::process::id(),
            crate::rootfs::unique_suffix()
        ));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(BlobWriter {
            file,
            path,
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Verifies the written content (against `expected` when given) and makes the blob
    /// visible. Returns its digest and size.
    pub fn commit(
        &self,
        mut w: BlobWriter,
        expected: Option<&str>,
    ) -> Result<(String, u64), StoreError> {
        w.file.flush().map_err(io_err(&w.path))?;
        w.file.sync_all().map_err(io_err(&w.path))?;
        let digest = format!("sha256:{}", hex(&w.hasher.clone().finalize()));
        if let Some(e) = expected {
            if e != digest {
                return Err(StoreError::DigestMismatch {
                    expected: e.to_string(),
                    actual: digest,
                });
            }
        }
        let dest = self.blob_path(&digest)?;
        fs::rename(&w.path, &dest).map_err(io_err(&dest))?;
        Ok((digest, w.size))
    }

    /// Where a blob being downloaded accumulates; it survives an interrupted download so
    /// the next attempt resumes from its length.
    pub fn partial_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root
            .join("ingest")
            .join(format!("partial-{}", digest_hex(digest)?)))
    }

    /// Verifies a finished download and moves it into the store. A file whose content does
    /// not hash to `digest` is deleted.
    pub fn commit_file(&self, path: &Path, digest: &str) -> Result<(), StoreError> {
        let mut f = fs::File::open(path).map_err(io_err(path))?;
        let mut h = Sha256::new();
        io::copy(&mut f, &mut HashSink(&mut h)).map_err(io_err(path))?;
        let actual = format!("sha256:{}", hex(&h.finalize()));
        if actual != digest {
            let _ = fs::remove_file(path);
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        let dest = self.blob_path(digest)?;
        fs::rename(path, &dest).map_err(io_err(&dest))
    }

    pub fn put_bytes(&self, data: &[u8]) -> Result<String, StoreError> {
        let digest = format!("sha256:{}", sha256_hex(data));
        if self.has_blob(&digest) {
            return Ok(digest);
        }
        let mut w = self.blob_writer()?;
        w.write_all(data).map_err(io_err(&w.path.clone()))?;
        Ok(self.commit(w, Some(&digest))?.0)
    }

    /// Reads a small blob (manifest, config) whole, checking its digest again: a blob
    /// damaged on disk is an error, not input.
    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest)?;
        let f = fs::File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::MissingBlob(digest.to_string())
            } else {
                StoreError::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
        let mut data = Vec::new();
        f.take(limit + 1)
            .read_to_end(&mut data)
            .map_err(io_err(&path))?;
        if data.len() as u64 > limit {
            return Err(StoreError::TooLarge {
                digest: digest.to_string(),
                limit,
            });
        }
        let actual = format!("sha256:{}", sha256_hex(&data));
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        Ok(data)
    }

    fn refs_path(&self) -> PathBuf {
        self.root.join("refs.json")
    }

    pub fn refs(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let path = self.refs_path();
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| StoreError::CorruptRefs(path, e.to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(StoreError::Io { path, source: e }),
        }
    }

    /// Changes the name index under an exclusive lock, written atomically.
    pub fn update_refs<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, String>) -> T,
    ) -> Result<T, StoreError> {
        let lock_path = self.root.join("refs.lock");
        let _lock =
            cabin_base::lock::lock_path_waiting(&lock_path, cabin_base::lock::Mode::Exclusive)
                .map_err(io_err(&lock_path))?;
        self.sweep_abandoned_writes();
        let mut refs = self.refs()?;
        let out = f(&mut refs);
        let path = self.refs_path();
        let tmp = self.root.join(format!("refs.json.{}", std::process::id()));
        let data = serde_json::to_vec_pretty(&refs).expect("a map of strings serialises");
        fs::write(&tmp, data)
            .and_then(|_| fs::rename(&tmp, &path))
            .map_err(io_err(&path))?;
        Ok(out)
    }

    pub fn disk_path(&self, manifest_digest: &str) -> Result<PathBuf, StoreError> {
        Ok(self
            .root
            .join("disks")
            .join(format!("{}.ext4", digest_hex(manifest_digest)?)))
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_before_they_become_visible() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        let d = s.put_bytes(b"hello").unwrap();
        assert_eq!(d, format!("sha256:{}", sha256_hex(b"hello")));
        assert_eq!(s.read_blob(&d, 100).unwrap(), b"hello");
        assert!(matches!(
            s.read_blob(&d, 2),
            Err(StoreError::TooLarge { .. })
        ));

        let mut w = s.blob_writer().unwrap();
        w.write_all(b"other").unwrap();
        let wrong = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(
            s.commit(w, Some(&wrong)),
            Err(StoreError::DigestMismatch { .. })
        ));
        assert!(!s.has_blob(&wrong));
        assert_eq!(
            fs::read_dir(t.path().join("ingest")).unwrap().count(),
            0,
            "nothing left in ingest"
        );

        // Damage on disk is detected when read.
        fs::write(s.blob_path(&d).unwrap(), b"jello").unwrap();
        assert!(matches!(
            s.read_blob(&d, 100),
            Err(StoreError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn digests_are_validated() {
        for bad in [
            "sha256:abc",
            "md5:00",
            "sha256:../../etc/passwd",
            &format!("sha256:{}", "G".repeat(64)),
        ] {
            assert!(digest_hex(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refs_update_atomically() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::open(t.path()).unwrap();
        s.update_refs(|r| r.insert("a:latest".into(), "sha256:x".into()))
            .unwrap();
        assert_eq!(s.refs().unwrap()["a:latest"], "sha256:x");
        fs::write(t.path().join("refs.json"), "{not json").unwrap();
        assert!(matches!(s.refs(), Err(StoreError::CorruptRefs(..))));
    }
}
