//! One container in its own VM, from boot to teardown.
//!
//! `boot` prepares the disk and boot assets, starts the VM, waits for cabin-init, mounts
//! the container's root filesystem, creates the container and starts its process. The
//! caller then streams the process's I/O through [`ContainerVm::agent`] and finally
//! calls [`ContainerVm::wait`] and [`ContainerVm::teardown`]. Whenever the VM dies,
//! every step fails with the reason and the tail of the guest console.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cabin_proto::v1::{
    CreateContainerRequest, ExitStatus, HelloRequest, HelloResponse, MountRequest, ProcessRef,
    Resources, Rlimit, StartProcessRequest, TtySize,
};
use cabin_vmm::qemu::{Qemu, QemuVm};
use cabin_vmm::{
    accel, AccelChoice, AccelRequest, DiskFormat, DiskSpec, GuestMemory, MicroVmSpec, RunningVm,
    VmBackend, VmExit,
};

use cabin_base::Host;
use cabin_net::NetworkMode;
use cabin_vmm::rundir::RunDir;

use crate::agent::{self, Agent};
use crate::assets;
use crate::attachments::{self, Attachments, Devices};
use crate::error::io_err;
pub use crate::error::{Notify, RunError};
use crate::holder;
use crate::root::{self, RootSource};
use crate::snapshot;
use crate::spec::ContainerSpec;
use crate::timings::Timings;
use crate::volumes::MountSpec;

/// Guest memory on top of the container's own limit: kernel, init, page cache.
pub const VM_MEMORY_OVERHEAD_MIB: u64 = 96;
pub const DEFAULT_VM_MEMORY_MIB: u64 = 512;

impl ContainerSpec {
    /// The container's hostname: the one asked for, else the start of the VM's ID.
    pub fn hostname_for(&self, vm_id: &str) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| vm_id[..12.min(vm_id.len())].to_string())
    }

    /// The VM's vCPUs: docker's --cpus rounded up, one by default.
    pub fn vcpus(&self) -> u32 {
        self.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1)
    }

    /// The VM's memory: the container's limit and the guest's own overhead, or the
    /// default.
    pub fn vm_memory_mib(&self) -> u64 {
        match self.memory_bytes {
            Some(b) => (b >> 20) + VM_MEMORY_OVERHEAD_MIB,
            None => DEFAULT_VM_MEMORY_MIB,
        }
    }
}

fn describe_exit(exit: VmExit, oom_killed: bool) -> String {
    match exit {
        VmExit::Killed(9) if oom_killed => "QEMU was killed by the kernel's OOM killer: the host, or the memory cgroup cabin runs in, ran out of memory; give the container less memory (--memory) or stop other containers or VMs".into(),
        VmExit::Exited(0) => {
            "the VM stopped unexpectedly (the guest rebooted or its kernel panicked)".into()
        }
        VmExit::Exited(c) => format!("QEMU exited with status {c}"),
        VmExit::Killed(s) => format!("QEMU was killed by signal {s}"),
    }
}

/// " (limit N MiB)" for messages about an OOM kill, empty without a limit.
pub fn memory_limit_note(cfg: &ContainerSpec) -> String {
    cfg.memory_bytes
        .map(|b| format!(" (limit {} MiB)", b >> 20))
        .unwrap_or_default()
}

pub struct ContainerVm {
    pub id: String,
    vm: Vmm,
    agent: Agent,
    /// The agent's connection, which a pod's sandbox relays to its members.
    channel: tonic::transport::Channel,
    run_dir: Option<RunDir>,
    pub timings: Timings,
    pub accel: AccelChoice,
    pub guest_boot: Duration,
    /// The VM resumed from a boot snapshot rather than booting.
    pub restored: bool,
    /// No boot snapshot fits this VM yet: front ends start building one
    /// (`cabin system prepare`) so that the next run resumes.
    pub missing_snapshot: bool,
    /// Something the user should hear about the boot (a snapshot that failed to resume).
    pub boot_notice: Option<String>,
    /// What the container's process started with besides its command.
    pub process: ProcessSettings,
    /// Its health check: the spec's, else the image's (none when turned off).
    pub healthcheck: Option<crate::health::HealthCheck>,
    exited: Option<VmExit>,
    /// The host's count of OOM kills when QEMU started: a rise by the time it dies of
    /// SIGKILL names the OOM killer in the message.
    oom_kills_at_start: Option<u64>,
    /// Network endpoint, volume locks: released after the VM is gone.
    attachments: Option<Attachments>,
    /// Keeps the container's /etc/hosts in step with its peers on a bridge.
    peers_watch: Option<tokio::task::JoinHandle<()>>,
    /// Its writable layer outlives the VM (ContainerSpec::layer).
    keeps_layer: bool,
    /// Where to copy the guest console at teardown (a developers' aid, see `Host`).
    keep_console: Option<PathBuf>,
}

/// The VM a container runs on: its own, or (a pod's member) its sandbox's.
enum Vmm {
    Own(Box<QemuVm>),
    Pod(PodVm),
}

/// A pod member's view of its sandbox's VM.
struct PodVm {
    paths: cabin_base::Paths,
    sandbox: String,
    link: crate::pod::PodLink,
    /// Turns true when the sandbox's supervisor, and so the VM, is gone.
    gone: tokio::sync::watch::Receiver<bool>,
}

/// The environment (the image's, the options', HOSTNAME), working directory and user a
/// container's process started with: `cabin exec` starts from them, as docker's does.
#[derive(Debug, Clone, Default)]
pub struct ProcessSettings {
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
}

/// What a container VM runs on: the VMM, kernel, initramfs and accelerator.
pub struct Machine {
    pub qemu: Qemu,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Front ends tell the user about a fallback to TCG (see `tcg_notice`).
    pub accel: AccelChoice,
}

impl Machine {
    pub fn resolve(host: &Host, cfg: &ContainerSpec) -> Result<Machine, RunError> {
        let qemu = Qemu::locate(host.qemu.as_deref()).map_err(io_err("finding QEMU"))?;
        let kernel = assets::locate_kernel(cfg.kernel.as_deref(), host)?;
        let init = assets::locate_init(host)?;
        let initrd = assets::initramfs(&init, &host.paths)?;
        Ok(Machine {
            qemu,
            kernel,
            initrd,
            accel: accel::choose(cfg.accel),
        })
    }

