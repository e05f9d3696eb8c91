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
//! over SSH. Resumed where it was suspended, its address and MAC stay the same; a copy
//! pulled with the memory of another VM (`vm push --with-memory`) also takes a MAC and
//! host name of its own there.

use std::fs;
use std::io::{self, BufRead, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cabin_base::files::{identity, read_bounded, write_atomic};
use cabin_base::sync::Locked;
use cabin_vmm::full::{self, Boot, FullVmSpec};
use cabin_vmm::migration::{self, Ram};
use cabin_vmm::qemu::Qemu;
use cabin_vmm::qmp::Qmp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::from_image::DirectBoot;
use crate::store::{io_err, Session, Vm, VmError, VmStatus, SUSPENDED_RECORD, SUSPENDED_STATE};
use crate::store::{VmConfig, KERNEL};

/// 2: the fingerprint became portable (QEMU's version and the firmware's digest, the
/// shape without paths) and the card's MAC address is recorded.
const RECORD_VERSION: u32 = 2;
/// Where QEMU writes the state before it is renamed into place.
const STAGED: &str = ".suspended.state.partial";
/// Why the last suspend failed, for the process that asked.
const SUSPEND_ERROR: &str = ".suspend-error.json";

/// What a VM runs on, as far as a saved state depends on it. Nothing in it names a
/// file of this host, so that a state pushed with its VM loads on another host that
/// has the same QEMU and firmware.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fingerprint {
    /// QEMU's version (`--version`, first line).
    pub qemu: String,
    /// The sha256 digest of the firmware (UEFI) or of the kernel (a VM made from an
    /// image) it booted.
    pub firmware: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// A digest of its machine and devices (`full::shape`).
    pub shape: String,
}

impl Fingerprint {
    pub fn of(qemu: &Qemu, spec: &FullVmSpec) -> Result<Fingerprint, VmError> {
        let firmware = match &spec.boot {
            Boot::Uefi { code, .. } => code,
            Boot::Kernel { kernel, .. } => kernel,
        };
        let mut h = Sha256::new();
        for arg in full::shape(spec) {
            h.update(arg.as_bytes());
            h.update([0]);
        }
        Ok(Fingerprint {
            qemu: qemu.version().map_err(io_err("asking QEMU its version"))?,
            firmware: file_digest(firmware)
                .map_err(io_err(format!("reading {}", firmware.display())))?,
            cpus: spec.cpus,
            memory_mib: spec.memory_mib,
            shape: cabin_base::random::hex(&h.finalize()[..12]),
        })
    }
}

/// `sha256:<hex>` of a file's contents.
fn file_digest(path: &Path) -> io::Result<String> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(format!("sha256:{}", cabin_base::random::hex(&h.finalize())))
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

    /// The run's extra devices as the options that give them, for a message.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .shared_dirs
            .iter()
            .map(|(p, ro)| {
                format!(
                    "--shared-dir {}{}",
                    p.display(),
                    if *ro { ":ro" } else { "" }
                )
            })
            .collect();
        parts.extend(self.iso.iter().map(|p| format!("--mount {}", p.display())));
        parts.extend(self.disks.iter().map(|p| format!("--disk {}", p.display())));
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" ")
        }
    }

    /// The identities of [`Devices::files`] as they are now, as a record keeps them.
    fn identities(&self, vm: &Vm) -> Vec<String> {
        self.files(vm).iter().map(|d| identity(d)).collect()
    }

    fn files(&self, vm: &Vm) -> Vec<PathBuf> {
        // The UEFI variables and a mounted ISO are the guest's too: one changed under
        // a resumed guest is as wrong for it as a changed disk.
        [vm.disk(), vm.dir.join(crate::store::NVRAM)]
            .into_iter()
            .chain(self.disks.iter().cloned())
            .chain(self.iso.iter().cloned())
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
    /// Its disks (and UEFI variables, mounted ISO) as files once QEMU had ended: a disk
    /// changed since does not go with the memory.
    pub disks: Vec<String>,
    pub devices: Devices,
    /// Its address on cabin's bridge, which the resumed guest still uses.
    pub address: Option<Ipv4Addr>,
    /// The MAC address its network card has in the state (a VM made from an image
    /// and pulled with its memory has a fresh one of its own in its config).
    pub mac: String,
    /// The state came with an image (`vm pull`): another VM of this host may have its
    /// MAC address or address.
    #[serde(default)]
    pub pulled: bool,
}

