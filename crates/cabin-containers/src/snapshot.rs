//! Boot snapshots: a container VM saved the moment cabin-init came up idle, before it
//! touched any disk, so that later containers resume it (tens of milliseconds) instead of
//! booting a kernel (most of a second under TCG).
//!
//! A snapshot fits exactly one VM shape: the QEMU binary, kernel, initramfs, accelerator,
//! vCPUs, memory, kernel arguments and device layout, all folded into its key, which is
//! computed from the very QEMU command line the VM would get. The container's disk is
//! the one thing that differs between the saved VM and a resumed one: every container
//! disk is presented with the same virtual size ([`DISK_BYTES`]), and cabin-init drops
//! the block device's cached pages before mounting it.
//!
//! Snapshots are built in the background after a run found none (see `cabin system
//! prepare`), one builder per key (a lock file), written to a temporary name and
//! renamed, so a reader sees a whole snapshot or none. A snapshot that fails to resume is
//! deleted and the run boots normally.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cabin_vmm::qemu::{self, Qemu};
use cabin_vmm::{DiskFormat, DiskSpec, MicroVmSpec, NetBackend, RunningVm, VmBackend};
use sha2::{Digest, Sha256};

use cabin_base::files::create_private_dir;

use cabin_base::Paths;
use cabin_vmm::rundir::RunDir;

/// The virtual size of every container's disk device (sparse; the file system inside
/// is as large as its image). Images larger than this boot without a snapshot.
pub const DISK_BYTES: u64 = 1 << 40;

/// How long a template VM may take to boot before the build gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// A file's path and, if it exists, its size, modification time and inode: what tells
/// a rebuilt kernel, init or QEMU from the one a snapshot was made with.
fn identity(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => format!(
            "{}\t{} {}.{} {}",
            path.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino()
        ),
        Err(_) => format!("{}\tmissing", path.display()),
    }
}

/// The files a VM's snapshot depends on besides its command line.
fn dependencies(qemu: &Qemu, spec: &MicroVmSpec) -> [PathBuf; 3] {
    [
        qemu.binary.clone(),
        spec.kernel.clone(),
        spec.initrd.clone(),
    ]
}

