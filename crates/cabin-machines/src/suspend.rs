//! Full VMs suspended and resumed. `vm suspend` asks the VM's runner (SIGUSR1) to save
//! the running VM's memory and device state into its directory and end it; the next
//! `vm run` loads that state into a QEMU of the same shape instead of booting, and the
//! guest goes on where it was.
//!
//! Files in the VM's directory: `suspended.json` (what the state was saved with: QEMU,
//! firmware, machine shape, disks, devices, address; written first) and
//! `suspended.state` (QEMU's migration stream, written aside and renamed into place
//! last). A state that no longer matches (QEMU, firmware, CPU count, memory, how cabin
//! starts the VM, or a disk changed since) is discarded with the reason, and the VM
//! boots: loading it would hand the guest a machine or disks it does not know. Once a
//! state has been loaded it is removed, since the disk moves on from it.
//!
//! The state holds the guest's memory: its secrets and its random number generator's
//! state. It is readable by its owner only; the resumed VM gets a new VM generation ID
//! (a Linux guest reseeds from it), and a VM made from an image gets the host's clock
//! over SSH (its address and MAC stay the same).

use std::fs;
use std::io::{self, BufRead, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use cabin_base::files::{identity, read_bounded, write_atomic};
use cabin_vmm::full::{self, Boot, FullVmSpec};
use cabin_vmm::migration::{self, Ram};
use cabin_vmm::qmp::Qmp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{io_err, Session, Vm, VmError, VmStatus, SUSPENDED_RECORD, SUSPENDED_STATE};

const RECORD_VERSION: u32 = 1;
/// Where QEMU writes the state before it is renamed into place.
const STAGED: &str = ".suspended.state.partial";
/// Why the last suspend failed, for the process that asked.
const SUSPEND_ERROR: &str = ".suspend-error.json";

/// What a VM runs on, as far as a saved state depends on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fingerprint {
    /// QEMU's binary (path, size, time, inode).
    pub qemu: String,
    /// The firmware (UEFI) or the kernel (a VM made from an image) it booted.
    pub firmware: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// A digest of its machine and devices (`full::shape`).
    pub shape: String,
}

impl Fingerprint {
    pub fn of(qemu: &Path, spec: &FullVmSpec) -> Fingerprint {
        let firmware = match &spec.boot {
            Boot::Uefi { code, .. } => code,
            Boot::Kernel { kernel, .. } => kernel,
        };
        let mut h = Sha256::new();
        for arg in full::shape(spec) {
            h.update(arg.as_bytes());
            h.update([0]);
        }
        Fingerprint {
            qemu: identity(qemu),
            firmware: identity(firmware),
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            shape: h.finalize()[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }
}

/// The devices a run had besides the VM's own: a resumption must have the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Devices {
    pub shared_dirs: Vec<(PathBuf, bool)>,
    pub iso: Option<PathBuf>,
    pub disks: Vec<PathBuf>,
}

impl Devices {
    pub fn is_empty(&self) -> bool {
        self.shared_dirs.is_empty() && self.iso.is_none() && self.disks.is_empty()
    }

    fn files(&self, vm: &Vm) -> Vec<PathBuf> {
        std::iter::once(vm.disk())
            .chain(self.disks.iter().cloned())
            .collect()
    }
}

/// `suspended.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspended {
    pub version: u32,
    /// Unix seconds.
    pub suspended_at: u64,
    pub state_bytes: u64,
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    /// Its disks as files once QEMU had ended: a disk changed since does not go with
    /// the memory.
    pub disks: Vec<String>,
    pub devices: Devices,
    /// Its address on cabin's bridge, which the resumed guest still uses.
    pub address: Option<Ipv4Addr>,
}

/// What a VM's directory holds of a suspension.
#[derive(Debug)]
pub enum Saved {
    /// Not suspended.
    None,
    /// A state and its record.
    State(Box<Suspended>),
    /// A state that cannot be used, and why.
    Unusable(String),
}

