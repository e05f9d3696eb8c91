//! Full VMs on disk, laid out as Lume lays them out: `<location>/<name>/` holding
//! `config.json` (Lume's keys), `disk.img` (raw, sparse) and `nvram.bin` (the UEFI
//! variable store), plus `sessions.json` while the VM runs. The process that runs a VM
//! holds an flock on its `config.json`: that is what "running" means, for every
//! process, with no daemon.
//!
//! Every change is made so that a crash leaves the old state or the new one: a VM is
//! created or cloned in a hidden staging directory renamed into place, and
//! `config.json` is replaced by rename.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::settings::Settings;
use cabin_base::sizes::parse_display;

pub const CONFIG: &str = "config.json";
pub const DISK: &str = "disk.img";
pub const NVRAM: &str = "nvram.bin";
pub const SESSION: &str = "sessions.json";
/// Why the VM's last start failed (cabin's own file; Lume has none).
pub const START_ERROR: &str = ".start-error.json";
/// A VM made from an image: how it boots (`from_image::DirectBoot`), and its kernel.
pub const BOOT: &str = "cabin-boot.json";
/// A suspended VM's memory and device state (QEMU's migration stream), renamed into
/// place last: the VM is suspended once this file is there.
pub const SUSPENDED_STATE: &str = "suspended.state";
/// What that state was saved with (`suspend::Suspended`), written before it.
pub const SUSPENDED_RECORD: &str = "suspended.json";
pub const KERNEL: &str = "vmlinuz";

/// The UEFI firmware and the template of its variable store (Debian's `ovmf`).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

pub const MIN_LINUX_DISK: u64 = 10 << 30;

/// `config.json`, with Lume's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmConfig {
    pub os: String,
    pub cpu_count: u32,
    pub memory_size: u64,
    pub disk_size: u64,
    pub mac_address: String,
    pub display: String,
    #[serde(default)]
    pub hardware_model: Option<String>,
    #[serde(default)]
    pub machine_identifier: Option<String>,
    #[serde(default = "default_network")]
    pub network_mode: String,
}

fn default_network() -> String {
    "nat".into()
}

/// What is kept while a VM runs (Lume's `sessions.json`, plus what cabin needs to
/// reach the process that runs it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    /// `vnc://:PASSWORD@127.0.0.1:PORT`, absent with VNC disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub shared_directories: Vec<SharedDir>,
    pub pid: u32,
    pub started_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The port on 127.0.0.1 forwarded to the guest's SSH port (rootless networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_port: Option<u16>,
    /// The guest's SSH server answered the runner's last check.
    #[serde(default)]
    pub ssh_available: bool,
    /// The serial console's socket (one terminal at a time); absent in sessions of
    /// VMs started by cabin before it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_socket: Option<PathBuf>,
    /// What this run had to say about how it started (a saved state it could not
    /// resume from, an address that changed), for the process that asked for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
}

impl Session {
    /// The VNC server's port on 127.0.0.1 and its password, from the session's URL.
    pub fn vnc(&self) -> Option<(u16, String)> {
        let rest = self.url.as_deref()?.strip_prefix("vnc://:")?;
        let (password, address) = rest.rsplit_once('@')?;
        let port = address.rsplit_once(':')?.1.parse().ok()?;
        Some((port, password.to_string()))
    }

    /// Where the guest's SSH server is reached from the host: its address on the
    /// bridge, or the forwarded port on 127.0.0.1.
    pub fn ssh_address(&self) -> Option<(String, u16)> {
        match (&self.ip_address, self.ssh_port) {
            (_, Some(port)) => Some(("127.0.0.1".into(), port)),
            (Some(ip), None) => Some((ip.clone(), 22)),
            (None, None) => None,
        }
    }

