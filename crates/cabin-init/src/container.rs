//! A container inside the VM: its root filesystem mounts, its cgroup, and the start of its
//! first process in fresh mount, PID, UTS, IPC and cgroup namespaces (a pod's container
//! joins its sandbox's network, UTS and IPC) with docker's default capabilities and
//! masked paths, or those its spec names.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cabin_base::sync::Locked;
use cabin_proto::v1::{Resources, StartProcessRequest};

use crate::inroot::{self, ExecLookup};
use crate::launch::{self, ChildFailure, ChildSetup};
use crate::users;

const NOSUID: libc::c_ulong = libc::MS_NOSUID;
const NODEV: libc::c_ulong = libc::MS_NODEV;
const NOEXEC: libc::c_ulong = libc::MS_NOEXEC;

pub struct Container {
    pub rootfs: PathBuf,
    pub hostname: String,
    pub cgroup: PathBuf,
    /// A pidfd of the container's first process: later processes (exec) join its
    /// namespaces through it.
    pub first_process: std::sync::OnceLock<OwnedFd>,
    /// No network card for it: the container gets a network namespace of its own with
    /// only a loopback interface (`--network none`).
    pub own_network: bool,
    /// Its address on the VM's card, for its /etc/hosts.
    pub ip: Option<String>,
    /// Where its /etc/hosts and friends live in the guest (bound into its root).
    pub etc_dir: PathBuf,
    /// A pod's container: the sandbox whose network, UTS and IPC namespaces its first
    /// process joins.
    pub joins: Option<std::sync::Arc<Container>>,
    /// Paths its processes see masked and read-only (relative to its root); None:
    /// docker's.
    pub paths: Option<PathRules>,
    /// Its first process's capabilities and no_new_privs, for later processes that name
    /// none.
    pub first_security: std::sync::OnceLock<Security>,
}

/// Masked and read-only paths, relative to the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRules {
    pub masked: Vec<String>,
    pub read_only: Vec<String>,
}

impl PathRules {
    /// The request's rules, each an absolute path without `..` (made relative).
    pub fn from_request(rules: &cabin_proto::v1::PathRules) -> Result<PathRules, String> {
        let relative = |paths: &[String]| -> Result<Vec<String>, String> {
            paths
                .iter()
                .map(|p| {
                    if cabin_base::confined::plain_absolute(Path::new(p)) {
                        Ok(p.trim_start_matches('/').to_string())
                    } else {
                        Err(format!(
                            "masked and read-only paths must be absolute, below / and without '..': {p:?}"
                        ))
                    }
                })
                .collect()
        };
        Ok(PathRules {
            masked: relative(&rules.masked)?,
            read_only: relative(&rules.read_only)?,
        })
    }
}

/// A process's capabilities (None: docker's default set) and no_new_privs.
#[derive(Debug, Clone, Default)]
pub struct Security {
    pub capabilities: Option<cabin_proto::v1::Capabilities>,
    pub no_new_privileges: bool,
}

/// Capability sets as the child applies them: bit masks, ambient as a list.
struct CapPlan {
    bounding: u64,
    effective: [u32; 2],
    permitted: [u32; 2],
    inheritable: [u32; 2],
    ambient: Vec<u32>,
    /// The sets are root's: empty for a process of another user.
    root_only: bool,
}

impl CapPlan {
    fn of(caps: &cabin_proto::v1::Capabilities, last: u32) -> Result<CapPlan, StartError> {
        // Capabilities the guest's kernel does not have are left out, as runc leaves
        // out those its host lacks (a spec made on a newer host lists more).
        let known = |c: &&u32| **c <= last && **c < 64;
        let mask = |set: &[u32]| set.iter().filter(known).fold(0u64, |m, &c| m | 1 << c);
        let halves = |m: u64| [m as u32, (m >> 32) as u32];
        Ok(CapPlan {
            bounding: mask(&caps.bounding),
            effective: halves(mask(&caps.effective)),
            permitted: halves(mask(&caps.permitted)),
            inheritable: halves(mask(&caps.inheritable)),
            ambient: caps.ambient.iter().filter(known).copied().collect(),
            root_only: caps.root_only,
        })
    }
}

/// pidfd_open(2).
pub fn pidfd(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; the descriptor it returns is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A path or string as a C string: one with a NUL byte (from the host's request) is an
/// error, never a panic.
fn cstr(p: impl AsRef<Path>) -> io::Result<CString> {
    cabin_base::confined::cstr(p.as_ref().as_os_str().as_bytes())
}

pub fn mount(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f) = (cstr(source)?, cstr(target)?, cstr(fstype)?);
    let d = cstr(data)?;
    // SAFETY: NUL-terminated strings that outlive the call.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ptr(),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                d.as_ptr().cast()
            },
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(
            e.kind(),
            format!("mount {fstype} on {}: {e}", target.display()),
        ));
    }
    Ok(())
}