/// The VM's saved state, if it has one.
pub fn saved(vm: &Vm) -> Saved {
    let state = vm.dir.join(SUSPENDED_STATE);
    let Ok(meta) = fs::metadata(&state) else {
        return Saved::None;
    };
    let record = match read_bounded(&vm.dir.join(SUSPENDED_RECORD), 1 << 20) {
        Ok(b) => b,
        Err(e) => return Saved::Unusable(format!("its description is unreadable ({e})")),
    };
    let record: Suspended = match serde_json::from_slice(&record) {
        Ok(r) => r,
        Err(e) => return Saved::Unusable(format!("its description is unreadable ({e})")),
    };
    if record.version != RECORD_VERSION {
        return Saved::Unusable(format!(
            "it was saved by another cabin (description version {})",
            record.version
        ));
    }
    if meta.len() != record.state_bytes {
        return Saved::Unusable(format!(
            "the state file is {} bytes, {} were saved",
            meta.len(),
            record.state_bytes
        ));
    }
    Saved::State(Box::new(record))
}

/// Why `record` cannot be loaded into a VM run as `now`, with `devices` (None: it can).
pub fn mismatch(vm: &Vm, record: &Suspended, now: &Fingerprint) -> Option<String> {
    let was = &record.fingerprint;
    if was.qemu != now.qemu {
        return Some("QEMU changed since".into());
    }
    if was.firmware != now.firmware {
        return Some("its firmware or kernel changed since".into());
    }
    if was.cpus != now.cpus || was.memory_mib != now.memory_mib {
        return Some(format!(
            "it was saved with {} CPUs and {} MiB of memory, and now has {} and {}",
            was.cpus, was.memory_mib, now.cpus, now.memory_mib
        ));
    }
    if was.shape != now.shape {
        return Some("cabin starts this VM with other devices now".into());
    }
    let disks: Vec<String> = record
        .devices
        .files(vm)
        .iter()
        .map(|d| identity(d))
        .collect();
    if disks != record.disks {
        return Some("its disk changed since".into());
    }
    None
}

/// A state a suspend left half written, if there is one (its runner was killed).
pub fn partial(vm: &Vm) -> Option<PathBuf> {
    let p = vm.dir.join(STAGED);
    p.is_file().then_some(p)
}

/// Removes the VM's saved state (the state first: without it the VM is not suspended).
pub fn discard(vm: &Vm) -> Result<(), VmError> {
    for f in [SUSPENDED_STATE, SUSPENDED_RECORD, STAGED] {
        match fs::remove_file(vm.dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(format!("removing {f}"))(e)),
        }
    }
    Ok(())
}

/// The saved state, opened for QEMU to load.
pub fn open_state(vm: &Vm) -> Result<fs::File, VmError> {
    fs::File::open(vm.dir.join(SUSPENDED_STATE)).map_err(io_err("opening the saved state"))
}

/// What the runner knows of a run that is being suspended.
pub struct Saving<'a> {
    pub vm: &'a Vm,
    pub fingerprint: &'a Fingerprint,
    pub devices: &'a Devices,
    pub address: Option<Ipv4Addr>,
}