/// Writes `record` as the saved state's description in the VM directory `dir`.
fn write_record(dir: &Path, record: &Suspended) -> io::Result<()> {
    write_atomic(
        &dir.join(SUSPENDED_RECORD),
        &serde_json::to_vec_pretty(record).expect("serialisable"),
        0o600,
    )
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
    if record.devices.identities(vm) != record.disks {
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
    discard_in(&vm.dir)
}

/// [`discard`] of the VM directory `dir`.
pub fn discard_in(dir: &Path) -> Result<(), VmError> {
    for f in [SUSPENDED_STATE, SUSPENDED_RECORD, STAGED] {
        match fs::remove_file(dir.join(f)) {
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

/// A suspended VM's state as it travels with its image (`vm push --with-memory`), in
/// cabin's own layers after Lume's.
#[derive(Debug)]
pub struct Outgoing {
    /// What the state was saved with and how the VM starts (JSON).
    pub description: Vec<u8>,
    pub state: PathBuf,
    /// The kernel a VM made from an image starts with (the state runs it).
    pub kernel: Option<PathBuf>,
}

/// The description layer of a state that travels.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Travelling {
    record: Suspended,
    direct: Option<DirectBoot>,
}

/// What of the suspended `vm` goes with its image, checked to be portable: the state
/// of a VM with shared folders or disks of this host does not travel.
pub fn outgoing(vm: &Vm) -> Result<Outgoing, VmError> {
    let mut record = match saved(vm) {
        Saved::State(r) => *r,
        Saved::None => {
            return Err(VmError::Invalid(format!(
                "{} is not suspended, so it has no memory to push: suspend it first (cabin vm suspend {})",
                vm.name, vm.name
            )))
        }
        Saved::Unusable(why) => {
            return Err(VmError::Invalid(format!(
                "{}'s saved state cannot be used ({why}); run it to boot it, or push it without --with-memory after stopping it",
                vm.name
            )))
        }
    };
    if !record.devices.is_empty() {
        return Err(VmError::Invalid(format!(
            "{} was suspended with shared folders or disks of this host ({}), which do not travel with an image: resume it, unmount them in the guest, run it without them and suspend it again",
            vm.name,
            record.devices.describe()
        )));
    }
    // The disk goes with the memory only as it was when the VM was suspended: one
    // changed since (mounted on the host, say) would be resumed under stale memory by
    // every host that pulls it, which records the disk it gets as the right one.
    if record.devices.identities(vm) != record.disks {
        return Err(VmError::Invalid(format!(
            "{}'s disk changed since it was suspended, so its saved memory no longer goes with it: run it (it boots) and suspend it again, or push it without --with-memory",
            vm.name
        )));
    }
    // Which files of this host its disks were is no business of another host's.
    record.disks.clear();
    let direct = DirectBoot::read(&vm.dir)?;
    let kernel = direct.as_ref().map(|d| vm.dir.join(&d.kernel));
    Ok(Outgoing {
        description: serde_json::to_vec_pretty(&Travelling { record, direct })
            .expect("serialisable"),
        state: vm.dir.join(SUSPENDED_STATE),
        kernel,
    })
}

/// Puts a pulled state in place in the VM directory `dir` (still being made), from the
/// files `pulled` names, for the VM `config` describes. A state that cannot be used is
/// left out and the VM boots: the reason is returned. A VM cabin cannot give another
/// MAC address from outside (not made from an image) keeps the one its state has, in
/// `config`. Its disks are recorded by [`settle`] once the directory is in place.
pub fn adopt(dir: &Path, pulled: &PulledState, config: &mut VmConfig) -> Option<String> {
    let (cpus, memory_mib) = (config.cpu_count, config.memory_size >> 20);
    let checked = (|| -> Result<Travelling, String> {
        let b = read_bounded(&pulled.description, 1 << 20).map_err(|e| e.to_string())?;
        let t: Travelling = serde_json::from_slice(&b)
            .map_err(|e| format!("its description is not cabin's ({e})"))?;
        let r = &t.record;
        if r.version != RECORD_VERSION {
            return Err(format!(
                "it was saved by another cabin (description version {})",
                r.version
            ));
        }
        if !r.devices.is_empty() {
            return Err("it names shared folders or disks of another host".into());
        }
        if r.fingerprint.cpus != cpus || r.fingerprint.memory_mib != memory_mib {
            return Err(format!(
                "it was saved with {} CPUs and {} MiB of memory, and the image describes {cpus} and {memory_mib}",
                r.fingerprint.cpus, r.fingerprint.memory_mib
            ));
        }
        let size = fs::metadata(&pulled.state)
            .map_err(|e| e.to_string())?
            .len();
        if size != r.state_bytes {
            return Err(format!(
                "the state is {size} bytes, {} were saved",
                r.state_bytes
            ));
        }
        let Some(mac) = canonical_mac(&r.mac) else {
            return Err(format!("{:?} is not a MAC address", r.mac));
        };
        match (&t.direct, &pulled.kernel) {
            (None, _) => {}
            (Some(d), Some(_)) if valid_root(&d.root) => {}
            (Some(d), Some(_)) => {
                return Err(format!(
                    "it names the root device {:?}, not a disk cabin makes",
                    d.root
                ))
            }
            (Some(_), None) => return Err("the kernel it runs is missing".into()),
        }
        let mut t = t;
        t.record.mac = mac;
        Ok(t)
    })();
    let t = match checked {
        Ok(t) => t,
        Err(why) => return Some(why),
    };
    let put = (|| -> io::Result<()> {
        if let (Some(d), Some(k)) = (&t.direct, &pulled.kernel) {
            // Under cabin's own name, whatever the image calls it.
            fs::rename(k, dir.join(KERNEL))?;
            let d = DirectBoot {
                kernel: KERNEL.into(),
                ..d.clone()
            };
            d.write(dir).map_err(io::Error::other)?;
        }
        let mut record = t.record;
        record.disks.clear();
        record.pulled = true;
        write_record(dir, &record)?;
        fs::set_permissions(&pulled.state, fs::Permissions::from_mode(0o600))?;
        fs::rename(&pulled.state, dir.join(SUSPENDED_STATE))?;
        if t.direct.is_none() {
            config.mac_address = record.mac.clone();
        }
        Ok(())
    })();
    match put {
        Ok(()) => None,
        Err(e) => {
            let _ = discard_in(dir);
            Some(format!("putting it in place failed ({e})"))
        }
    }
}

/// A MAC address as `xx:xx:xx:xx:xx:xx` in lower-case digits, if `s` is one.
pub fn canonical_mac(s: &str) -> Option<String> {
    let b = cabin_net::dhcp::parse_mac(s)?;
    Some(
        b.iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// The guest's root device as cabin writes it: `/dev/vdX` or one of its partitions.
fn valid_root(s: &str) -> bool {
    s.strip_prefix("/dev/vd").is_some_and(|rest| {
        let mut b = rest.bytes();
        b.next().is_some_and(|c| c.is_ascii_lowercase()) && b.all(|c| c.is_ascii_digit())
    })
}

/// The files a pull brought of a state.
#[derive(Debug, Clone)]
pub struct PulledState {
    pub description: PathBuf,
    pub state: PathBuf,
    pub kernel: Option<PathBuf>,
}

/// Records the disks of a VM whose state was just pulled, now that they are in place:
/// from here on, a disk changed is one the memory no longer goes with.
pub fn settle(vm: &Vm) -> Result<(), VmError> {
    let Saved::State(mut record) = saved(vm) else {
        return Ok(());
    };
    record.disks = record.devices.identities(vm);
    write_record(&vm.dir, &record).map_err(io_err("recording the pulled VM's disks"))
}

/// What the runner knows of a run that is being suspended.
pub struct Saving<'a> {
    pub vm: &'a Vm,
    /// What this run is, as far as a state depends on it (or why that is unknown).
    pub fingerprint: &'a Result<Fingerprint, String>,
    pub devices: &'a Devices,
    pub address: Option<Ipv4Addr>,
    /// The card's MAC address as the guest has it now.
    pub mac: Arc<Mutex<String>>,
}

/// The runner's side of `vm suspend`: saves the VM's state, ends QEMU and puts the
/// state in place. If the save fails, the VM goes on running and the error says why.
pub async fn save(s: &Saving<'_>, qmp: &mut Qmp, child: &mut Child) -> Result<(), VmError> {
    let fingerprint = s.fingerprint.as_ref().map_err(|e| {
        VmError::Failed(format!(
            "{} cannot be suspended: what its state would depend on is unknown ({e})",
            s.vm.name
        ))
    })?;
    let staged = s.vm.dir.join(STAGED);
    let _ = fs::remove_file(&staged);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .map_err(io_err("creating the saved state"))?;
    let disks = || s.devices.identities(s.vm);
    // Recorded while the guest can still go on: a record that cannot be written (a
    // disk filled by the state) loses nothing. Without the state in place it is not
    // read (see `saved`).
    let recorded = async {
        migration::save(qmp, &file, Ram::InStream).await?;
        file.sync_all()?;
        let record = Suspended {
            version: RECORD_VERSION,
            suspended_at: cabin_base::time::now_unix(),
            state_bytes: file.metadata()?.len(),
            fingerprint: fingerprint.clone(),
            disks: disks(),
            devices: s.devices.clone(),
            address: s.address,
            mac: s.mac.locked().clone(),
            pulled: false,
        };
        write_record(&s.vm.dir, &record)
            .map_err(|e| io::Error::new(e.kind(), format!("recording its saved state: {e}")))?;
        Ok::<_, io::Error>(record)
    }
    .await;
    drop(file);
    let mut record = match recorded {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&staged);
            // The guest goes on as it was.
            let _ = qmp.execute("cont", None).await;
            return Err(VmError::Failed(format!(
                "{} cannot be suspended: {}",
                s.vm.name,
                qemu_reason(&e.to_string())
            )));
        }
    };
    // QEMU is done with the disks once it has ended.
    let _ = qmp.execute("quit", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    // QEMU may have written to a disk as it ended (an image's header): the record goes
    // with the disks as they are now. Failing that, the state is still put in place; a
    // resume then finds the disks changed and boots, as after a power cut.
    let now = disks();
    let mut note = Ok(());
    if now != record.disks {
        record.disks = now;
        note = write_record(&s.vm.dir, &record);
    }
    let put = (|| {
        fs::rename(&staged, s.vm.dir.join(SUSPENDED_STATE))?;
        fs::File::open(&s.vm.dir)?.sync_all()
    })();
    put.and(note)
        .map_err(io_err("putting the saved state in place"))
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
                "{} was not suspended within {} s: it is still running, or still being saved (`cabin vm get {}` shows which it ends up as)",
                vm.name,
                timeout.as_secs(),
                vm.name
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long one attempt of [`refresh_guest`] may take.
const ATTEMPT: Duration = Duration::from_secs(45);

/// Kills a process after a time unless dropped first. The kill and the drop take one
/// lock, so a process reaped after the drop is never signalled (its pid may be reused).
struct Watchdog(Arc<Mutex<bool>>);

impl Watchdog {
    fn kill_after(pid: u32, after: Duration) -> Watchdog {
        let cancelled = Arc::new(Mutex::new(false));
        let flag = cancelled.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + after;
            while Instant::now() < end {
                if *flag.locked() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let cancelled = flag.locked();
            if !*cancelled {
                // SAFETY: signalling a child this process has not reaped (the lock is
                // held, and the owner reaps it only after cancelling under this lock).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        Watchdog(cancelled)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        *self.0.locked() = true;
    }
}

/// What [`refresh_guest`] changed besides the clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct Refreshed {
    pub mac_changed: bool,
    /// The guest's host name is the one asked for now.
    pub named: bool,
}

/// After a resume: sets the guest's clock to the host's over SSH (VMs made from an
/// image, which have cabin's key), once its SSH server answers, within `wait`, and
/// gives its network card the MAC address `mac_change.1` in place of `mac_change.0` (a
/// VM pulled with its memory: the state has the MAC of the VM it was saved in). The
/// time is sent once the guest is ready to read it, so the connection's set-up does
/// not make the clock late.
pub fn refresh_guest(
    key: &Path,
    session: &Session,
    wait: Duration,
    mac_change: Option<&(String, String)>,
    hostname: Option<&str>,
) -> Result<Refreshed, String> {
    let mut script =
        String::from("echo ready; read t && date -u -s \"@$t\" >/dev/null && echo set");
    // A VM's name is its host name (on its kernel command line): a copy resumed from
    // another VM's memory still has that VM's until told. Names are letters, digits and
    // ._- (store::normalize_name), nothing a shell reads in quotes.
    if let Some(h) = hostname.filter(|h| {
        h.len() <= 64
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    }) {
        script.push_str(&format!(
            " && echo '{h}' > /proc/sys/kernel/hostname && echo named"
        ));
    }
    let macs = mac_change.and_then(|(o, n)| Some((canonical_mac(o)?, canonical_mac(n)?)));
    if let Some((old, new)) = macs {
        // virtio-net takes a new address while its link is up (VIRTIO_NET_F_CTRL_MAC_ADDR).
        // Its neighbours forgotten, the guest's next packet to the host (this session's
        // answer) asks for the host's address from the new one, which the host learns.
        // A card that has the new address already (an attempt cut short) counts.
        script.push_str(&format!(
            " && for i in /sys/class/net/*; do a=$(cat $i/address); [ \"$a\" = {new} ] && echo mac; [ \"$a\" = {old} ] && ip link set dev \"${{i##*/}}\" address {new} && ip neigh flush dev \"${{i##*/}}\" && echo mac; done; true"
        ));
    }
    let deadline = Instant::now() + wait;
    let mut last = String::from("its SSH server did not answer");
    while Instant::now() < deadline {
        let Some(mut cmd) = session.ssh_command(key, "root") else {
            return Err("it has no address cabin knows of".into());
        };
        // A session whose packets stop (the guest's card changed its address and the
        // host has not learnt it) ends within about 20 s instead of TCP's minutes.
        cmd.args([
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=4",
            "--",
            &script,
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
        // Whatever happens to the session, an attempt ends: its ssh is killed then.
        let _watchdog = Watchdog::kill_after(child.id(), ATTEMPT);
        let mut out = io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        if out.read_line(&mut line).is_ok() && line.trim() == "ready" {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            if let Some(mut stdin) = child.stdin.take() {
                let _ = writeln!(stdin, "{}.{:09}", now.as_secs(), now.subsec_nanos());
            }
            let mut rest = String::new();
            let _ = io::Read::read_to_string(&mut out, &mut rest);
            let said = |w: &str| rest.lines().any(|l| l.trim() == w);
            let (set, mac_changed, named) = (said("set"), said("mac"), said("named"));
            drop(_watchdog);
            let _ = child.wait();
            if set {
                return Ok(Refreshed { mac_changed, named });
            }
            if Instant::now() < deadline {
                // Cut short (killed, or the session broke): again.
                continue;
            }
            return Err("the guest did not take the new time".into());
        }
        drop(_watchdog);
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
                qemu: "QEMU emulator version 7.2.22".into(),
                firmware: "fw".into(),
                cpus: 2,
                memory_mib: 1024,
                shape: "abc".into(),
            },
            disks: Devices::default().identities(vm),
            devices: Devices::default(),
            address: None,
            mac: "02:00:00:00:00:01".into(),
            pulled: false,
        }
    }

    /// `vm` with a disk, suspended: its record (returned) and a 5-byte state.
    fn suspended_with_disk(vm: &Vm) -> Suspended {
        fs::write(vm.disk(), b"disk").unwrap();
        let r = record(vm, 5);
        fs::write(
            vm.dir.join(SUSPENDED_RECORD),
            serde_json::to_vec(&r).unwrap(),
        )
        .unwrap();
        fs::write(vm.dir.join(SUSPENDED_STATE), b"state").unwrap();
        r
    }

    #[test]
    fn a_saved_state_is_usable_only_while_everything_it_was_saved_with_is_unchanged() {
        let t = tempfile::tempdir().unwrap();
        let vm = vm_in(t.path());
        assert!(matches!(saved(&vm), Saved::None));
        let r = suspended_with_disk(&vm);
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
        // Its UEFI variables written since: the same.
        let r = record(&vm, 5);
        assert_eq!(mismatch(&vm, &r, &now), None);
        std::thread::sleep(Duration::from_millis(10));
        fs::write(t.path().join(crate::store::NVRAM), b"vars").unwrap();
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
    fn a_state_whose_disk_changed_since_the_suspend_is_not_pushed() {
        let t = tempfile::tempdir().unwrap();
        let vm = vm_in(t.path());
        suspended_with_disk(&vm);
        let out = outgoing(&vm).unwrap();
        // this host's file names stay here
        assert!(!String::from_utf8_lossy(&out.description).contains("disk.img"));
        std::thread::sleep(Duration::from_millis(10));
        fs::write(vm.disk(), b"disk, changed on the host").unwrap();
        let e = outgoing(&vm).unwrap_err().to_string();
        assert!(e.contains("disk changed since it was suspended"), "{e}");
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

    fn travelling(r: &Suspended, direct: Option<DirectBoot>) -> Vec<u8> {
        serde_json::to_vec(&Travelling {
            record: r.clone(),
            direct,
        })
        .unwrap()
    }

    #[test]
    fn a_pulled_state_is_put_in_place_only_when_it_fits_the_vm_and_names_nothing_outside() {
        let t = tempfile::tempdir().unwrap();
        let vm = vm_in(t.path());
        fs::write(vm.disk(), b"disk").unwrap();
        let from = t.path().join("attachments");
        fs::create_dir(&from).unwrap();
        let mut r = record(&vm, 5);
        r.disks.clear();
        let files = PulledState {
            description: from.join("suspended.json"),
            state: from.join("suspended.state"),
            kernel: Some(from.join("kernel")),
        };
        let direct = DirectBoot {
            image: "debian:12".into(),
            image_digest: "sha256:x".into(),
            kernel: "vmlinuz".into(),
            root: "/dev/vda2".into(),
        };
        let config = VmConfig {
            os: "linux".into(),
            cpu_count: 2,
            memory_size: 1 << 30,
            disk_size: 4,
            mac_address: "02:aa:bb:cc:dd:ee".into(),
            display: "1024x768".into(),
            hardware_model: None,
            machine_identifier: None,
            network_mode: "nat".into(),
        };
        let made = std::cell::RefCell::new(config.clone());
        let put = |r: &Suspended, direct: Option<DirectBoot>, state: &[u8]| {
            fs::write(&files.description, travelling(r, direct)).unwrap();
            fs::write(&files.state, state).unwrap();
            fs::write(from.join("kernel"), b"bzImage").unwrap();
            *made.borrow_mut() = config.clone();
            adopt(t.path(), &files, &mut made.borrow_mut())
        };
        // Not the VM's size; a truncated state; a MAC address or root device that is
        // not one.
        fs::write(&files.description, travelling(&r, None)).unwrap();
        fs::write(&files.state, b"state").unwrap();
        let four = VmConfig {
            cpu_count: 4,
            ..config.clone()
        };
        assert!(adopt(t.path(), &files, &mut four.clone())
            .unwrap()
            .contains("2 CPUs and 1024 MiB"));
        assert!(put(&r, None, b"sta")
            .unwrap()
            .contains("3 bytes, 5 were saved"));
        let bad_mac = Suspended {
            mac: "02:00:00:00:00:01; reboot".into(),
            ..r.clone()
        };
        assert!(put(&bad_mac, None, b"state")
            .unwrap()
            .contains("not a MAC address"));
        for root in ["/dev/sda", "/dev/vda2 init=/bin/sh"] {
            let bad = DirectBoot {
                root: root.into(),
                ..direct.clone()
            };
            assert!(put(&r, Some(bad), b"state")
                .unwrap()
                .contains("not a disk cabin makes"));
        }
        let other_host = Suspended {
            devices: Devices {
                disks: vec!["/srv/extra.img".into()],
                ..Devices::default()
            },
            ..r.clone()
        };
        assert!(put(&other_host, None, b"state")
            .unwrap()
            .contains("of another host"));
        assert!(matches!(saved(&vm), Saved::None));

        // A VM not made from an image keeps the MAC address its guest has.
        assert_eq!(put(&r, None, b"state"), None);
        assert_eq!(made.borrow().mac_address, r.mac);
        discard(&vm).unwrap();

        // One that fits: in place, owner-only, with its kernel under cabin's own name
        // whatever the image calls it (not over config.json); its disks recorded once
        // settled, so that the VM's own disk is the one it goes with.
        let named = DirectBoot {
            kernel: "config.json".into(),
            ..direct.clone()
        };
        fs::write(t.path().join("config.json"), b"{}").unwrap();
        assert_eq!(put(&r, Some(named), b"state"), None);
        assert_eq!(
            made.borrow().mac_address,
            config.mac_address,
            "its own, set over SSH"
        );
        assert_eq!(fs::read(t.path().join("config.json")).unwrap(), b"{}");
        let Saved::State(back) = saved(&vm) else {
            panic!("in place")
        };
        assert_eq!(back.mac, r.mac);
        assert!(back.pulled);
        assert!(back.disks.is_empty());
        assert_eq!(
            fs::metadata(t.path().join(SUSPENDED_STATE))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(fs::read(t.path().join("vmlinuz")).unwrap(), b"bzImage");
        assert_eq!(DirectBoot::read(t.path()).unwrap(), Some(direct));
        settle(&vm).unwrap();
        let Saved::State(settled) = saved(&vm) else {
            panic!("settled")
        };
        assert_eq!(
            settled.disks,
            vec![
                identity(&vm.disk()),
                identity(&vm.dir.join(crate::store::NVRAM))
            ]
        );
    }
}
