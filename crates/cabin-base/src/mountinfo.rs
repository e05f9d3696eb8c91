//! Mounts below a directory, from the kernel's `/proc/self/mountinfo`: what has to be
//! unmounted before the directory can be deleted without reaching into what is mounted
//! there (a shared host folder, a container's root). Used by cabin-init for a removed
//! container and by the container store for a removed container's directory.

use std::io;
use std::path::{Path, PathBuf};

/// The mount points at or below `dir` in `mountinfo` (proc(5)'s format), deepest first.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first; a path mounted over twice stays listed twice (one unmount each).
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points
}

/// mountinfo writes space, tab, newline and backslash in paths as octal escapes.
fn unescape_mount_path(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let value = u16::from(d[0] - b'0') * 64
                    + u16::from(d[1] - b'0') * 8
                    + u16::from(d[2] - b'0');
                out.push(value as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Unmounts (lazily, deepest first) everything mounted at or below `dir`, and checks
/// that nothing is left there: only then may the caller delete the tree. Mounts that
/// went with one above them are no error; a mount point that is a symbolic link now
/// is not followed.
pub fn unmount_below(dir: &Path) -> io::Result<()> {
    // mountinfo names mount points by their real paths.
    let dir = match std::fs::canonicalize(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    for point in mounts_below(&mountinfo, &dir) {
        let c = crate::confined::cstr(point.as_os_str().as_encoded_bytes())?;
        // SAFETY: umount2 of a NUL-terminated path; no memory is handed over.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) } != 0 {
            let e = io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
                return Err(io::Error::new(
                    e.kind(),
                    format!("unmounting {}: {e}", point.display()),
                ));
            }
        }
    }
    let left = mounts_below(&std::fs::read_to_string("/proc/self/mountinfo")?, &dir);
    if let Some(point) = left.first() {
        return Err(io::Error::other(format!(
            "{} is still mounted: not deleting what is below it",
            point.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_containers_mounts_are_found_deepest_first_with_escaped_paths() {
        let info = "\
22 1 0:20 / / rw - rootfs rootfs rw
30 22 253:1 / /run/cabin/containers/a/rootfs rw - ext4 /dev/vda rw
31 30 0:25 / /run/cabin/containers/a/rootfs/dev rw - tmpfs tmpfs rw
32 22 0:26 / /run/cabin/containers/a/mounts/0 rw - 9p share0 rw
33 22 0:27 / /run/cabin/containers/ab/rootfs rw - 9p cabin-pod rw
34 22 0:28 / /run/cabin/containers/a/mounts/my\\040dir rw - tmpfs tmpfs rw
";
        let got = mounts_below(info, Path::new("/run/cabin/containers/a"));
        let got: Vec<_> = got.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(got[0], "/run/cabin/containers/a/rootfs/dev");
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.contains(&"/run/cabin/containers/a/mounts/my dir".to_string()));
        assert!(
            !got.iter().any(|p| p.contains("/ab/")),
            "a sibling whose name starts the same is not below it: {got:?}"
        );
    }
}
