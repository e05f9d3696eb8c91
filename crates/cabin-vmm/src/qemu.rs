//! The QEMU backend: `qemu-system-x86_64 -M microvm` with direct kernel boot, virtio-mmio
//! devices only, no firmware, controlled over QMP.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::confine::{Confinement, Needs, ShareAccess};
use crate::migration;
use crate::qmp::Qmp;
use crate::{
    Accel, DiskFormat, GuestMemory, MicroVmSpec, NetBackend, RunningVm, VmBackend, VmExit,
};

pub const DEFAULT_BINARY: &str = "qemu-system-x86_64";

pub struct Qemu {
    pub binary: PathBuf,
}

impl Qemu {
    /// Finds QEMU: the one named (`CABIN_QEMU`, read by the front end), else
    /// `qemu-system-x86_64` on PATH.
    pub fn locate(named: Option<&std::path::Path>) -> io::Result<Qemu> {
        if let Some(p) = named {
            let p = p.to_path_buf();
            if p.is_file() {
                return Ok(Qemu { binary: p });
            }
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("CABIN_QEMU points to {}, which does not exist", p.display()),
            ));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(DEFAULT_BINARY);
            if candidate.is_file() {
                return Ok(Qemu { binary: candidate });
            }
        }
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "QEMU (qemu-system-x86_64) is not installed: install it with \
             `apt-get install qemu-system-x86`, or set CABIN_QEMU to its path",
        ))
    }

    /// `qemu-system-x86_64 --version`, first line.
    pub fn version(&self) -> io::Result<String> {
        let out = Command::new(&self.binary).arg("--version").output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "{} --version failed ({})",
                self.binary.display(),
                out.status
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }
}

/// Kernel arguments every cabin microVM gets. `panic=-1` turns a guest panic into a
/// reboot, which -no-reboot turns into QEMU exiting, so a dead guest is noticed at once.
/// `tsc=reliable`: QEMU's TSC is the guest's clock; without it the kernel's watchdog,
/// comparing it with timer ticks that arrive late under TCG on a busy host, could mark
/// it unstable and fall back to jiffies (4 ms steps), and a boot snapshot taken then
/// kept every VM resumed from it on jiffies.
pub const BASE_CMDLINE: &str = "console=ttyS0 quiet panic=-1 reboot=t rdinit=/init tsc=reliable";

// The descriptor numbers what cabin opens gets in QEMU: fixed, so that the command line
// (and with it the snapshot key) is the same for every VM of a shape.
const AGENT_FD: i32 = 3;
const QMP_FD: i32 = 4;
const RESTORE_FD: i32 = 5;
const TAP_FD: i32 = 6;
const CONSOLE_FD: i32 = 7;
const KERNEL_FD: i32 = 8;
const INITRD_FD: i32 = 9;
/// The file behind the guest's RAM, when it is not QEMU's own memory.
const MEMORY_FD: i32 = 10;
/// Disk `i` is `DISK_FD + 2i`, its backing file the next number.
const DISK_FD: i32 = 11;

/// The user-mode network every such VM gets (spelled out on the command line so that
/// cabin-init's static configuration cannot drift from QEMU's defaults).
pub mod user_net {
    use std::net::Ipv4Addr;
    pub const NETWORK: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);
    pub const GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
    pub const PREFIX: u8 = 24;
    /// The host, as the guest sees it (also its gateway).
    pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
    /// QEMU's DNS forwarder, which relays to the host's resolvers.
    pub const DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);

    /// The kernel argument that tells cabin-init the card is on this network, so that it
    /// configures it as it starts: a boot snapshot then holds the card configured, and
    /// a container resumed from it only gets its own MAC address (bringing a card up
    /// runs much cold kernel code, tens of ms under TCG). Its name is
    /// `cabin_proto::BOOT_NETWORK_ARG`.
    pub const BOOT_ARG: &str = "cabin.net";

    /// `cabin.net=ADDRESS/PREFIX,GATEWAY`.
    pub fn boot_arg() -> String {
        format!("{BOOT_ARG}={GUEST}/{PREFIX},{GATEWAY}")
    }
}

/// The MAC address QEMU gives the network card; cabin-init sets each container's own.
pub const DEFAULT_MAC: &str = "52:54:00:ca:b1:00";

pub(crate) fn listen(path: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(l)
}

