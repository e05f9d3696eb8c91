//! Full VMs' disks for the VM image tests: small VMs with data where a test wants it,
//! and what a disk holds and takes (content hash without reading holes, allocation).

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::{stdout, vm_ok};

pub fn vms_dir(data: &Path) -> PathBuf {
    data.join("vms")
}

/// Compressible bytes that differ with `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut i = 0u64;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(format!("seed {seed} line {i} value {:x}\n", x % 4096).as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

pub fn write_at(path: &Path, offset: u64, data: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, offset)
        .unwrap();
}

/// The sha256 of a disk's content, read without its holes: its size, then each
/// non-zero 4 KiB block with its offset (equal for two files exactly when their bytes
/// are, and quick on a 10 GB disk holding a few MB).
pub fn sha256(path: &Path) -> String {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as i64;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut sink = std::io::BufWriter::new(child.stdin.take().unwrap());
    sink.write_all(&len.to_le_bytes()).unwrap();
    let mut pos = 0i64;
    let mut buf = vec![0u8; 4096];
    while pos < len {
        // SAFETY: lseek on our descriptor; reads are positional.
        let data = unsafe { libc::lseek(f.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            break;
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) }.min(len);
        let mut at = data / 4096 * 4096;
        while at < end {
            let n = f.read_at(&mut buf, at as u64).unwrap();
            if buf[..n].iter().any(|&b| b != 0) {
                sink.write_all(&at.to_le_bytes()).unwrap();
                sink.write_all(&buf[..n]).unwrap();
            }
            at += 4096;
        }
        pos = end;
    }
    drop(sink);
    let o = child.wait_with_output().unwrap();
    stdout(&o).split_whitespace().next().unwrap().to_string()
}

pub fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

pub fn vm_config(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap()
}

/// Creates a VM and gives its disk `size` bytes (create's minimum is 10 GB; the
/// smaller disks keep the tests quick).
pub fn make_vm(data: &Path, name: &str, size: u64) -> PathBuf {
    vm_ok(
        data,
        &[
            "create",
            name,
            "--cpu",
            "2",
            "--memory",
            "2GB",
            "--disk-size",
            "10GB",
        ],
    );
    let dir = vms_dir(data).join(name);
    if size != 10 << 30 {
        std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("disk.img"))
            .unwrap()
            .set_len(size)
            .unwrap();
        let mut c = vm_config(&dir);
        c["diskSize"] = json!(size);
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec_pretty(&c).unwrap(),
        )
        .unwrap();
    }
    dir
}
