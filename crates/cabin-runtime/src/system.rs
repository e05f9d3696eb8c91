//! `cabin system info`: what cabin found on this host.

/// A flat list of (key, value) pairs, printed as text or JSON by the CLI.
#[derive(Debug, Default)]
pub struct Info(pub Vec<(&'static str, String)>);

use crate::assets;
use crate::container_vm::choose_accel;
use crate::paths::Paths;
use cabin_vmm::qemu::Qemu;
use cabin_vmm::AccelRequest;

pub fn info(paths: &Paths, accel: AccelRequest) -> Info {
    let mut out = Vec::new();
    out.push(("cabin version", env!("CARGO_PKG_VERSION").to_string()));
    match Qemu::locate() {
        Ok(q) => {
            out.push(("qemu", q.binary.display().to_string()));
            out.push((
                "qemu version",
                q.version().unwrap_or_else(|e| format!("unknown ({e})")),
            ));
        }
        Err(e) => out.push(("qemu", format!("missing: {e}"))),
    }
    let a = choose_accel(accel);
    out.push(("accelerator", a.accel.to_string()));
    out.push(("accelerator reason", a.reason));
    out.push((
        "guest kernel",
        match assets::locate_kernel(None, paths) {
            Ok(k) => k.display().to_string(),
            Err(e) => format!("missing: {e}"),
        },
    ));
    out.push((
        "guest init",
        match assets::locate_init() {
            Ok(i) => i.display().to_string(),
            Err(e) => format!("missing: {e}"),
        },
    ));
    out.push(("data directory", paths.data.display().to_string()));
    Info(out)
}