/// The QEMU command line for a spec (without the binary).
pub fn command_line(spec: &MicroVmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
    push(&["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"]);
    // A saved VM resumes at once wherever it is restored, without a `cont` over QMP.
    push(&["-global", "migration.store-global-state=off"]);
    // acpi=off: the kernel has no ACPI, and only then does QEMU put the virtio-mmio
    // devices on the kernel command line.
    let mut microvm = "microvm,acpi=off,x-option-roms=off,rtc=on".to_string();
    if spec.memory.file().is_some() {
        microvm.push_str(",memory-backend=ram");
    }
    push(&["-M", &microvm]);
    let machine = machine_args(spec.accel, spec.cpus, spec.memory_mib);
    push(&machine.iter().map(String::as_str).collect::<Vec<_>>());
    if let Some(share) = match spec.memory {
        GuestMemory::Private => None,
        GuestMemory::TemplateFile(_) => Some("on"),
        GuestMemory::CopyOnWrite(_) => Some("off"),
    } {
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=ram,size={}M,mem-path={},share={share}",
                spec.memory_mib,
                fd_path(MEMORY_FD)
            ),
        ]);
    }
    let mut cmdline = BASE_CMDLINE.to_string();
    if spec.memory.can_give_back() {
        // Freed memory reported in 2 MiB blocks and up: the default, without huge
        // pages in the guest, is 4 MiB, which a small guest's free memory rarely makes.
        cmdline.push_str(" page_reporting.page_reporting_order=9");
    }
    if let Some(NetBackend::User { .. }) = spec.nic {
        cmdline.push_str(&format!(" {}", user_net::boot_arg()));
    }
    if !spec.extra_cmdline.is_empty() {
        cmdline.push_str(&format!(" {}", spec.extra_cmdline));
    }
    // Kernel and initramfs through the descriptors cabin opened: a confined QEMU
    // cannot reach cabin's files by path.
    push(&[
        "-kernel",
        &fd_path(KERNEL_FD),
        "-initrd",
        &fd_path(INITRD_FD),
        "-append",
        &cmdline,
    ]);
    push(&[
        "-add-fd",
        &format!("fd={CONSOLE_FD},set={CONSOLE_FD}"),
        "-chardev",
        &format!("file,id=console,path=/dev/fdset/{CONSOLE_FD}"),
        "-serial",
        "chardev:console",
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=agent,fd={AGENT_FD},server=on,wait=off"),
        "-device",
        "virtio-serial-device,max_ports=2",
        "-device",
        // The id makes QEMU report the guest opening the port (VSERPORT_CHANGE).
        &format!(
            "virtserialport,chardev=agent,name={},id={AGENT_PORT_ID}",
            AGENT_PORT_NAME
        ),
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qmp,fd={QMP_FD},server=on,wait=off"),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    push(&["-device", "virtio-rng-device"]);
    for (i, d) in spec.disks.iter().enumerate() {
        let fd = DISK_FD + 2 * i as i32;
        let node = format!("disk{i}");
        let backing = d.backing.as_ref().map(|_| fd + 1);
        let mut disk = blockdev_args(&node, fd, d.format, d.read_only, d.volatile, backing);
        disk.extend([
            "-device".to_string(),
            format!(
                "virtio-blk-device,drive={node},serial={},write-cache=on",
                d.serial
            ),
        ]);
        push(&disk.iter().map(String::as_str).collect::<Vec<_>>());
    }
    if let Some(backend) = &spec.nic {
        push(&[
            "-netdev",
            &netdev(backend, TAP_FD),
            "-device",
            &format!("virtio-net-device,netdev=net0,mac={DEFAULT_MAC}"),
        ]);
    }
    let shares = share_args(&spec.shares, "virtio-9p-device");
    push(&shares.iter().map(String::as_str).collect::<Vec<_>>());
    // Pages the guest frees go back to the host a few seconds later (free page
    // reporting; QEMU drops them from its anonymous RAM). Last, so that the devices
    // before it sit where they sit in a template's VM, which has none (see
    // GuestMemory::can_give_back).
    if spec.memory.can_give_back() {
        push(&["-device", "virtio-balloon-device,free-page-reporting=on"]);
    }
    if spec.restore.is_some() {
        // The state is loaded over QMP (`resume`): only then can `x-ignore-shared` be
        // set first, which memory in a template file needs.
        push(&["-incoming", "defer"]);
    }
    a
}

const AGENT_PORT_ID: &str = "agentport";

/// The name cabin-init looks for; kept in step with cabin_proto::PORT_NAME by a test in
/// cabin-containers (this crate does not depend on the protocol).
pub const AGENT_PORT_NAME: &str = "cabin.agent";

/// Accelerator and CPU model, QEMU's seccomp sandbox (no spawning, no privilege
/// changes), vCPUs and memory: the same for every kind of VM.
pub(crate) fn machine_args(accel: Accel, cpus: u32, memory_mib: u64) -> Vec<String> {
    let mut a: Vec<String> = match accel {
        Accel::Kvm => ["-accel", "kvm", "-cpu", "host"],
        Accel::Tcg => ["-accel", "tcg,thread=multi", "-cpu", "max"],
    }
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        "-sandbox".to_string(),
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny".into(),
        "-smp".into(),
        cpus.max(1).to_string(),
        "-m".into(),
        format!("{memory_mib}M"),
    ]);
    a
}

/// The path by which QEMU opens a file cabin handed it as descriptor `fd` (for options
/// that take no descriptor set, like -kernel).
pub(crate) fn fd_path(fd: i32) -> String {
    format!("/proc/self/fd/{fd}")
}

/// `-blockdev` nodes for a disk handed over as descriptor `fd` (and its raw backing
/// file as `backing`), the top node named `node`. The backing node is explicit, so
/// QEMU never opens the path written in a qcow2 header.
pub(crate) fn blockdev_args(
    node: &str,
    fd: i32,
    format: DiskFormat,
    read_only: bool,
    volatile: bool,
    backing: Option<i32>,
) -> Vec<String> {
    let ro = if read_only { "on" } else { "off" };
    // A volatile disk's flushes are not written through (its contents die with the VM).
    let flush = if volatile { "on" } else { "off" };
    let common = format!("read-only={ro},discard=unmap,cache.direct=off,cache.no-flush={flush}");
    let mut a = vec![
        "-add-fd".to_string(),
        format!("fd={fd},set={fd}"),
        "-blockdev".into(),
        format!("driver=file,node-name={node}-file,filename=/dev/fdset/{fd},{common}"),
    ];
    let mut top = format!(
        "driver={},node-name={node},file={node}-file,{common}",
        match format {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        }
    );
    if let Some(b) = backing {
        a.extend([
            "-add-fd".to_string(),
            format!("fd={b},set={b}"),
            "-blockdev".into(),
            format!("driver=file,node-name={node}-base-file,filename=/dev/fdset/{b},read-only=on"),
            "-blockdev".into(),
            format!("driver=raw,node-name={node}-base,file={node}-base-file,read-only=on"),
        ]);
        top.push_str(&format!(",backing={node}-base"));
    }
    a.extend(["-blockdev".to_string(), top]);
    a
}

