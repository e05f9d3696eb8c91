//! The kernel that VMs made from images boot (`vm create --image`): a bzImage with ACPI,
//! PCI and the EFI stub, built by `scripts/build-kernel.sh vm`.

use std::path::PathBuf;

use cabin_base::paths::Unlocated;
use cabin_base::Host;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("no kernel for full VMs found (looked at {looked}); build it with `scripts/build-kernel.sh vm`, or point CABIN_VM_KERNEL at one")]
    NotFound { looked: String },
    #[error("the guest kernel {0} does not exist")]
    Missing(PathBuf),
    #[error("building the kernel for full VMs failed ({0}); run `scripts/build-kernel.sh vm` to see why")]
    Build(String),
}

/// Finds the kernel that VMs made from images boot (a bzImage with ACPI, PCI and the
/// EFI stub: `scripts/build-kernel.sh vm`): the host's (`CABIN_VM_KERNEL`), else the
/// data directory's `kernel/bzImage-vm`, else the build cache's `current-vm` kernel.
pub fn locate(host: &Host) -> Result<PathBuf, KernelError> {
    let paths = &host.paths;
    let mut candidates = vec![paths.kernels().join("bzImage-vm")];
    candidates.extend(cabin_base::paths::installed_lib_dir().map(|d| d.join("bzImage-vm")));
    candidates.push(paths.kernel_builds().join("current-vm/bzImage"));
    cabin_base::paths::locate(host.vm_kernel.clone(), &candidates).map_err(|u| match u {
        Unlocated::NamedMissing(p) => KernelError::Missing(p),
        Unlocated::NoneOf(looked) => KernelError::NotFound { looked },
    })
}

/// The source tree's kernel build script, when this cabin runs from a source tree's
/// `target/` (an installed cabin has its kernel in `lib/cabin`).
fn build_script() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(4)
        .filter(|d| d.file_name().is_some_and(|n| n == "target"))
        .find_map(|target| {
            let script = target.parent()?.join("scripts/build-kernel.sh");
            script.is_file().then_some(script)
        })
}

/// Finds the kernel, or, in a source tree where it was never built, builds it (about 5
/// minutes, once; `notify` says so first): a first run builds only what it uses.
pub fn locate_or_build(host: &Host, notify: crate::Notify<'_>) -> Result<PathBuf, KernelError> {
    let looked = match locate(host) {
        Err(KernelError::NotFound { looked }) => looked,
        other => return other,
    };
    let Some(script) = build_script() else {
        return Err(KernelError::NotFound { looked });
    };
    notify(
        "the kernel for full VMs is not built yet: building it now with scripts/build-kernel.sh vm (about 5 minutes, once)",
    );
    // The script caches under $XDG_CACHE_HOME/cabin/kernel: where this cabin looks.
    let builds = host.paths.kernel_builds();
    let mut cmd = std::process::Command::new(&script);
    cmd.arg("vm").stdout(std::process::Stdio::null());
    if let Some(xdg) = builds.parent().and_then(|c| c.parent()) {
        cmd.env("XDG_CACHE_HOME", xdg);
    }
    let status = cmd
        .status()
        .map_err(|e| KernelError::Build(format!("{}: {e}", script.display())))?;
    if !status.success() {
        return Err(KernelError::Build(status.to_string()));
    }
    locate(host)
}
