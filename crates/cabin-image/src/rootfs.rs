//! A root filesystem directory as a ready-to-use ext4 disk image.
//!
//! The image is built once per fingerprint of the directory and kept in a cache; every
//! container of that directory attaches it read-only (its writes go to an overlay of its
//! own). The fingerprint covers each entry's path, type, permissions, owner, size,
//! modification and change times and link target: what `make` and rsync's quick check
//! trust, so a warm start costs one walk of the tree, not a read of every byte.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Free space the container finds in its root filesystem for its own writes. The image
/// file is sparse: unused space costs nothing on the host.
pub const WRITABLE_HEADROOM: u64 = 2 << 30;

/// Bumped whenever what `build` puts into an image changes (2: mount points added; 3:
/// /etc's mount points too).
const IMAGE_LAYOUT_VERSION: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot read the root filesystem directory {path}: {source}; check that it exists and that you may read all of it")]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("not enough free space in {dir} to build the root filesystem image: about {need_mib} MiB needed, {free_mib} MiB free; free some space or point CABIN_DATA_DIR elsewhere")]
    NoSpace {
        dir: PathBuf,
        need_mib: u64,
        free_mib: u64,
    },
    #[error("mkfs.ext4 is missing: install it with `apt-get install e2fsprogs`")]
    MkfsMissing,
    #[error("building the root filesystem image from {dir} failed: {detail}")]
    Build { dir: PathBuf, detail: String },
    #[error("root filesystem image cache {dir}: {source}")]
    Cache { dir: PathBuf, source: io::Error },
}

#[derive(Debug, Clone)]
pub struct RootfsImage {
    pub path: PathBuf,
    pub fingerprint: String,
    /// Built by this call (false: found in the cache).
    pub built: bool,
}

struct TreeSummary {
    fingerprint: String,
    bytes: u64,
    inodes: u64,
}

fn walk(dir: &Path) -> Result<TreeSummary, RootfsError> {
    let unreadable = |path: &Path, source| RootfsError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let top = fs::symlink_metadata(dir).map_err(|e| unreadable(dir, e))?;
    if !top.is_dir() {
        return Err(RootfsError::NotADirectory(dir.to_path_buf()));
    }
    let mut hasher = Sha256::new();
    // Images built by an older layout of this code are not reused.
    hasher.update(IMAGE_LAYOUT_VERSION.to_le_bytes());
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dir.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&full)
            .map_err(|e| unreadable(&full, e))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| unreadable(&full, e))?;
        names.sort();
        for name in names {
            let rel_child = rel.join(&name);
            let path = dir.join(&rel_child);
            let m = fs::symlink_metadata(&path).map_err(|e| unreadable(&path, e))?;
            let ft = m.file_type();
            hasher.update(rel_child.as_os_str().as_bytes());
            hasher.update([0]);
            for v in [
                m.mode() as u64,
                m.uid() as u64,
                m.gid() as u64,
                m.size(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
                m.rdev(),
            ] {
                hasher.update(v.to_le_bytes());
            }
            if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| unreadable(&path, e))?;
                hasher.update(target.as_os_str().as_bytes());
                hasher.update([0]);
            } else if ft.is_file() {
                // An unreadable file would fail mkfs later; say so now, with its name.
                fs::File::open(&path).map_err(|e| unreadable(&path, e))?;
            }
            inodes += 1;
            bytes += m.size().div_ceil(4096) * 4096;
            if ft.is_dir() {
                bytes += 4096;
                stack.push(rel_child);
            }
        }
    }
    Ok(TreeSummary {
        fingerprint: hex(&hasher.finalize()[..16]),
        bytes,
        inodes,
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: a zeroed statvfs is a valid buffer for statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs into a struct we own.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// What killed cabins left in `dir`: entries named `<prefix><pid>-...` whose process is
/// gone (half-built images, staging directories, unfinished blobs).
pub(crate) fn abandoned(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else {
                return false;
            };
            let pid = rest
                .split('-')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            !cabin_base::spawn::process_alive(pid)
        })
        .map(|e| e.path())
        .collect()
}