    /// The system's ssh client set up to log in to the guest as `user` with cabin's
    /// `key` (if it exists); None when the guest has no address cabin knows of. Every
    /// VM's host key is new to this host, and clones share theirs: checking them
    /// against known_hosts would only get in the way.
    pub fn ssh_command(&self, key: &Path, user: &str) -> Option<std::process::Command> {
        let (address, port) = self.ssh_address()?;
        let mut cmd = std::process::Command::new("ssh");
        if key.is_file() {
            cmd.arg("-i").arg(key);
        }
        cmd.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-p",
            &port.to_string(),
        ]);
        cmd.arg(format!("{user}@{address}"));
        Some(cmd)
    }
}

/// A start that failed: kept in the VM's directory until the next start succeeds, so
/// that every front end (`vm get`, the HTTP API) can say why the VM is not running even
/// when the start was asked for by another process that has since gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartError {
    pub message: String,
    /// Unix seconds.
    pub at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SharedDir {
    pub host_path: String,
    pub tag: String,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("Virtual machine not found: {0}")]
    NotFound(String),
    #[error("Virtual machine already exists with name: {0}")]
    Exists(String),
    #[error("Virtual machine already running: {0}")]
    Running(String),
    /// A push holds it (its disk and state are being read).
    #[error("Virtual machine is being pushed: {0}; run or change it once the push is done")]
    Pushing(String),
    #[error("Virtual machine is not running: {0}")]
    NotRunning(String),
    /// Its disk belongs with the memory it was suspended with.
    #[error("Virtual machine is suspended: {0}; its disk belongs with its saved memory: resume it (cabin vm run) and stop it, or discard the saved state (cabin vm stop), first")]
    Suspended(String),
    /// The request cannot be carried out as it is: why, and what to do.
    #[error("{0}")]
    Invalid(String),
    /// Something on the way failed (QEMU, its monitor, a registry): what it said.
    #[error("{0}")]
    Failed(String),
    #[error("{what}: {source}{}", no_space_hint(source))]
    Io { what: String, source: io::Error },
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
    #[error("joining the bridge: {0}")]
    Bridge(#[from] cabin_net::bridge::BridgeError),
    #[error(transparent)]
    Publish(#[from] cabin_net::ports::PublishError),
}

/// What to do about a full disk, when the error is one.
fn no_space_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        NO_SPACE_HINT
    } else {
        ""
    }
}

/// What to do when a storage location is full, appended to the error.
pub(super) const NO_SPACE_HINT: &str =
    "; free some space there or use another storage location (--storage)";

/// Wraps an I/O error with what was being done (a full disk says what to do).
pub fn io_err(what: impl std::fmt::Display) -> impl Fn(io::Error) -> VmError {
    move |source| VmError::Io {
        what: what.to_string(),
        source,
    }
}

/// Lume turns `name:tag` into `name_tag`; anything that could leave the location
/// directory is refused.
pub fn normalize_name(name: &str) -> Result<String, VmError> {
    let n = name.replace(':', "_");
    let ok = !n.is_empty()
        && n.len() <= 128
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !ok {
        return Err(VmError::Invalid(format!(
            "Invalid VM name: {name:?}: use letters, digits, '.', '_' and '-', starting with a letter or digit"
        )));
    }
    Ok(n)
}