/// The key of the snapshot a VM with this spec can resume from. Paths that differ from
/// VM to VM (run directory, disk files) are left out; everything else of the QEMU
/// command line is in, so any change to how cabin starts QEMU invalidates old snapshots.
pub fn key(qemu: &Qemu, spec: &MicroVmSpec) -> String {
    let mut canonical = spec.clone();
    canonical.run_dir = PathBuf::from("/run-dir");
    canonical.restore = None;
    for (i, d) in canonical.disks.iter_mut().enumerate() {
        d.path = PathBuf::from(format!("/disk{i}"));
        d.format = DiskFormat::Raw;
        d.backing = None;
        // The host's caching of a disk is no part of the guest's state.
        d.volatile = true;
    }
    // Published ports and shared folders live on the host side of their devices: the
    // guest sees the same card and the same 9p devices whatever they lead to.
    match &mut canonical.nic {
        Some(NetBackend::User { forwards }) => forwards.clear(),
        Some(NetBackend::Tap(fd)) => *fd = None,
        None => {}
    }
    for (i, s) in canonical.shares.iter_mut().enumerate() {
        s.path = PathBuf::from(format!("/share{i}"));
        s.read_only = false;
    }
    let mut h = Sha256::new();
    for dep in dependencies(qemu, spec) {
        h.update(identity(&dep).as_bytes());
        h.update([0]);
    }
    for arg in qemu::command_line(&canonical) {
        h.update(arg.as_bytes());
        h.update([0]);
    }
    h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn path_for(paths: &Paths, key: &str) -> PathBuf {
    path_for_dir(&paths.snapshots(), key)
}

/// The snapshot for `key`, if one has been built.
pub fn find(paths: &Paths, key: &str) -> Option<PathBuf> {
    let p = path_for(paths, key);
    p.is_file().then_some(p)
}

/// Removes a snapshot that could not be resumed.
pub fn discard(path: &Path) {
    let _ = fs::remove_file(path);
}

#[derive(Debug, PartialEq, Eq)]
pub enum Built {
    Built(PathBuf),
    AlreadyThere(PathBuf),
    /// Another process is building it right now.
    InProgress,
}

/// Boots a template VM shaped like `spec` (its disks replaced by empty placeholders),
/// waits until cabin-init is idle, and saves it as the snapshot for `spec`'s key.
pub async fn build(paths: &Paths, qemu: &Qemu, spec: &MicroVmSpec) -> io::Result<Built> {
    let key = key(qemu, spec);
    if let Some(p) = find(paths, &key) {
        return Ok(Built::AlreadyThere(p));
    }
    let dir = paths.snapshots();
    create_private_dir(&dir)?;
    let Some(_lock) = cabin_base::lock::lock_path(
        &dir.join(format!("{key}.lock")),
        cabin_base::lock::Mode::Exclusive,
        cabin_base::lock::Wait::NoWait,
    )?
    else {
        return Ok(Built::InProgress);
    };
    if let Some(p) = find(paths, &key) {
        return Ok(Built::AlreadyThere(p));
    }
    remove_partial(&dir);
    prune_stale(&dir);

    let run_dir = RunDir::create(&paths.run_root(), &cabin_base::random::id()?)?;
    let result = boot_and_save(qemu, spec, &run_dir.path, &dir, &key).await;
    let _ = run_dir.remove();
    result.map(Built::Built)
}

async fn boot_and_save(
    qemu: &Qemu,
    spec: &MicroVmSpec,
    run_dir: &Path,
    dir: &Path,
    key: &str,
) -> io::Result<PathBuf> {
    let mut template = spec.clone();
    template.run_dir = run_dir.to_path_buf();
    template.restore = None;
    for (i, d) in template.disks.iter_mut().enumerate() {
        let placeholder = run_dir.join(format!("placeholder{i}.raw"));
        fs::File::create(&placeholder)?.set_len(DISK_BYTES)?;
        *d = DiskSpec {
            path: placeholder,
            format: DiskFormat::Raw,
            volatile: true,
            backing: None,
            ..d.clone()
        };
    }
    if let Some(NetBackend::User { forwards }) = &mut template.nic {
        forwards.clear();
    }
    if let Some(NetBackend::Tap(_)) = &template.nic {
        template.nic = Some(NetBackend::Tap(Some(Arc::new(
            cabin_net::tap::detached_tap()?,
        ))));
    }
    for (i, s) in template.shares.iter_mut().enumerate() {
        let placeholder = run_dir.join(format!("share{i}"));
        fs::create_dir(&placeholder)?;
        s.path = placeholder;
        s.read_only = false;
    }
    let mut vm = qemu.start(&template)?;
    let saved = async {
        vm.wait_agent_opened(BOOT_TIMEOUT).await?;
        // cabin-init opens the port and then polls for the host; let it get there.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let partial = dir.join(format!(".partial-{key}-{}", std::process::id()));
        let r = vm.save_state(&partial).await;
        if let Err(e) = r {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
        let done = path_for_dir(dir, key);
        // The list of what the snapshot was made from goes first: a snapshot without
        // one counts as stale (prune_stale).
        let deps: String = dependencies(qemu, spec)
            .iter()
            .map(|d| identity(d) + "\n")
            .collect();
        fs::write(dir.join(format!("{key}.deps")), deps)?;
        fs::rename(&partial, &done)?;
        Ok(done)
    }
    .await;
    let _ = vm.kill().await;
    saved.map_err(|e| {
        let console = vm.console_excerpt();
        if console.is_empty() {
            e
        } else {
            io::Error::new(e.kind(), format!("{e}{console}"))
        }
    })
}

fn path_for_dir(dir: &Path, key: &str) -> PathBuf {
    dir.join(format!("{key}.vmstate"))
}

/// Removes snapshots made from a kernel, initramfs or QEMU that has since changed or
/// gone: their keys can never come up again, and each holds tens of megabytes.
fn prune_stale(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "vmstate") {
            continue;
        }
        let deps = path.with_extension("deps");
        let current = fs::read_to_string(&deps).is_ok_and(|text| {
            text.lines().all(|line| {
                line.split_once('\t')
                    .is_some_and(|(p, _)| identity(Path::new(p)) == line)
            })
        });
        if !current {
            let _ = fs::remove_file(&path);
            let _ = fs::remove_file(&deps);
        }
    }
}

