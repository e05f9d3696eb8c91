//! Boot assets: the guest kernel, the initramfs holding cabin-init, and the warm pool's
//! scratch disk holding it too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cabin_image::cpio::CpioWriter;
use sha2::{Digest, Sha256};

use cabin_base::paths::{locate, Unlocated};
use cabin_base::{Host, Paths};

#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("no guest kernel found (looked at {looked}); build it with `scripts/build-kernel.sh`, or point CABIN_KERNEL (or --kernel) at one")]
    NoKernel { looked: String },
    #[error("the guest kernel {0} does not exist")]
    KernelMissing(PathBuf),
    #[error("cabin-init (the guest's init) was not found (looked at {looked}); build it with `scripts/build-init.sh`, or point CABIN_INIT at it")]
    NoInit { looked: String },
    #[error("{0} is not a statically linked executable, so it cannot run in the guest; build it with `scripts/build-init.sh`")]
    InitNotStatic(PathBuf),
    #[error("building the initramfs in {dir}: {source}")]
    Initramfs { dir: PathBuf, source: io::Error },
    #[error("building the pool's warm-up disk in {dir}: {source}")]
    WarmUpDisk { dir: PathBuf, source: io::Error },
}

/// Finds the guest kernel: the explicit choice, else the host's (`CABIN_KERNEL`), else
/// the data directory's `kernel/vmlinux`, else an installed layout's
/// `lib/cabin/vmlinux`, else the build cache's `current` kernel.
pub fn locate_kernel(explicit: Option<&Path>, host: &Host) -> Result<PathBuf, AssetError> {
    let paths = &host.paths;
    let named = explicit
        .map(Path::to_path_buf)
        .or_else(|| host.kernel.clone());
    let mut candidates = vec![paths.kernels().join("vmlinux")];
    candidates.extend(cabin_base::paths::installed_lib_dir().map(|d| d.join("vmlinux")));
    candidates.push(paths.kernel_builds().join("current/vmlinux"));
    locate(named, &candidates).map_err(|u| match u {
        Unlocated::NamedMissing(p) => AssetError::KernelMissing(p),
        Unlocated::NoneOf(looked) => AssetError::NoKernel { looked },
    })
}

