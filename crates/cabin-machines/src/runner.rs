//! Running a full VM: the process that runs it holds the VM's lock (an flock on its
//! config.json) for as long as QEMU lives, publishes `sessions.json` (VNC address,
//! shared folders, its own pid), and on SIGTERM or SIGINT asks the guest to power off
//! (ACPI), killing it after a grace period. `stop` from any process signals that pid.
//! A start that fails is recorded in the VM's directory (`Vm::start_error`).
//!
//! Front ends that run VMs in the background (`vm run --detach`, the HTTP API) start
//! the runner as a process of its own with [`start_detached`], which leaves it the
//! options as a typed record (`.run.json` in the VM's directory), and wait for it with
//! [`wait_started`], which judges the start by the records the runner writes (its
//! session, its start error), never by what it prints.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cabin_vmm::full::{self, Boot, FullVmSpec, Vnc};
use cabin_vmm::migration;
use cabin_vmm::qemu::Qemu;
use cabin_vmm::qmp::Qmp;
use cabin_vmm::{NetBackend, ShareSpec};
use serde_json::json;
use tokio::signal::unix::{signal, SignalKind};

use cabin_base::sync::Locked;
use cabin_base::{random, spawn, Host};
use cabin_vmm::AccelRequest;

use crate::from_image::{self, DirectBoot, GuestAddress};
use crate::store::{self, io_err, Session, SharedDir, Vm, VmError};
use crate::suspend;
use cabin_vmm::rundir::RunDir;

/// How long a guest has to power off after the ACPI button before it is killed.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    /// Host directories shared into the guest, read-only when the flag says so.
    pub shared_dirs: Vec<(PathBuf, bool)>,
    /// A read-only installer image to boot from (`--mount`).
    pub iso: Option<PathBuf>,
    pub disks: Vec<PathBuf>,
    pub vnc: bool,
    /// A fixed VNC port (5900 and up) instead of the first free one.
    pub vnc_port: Option<u16>,
    /// A fixed VNC password instead of a generated one.
    pub vnc_password: Option<String>,
    pub accel: AccelRequest,
}

/// 9p tags for shared folders: the folder's name (as Lume names its entries), made
/// unique; at most 31 bytes.
fn share_tags(dirs: &[(PathBuf, bool)]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for (p, _) in dirs {
        let base: String = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(24)
            .collect();
        let base = if base.is_empty() {
            "shared".into()
        } else {
            base
        };
        let mut tag = base.clone();
        let mut n = 2;
        while tags.contains(&tag) {
            tag = format!("{base}-{n}");
            n += 1;
        }
        tags.push(tag);
    }
    tags
}

/// Lume's check and message for a shared folder.
pub fn check_shared_dir(p: &std::path::Path) -> Result<PathBuf, VmError> {
    match fs::canonicalize(p) {
        Ok(c) if c.is_dir() => Ok(c),
        _ => Err(VmError::Invalid(format!(
            "Host path does not exist or is not a directory: {}",
            p.display()
        ))),
    }
}