/// Partial files of builders that died (their lock is free, or we would not be here).
fn remove_partial(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(rest) = name.strip_prefix(".partial-") {
                let pid = rest.rsplit('-').next().and_then(|p| p.parse::<i32>().ok());
                // SAFETY: kill with signal 0 only checks for existence.
                let alive = pid.is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
                if !alive {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cabin_vmm::Accel;

    fn spec(run_dir: &str, disk: &str) -> MicroVmSpec {
        MicroVmSpec {
            kernel: "/nonexistent/vmlinux".into(),
            initrd: "/nonexistent/initrd".into(),
            extra_cmdline: String::new(),
            cpus: 1,
            memory_mib: 512,
            disks: vec![DiskSpec {
                path: disk.into(),
                format: DiskFormat::Qcow2,
                read_only: false,
                serial: "rootfs".into(),
                volatile: true,
                backing: None,
            }],
            nic: Some(NetBackend::User {
                forwards: Vec::new(),
            }),
            shares: Vec::new(),
            accel: Accel::Tcg,
            run_dir: run_dir.into(),
            restore: None,
        }
    }

    #[test]
    fn snapshots_of_changed_or_vanished_files_are_pruned() {
        let t = tempfile::tempdir().unwrap();
        let kernel = t.path().join("vmlinux");
        fs::write(&kernel, "one").unwrap();
        let snap = |name: &str, deps: Option<String>| {
            fs::write(t.path().join(format!("{name}.vmstate")), "state").unwrap();
            if let Some(d) = deps {
                fs::write(t.path().join(format!("{name}.deps")), d).unwrap();
            }
        };
        snap("current", Some(identity(&kernel) + "\n"));
        snap("changed", Some(identity(&kernel) + "\n"));
        snap("vanished", Some(identity(&t.path().join("gone")) + "\n"));
        snap("unlisted", None);
        // "changed" was made from a kernel that has since been rebuilt.
        let old = identity(&kernel);
        fs::write(&kernel, "two, longer").unwrap();
        fs::write(t.path().join("current.deps"), identity(&kernel) + "\n").unwrap();
        assert_ne!(old, identity(&kernel));
        fs::write(t.path().join("changed.deps"), old + "\n").unwrap();
        fs::write(t.path().join("gone"), "now here").unwrap();
        prune_stale(t.path());
        let mut left: Vec<String> = fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".vmstate"))
            .collect();
        left.sort();
        assert_eq!(left, ["current.vmstate"]);
    }

    #[test]
    fn key_ignores_per_vm_paths_but_not_the_vm_shape() {
        let q = Qemu {
            binary: "/nonexistent/qemu".into(),
        };
        let a = key(&q, &spec("/run/a", "/a.qcow2"));
        assert_eq!(a, key(&q, &spec("/run/b", "/b.qcow2")));
        let mut more_memory = spec("/run/a", "/a.qcow2");
        more_memory.memory_mib = 1024;
        assert_ne!(a, key(&q, &more_memory));
        let mut args = spec("/run/a", "/a.qcow2");
        args.extra_cmdline = "cabin.trace".into();
        assert_ne!(a, key(&q, &args));
        let mut ro = spec("/run/a", "/a.qcow2");
        ro.disks[0].read_only = true;
        assert_ne!(a, key(&q, &ro));
        // Published ports and shared folders' host paths do not change the guest.
        let mut published = spec("/run/a", "/a.qcow2");
        published.nic = Some(NetBackend::User {
            forwards: vec![cabin_vmm::PortForward {
                protocol: cabin_vmm::Protocol::Tcp,
                host_ip: std::net::Ipv4Addr::LOCALHOST,
                host_port: 8080,
                guest_port: 80,
            }],
        });
        assert_eq!(a, key(&q, &published));
        let share = |path: &str| cabin_vmm::ShareSpec {
            path: path.into(),
            tag: "share0".into(),
            read_only: path.ends_with("ro"),
        };
        let mut shared = spec("/run/a", "/a.qcow2");
        shared.shares.push(share("/srv/one"));
        let mut shared_elsewhere = spec("/run/b", "/b.qcow2");
        shared_elsewhere.shares.push(share("/srv/two-ro"));
        assert_ne!(a, key(&q, &shared));
        assert_eq!(key(&q, &shared), key(&q, &shared_elsewhere));
        let mut offline = spec("/run/a", "/a.qcow2");
        offline.nic = None;
        assert_ne!(a, key(&q, &offline));
    }
}