/// The runner's side of `vm suspend`: saves the VM's state, ends QEMU and puts the
/// state in place. If the save fails, the VM goes on running and the error says why.
pub async fn save(s: &Saving<'_>, qmp: &mut Qmp, child: &mut Child) -> Result<(), VmError> {
    let staged = s.vm.dir.join(STAGED);
    let _ = fs::remove_file(&staged);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .map_err(io_err("creating the saved state"))?;
    let saved = async {
        migration::save(qmp, &file, Ram::InStream).await?;
        file.sync_all()
    }
    .await;
    if let Err(e) = saved {
        drop(file);
        let _ = fs::remove_file(&staged);
        // The guest goes on as it was.
        let _ = qmp.execute("cont", None).await;
        return Err(VmError::Failed(format!(
            "{} cannot be suspended: {}",
            s.vm.name,
            qemu_reason(&e.to_string())
        )));
    }
    drop(file);
    // QEMU is done with the disks once it has ended.
    let _ = qmp.execute("quit", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let state_bytes = fs::metadata(&staged)
        .map_err(io_err("reading the saved state"))?
        .len();
    let record = Suspended {
        version: RECORD_VERSION,
        suspended_at: cabin_base::time::now_unix(),
        state_bytes,
        fingerprint: s.fingerprint.clone(),
        disks: s.devices.files(s.vm).iter().map(|d| identity(d)).collect(),
        devices: s.devices.clone(),
        address: s.address,
    };
    let put = (|| {
        write_atomic(
            &s.vm.dir.join(SUSPENDED_RECORD),
            &serde_json::to_vec_pretty(&record).expect("serialisable"),
            0o600,
        )?;
        fs::rename(&staged, s.vm.dir.join(SUSPENDED_STATE))?;
        fs::File::open(&s.vm.dir)?.sync_all()
    })();
    put.map_err(|e| {
        let _ = fs::remove_file(&staged);
        io_err("putting the saved state in place")(e)
    })
}

/// QEMU's words for why it cannot save, made into cabin's where they are known.
fn qemu_reason(e: &str) -> String {
    if e.contains("VirtFS") || e.contains("9p") {
        return format!(
            "{e} (a VM with shared folders mounted cannot be suspended: unmount them in the guest, or run it without --shared-dir)"
        );
    }
    e.to_string()
}

/// Records why a suspend failed, for the process that asked.
pub fn record_failure(vm: &Vm, why: &str) {
    let _ = write_atomic(
        &vm.dir.join(SUSPEND_ERROR),
        serde_json::to_string(why).expect("serialisable").as_bytes(),
        0o600,
    );
}

/// `vm suspend` from any process: asks the VM's runner to save and end it, and waits
/// up to `timeout` for the state to be in place (or for the runner's reason not to).
pub fn suspend(vm: &Vm, timeout: Duration) -> Result<(), VmError> {
    let Some(session) = vm.session() else {
        return Err(if vm.status_at_rest() == VmStatus::Suspended {
            VmError::Suspended(vm.name.clone())
        } else {
            VmError::NotRunning(vm.name.clone())
        });
    };
    let _ = fs::remove_file(vm.dir.join(SUSPEND_ERROR));
    // SAFETY: signalling the pid the runner recorded while it holds the VM's lock; the
    // runner handles SIGUSR1 from before it publishes its session.
    unsafe { libc::kill(session.pid as i32, libc::SIGUSR1) };
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(b) = read_bounded(&vm.dir.join(SUSPEND_ERROR), 1 << 16) {
            let _ = fs::remove_file(vm.dir.join(SUSPEND_ERROR));
            let why: String = serde_json::from_slice(&b)
                .unwrap_or_else(|_| String::from_utf8_lossy(&b).into_owned());
            return Err(VmError::Failed(why));
        }
        if !vm.is_running() {
            return match saved(vm) {
                Saved::State(_) => Ok(()),
                _ => Err(VmError::Failed(format!(
                    "{} stopped before its state was saved; it will boot at its next run",
                    vm.name
                ))),
            };
        }
        if Instant::now() > deadline {
            return Err(VmError::Failed(format!(
                "{} was not suspended within {} s; it is still running",
                vm.name,
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// After a resume: sets the guest's clock to the host's over SSH (VMs made from an
/// image, which have cabin's key), once its SSH server answers, within `wait`. The time
/// is sent once the guest is ready to read it, so the connection's set-up does not
/// make the clock late.
pub fn set_guest_clock(key: &Path, session: &Session, wait: Duration) -> Result<(), String> {
    let deadline = Instant::now() + wait;
    let mut last = String::from("its SSH server did not answer");
    while Instant::now() < deadline {
        let Some(mut cmd) = session.ssh_command(key, "root") else {
            return Err("it has no address cabin knows of".into());
        };
        cmd.args([
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            "--",
            "echo ready; read t && date -u -s \"@$t\" >/dev/null && echo set",
        ]);
        let run = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match run {
            Ok(c) => c,
            Err(e) => return Err(format!("running ssh: {e}")),
        };
        let mut out = io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        if out.read_line(&mut line).is_ok() && line.trim() == "ready" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            if let Some(mut stdin) = child.stdin.take() {
                let _ = writeln!(stdin, "{}.{:09}", now.as_secs(), now.subsec_nanos());
            }
            line.clear();
            let _ = out.read_line(&mut line);
            let _ = child.wait();
            if line.trim() == "set" {
                return Ok(());
            }
            return Err("the guest refused the new time".into());
        }
        let _ = child.kill();
        let output = child.wait_with_output();
        if let Ok(o) = output {
            let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
            if !e.is_empty() {
                last = e;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_in(dir: &Path) -> Vm {
        Vm {
            name: "vm1".into(),
            location_name: "home".into(),
            dir: dir.to_path_buf(),
        }
    }

    fn record(vm: &Vm, state_bytes: u64) -> Suspended {
        Suspended {
            version: RECORD_VERSION,
            suspended_at: 1,
            state_bytes,
            fingerprint: Fingerprint {
                qemu: identity(Path::new("/bin/sh")),
                firmware: "fw".into(),
                cpus: 2,
                memory_mib: 1024,
                shape: "abc".into(),
            },
            disks: Devices::default()
                .files(vm)
                .iter()
                .map(|d| identity(d))
                .collect(),
            devices: Devices::default(),
            address: None,
        }
    }

    #[test]
    fn a_saved_state_is_usable_only_while_everything_it_was_saved_with_is_unchanged() {
        let t = tempfile::tempdir().unwrap();
        let vm = vm_in(t.path());
        assert!(matches!(saved(&vm), Saved::None));
        fs::write(vm.disk(), b"disk").unwrap();
        let r = record(&vm, 5);
        fs::write(
            t.path().join(SUSPENDED_RECORD),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        fs::write(t.path().join(SUSPENDED_STATE), b"state").unwrap();
        let Saved::State(back) = saved(&vm) else {
            panic!("usable")
        };
        assert_eq!(*back, r);
        let now = r.fingerprint.clone();
        assert_eq!(mismatch(&vm, &r, &now), None);
        let more = Fingerprint {
            memory_mib: 2048,
            ..now.clone()
        };
        assert!(mismatch(&vm, &r, &more).unwrap().contains("1024 MiB"));
        let other = Fingerprint {
            qemu: "another".into(),
            ..now.clone()
        };
        assert_eq!(mismatch(&vm, &r, &other).unwrap(), "QEMU changed since");
        // The disk written after the save: its memory no longer goes with it.
        std::thread::sleep(Duration::from_millis(10));
        fs::write(vm.disk(), b"disk, changed").unwrap();
        assert_eq!(mismatch(&vm, &r, &now).unwrap(), "its disk changed since");
        // A truncated state, an unreadable description.
        fs::write(t.path().join(SUSPENDED_STATE), b"sta").unwrap();
        let Saved::Unusable(why) = saved(&vm) else {
            panic!("unusable")
        };
        assert!(why.contains("3 bytes, 5 were saved"), "{why}");
        fs::write(t.path().join(SUSPENDED_RECORD), b"{").unwrap();
        assert!(matches!(saved(&vm), Saved::Unusable(w) if w.contains("unreadable")));
        discard(&vm).unwrap();
        assert!(matches!(saved(&vm), Saved::None));
        assert!(!t.path().join(SUSPENDED_RECORD).exists());
    }

    #[test]
    fn suspending_a_vm_that_does_not_run_says_so() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join(crate::store::CONFIG), b"{}").unwrap();
        let vm = vm_in(t.path());
        let e = suspend(&vm, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, VmError::NotRunning(_)), "{e}");
        fs::write(t.path().join(SUSPENDED_STATE), b"x").unwrap();
        let e = suspend(&vm, Duration::from_secs(1)).unwrap_err();
        assert!(e.to_string().contains("is suspended: vm1"), "{e}");
    }
}