/// The runner's QMP connection. cabin bound the socket before QEMU started, so the
/// connection is queued at once; QEMU greets once it is up, and a QEMU that fails to
/// start closes it instead: then its own message says why.
async fn connect_qmp(
    path: &std::path::Path,
    child: &mut std::process::Child,
) -> Result<Qmp, VmError> {
    let greeted = async {
        let s = tokio::net::UnixStream::connect(path).await?;
        Qmp::handshake(s).await
    };
    let failed = match tokio::time::timeout(Duration::from_secs(20), greeted).await {
        Ok(Ok(qmp)) => return Ok(qmp),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "QEMU did not answer on its monitor in time".to_string(),
    };
    // The monitor closes as QEMU exits: give it a moment to be reaped.
    for _ in 0..100 {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            if let Some(e) = child.stderr.as_mut() {
                use std::io::Read;
                let _ = e.take(8192).read_to_string(&mut err);
            }
            return Err(VmError::Failed(format!(
                "QEMU exited ({st}): {}",
                err.trim()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(VmError::Failed(format!("QMP: {failed}")))
}

/// Runs `vm` until its guest powers off or the process is told to stop it. `ready` is
/// called once the VM runs, with its session (VNC URL...). A failure before that is
/// recorded as the VM's start error (but not "already running" or "being pushed":
/// those are about another process, which goes on); the first successful start clears it.
pub async fn run(
    host: &Host,
    vm: &Vm,
    opts: &RunOptions,
    ready: impl FnOnce(&Session),
) -> Result<(), VmError> {
    let mut started = false;
    let result = run_vm(host, vm, opts, ready, &mut started).await;
    if let Err(e) = &result {
        if !started && !matches!(e, VmError::Running(_) | VmError::Pushing(_)) {
            vm.record_start_error(&e.to_string());
        }
    }
    result
}

async fn run_vm(
    host: &Host,
    vm: &Vm,
    opts: &RunOptions,
    ready: impl FnOnce(&Session),
    started: &mut bool,
) -> Result<(), VmError> {
    let mut config = vm.config()?;
    let lock = store::lock_config(vm, cabin_base::lock::Mode::Exclusive)?;
    // The console of this run, read by `vm logs` while the VM runs and after; a
    // resumed VM's run goes on where the suspended one's left off.
    let saved_state = suspend::saved(vm);
    let console_log = vm.dir.join(CONSOLE_LOG);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .truncate(false)
        .open(&console_log)
        .and_then(|f| match saved_state {
            suspend::Saved::None => f.set_len(0),
            _ => Ok(()),
        })
        .map_err(io_err("creating console.log"))?;
    let mut notices = Vec::new();
    let mut saved = match saved_state {
        suspend::Saved::None => None,
        suspend::Saved::State(r) => Some(r),
        suspend::Saved::Unusable(why) => {
            notice(
                &mut notices,
                &console_log,
                &format!(
                    "{}'s saved state cannot be used ({why}); removed it, booting",
                    vm.name
                ),
            );
            suspend::discard(vm)?;
            None
        }
    };
    // A pulled state has the MAC address and address of the VM it was saved in, which
    // may be on this host too: it boots instead, with a MAC address of its own.
    if let Some(r) = saved.as_ref().filter(|r| r.pulled) {
        if let Some(why) = pulled_conflict(host, vm, r) {
            notice(
                &mut notices,
                &console_log,
                &format!(
                    "{} was pulled with the memory of a VM, and {why}; removed its saved state, booting with a MAC address of its own",
                    vm.name
                ),
            );
            discard_state(vm, r, &mut config)?;
            saved = None;
        }
    }
    let asked = suspend::Devices {
        shared_dirs: opts
            .shared_dirs
            .iter()
            .map(|(p, ro)| check_shared_dir(p).map(|c| (c, *ro)))
            .collect::<Result<_, _>>()?,
        iso: opts.iso.clone(),
        disks: opts.disks.clone(),
    };
    // A resumed VM has the devices it was suspended with.
    let devices = match &saved {
        Some(r) if asked.is_empty() => r.devices.clone(),
        Some(r) if asked != r.devices => {
            return Err(VmError::Invalid(format!(
                "{} was suspended with other shared folders or disks ({}); run it without --shared-dir, --mount and --disk to resume it as it was, or discard its saved state (cabin vm stop {}) to boot it with these",
                vm.name,
                r.devices.describe(),
                vm.name
            )))
        }
        _ => asked,
    };
    let mut shares = Vec::new();
    let dirs = &devices.shared_dirs;
    for ((path, ro), tag) in dirs.iter().zip(share_tags(dirs)) {
        shares.push(ShareSpec {
            path: path.clone(),
            tag,
            read_only: *ro,
        });
    }
    for p in devices.iso.iter().chain(devices.disks.iter()) {
        if !p.is_file() {
            return Err(VmError::Invalid(format!(
                "disk image not found: {}",
                p.display()
            )));
        }
    }
    let (w, h) = cabin_base::sizes::parse_display(&config.display)
        .map_err(|e| VmError::Invalid(e.to_string()))?;
    let vnc = match (opts.vnc, opts.vnc_port) {
        (false, _) => Vnc::Off,
        (true, None | Some(0)) => Vnc::Auto,
        (true, Some(p)) if p >= full::VNC_BASE_PORT => Vnc::Port(p),
        (true, Some(p)) => {
            return Err(VmError::Invalid(format!(
                "invalid VNC port {p}: QEMU's VNC server listens on {} and up (0 picks a free one)",
                full::VNC_BASE_PORT
            )))
        }
    };
    let qemu = Qemu::locate(host.qemu.as_deref()).map_err(|e| VmError::Failed(e.to_string()))?;
    let accel = cabin_vmm::accel::choose(opts.accel);
    let run_dir = random::id()
        .and_then(|id| RunDir::create(&host.paths.run_root(), &id))
        .map_err(io_err("creating the VM's run directory"))?;
    let direct = DirectBoot::read(&vm.dir)?;
    let net = vm_network(
        vm,
        &config,
        direct.is_some(),
        saved.as_ref().and_then(|r| r.address),
    )?;
    // A pulled state carries the MAC address of the VM it was saved in; a VM made from
    // an image takes its own once resumed.
    let travelled = saved
        .as_ref()
        .is_some_and(|r| r.pulled && !r.mac.eq_ignore_ascii_case(&config.mac_address));
    if let (Some(was), Some(GuestAddress { address: now, .. })) =
        (saved.as_ref().and_then(|r| r.address), &net.address)
    {
        if was != *now && saved.as_ref().is_some_and(|r| r.pulled) {
            // Another VM of this host runs with the address (and maybe the MAC) the
            // pulled guest has: it boots with its own instead.
            notice(
                &mut notices,
                &console_log,
                &format!("{} was pulled with the memory of a VM whose address {was} another VM or container of this host has now; removed its saved state, booting with {now}", vm.name),
            );
            if let Some(r) = &saved {
                discard_state(vm, r, &mut config)?;
            }
            saved = None;
        } else if was != *now {
            notice(
                &mut notices,
                &console_log,
                &format!("{} had the address {was} when it was suspended, which another VM or container has now; it gets {now} once its network restarts", vm.name),
            );
        }
    }
    let boot = match &direct {
        None => Boot::Uefi {
            code: store::OVMF_CODE.into(),
            nvram: vm.dir.join(store::NVRAM),
        },
        Some(d) => Boot::Kernel {
            kernel: vm.dir.join(&d.kernel),
            command_line: from_image::kernel_command_line(
                &d.root,
                &vm.name,
                config
                    .machine_identifier
                    .as_deref()
                    .and_then(from_image::systemd_machine_id)
                    .as_deref(),
                net.address.as_ref(),
                &shares
                    .iter()
                    .map(|s| (s.tag.clone(), s.read_only))
                    .collect::<Vec<_>>(),
            ),
        },
    };
    let mut spec = FullVmSpec {
        name: vm.name.clone(),
        cpus: config.cpu_count,
        memory_mib: config.memory_size >> 20,
        uuid: config
            .machine_identifier
            .as_deref()
            .and_then(store::machine_uuid),
        mac: config.mac_address.clone(),
        boot,
        disk: vm.disk(),
        extra_disks: devices.disks.clone(),
        iso: devices.iso.clone(),
        display: (w, h),
        vnc,
        nic: net.backend.clone(),
        shares: shares.clone(),
        accel: accel.accel,
        run_dir: run_dir.path.clone(),
        console_log: console_log.clone(),
        incoming: false,
    };
    // Needed to resume or to suspend, never to boot: a failure here only says why not.
    let fingerprint = suspend::Fingerprint::of(&qemu, &spec).map_err(|e| e.to_string());
    if let Some(r) = &saved {
        let why = match &fingerprint {
            Ok(f) => suspend::mismatch(vm, r, f),
            Err(e) => Some(format!("what it was saved with cannot be checked: {e}")),
        };
        if let Some(why) = why {
            notice(
                &mut notices,
                &console_log,
                &format!(
                    "{}'s saved state no longer matches ({why}); removed it, booting",
                    vm.name
                ),
            );
            discard_state(vm, r, &mut config)?;
            spec.mac = config.mac_address.clone();
            saved = None;
        }
    }
    // Refused now rather than killed by the OOM killer once the guest uses its memory.
    cabin_base::memory::Headroom::now()
        .admit(spec.memory_mib)
        .map_err(|e| VmError::Failed(e.to_string()))?;
    let mut resumed = false;
    let (mut child, confinement, mut qmp) = match &saved {
        Some(r) => match resume(
            vm,
            &qemu.binary,
            &FullVmSpec {
                mac: r.mac.clone(),
                ..spec.clone()
            },
            &run_dir,
            (&mut notices, &console_log),
        )
        .await
        {
            Ok(started) => {
                resumed = true;
                started
            }
            Err(why) => {
                notice(
                    &mut notices,
                    &console_log,
                    &format!(
                        "{}'s saved state could not be loaded ({why}); removed it, booting",
                        vm.name
                    ),
                );
                discard_state(vm, r, &mut config)?;
                spec.mac = config.mac_address.clone();
                start_qemu(&qemu.binary, &spec, &run_dir).await?
            }
        },
        None => start_qemu(&qemu.binary, &spec, &run_dir).await?,
    };
    let result = async {
        let mut url = None;
        if vnc != Vnc::Off {
            let password = match opts.vnc_password.clone() {
                Some(p) => p,
                // Not Lume's four words: QEMU checks only the first 8 characters,
                // which left about 11 bits; 8 random letters and digits.
                None => cabin_vmm::vnc::password().map_err(io_err("making a VNC password"))?,
            };
            qmp.execute(
                "set_password",
                Some(json!({"protocol": "vnc", "password": password})),
            )
            .await
            .map_err(io_err("setting the VNC password"))?;
            let info = qmp
                .execute("query-vnc", None)
                .await
                .map_err(io_err("query-vnc"))?;
            let port = info["service"].as_str().unwrap_or("0").to_string();
            url = Some(format!("vnc://:{password}@127.0.0.1:{port}"));
        }
        let session = Session {
            url,
            shared_directories: shares
                .iter()
                .map(|s| SharedDir {
                    host_path: s.path.to_string_lossy().into_owned(),
                    tag: s.tag.clone(),
                    read_only: s.read_only,
                })
                .collect(),
            pid: std::process::id(),
            started_at: cabin_base::time::now_unix(),
            ip_address: net.reachable_ip.locked().clone(),
            ssh_port: net.ssh_forward,
            ssh_available: false,
            serial_socket: Some(full::serial_socket(&run_dir.path)),
            notices: notices.clone(),
        };
        // Handled from before the session is published: `vm stop` and `vm suspend`
        // signal the pid they find there.
        let mut term =
            signal(SignalKind::terminate()).map_err(|e| VmError::Failed(e.to_string()))?;
        let mut int =
            signal(SignalKind::interrupt()).map_err(|e| VmError::Failed(e.to_string()))?;
        let mut usr1 =
            signal(SignalKind::user_defined1()).map_err(|e| VmError::Failed(e.to_string()))?;
        write_session(vm, &session)?;
        *started = true;
        vm.clear_start_error();
        ready(&session);
        let mut session = session;
        // The guest's clock stood still while it was suspended: a VM made from an
        // image (cabin's key is in it) gets the host's once its SSH server answers.
        let mut clock_pending = resumed && direct.is_some();
        // The card's MAC address as the guest has it: the state's when resumed (a
        // pulled guest gets its own below, where cabin controls it).
        let mac = Arc::new(Mutex::new(match (&saved, resumed) {
            (Some(r), true) => r.mac.clone(),
            _ => config.mac_address.clone(),
        }));
        let new_mac = (resumed && travelled).then(|| config.mac_address.clone());
        let mut next_probe = Instant::now();
        let mut disk_pause = cabin_vmm::qemu::DiskPauseWatch::default();
        let saving =
            suspend::Saving {
                vm,
                fingerprint: &fingerprint,
                devices: &devices,
                address: net.address.as_ref().map(|a| a.address).filter(|_| {
                    matches!(net.backend, NetBackend::Tap(_)) && net._endpoint.is_some()
                }),
                mac: mac.clone(),
            };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                // The guest powered off (QEMU exits 0), or QEMU died under it.
                if !status.success() {
                    let why = format!("QEMU ended ({status}) while the guest ran; the VM stopped");
                    eprintln!("{}: {why}", vm.name);
                    append_console(&console_log, &why);
                }
                return Ok(());
            }
            // A full host disk pauses the VM; it goes on once there is room, and
            // its console log (`vm logs`) says so.
            if let Some(change) = disk_pause.check(&mut qmp).await {
                append_console(&console_log, &change.to_string());
            }
            bound_console_log(&console_log);
            // The guest took its address (DHCP): report it.
            let ip = net.reachable_ip.locked().clone();
            let mut changed = ip != session.ip_address;
            session.ip_address = ip;
            // Whether its SSH server answers, found here, so that listing VMs
            // never waits on a guest.
            if Instant::now() >= next_probe {
                next_probe = Instant::now() + SSH_PROBE_INTERVAL;
                let probe = session.clone();
                let answers = tokio::task::spawn_blocking(move || ssh_answers(&probe))
                    .await
                    .unwrap_or(false);
                changed |= answers != session.ssh_available;
                session.ssh_available = answers;
            }
            if changed {
                let _ = write_session(vm, &session);
            }
            if clock_pending && session.ssh_available {
                clock_pending = false;
                let key = host.paths.ssh_key();
                let probe = session.clone();
                let log = console_log.clone();
                let change = new_mac.clone().map(|new| (mac.locked().clone(), new));
                // A copy resumed from another VM's memory takes its own name too.
                let name = new_mac.is_some().then(|| vm.name.clone());
                let mac = mac.clone();
                std::thread::spawn(move || {
                    match suspend::refresh_guest(
                        &key,
                        &probe,
                        CLOCK_WAIT,
                        change.as_ref(),
                        name.as_deref(),
                    ) {
                        Ok(refreshed) => {
                            append_console(&log, "the guest's clock is set to the host's");
                            if let (true, Some(name)) = (refreshed.named, &name) {
                                append_console(&log, &format!("the guest's host name is {name} now"));
                            }
                            match (refreshed.mac_changed, &change) {
                                (true, Some((_, new))) => {
                                    *mac.locked() = new.clone();
                                    append_console(
                                        &log,
                                        &format!("the guest's network card has its own MAC address now ({new})"),
                                    );
                                }
                                (false, Some((old, _))) => append_console(
                                    &log,
                                    &format!("the guest's network card keeps the MAC address it was suspended with ({old}): cabin could not change it"),
                                ),
                                _ => {}
                            }
                        }
                        Err(why) => append_console(
                            &log,
                            &format!("the guest's clock could not be set after resuming: {why}"),
                        ),
                    }
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = usr1.recv() => {
                    match suspend::save(&saving, &mut qmp, &mut child).await {
                        Ok(()) => {
                            append_console(&console_log, &format!("{} suspended", vm.name));
                            return Ok(());
                        }
                        Err(e) => suspend::record_failure(vm, &e.to_string()),
                    }
                }
            }
        }
        // Stop: the ACPI power button, then the plug.
        let _ = qmp.execute("system_powerdown", None).await;
        let deadline = Instant::now() + POWEROFF_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = qmp.execute("quit", None).await;
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    drop(confinement);
    // Off the bridge before the VM shows as stopped: a start right after must find
    // its address and tap free.
    drop(net);
    let _ = fs::remove_file(vm.dir.join(store::SESSION));
    let _ = run_dir.remove();
    drop(lock);
    result
}

/// Why the pulled state `r` of `vm` must not resume on this host: another VM of it has
/// its MAC address, or was suspended with its address or MAC address (the original it
/// was pushed from, or another copy). Running VMs' addresses are the bridge's to refuse.
fn pulled_conflict(host: &Host, vm: &Vm, r: &suspend::Suspended) -> Option<String> {
    let settings = crate::settings::Settings::load(&host.paths).ok()?;
    let others = store::list(&settings, None).ok()?;
    for other in others.iter().filter(|o| o.dir != vm.dir) {
        if other
            .config()
            .is_ok_and(|c| c.mac_address.eq_ignore_ascii_case(&r.mac))
        {
            return Some(format!("{} has its MAC address {}", other.name, r.mac));
        }
        if let suspend::Saved::State(o) = suspend::saved(other) {
            if o.mac.eq_ignore_ascii_case(&r.mac) || (o.address.is_some() && o.address == r.address)
            {
                return Some(format!(
                    "{}, suspended, has its MAC address or address",
                    other.name
                ));
            }
        }
    }
    None
}

/// How long setting a resumed VM's clock may take once its SSH server answers.
/// Generous: a guest just resumed under TCG on a busy host may take most of a minute to
/// finish an SSH handshake, and nothing waits on this but the refresh itself.
const CLOCK_WAIT: Duration = Duration::from_secs(120);

/// Starts QEMU for `spec` and connects to its monitor.
async fn start_qemu(
    binary: &Path,
    spec: &FullVmSpec,
    run_dir: &RunDir,
) -> Result<(Child, Option<cabin_vmm::confine::Confinement>, Qmp), VmError> {
    let full::FullVm {
        mut child,
        confinement,
    } = full::spawn(binary, spec).map_err(|e| VmError::Failed(e.to_string()))?;
    // A runner killed with SIGKILL takes QEMU with it (parent-death signal); the pid
    // lets the next cabin command find a QEMU that outlived it anyway.
    let _ = run_dir.record_vmm_pid(child.id());
    match connect_qmp(&full::qmp_socket(&run_dir.path), &mut child).await {
        Ok(qmp) => Ok((child, confinement, qmp)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Removes the VM's saved state `r`, which it boots without. A state pulled with its
/// image can have left the VM its publisher's MAC address (a VM cabin cannot give
/// another one from outside keeps the state's, for its card to go on working): the VM
/// then gets a MAC address of its own in `config`, or every host that pulled the image
/// would share one.
fn discard_state(
    vm: &Vm,
    r: &suspend::Suspended,
    config: &mut store::VmConfig,
) -> Result<(), VmError> {
    suspend::discard(vm)?;
    if r.pulled && config.mac_address.eq_ignore_ascii_case(&r.mac) {
        config.mac_address = store::random_mac()?;
        vm.save_config(config)?;
    }
    Ok(())
}

/// Starts QEMU for `spec` waiting for a state, loads the VM's saved state into it and
/// lets the guest go on; the state is removed once it is in (the disk moves on from
/// it). On failure QEMU is gone and the state is still there.
async fn resume(
    vm: &Vm,
    binary: &Path,
    spec: &FullVmSpec,
    run_dir: &RunDir,
    (notices, console_log): (&mut Vec<String>, &Path),
) -> Result<(Child, Option<cabin_vmm::confine::Confinement>, Qmp), VmError> {
    let state = suspend::open_state(vm)?;
    let incoming = FullVmSpec {
        incoming: true,
        ..spec.clone()
    };
    let (mut child, confinement, mut qmp) = start_qemu(binary, &incoming, run_dir).await?;
    let loaded = async {
        migration::load(
            &mut qmp,
            migration::Source::Handed(&state),
            migration::Ram::InStream,
            migration::Announce::Yes,
        )
        .await?;
        qmp.execute("cont", None).await.map(drop)
    }
    .await;
    match loaded {
        Ok(()) => {
            // The guest runs on: failing now would leave it without its runner, and
            // the caller would boot a second QEMU on its disk.
            if let Err(e) = suspend::discard(vm) {
                notice(
                    notices,
                    console_log,
                    &format!(
                        "{} resumed, but its saved state could not be removed ({e}); remove {} before its next run, which would go back to it",
                        vm.name,
                        vm.dir.join(crate::store::SUSPENDED_STATE).display()
                    ),
                );
            }
            Ok((child, confinement, qmp))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            drop(confinement);
            Err(VmError::Failed(e.to_string()))
        }
    }
}

/// Says something about this run where its user sees it: in its session (the process
/// that started it shows it), on the runner's stderr (`run.log` of a background run)
/// and in the console log (`vm logs`).
fn notice(notices: &mut Vec<String>, console_log: &Path, message: &str) {
    eprintln!("{message}");
    append_console(console_log, message);
    notices.push(message.to_string());
}

/// A line of cabin's own in the VM's console log.
fn append_console(console_log: &Path, message: &str) {
    let _ = fs::OpenOptions::new()
        .append(true)
        .open(console_log)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, format!("\n[cabin] {message}\n").as_bytes())
        });
}

/// How often the runner checks whether the guest's SSH server answers.
const SSH_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long that check waits for the server's greeting.
const SSH_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether an SSH server greets at the VM's SSH address (Lume probes the port; cabin
/// waits for the `SSH-` greeting, since a forwarded port on 127.0.0.1 accepts
/// connections whether or not the guest listens).
fn ssh_answers(session: &Session) -> bool {
    use std::io::Read;
    use std::net::{TcpStream, ToSocketAddrs};
    let Some((host, port)) = session.ssh_address() else {
        return false;
    };
    let Some(addr) = (host.as_str(), port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&addr, SSH_PROBE_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(SSH_PROBE_TIMEOUT));
    let mut greeting = [0u8; 4];
    s.read_exact(&mut greeting).is_ok() && &greeting == b"SSH-"
}

fn write_session(vm: &Vm, session: &Session) -> Result<(), VmError> {
    let tmp = vm.dir.join(".sessions.json.tmp");
    fs::write(&tmp, serde_json::to_vec(session).expect("serialisable"))
        .and_then(|()| fs::rename(&tmp, vm.dir.join(store::SESSION)))
        .map_err(io_err("writing sessions.json"))
}

/// The VM's serial console log, in its directory.
pub const CONSOLE_LOG: &str = "console.log";
/// How much console output is kept: the current file up to this size, and the one
/// before it as `console.log.1`. A guest can write without end.
const CONSOLE_LOG_LIMIT: u64 = 16 << 20;

/// Rotates the console log once it passes the limit. QEMU appends to it (O_APPEND), so
/// after the truncation its writes land at the new end.
fn bound_console_log(path: &Path) {
    if fs::metadata(path).is_ok_and(|m| m.len() > CONSOLE_LOG_LIMIT) {
        let _ = fs::copy(path, path.with_extension("log.1"));
        let _ = fs::OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(0));
    }
}

/// A running VM's network. With Lume's `bridged[:BRIDGE]` (root only): a tap on a
/// bridge of the host, the LAN's DHCP server giving the address. Otherwise, as root: a
/// tap on cabin's bridge (`cabin0`, NAT to the
/// outside, the same bridge as bridged containers), with an address cabin chooses:
/// handed to a VM made from an image on its kernel command line, and to any other
/// guest by a DHCP server answering that VM alone on its tap; the address is reported
/// once the guest has it and is reachable from the host. Rootless: QEMU's user-mode
/// network, where a guest is reachable only through forwarded ports; a VM made from
/// an image gets its SSH port forwarded from a free port on 127.0.0.1.
struct VmNetwork {
    backend: NetBackend,
    /// The set-up for the kernel's `ip=` (VMs made from images); None: the network's
    /// own DHCP server gives the address.
    address: Option<GuestAddress>,
    /// The address the host reaches the guest at, once the guest has it.
    reachable_ip: Arc<Mutex<Option<String>>>,
    /// The host port forwarded to the guest's port 22 (user-mode network only).
    ssh_forward: Option<u16>,
    /// Answers the guest's DHCP while the VM runs.
    _dhcp: Option<cabin_net::dhcp::Server>,
    /// Keeps the VM on the bridge for as long as it runs.
    _endpoint: Option<cabin_net::bridge::Endpoint>,
}

fn new_id() -> Result<String, VmError> {
    random::id().map_err(|e| VmError::Failed(e.to_string()))
}

fn vm_network(
    vm: &Vm,
    config: &store::VmConfig,
    from_image: bool,
    prefer: Option<std::net::Ipv4Addr>,
) -> Result<VmNetwork, VmError> {
    use cabin_net::{bridge, dhcp};
    let mac = config.mac_address.as_str();
    let client_mac = dhcp::parse_mac(mac)
        .ok_or_else(|| VmError::Invalid(format!("invalid MAC address in config.json: {mac}")))?;
    if let Some(wanted) = config.network_mode.strip_prefix("bridged") {
        // Lume's bridged mode: the VM is a machine on the host's LAN, addressed by the
        // LAN's DHCP server; cabin watches that exchange on the VM's tap to learn the
        // address.
        let wanted = wanted.strip_prefix(':').filter(|w| !w.is_empty());
        let host_bridge =
            bridge::host_bridge(wanted).map_err(|e| VmError::Invalid(e.to_string()))?;
        let (tap_fd, tap) =
            bridge::tap_on_host_bridge(&format!("cbb{}", &new_id()?[..10]), &host_bridge)
                .map_err(|e| VmError::Invalid(e.to_string()))?;
        let reachable = Arc::new(Mutex::new(None));
        let leased = reachable.clone();
        let watch = dhcp::Server::start(&tap, dhcp::Role::Watch { client_mac }, move |a| {
            *leased.locked() = Some(a.to_string());
        })
        .map_err(io_err("watching the VM's DHCP"))?;
        return Ok(VmNetwork {
            backend: NetBackend::Tap(Some(Arc::new(tap_fd))),
            address: None,
            reachable_ip: reachable,
            ssh_forward: None,
            _dhcp: Some(watch),
            _endpoint: None,
        });
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = bridge::reconcile();
        // The endpoint's id names its tap device: random, since VMs of different
        // storage locations or data directories may share a name.
        let id = format!("v{}", &new_id()?[..11]);
        let ep = bridge::attach(&id, vec![vm.name.clone()], &[], prefer)?;
        let cfg = ep.guest_config();
        let ip = ep.record.ip;
        let reachable = Arc::new(Mutex::new(from_image.then(|| ip.to_string())));
        let server_mac = fs::read_to_string(format!("/sys/class/net/{}/address", bridge::BRIDGE))
            .ok()
            .and_then(|m| dhcp::parse_mac(&m));
        let client_mac = dhcp::parse_mac(mac).ok_or_else(|| {
            VmError::Invalid(format!("invalid MAC address in config.json: {mac}"))
        })?;
        let dhcp = match server_mac {
            Some(server_mac) => {
                let lease = dhcp::Lease {
                    client_mac,
                    address: ip,
                    prefix: bridge::PREFIX,
                    gateway: bridge::GATEWAY,
                    dns: cfg.dns.iter().filter_map(|d| d.parse().ok()).collect(),
                    hostname: vm.name.clone(),
                    server_mac,
                };
                let leased = reachable.clone();
                Some(
                    dhcp::Server::start(&ep.record.tap, dhcp::Role::Serve(lease), move |a| {
                        *leased.locked() = Some(a.to_string());
                    })
                    .map_err(io_err("starting the VM's DHCP server"))?,
                )
            }
            None => None,
        };
        return Ok(VmNetwork {
            backend: NetBackend::Tap(Some(ep.tap.clone())),
            address: Some(GuestAddress {
                address: ip,
                prefix: bridge::PREFIX,
                gateway: bridge::GATEWAY,
                dns: cfg.dns,
            }),
            reachable_ip: reachable,
            ssh_forward: None,
            _dhcp: dhcp,
            _endpoint: Some(ep),
        });
    }
    use cabin_vmm::qemu::user_net;
    let mut forwards = Vec::new();
    if from_image {
        forwards.push(cabin_vmm::PortForward {
            protocol: cabin_vmm::Protocol::Tcp,
            host_ip: std::net::Ipv4Addr::LOCALHOST,
            host_port: 0,
            guest_port: 22,
        });
        cabin_net::ports::choose_free_ports(&mut forwards)?;
    }
    Ok(VmNetwork {
        ssh_forward: forwards.first().map(|f| f.host_port),
        backend: NetBackend::User { forwards },
        address: Some(GuestAddress {
            address: user_net::GUEST,
            prefix: user_net::PREFIX,
            gateway: user_net::GATEWAY,
            dns: vec![user_net::DNS.to_string()],
        }),
        reachable_ip: Arc::new(Mutex::new(None)),
        _dhcp: None,
        _endpoint: None,
    })
}

/// What `stop` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// The VM ran and was powered off.
    PoweredOff,
    /// The VM was suspended: its saved state is gone, it boots at its next run.
    StateDiscarded,
}

/// Stops a running VM from any process: SIGTERM to the process that runs it (which
/// powers the guest off), SIGKILL if it is still there after `timeout`. A suspended VM
/// is stopped by discarding its saved state, as a machine's power is cut.
pub fn stop(vm: &Vm, timeout: Duration) -> Result<Stopped, VmError> {
    let Some(session) = vm.session() else {
        if vm.status_at_rest() == store::VmStatus::Suspended {
            suspend::discard(vm)?;
            return Ok(Stopped::StateDiscarded);
        }
        return Err(VmError::NotRunning(vm.name.clone()));
    };
    let pid = session.pid as i32;
    // SAFETY: signalling the pid the runner recorded while it holds the VM's lock.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + timeout;
    while vm.is_running() {
        if Instant::now() > deadline {
            // SAFETY: as above; its QEMU dies with it (parent-death signal).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let end = Instant::now() + Duration::from_secs(5);
            while vm.is_running() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = fs::remove_file(vm.dir.join(store::SESSION));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Stopped::PoweredOff)
}

/// The log of a VM's background runner (its stdout and stderr).
pub const RUN_LOG: &str = "run.log";
/// The options of a background run, for its runner.
pub const RUN_RECORD: &str = ".run.json";
/// The version of [`RUN_RECORD`] this cabin writes and reads.
pub const RUN_RECORD_VERSION: u32 = 1;

/// What a background runner is told: which VM, with which options.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    version: u32,
    name: String,
    location_name: String,
    options: RunOptions,
}

/// The helper command a VM's background runner runs as.
pub fn runner_args(vm_dir: &Path) -> Vec<OsString> {
    vec!["vm".into(), "runner".into(), vm_dir.as_os_str().to_owned()]
}

/// Starts a runner for `vm` with `opts` in a process of its own (see the module
/// comment), its output in the VM's `run.log`. An earlier start error is cleared: this
/// attempt supersedes it.
pub fn start_detached(host: &Host, vm: &Vm, opts: &RunOptions) -> Result<Child, VmError> {
    let record = RunRecord {
        version: RUN_RECORD_VERSION,
        name: vm.name.clone(),
        location_name: vm.location_name.clone(),
        options: opts.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&record)
        .map_err(|e| io_err("writing the run's options")(e.into()))?;
    cabin_base::files::write_atomic(&vm.dir.join(RUN_RECORD), &bytes, 0o600)
        .map_err(io_err("writing the run's options"))?;
    let log_path = vm.dir.join(RUN_LOG);
    let log =
        fs::File::create(&log_path).map_err(io_err(format!("creating {}", log_path.display())))?;
    vm.clear_start_error();
    spawn::cabin_helper(host, runner_args(&vm.dir), spawn::Output::File(log))
        .map_err(io_err("starting the VM's runner"))
}

/// The work of a background runner (`cabin vm runner DIR`): runs the VM in `vm_dir`
/// with the options [`start_detached`] left it. A failure before the VM runs is
/// recorded as its start error, as [`run`]'s are.
pub async fn run_recorded(
    host: &Host,
    vm_dir: &Path,
    ready: impl FnOnce(&Session),
) -> Result<(), VmError> {
    let read = || -> Result<RunRecord, VmError> {
        let bytes = cabin_base::files::read_bounded(&vm_dir.join(RUN_RECORD), 1 << 20).map_err(
            io_err(format!("reading {}", vm_dir.join(RUN_RECORD).display())),
        )?;
        let record: RunRecord = serde_json::from_slice(&bytes).map_err(|e| {
            VmError::Invalid(format!(
                "the options of this run ({RUN_RECORD}) are unreadable: {e}"
            ))
        })?;
        if record.version != RUN_RECORD_VERSION {
            return Err(VmError::Invalid(format!(
                "the options of this run were written by another cabin (record version {}, this one reads {RUN_RECORD_VERSION})",
                record.version
            )));
        }
        Ok(record)
    };
    let record = match read() {
        Ok(r) => r,
        Err(e) => {
            let unknown = Vm {
                name: vm_dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                location_name: String::new(),
                dir: vm_dir.to_path_buf(),
            };
            unknown.record_start_error(&e.to_string());
            return Err(e);
        }
    };
    let vm = Vm {
        name: record.name,
        location_name: record.location_name,
        dir: vm_dir.to_path_buf(),
    };
    run(host, &vm, &record.options, ready).await
}

/// How a background start went.
#[derive(Debug)]
pub enum Started {
    /// The runner published the VM's session: the VM runs.
    Running(Session),
    /// The runner exited first; why.
    Failed(String),
    /// Neither yet.
    Starting,
}

/// Waits up to `timeout` for the runner `child` (from [`start_detached`]) to publish the
/// VM's session, or to exit before that (the start failed: the reason is the start
/// error it recorded).
pub fn wait_started(vm: &Vm, child: &mut Child, timeout: Duration) -> Started {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(session) = vm.session().filter(|s| s.pid == child.id()) {
            return Started::Running(session);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Started::Failed(runner_failure(vm, status));
        }
        if Instant::now() > deadline {
            return Started::Starting;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Why a runner that exited with `status` did not start its VM: the start error it
/// recorded; else that another process runs the VM; else how it ended.
fn runner_failure(vm: &Vm, status: std::process::ExitStatus) -> String {
    if let Some(e) = vm.start_error() {
        return e.message;
    }
    if vm.is_running() {
        return VmError::Running(vm.name.clone()).to_string();
    }
    format!(
        "the VM's process exited ({status}) before the VM ran; its output is in {}",
        vm.dir.join(RUN_LOG).display()
    )
}

/// Reaps a background runner when it ends, on a thread of its own. A runner that did
/// not get to record its own failure (killed by a signal or crashed before its VM
/// started) has it recorded here, so that the VM's details say why it is not running.
/// `started`: the VM was already seen running.
pub fn reap_in_background(vm: Vm, mut child: Child, mut started: bool) {
    std::thread::spawn(move || {
        let status = loop {
            if !started {
                started = vm.session().is_some_and(|s| s.pid == child.id());
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(_) => return,
            }
        };
        // Exit status 1 is cabin reporting an error it has dealt with (a start
        // failure is recorded by the runner itself).
        if started || status.success() || status.code() == Some(1) {
            return;
        }
        if vm.start_error().is_none() {
            vm.record_start_error(&runner_failure(&vm, status));
        }
    });
}

/// How a [`launch`] went, when the VM did not fail to start.
pub enum Launched {
    /// The VM runs: its session.
    Running(Session),
    /// Still starting after the wait; its runner goes on in the background.
    Starting,
}

/// VM directories whose start this process is seeing through: a second start of the
/// same VM while the first has not published its session is refused, whichever front
/// end asks.
static LAUNCHING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Starts `vm` in a background runner and waits up to `wait` for it to run: the one
/// start sequence of the Lume API and the web console. A failed start is recorded
/// as the VM's start error (its details say why) and returned; the runner is reaped
/// in the background either way.
pub fn launch(
    host: &Host,
    vm: &Vm,
    opts: &RunOptions,
    wait: Duration,
) -> Result<Launched, VmError> {
    struct Forget(PathBuf);
    impl Drop for Forget {
        fn drop(&mut self) {
            LAUNCHING.locked().retain(|d| d != &self.0);
        }
    }
    let _forget = {
        let mut set = LAUNCHING.locked();
        if vm.is_running() || set.contains(&vm.dir) {
            return Err(VmError::Running(vm.name.clone()));
        }
        set.push(vm.dir.clone());
        Forget(vm.dir.clone())
    };
    let mut child = start_detached(host, vm, opts)?;
    match wait_started(vm, &mut child, wait) {
        Started::Running(session) => {
            reap_in_background(vm.clone(), child, true);
            Ok(Launched::Running(session))
        }
        Started::Starting => {
            reap_in_background(vm.clone(), child, false);
            Ok(Launched::Starting)
        }
        Started::Failed(why) => {
            if !vm.is_running() && vm.start_error().is_none() {
                vm.record_start_error(&why);
            }
            Err(VmError::Failed(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_background_runner_reads_its_typed_record_and_refuses_a_bad_one_as_a_start_error() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("vm1");
        fs::create_dir(&dir).unwrap();
        let vm = Vm {
            name: "vm1".into(),
            location_name: "home".into(),
            dir: dir.clone(),
        };
        let opts = RunOptions {
            shared_dirs: vec![("/srv".into(), true)],
            vnc: true,
            vnc_port: Some(5901),
            accel: AccelRequest::Force(cabin_vmm::Accel::Tcg),
            ..Default::default()
        };
        let record = RunRecord {
            version: RUN_RECORD_VERSION,
            name: vm.name.clone(),
            location_name: vm.location_name.clone(),
            options: opts.clone(),
        };
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains(r#""accel":"tcg""#), "{text}");
        let back: RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, record);
        let host = Host::with_paths(cabin_base::Paths::at(t.path().join("data")));
        // A record from another cabin: refused, and said where the start error goes.
        let mut other = serde_json::to_value(&record).unwrap();
        other["version"] = 9.into();
        fs::write(dir.join(RUN_RECORD), other.to_string()).unwrap();
        let e = run_recorded(&host, &dir, |_| {}).await.unwrap_err();
        assert!(e.to_string().contains("record version 9"), "{e}");
        assert_eq!(vm.start_error().unwrap().message, e.to_string());
        fs::write(dir.join(RUN_RECORD), b"{").unwrap();
        let e = run_recorded(&host, &dir, |_| {}).await.unwrap_err();
        assert!(e.to_string().contains("are unreadable"), "{e}");
        assert_eq!(runner_args(&dir)[..2], ["vm", "runner"]);
    }

    #[test]
    fn share_tags_are_folder_names_made_unique() {
        let tags = share_tags(&[
            ("/home/me/code".into(), false),
            ("/srv/code".into(), true),
            ("/tmp/with space".into(), false),
        ]);
        assert_eq!(tags, ["code", "code-2", "with_space"]);
    }
}
