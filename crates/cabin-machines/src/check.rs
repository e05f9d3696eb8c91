//! The VMs' part of `cabin system check`: in every configured storage location, VMs
//! whose `config.json` cannot be read or whose disk is missing, and what a killed
//! `vm create` or `vm clone` left (`.NAME.staging-PID`, its process gone; with an
//! image, gigabytes). Pulls that were interrupted (`.NAME.pulling`) resume, and push
//! journals inside a VM: neither is a problem.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use crate::settings::Settings;
use crate::store::{self, VmError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmProblem {
    /// A VM directory half made by a cabin that is gone.
    Abandoned(PathBuf),
    /// A VM whose record cannot be read.
    BadConfig { vm: String, reason: String },
    /// A VM without its disk.
    MissingDisk { vm: String, dir: PathBuf },
}

impl fmt::Display for VmProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmProblem::Abandoned(p) => write!(
                f,
                "{} was left half made by a vm create or clone that is gone",
                p.display()
            ),
            VmProblem::BadConfig { vm, reason } => write!(f, "VM {vm}: {reason}"),
            VmProblem::MissingDisk { vm, dir } => {
                write!(f, "VM {vm} has no disk ({}/disk.img)", dir.display())
            }
        }
    }
}

impl VmProblem {
    /// What `--repair` does: removes what was half made; a VM is the user's, so for
    /// the others it says what to do.
    pub fn repair(&self) -> Result<String, String> {
        match self {
            VmProblem::Abandoned(p) => Ok(format!("remove {}", p.display())),
            VmProblem::BadConfig { vm, .. } | VmProblem::MissingDisk { vm, .. } => Err(format!(
                "nothing (the VM is yours): restore it from a copy, or delete it with cabin vm delete --force {vm}"
            )),
        }
    }
}

/// Checks every storage location cabin searches; how many VMs were looked at, and what
/// is wrong.
pub fn check(settings: &Settings) -> Result<(usize, Vec<VmProblem>), VmError> {
    let mut problems = Vec::new();
    for (_, dir) in settings.search_order() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if store::abandoned_staging(&e.file_name().to_string_lossy()) && e.path().is_dir() {
                problems.push(VmProblem::Abandoned(e.path()));
            }
        }
    }
    let vms = store::list(settings, None)?;
    for vm in &vms {
        if let Err(e) = vm.config() {
            problems.push(VmProblem::BadConfig {
                vm: vm.name.clone(),
                reason: e.to_string(),
            });
        } else if !vm.dir.join(store::DISK).is_file() {
            problems.push(VmProblem::MissingDisk {
                vm: vm.name.clone(),
                dir: vm.dir.clone(),
            });
        }
    }
    Ok((vms.len(), problems))
}

/// Carries out the repair of `problem`, if it has one.
pub fn repair(problem: &VmProblem) -> std::io::Result<()> {
    match problem {
        VmProblem::Abandoned(p) => match fs::remove_dir_all(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}
