//! The options that shape a container's VM, shared by `cabin run` and `cabin system
//! prepare` (a boot snapshot fits one VM shape).

use std::path::PathBuf;

use cabin_base::sizes::{parse_size, Dialect};
use cabin_containers::ContainerSpec;
use cabin_vmm::{Accel, AccelRequest};
use clap::{Args, ValueEnum};

use crate::report::Failure;

/// `--accel`: KVM where it can run a guest, else TCG; or one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccelFlag {
    Auto,
    Kvm,
    Tcg,
}

impl From<AccelFlag> for AccelRequest {
    fn from(f: AccelFlag) -> AccelRequest {
        match f {
            AccelFlag::Auto => AccelRequest::Auto,
            AccelFlag::Kvm => AccelRequest::Force(Accel::Kvm),
            AccelFlag::Tcg => AccelRequest::Force(Accel::Tcg),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct MachineArgs {
    /// CPUs for the container (fractions allowed, e.g. 1.5).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory limit (e.g. 256m, 1g); the VM is sized to fit it.
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Guest kernel to boot instead of cabin's own.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Accelerator: auto (KVM where it can run a guest, else TCG), kvm or tcg.
    #[arg(long, value_enum, default_value = "auto", env = "CABIN_ACCEL")]
    pub accel: AccelFlag,
    /// Extra guest kernel arguments (for debugging guests).
    #[arg(long, value_name = "ARGS", hide = true, env = "CABIN_KERNEL_ARGS")]
    pub kernel_args: Option<String>,
}

impl MachineArgs {
    /// Validates the options into `c`. When `announce_tcg`, the user hears about a
    /// fall-back to TCG before the boot.
    pub fn apply(&self, c: &mut ContainerSpec, announce_tcg: bool) -> Result<(), Failure> {
        if let Some(cpus) = self.cpus {
            if !(cpus > 0.0 && cpus <= 64.0) {
                return Err(Failure::new(format!(
                    "invalid --cpus {cpus}: use a number from 0.01 to 64"
                )));
            }
            c.cpus = Some(cpus);
        }
        if let Some(m) = &self.memory {
            let bytes = parse_size(m, Dialect::Docker)?;
            if bytes < 6 << 20 {
                return Err(Failure::new(format!(
                    "invalid --memory {m}: the minimum is 6m"
                )));
            }
            c.memory_bytes = Some(bytes);
        }
        c.kernel = self.kernel.clone();
        c.accel = self.accel.into();
        if announce_tcg {
            if let Some(notice) = cabin_vmm::accel::choose(c.accel).tcg_notice() {
                eprintln!("cabin: {notice}");
            }
        }
        c.extra_kernel_args = self.kernel_args.clone().unwrap_or_default();
        Ok(())
    }
}