/// Removes a file, or a directory with what it holds.
pub(crate) fn remove_any(path: &Path) -> io::Result<()> {
    if path.is_dir() && !path.is_symlink() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Removes what killed cabins left in `dir` (see [`abandoned`]).
pub(crate) fn remove_abandoned(dir: &Path, prefix: &str) {
    for path in abandoned(dir, prefix) {
        let _ = remove_any(&path);
    }
}

/// Returns the cached image for `dir`, building it first if needed.
pub fn ensure_image(dir: &Path, cache: &Path) -> Result<RootfsImage, RootfsError> {
    let summary = walk(dir)?;
    let path = cache.join(format!("{}.ext4", summary.fingerprint));
    if path.is_file() {
        return Ok(RootfsImage {
            path,
            fingerprint: summary.fingerprint,
            built: false,
        });
    }
    build_into(dir, &summary, &path)?;
    Ok(RootfsImage {
        path,
        fingerprint: summary.fingerprint,
        built: true,
    })
}

/// Builds the ext4 image of the tree `dir` at `dest` (atomically: `dest` appears only
/// complete).
pub fn build_image(dir: &Path, dest: &Path) -> Result<(), RootfsError> {
    let summary = walk(dir)?;
    build_into(dir, &summary, dest)
}

/// A suffix for temporary names that is unique within this process.
pub fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{t:x}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn build_into(dir: &Path, summary: &TreeSummary, dest: &Path) -> Result<(), RootfsError> {
    let cache = dest.parent().unwrap_or(Path::new("."));
    let cache_err = |source| RootfsError::Cache {
        dir: cache.to_path_buf(),
        source,
    };
    fs::create_dir_all(cache).map_err(cache_err)?;
    remove_abandoned(cache, ".building-");

    // ext4 metadata, slack for small files, then the container's own headroom (sparse).
    let content = summary.bytes + summary.bytes / 4 + (summary.inodes * 256) + (16 << 20);
    let size = (content + WRITABLE_HEADROOM).div_ceil(1 << 20) * (1 << 20);
    let free = free_bytes(cache).map_err(cache_err)?;
    if free < content {
        return Err(RootfsError::NoSpace {
            dir: cache.to_path_buf(),
            need_mib: content >> 20,
            free_mib: free >> 20,
        });
    }
    let tmp = cache.join(format!(
        ".building-{}-{}.ext4",
        std::process::id(),
        unique_suffix()
    ));
    if let Err(e) = build(dir, &tmp, size, summary.inodes) {
        let _ = fs::remove_file(&tmp);
        return Err(match e {
            BuildFailure::Missing => RootfsError::MkfsMissing,
            BuildFailure::Failed(detail) => {
                let now_free = free_bytes(cache).unwrap_or(u64::MAX);
                if detail.contains("No space left") || now_free < (1 << 20) {
                    RootfsError::NoSpace {
                        dir: cache.to_path_buf(),
                        need_mib: content >> 20,
                        free_mib: free >> 20,
                    }
                } else {
                    RootfsError::Build {
                        dir: dir.to_path_buf(),
                        detail,
                    }
                }
            }
        });
    }
    // Put in place only if no other build (another process, the same content) got
    // there first: the first one stays, so a disk a container's writable layer was made
    // on is never swapped for an identical copy under it (its identity would change).
    let placed = match fs::hard_link(&tmp, dest) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        r => r,
    };
    let _ = fs::remove_file(&tmp);
    placed.map_err(cache_err)
}

enum BuildFailure {
    Missing,
    Failed(String),
}

