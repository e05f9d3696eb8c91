//! Writes an empty qcow2 (version 3) overlay on top of a raw backing file: a container's
//! writable layer. The format is small when empty (header, one refcount table and block,
//! an all-zero L1 table), so writing it directly saves spawning `qemu-img` on every start.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
const HEADER_LEN: u32 = 104;
const EXT_BACKING_FORMAT: u32 = 0xE279_2ACA;
// Cluster 0: header; 1: refcount table; 2: refcount block; 3..: L1 table.
const REFCOUNT_TABLE: u64 = CLUSTER;
const REFCOUNT_BLOCK: u64 = 2 * CLUSTER;
const L1_TABLE: u64 = 3 * CLUSTER;

/// Creates `out`, a qcow2 image of `size` bytes whose unwritten clusters read from the
/// raw file `backing` (an absolute path).
pub fn create_overlay(backing: &Path, size: u64, out: &Path) -> io::Result<()> {
    let backing_name = backing.as_os_str().as_encoded_bytes();
    if !backing.is_absolute() || backing_name.len() > 1023 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the backing file must be an absolute path of at most 1023 bytes",
        ));
    }
    // Each L2 table maps CLUSTER/8 clusters.
    let l2_coverage = CLUSTER * (CLUSTER / 8);
    let l1_entries = size.div_ceil(l2_coverage).max(1);
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let total_clusters = 3 + l1_clusters;
    if total_clusters > CLUSTER / 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "disk too large",
        ));
    }

    let mut header = Vec::with_capacity(CLUSTER as usize);
    let be32 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    let be64 = |v: &mut Vec<u8>, x: u64| v.extend_from_slice(&x.to_be_bytes());
    header.extend_from_slice(b"QFI\xfb");
    be32(&mut header, 3); // version
    let backing_offset_pos = header.len();
    be64(&mut header, 0); // backing_file_offset, filled in below
    be32(&mut header, backing_name.len() as u32);
    be32(&mut header, CLUSTER_BITS);
    be64(&mut header, size);
    be32(&mut header, 0); // no encryption
    be32(&mut header, l1_entries as u32);
    be64(&mut header, L1_TABLE);
    be64(&mut header, REFCOUNT_TABLE);
    be32(&mut header, 1); // refcount table clusters
    be32(&mut header, 0); // snapshots
    be64(&mut header, 0);
    be64(&mut header, 0); // incompatible features
    be64(&mut header, 0); // compatible features
    be64(&mut header, 0); // autoclear features
    be32(&mut header, 4); // refcount_order: 16-bit refcounts
    be32(&mut header, HEADER_LEN);
    debug_assert_eq!(header.len(), HEADER_LEN as usize);
    // Header extension: the backing file's format, so QEMU never probes it.
    be32(&mut header, EXT_BACKING_FORMAT);
    be32(&mut header, 3);
    header.extend_from_slice(b"raw\0\0\0\0\0");
    be32(&mut header, 0); // end of extensions
    be32(&mut header, 0);
    let backing_offset = header.len() as u64;
    header[backing_offset_pos..backing_offset_pos + 8]
        .copy_from_slice(&backing_offset.to_be_bytes());
    header.extend_from_slice(backing_name);
    header.resize(CLUSTER as usize, 0);

    let mut refcount_table = vec![0u8; CLUSTER as usize];
    refcount_table[..8].copy_from_slice(&REFCOUNT_BLOCK.to_be_bytes());
    let mut refcount_block = vec![0u8; CLUSTER as usize];
    for c in 0..total_clusters as usize {
        refcount_block[c * 2..c * 2 + 2].copy_from_slice(&1u16.to_be_bytes());
    }

    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)?;
    let written = (|| {
        f.write_all(&header)?;
        f.write_all(&refcount_table)?;
        f.write_all(&refcount_block)?;
        // The L1 table is all zeros: a hole that reads as zeros is enough.
        f.set_len(L1_TABLE + l1_clusters * CLUSTER)
    })();
    if written.is_err() {
        let _ = fs::remove_file(out);
    }
    written
}

/// The backing file a qcow2 image names, read from its header (a kept writable layer
/// must still find the image it was made on).
pub fn backing_file(image: &Path) -> io::Result<Option<PathBuf>> {
    let mut header = [0u8; 20];
    let mut f = fs::File::open(image)?;
    f.read_exact(&mut header)?;
    if &header[..4] != b"QFI\xfb" {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a qcow2 image",
        ));
    }
    let offset = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    let len = u32::from_be_bytes(header[16..20].try_into().expect("4 bytes"));
    if offset == 0 || len == 0 {
        return Ok(None);
    }
    if len > 1023 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "backing file name too long",
        ));
    }
    let mut name = vec![0u8; len as usize];
    use std::io::Seek;
    f.seek(io::SeekFrom::Start(offset))?;
    f.read_exact(&mut name)?;
    use std::os::unix::ffi::OsStringExt;
    Ok(Some(PathBuf::from(std::ffi::OsString::from_vec(name))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str], path: &Path) -> Option<std::process::Output> {
        Command::new("qemu-img").args(args).arg(path).output().ok()
    }

    #[test]
    fn qemu_img_accepts_the_overlay_and_reads_through_to_the_base() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base,1.raw");
        let size = (2u64 << 30) + (7 << 20); // spans several L2 tables
        let f = fs::File::create(&base).unwrap();
        f.set_len(size).unwrap();
        drop(f);
        fs::OpenOptions::new()
            .write(true)
            .open(&base)
            .and_then(|mut f| {
                use std::io::{Seek, SeekFrom};
                f.seek(SeekFrom::Start(1 << 20))?;
                f.write_all(b"from the base")
            })
            .unwrap();
        let overlay = t.path().join("overlay.qcow2");
        create_overlay(&base, size, &overlay).unwrap();
        assert!(
            create_overlay(&base, size, &overlay).is_err(),
            "never overwrites"
        );

        let Some(check) = qemu_img(&["check"], &overlay) else {
            eprintln!("qemu-img is not installed; the format checks are skipped");
            return;
        };
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stdout)
        );
        let info = qemu_img(&["info", "--output=json"], &overlay).unwrap();
        let info = String::from_utf8_lossy(&info.stdout).replace(char::is_whitespace, "");
        assert!(info.contains(&format!("\"virtual-size\":{size}")), "{info}");
        assert!(
            info.contains("\"backing-filename-format\":\"raw\""),
            "{info}"
        );
        assert!(
            info.contains(&format!("\"backing-filename\":\"{}\"", base.display())),
            "{info}"
        );
        // Reading through the overlay shows the base's bytes.
        let read = Command::new("qemu-io")
            .args(["-r", "-f", "qcow2", "-c", "read -v 1048576 13"])
            .arg(&overlay)
            .output()
            .unwrap();
        let dump = String::from_utf8_lossy(&read.stdout);
        assert!(
            dump.contains("66 72 6f 6d 20 74 68 65 20 62 61 73 65"),
            "{dump}"
        );
    }

    #[test]
    fn relative_backing_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let e = create_overlay(Path::new("base.raw"), 1 << 20, &t.path().join("o")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn the_backing_file_reads_back_from_the_header() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base.ext4");
        fs::write(&base, vec![0u8; 1 << 20]).unwrap();
        let overlay = t.path().join("layer.qcow2");
        create_overlay(&base, 1 << 30, &overlay).unwrap();
        assert_eq!(backing_file(&overlay).unwrap(), Some(base.clone()));
        assert!(
            backing_file(&base).is_err(),
            "a raw file is not a qcow2 image"
        );
    }
}