/// Descriptors cabin hands to QEMU, each at a fixed number there.
#[derive(Default)]
pub(crate) struct Handoff {
    keep: Vec<OwnedFd>,
    pairs: Vec<(i32, i32)>,
}

impl Handoff {
    /// `fd` becomes `number` in QEMU; kept open until QEMU runs.
    pub(crate) fn give(&mut self, fd: OwnedFd, number: i32) {
        self.pairs.push((fd.as_raw_fd(), number));
        self.keep.push(fd);
    }

    /// The caller's `fd` (kept open by the caller) becomes `number` in QEMU.
    pub(crate) fn lend(&mut self, fd: i32, number: i32) {
        self.pairs.push((fd, number));
    }

    /// Opens `path` (read-write or read-only) and gives it as `number`.
    pub(crate) fn open(&mut self, path: &Path, write: bool, number: i32) -> io::Result<()> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        self.give(f.into(), number);
        Ok(())
    }

    /// Gives a file QEMU reads by path (`/proc/self/fd/N` re-opens it, which checks the
    /// file's mode): one the VM user may not read is copied into a sealed memory file.
    pub(crate) fn open_for_path(
        &mut self,
        path: &Path,
        number: i32,
        confined: bool,
    ) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("opening {}: {e}", path.display()));
        let mut f = std::fs::File::open(path).map_err(named)?;
        if !confined || f.metadata().map_err(named)?.mode() & 0o004 != 0 {
            self.give(f.into(), number);
            return Ok(());
        }
        let mut copy = cabin_base::memfd::create(c"cabin-boot-file").map_err(named)?;
        io::copy(&mut f, &mut copy).map_err(named)?;
        cabin_base::memfd::freeze(&copy).map_err(named)?;
        self.give(copy.into(), number);
        Ok(())
    }
}

/// The descriptor of a tap backend, None for other backends.
pub(crate) fn tap_fd(nic: &NetBackend) -> io::Result<Option<i32>> {
    match nic {
        NetBackend::Tap(Some(fd)) => Ok(Some(fd.as_raw_fd())),
        NetBackend::Tap(None) => Err(io::Error::other("the VM's tap device was not opened")),
        NetBackend::User { .. } => Ok(None),
    }
}

