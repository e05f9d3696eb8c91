//! What goes on top of a container's root filesystem before its first process starts:
//! its /etc/hostname, /etc/hosts and /etc/resolv.conf, shared host folders (9p),
//! volumes (ext4 disks) and tmpfs mounts; then, for `--read-only`, the root itself
//! turns read-only (the mount points had to be made first).
//!
//! Mount points are created and opened inside the container's root without following
//! the image's symlinks out of it (inroot.rs); mounting then targets the opened
//! descriptor through /proc/self/fd.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use cabin_proto::v1::ContainerMount;

use crate::container::mount;
use crate::inroot::{mount_point, Leaf, Root};

fn fd_path(f: &std::fs::File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

fn bind(source: &Path, target: &std::fs::File, read_only: bool) -> io::Result<()> {
    let t = fd_path(target);
    mount(
        &source.to_string_lossy(),
        &t,
        "",
        libc::MS_BIND | libc::MS_REC,
        "",
    )?;
    if read_only {
        // A bind mount takes the read-only flag only on a remount, of the new mount:
        // the descriptor still names the directory underneath, its path (resolved
        // safely a moment ago, in a root nothing else runs in yet) the mount on top.
        let t = std::fs::read_link(&t)?;
        mount(
            "",
            &t,
            "",
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
            "",
        )?;
    }
    Ok(())
}

/// Writes the container's identity files under `etc_dir` (guest-private) and binds
/// them over the image's, as docker does.
pub fn etc_files(root: &Root, etc_dir: &Path, files: &[(&str, String)]) -> io::Result<()> {
    std::fs::create_dir_all(etc_dir)?;
    for (name, contents) in files {
        let src = etc_dir.join(name);
        std::fs::write(&src, contents)?;
        let target = mount_point(root, &format!("/etc/{name}"), Leaf::File)
            .map_err(|e| io::Error::new(e.kind(), format!("/etc/{name}: {e}")))?;
        bind(&src, &target, false)?;
    }
    Ok(())
}

/// Rewrites a bound identity file in place (the bind mount holds the inode).
pub fn rewrite(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    // One write: readers see the old file, an empty one, or the new one.
    f.write_all(contents.as_bytes())
}

/// Mounts `mounts` in order; device-backed ones are mounted under `staging` first.
pub fn attach(root: &Root, staging: &Path, mounts: &[ContainerMount]) -> io::Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let what = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", m.target));
        if !m.target.starts_with('/') {
            return Err(io::Error::other(format!(
                "mount target {:?} is not an absolute path",
                m.target
            )));
        }
        let ro = if m.read_only { libc::MS_RDONLY } else { 0 };
        if m.source == "tmpfs" {
            let target = mount_point(root, &m.target, Leaf::Dir).map_err(what)?;
            let mut data = String::from("mode=1777");
            if !m.options.is_empty() {
                if m.options.contains(['\0', '\n']) {
                    return Err(io::Error::other("invalid tmpfs options"));
                }
                data = format!("{data},{}", m.options);
            }
            mount(
                "tmpfs",
                &fd_path(&target),
                "tmpfs",
                libc::MS_NOSUID | libc::MS_NODEV | ro,
                &data,
            )
            .map_err(what)?;
            continue;
        }
        if let Some(path) = m.source.strip_prefix("guest:") {
            // A directory or file the guest has already (on a pod's share), bound as
            // it is, over a mount point of its kind.
            let path = Path::new(path);
            if !cabin_base::confined::plain_absolute(path) {
                return Err(io::Error::other(format!(
                    "mount source {:?} is not an absolute guest path",
                    m.source
                )));
            }
            let leaf = if std::fs::metadata(path).map_err(what)?.is_dir() {
                Leaf::Dir
            } else {
                Leaf::File
            };
            let target = mount_point(root, &m.target, leaf).map_err(what)?;
            bind(path, &target, m.read_only).map_err(what)?;
            continue;
        }
        let dir = staging.join(i.to_string());
        std::fs::create_dir_all(&dir)?;
        if let Some(tag) = m.source.strip_prefix("9p:") {
            mount(
                tag,
                &dir,
                "9p",
                ro,
                &cabin_proto::ninep_mount_options().join(","),
            )
            .map_err(what)?;
        } else if let Some(serial) = m.source.strip_prefix("blk:") {
            let dev = crate::block::block_device_by_serial(serial).map_err(what)?;
            crate::block::before_mount(&dev).map_err(what)?;
            mount(&dev.to_string_lossy(), &dir, "ext4", ro, "").map_err(what)?;
        } else {
            return Err(io::Error::other(format!(
                "unknown mount source {:?}",
                m.source
            )));
        }
        let target = mount_point(root, &m.target, Leaf::Dir).map_err(what)?;
        bind(&dir, &target, m.read_only).map_err(what)?;
    }
    Ok(())
}

/// Makes the container's root mount read-only; what is mounted on it stays as it is.
pub fn read_only_root(rootfs: &Path) -> io::Result<()> {
    mount(
        "",
        rootfs,
        "",
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        "",
    )
}
