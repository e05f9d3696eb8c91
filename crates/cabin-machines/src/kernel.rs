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