/// Starts QEMU with `args`, each descriptor of `fds` open at its number in QEMU, as the
/// VM user of `confinement` when there is one. QEMU must not outlive its parent: a
/// killed cabin leaves no VM behind.
pub(crate) fn spawn_qemu(
    binary: &Path,
    args: Vec<String>,
    fds: &Handoff,
    confinement: Option<&crate::confine::Confinement>,
) -> io::Result<std::process::Child> {
    let pairs = fds.pairs.clone();
    // Every descriptor is first copied above all the numbers involved, so that placing
    // one never overwrites another that is still to be placed.
    let above = pairs.iter().map(|&(a, b)| a.max(b)).max().unwrap_or(2) + 1;
    let mut staged = vec![-1; pairs.len()];
    let creds = confinement.map(|c| c.credentials());
    let parent = std::process::id() as i32;
    let mut cmd = Command::new(binary);
    cmd.args(args)
        // cabin's working directory may be one the VM user cannot enter.
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls between fork and exec; everything the
    // closure uses was allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &(fd, _)) in pairs.iter().enumerate() {
                staged[i] = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
                if staged[i] < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // dup2 clears close-on-exec on the copies.
            for (i, &(_, to)) in pairs.iter().enumerate() {
                if libc::dup2(staged[i], to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Nothing else cabin's caller left open reaches QEMU: everything else is
            // closed at exec (not now: std reports a failed exec through one of them).
            for n in 3..above {
                if !pairs.iter().any(|&(_, to)| to == n) {
                    libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            let all = libc::syscall(
                libc::SYS_close_range,
                above as libc::c_uint,
                libc::c_uint::MAX,
                CLOSE_RANGE_CLOEXEC,
            );
            if all != 0 {
                // Kernels before 5.11: one by one, as far as the descriptor limit.
                let mut limit: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                for n in above..(limit.rlim_cur.min(1 << 20) as i32) {
                    libc::fcntl(n, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            if let Some(c) = &creds {
                c.apply()?;
            }
            // Last: any change of credentials clears the parent-death signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| {
        let who = match (e.kind(), confinement) {
            (io::ErrorKind::PermissionDenied, Some(c)) => format!(
                " (QEMU runs as the VM's own user, uid {}: that user must be able to reach and run it)",
                c.uid
            ),
            _ => String::new(),
        };
        io::Error::new(
            e.kind(),
            format!("starting {}: {e}{who}", binary.display()),
        )
    })
}

/// QEMU option values escape a comma by doubling it.
pub(crate) fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// The `-netdev` value for a VM's one card (id `net0`); a tap is passed as `tap_fd`.
pub(crate) fn netdev(backend: &NetBackend, tap_fd: i32) -> String {
    match backend {
        NetBackend::User { forwards } => {
            let mut n = format!(
                "user,id=net0,ipv6=off,net={}/{},host={},dns={}",
                user_net::NETWORK,
                user_net::PREFIX,
                user_net::GATEWAY,
                user_net::DNS
            );
            for f in forwards {
                n.push_str(&format!(
                    ",hostfwd={}:{}:{}-:{}",
                    f.protocol.as_str(),
                    f.host_ip,
                    f.host_port,
                    f.guest_port
                ));
            }
            n
        }
        NetBackend::Tap(_) => format!("tap,id=net0,fd={tap_fd}"),
    }
}

/// `-fsdev` + 9p device pairs for shared folders (`device`: the transport's 9p device).
pub(crate) fn share_args(shares: &[crate::ShareSpec], device: &str) -> Vec<String> {
    // As root, QEMU stores the guest's owners and modes on the host as they are
    // (docker's bind mounts behave so); otherwise it does what the user can.
    // SAFETY: geteuid has no preconditions.
    let model = if unsafe { libc::geteuid() } == 0 {
        "passthrough"
    } else {
        "none"
    };
    let mut a = Vec::new();
    for (i, share) in shares.iter().enumerate() {
        a.push("-fsdev".to_string());
        a.push(format!(
            "local,id=fs{i},path={},security_model={model}{}",
            qemu_escape(&share.path.to_string_lossy()),
            if share.read_only { ",readonly=on" } else { "" }
        ));
        a.push("-device".to_string());
        a.push(format!("{device},fsdev=fs{i},mount_tag={}", share.tag));
    }
    a
}

impl VmBackend for Qemu {
    type Vm = QemuVm;

    fn name(&self) -> &'static str {
        "qemu"
    }

    fn start(&self, spec: &MicroVmSpec) -> io::Result<QemuVm> {
        let agent_path = spec.run_dir.join("agent.sock");
        let qmp_path = spec.run_dir.join("qmp.sock");
        let agent = listen(&agent_path)?;
        let qmp = listen(&qmp_path)?;
        let confinement = Confinement::for_vm(
            &run_dir_name(&spec.run_dir),
            Needs {
                shares: ShareAccess::of(&spec.shares),
                low_port: low_port(spec.nic.as_ref()),
                kvm: spec.accel == Accel::Kvm,
            },
        )?;
        let confined = confinement.is_some();
        // QEMU gets the listening sockets themselves, so connecting needs no retry loop:
        // the kernel queues our connection until QEMU accepts it.
        let mut fds = Handoff::default();
        fds.give(agent.into(), AGENT_FD);
        fds.give(qmp.into(), QMP_FD);
        if let Some(state) = &spec.restore {
            fds.lend(state.as_raw_fd(), RESTORE_FD);
        }
        if let Some(file) = spec.memory.file() {
            fds.lend(file.as_raw_fd(), MEMORY_FD);
        }
        if let Some(nic) = &spec.nic {
            if let Some(fd) = tap_fd(nic)? {
                fds.lend(fd, TAP_FD);
            }
        }
        let console = spec.run_dir.join("console.log");
        let log = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&console)
            .map_err(|e| {
                io::Error::new(e.kind(), format!("creating {}: {e}", console.display()))
            })?;
        fds.give(log.into(), CONSOLE_FD);
        fds.open_for_path(&spec.kernel, KERNEL_FD, confined)?;
        fds.open_for_path(&spec.initrd, INITRD_FD, confined)?;
        for (i, d) in spec.disks.iter().enumerate() {
            let fd = DISK_FD + 2 * i as i32;
            fds.open(&d.path, !d.read_only, fd)?;
            if let Some(b) = &d.backing {
                fds.open(b, false, fd + 1)?;
            }
        }
        let child = spawn_qemu(&self.binary, command_line(spec), &fds, confinement.as_ref())?;
        drop(fds);
        Ok(QemuVm {
            child: Some(child),
            pid: 0,
            run_dir: spec.run_dir.clone(),
            qmp_path,
            agent_path,
            exit: None,
            monitor: None,
            _confinement: confinement,
            pause: PauseWatch::default(),
            memory_in_file: spec.memory.file().is_some(),
            exit_notice: None,
        }
        .with_pid())
    }
}

/// The run directory's own name: it differs from VM to VM.
pub(crate) fn run_dir_name(run_dir: &Path) -> String {
    run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether QEMU listens on a published port below the unprivileged limit.
pub(crate) fn low_port(nic: Option<&NetBackend>) -> bool {
    match nic {
        Some(NetBackend::User { forwards }) => forwards
            .iter()
            .any(|f| crate::confine::privileged_port(f.host_port)),
        _ => false,
    }
}

pub struct QemuVm {
    child: Option<std::process::Child>,
    pid: u32,
    run_dir: PathBuf,
    qmp_path: PathBuf,
    agent_path: PathBuf,
    exit: Option<VmExit>,
    /// A QMP connection kept open to receive events (events are not queued for clients
    /// that connect later).
    monitor: Option<Qmp>,
    /// The VM user's lease, held until QEMU has been reaped (Drop kills and waits
    /// first; fields drop after).
    _confinement: Option<Confinement>,
    /// A full host disk pauses the VM (see [`DiskPause`]): whether it is paused now,
    /// when to try again, who hears about it.
    pause: PauseWatch,
    /// The guest's RAM is a file cabin handed over (see [`GuestMemory`]): its state is
    /// saved and loaded without it.
    memory_in_file: bool,
    /// A pidfd of QEMU, readable once it has exited: opened by the first wait.
    exit_notice: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
}

/// QEMU pauses a VM whose disk write failed for lack of space on the host (its default
/// `werror=enospc`), so the guest sees no I/O error and loses nothing. cabin notices
/// while it waits for the VM, says so, and resumes it once the write goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskPause {
    Paused,
    Resumed,
}

impl std::fmt::Display for DiskPause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiskPause::Paused => "a disk of the host that holds this VM's files is full: the VM is paused until there is room (free some space; cabin resumes it on its own)",
            DiskPause::Resumed => "there is room on the host's disk again: the VM goes on",
        })
    }
}