fn build(dir: &Path, out: &Path, size: u64, inodes: u64) -> Result<(), BuildFailure> {
    // Room for the image's files and as many again for the container's own.
    let inode_count = (inodes * 2 + 16384).to_string();
    mkfs(
        dir,
        out,
        size,
        &[
            "-L",
            "cabin-rootfs",
            "-N",
            &inode_count,
            // No journal: the base is read-only; lazy init keeps the sparse file sparse.
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,nodiscard",
        ],
    )?;
    add_mount_points(dir, out)
}

/// Makes `out` (a sparse file of `size` bytes) a self-contained bootable disk holding
/// the tree `dir`: a GPT (`gpt`), the EFI system partition copied from `esp` (a FAT
/// image of `gpt::ESP_SECTORS` sectors at most: the boot loader and the kernel), and
/// the root partition formatted in place as ext4 with a journal (the VM writes to it
/// for its whole life), labelled `label`, every table initialised lazily so that the
/// file stays sparse. The kernel initialises the rest in the guest.
pub fn build_system_disk(
    dir: &Path,
    out: &Path,
    size: u64,
    label: &str,
    esp: &Path,
) -> Result<(), RootfsError> {
    let failed = |detail: String| RootfsError::Build {
        dir: dir.to_path_buf(),
        detail,
    };
    let root = (|| -> io::Result<crate::gpt::Root> {
        let mut f = fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(out)?;
        f.set_len(size)?;
        let root = crate::gpt::create(&mut f)?;
        let esp_bytes = fs::read(esp)?;
        if esp_bytes.len() as u64 > crate::gpt::ESP_SECTORS * crate::gpt::SECTOR {
            return Err(io::Error::other(
                "the EFI system partition's image is too large",
            ));
        }
        use std::os::unix::fs::FileExt;
        // Only what is not zero: the disk stays sparse.
        let base = crate::gpt::ESP_FIRST * crate::gpt::SECTOR;
        for (i, block) in esp_bytes.chunks(64 << 10).enumerate() {
            if block.iter().any(|b| *b != 0) {
                f.write_all_at(block, base + (i as u64) * (64 << 10))?;
            }
        }
        f.sync_all()?;
        Ok(root)
    })()
    .map_err(|e| failed(format!("laying out the disk: {e}")))?;
    let offset = format!(
        "offset={},lazy_itable_init=1,lazy_journal_init=1,nodiscard",
        root.offset
    );
    mkfs_at(dir, out, Some(root.bytes), &["-L", label, "-E", &offset]).map_err(|e| match e {
        BuildFailure::Missing => RootfsError::MkfsMissing,
        BuildFailure::Failed(d) if d.contains("No space left") => {
            let free = free_bytes(out.parent().unwrap_or(Path::new("."))).unwrap_or(0);
            RootfsError::NoSpace {
                dir: out.parent().unwrap_or(Path::new(".")).to_path_buf(),
                need_mib: walk(dir).map(|s| s.bytes >> 20).unwrap_or(0),
                free_mib: free >> 20,
            }
        }
        BuildFailure::Failed(d) => failed(d),
    })
}

fn mkfs(dir: &Path, out: &Path, size: u64, options: &[&str]) -> Result<(), BuildFailure> {
    let f = fs::File::create(out).map_err(|e| BuildFailure::Failed(e.to_string()))?;
    f.set_len(size)
        .map_err(|e| BuildFailure::Failed(e.to_string()))?;
    drop(f);
    mkfs_at(dir, out, None, options)
}

/// mkfs.ext4 on `out` as it is: the whole file, or `fs_bytes` of it (with an
/// `offset=` among the options).
fn mkfs_at(
    dir: &Path,
    out: &Path,
    fs_bytes: Option<u64>,
    options: &[&str],
) -> Result<(), BuildFailure> {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-q", "-F"])
        .args(options)
        .arg("-d")
        .arg(dir)
        .arg(out);
    if let Some(b) = fs_bytes {
        cmd.arg(format!("{}k", b / 1024));
    }
    let result = cmd
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output();
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BuildFailure::Missing),
        Err(e) => Err(BuildFailure::Failed(e.to_string())),
        Ok(o) if !o.status.success() => {
            let msg = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = msg.lines().rev().take(5).collect();
            Err(BuildFailure::Failed(
                tail.into_iter().rev().collect::<Vec<_>>().join("; "),
            ))
        }
        Ok(_) => Ok(()),
    }
}