    /// The VM for `cfg`, with its root disk at `disk` (a qcow2 overlay on the image disk
    /// `base`) and `devices`.
    pub fn spec(
        &self,
        cfg: &ContainerSpec,
        run_dir: &Path,
        disk: PathBuf,
        base: PathBuf,
        devices: Devices,
    ) -> MicroVmSpec {
        let mut disks = vec![DiskSpec {
            path: disk,
            backing: Some(base),
            format: DiskFormat::Qcow2,
            read_only: false,
            serial: "rootfs".into(),
            // A kept layer must have its qcow2 metadata written when the guest flushes.
            volatile: cfg.layer.is_none(),
        }];
        disks.extend(devices.disks);
        MicroVmSpec {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            extra_cmdline: cfg.extra_kernel_args.clone(),
            cpus: cfg.vcpus(),
            memory_mib: cfg.vm_memory_mib(),
            disks,
            nic: devices.nic,
            shares: devices.shares,
            accel: self.accel.accel,
            run_dir: run_dir.to_path_buf(),
            restore: None,
            memory: cabin_vmm::GuestMemory::Private,
        }
    }
}

/// What decides which boot snapshot fits a container: the VM's shape. Sent to the
/// background builder (`cabin system prepare --shape JSON`) as it is.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VmShape {
    pub cpus: Option<f64>,
    pub memory_bytes: Option<u64>,
    pub kernel: Option<PathBuf>,
    pub accel: AccelRequest,
    pub extra_kernel_args: String,
    pub network: NetworkMode,
    /// How many shared host folders (each is a device of the VM).
    pub shares: usize,
    /// How many volumes.
    pub volumes: usize,
    /// A pod's sandbox (its VM has the pod's share).
    #[serde(default)]
    pub pod_sandbox: bool,
}

impl VmShape {
    /// The shape of `spec`'s VM.
    pub fn of(spec: &ContainerSpec) -> VmShape {
        let count = |f: fn(&MountSpec) -> bool| spec.mounts.iter().filter(|m| f(m)).count();
        VmShape {
            cpus: spec.cpus,
            memory_bytes: spec.memory_bytes,
            kernel: spec.kernel.clone(),
            accel: spec.accel,
            extra_kernel_args: spec.extra_kernel_args.clone(),
            network: spec.network,
            shares: count(|m| matches!(m, MountSpec::Bind { .. })),
            volumes: count(|m| matches!(m, MountSpec::Volume { .. })),
            pod_sandbox: spec.pod == Some(crate::pod::PodRole::Sandbox),
        }
    }

    /// A container of this shape (mounts are placeholders: only their number counts).
    pub fn spec(&self) -> ContainerSpec {
        let mut c = ContainerSpec::new(RootSource::Dir("/".into()), Vec::new());
        c.cpus = self.cpus;
        c.memory_bytes = self.memory_bytes;
        c.kernel = self.kernel.clone();
        c.accel = self.accel;
        c.extra_kernel_args = self.extra_kernel_args.clone();
        c.network = self.network;
        for i in 0..self.shares {
            c.mounts.push(MountSpec::Bind {
                source: "/".into(),
                target: format!("/share{i}"),
                read_only: false,
            });
        }
        for i in 0..self.volumes {
            c.mounts.push(MountSpec::Volume {
                name: format!("v{i}"),
                target: format!("/volume{i}"),
                read_only: false,
            });
        }
        if self.pod_sandbox {
            c.pod = Some(crate::pod::PodRole::Sandbox);
        }
        c
    }
}

/// Whether a boot snapshot fits containers configured like `cfg`.
pub fn has_snapshot(host: &Host, cfg: &ContainerSpec) -> bool {
    Machine::resolve(host, cfg).is_ok_and(|m| {
        let spec = m.spec(
            cfg,
            Path::new("/unused"),
            PathBuf::from("/unused"),
            PathBuf::from("/unused"),
            attachments::shape(cfg),
        );
        matches!(
            snapshot::find(&host.paths, &snapshot::key(&m.qemu, &spec)),
            snapshot::Found::Usable(_)
        )
    })
}

/// Builds the boot snapshot for containers of `shape` (`cabin system prepare`), unless
/// it exists or another process is building it.
pub async fn prepare_snapshot(host: &Host, shape: &VmShape) -> Result<snapshot::Built, RunError> {
    let cfg = shape.spec();
    let machine = Machine::resolve(host, &cfg)?;
    let spec = machine.spec(
        &cfg,
        Path::new("/unused"),
        PathBuf::from("/unused"),
        PathBuf::from("/unused"),
        attachments::shape(&cfg),
    );
    snapshot::build(&host.paths, &machine.qemu, &spec)
        .await
        .map_err(io_err("building the boot snapshot"))
}

/// The helper command that builds `shape`'s boot snapshot.
pub fn prepare_args(shape: &VmShape) -> Vec<String> {
    vec![
        "system".into(),
        "prepare".into(),
        "--quiet".into(),
        "--shape".into(),
        serde_json::to_string(shape).unwrap_or_default(),
    ]
}

/// Starts building the boot snapshot containers like `cfg` resume from, in a process of
/// its own, unless snapshots are off or it is there. Best effort: a failure only costs
/// the next run its speed.
pub fn prepare_in_background(host: &Host, cfg: &ContainerSpec) {
    if !host.snapshots || has_snapshot(host, cfg) {
        return;
    }
    let _ = cabin_base::spawn::cabin_service(
        host,
        prepare_args(&VmShape::of(cfg)),
        cabin_base::spawn::Output::Discard,
    );
}

/// 64 bytes from the host's kernel for the guest's (see cabin-init's entropy.rs).
fn fresh_entropy() -> Result<Vec<u8>, RunError> {
    cabin_base::random::bytes::<64>()
        .map(|b| b.to_vec())
        .map_err(io_err("entropy for the guest"))
}