/// Notices a VM paused for a full disk and resumes it once writes go through: asked
/// about once a second with the VM's QMP connection.
#[derive(Debug, Default)]
pub struct DiskPauseWatch {
    paused: bool,
    next_check: Option<std::time::Instant>,
    next_resume: Option<std::time::Instant>,
    retry: Duration,
}

impl DiskPauseWatch {
    /// Whether it is time to ask again.
    fn due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self.next_check.is_some_and(|t| now < t) {
            return false;
        }
        self.next_check = Some(now + PAUSE_CHECK);
        true
    }

    /// Asks QEMU over `qmp` whether the VM is paused for a failed write, and tries to
    /// resume it, less often the longer the disk stays full; returns a change to
    /// report. Does nothing until a second has passed since the last time.
    pub async fn check(&mut self, qmp: &mut Qmp) -> Option<DiskPause> {
        if !self.due() {
            return None;
        }
        self.ask(qmp).await.ok().flatten()
    }

    /// One question and, if paused, one attempt to resume; an error leaves an answer
    /// possibly unread on `qmp`.
    async fn ask(&mut self, qmp: &mut Qmp) -> io::Result<Option<DiskPause>> {
        let now = std::time::Instant::now();
        let status = tokio::time::timeout(PAUSE_CHECK, qmp.execute("query-status", None))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "query-status"))??;
        let status = status["status"].as_str().unwrap_or("").to_string();
        match status.as_str() {
            "io-error" => {
                let change = (!self.paused).then(|| {
                    self.paused = true;
                    self.retry = PAUSE_CHECK;
                    self.next_resume = None;
                    DiskPause::Paused
                });
                // The failed write is tried again; still no room: paused again.
                if self.next_resume.is_none_or(|t| now >= t) {
                    self.next_resume = Some(now + self.retry);
                    self.retry = (self.retry * 2).min(RESUME_RETRY_MAX);
                    tokio::time::timeout(PAUSE_CHECK, qmp.execute("cont", None))
                        .await
                        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "cont"))??;
                }
                Ok(change)
            }
            "running" if self.paused => {
                self.paused = false;
                Ok(Some(DiskPause::Resumed))
            }
            _ => Ok(None),
        }
    }
}

#[derive(Default)]
struct PauseWatch {
    watch: DiskPauseWatch,
    /// A check was cut short (the wait it ran in ended): its answer may still be on
    /// the monitor connection, which is then dropped rather than misread.
    in_flight: bool,
    tell: Option<tokio::sync::mpsc::UnboundedSender<DiskPause>>,
}

/// How often a waiting cabin asks QEMU whether the VM is paused for a full disk.
const PAUSE_CHECK: Duration = Duration::from_secs(1);
/// The longest wait between two attempts to resume it.
const RESUME_RETRY_MAX: Duration = Duration::from_secs(10);

impl QemuVm {
    /// Where this VM's RAM goes when its state is saved.
    fn ram(&self) -> migration::Ram {
        if self.memory_in_file {
            migration::Ram::InSharedFile
        } else {
            migration::Ram::InStream
        }
    }