/// Directories the guest mounts /proc, /sys, /dev and /tmp on. Trees without them (a
/// bare busybox tree, many scratch images) would otherwise make the guest create them at
/// every start, and the first directory created on a freshly mounted ext4 costs its block
/// allocator's set-up (about 10 ms under TCG) on the start's critical path. debugfs
/// writes them into the image without mounting it.
const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "tmp"];

/// The files in /etc the guest binds each container's own over (as Docker's "init
/// layer" has them): empty, where the tree has none, for the same reason.
const ETC_MOUNT_POINTS: &[&str] = &["hostname", "hosts", "resolv.conf"];

/// The debugfs commands that add the mount points `dir` lacks.
fn mount_point_script(dir: &Path) -> String {
    let missing = |p: &Path| fs::symlink_metadata(p).is_err();
    let mut script: String = MOUNT_POINTS
        .iter()
        .filter(|d| missing(&dir.join(d)))
        .map(|d| format!("mkdir /{d}\n"))
        .collect();
    // Only into a real /etc (or a new one): an /etc that is a symlink leads elsewhere.
    let etc = dir.join("etc");
    let etc_is_dir = match fs::symlink_metadata(&etc) {
        Ok(m) => m.is_dir(),
        Err(_) => {
            script.push_str("mkdir /etc\n");
            true
        }
    };
    if etc_is_dir {
        for f in ETC_MOUNT_POINTS.iter().filter(|f| missing(&etc.join(f))) {
            // debugfs writes into its current directory; /dev/null is an empty source.
            script.push_str(&format!(
                "cd /etc\nwrite /dev/null {f}\nsif {f} mode 0100644\nsif {f} uid 0\nsif {f} gid 0\n"
            ));
        }
    }
    script
}