/// A random locally administered unicast MAC address.
pub fn random_mac() -> Result<String, VmError> {
    let mut b = random_bytes::<6>()?;
    b[0] = (b[0] & 0xfe) | 0x02;
    Ok(b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A new machine identity (the guest's SMBIOS UUID), base64 as Lume stores it.
pub fn random_machine_id() -> Result<String, VmError> {
    Ok(base64(&random_bytes::<16>()?))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], VmError> {
    cabin_base::random::bytes::<N>().map_err(|e| VmError::Failed(e.to_string()))
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The SMBIOS UUID for a base64 machine identifier (16 bytes), for QEMU's `-uuid`.
pub fn machine_uuid(id: &str) -> Option<String> {
    const A: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for ch in id.trim_end_matches('=').chars() {
        bits = bits << 6 | A.find(ch)? as u32;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    (out.len() == 16).then(|| {
        let h: String = out.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    })
}

/// What a VM is doing, as `vm ls`, `vm get` and Lume's API say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Running,
    Stopped,
    /// Its memory and device state are saved in its directory; `vm run` resumes it.
    Suspended,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Running => "running",
            VmStatus::Stopped => "stopped",
            VmStatus::Suspended => "suspended",
        }
    }
}

impl std::fmt::Display for VmStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A VM directory found in a location.
#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub location_name: String,
    pub dir: PathBuf,
}

impl Vm {
    pub fn config(&self) -> Result<VmConfig, VmError> {
        let mut text = String::new();
        fs::File::open(self.dir.join(CONFIG))
            .and_then(|f| f.take(1 << 20).read_to_string(&mut text))
            .map_err(io_err(format!("reading {}'s config.json", self.name)))?;
        serde_json::from_str(&text).map_err(|e| {
            VmError::Failed(format!(
                "{}'s config.json is unreadable ({e}); fix it or delete the VM",
                self.name
            ))
        })
    }

    /// Replaces config.json whole.
    pub fn save_config(&self, c: &VmConfig) -> Result<(), VmError> {
        write_config(&self.dir, c)
    }

    /// Whether a process holds the VM's lock (runs it).
    pub fn is_running(&self) -> bool {
        // A shared probe conflicts only with the runner's exclusive lock.
        cabin_base::lock::is_held(&self.dir.join(CONFIG)).unwrap_or(false)
    }

    /// The running VM's session, if it runs.
    pub fn session(&self) -> Option<Session> {
        if !self.is_running() {
            return None;
        }
        let b = fs::read(self.dir.join(SESSION)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK)
    }

    /// What a VM that does not run is: suspended while its saved state is in its
    /// directory, else stopped. (Whether it runs is its lock: see `session`.)
    pub fn status_at_rest(&self) -> VmStatus {
        if self.dir.join(SUSPENDED_STATE).is_file() {
            VmStatus::Suspended
        } else {
            VmStatus::Stopped
        }
    }

    /// Refuses what a suspended VM's disk must not go through (a clone, a push, a
    /// change of its machine): the saved memory still holds its file systems' state.
    /// For a VM its caller found not running.
    pub fn refuse_if_suspended(&self) -> Result<(), VmError> {
        if self.status_at_rest() == VmStatus::Suspended {
            return Err(VmError::Suspended(self.name.clone()));
        }
        Ok(())
    }

    /// Why the last start failed, if it did and no start succeeded since.
    pub fn start_error(&self) -> Option<StartError> {
        let b = fs::read(self.dir.join(START_ERROR)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Records a failed start (replacing any earlier one).
    pub fn record_start_error(&self, message: &str) {
        let e = StartError {
            message: message.to_string(),
            at: cabin_base::time::now_unix(),
        };
        let tmp = self.dir.join(".start-error.json.tmp");
        let _ = fs::write(&tmp, serde_json::to_vec(&e).expect("serialisable"))
            .and_then(|()| fs::rename(&tmp, self.dir.join(START_ERROR)));
    }

    pub fn clear_start_error(&self) {
        let _ = fs::remove_file(self.dir.join(START_ERROR));
    }
}

fn write_config(dir: &Path, c: &VmConfig) -> Result<(), VmError> {
    let tmp = dir.join(".config.json.tmp");
    let text = serde_json::to_vec_pretty(c).expect("serialisable");
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, dir.join(CONFIG)))
        .map_err(io_err("writing config.json"))
}

pub struct CreateOptions {
    pub os: String,
    pub cpu: u32,
    pub memory: u64,
    pub disk_size: u64,
    pub display: String,
    pub network: String,
}

impl CreateOptions {
    pub fn validate(&self) -> Result<(), VmError> {
        if self.os != "linux" {
            return Err(VmError::Invalid(if self.os.eq_ignore_ascii_case("macos") {
                "macOS guests need Apple hardware; cabin creates linux VMs (--os linux)".into()
            } else {
                "Unsupported OS type".into()
            }));
        }
        if self.cpu == 0 || self.cpu > 256 {
            return Err(VmError::Invalid(format!(
                "invalid CPU count {}: 1 to 256",
                self.cpu
            )));
        }
        if self.memory < 64 << 20 {
            return Err(VmError::Invalid("memory must be at least 64MB".into()));
        }
        if self.disk_size < MIN_LINUX_DISK {
            return Err(VmError::Invalid(
                "disk size must be at least 10GB for linux VMs".into(),
            ));
        }
        parse_display(&self.display).map_err(|e| VmError::Invalid(e.to_string()))?;
        parse_network(&self.network)?;
        Ok(())
    }
}

/// `nat`, `bridged` or `bridged:<interface>`.
pub fn parse_network(s: &str) -> Result<(), VmError> {
    match s.split_once(':') {
        None if s == "nat" || s == "bridged" => Ok(()),
        Some(("bridged", iface)) if !iface.is_empty() && iface.len() < 16 => Ok(()),
        _ => Err(VmError::Invalid(format!(
            "Invalid network mode: {s}: use nat, bridged or bridged:<interface>"
        ))),
    }
}

/// Finds a VM: in `storage` if given, else in every location, default first.
pub fn find(settings: &Settings, name: &str, storage: Option<&str>) -> Result<Vm, VmError> {
    let name = normalize_name(name)?;
    let places = match storage {
        Some(s) if !s.is_empty() => vec![settings.resolve(Some(s))?],
        _ => settings.search_order(),
    };
    for (location_name, dir) in places {
        let d = dir.join(&name);
        if d.join(CONFIG).is_file() {
            return Ok(Vm {
                name,
                location_name,
                dir: d,
            });
        }
    }
    Err(VmError::NotFound(name))
}

/// Every VM of every location (or of `storage`), sorted by name.
pub fn list(settings: &Settings, storage: Option<&str>) -> Result<Vec<Vm>, VmError> {
    let places = match storage {
        Some(s) if !s.is_empty() => vec![settings.resolve(Some(s))?],
        _ => settings.search_order(),
    };
    let mut out: Vec<Vm> = Vec::new();
    for (location_name, dir) in places {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.path().join(CONFIG).is_file() {
                continue;
            }
            if out.iter().any(|v| v.name == name) {
                continue;
            }
            out.push(Vm {
                name,
                location_name: location_name.clone(),
                dir: e.path(),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn staging(parent: &Path, name: &str) -> PathBuf {
    parent.join(format!(".{name}.staging-{}", std::process::id()))
}

/// `.NAME.staging-PID` whose process is gone.
pub fn abandoned_staging(name: &str) -> bool {
    let Some(pid) = name
        .strip_prefix('.')
        .and_then(|n| n.rsplit_once(".staging-"))
        .and_then(|(_, pid)| pid.parse::<i32>().ok())
    else {
        return false;
    };
    !cabin_base::spawn::process_alive(pid)
}

/// For a VM about to be made (created or cloned) as `name` in `storage`: its location's
/// name, the directory it goes in, and an empty staging directory name there. Refuses a
/// name that is taken anywhere it would be found.
fn new_vm_dir(
    settings: &Settings,
    name: &str,
    storage: Option<&str>,
) -> Result<(String, PathBuf, PathBuf), VmError> {
    if find(settings, name, storage).is_ok() {
        return Err(VmError::Exists(name.to_string()));
    }
    let (location_name, parent) = settings.resolve(storage)?;
    fs::create_dir_all(&parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let stage = staging(&parent, name);
    let _ = fs::remove_dir_all(&stage);
    // What killed creates and clones left in this location goes now (with an image,
    // gigabytes).
    for e in fs::read_dir(&parent).into_iter().flatten().flatten() {
        if abandoned_staging(&e.file_name().to_string_lossy()) && e.path().is_dir() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    Ok((location_name, parent, stage))
}

/// Creates a linux VM: an empty sparse disk and a fresh UEFI variable store.
pub fn create(
    settings: &Settings,
    name: &str,
    storage: Option<&str>,
    opts: &CreateOptions,
) -> Result<Vm, VmError> {
    create_with(settings, name, storage, opts, |stage| {
        let disk = fs::File::create(stage.join(DISK)).map_err(io_err("creating disk.img"))?;
        disk.set_len(opts.disk_size)
            .map_err(io_err("sizing disk.img"))
    })
}

/// Creates a linux VM whose directory's contents besides config.json and nvram.bin
/// (at least `disk.img`) are made by `fill(staging directory)`.
pub fn create_with(
    settings: &Settings,
    name: &str,
    storage: Option<&str>,
    opts: &CreateOptions,
    fill: impl FnOnce(&Path) -> Result<(), VmError>,
) -> Result<Vm, VmError> {
    let name = normalize_name(name)?;
    opts.validate()?;
    let (location_name, parent, stage) = new_vm_dir(settings, &name, storage)?;
    let made = (|| {
        private_dir(&stage).map_err(io_err("creating the VM directory"))?;
        fill(&stage)?;
        if !Path::new(OVMF_VARS).is_file() {
            return Err(VmError::Failed(format!(
                "the UEFI firmware is missing ({OVMF_VARS}): install it with apt-get install ovmf"
            )));
        }
        fs::copy(OVMF_VARS, stage.join(NVRAM))
            .map_err(io_err("copying the UEFI variable store"))?;
        write_config(
            &stage,
            &VmConfig {
                os: opts.os.clone(),
                cpu_count: opts.cpu,
                memory_size: opts.memory,
                disk_size: opts.disk_size,
                mac_address: random_mac()?,
                display: opts.display.clone(),
                hardware_model: None,
                machine_identifier: Some(random_machine_id()?),
                network_mode: opts.network.clone(),
            },
        )
    })();
    place(made, &stage, &parent.join(&name), &name)?;
    Ok(Vm {
        dir: parent.join(&name),
        name,
        location_name,
    })
}

/// Moves a staged VM directory into place, or removes it if making it failed.
fn place(made: Result<(), VmError>, stage: &Path, dest: &Path, name: &str) -> Result<(), VmError> {
    if let Err(e) = made {
        let _ = fs::remove_dir_all(stage);
        return Err(e);
    }
    // rename(2) onto a missing name only: an existing VM is never replaced.
    if dest.exists() {
        let _ = fs::remove_dir_all(stage);
        return Err(VmError::Exists(name.to_string()));
    }
    fs::rename(stage, dest).map_err(|e| {
        let _ = fs::remove_dir_all(stage);
        VmError::Failed(format!("moving the new VM into place: {e}"))
    })
}

/// Lume's `set`: CPUs, memory, display, and a disk that only grows. Stopped VMs only.
pub fn set(
    vm: &Vm,
    cpu: Option<u32>,
    memory: Option<u64>,
    disk_size: Option<u64>,
    display: Option<&str>,
) -> Result<VmConfig, VmError> {
    let c = check_set(vm, cpu, memory, disk_size, display)?;
    if let Some(size) = disk_size {
        // A self-contained disk's root partition grows with it (its file system
        // follows at the guest's next boot); any other disk is the guest's to use.
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(vm.disk())
            .and_then(|mut f| {
                f.set_len(size)?;
                cabin_image::gpt::grow(&mut f)?;
                f.sync_all()
            })
            .map_err(io_err("growing disk.img"))?;
    }
    vm.save_config(&c)?;
    Ok(c)
}

/// What `set` would make of the VM's config, checked but not applied (Lume's dry run).
pub fn check_set(
    vm: &Vm,
    cpu: Option<u32>,
    memory: Option<u64>,
    disk_size: Option<u64>,
    display: Option<&str>,
) -> Result<VmConfig, VmError> {
    if vm.is_running() {
        return Err(VmError::Running(vm.name.clone()));
    }
    if cpu.is_some() || memory.is_some() || disk_size.is_some() || display.is_some() {
        vm.refuse_if_suspended()?;
    }
    let mut c = vm.config()?;
    if let Some(n) = cpu {
        if n == 0 || n > 256 {
            return Err(VmError::Invalid(format!("invalid CPU count {n}: 1 to 256")));
        }
        c.cpu_count = n;
    }
    if let Some(m) = memory {
        if m < 64 << 20 {
            return Err(VmError::Invalid("memory must be at least 64MB".into()));
        }
        c.memory_size = m;
    }
    if let Some(d) = display {
        parse_display(d).map_err(|e| VmError::Invalid(e.to_string()))?;
        c.display = d.to_string();
    }
    if let Some(size) = disk_size {
        let current = fs::metadata(vm.disk())
            .map_err(io_err("reading disk.img"))?
            .len();
        if size < current {
            return Err(VmError::Invalid(format!(
                "Cannot shrink disk: {} is {current} bytes, asked for {size}; disks only grow",
                vm.name
            )));
        }
        c.disk_size = size;
    }
    Ok(c)
}

/// Deletes a stopped VM's directory (renamed away first, so a half-deleted VM is never
/// listed).
pub fn delete(vm: &Vm) -> Result<(), VmError> {
    if vm.is_running() {
        return Err(VmError::Running(vm.name.clone()));
    }
    let parent = vm.dir.parent().unwrap_or(Path::new("/"));
    let doomed = parent.join(format!(".{}.deleting-{}", vm.name, std::process::id()));
    fs::rename(&vm.dir, &doomed).map_err(io_err("deleting the VM"))?;
    fs::remove_dir_all(&doomed).map_err(io_err("deleting the VM's files"))
}

/// Clones a stopped VM: the disk copy-on-write (FICLONE) where the file system can,
/// a sparse copy otherwise; the clone gets its own MAC address and machine identity.
pub fn clone(
    settings: &Settings,
    src: &Vm,
    new_name: &str,
    dest_storage: Option<&str>,
) -> Result<Vm, VmError> {
    let new_name = normalize_name(new_name)?;
    if src.is_running() {
        return Err(VmError::Running(src.name.clone()));
    }
    src.refuse_if_suspended()?;
    let (location_name, parent, stage) = new_vm_dir(settings, &new_name, dest_storage)?;
    let made = (|| {
        private_dir(&stage).map_err(io_err("creating the clone's directory"))?;
        copy_disk(&src.disk(), &stage.join(DISK))?;
        fs::copy(src.dir.join(NVRAM), stage.join(NVRAM)).map_err(io_err("copying nvram.bin"))?;
        // A VM made from an image boots its own kernel.
        for extra in [BOOT, KERNEL] {
            if src.dir.join(extra).is_file() {
                fs::copy(src.dir.join(extra), stage.join(extra))
                    .map_err(io_err(format!("copying {extra}")))?;
            }
        }
        let mut c = src.config()?;
        c.mac_address = random_mac()?;
        c.machine_identifier = Some(random_machine_id()?);
        write_config(&stage, &c)
    })();
    let dest = parent.join(&new_name);
    place(made, &stage, &dest, &new_name)?;
    Ok(Vm {
        name: new_name,
        location_name,
        dir: dest,
    })
}

/// Copies a disk image (see [`cabin_base::files::copy_sparse`]), flushed before the
/// clone is put in place.
pub fn copy_disk(src: &Path, dst: &Path) -> Result<(), VmError> {
    cabin_base::files::copy_sparse(src, dst)
        .map_err(|e| VmError::Failed(format!("copying the disk {}: {e}", src.display())))
}

/// Bytes a file takes on disk, and its apparent size.
pub fn disk_usage(p: &Path) -> (u64, u64) {
    fs::metadata(p)
        .map(|m| (m.blocks() * 512, m.len()))
        .unwrap_or((0, 0))
}

/// A new VM directory, its owner's only: its disk is the guest's data, and no other
/// user (a VM's own QEMU user included) reaches it by path.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Holds `vm`'s config.json under a flock until the file returned is dropped: a run
/// holds it exclusive for as long as the VM runs (that is "running", for every
/// process); a push holds it shared, so that no run starts under it while `ls` still
/// shows the VM stopped. [`VmError::Running`] when a run holds it,
/// [`VmError::Pushing`] when a push does.
pub fn lock_config(vm: &Vm, mode: cabin_base::lock::Mode) -> Result<fs::File, VmError> {
    use cabin_base::lock::{lock_file, Mode, Wait};
    let f = fs::File::open(vm.dir.join(CONFIG))
        .map_err(|e| VmError::Failed(format!("opening {}'s config.json: {e}", vm.name)))?;
    // A `ls` probing with a shared lock holds it for a moment: try a few times.
    for _ in 0..20 {
        if lock_file(&f, mode, Wait::NoWait)
            .map_err(|e| VmError::Failed(format!("locking {}'s config.json: {e}", vm.name)))?
        {
            return Ok(f);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // Only a run holds it exclusive; a holder that lets a shared lock in is a push.
    if mode == Mode::Exclusive && lock_file(&f, Mode::Shared, Wait::NoWait).unwrap_or(false) {
        return Err(VmError::Pushing(vm.name.clone()));
    }
    Err(VmError::Running(vm.name.clone()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_stagings_of_dead_processes_are_abandoned() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        assert!(abandoned_staging(&format!(".deb.staging-{dead}")));
        assert!(abandoned_staging(&format!(".a.staging-b.staging-{dead}")));
        assert!(!abandoned_staging(&format!(
            ".deb.staging-{}",
            std::process::id()
        )));
        assert!(!abandoned_staging(".deb.pulling"));
        assert!(!abandoned_staging("deb"));
    }

    use super::*;

    #[test]
    fn a_vm_held_by_a_push_is_refused_as_pushed_and_one_held_by_a_run_as_running() {
        use cabin_base::lock::{lock_file, Mode, Wait};
        let dir = tempfile::tempdir().unwrap();
        let vm = Vm {
            name: "deb".into(),
            location_name: "default".into(),
            dir: dir.path().to_path_buf(),
        };
        fs::write(dir.path().join(CONFIG), "{}").unwrap();
        let holder = fs::File::open(dir.path().join(CONFIG)).unwrap();
        assert!(lock_file(&holder, Mode::Shared, Wait::NoWait).unwrap());
        assert!(matches!(
            lock_config(&vm, Mode::Exclusive),
            Err(VmError::Pushing(name)) if name == "deb"
        ));
        // Another push may read it at the same time.
        assert!(lock_config(&vm, Mode::Shared).is_ok());
        drop(holder);
        let run = lock_config(&vm, Mode::Exclusive).unwrap();
        assert!(matches!(
            lock_config(&vm, Mode::Exclusive),
            Err(VmError::Running(_))
        ));
        assert!(matches!(
            lock_config(&vm, Mode::Shared),
            Err(VmError::Running(_))
        ));
        drop(run);
    }

    #[test]
    fn a_sessions_vnc_url_gives_its_port_and_password() {
        let mut s = Session {
            url: Some("vnc://:Ab3dE6gH@127.0.0.1:5903".into()),
            shared_directories: vec![],
            pid: 1,
            started_at: 0,
            ip_address: None,
            ssh_port: None,
            ssh_available: false,
            serial_socket: None,
            notices: vec![],
        };
        assert_eq!(s.vnc(), Some((5903, "Ab3dE6gH".to_string())));
        s.url = Some("vnc://127.0.0.1:5903".into());
        assert_eq!(s.vnc(), None);
        s.url = None;
        assert_eq!(s.vnc(), None);
    }

    fn opts() -> CreateOptions {
        CreateOptions {
            os: "linux".into(),
            cpu: 2,
            memory: 1 << 30,
            disk_size: 20 << 30,
            display: "1024x768".into(),
            network: "nat".into(),
        }
    }

    #[test]
    fn names_macs_and_machine_ids() {
        assert_eq!(normalize_name("ubuntu:latest").unwrap(), "ubuntu_latest");
        for bad in ["", "../x", "a/b", ".hidden", "-x", "a b"] {
            assert!(normalize_name(bad).is_err(), "{bad}");
        }
        let mac = random_mac().unwrap();
        assert_eq!(mac.len(), 17);
        let first = u8::from_str_radix(&mac[..2], 16).unwrap();
        assert_eq!(first & 0x03, 0x02, "locally administered unicast: {mac}");
        assert_ne!(mac, random_mac().unwrap());
        assert_eq!(base64(b"\x00\x01\x02"), "AAEC");
        assert_eq!(base64(b"ab"), "YWI=");
        let id = random_machine_id().unwrap();
        assert_eq!(machine_uuid(&id).unwrap().len(), 36);
        assert!(parse_network("bridged:eth0").is_ok());
        assert!(parse_network("host").is_err());
    }

    #[test]
    fn create_set_clone_delete() {
        if !Path::new(OVMF_VARS).exists() {
            eprintln!("skipped: no OVMF");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let paths = cabin_base::Paths::at(t.path());
        let s = Settings::defaults(&paths);
        let vm = create(&s, "web", None, &opts()).unwrap();
        assert_eq!(vm.dir, t.path().join("vms/web"));
        let (alloc, total) = disk_usage(&vm.disk());
        assert_eq!(total, 20 << 30);
        assert!(alloc < 1 << 20, "sparse: {alloc}");
        assert!(matches!(
            create(&s, "web", None, &opts()),
            Err(VmError::Exists(_))
        ));
        let mut small = opts();
        small.disk_size = 1 << 30;
        assert!(create(&s, "tiny", None, &small).is_err());
        assert!(
            !t.path().join("vms/tiny").exists(),
            "nothing left of a refused create"
        );

        let c = set(&vm, Some(4), None, Some(30 << 30), Some("1280x800")).unwrap();
        assert_eq!(
            (c.cpu_count, c.disk_size, c.display.as_str()),
            (4, 30 << 30, "1280x800")
        );
        assert!(set(&vm, None, None, Some(10 << 30), None)
            .unwrap_err()
            .to_string()
            .contains("Cannot shrink disk"));
        // A dry run checks and changes nothing.
        let planned = check_set(&vm, Some(8), None, Some(40 << 30), None).unwrap();
        assert_eq!(planned.cpu_count, 8);
        assert_eq!(vm.config().unwrap(), c);
        assert_eq!(disk_usage(&vm.disk()).1, 30 << 30);
        assert!(check_set(&vm, None, None, Some(1 << 30), None).is_err());

        // A failed start is kept until cleared, and never cloned.
        assert!(vm.start_error().is_none());
        vm.record_start_error("QEMU exited");
        assert_eq!(vm.start_error().unwrap().message, "QEMU exited");

        // Data written to the disk comes along; holes stay holes.
        std::os::unix::fs::FileExt::write_all_at(
            &fs::OpenOptions::new().write(true).open(vm.disk()).unwrap(),
            b"hello",
            5 << 30,
        )
        .unwrap();
        let copy = clone(&s, &vm, "web2", None).unwrap();
        let cc = copy.config().unwrap();
        assert_ne!(cc.mac_address, c.mac_address);
        assert_ne!(cc.machine_identifier, c.machine_identifier);
        assert_eq!(cc.cpu_count, 4);
        assert!(copy.start_error().is_none());
        vm.clear_start_error();
        assert!(vm.start_error().is_none());
        let mut buf = [0u8; 5];
        std::os::unix::fs::FileExt::read_exact_at(
            &fs::File::open(copy.disk()).unwrap(),
            &mut buf,
            5 << 30,
        )
        .unwrap();
        assert_eq!(&buf, b"hello");
        assert!(disk_usage(&copy.disk()).0 < 16 << 20);
        let names: Vec<String> = list(&s, None)
            .unwrap()
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(names, ["web", "web2"]);
        delete(&copy).unwrap();
        assert!(matches!(find(&s, "web2", None), Err(VmError::NotFound(_))));
        assert_eq!(
            find(&s, "nope", None).unwrap_err().to_string(),
            "Virtual machine not found: nope"
        );
    }
}
