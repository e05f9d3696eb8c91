//! The options that shape a container's VM, shared by `cabin run` and `cabin system
//! prepare` (a boot snapshot fits one VM shape).

use std::path::PathBuf;

use cabin_containers::ContainerConfig;
use clap::Args;

use cabin_base::sizes::{parse_size, Dialect};

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
    #[arg(
        long,
        value_name = "auto|kvm|tcg",
        default_value = "auto",
        env = "CABIN_ACCEL"
    )]
    pub accel: String,
    /// Extra guest kernel arguments (for debugging guests).
    #[arg(long, value_name = "ARGS", hide = true, env = "CABIN_KERNEL_ARGS")]
    pub kernel_args: Option<String>,
}

impl MachineArgs {
    /// Validates the options into `c`. The accelerator is decided here, once, so that
    /// the user hears about a fall-back to TCG (when `announce_tcg`) before the boot.
    pub fn apply(&self, c: &mut ContainerConfig, announce_tcg: bool) -> Result<(), String> {
        if let Some(cpus) = self.cpus {
            if !(cpus > 0.0 && cpus <= 64.0) {
                return Err(format!(
                    "invalid --cpus {cpus}: use a number from 0.01 to 64"
                ));
            }
            c.cpus = Some(cpus);
        }
        if let Some(m) = &self.memory {
            let bytes = parse_size(m, Dialect::Docker).map_err(|e| e.to_string())?;
            if bytes < 6 << 20 {
                return Err(format!("invalid --memory {m}: the minimum is 6m"));
            }
            c.memory_bytes = Some(bytes);
        }
        c.kernel = self.kernel.clone();
        let choice = cabin_vmm::accel::choose(self.accel.parse()?);
        if announce_tcg {
            if let Some(notice) = choice.tcg_notice() {
                eprintln!("cabin: {notice}");
            }
        }
        c.accel = cabin_containers::AccelRequest::Force(choice.accel);
        c.extra_kernel_args = self.kernel_args.clone().unwrap_or_default();
        Ok(())
    }

    /// The same options as command-line arguments, with the accelerator as decided.
    pub fn to_args(&self, c: &ContainerConfig) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(cpus) = self.cpus {
            a.extend(["--cpus".to_string(), cpus.to_string()]);
        }
        if let Some(m) = &self.memory {
            a.extend(["--memory".to_string(), m.clone()]);
        }
        if let Some(k) = &self.kernel {
            a.extend(["--kernel".to_string(), k.to_string_lossy().into_owned()]);
        }
        if let cabin_containers::AccelRequest::Force(accel) = c.accel {
            a.extend(["--accel".to_string(), accel.to_string()]);
        }
        a.extend(["--kernel-args".to_string(), c.extra_kernel_args.clone()]);
        a
    }
}