    fn with_pid(mut self) -> Self {
        self.pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0);
        self
    }

    pub async fn qmp(&self) -> io::Result<Qmp> {
        Qmp::handshake(UnixStream::connect(&self.qmp_path).await?).await
    }

    /// The VM's pauses for a full host disk and its resumptions, from now on (noticed
    /// while something waits for the VM).
    pub fn disk_pauses(&mut self) -> tokio::sync::mpsc::UnboundedReceiver<DiskPause> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.pause.tell = Some(tx);
        rx
    }

    /// Asks QEMU (over the monitor connection cabin holds) whether the VM is paused for
    /// a failed write, and tries to resume it, less often the longer it stays full.
    async fn check_disk_pause(&mut self) {
        if self.pause.tell.is_none() || !self.pause.watch.due() {
            return;
        }
        self.drop_cut_monitor();
        if self.monitor.is_none() {
            // QEMU takes the next client once it has seen an old one go.
            self.monitor = tokio::time::timeout(PAUSE_CHECK, self.qmp())
                .await
                .ok()
                .and_then(Result::ok);
        }
        let Some(qmp) = self.monitor.as_mut() else {
            return;
        };
        self.pause.in_flight = true;
        let change = self.pause.watch.ask(qmp).await;
        // An answer not read stays suspect: the connection is dropped next time.
        self.pause.in_flight = change.is_err();
        if let (Ok(Some(change)), Some(tell)) = (change, &self.pause.tell) {
            let _ = tell.send(change);
        }
    }

    /// Drops a monitor connection whose last command was cut short.
    fn drop_cut_monitor(&mut self) {
        if std::mem::take(&mut self.pause.in_flight) {
            self.monitor = None;
        }
    }

    /// Puts `disk` behind the VM's disk device `index` while the VM waits or runs, as a
    /// microVM has no hot-plug bus: cabin opens its files and hands them over
    /// (`add-fd`), adds its nodes, and points the device's format node (raw, see
    /// [`blockdev_args`]) at them; the old file node is removed. `generation` keeps
    /// the node names of successive swaps apart. The guest must not have the old disk
    /// mounted, and must drop what it cached of it (cabin-init's Mount flushes).
    pub async fn swap_disk(
        &mut self,
        index: usize,
        disk: &crate::DiskSpec,
        generation: u32,
    ) -> io::Result<()> {
        use serde_json::json;
        self.drop_cut_monitor();
        if self.monitor.is_none() {
            self.monitor = Some(self.qmp().await?);
        }
        let qmp = self.monitor.as_mut().expect("just set");
        let node = format!("disk{index}");
        let new = format!("{node}-g{generation}");
        fn named(path: &Path) -> impl Fn(io::Error) -> io::Error + '_ {
            move |e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
        }
        let cache = json!({"direct": false, "no-flush": disk.volatile});
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!disk.read_only)
            .open(&disk.path)
            .map_err(named(&disk.path))?;
        async fn add_fd(qmp: &mut Qmp, file: &std::fs::File) -> io::Result<i64> {
            let set = qmp
                .execute_with_fd("add-fd", None, std::os::fd::AsFd::as_fd(file))
                .await?;
            set["fdset-id"]
                .as_i64()
                .ok_or_else(|| io::Error::other("add-fd gave no fdset-id"))
        }
        let set = add_fd(qmp, &file).await?;
        qmp.execute(
            "blockdev-add",
            Some(json!({"driver": "file", "node-name": format!("{new}-file"),
                "filename": format!("/dev/fdset/{set}"), "read-only": disk.read_only,
                "discard": "unmap", "cache": cache})),
        )
        .await?;
        let top = match (&disk.backing, disk.format) {
            (_, DiskFormat::Raw) => format!("{new}-file"),
            (backing, DiskFormat::Qcow2) => {
                let mut options = json!({"driver": "qcow2", "node-name": new,
                    "file": format!("{new}-file"), "read-only": disk.read_only,
                    "discard": "unmap", "cache": cache});
                if let Some(base) = backing {
                    let base_file = std::fs::File::open(base).map_err(named(base))?;
                    let set = add_fd(qmp, &base_file).await?;
                    qmp.execute(
                        "blockdev-add",
                        Some(
                            json!({"driver": "file", "node-name": format!("{new}-base-file"),
                            "filename": format!("/dev/fdset/{set}"), "read-only": true}),
                        ),
                    )
                    .await?;
                    qmp.execute(
                        "blockdev-add",
                        Some(json!({"driver": "raw", "node-name": format!("{new}-base"),
                            "file": format!("{new}-base-file"), "read-only": true})),
                    )
                    .await?;
                    options["backing"] = json!(format!("{new}-base"));
                } else {
                    options["backing"] = serde_json::Value::Null;
                }
                qmp.execute("blockdev-add", Some(options)).await?;
                new.clone()
            }
        };
        qmp.execute(
            "blockdev-reopen",
            Some(
                json!({"options": [{"driver": "raw", "node-name": node, "file": top,
                "read-only": disk.read_only, "discard": "unmap", "cache": cache}]}),
            ),
        )
        .await?;
        // The old file node has no user left; its descriptor goes with it.
        let old = if generation == 0 {
            format!("{node}-file")
        } else {
            format!("{node}-g{}-file", generation - 1)
        };
        let _ = qmp
            .execute("blockdev-del", Some(json!({"node-name": old})))
            .await;
        Ok(())
    }

    /// What QEMU printed on stderr (it only prints errors), once it has exited.
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(err) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = err.take(64 * 1024).read_to_string(&mut s);
        }
        s.trim().to_string()
    }

    /// A descriptor that becomes readable once QEMU has exited (a pidfd).
    fn open_exit_notice(&self) -> Option<tokio::io::unix::AsyncFd<OwnedFd>> {
        let pid = self.child.as_ref()?.id();
        // SAFETY: pidfd_open of our child, which is not reaped before try_exit reaps
        // it; the descriptor it returns is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: just opened, owned by nobody else.
        let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        // SAFETY: an OwnedFd stays open and unchanged for as long as the AsyncFd owns it.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
    }

    fn try_exit(&mut self) -> io::Result<Option<VmExit>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            self.exit = Some(match status.code() {
                Some(c) => VmExit::Exited(c),
                None => VmExit::Killed(status.signal().unwrap_or(0)),
            });
        }
        Ok(self.exit)
    }

    fn send_kill(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
    }

    /// Sends QEMU SIGKILL without waiting for it to be gone (its memory takes a few
    /// milliseconds to be freed): [`RunningVm::kill`] or [`RunningVm::wait`] reaps it
    /// later. For a VM whose state is thrown away anyway.
    pub fn start_kill(&mut self) {
        if matches!(self.try_exit(), Ok(None)) {
            // Nothing to watch in a VM on its way out.
            self.pause = PauseWatch::default();
            self.monitor = None;
            self.send_kill();
        }
    }
}