fn add_mount_points(dir: &Path, image: &Path) -> Result<(), BuildFailure> {
    let script = mount_point_script(dir);
    if script.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("debugfs")
        .args([OsStr::new("-w"), OsStr::new("-f"), OsStr::new("-")])
        .arg(image)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BuildFailure::Missing,
            _ => BuildFailure::Failed(format!("debugfs: {e}")),
        })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| BuildFailure::Failed(format!("debugfs: {e}")))?;
    }
    let o = child
        .wait_with_output()
        .map_err(|e| BuildFailure::Failed(format!("debugfs: {e}")))?;
    // debugfs reports command errors on stderr but exits 0.
    let err = String::from_utf8_lossy(&o.stderr);
    let real: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .collect();
    if !o.status.success() || !real.is_empty() {
        return Err(BuildFailure::Failed(format!(
            "debugfs adding mount points: {}",
            real.join("; ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::write(dir.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        std::os::unix::fs::symlink("hello", dir.join("bin/link")).unwrap();
    }

    #[test]
    fn mount_points_are_added_only_where_the_tree_has_nothing() {
        let t = tempfile::tempdir().unwrap();
        for d in ["proc", "etc"] {
            fs::create_dir(t.path().join(d)).unwrap();
        }
        fs::write(t.path().join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
        // A symlink is left alone even when it leads nowhere.
        std::os::unix::fs::symlink("/run/resolv.conf", t.path().join("etc/resolv.conf")).unwrap();
        std::os::unix::fs::symlink("/nowhere", t.path().join("tmp")).unwrap();
        let script = mount_point_script(t.path());
        assert_eq!(
            script,
            "mkdir /sys\nmkdir /dev\ncd /etc\nwrite /dev/null hostname\n\
             sif hostname mode 0100644\nsif hostname uid 0\nsif hostname gid 0\n"
        );
        // An /etc that is a symlink gets nothing: it leads out of the tree.
        fs::remove_dir_all(t.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", t.path().join("etc")).unwrap();
        assert_eq!(mount_point_script(t.path()), "mkdir /sys\nmkdir /dev\n");
    }

    #[test]
    fn builds_once_then_reuses_and_rebuilds_on_change() {
        let t = tempfile::tempdir().unwrap();
        let (src, cache) = (t.path().join("src"), t.path().join("cache"));
        sample(&src);
        let a = ensure_image(&src, &cache).unwrap();
        assert!(a.built);
        let meta = fs::metadata(&a.path).unwrap();
        assert!(
            meta.len() >= WRITABLE_HEADROOM,
            "logical size includes headroom"
        );
        assert!(
            meta.blocks() * 512 < 64 << 20,
            "the image file stays sparse"
        );
        let b = ensure_image(&src, &cache).unwrap();
        assert!(!b.built);
        assert_eq!(a.path, b.path);
        fs::write(src.join("bin/hello"), b"#!/bin/sh\necho changed\n").unwrap();
        let c = ensure_image(&src, &cache).unwrap();
        assert!(c.built);
        assert_ne!(a.fingerprint, c.fingerprint);
        // The image really holds the tree (debugfs reads ext4 without mounting it).
        let debugfs = |request: &str| {
            let out = Command::new("debugfs")
                .args(["-R", request])
                .arg(&c.path)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(debugfs("cat /bin/hello"), "#!/bin/sh\necho changed\n");
        // The guest's mount points were added although the tree has none of them.
        let listing = debugfs("ls -l /");
        for d in MOUNT_POINTS {
            assert!(
                listing.lines().any(|l| l.starts_with(' ')
                    && l.contains(" 40755 ")
                    && l.split_whitespace().last() == Some(*d)),
                "/{d} missing in:\n{listing}"
            );
        }
        // And /etc's, empty files owned by root.
        let listing = debugfs("ls -l /etc");
        for f in ETC_MOUNT_POINTS {
            assert!(
                listing.lines().any(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    // inode, mode, (links), uid, gid, size, date, time, name
                    w.get(1) == Some(&"100644")
                        && w.get(3..6) == Some(&["0", "0", "0"][..])
                        && w.last() == Some(f)
                }),
                "/etc/{f} missing in:\n{listing}"
            );
        }
        let leftovers: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_build_that_finishes_second_leaves_the_first_disk_in_place() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let (src, dest) = (t.path().join("src"), t.path().join("cache/disk.ext4"));
        sample(&src);
        build_image(&src, &dest).unwrap();
        let first = fs::metadata(&dest).unwrap();
        // Another process built the same content meanwhile and puts it in place last.
        build_image(&src, &dest).unwrap();
        let after = fs::metadata(&dest).unwrap();
        assert_eq!(
            (first.ino(), first.mtime_nsec()),
            (after.ino(), after.mtime_nsec())
        );
        let leftovers = fs::read_dir(dest.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "the second build's file is removed");
    }

    #[test]
    fn missing_and_non_directory_sources_are_clear_errors() {
        let t = tempfile::tempdir().unwrap();
        let e = ensure_image(&t.path().join("nope"), &t.path().join("c")).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read the root filesystem directory"),
            "{e}"
        );
        fs::write(t.path().join("file"), "x").unwrap();
        let e = ensure_image(&t.path().join("file"), &t.path().join("c")).unwrap_err();
        assert!(e.to_string().contains("is not a directory"), "{e}");
    }

    #[test]
    fn stale_half_built_images_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let cache = t.path().join("cache");
        fs::create_dir_all(&cache).unwrap();
        // pid 0x7ffffffe cannot exist (above pid_max).
        let stale = cache.join(".building-2147483646-abc.ext4");
        fs::write(&stale, "partial").unwrap();
        let src = t.path().join("src");
        sample(&src);
        ensure_image(&src, &cache).unwrap();
        assert!(!stale.exists());
    }
}
