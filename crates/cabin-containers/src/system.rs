//! `cabin system info`: what cabin found on this host.

/// A flat list of (key, value) pairs, printed as text or JSON by the CLI.
#[derive(Debug, Default)]
pub struct Info(pub Vec<(&'static str, String)>);

use crate::assets;
use cabin_base::{Host, Paths};
use cabin_vmm::qemu::Qemu;
use cabin_vmm::AccelRequest;

pub fn info(host: &Host, accel: AccelRequest) -> Info {
    let paths = &host.paths;
    let mut out = Vec::new();
    out.push(("cabin version", env!("CARGO_PKG_VERSION").to_string()));
    match Qemu::locate(host.qemu.as_deref()) {
        Ok(q) => {
            out.push(("qemu", q.binary.display().to_string()));
            out.push((
                "qemu version",
                q.version().unwrap_or_else(|e| format!("unknown ({e})")),
            ));
        }
        Err(e) => out.push(("qemu", format!("missing: {e}"))),
    }
    let a = cabin_vmm::accel::choose(accel);
    out.push(("accelerator", a.accel.to_string()));
    out.push(("accelerator reason", a.reason));
    out.push((
        "guest kernel",
        match assets::locate_kernel(None, host) {
            Ok(k) => k.display().to_string(),
            Err(e) => format!("missing: {e}"),
        },
    ));
    out.push((
        "guest init",
        match assets::locate_init(host) {
            Ok(i) => i.display().to_string(),
            Err(e) => format!("missing: {e}"),
        },
    ));
    out.push(("data directory", paths.data.display().to_string()));
    Info(out)
}

/// One line of `cabin system df`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub what: &'static str,
    pub count: u64,
    /// Bytes allocated on disk (sparse files count what they use).
    pub bytes: u64,
}

fn allocated(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if !meta.is_dir() {
        return (1, meta.blocks() * 512);
    }
    let mut total = (0, meta.blocks() * 512);
    for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
        let (n, b) = allocated(&e.path());
        total.0 += n;
        total.1 += b;
    }
    total
}

/// The bytes `path` (a file, or a directory and all below it) takes on disk.
pub fn allocated_bytes(path: &std::path::Path) -> u64 {
    allocated(path).1
}

fn entries(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// What cabin's data directory holds, by kind.
pub fn disk_usage(paths: &Paths) -> Vec<Usage> {
    let images = paths.image_store();
    let names = cabin_image::store::Store::open(&images)
        .and_then(|s| s.refs())
        .map(|r| r.len() as u64)
        .unwrap_or(0);
    vec![
        Usage {
            what: "images (names)",
            count: names,
            bytes: allocated(&images.join("blobs")).1,
        },
        Usage {
            what: "image disks",
            count: entries(&images.join("disks")),
            bytes: allocated(&images.join("disks")).1,
        },
        Usage {
            what: "partial downloads",
            count: entries(&images.join("ingest")),
            bytes: allocated(&images.join("ingest")).1,
        },
        Usage {
            what: "rootfs directory disks",
            count: entries(&paths.rootfs_cache()),
            bytes: allocated(&paths.rootfs_cache()).1,
        },
        Usage {
            what: "running VMs",
            count: entries(&paths.run_root()),
            bytes: allocated(&paths.run_root()).1,
        },
        Usage {
            what: "initramfs",
            count: entries(&paths.initramfs_cache()),
            bytes: allocated(&paths.initramfs_cache()).1,
        },
        Usage {
            what: "boot snapshots",
            count: std::fs::read_dir(paths.snapshots())
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
                        .count() as u64
                })
                .unwrap_or(0),
            bytes: allocated(&paths.snapshots()).1,
        },
        Usage {
            what: "containers (kept layers)",
            count: crate::store::Store::open(paths)
                .and_then(|s| s.ids())
                .map(|ids| ids.len() as u64)
                .unwrap_or(0),
            bytes: allocated(&paths.containers()).1,
        },
        Usage {
            what: "volumes",
            count: crate::volumes::Volumes::open(paths).list().len() as u64,
            bytes: allocated(&paths.volumes()).1,
        },
    ]
}