/// A container's kept writable layer: made on its first start (under a temporary name,
/// so a crash never leaves half a layer), reused afterwards on the very disk it was
/// made on. A layer records its base's identity beside it: a base disk rebuilt at the
/// same path (an image removed and pulled again) has other blocks in other places, and
/// the old layer on top of it would be a corrupt file system.
/// Makes or checks the container's kept writable layer on `base`; returns the image
/// disk the layer was made on (its qcow2 backing file).
fn keep_layer(base: &Path, layer: &Path) -> Result<PathBuf, RunError> {
    let identity_file = layer.with_extension("base");
    if layer.exists() {
        let backing = cabin_image::qcow2::backing_file(layer).map_err(|e| {
            RunError::Setup(format!(
                "the container's writable layer {} is unreadable ({e}); remove the container and run it again",
                layer.display()
            ))
        })?;
        let recorded = std::fs::read_to_string(&identity_file).unwrap_or_default();
        return match backing {
            Some(b) if b.is_file() && disk_identity(&b) == recorded => Ok(b),
            b => Err(RunError::Setup(format!(
                "the image disk this container was made on is gone from the store or was rebuilt ({}); its changes cannot be put back on it: remove the container (cabin rm) and run it again",
                b.unwrap_or_default().display()
            ))),
        };
    }
    let partial = layer.with_extension("partial");
    create_overlay(base, &partial)?;
    std::fs::write(&identity_file, disk_identity(base))
        .and_then(|()| std::fs::rename(&partial, layer))
        .map_err(io_err("keeping the container's writable layer"))?;
    Ok(base.to_path_buf())
}

/// The container's writable layer on its image's disk `disk`, and the disk under it:
/// its kept layer (`ContainerSpec::layer`), else a new one in the VM's run directory.
fn writable_layer(
    cfg: &ContainerSpec,
    disk: &Path,
    run_dir: &Path,
) -> Result<(PathBuf, PathBuf), RunError> {
    match &cfg.layer {
        Some(kept) => Ok((kept.clone(), keep_layer(disk, kept)?)),
        None => {
            let overlay = run_dir.join("rootfs.qcow2");
            create_overlay(disk, &overlay)?;
            Ok((overlay, disk.to_path_buf()))
        }
    }
}

