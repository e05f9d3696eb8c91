//! cabin-init: PID 1 of every cabin guest.
//!
//! It mounts the kernel's filesystems, finds the virtio-serial port the host talks to,
//! and serves the agent protocol on it. It touches no disk until the host asks.

mod block;
mod clock;
mod container;
mod copy;
mod entropy;
mod inroot;
mod launch;
mod mounts;
mod network;
mod pid1;
mod port;
mod reaper;
mod service;
mod top;
mod trace;
mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cabin_proto::v1::agent_server::AgentServer;
use tokio::signal::unix::{signal, SignalKind};

fn log(msg: &str) {
    // The console is a slow serial port (and the host keeps its log): errors only.
    eprintln!("cabin-init: {msg}");
}

/// The initramfs root cannot be pivot_root'ed away, and containers are started with
/// pivot_root. So init first moves itself onto a tmpfs root, as switch_root does: mount a
/// tmpfs, move it over "/", chroot into it. The init binary stays mapped from the old root.
fn leave_initramfs() -> Result<(), String> {
    let new_root = Path::new("/sysroot");
    std::fs::create_dir_all(new_root).map_err(|e| format!("mkdir /sysroot: {e}"))?;
    container::mount("tmpfs", new_root, "tmpfs", 0, "mode=0755").map_err(|e| e.to_string())?;
    for d in ["dev", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(new_root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    std::env::set_current_dir(new_root).map_err(|e| e.to_string())?;
    container::mount(".", Path::new("/"), "", libc::MS_MOVE, "").map_err(|e| e.to_string())?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| e.to_string())
}

fn mount_basics() {
    let nsne = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let mounts: [(&str, &str, &str, libc::c_ulong, &str); 6] = [
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755"),
        ("proc", "/proc", "proc", nsne, ""),
        ("sysfs", "/sys", "sysfs", nsne, ""),
        // Not favordynmods: it costs an RCU grace period at mount (about 11 ms under
        // TCG), and containers are cloned straight into their cgroups, so the cgroup
        // migrations it speeds up never happen on a start's path.
        ("cgroup2", "/sys/fs/cgroup", "cgroup2", nsne, "nsdelegate"),
        (
            "tmpfs",
            "/run",
            "tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            "mode=0755",
        ),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            libc::MS_NOSUID | libc::MS_NOEXEC,
            "mode=0620,ptmxmode=0666",
        ),
    ];
    for (source, target, fstype, flags, data) in mounts {
        let _ = std::fs::create_dir_all(target);
        if let Err(e) = container::mount(source, Path::new(target), fstype, flags, data) {
            log(&e.to_string());
        }
    }
}

/// Ends the VM. QEMU runs with -no-reboot, so a reboot request makes it exit; microvm
/// without ACPI has no power-off path.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    std::process::exit(1)
}

async fn serve(init_started: u64) -> Result<(), String> {
    let reaper = Arc::new(reaper::Reaper::default());
    let mut sigchld = signal(SignalKind::child()).map_err(|e| format!("SIGCHLD: {e}"))?;
    let r = reaper.clone();
    tokio::spawn(async move {
        loop {
            r.reap();
            sigchld.recv().await;
        }
    });

    let path = port::find(cabin_proto::PORT_NAME).map_err(|e| e.to_string())?;
    let fd = port::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    // The host connects before the guest boots, so this wait is normally zero.
    while !port::host_connected(&fd) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    trace::mark("host connected");
    let stream = port::PortStream::new(fd).map_err(|e| e.to_string())?;
    let service = AgentServer::new(service::AgentService::new(init_started, reaper))
        .max_decoding_message_size(cabin_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(cabin_proto::MAX_MESSAGE_BYTES);
    // One connection for the life of the VM, served by hyper's HTTP/2 directly: tonic's
    // transport server and its router would add code that every boot pays to run (and,
    // under TCG, to translate) for no use here.
    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(service),
        )
        .await
        .map_err(|e| format!("agent connection: {e}"))
}

fn main() {
    let init_started = clock::boottime_nanos();
    // The same binary serves as helpers, told apart by the name they are run under.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if argv0 == copy::HELPER_ARGV0 {
        copy::helper_main();
    }
    if argv0 == pid1::ARGV0 {
        pid1::main();
    }
    // The warm-up of a pooled VM runs this binary from its scratch disk under this
    // name: a process started and ended through every step a container's takes.
    if std::path::Path::new(&argv0).file_name() == Some(cabin_proto::WARM_UP_ARGV0.as_ref()) {
        std::process::exit(0);
    }
    let pid1 = std::process::id() == 1;
    if pid1 {
        if let Err(e) = leave_initramfs() {
            log(&format!("moving off the initramfs: {e}"));
        }
        mount_basics();
        // Containers share the VM's network namespace (unless they get their own).
        if let Err(e) = network::loopback_up() {
            log(&format!("loopback interface: {e}"));
        }
        pid1::remember_binary();
        // Before the host connects: a boot snapshot is taken while init waits for it.
        if let Err(e) = block::scan() {
            log(&format!("looking up the disks: {e}"));
        }
        if let Err(e) = network::scan() {
            log(&format!("looking up the network card: {e}"));
        }
        if let Err(e) = container::prepare_spares() {
            log(&format!("preparing a container's cgroup and /dev: {e}"));
        }
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if let Err(e) = network::configure_at_boot(&cmdline) {
            log(&format!("configuring the network card: {e}"));
        }
        trace::init(&cmdline);
        trace::mark("basics mounted");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log(&format!("tokio runtime: {e}"));
            power_off();
        }
    };
    if let Err(e) = runtime.block_on(serve(init_started)) {
        log(&e);
    }
    if pid1 {
        power_off();
    }
}