impl RunningVm for QemuVm {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn agent_socket(&self) -> PathBuf {
        self.agent_path.clone()
    }

    fn console_tail(&self, max: usize) -> String {
        let Ok(mut f) = std::fs::File::open(self.run_dir.join("console.log")) else {
            return String::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(max as u64)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }

    async fn wait(&mut self) -> io::Result<VmExit> {
        // std's Child has no async wait: a pidfd of QEMU becomes readable when it exits
        // (tokio's process reaper and its SIGCHLD handling stay out of cabin), and a VM
        // that waits costs no wake-ups but the disk-pause check's, once a second. Where
        // there is no pidfd, a short poll.
        if self.exit_notice.is_none() {
            self.exit_notice = self.open_exit_notice();
        }
        loop {
            if let Some(exit) = self.try_exit()? {
                return Ok(exit);
            }
            self.check_disk_pause().await;
            match &self.exit_notice {
                Some(fd) => {
                    if let Ok(Ok(mut ready)) =
                        tokio::time::timeout(PAUSE_CHECK, fd.readable()).await
                    {
                        ready.retain_ready();
                    }
                }
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    async fn stop(&mut self, grace: Duration) -> io::Result<VmExit> {
        if let Some(exit) = self.try_exit()? {
            return Ok(exit);
        }
        // The monitor connection cabin holds, if any: QEMU serves one client at a time.
        self.drop_cut_monitor();
        self.pause = PauseWatch::default();
        let monitor = self.monitor.take();
        let qmp_path = self.qmp_path.clone();
        let quit = async move {
            let qmp = match monitor {
                Some(q) => Some(q),
                None => match UnixStream::connect(&qmp_path).await {
                    Ok(s) => Qmp::handshake(s).await.ok(),
                    Err(_) => None,
                },
            };
            if let Some(mut qmp) = qmp {
                let _ = qmp.execute("quit", None).await;
            }
        };
        let _ = tokio::time::timeout(grace, quit).await;
        match tokio::time::timeout(grace, self.wait()).await {
            Ok(r) => r,
            Err(_) => {
                self.send_kill();
                self.wait().await
            }
        }
    }

    async fn wait_agent_opened(&mut self, timeout: Duration) -> io::Result<()> {
        self.drop_cut_monitor();
        let mut qmp = match self.monitor.take() {
            Some(q) => q,
            None => self.qmp().await?,
        };
        // A QEMU that dies closes the connection, which ends the wait with an error.
        let opened = qmp.wait_event("VSERPORT_CHANGE", |d| {
            d["id"] == AGENT_PORT_ID && d["open"] == true
        });
        let r = tokio::time::timeout(timeout, opened).await;
        self.monitor = Some(qmp);
        match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(format!(
                "QEMU ended before the guest opened its agent port: {e}"
            ))),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the guest did not open its agent port in time",
            )),
        }
    }

    async fn save_state(&mut self, path: &Path) -> io::Result<()> {
        self.drop_cut_monitor();
        if self.monitor.is_none() {
            self.monitor = Some(self.qmp().await?);
        }
        let ram = self.ram();
        let qmp = self.monitor.as_mut().expect("just set");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        migration::save(qmp, &file, ram).await?;
        file.sync_all()
    }

    async fn resume(&mut self) -> io::Result<()> {
        self.drop_cut_monitor();
        if self.monitor.is_none() {
            self.monitor = Some(self.qmp().await?);
        }
        let ram = self.ram();
        let qmp = self.monitor.as_mut().expect("just set");
        let source = migration::Source::Inherited(RESTORE_FD);
        migration::load::<std::fs::File>(qmp, source, ram, migration::Announce::No).await
    }