fn disk_identity(p: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .map(|m| format!("{} {} {}.{}", m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        .unwrap_or_default()
}

fn create_overlay(base: &Path, overlay: &Path) -> Result<(), RunError> {
    let base_size = std::fs::metadata(base)
        .map_err(io_err(format!("reading {}", base.display())))?
        .len();
    // Every container disk looks the same to the guest, so that a boot snapshot fits any
    // of them (snapshot.rs); the file system inside keeps its own size.
    let size = base_size.max(snapshot::DISK_BYTES);
    cabin_image::qcow2::create_overlay(base, size, overlay)
        .map_err(io_err("creating the container's writable layer"))
}

/// A VM resumed from its shape's boot snapshot on a scratch disk of its own and warmed
/// up: a container made, started and removed in it once, so that the guest paths a
/// container's start takes are translated already (under TCG, a resumed VM starts with
/// none). It waits for a container ([`ContainerVm::boot_on`]), which gets its disk and
/// identity (clock, entropy, MAC, hostname) then. The pool's members (`pool.rs`).
pub struct WarmVm {
    vm: ContainerVm,
    pub shape: VmShape,
}

/// The scratch container of a warm-up, and its disk in the VM's run directory.
const WARM_UP_ID: &str = "warm-up";
const WARM_UP_DISK: &str = "warm-up.raw";

impl WarmVm {
    /// Resumes a VM of `shape` (building its boot snapshot first if there is none) and
    /// warms it up.
    pub async fn start(host: &Host, shape: &VmShape) -> Result<WarmVm, RunError> {
        let cfg = shape.spec();
        cabin_base::memory::Headroom::now()
            .admit(cfg.vm_memory_mib())
            .map_err(|e| RunError::Setup(e.to_string()))?;
        let machine = Machine::resolve(host, &cfg)?;
        let id = cabin_base::random::id().map_err(io_err("naming the VM"))?;
        let run_dir = RunDir::create(&host.paths.run_root(), &id)
            .map_err(io_err("creating the VM's run directory"))?;
        let scratch = run_dir.path.join(WARM_UP_DISK);
        warm_up_disk(host, &scratch)?;
        let mut spec = machine.spec(
            &cfg,
            &run_dir.path,
            scratch.clone(),
            scratch.clone(),
            attachments::shape(&cfg),
        );
        spec.disks[0].format = DiskFormat::Raw;
        spec.disks[0].backing = None;
        let key = snapshot::key(&machine.qemu, &spec);
        let template = match snapshot::find(&host.paths, &key) {
            snapshot::Found::Usable(t) => t,
            _ => {
                let built = snapshot::build(&host.paths, &machine.qemu, &spec)
                    .await
                    .map_err(io_err("building the boot snapshot"))?;
                // Another process (`cabin system prepare` after a run, say) builds it.
                if built == snapshot::Built::InProgress {
                    snapshot::wait_for_builder(&host.paths, &key)
                        .await
                        .map_err(io_err("waiting for the boot snapshot's build"))?;
                }
                match snapshot::find(&host.paths, &key) {
                    snapshot::Found::Usable(t) => t,
                    _ => {
                        return Err(RunError::Setup(format!(
                            "the boot snapshot {key} a pooled VM resumes from could not be made"
                        )))
                    }
                }
            }
        };
        let memory = holder::memory(host, &template).map_err(|e| {
            RunError::Setup(format!("the boot snapshot {key} could not be used: {e}"))
        })?;
        spec.restore = Some(Arc::new(
            template
                .state_file()
                .map_err(io_err("copying the boot snapshot's state"))?,
        ));
        spec.memory = GuestMemory::CopyOnWrite(Arc::new(memory));
        let timings = Timings::start_at(Instant::now());
        let mut me = ContainerVm::launch(&machine, &spec, run_dir, timings, id)?;
        me.come_up(Duration::from_secs(60)).await?;
        me.warm_up(&cfg).await?;
        Ok(WarmVm {
            vm: me,
            shape: shape.clone(),
        })
    }

    /// The VMM's process id on the host.
    pub fn vmm_pid(&self) -> u32 {
        self.vm.vmm_pid()
    }

    /// Waits for the VM to die (nothing else ends a VM that waits in the pool), and
    /// says how.
    pub async fn died(&mut self) -> String {
        self.vm.ended().await.to_string()
    }

    /// Stops the VM and removes its files.
    pub async fn discard(self) {
        self.vm.teardown().await
    }
}

/// A copy of the pool's warm-up disk at `dest`, sized as every container's disk (its
/// holes stay holes: the image is mostly empty, the device 1 TiB).
fn warm_up_disk(host: &Host, dest: &Path) -> Result<(), RunError> {
    let image = assets::warm_up_disk(&assets::locate_init(host)?, &host.paths)?;
    cabin_base::files::copy_sparse(&image, dest)
        .and_then(|()| std::fs::OpenOptions::new().write(true).open(dest))
        .and_then(|f| f.set_len(snapshot::DISK_BYTES))
        .map_err(io_err("copying the pool's warm-up disk"))
}

/// Mounting the container's disk (`blk:rootfs`) at `target`.
fn root_mount(target: &str) -> MountRequest {
    MountRequest {
        source: "blk:rootfs".into(),
        target: target.into(),
        fstype: "ext4".into(),
        // Right after mounting, ext4 would read every block group's bitmap and zero
        // the inode tables mkfs left lazily uninitialised, in a kernel thread
        // competing with the container's start for the VM's CPU. Neither is needed:
        // bitmaps are read on demand, and uninitialised tables are marked as such.
        options: vec!["no_prefetch_block_bitmaps".into(), "noinit_itable".into()],
        // --read-only turns the root read-only after the mount points are made.
        read_only: false,
    }
}

impl ContainerVm {
    /// Runs a scratch container through every step of a start (mount, create, process
    /// started and ended) and removes it, leaving the disk unmounted. On QEMU's
    /// user-mode network, which is the same for every VM but the MAC address, the card
    /// is configured as a container's will be (its MAC stays the template's until a
    /// container gives it its own).
    async fn warm_up(&mut self, cfg: &ContainerSpec) -> Result<(), RunError> {
        let (network, hosts) = match cfg.network {
            NetworkMode::User => {
                let (net, hosts) = attachments::user_mode(String::new());
                (Some(net), hosts)
            }
            _ => (None, Vec::new()),
        };
        let mut a = self.agent.clone();
        let t = cabin_proto::CALL_TIMEOUT;
        let rootfs = format!("/run/cabin/containers/{WARM_UP_ID}/rootfs");
        self.guarded(agent::call("Mount", t, a.mount(root_mount(&rootfs))))
            .await?;
        self.guarded(agent::call(
            "CreateContainer",
            t,
            a.create_container(CreateContainerRequest {
                container_id: WARM_UP_ID.into(),
                rootfs,
                hostname: WARM_UP_ID.into(),
                resources: Some(Resources::default()),
                network,
                mounts: Vec::new(),
                read_only_root: false,
                hosts,
                share_namespaces_of: String::new(),
                paths: None,
            }),
        ))
        .await?;
        let process = ProcessRef {
            container_id: WARM_UP_ID.into(),
            process_id: "init".into(),
        };
        self.guarded(agent::call(
            "StartProcess",
            t,
            a.start_process(StartProcessRequest {
                container_id: WARM_UP_ID.into(),
                process_id: "init".into(),
                args: vec![format!("/{}", cabin_proto::WARM_UP_ARGV0)],
                env: vec!["PATH=/".into()],
                cwd: "/".into(),
                ..Default::default()
            }),
        ))
        .await?;
        self.guarded(agent::call("Wait", t, a.wait(process)))
            .await?;
        self.guarded(agent::call(
            "RemoveContainer",
            t,
            a.remove_container(cabin_proto::v1::ContainerRef {
                container_id: WARM_UP_ID.into(),
            }),
        ))
        .await?;
        Ok(())
    }
}

impl ContainerVm {
    pub fn process_ref(&self) -> ProcessRef {
        ProcessRef {
            container_id: self.id.clone(),
            process_id: "init".into(),
        }
    }

    pub fn agent(&self) -> Agent {
        self.agent.clone()
    }

    /// The container's process's output, chunk by chunk, until it and everything
    /// holding its output are gone.
    pub fn output(&self) -> tokio::sync::mpsc::Receiver<crate::process::Output> {
        crate::process::output(&self.agent, self.process_ref())
    }

    /// The process's stdin (it must have been started with `stdin`): bytes sent reach it
    /// in order; dropping the sender ends its input, and the task finishes once the
    /// guest has taken everything.
    pub fn stdin(
        &self,
    ) -> (
        tokio::sync::mpsc::Sender<Vec<u8>>,
        tokio::task::JoinHandle<()>,
    ) {
        agent::stdin_writer(&self.agent, self.process_ref())
    }

    /// A handle that signals the process and resizes its terminal while something else
    /// waits for it.
    pub fn controls(&self) -> crate::process::Controls {
        crate::process::Controls::new(self.agent.clone(), self.process_ref())
    }

    /// Waits for the VM to end (a pod member: its sandbox's) and says how.
    async fn ended(&mut self) -> RunError {
        let qemu = match &mut self.vm {
            Vmm::Own(qemu) => qemu,
            Vmm::Pod(pod) => {
                let _ = pod.gone.wait_for(|gone| *gone).await;
                // Nothing of it is left to kill or to tear down but the container.
                self.exited = Some(VmExit::Killed(libc::SIGKILL));
                return RunError::Vm {
                    message: format!(
                        "its pod's VM ended (the supervisor of the pod's sandbox container {} is gone)",
                        pod.sandbox
                    ),
                    console: Default::default(),
                };
            }
        };
        let exit = match qemu.wait().await {
            Ok(exit) => exit,
            Err(e) => return io_err("waiting for QEMU")(e),
        };
        self.exited = Some(exit);
        let oom_killed = matches!(
            (self.oom_kills_at_start, cabin_base::memory::oom_kills()),
            (Some(before), Some(now)) if now > before
        );
        let mut message = describe_exit(exit, oom_killed);
        let stderr = qemu.stderr();
        if !stderr.is_empty() {
            message = format!("{message}: {stderr}");
        }
        RunError::Vm {
            message,
            console: qemu.console_excerpt(),
        }
    }

    /// The end of the guest's console (a pod member has none of its own).
    fn console_excerpt(&self) -> cabin_vmm::console::ConsoleExcerpt {
        match &self.vm {
            Vmm::Own(qemu) => qemu.console_excerpt(),
            Vmm::Pod(_) => Default::default(),
        }
    }

    /// Runs `fut` unless the VM dies first. A call that fails because the connection
    /// broke is, almost always, the VM dying: give QEMU a moment to be seen exiting so the
    /// user learns the real cause.
    async fn guarded<T>(
        &mut self,
        fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, RunError> {
        let result = tokio::select! {
            r = fut => r,
            e = self.ended() => return Err(e),
        };
        match result {
            Ok(v) => Ok(v),
            Err(status) => {
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) {
                    if let Ok(e) = tokio::time::timeout(Duration::from_secs(2), self.ended()).await
                    {
                        return Err(e);
                    }
                }
                Err(RunError::from(status))
            }
        }
    }

    pub async fn boot(
        host: &Host,
        cfg: &ContainerSpec,
        started: Instant,
        notify: Notify<'_>,
    ) -> Result<ContainerVm, RunError> {
        Self::boot_on(host, cfg, started, notify, None).await
    }

    /// As [`ContainerVm::boot`], on `warm` when given: a VM of the container's shape
    /// resumed and warmed up ahead ([`WarmVm`], the pool's), which takes the
    /// container's disk and identity instead of a VM being started for it.
    pub async fn boot_on(
        host: &Host,
        cfg: &ContainerSpec,
        started: Instant,
        notify: Notify<'_>,
        warm: Option<WarmVm>,
    ) -> Result<ContainerVm, RunError> {
        if let Some(crate::pod::PodRole::Member { sandbox }) = &cfg.pod {
            return ContainerVm::join_pod(host, cfg, sandbox, started, notify).await;
        }
        let paths = &host.paths;
        let mut timings = Timings::start_at(started);
        if warm.is_none() {
            // A pooled VM's memory is already spent.
            cabin_base::memory::Headroom::now()
                .admit(cfg.vm_memory_mib())
                .map_err(|e| RunError::Setup(e.to_string()))?;
        }
        let machine = Machine::resolve(host, cfg)?;
        timings.mark("boot assets");
        let root = root::resolve(paths, &cfg.root, notify).await?;
        let image_healthcheck = root.defaults.healthcheck.clone();
        let (args, image_env, cwd, user) = root::merge_spec(&root.defaults, cfg)?;
        timings.mark_with("root filesystem image", root.note);
        if let Some(warm) = warm {
            let mut me = warm.vm;
            me.timings = timings;
            let (overlay, base) = writable_layer(cfg, &root.disk, &me.run_path())?;
            let id = me.id.clone();
            let mut attached = Attachments::acquire(paths, cfg, &id, notify)?;
            let devices = attached.take_devices();
            let spec = machine.spec(cfg, &me.run_path(), overlay, base, devices);
            me.attachments = Some(attached);
            me.keeps_layer = cfg.layer.is_some();
            me.keep_console = host.keep_console.clone();
            me.timings.mark("writable layer");
            let Vmm::Own(qemu) = &mut me.vm else {
                return Err(RunError::Setup("a pooled VM is a VM of its own".into()));
            };
            qemu.swap_disk(0, &spec.disks[0], 0)
                .await
                .map_err(io_err("handing the container's disk to the pooled VM"))?;
            // The scratch disk is no longer the VM's.
            let _ = std::fs::remove_file(me.run_path().join(WARM_UP_DISK));
            me.timings.mark("disk attached");
            // The clock and a fresh seed for the guest's random numbers, as after any
            // resume: the pooled VM was warmed up with the ones it had then.
            me.greet(cfg.boot_timeout).await?;
            me.timings
                .mark_with("init answering", "a warm VM from the pool".into());
            return me
                .create_and_start(cfg, image_healthcheck, args, image_env, cwd, user)
                .await;
        }
        let id = cabin_base::random::id().map_err(io_err("naming the VM"))?;
        let run_dir = RunDir::create(&paths.run_root(), &id)
            .map_err(io_err("creating the VM's run directory"))?;
        let (overlay, base) = writable_layer(cfg, &root.disk, &run_dir.path)?;
        let mut attached = Attachments::acquire(paths, cfg, &id, notify)?;
        let devices = attached.take_devices();
        let mut spec = machine.spec(cfg, &run_dir.path, overlay, base, devices);
        timings.mark("writable layer");
        let key = snapshot::key(&machine.qemu, &spec);
        let mut missing_snapshot = false;
        let mut boot_notice = None;
        let mut template = None;
        if host.snapshots {
            match snapshot::find(paths, &key) {
                snapshot::Found::Usable(t) => match holder::memory(host, &t)
                    .map_err(|e| e.to_string())
                    .and_then(|m| t.state_file().map(|s| (m, s)).map_err(|e| e.to_string()))
                {
                    Ok((memory, state)) => {
                        spec.restore = Some(Arc::new(state));
                        spec.memory = GuestMemory::CopyOnWrite(Arc::new(memory));
                        template = Some(t);
                    }
                    Err(e) => {
                        boot_notice = Some(format!(
                            "the boot snapshot {key} could not be used ({e}); booting normally"
                        ))
                    }
                },
                snapshot::Found::Missing => {}
                snapshot::Found::Discarded(why) => {
                    boot_notice = Some(format!(
                        "the boot snapshot {key} was removed ({why}); booting normally"
                    ))
                }
            }
            missing_snapshot = template.is_none();
            if !missing_snapshot {
                // Some 50 ms when no memory holder runs yet (it is started, loads the
                // template's memory and checks its digest).
                timings.mark("boot snapshot's memory");
            }
        }

        let mut me = ContainerVm::launch(&machine, &spec, run_dir, timings, id.clone())?;
        me.attachments = Some(attached);
        me.keeps_layer = cfg.layer.is_some();
        me.keep_console = host.keep_console.clone();
        let hello = match (me.come_up(cfg.boot_timeout).await, template) {
            (Ok(h), _) => h,
            (Err(e), Some(t)) => {
                // A snapshot that does not resume (a QEMU upgrade in place, a damaged
                // file) is removed, and this run boots normally. One that was only slow
                // (a loaded host) is kept for the next run.
                let slow = matches!(e, RunError::VmTimeout { .. });
                if !slow {
                    snapshot::discard(paths, &t);
                }
                spec.restore = None;
                spec.memory = GuestMemory::Private;
                missing_snapshot = true;
                let why = e.to_string().lines().next().unwrap_or("").to_string();
                let kept = if slow { "kept it" } else { "removed it" };
                boot_notice = Some(format!(
                        "the boot snapshot {key} could not be resumed ({why}); {kept} and booting normally"
                    ));
                let run_dir = me.run_dir.take().expect("the run directory is still held");
                let attached = me.attachments.take();
                me.kill().await;
                let timings = me.timings.clone();
                drop(me);
                me = ContainerVm::launch(&machine, &spec, run_dir, timings, id.clone())?;
                me.attachments = attached;
                me.keeps_layer = cfg.layer.is_some();
                me.keep_console = host.keep_console.clone();
                me.greet(cfg.boot_timeout).await?
            }
            (Err(e), None) => return Err(e),
        };
        me.boot_notice = boot_notice;
        me.missing_snapshot = missing_snapshot;
        me.guest_boot = Duration::from_nanos(hello.init_started_boottime_nanos);
        let init_ready = (hello
            .answered_boottime_nanos
            .saturating_sub(hello.init_started_boottime_nanos)) as f64
            / 1e6;
        let note = if me.restored {
            format!("resumed from boot snapshot {key}")
        } else {
            format!(
                "guest kernel booted in {:.1} ms, init ready {init_ready:.1} ms later",
                me.guest_boot.as_secs_f64() * 1e3,
            )
        };
        me.timings.mark_with("init answering", note);
        me.create_and_start(cfg, image_healthcheck, args, image_env, cwd, user)
            .await
    }

    /// A pod member's start: no VM of its own, but its sandbox's, reached through the
    /// sandbox's relay; then as any container's.
    async fn join_pod(
        host: &Host,
        cfg: &ContainerSpec,
        sandbox: &str,
        started: Instant,
        notify: Notify<'_>,
    ) -> Result<ContainerVm, RunError> {
        let paths = &host.paths;
        crate::pod::check_member(cfg)?;
        let link = crate::pod::PodLink::wait_for(paths, sandbox).await?;
        let gone = crate::pod::watch_sandbox(paths, sandbox);
        let id = cabin_base::random::id().map_err(io_err("naming the container"))?;
        let attached = Attachments::acquire(paths, cfg, &id, notify)?;
        let channel = agent::channel(crate::pod::agent_socket(paths, sandbox));
        let mut me = ContainerVm {
            id,
            vm: Vmm::Pod(PodVm {
                paths: paths.clone(),
                sandbox: sandbox.to_string(),
                link,
                gone,
            }),
            agent: agent::client(channel.clone()),
            channel,
            run_dir: None,
            timings: Timings::start_at(started),
            accel: accel::choose(cfg.accel),
            guest_boot: Duration::ZERO,
            restored: false,
            missing_snapshot: false,
            boot_notice: None,
            process: ProcessSettings::default(),
            healthcheck: None,
            exited: None,
            oom_kills_at_start: None,
            attachments: Some(attached),
            peers_watch: None,
            keeps_layer: false,
            keep_console: None,
        };
        me.greet(cfg.boot_timeout).await?;
        me.timings
            .mark_with("init answering", format!("the VM of pod {sandbox}"));
        // The whole command line, as containerd gives it: a directory has no image
        // defaults to merge with.
        let (args, env, cwd, user) = root::merge_spec(&root::ProcessDefaults::default(), cfg)?;
        me.create_and_start(cfg, None, args, env, cwd, user).await
    }

    /// The container on a VM whose cabin-init answers: its root file system mounted,
    /// the container created, its first process started.
    async fn create_and_start(
        mut self,
        cfg: &ContainerSpec,
        image_healthcheck: Option<crate::health::HealthCheck>,
        args: Vec<String>,
        image_env: Vec<String>,
        cwd: String,
        user: String,
    ) -> Result<ContainerVm, RunError> {
        let me = &mut self;
        let id = me.id.clone();
        let mut a = me.agent.clone();

        let rootfs = format!("/run/cabin/containers/{id}/rootfs");
        let t = cabin_proto::CALL_TIMEOUT;
        let (root, share_namespaces_of) = match &me.vm {
            // A pod member's root is a directory of the pod's share, bound in place.
            Vmm::Pod(pod) => {
                let RootSource::Dir(dir) = &cfg.root else {
                    return Err(RunError::Setup(
                        "a pod member's root file system must be a directory".into(),
                    ));
                };
                let source = crate::pod::guest_path(&pod.paths, &pod.sandbox, dir)?;
                let mount = MountRequest {
                    source,
                    target: rootfs.clone(),
                    fstype: String::new(),
                    options: vec!["bind".into()],
                    read_only: false,
                };
                (mount, pod.link.guest_container.clone())
            }
            Vmm::Own(_) => (root_mount(&rootfs), String::new()),
        };
        if cfg.pod == Some(crate::pod::PodRole::Sandbox) {
            me.guarded(agent::call(
                "Mount",
                t,
                a.mount(MountRequest {
                    source: crate::pod::SHARE_TAG.into(),
                    target: crate::pod::GUEST_SHARE.into(),
                    fstype: "9p".into(),
                    options: cabin_proto::ninep_mount_options(),
                    read_only: false,
                }),
            ))
            .await?;
        }
        me.guarded(agent::call("Mount", t, a.mount(root))).await?;
        let (network, mounts, hosts) = match &me.attachments {
            Some(a) => (a.network.clone(), a.mounts.clone(), a.hosts.clone()),
            None => (None, Vec::new(), Vec::new()),
        };
        let cpu_micros = cfg
            .cpus
            .filter(|c| c.fract() != 0.0)
            .map(|c| (c * 1e6) as u64)
            .unwrap_or(0);
        me.guarded(agent::call(
            "CreateContainer",
            t,
            a.create_container(CreateContainerRequest {
                container_id: id.clone(),
                rootfs,
                hostname: cfg.hostname_for(&id),
                resources: Some(Resources {
                    memory_bytes: cfg.memory_bytes.unwrap_or(0),
                    cpu_micros,
                    pids_limit: cfg.pids_limit.unwrap_or(0),
                }),
                network,
                mounts,
                read_only_root: cfg.read_only,
                hosts,
                share_namespaces_of,
                paths: (cfg.masked_paths.is_some() || cfg.readonly_paths.is_some()).then(|| {
                    cabin_proto::v1::PathRules {
                        masked: cfg.masked_paths.clone().unwrap_or_default(),
                        read_only: cfg.readonly_paths.clone().unwrap_or_default(),
                    }
                }),
            }),
        ))
        .await?;
        me.watch_peers();
        me.timings.mark("container created");
        let mut env = vec![format!("HOSTNAME={}", cfg.hostname_for(&id))];
        env.extend(image_env);
        me.process = ProcessSettings {
            env: env.clone(),
            cwd: cwd.clone(),
            user: user.clone(),
        };
        me.healthcheck = match &cfg.healthcheck {
            Some(c) if c.disabled() => None,
            Some(c) => Some(c.clone()),
            None => image_healthcheck.filter(|c| !c.disabled()),
        };
        if cfg.tty {
            // Before the image's and the user's variables, which may set their own.
            env.insert(1, "TERM=xterm".into());
        }
        let capabilities = cfg
            .capabilities
            .as_ref()
            .map(|c| c.numbers())
            .transpose()
            .map_err(|e| RunError::Setup(e.to_string()))?;
        let started = me
            .guarded(agent::call(
                "StartProcess",
                t,
                a.start_process(StartProcessRequest {
                    container_id: id.clone(),
                    process_id: "init".into(),
                    args,
                    env,
                    cwd,
                    user,
                    tty: cfg.tty,
                    tty_size: cfg.tty_size.map(|(rows, cols)| TtySize {
                        rows: rows as u32,
                        cols: cols as u32,
                    }),
                    rlimits: cfg
                        .rlimits
                        .iter()
                        .map(|r| Rlimit {
                            resource: r.name.clone(),
                            soft: r.soft,
                            hard: r.hard,
                        })
                        .collect(),
                    stdin: cfg.stdin,
                    init: cfg.init,
                    capabilities,
                    no_new_privileges: cfg.no_new_privileges,
                }),
            ))
            .await?;
        me.timings.mark_with(
            "process started",
            format!("pid {} in the guest", started.pid),
        );
        Ok(self)
    }

    /// The connection to the VM's cabin-init (a pod's sandbox relays it to its members).
    pub fn agent_channel(&self) -> tonic::transport::Channel {
        self.channel.clone()
    }

    /// The VM's run directory.
    fn run_path(&self) -> PathBuf {
        self.run_dir
            .as_ref()
            .map(|d| d.path.clone())
            .unwrap_or_default()
    }

    /// Starts the VM for `spec` (booting, or resuming `spec.restore`).
    fn launch(
        machine: &Machine,
        spec: &MicroVmSpec,
        run_dir: RunDir,
        timings: Timings,
        id: String,
    ) -> Result<ContainerVm, RunError> {
        let oom_kills_at_start = cabin_base::memory::oom_kills();
        let vm = machine.qemu.start(spec).map_err(io_err("starting QEMU"))?;
        run_dir
            .record_vmm_pid(vm.pid())
            .map_err(io_err("recording QEMU's pid"))?;
        let channel = agent::channel(vm.agent_socket());
        let mut me = ContainerVm {
            id,
            vm: Vmm::Own(Box::new(vm)),
            agent: agent::client(channel.clone()),
            channel,
            run_dir: Some(run_dir),
            timings,
            accel: machine.accel.clone(),
            guest_boot: Duration::ZERO,
            restored: spec.restore.is_some(),
            missing_snapshot: false,
            boot_notice: None,
            process: ProcessSettings::default(),
            healthcheck: None,
            exited: None,
            oom_kills_at_start,
            attachments: None,
            peers_watch: None,
            keeps_layer: false,
            keep_console: None,
        };
        me.timings.mark("QEMU spawned");
        Ok(me)
    }

    /// The VMM's process id on the host.
    pub fn vmm_pid(&self) -> u32 {
        match &self.vm {
            Vmm::Own(qemu) => qemu.pid(),
            Vmm::Pod(pod) => pod.link.vmm_pid,
        }
    }

    /// Kills the VM's QEMU at once (a pod member's VM is not its to kill).
    async fn kill(&mut self) {
        if let Vmm::Own(qemu) = &mut self.vm {
            let _ = qemu.kill().await;
        }
    }

    /// Loads the saved state of a VM resumed from a template, then greets cabin-init.
    async fn come_up(&mut self, deadline: Duration) -> Result<HelloResponse, RunError> {
        if let (true, Vmm::Own(qemu)) = (self.restored, &mut self.vm) {
            match tokio::time::timeout(deadline, qemu.resume()).await {
                Ok(Ok(())) => self.timings.mark("saved state loaded"),
                Ok(Err(e)) => {
                    return Err(RunError::Vm {
                        message: e.to_string(),
                        console: qemu.console_excerpt(),
                    })
                }
                Err(_) => {
                    return Err(RunError::VmTimeout {
                        message: "the saved state did not load in time".into(),
                        console: qemu.console_excerpt(),
                    })
                }
            }
        }
        self.greet(deadline).await
    }

    /// Waits for cabin-init's first answer: sets the clock, reseeds the guest's random
    /// number generator and checks the protocol version.
    async fn greet(&mut self, deadline: Duration) -> Result<HelloResponse, RunError> {
        let host_now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i64;
        let mut a = self.agent.clone();
        let hello = self
            .guarded(agent::call(
                "Hello",
                deadline,
                a.hello(HelloRequest {
                    protocol_version: cabin_proto::PROTOCOL_VERSION,
                    host_time_unix_nanos: host_now,
                    entropy: fresh_entropy()?,
                }),
            ))
            .await;
        let hello = match hello {
            Ok(h) => h,
            Err(RunError::Deadline(m)) => {
                let console = self.console_excerpt();
                return Err(RunError::VmTimeout {
                    message: format!(
                        "{m} (boot deadline {} s; raise it with --boot-timeout); the VM was stopped",
                        deadline.as_secs()
                    ),
                    console,
                });
            }
            Err(e) => return Err(e),
        };
        if hello.protocol_version < cabin_proto::PROTOCOL_VERSION {
            return Err(RunError::Setup(format!(
                "the guest's cabin-init speaks protocol version {}, this cabin needs {}: rebuild it with scripts/build-init.sh",
                hello.protocol_version,
                cabin_proto::PROTOCOL_VERSION
            )));
        }
        Ok(hello)
    }

    /// Starts killing the VM when nothing of it is kept or held on the host (no volume,
    /// no writable layer that outlives it, no published port, no address on a bridge),
    /// without waiting for QEMU to be gone: the container's end can be told while its
    /// memory is being freed. [`ContainerVm::teardown`] finishes. False when the VM
    /// needs the whole teardown first.
    pub fn kill_if_throwaway(&mut self) -> bool {
        let holds_host = |a: &Attachments| a.ip().is_some() || !a.published.is_empty();
        let throwaway = !self.keeps_data() && !self.attachments.as_ref().is_some_and(holds_host);
        match (&self.exited, &mut self.vm) {
            (None, Vmm::Own(qemu)) if throwaway => {
                qemu.start_kill();
                true
            }
            _ => false,
        }
    }

    /// Whether something of this VM outlives it (volumes, a kept writable layer), so
    /// that the guest must flush before it is killed.
    fn keeps_data(&self) -> bool {
        self.keeps_layer || self.attachments.as_ref().is_some_and(|a| a.has_volumes())
    }

    /// The container's own address (bridge network), and its published ports.
    pub fn network_info(&self) -> (Option<String>, Vec<cabin_vmm::PortForward>) {
        match &self.attachments {
            Some(a) => (a.ip(), a.published.clone()),
            None => (None, Vec::new()),
        }
    }

    /// Its gateway on a bridge network.
    pub fn gateway(&self) -> Option<String> {
        let ep = self.attachments.as_ref()?.endpoint.as_ref()?;
        Some(ep.net().gateway().to_string())
    }

    /// On a bridge, peers come and go: whenever the set changes, the container's
    /// /etc/hosts gets the new list (checked once a second; a stat of one directory).
    fn watch_peers(&mut self) {
        let Some(ep) = self.attachments.as_ref().and_then(|a| a.endpoint.as_ref()) else {
            return;
        };
        let state = cabin_net::bridge::PeerWatch::new(ep);
        let gateway = ep.net().gateway().to_string();
        let mut agent = self.agent.clone();
        let id = self.id.clone();
        self.peers_watch = Some(tokio::spawn(async move {
            let mut seen = state.generation();
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = state.generation();
                if now == seen {
                    continue;
                }
                seen = now;
                let _ = agent
                    .set_hosts(cabin_proto::v1::SetHostsRequest {
                        container_id: id.clone(),
                        hosts: crate::attachments::with_host_gateway(state.peers(), &gateway),
                    })
                    .await;
            }
        }));
    }

    /// Waits for the container's process to exit.
    /// The VM's pauses for a full host disk and its resumptions, noticed while
    /// something waits for the VM (see [`cabin_vmm::qemu::DiskPause`]).
    pub fn disk_pauses(
        &mut self,
    ) -> tokio::sync::mpsc::UnboundedReceiver<cabin_vmm::qemu::DiskPause> {
        match &mut self.vm {
            Vmm::Own(qemu) => qemu.disk_pauses(),
            // The sandbox's supervisor hears of its VM's pauses.
            Vmm::Pod(_) => tokio::sync::mpsc::unbounded_channel().1,
        }
    }

    pub async fn wait(&mut self) -> Result<ExitStatus, RunError> {
        let mut a = self.agent.clone();
        let me = self.process_ref();
        let r = self.guarded(async move { a.wait(me).await }).await?;
        self.timings.mark("process exited");
        Ok(r.into_inner())
    }

    /// Stops the VM and removes everything the run created. Safe to call after the VM died.
    pub async fn teardown(mut self) {
        if let Some(w) = self.peers_watch.take() {
            w.abort();
        }
        let keeps_data = self.keeps_data();
        if let (None, Vmm::Pod(_)) = (self.exited, &self.vm) {
            // The pod's VM goes on: only the container goes, its processes killed,
            // its files unmounted (bounded: a hung guest must not hold us).
            let mut a = self.agent.clone();
            let _ = tokio::time::timeout(
                Duration::from_secs(15),
                a.remove_container(cabin_proto::v1::ContainerRef {
                    container_id: self.id.clone(),
                }),
            )
            .await;
        } else if let (None, Vmm::Own(qemu)) = (self.exited, &mut self.vm) {
            // Volumes keep their data: what the guest still holds in its page cache
            // goes to their disks first (bounded: a hung guest must not hold us).
            if keeps_data {
                let mut a = self.agent.clone();
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    a.sync(cabin_proto::v1::Empty {}),
                )
                .await;
                // QEMU writes a qcow2 layer's cluster tables when it closes the disk:
                // a quit, not a kill (which would lose clusters allocated since the
                // last flush QEMU saw).
                let _ = qemu.stop(Duration::from_secs(5)).await;
            } else {
                // The container's writable layer dies with the VM, so there is
                // nothing to flush or shut down cleanly: killing QEMU is both safe and
                // the fastest way down (a QMP quit costs a connection, a greeting and
                // a negotiation first).
                let _ = qemu.kill().await;
            }
        }
        if let Some(rd) = self.run_dir.take() {
            // Developers' aid (bench/trace.sh): keep the guest console of the last run.
            if let Some(keep) = &self.keep_console {
                let _ = std::fs::copy(rd.path.join("console.log"), keep);
            }
            let _ = rd.remove();
        }
        // Leaves the bridge and frees the volumes, now that the VM is gone.
        drop(self.attachments.take());
        self.timings.mark("VM torn down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_is_sized_for_the_container() {
        let mut c = ContainerSpec::new(RootSource::Dir("/x".into()), vec!["true".into()]);
        assert_eq!((c.vcpus(), c.vm_memory_mib()), (1, DEFAULT_VM_MEMORY_MIB));
        c.cpus = Some(1.5);
        c.memory_bytes = Some(256 << 20);
        assert_eq!(c.vcpus(), 2);
        assert_eq!(c.vm_memory_mib(), 256 + VM_MEMORY_OVERHEAD_MIB);
    }

    #[test]
    fn host_and_guest_agree_on_names() {
        assert_eq!(cabin_vmm::qemu::AGENT_PORT_NAME, cabin_proto::PORT_NAME);
        assert_eq!(
            cabin_vmm::qemu::user_net::BOOT_ARG,
            cabin_proto::BOOT_NETWORK_ARG
        );
    }
}
