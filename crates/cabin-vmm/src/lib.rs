//! VM backends. cabin drives every VM through [`VmBackend`]; QEMU is the one backend today
//! ([`qemu::Qemu`]), and another VMM slots in by implementing the same two traits.

pub mod accel;
pub mod confine;
pub mod console;
pub mod full;
pub mod migration;
pub mod qemu;
pub mod qmp;
pub mod rundir;
pub mod vnc;

use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use accel::{Accel, AccelChoice, AccelRequest, HostProbe};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub read_only: bool,
    /// The guest finds the disk by this serial (see cabin-init's `blk:` mount sources).
    pub serial: String,
    /// Guest flushes are not written through: for disks whose contents die with the VM.
    pub volatile: bool,
    /// A qcow2 disk's backing file (raw), read-only; QEMU gets it from cabin, never by
    /// the path in the qcow2 header.
    pub backing: Option<PathBuf>,
}

/// The VM's network card and what carries its traffic on the host.
#[derive(Debug, Clone)]
pub enum NetBackend {
    /// QEMU's user-mode network stack: needs no privileges; the guest reaches out
    /// through the host's own sockets, and published ports are forwards on the host.
    User { forwards: Vec<PortForward> },
    /// A tap device opened by the caller (e.g. one port of a host bridge); None only
    /// in specs that describe a VM's shape and never start.
    Tap(Option<Arc<OwnedFd>>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A host port whose connections go to a port of the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortForward {
    pub protocol: Protocol,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub guest_port: u16,
}

/// A host directory shown to the guest (virtio-9p), found there by its tag.
#[derive(Debug, Clone)]
pub struct ShareSpec {
    pub path: PathBuf,
    pub tag: String,
    pub read_only: bool,
}

/// A lightweight VM that boots a kernel directly and talks to cabin-init.
#[derive(Debug, Clone)]
pub struct MicroVmSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Appended to the backend's own kernel arguments.
    pub extra_cmdline: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<DiskSpec>,
    /// One network card, or none at all.
    pub nic: Option<NetBackend>,
    pub shares: Vec<ShareSpec>,
    pub accel: Accel,
    /// Private directory (0700) for this VM's sockets and console log.
    pub run_dir: PathBuf,
    /// Resume from this saved VM state (see [`RunningVm::save_state`]) instead of
    /// booting, once [`RunningVm::resume`] is called: an open file QEMU reads from its
    /// current offset (the caller checked what it holds). The rest of the spec must
    /// equal the spec of the VM that was saved, except for the files behind the disks
    /// and `memory` (the template's memory, mapped copy-on-write).
    pub restore: Option<Arc<OwnedFd>>,
    /// Where the guest's RAM lives.
    pub memory: GuestMemory,
}

/// Where a VM's RAM lives. A snapshot template keeps it in a file so that the VMs
/// resumed from the template map that file copy-on-write and share the pages none of
/// them changed (QEMU's `x-ignore-shared`: the saved state then holds no RAM at all).
#[derive(Debug, Clone, Default)]
pub enum GuestMemory {
    /// Anonymous memory of the VMM's own.
    #[default]
    Private,
    /// This file, mapped shared: the template being built writes its RAM there.
    TemplateFile(Arc<OwnedFd>),
    /// This file (a template's RAM, sealed against writes), mapped privately: the guest
    /// starts from the template's RAM and its writes stay its own.
    CopyOnWrite(Arc<OwnedFd>),
}

impl GuestMemory {
    pub fn file(&self) -> Option<&Arc<OwnedFd>> {
        match self {
            GuestMemory::Private => None,
            GuestMemory::TemplateFile(fd) | GuestMemory::CopyOnWrite(fd) => Some(fd),
        }
    }

    /// Whether memory the guest frees can go back to the host (virtio-balloon's free
    /// page reporting): only anonymous memory. QEMU 7.2 gives RAM in a file back by
    /// punching a hole in the file, never by dropping a private mapping's pages; on a
    /// template's file, which every VM resumed from it maps, that fails (the file is
    /// sealed) or, were it not sealed, would take the pages from all of them.
    pub fn can_give_back(&self) -> bool {
        matches!(self, GuestMemory::Private)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmExit {
    /// The VMM exited by itself (guest reboot or power-off, or a VMM error) with this code.
    Exited(i32),
    /// The VMM was killed by a signal.
    Killed(i32),
}

/// Starts VMs.
pub trait VmBackend {
    type Vm: RunningVm;
    fn name(&self) -> &'static str;
    /// Starts the VM; returns once the VMM process runs (the guest boots in the background).
    fn start(&self, spec: &MicroVmSpec) -> io::Result<Self::Vm>;
}

/// A running VM.
pub trait RunningVm {
    fn pid(&self) -> u32;
    /// The unix socket that reaches cabin-init in the guest.
    fn agent_socket(&self) -> PathBuf;
    /// The guest's console output so far (for error messages), at most `max` bytes from
    /// the end.
    fn console_tail(&self, max: usize) -> String;
    /// What the console's end says about how the guest died (its panic line, its last
    /// lines), for error messages.
    fn console_excerpt(&self) -> console::ConsoleExcerpt {
        console::ConsoleExcerpt::of(&self.console_tail(console::SEARCHED_BYTES))
    }
    /// Waits for the VMM to exit.
    fn wait(&mut self) -> impl Future<Output = io::Result<VmExit>>;
    /// Ends the VM: asks the VMM to quit, kills it after `grace`.
    fn stop(&mut self, grace: Duration) -> impl Future<Output = io::Result<VmExit>>;
    /// Ends the VM at once, for VMs whose state is thrown away anyway.
    fn kill(&mut self) -> impl Future<Output = io::Result<VmExit>>;
    /// Waits until the guest has opened its end of the agent channel: the moment a
    /// freshly booted cabin-init is idle, waiting for the host.
    fn wait_agent_opened(&mut self, timeout: Duration) -> impl Future<Output = io::Result<()>>;
    /// Pauses the VM and writes its whole state (CPU, devices, memory) to `path`, for
    /// later VMs to resume from with [`MicroVmSpec::restore`]. Memory in a template file
    /// ([`GuestMemory::TemplateFile`]) stays there and is not written to `path`.
    fn save_state(&mut self, path: &std::path::Path) -> impl Future<Output = io::Result<()>>;
    /// Loads the state a VM started with [`MicroVmSpec::restore`] waits for, and lets
    /// it run; returns once the guest runs.
    fn resume(&mut self) -> impl Future<Output = io::Result<()>>;
}