    async fn kill(&mut self) -> io::Result<VmExit> {
        // A VM already gone is only reaped: start_kill and wait both look first.
        self.start_kill();
        self.wait().await
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        if matches!(self.try_exit(), Ok(None)) {
            self.send_kill();
            if let Some(c) = self.child.as_mut() {
                let _ = c.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiskSpec;

    fn spec() -> MicroVmSpec {
        MicroVmSpec {
            kernel: "/k/vmlinux".into(),
            initrd: "/k/initrd".into(),
            extra_cmdline: String::new(),
            cpus: 2,
            memory_mib: 256,
            disks: vec![DiskSpec {
                path: "/data/a,b.qcow2".into(),
                format: DiskFormat::Qcow2,
                read_only: false,
                serial: "rootfs".into(),
                volatile: true,
                backing: None,
            }],
            nic: None,
            shares: Vec::new(),
            accel: Accel::Tcg,
            run_dir: "/run/x".into(),
            restore: None,
            memory: GuestMemory::Private,
        }
    }

    #[test]
    fn command_line_is_a_microvm_with_virtio_mmio_devices_only() {
        let a = command_line(&spec()).join(" ");
        assert!(a.contains("-M microvm,acpi=off"));
        assert!(a.contains("-accel tcg"));
        assert!(a.contains("-smp 2 -m 256M"));
        assert!(a.contains("-no-reboot"));
        assert!(a.contains("virtserialport,chardev=agent,name=cabin.agent"));
        // Files are descriptors cabin opened: a confined QEMU cannot open them by path.
        assert!(
            !a.contains("/data/") && !a.contains("/k/") && !a.contains("/run/x"),
            "{a}"
        );
        assert!(a.contains("-kernel /proc/self/fd/8 -initrd /proc/self/fd/9"));
        assert!(a.contains("-add-fd fd=11,set=11 -blockdev driver=file,node-name=disk0-file,filename=/dev/fdset/11,read-only=off,discard=unmap,cache.direct=off,cache.no-flush=on"), "{a}");
        assert!(a.contains("-blockdev driver=qcow2,node-name=disk0,file=disk0-file,"));
        assert!(a.contains("virtio-blk-device,drive=disk0,serial=rootfs,write-cache=on"));
        assert!(!a.contains("pci"), "microvm guests get no PCI devices: {a}");
        assert!(!a.contains("-incoming"));
        assert!(!a.contains("memory-backend"), "{a}");
        let mut resumed = spec();
        resumed.restore = Some(std::sync::Arc::new(OwnedFd::from(
            tempfile::tempfile().unwrap(),
        )));
        let memfd = std::sync::Arc::new(OwnedFd::from(tempfile::tempfile().unwrap()));
        resumed.memory = GuestMemory::CopyOnWrite(memfd.clone());
        let r = command_line(&resumed);
        assert_eq!(r[r.len() - 2..], ["-incoming", "defer"]);
        let r = r.join(" ");
        assert!(r.contains("-M microvm,acpi=off,x-option-roms=off,rtc=on,memory-backend=ram "));
        assert!(r.contains(
            "-object memory-backend-file,id=ram,size=256M,mem-path=/proc/self/fd/10,share=off"
        ));
        // The template being built writes its RAM through to the file.
        let mut template = spec();
        template.memory = GuestMemory::TemplateFile(memfd);
        let t = command_line(&template).join(" ");
        assert!(t.contains("mem-path=/proc/self/fd/10,share=on"), "{t}");
        // Only a VM with anonymous RAM gives freed memory back (free page reporting):
        // neither a template nor a VM resumed from one has the balloon.
        assert!(a.contains("-device virtio-balloon-device,free-page-reporting=on"));
        assert!(a.contains("page_reporting.page_reporting_order=9"));
        for other in [&r, &t] {
            assert!(!other.contains("balloon"), "{other}");
            assert!(!other.contains("page_reporting"), "{other}");
        }
    }

    #[test]
    fn a_qcow2_disks_backing_file_is_a_node_of_its_own_never_the_path_in_its_header() {
        let mut s = spec();
        s.disks[0].backing = Some("/images/base.ext4".into());
        let a = command_line(&s).join(" ");
        assert!(!a.contains("/images/"), "{a}");
        assert!(a.contains("-add-fd fd=12,set=12 -blockdev driver=file,node-name=disk0-base-file,filename=/dev/fdset/12,read-only=on"), "{a}");
        assert!(a.contains("driver=raw,node-name=disk0-base,file=disk0-base-file,read-only=on"));
        assert!(a.contains(",backing=disk0-base"));
    }

    #[test]
    fn user_networking_forwards_published_ports() {
        let mut s = spec();
        s.nic = Some(NetBackend::User {
            forwards: vec![crate::PortForward {
                protocol: crate::Protocol::Udp,
                host_ip: "127.0.0.1".parse().unwrap(),
                host_port: 5353,
                guest_port: 53,
            }],
        });
        s.shares.push(crate::ShareSpec {
            path: "/srv/a,b".into(),
            tag: "share0".into(),
            read_only: true,
        });
        let a = command_line(&s).join(" ");
        assert!(a.contains("-netdev user,id=net0,ipv6=off,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3,hostfwd=udp:127.0.0.1:5353-:53"), "{a}");
        assert!(a.contains("virtio-net-device,netdev=net0,mac=52:54:00:ca:b1:00"));
        assert!(a.contains("path=/srv/a,,b,security_model="));
        assert!(a.contains(",readonly=on -device virtio-9p-device,fsdev=fs0,mount_tag=share0"));
    }

    #[test]
    fn only_a_user_mode_vm_is_told_its_network_on_the_kernel_command_line() {
        let append = |s: &MicroVmSpec| {
            let args = command_line(s);
            let i = args.iter().position(|a| a == "-append").unwrap();
            args[i + 1].clone()
        };
        let mut s = spec();
        s.extra_cmdline = "cabin.trace".into();
        s.nic = Some(NetBackend::User {
            forwards: Vec::new(),
        });
        assert!(
            append(&s).ends_with(" cabin.net=10.0.2.15/24,10.0.2.2 cabin.trace"),
            "{}",
            append(&s)
        );
        s.nic = Some(NetBackend::Tap(None));
        assert!(!append(&s).contains("cabin.net"), "{}", append(&s));
        s.nic = None;
        assert!(!append(&s).contains("cabin.net"), "{}", append(&s));
    }

    #[test]
    fn kvm_uses_the_host_cpu() {
        let mut s = spec();
        s.accel = Accel::Kvm;
        assert!(command_line(&s).join(" ").contains("-accel kvm -cpu host"));
    }
}