fn mknod(path: &Path, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: valid path; creating a character device node.
    let r = unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(major, minor),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // mknod honours the umask; the nodes must be usable by every user.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
}

/// Mounts /dev, /dev/pts, /dev/shm and /sys inside the container's root, as docker does.
/// /proc, /dev/mqueue and /sys/fs/cgroup belong to the container's own namespaces and are
/// mounted by its first process.
pub fn prepare_rootfs(rootfs: &Path) -> io::Result<()> {
    for dir in ["proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let dev = rootfs.join("dev");
    let moved = std::mem::take(&mut *SPARE_DEV.locked()) && {
        let moved = mount(SPARE_DEV_DIR, &dev, "", libc::MS_MOVE, "");
        if moved.is_err() {
            // Not in anyone's way: it goes with the VM.
            let _ = cabin_base::mountinfo::unmount_below(Path::new(SPARE_DEV_DIR));
        }
        moved.is_ok()
    };
    if !moved {
        make_dev(&dev)?;
    }
    mount(
        "sysfs",
        &rootfs.join("sys"),
        "sysfs",
        NOSUID | NODEV | NOEXEC | libc::MS_RDONLY,
        "",
    )?;
    Ok(())
}

/// A container's /dev at `dev`: a tmpfs with the usual nodes and links, its own devpts
/// instance and /dev/shm.
fn make_dev(dev: &Path) -> io::Result<()> {
    mount(
        "tmpfs",
        dev,
        "tmpfs",
        NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    )?;
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        mknod(&dev.join(name), major, minor)?;
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
        ("core", "/proc/kcore"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(link))?;
    }
    for dir in ["pts", "shm", "mqueue"] {
        std::fs::create_dir(dev.join(dir))?;
    }
    mount(
        "devpts",
        &dev.join("pts"),
        "devpts",
        NOSUID | NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    mount(
        "shm",
        &dev.join("shm"),
        "tmpfs",
        NOSUID | NODEV | NOEXEC,
        "mode=1777,size=65536k",
    )
}

/// Creates the container's cgroup with its limits.
pub fn create_cgroup(id: &str, res: &Resources) -> io::Result<PathBuf> {
    let dir = if std::mem::take(&mut *SPARE_CGROUP.locked()) {
        Path::new(SPARE_CGROUP_DIR).to_path_buf()
    } else {
        enable_controllers()?;
        let dir = Path::new(CGROUP_ROOT).join(format!("ctr-{id}"));
        new_cgroup(&dir)?;
        dir
    };
    let set = |n: u64| (n > 0).then_some(n);
    set_limits(
        &dir,
        set(res.memory_bytes),
        set(res.cpu_micros),
        set(res.pids_limit),
    )?;
    Ok(dir)
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

// Spares: what every container of a VM gets alike, made as init starts, for the VM's
// first container (and again after a container is removed, for the next one). A VM
// resumed from a boot snapshot has them already: making them runs much kernel code
// that VM has not run yet, each tens of ms under TCG.

/// A cgroup. Its name has a dot, which no container ID has; a container sees its own
/// cgroup as its root.
static SPARE_CGROUP: Mutex<bool> = Mutex::new(false);
const SPARE_CGROUP_DIR: &str = "/sys/fs/cgroup/ctr.spare";
/// A /dev (`make_dev`), moved into the container's root.
static SPARE_DEV: Mutex<bool> = Mutex::new(false);
const SPARE_DEV_DIR: &str = "/run/cabin/spare-dev";

/// Turns on the controllers containers are limited by and makes the spares.
pub fn prepare_spares() -> io::Result<()> {
    cap_last();
    enable_controllers()?;
    make_spares()
}

/// The kernel's highest capability number, read once (as init starts, so that a VM
/// resumed from a boot snapshot knows it).
fn cap_last() -> u32 {
    static CAP_LAST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *CAP_LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

fn make_spares() -> io::Result<()> {
    make_spare_cgroup()?;
    let mut ready = SPARE_DEV.locked();
    if !*ready {
        let dir = Path::new(SPARE_DEV_DIR);
        std::fs::create_dir_all(dir)?;
        if let Err(e) = make_dev(dir) {
            let _ = cabin_base::mountinfo::unmount_below(dir);
            return Err(e);
        }
        *ready = true;
    }
    Ok(())
}

/// Enabling controllers that are enabled already is harmless.
fn enable_controllers() -> io::Result<()> {
    let control = Path::new(CGROUP_ROOT).join("cgroup.subtree_control");
    std::fs::write(control, "+memory +cpu +pids")
}

fn make_spare_cgroup() -> io::Result<()> {
    let mut ready = SPARE_CGROUP.locked();
    if !*ready {
        new_cgroup(Path::new(SPARE_CGROUP_DIR))?;
        *ready = true;
    }
    Ok(())
}

fn new_cgroup(dir: &Path) -> io::Result<()> {
    std::fs::create_dir(dir)?;
    // No swap in the guest, but say so explicitly in case a kernel has it.
    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
    Ok(())
}

/// Writes the limits given (Some) into the cgroup `dir`; Some(0) removes one.
pub fn set_limits(
    dir: &Path,
    memory_bytes: Option<u64>,
    cpu_micros: Option<u64>,
    pids_limit: Option<u64>,
) -> io::Result<()> {
    let limit = |n: u64| {
        if n == 0 {
            "max".to_string()
        } else {
            n.to_string()
        }
    };
    if let Some(m) = memory_bytes {
        std::fs::write(dir.join("memory.max"), limit(m))?;
    }
    if let Some(c) = cpu_micros {
        // cpu.max: quota and period in microseconds; cpu_micros is millionths of a CPU.
        let period = 100_000u64;
        let quota = if c == 0 {
            "max".to_string()
        } else {
            (c * period / 1_000_000).max(1000).to_string()
        };
        std::fs::write(dir.join("cpu.max"), format!("{quota} {period}"))?;
    }
    if let Some(p) = pids_limit {
        std::fs::write(dir.join("pids.max"), limit(p))?;
    }
    Ok(())
}

/// Ends a container for good while its VM goes on: every process of its cgroup killed
/// (and gone), the cgroup removed, its root file system and everything mounted below
/// its directory unmounted, its files (/etc/hosts and friends) deleted.
pub async fn remove(ctr: &Container) -> io::Result<()> {
    if ctr.cgroup.exists() {
        std::fs::write(ctr.cgroup.join("cgroup.kill"), "1")?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let events = std::fs::read_to_string(ctr.cgroup.join("cgroup.events"))?;
            if events.lines().any(|l| l == "populated 0") {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(io::Error::other("its processes did not end within 10 s"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        std::fs::remove_dir(&ctr.cgroup)?;
        // The next container of this VM (a pooled VM's after its warm-up, a pod's next
        // member) finds spares ready too. Best effort: without them, that container
        // makes its own.
        let _ = make_spares();
    }
    // Lazily: nothing of the container uses its files any more. Every mount below its
    // directory goes, deepest first: its root (a pod member's is a host directory
    // shared into the VM), its staged volumes and shared folders. Only then are its
    // directories deleted, so that the deletion can only meet the guest's own files.
    if let Some(dir) = ctr.rootfs.parent() {
        cabin_base::mountinfo::unmount_below(dir)?;
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

/// A container's resource use from its cgroup files (missing values read as 0).
pub fn stats(cgroup: &Path) -> cabin_proto::v1::ContainerStats {
    let number = |file: &str| -> u64 {
        std::fs::read_to_string(cgroup.join(file))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let cpu_usage_micros = std::fs::read_to_string(cgroup.join("cpu.stat"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
        })
        .unwrap_or(0);
    cabin_proto::v1::ContainerStats {
        memory_bytes: number("memory.current"),
        // "max" does not parse: no limit.
        memory_limit_bytes: number("memory.max"),
        cpu_usage_micros,
        pids: number("pids.current"),
        sampled_boottime_nanos: crate::clock::boottime_nanos(),
    }
}

/// Whether the kernel's OOM killer killed a process of this cgroup.
pub fn oom_killed(cgroup: &Path) -> bool {
    std::fs::read_to_string(cgroup.join("memory.events"))
        .map(|events| {
            events.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
        .unwrap_or(false)
}

/// Why a process could not be started, mapped by the service to gRPC codes and by the
/// host to docker's exit codes.
#[derive(Debug)]
pub enum StartError {
    NotFound(String),
    NotExecutable(String),
    InvalidSpec(String),
    Setup(String),
}

pub enum Stdio3 {
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    Pty {
        master: OwnedFd,
    },
}

pub struct Started {
    pub pid: i32,
    pub stdio: Stdio3,
}

// Docker's default capability set (moby's oci/caps/defaults.go), by number.
const DEFAULT_CAPS: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

const MASKED_PATHS: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Steps of the child's set-up, reported back with the errno when one fails (the errno
/// alone would not say which).
const STEPS: &[&str] = &[
    "set up standard input and output",
    "setsid",
    "set the controlling terminal",
    "make mounts private",
    "unshare the cgroup namespace",
    "set the hostname",
    "mount /proc",
    "mount /dev/mqueue",
    "mount /sys/fs/cgroup",
    "mask paths",
    "make paths read-only",
    "pivot_root",
    "detach the old root",
    "create or enter the working directory",
    "set resource limits",
    "drop capabilities from the bounding set",
    "set capabilities",
    "set supplementary groups",
    "setgid",
    "setuid",
    "clear ambient capabilities",
    "bring up the loopback interface",
    "join the pod's network, UTS and IPC namespaces",
    "keep capabilities across the change of user",
    "set no_new_privs",
    "raise ambient capabilities",
];

fn rlimit_resource(name: &str) -> Option<u32> {
    Some(
        match name.to_ascii_lowercase().trim_start_matches("rlimit_") {
            "cpu" => libc::RLIMIT_CPU,
            "fsize" => libc::RLIMIT_FSIZE,
            "data" => libc::RLIMIT_DATA,
            "stack" => libc::RLIMIT_STACK,
            "core" => libc::RLIMIT_CORE,
            "rss" => libc::RLIMIT_RSS,
            "nproc" => libc::RLIMIT_NPROC,
            "nofile" => libc::RLIMIT_NOFILE,
            "memlock" => libc::RLIMIT_MEMLOCK,
            "as" => libc::RLIMIT_AS,
            "locks" => libc::RLIMIT_LOCKS,
            "sigpending" => libc::RLIMIT_SIGPENDING,
            "msgqueue" => libc::RLIMIT_MSGQUEUE,
            "nice" => libc::RLIMIT_NICE,
            "rtprio" => libc::RLIMIT_RTPRIO,
            "rttime" => libc::RLIMIT_RTTIME,
            _ => return None,
        },
    )
}

fn env_value<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().rev().find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn open_pty(rootfs: &Path, rows: u16, cols: u16, owner: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    // The pty comes from the container's own devpts instance, so that inside the
    // container `tty` names a device that exists there.
    let ptmx = cstr(rootfs.join("dev/pts/ptmx"))?;
    // SAFETY: plain open of a path we own.
    let master = unsafe {
        libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if master < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we just opened it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: ioctls on the master we own, with the argument types they expect.
    unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(io::Error::last_os_error());
        }
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        let slave = libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            return Err(io::Error::last_os_error());
        }
        let slave = OwnedFd::from_raw_fd(slave);
        libc::fchown(slave.as_raw_fd(), owner, u32::MAX);
        Ok((master, slave))
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us these descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Everything the child needs, prepared before clone so that the child allocates nothing.
struct ChildPlan {
    tty: bool,
    /// Joining the namespaces of a running container rather than making new ones.
    join: bool,
    /// A fresh network namespace, whose loopback interface starts down.
    loopback_up: bool,
    /// A pidfd of the pod's sandbox process whose network, UTS and IPC namespaces the
    /// child joins (-1: none; the child made its own with clone).
    pod_pidfd: libc::c_int,
    rootfs: CString,
    proc_dir: CString,
    mqueue_dir: CString,
    cgroup_dir: CString,
    masked: Vec<CString>,
    readonly: Vec<CString>,
    dev_null: CString,
    hostname: Vec<u8>,
    cwd_prefixes: Vec<CString>,
    rlimits: Vec<(u32, u64, u64)>,
    cap_last: u32,
    /// The spec's capability sets; None: docker's default set.
    caps: Option<CapPlan>,
    no_new_privs: bool,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
}

impl ChildSetup for ChildPlan {
    /// Runs in the cloned child (see launch.rs): only async-signal-safe calls.
    fn run(&self) -> Result<(), ChildFailure> {
        let fail = |step: u8| ChildFailure {
            step,
            errno: io::Error::last_os_error().raw_os_error().unwrap_or(0),
        };
        let ok = |r: libc::c_int, step: u8| if r < 0 { Err(fail(step)) } else { Ok(()) };
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: each call below is a plain syscall on NUL-terminated strings and
        // descriptors prepared before clone; nothing allocates.
        unsafe {
            crate::trace::mark_in_child(b"child cloned");
            if self.pod_pidfd >= 0 {
                ok(
                    libc::setns(
                        self.pod_pidfd,
                        libc::CLONE_NEWNET | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC,
                    ),
                    22,
                )?;
            }
            ok(libc::setsid(), 1)?;
            if self.loopback_up {
                let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                ok(sock, 21)?;
                let mut r: libc::ifreq = std::mem::zeroed();
                for (d, s) in r.ifr_name.iter_mut().zip(b"lo") {
                    *d = *s as libc::c_char;
                }
                ok(libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut r), 21)?;
                r.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
                ok(libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &mut r), 21)?;
                libc::close(sock);
            }
            if self.tty {
                ok(libc::ioctl(0, libc::TIOCSCTTY, 0), 2)?;
            }
            // A process joining a running container (exec) is already in its
            // namespaces, mounts and root (see launch::spawn_joined).
            if !self.join {
                ok(
                    libc::mount(
                        null,
                        c"/".as_ptr(),
                        null,
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ),
                    3,
                )?;
                // The child was cloned into its cgroup; rooting its cgroup namespace there
                // has to wait until now (clone would root it at init's cgroup).
                ok(libc::unshare(libc::CLONE_NEWCGROUP), 4)?;
                // A pod's UTS namespace has its host name already.
                if self.pod_pidfd < 0 {
                    ok(
                        libc::sethostname(self.hostname.as_ptr().cast(), self.hostname.len()),
                        5,
                    )?;
                }
                let nsne = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                ok(
                    libc::mount(
                        c"proc".as_ptr(),
                        self.proc_dir.as_ptr(),
                        c"proc".as_ptr(),
                        nsne,
                        std::ptr::null(),
                    ),
                    6,
                )?;
                ok(
                    libc::mount(
                        c"mqueue".as_ptr(),
                        self.mqueue_dir.as_ptr(),
                        c"mqueue".as_ptr(),
                        nsne,
                        std::ptr::null(),
                    ),
                    7,
                )?;
                let r = libc::mount(
                    c"cgroup".as_ptr(),
                    self.cgroup_dir.as_ptr(),
                    c"cgroup2".as_ptr(),
                    nsne | libc::MS_RDONLY,
                    std::ptr::null(),
                );
                // Images without /sys/fs/cgroup simply do not get it.
                if r < 0 && *libc::__errno_location() != libc::ENOENT {
                    return Err(fail(8));
                }
                crate::trace::mark_in_child(b"child: proc mqueue cgroup mounted");
                for path in &self.masked {
                    let r = libc::mount(
                        self.dev_null.as_ptr(),
                        path.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null(),
                    );
                    if r < 0 {
                        match *libc::__errno_location() {
                            libc::ENOENT => continue,
                            libc::ENOTDIR => ok(
                                libc::mount(
                                    c"tmpfs".as_ptr(),
                                    path.as_ptr(),
                                    c"tmpfs".as_ptr(),
                                    libc::MS_RDONLY,
                                    std::ptr::null(),
                                ),
                                9,
                            )?,
                            _ => return Err(fail(9)),
                        }
                    }
                }
                for path in &self.readonly {
                    let r = libc::mount(
                        path.as_ptr(),
                        path.as_ptr(),
                        null,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    );
                    if r < 0 {
                        if *libc::__errno_location() == libc::ENOENT {
                            continue;
                        }
                        return Err(fail(10));
                    }
                    ok(
                        libc::mount(
                            path.as_ptr(),
                            path.as_ptr(),
                            null,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nsne,
                            std::ptr::null(),
                        ),
                        10,
                    )?;
                }
                crate::trace::mark_in_child(b"child: masked and ro paths");
                // pivot_root(".", ".") stacks the old root on the new one; detaching it leaves
                // only the container's root (runc's way, needs no scratch directory).
                ok(libc::chdir(self.rootfs.as_ptr()), 11)?;
                ok(
                    libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr())
                        as libc::c_int,
                    11,
                )?;
                ok(libc::umount2(c".".as_ptr(), libc::MNT_DETACH), 12)?;
                ok(libc::chdir(c"/".as_ptr()), 12)?;
            }
            // Docker creates a missing working directory.
            for prefix in &self.cwd_prefixes {
                if libc::mkdir(prefix.as_ptr(), 0o755) < 0
                    && *libc::__errno_location() != libc::EEXIST
                {
                    return Err(fail(13));
                }
            }
            if let Some(cwd) = self.cwd_prefixes.last() {
                ok(libc::chdir(cwd.as_ptr()), 13)?;
            }
            for &(res, soft, hard) in &self.rlimits {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                ok(libc::setrlimit(res as _, &lim), 14)?;
            }
            let mut default_mask = [0u32; 2];
            for &cap in DEFAULT_CAPS {
                default_mask[(cap / 32) as usize] |= 1 << (cap % 32);
            }
            let bounding = match &self.caps {
                Some(c) => c.bounding,
                None => u64::from(default_mask[0]) | u64::from(default_mask[1]) << 32,
            };
            for cap in 0..=self.cap_last.min(63) {
                if bounding & (1 << cap) == 0 {
                    ok(
                        libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0),
                        15,
                    )?;
                }
            }
            #[repr(C)]
            struct CapHeader {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            struct CapData {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let capset = |e: [u32; 2], p: [u32; 2], i: [u32; 2]| {
                let header = CapHeader {
                    version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                    pid: 0,
                };
                let data = [
                    CapData {
                        effective: e[0],
                        permitted: p[0],
                        inheritable: i[0],
                    },
                    CapData {
                        effective: e[1],
                        permitted: p[1],
                        inheritable: i[1],
                    },
                ];
                libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int
            };
            // Docker's default set is set before the change of user, which drops it for
            // a user other than root. A spec's sets are set after it (runc's way), with
            // every capability kept for the change itself; root-only sets (Docker's
            // --cap-add) are then empty for another user.
            if self.caps.is_none() {
                ok(capset(default_mask, default_mask, default_mask), 16)?;
            } else {
                ok(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0), 23)?;
            }
            // Raw syscalls: glibc's wrappers would try to apply the change to all of
            // init's threads, whose memory this child shares.
            let sys = |r: libc::c_long| r as libc::c_int;
            ok(
                sys(libc::syscall(
                    libc::SYS_setgroups,
                    self.groups.len(),
                    self.groups.as_ptr(),
                )),
                17,
            )?;
            ok(sys(libc::syscall(libc::SYS_setgid, self.gid)), 18)?;
            // Leaving uid 0 clears the permitted and effective sets (without keepcaps),
            // as docker's non-root users have them.
            ok(sys(libc::syscall(libc::SYS_setuid, self.uid)), 19)?;
            ok(
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                    0,
                    0,
                    0,
                ),
                20,
            )?;
            if let Some(c) = &self.caps {
                ok(libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0), 23)?;
                if c.root_only && self.uid != 0 {
                    ok(capset([0; 2], [0; 2], [0; 2]), 16)?;
                } else {
                    ok(capset(c.effective, c.permitted, c.inheritable), 16)?;
                }
                for &cap in c.ambient.iter().filter(|_| !c.root_only) {
                    ok(
                        libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        ),
                        25,
                    )?;
                }
            }
            if self.no_new_privs {
                ok(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 24)?;
            }
        }
        Ok(())
    }
}

/// The capabilities and no_new_privs a process starts with: its request's, or (a later
/// process that names no capabilities) the container's first process's.
pub fn process_security(ctr: &Container, req: &StartProcessRequest, later: bool) -> Security {
    match (&req.capabilities, later, ctr.first_security.get()) {
        (None, true, Some(first)) => first.clone(),
        _ => Security {
            capabilities: req.capabilities.clone(),
            no_new_privileges: req.no_new_privileges,
        },
    }
}

fn cwd_prefixes(cwd: &str) -> io::Result<Vec<CString>> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in cwd.split('/').filter(|p| !p.is_empty() && *p != ".") {
        acc.push('/');
        acc.push_str(part);
        out.push(cstr(&acc)?);
    }
    Ok(out)
}

/// Starts the container's first process. The caller registers the returned pid with the
/// reaper before its next `.await`.
/// Starts a process in the container: its first one (`join` None: new namespaces,
/// mounts and root), or another one in the namespaces of its running first process
/// (`join`: that process's pidfd), as `cabin exec` does.
pub fn start_process(
    ctr: &Container,
    req: &StartProcessRequest,
    join: Option<&OwnedFd>,
) -> Result<Started, StartError> {
    let setup = |what: &str, e: io::Error| StartError::Setup(format!("{what}: {e}"));
    if req.args.is_empty() {
        return Err(StartError::InvalidSpec("no command given".into()));
    }
    let root = inroot::open(&ctr.rootfs).map_err(|e| setup("open the root filesystem", e))?;
    let passwd = root
        .read_text(Path::new("/etc/passwd"), 4 << 20)
        .unwrap_or_default();
    let group = root
        .read_text(Path::new("/etc/group"), 4 << 20)
        .unwrap_or_default();
    let id = users::resolve(&req.user, &passwd, &group)
        .map_err(|e| StartError::InvalidSpec(e.to_string()))?;

    let mut env: Vec<String> = req.env.clone();
    if env_value(&env, "PATH").is_none() {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    if env_value(&env, "HOME").is_none() {
        env.push(format!("HOME={}", id.home));
    }
    let cwd = if req.cwd.is_empty() {
        "/"
    } else {
        req.cwd.as_str()
    };
    if !cwd.starts_with('/') {
        return Err(StartError::InvalidSpec(format!(
            "the working directory {cwd:?} is not an absolute path"
        )));
    }
    let arg0 = &req.args[0];
    let program = match inroot::find_executable(
        &root,
        arg0,
        env_value(&env, "PATH").unwrap_or(DEFAULT_PATH),
        cwd,
    ) {
        ExecLookup::Found(p) => p,
        ExecLookup::NotFound if arg0.contains('/') => {
            return Err(StartError::NotFound(format!(
                "exec: {arg0:?}: no such file or directory"
            )))
        }
        ExecLookup::NotFound => {
            return Err(StartError::NotFound(format!(
                "exec: {arg0:?}: executable file not found in $PATH"
            )))
        }
        ExecLookup::NotExecutable(p) => {
            return Err(StartError::NotExecutable(format!(
                "exec: {p:?}: permission denied"
            )))
        }
    };
    let mut rlimits = Vec::new();
    for r in &req.rlimits {
        let res = rlimit_resource(&r.resource)
            .ok_or_else(|| StartError::InvalidSpec(format!("unknown rlimit {:?}", r.resource)))?;
        rlimits.push((res, r.soft, r.hard));
    }
    let cap_last = cap_last();

    let security = process_security(ctr, req, join.is_some());
    let cgroup_dir =
        std::fs::File::open(&ctr.cgroup).map_err(|e| setup("open the container's cgroup", e))?;
    // The first process of a pod's container joins its sandbox's namespaces (an exec
    // joins the container's own first process, which is in them).
    let pod =
        match (&ctr.joins, join) {
            (Some(sandbox), None) => Some(sandbox.first_process.get().ok_or_else(|| {
                StartError::Setup("the pod's sandbox has no running process".into())
            })?),
            _ => None,
        };
    let rootfs = &ctr.rootfs;
    let bad = |e: io::Error| StartError::InvalidSpec(e.to_string());
    let in_root = |p: &str| cstr(rootfs.join(p)).map_err(bad);
    // The spec's paths, else docker's.
    let in_roots = |spec: Option<&Vec<String>>, defaults: &[&str]| match spec {
        Some(paths) => paths.iter().map(|p| in_root(p)).collect(),
        None => defaults
            .iter()
            .map(|p| in_root(p))
            .collect::<Result<Vec<_>, _>>(),
    };
    let plan = ChildPlan {
        tty: req.tty,
        join: join.is_some(),
        loopback_up: join.is_none() && ctr.own_network,
        pod_pidfd: pod.map_or(-1, |fd| fd.as_raw_fd()),
        rootfs: cstr(rootfs).map_err(bad)?,
        proc_dir: in_root("proc")?,
        mqueue_dir: in_root("dev/mqueue")?,
        cgroup_dir: in_root("sys/fs/cgroup")?,
        masked: in_roots(ctr.paths.as_ref().map(|r| &r.masked), MASKED_PATHS)?,
        readonly: in_roots(ctr.paths.as_ref().map(|r| &r.read_only), READONLY_PATHS)?,
        dev_null: c"/dev/null".into(),
        hostname: ctr.hostname.as_bytes().to_vec(),
        cwd_prefixes: cwd_prefixes(cwd).map_err(bad)?,
        rlimits,
        cap_last,
        caps: security
            .capabilities
            .as_ref()
            .map(|c| CapPlan::of(c, cap_last))
            .transpose()?,
        no_new_privs: security.no_new_privileges,
        uid: id.uid,
        gid: id.gid,
        groups: id.groups.clone(),
    };

    let mut envp = Vec::with_capacity(env.len());
    for kv in &env {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => envp.push(cstr(kv).map_err(|_| {
                StartError::InvalidSpec(format!("invalid environment entry {kv:?}"))
            })?),
            _ => {
                return Err(StartError::InvalidSpec(format!(
                    "invalid environment entry {kv:?}"
                )))
            }
        }
    }
    let mut argv = Vec::with_capacity(req.args.len());
    for a in &req.args {
        argv.push(
            CString::new(a.as_bytes()).map_err(|_| {
                StartError::InvalidSpec(format!("argument {a:?} contains a NUL byte"))
            })?,
        );
    }
    // The child execs after pivot_root: `program` is the path inside the container.
    // With --init it execs the reaper (init's own binary, from a descriptor), which
    // starts the command (found above, so a missing one still fails here).
    let exec = if req.init && join.is_none() {
        let fd = crate::pid1::binary().ok_or_else(|| {
            StartError::Setup("--init: cabin-init cannot find its own binary".into())
        })?;
        let mut reaper_argv = vec![cstr(crate::pid1::ARGV0).map_err(bad)?, c"--".into()];
        reaper_argv.extend(argv);
        // A container's PID 1 drops the signals it does not block and has no handler
        // for: the reaper starts with all of them blocked, so that none sent early is
        // lost (a stop right after the start).
        launch::Program::from_fd(fd, reaper_argv, envp).with_signals_blocked()
    } else {
        launch::Program::new(cstr(&program).map_err(bad)?, argv, envp)
    };

    // The child's ends are dropped (closed) in init once it has exec'd; init keeps the
    // other ends.
    let (stdio, child_ends): (Stdio3, Vec<OwnedFd>) = if req.tty {
        let size = req.tty_size.unwrap_or_default();
        let (master, slave) = open_pty(rootfs, size.rows as u16, size.cols as u16, id.uid)
            .map_err(|e| setup("open a pseudo-terminal", e))?;
        (Stdio3::Pty { master }, vec![slave])
    } else {
        let stdin = if req.stdin {
            let (r, w) = pipe().map_err(|e| setup("pipe", e))?;
            (r, Some(w))
        } else {
            let null = std::fs::OpenOptions::new()
                .read(true)
                .open("/dev/null")
                .map_err(|e| setup("open /dev/null", e))?;
            (OwnedFd::from(null), None)
        };
        let (out_r, out_w) = pipe().map_err(|e| setup("pipe", e))?;
        let (err_r, err_w) = pipe().map_err(|e| setup("pipe", e))?;
        (
            Stdio3::Pipes {
                stdin: stdin.1,
                stdout: out_r,
                stderr: err_r,
            },
            vec![stdin.0, out_w, err_w],
        )
    };
    let fds = match child_ends.as_slice() {
        [tty] => [tty.as_raw_fd(); 3],
        [i, o, e] => [i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()],
        _ => unreachable!("one pty or three pipes"),
    };
    crate::trace::mark("cloning");
    let spawned = match join {
        None => launch::spawn(
            &plan,
            &exec,
            fds,
            cgroup_dir.as_raw_fd(),
            if pod.is_some() {
                launch::Namespaces::Pod
            } else if ctr.own_network {
                launch::Namespaces::OwnNetwork
            } else {
                launch::Namespaces::VmNetwork
            },
        ),
        Some(pidfd) => {
            launch::spawn_joined(&plan, &exec, fds, cgroup_dir.as_raw_fd(), pidfd.as_raw_fd())
        }
    };
    let pid = match spawned {
        Ok(Ok(pid)) => pid,
        Ok(Err(f)) if f.step == launch::JOIN_STEP => {
            return Err(StartError::Setup(format!(
                "joining the container's namespaces: {}",
                io::Error::from_raw_os_error(f.errno)
            )))
        }
        Ok(Err(f)) if f.step == launch::EXEC_STEP => {
            let e = io::Error::from_raw_os_error(f.errno);
            return Err(match f.errno {
                libc::ENOENT => StartError::NotFound(format!("exec: {arg0:?}: {e}")),
                libc::EACCES | libc::ENOEXEC | libc::EPERM => {
                    StartError::NotExecutable(format!("exec: {arg0:?}: {e}"))
                }
                _ => StartError::Setup(format!("starting {arg0:?}: {e}")),
            });
        }
        Ok(Err(f)) => {
            let what = STEPS.get(f.step as usize).copied().unwrap_or("set-up");
            let e = io::Error::from_raw_os_error(f.errno);
            return Err(StartError::Setup(format!(
                "container set-up failed at '{what}': {e}"
            )));
        }
        Err(e) => {
            return Err(StartError::Setup(format!(
                "creating the container's namespaces: {e}"
            )))
        }
    };
    drop(child_ends);
    Ok(Started { pid, stdio })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_directory_prefixes_are_created_in_order() {
        let got: Vec<String> = cwd_prefixes("/srv//app/./data/")
            .unwrap()
            .into_iter()
            .map(|c| c.into_string().unwrap())
            .collect();
        assert_eq!(got, ["/srv", "/srv/app", "/srv/app/data"]);
        assert!(cwd_prefixes("/").unwrap().is_empty());
        assert!(
            cwd_prefixes("/a\0b").is_err(),
            "a NUL byte is an error, not a panic"
        );
    }

    #[test]
    fn rlimit_names_are_case_insensitive_with_or_without_prefix() {
        assert_eq!(rlimit_resource("nofile"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_NPROC"), Some(libc::RLIMIT_NPROC));
        assert_eq!(rlimit_resource("bogus"), None);
    }

    #[test]
    fn later_env_entries_win() {
        let env = vec!["A=1".to_string(), "PATH=/x".into(), "A=2".into()];
        assert_eq!(env_value(&env, "A"), Some("2"));
        assert_eq!(env_value(&env, "PATH"), Some("/x"));
        assert_eq!(env_value(&env, "B"), None);
    }
}