/// Finds cabin-init: the host's (`CABIN_INIT`), else beside the running program or in
/// its installed layout's `lib/cabin`, else in the source tree's static build output.
pub fn locate_init(host: &Host) -> Result<PathBuf, AssetError> {
    if let Some(p) = host.init.clone() {
        return check_static(p);
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    let mut candidates = vec![
        exe_dir.join("cabin-init"),
        cabin_base::paths::installed_lib_dir_of(&exe_dir.join("cabin")).join("cabin-init"),
    ];
    // target/{debug,release}/cabin -> target/x86_64-unknown-linux-gnu/release/cabin-init
    if let Some(target) = exe_dir.parent() {
        candidates.push(target.join("x86_64-unknown-linux-gnu/release/cabin-init"));
    }
    if let Some(target) = exe_dir.parent().and_then(Path::parent) {
        // target/debug/deps/<test binary> in cargo's integration tests
        candidates.push(target.join("x86_64-unknown-linux-gnu/release/cabin-init"));
    }
    candidates.push("/usr/lib/cabin/cabin-init".into());
    for c in &candidates {
        if c.is_file() && is_static_elf(c) {
            return Ok(c.clone());
        }
    }
    Err(AssetError::NoInit {
        looked: candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// How much of an ELF file [`is_static_elf`] reads: its header and program headers.
const ELF_HEADERS_READ: u64 = 64 * 1024;

fn check_static(p: PathBuf) -> Result<PathBuf, AssetError> {
    if !p.is_file() {
        return Err(AssetError::NoInit {
            looked: p.display().to_string(),
        });
    }
    if !is_static_elf(&p) {
        return Err(AssetError::InitNotStatic(p));
    }
    Ok(p)
}

/// An ELF executable without a PT_INTERP program header needs no dynamic loader. Only
/// the header and the program headers are read (every start checks; the file is a few
/// MB).
pub fn is_static_elf(p: &Path) -> bool {
    use std::io::Read;
    let Ok(file) = fs::File::open(p) else {
        return false;
    };
    let mut data = Vec::new();
    // The program headers follow the ELF header in any executable a linker makes.
    if file.take(ELF_HEADERS_READ).read_to_end(&mut data).is_err() {
        return false;
    }
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let Some(o) = phoff.checked_add(i * phentsize) else {
            return false;
        };
        if o.saturating_add(4) > data.len() {
            return false;
        }
        if u32::from_le_bytes([data[o], data[o + 1], data[o + 2], data[o + 3]]) == 3 {
            return false; // PT_INTERP
        }
    }
    true
}

/// What names a cabin-init build in the caches made from it: its path, size,
/// modification time and inode, hashed (a rebuilt init gets new entries; a warm start
/// reads no more than one stat).
fn build_key(init: &Path) -> io::Result<String> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(init)?;
    let mut key = Sha256::new();
    key.update(init.as_os_str().as_bytes());
    for v in [
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ino(),
    ] {
        key.update(v.to_le_bytes());
    }
    Ok(key.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The warm pool's scratch disk for this cabin-init (see `vm::WarmVm`): an ext4 file
/// system holding the init binary under the name it exits at once with
/// ([`cabin_proto::WARM_UP_ARGV0`]), built once per init build into the root file
/// system cache.
pub fn warm_up_disk(init: &Path, paths: &Paths) -> Result<PathBuf, AssetError> {
    let dir = paths.rootfs_cache();
    let err = |source| AssetError::WarmUpDisk {
        dir: dir.clone(),
        source,
    };
    let image = dir.join(format!("warm-up-{}.ext4", build_key(init).map_err(err)?));
    if image.is_file() {
        return Ok(image);
    }
    // Named as cabin's other half-built files are (`.building-PID-`).
    let tree = dir.join(format!(".building-{}-warm-up", std::process::id()));
    let build = || -> io::Result<()> {
        fs::create_dir_all(&tree)?;
        let program = tree.join(cabin_proto::WARM_UP_ARGV0);
        fs::copy(init, &program)?;
        fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        cabin_image::rootfs::build_image(&tree, &image).map_err(io::Error::other)
    };
    let built = build();
    let _ = fs::remove_dir_all(&tree);
    built.map_err(err)?;
    Ok(image)
}

/// Returns the initramfs for this cabin-init, building and caching it on first use. The
/// cache key is the init binary's path, size and modification time (a rebuilt init gets
/// a new archive), so a warm start reads no more than one stat.
pub fn initramfs(init: &Path, paths: &Paths) -> Result<PathBuf, AssetError> {
    let dir = paths.initramfs_cache();
    let err = |source| AssetError::Initramfs {
        dir: dir.clone(),
        source,
    };
    let name = build_key(init).map_err(err)?;
    let path = dir.join(format!("{name}.cpio"));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(err)?;
    let binary = fs::read(init).map_err(err)?;
    let tmp = dir.join(format!(".building-{}-{name}.cpio", std::process::id()));
    let write = || -> io::Result<()> {
        // Readable by anyone (it holds only cabin-init): a confined QEMU re-opens it
        // through its descriptor, which checks the mode, whatever cabin's umask.
        let file = fs::File::create(&tmp)?;
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        let mut w = CpioWriter::new(io::BufWriter::new(file));
        for d in ["dev", "proc", "sys", "run", "tmp"] {
            w.dir(d, 0o755)?;
        }
        // The kernel opens /dev/console for init's stdio before devtmpfs is mounted.
        w.char_device("dev/console", 0o600, 5, 1)?;
        w.file("init", 0o755, &binary)?;
        w.finish()?
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        err(e)
    })?;
    remove_old_archives(&dir, &path);
    Ok(path)
}

/// A new init makes the archives of older ones useless (one per init build, a few MB
/// each). Archives touched in the last ten minutes stay: a VM that is starting right now
/// may be about to hand one to QEMU.
fn remove_old_archives(dir: &Path, keep: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let cutoff = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    for e in entries.flatten() {
        let p = e.path();
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t < cutoff);
        if p != keep && old && p.extension().is_some_and(|x| x == "cpio") {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_executables_are_told_apart() {
        // This test binary is dynamically linked; busybox-static (when installed) is not.
        let me = std::env::current_exe().unwrap();
        assert!(!is_static_elf(&me));
        let bb = Path::new("/bin/busybox");
        if bb.exists() {
            assert!(is_static_elf(bb));
        }
        assert!(!is_static_elf(Path::new("/etc/passwd")));
    }

    #[test]
    fn an_elf_header_pointing_past_its_file_or_the_address_space_is_not_static() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("odd");
        let mut header = vec![0u8; 64];
        header[..5].copy_from_slice(b"\x7fELF\x02");
        header[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        header[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        for phoff in [u64::MAX - 8, 1 << 20] {
            header[0x20..0x28].copy_from_slice(&phoff.to_le_bytes());
            fs::write(&f, &header).unwrap();
            assert!(!is_static_elf(&f), "phoff {phoff:#x}");
        }
    }

    #[test]
    fn initramfs_is_cached_per_init_binary() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::at(t.path());
        let init = t.path().join("init-bin");
        fs::write(&init, b"\x7fELF fake").unwrap();
        let a = initramfs(&init, &paths).unwrap();
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        assert_eq!(initramfs(&init, &paths).unwrap(), a);
        assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), mtime);
        // An archive of a long-gone init is removed when a new one is built; the one
        // made a moment ago stays (a VM may be starting with it).
        let stale = paths
            .initramfs_cache()
            .join("0123456789abcdef01234567.cpio");
        let f = fs::File::create(&stale).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(86400))
            .unwrap();
        fs::write(&init, b"\x7fELF other, longer").unwrap();
        let b = initramfs(&init, &paths).unwrap();
        assert_ne!(b, a);
        assert!(a.exists() && b.exists() && !stale.exists());
    }

    #[test]
    fn explicit_kernel_must_exist() {
        let t = tempfile::tempdir().unwrap();
        let host = Host::with_paths(Paths::at(t.path()));
        let e = locate_kernel(Some(Path::new("/nonexistent/vmlinux")), &host).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/vmlinux"));
    }
}
