//! The VMs' part of `cabin system check`: in every configured storage location, VMs
//! whose `config.json` cannot be read or whose disk is missing, and what a killed
//! `vm create` or `vm clone` left (`.NAME.staging-PID`, its process gone; with an
//! image, gigabytes), a saved state half written by a suspend whose runner was killed,
//! and a suspended VM's state that can no longer be resumed. Pulls that were
//! interrupted (`.NAME.pulling`) resume, and push journals inside a VM: neither is a
//! problem.

use std::fmt;
use std::fs;
use std::path::PathBuf;

use crate::settings::Settings;
use crate::store::{self, VmError};
use crate::suspend;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmProblem {
    /// A VM directory half made by a cabin that is gone.
    Abandoned(PathBuf),
    /// A VM whose record cannot be read.
    BadConfig { vm: String, reason: String },
    /// A VM without its disk.
    MissingDisk { vm: String, dir: PathBuf },
    /// A saved state a suspend left half written (its runner was killed).
    PartialState { vm: String, file: PathBuf },
    /// A suspended VM whose saved state cannot be resumed (its next run discards it).
    UnusableState {
        vm: String,
        dir: PathBuf,
        reason: String,
    },
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
            VmProblem::PartialState { vm, file } => write!(
                f,
                "VM {vm}: {} was left half written by a suspend that did not finish",
                file.display()
            ),
            VmProblem::UnusableState { vm, reason, .. } => {
                write!(
                    f,
                    "VM {vm} is suspended, but its saved state cannot be resumed: {reason}"
                )
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
            VmProblem::PartialState { file, .. } => Ok(format!("remove {}", file.display())),
            VmProblem::UnusableState { vm, .. } => Ok(format!(
                "remove {vm}'s saved state (its next run would, too): it boots"
            )),
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
        if vm.is_running() {
            continue;
        }
        if let Some(file) = suspend::partial(vm) {
            problems.push(VmProblem::PartialState {
                vm: vm.name.clone(),
                file,
            });
        }
        if let suspend::Saved::Unusable(reason) = suspend::saved(vm) {
            problems.push(VmProblem::UnusableState {
                vm: vm.name.clone(),
                dir: vm.dir.clone(),
                reason,
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
        VmProblem::PartialState { file, .. } => match fs::remove_file(file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
        VmProblem::UnusableState { vm, dir, .. } => {
            let vm = store::Vm {
                name: vm.clone(),
                location_name: String::new(),
                dir: dir.clone(),
            };
            if vm.is_running() {
                return Ok(());
            }
            suspend::discard(&vm).map_err(std::io::Error::other)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cabin_base::Paths;

    #[test]
    fn a_half_written_or_unusable_saved_state_is_found_and_repaired() {
        let t = tempfile::tempdir().unwrap();
        let paths = Paths::at(t.path().to_path_buf());
        let settings = Settings::load(&paths).unwrap();
        let (_, home) = settings.search_order().into_iter().next().unwrap();
        let dir = home.join("deb");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join(store::CONFIG),
            r#"{"os":"linux","cpuCount":2,"memorySize":1073741824,"diskSize":1073741824,"display":"1024x768","macAddress":"52:54:00:12:34:56","networkMode":"nat"}"#,
        )
        .unwrap();
        fs::write(dir.join(store::DISK), b"").unwrap();
        let (count, problems) = check(&settings).unwrap();
        assert_eq!((count, problems.clone()), (1, vec![]), "{problems:?}");

        fs::write(dir.join(".suspended.state.partial"), b"half").unwrap();
        fs::write(dir.join(store::SUSPENDED_STATE), b"state").unwrap();
        fs::write(dir.join(store::SUSPENDED_RECORD), b"{").unwrap();
        let (_, problems) = check(&settings).unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0]
            .to_string()
            .contains("half written by a suspend"));
        assert!(problems[1].to_string().contains("cannot be resumed"));
        for p in &problems {
            assert!(p.repair().is_ok());
            repair(p).unwrap();
        }
        assert_eq!(check(&settings).unwrap().1, vec![]);
        assert!(!dir.join(store::SUSPENDED_STATE).exists());
        assert!(dir.join(store::DISK).exists(), "the VM's own files stay");
    }
}
