//! Full VMs on QEMU: a `q35` PC with UEFI firmware (OVMF, its variable store per VM),
//! PCI virtio devices, a graphics adapter with USB keyboard and tablet, and a VNC
//! server on the host's loopback. What Lume gives a Linux guest, on Linux.

use std::io;
use std::path::PathBuf;
use std::process::Child;

use crate::confine::{Confinement, Needs, ShareAccess};
use crate::qemu::Handoff;
use crate::{Accel, DiskFormat, NetBackend, ShareSpec};

#[derive(Debug, Clone)]
pub struct FullVmSpec {
    pub name: String,
    pub cpus: u32,
    pub memory_mib: u64,
    /// SMBIOS system UUID: the guest's machine identity.
    pub uuid: Option<String>,
    pub mac: String,
    pub boot: Boot,
    pub disk: PathBuf,
    /// More read-write disks (`--disk`).
    pub extra_disks: Vec<PathBuf>,
    /// A read-only installer image, booted first (`--mount`).
    pub iso: Option<PathBuf>,
    pub display: (u32, u32),
    /// VNC on 127.0.0.1 (password set over QMP once QEMU runs).
    pub vnc: Vnc,
    pub nic: NetBackend,
    pub shares: Vec<ShareSpec>,
    pub accel: Accel,
    /// The QMP socket lives here.
    pub run_dir: PathBuf,
    /// The serial console's output is appended here (the caller bounds its size: it is
    /// the guest's to fill).
    pub console_log: PathBuf,
    /// QEMU waits for a saved state (`-incoming defer`, loaded with
    /// [`crate::migration::load`]) instead of booting.
    pub incoming: bool,
}

/// How the VM starts.
#[derive(Debug, Clone)]
pub enum Boot {
    /// UEFI firmware (OVMF) with the VM's own variable store, which it writes.
    Uefi { code: PathBuf, nvram: PathBuf },
    /// A Linux kernel started directly with its command line (by QEMU's default BIOS):
    /// no firmware set-up, no boot loader, the root file system on the first disk.
    Kernel {
        kernel: PathBuf,
        command_line: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vnc {
    Off,
    /// The first free port from 5900 up.
    Auto,
    /// This port (5900 and up: QEMU numbers VNC displays from there).
    Port(u16),
}

/// The lowest port QEMU's VNC server can listen on.
pub const VNC_BASE_PORT: u16 = 5900;

// The descriptor numbers what cabin opens gets in QEMU (see qemu.rs).
const TAP_FD: i32 = 3;
const SERIAL_FD: i32 = 4;
const QMP_FD: i32 = 5;
const MONITOR_FD: i32 = 6;
const CONSOLE_FD: i32 = 7;
const KERNEL_FD: i32 = 8;
const CODE_FD: i32 = 9;
const NVRAM_FD: i32 = 10;
const ISO_FD: i32 = 11;
/// Disk `i` (the VM's own first, then `--disk`s) is `DISK_FD + i`.
const DISK_FD: i32 = 12;

/// The unix socket of a full VM's serial console, in its run directory: one terminal at
/// a time reads what the guest writes and types into it.
pub fn serial_socket(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("serial.sock")
}

/// The unix socket of a full VM's second QMP monitor (the runner holds the first).
pub fn monitor_socket(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("monitor.sock")
}

/// The QEMU command line for a full VM (without the binary).
pub fn command_line(spec: &FullVmSpec) -> Vec<String> {
    let mut a: Vec<String> = Vec::new();
    let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
    push(&["-nodefaults", "-no-user-config", "-name", &spec.name]);
    let machine = crate::qemu::machine_args(spec.accel, spec.cpus, spec.memory_mib);
    match &spec.boot {
        // The firmware and its variable store are flash devices backed by block nodes.
        Boot::Uefi { .. } => {
            push(&[
                "-machine",
                "q35,smm=off,vmport=off,pflash0=code,pflash1=vars",
            ]);
            let mut flash =
                crate::qemu::blockdev_args("code", CODE_FD, DiskFormat::Raw, true, false, None);
            flash.extend(crate::qemu::blockdev_args(
                "vars",
                NVRAM_FD,
                DiskFormat::Raw,
                false,
                false,
                None,
            ));
            push(&flash.iter().map(String::as_str).collect::<Vec<_>>());
        }
        Boot::Kernel { command_line, .. } => {
            push(&["-machine", "q35,smm=off,vmport=off"]);
            push(&[
                "-kernel",
                &crate::qemu::fd_path(KERNEL_FD),
                "-append",
                command_line,
            ]);
        }
    }
    push(&machine.iter().map(String::as_str).collect::<Vec<_>>());
    if let Some(uuid) = &spec.uuid {
        push(&["-uuid", uuid]);
    }
    // The installer first, then the VM's own disk.
    if spec.iso.is_some() {
        let mut cd = crate::qemu::blockdev_args("cd0", ISO_FD, DiskFormat::Raw, true, false, None);
        cd.extend([
            "-device".to_string(),
            "ide-cd,drive=cd0,bus=ide.0,bootindex=0".into(),
        ]);
        push(&cd.iter().map(String::as_str).collect::<Vec<_>>());
    }
    for i in 0..1 + spec.extra_disks.len() {
        let node = format!("disk{i}");
        let mut disk = crate::qemu::blockdev_args(
            &node,
            DISK_FD + i as i32,
            DiskFormat::Raw,
            false,
            false,
            None,
        );
        disk.extend([
            "-device".to_string(),
            if i == 0 {
                format!("virtio-blk-pci,drive={node},write-cache=on,bootindex=1")
            } else {
                format!("virtio-blk-pci,drive={node},write-cache=on")
            },
        ]);
        push(&disk.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let (w, h) = spec.display;
    push(&[
        "-device",
        &format!("virtio-vga,xres={w},yres={h}"),
        "-device",
        "qemu-xhci,id=usb",
        "-device",
        "usb-kbd,bus=usb.0",
        "-device",
        "usb-tablet,bus=usb.0",
    ]);
    match spec.vnc {
        // The first free display from 5900 up; the port is read back over QMP.
        Vnc::Auto => push(&["-vnc", "127.0.0.1:0,to=99,password=on"]),
        Vnc::Port(port) => push(&[
            "-vnc",
            &format!(
                "127.0.0.1:{},password=on",
                port.saturating_sub(VNC_BASE_PORT)
            ),
        ]),
        Vnc::Off => push(&["-display", "none"]),
    }
    push(&[
        "-netdev",
        &crate::qemu::netdev(&spec.nic, TAP_FD),
        "-device",
        &format!("virtio-net-pci,netdev=net0,mac={}", spec.mac),
    ]);
    // Free page reporting: pages the guest frees go back to the host (QEMU drops them
    // from its anonymous RAM) a few seconds later, in 2 MiB blocks and up.
    push(&[
        "-device",
        "virtio-rng-pci",
        "-device",
        "virtio-balloon-pci,free-page-reporting=on",
    ]);
    // A new generation ID at every start, resumed ones too: a Linux guest reseeds its
    // random number generator when it changes, so a resumed VM never repeats the
    // random numbers it would have drawn before it was suspended.
    push(&["-device", "vmgenid,guid=auto"]);
    let shares = crate::qemu::share_args(&spec.shares, "virtio-9p-pci");
    push(&shares.iter().map(String::as_str).collect::<Vec<_>>());
    // The serial console is a socket a terminal attaches to (the web console), and
    // everything the guest writes is also appended to the console log (`vm logs`),
    // whether or not a terminal is attached. cabin binds the sockets and opens the log.
    push(&[
        "-add-fd",
        &format!("fd={CONSOLE_FD},set={CONSOLE_FD}"),
        "-chardev",
        &format!(
            "socket,id=serial,fd={SERIAL_FD},server=on,wait=off,logfile=/dev/fdset/{CONSOLE_FD},logappend=on"
        ),
        "-serial",
        "chardev:serial",
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qmp,fd={QMP_FD},server=on,wait=off"),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    // A second QMP monitor, which the runner leaves free: for other processes that ask
    // the VM something while it runs (a screendump of what it shows, its status).
    push(&[
        "-chardev",
        &format!("socket,id=monitor,fd={MONITOR_FD},server=on,wait=off"),
        "-mon",
        "chardev=monitor,mode=control",
    ]);
    if spec.incoming {
        push(&["-incoming", "defer"]);
    }
    a
}

/// The VM's shape: its command line without what may differ between a run and the
/// resumption of its saved state (VNC, the network's host side, the kernel command
/// line the guest has already read, whether it resumes), and without where its files
/// are, its name and its MAC address (the state carries the card's own), so that a
/// state stays loadable in a VM pulled elsewhere. Two specs of one shape give the guest
/// the same machine and devices, so a state saved under one loads under the other.
pub fn shape(spec: &FullVmSpec) -> Vec<String> {
    let mut canonical = spec.clone();
    canonical.name = "vm".into();
    canonical.mac = "02:00:00:00:00:00".into();
    canonical.vnc = Vnc::Off;
    canonical.incoming = false;
    canonical.run_dir = PathBuf::from("/run-dir");
    canonical.console_log = PathBuf::from("/console.log");
    canonical.disk = PathBuf::from("/disk.img");
    for (i, d) in canonical.extra_disks.iter_mut().enumerate() {
        *d = PathBuf::from(format!("/disk{i}.img"));
    }
    if let Some(iso) = &mut canonical.iso {
        *iso = PathBuf::from("/installer.iso");
    }
    match &mut canonical.boot {
        Boot::Kernel {
            command_line,
            kernel,
        } => {
            command_line.clear();
            *kernel = PathBuf::from("/kernel");
        }
        Boot::Uefi { code, nvram } => {
            *code = PathBuf::from("/firmware.fd");
            *nvram = PathBuf::from("/nvram.bin");
        }
    }
    match &mut canonical.nic {
        NetBackend::User { forwards } => forwards.clear(),
        NetBackend::Tap(fd) => *fd = None,
    }
    for (i, s) in canonical.shares.iter_mut().enumerate() {
        s.path = PathBuf::from(format!("/share{i}"));
    }
    command_line(&canonical)
}

/// The unix socket of a full VM's QMP monitor (the runner's), in its run directory.
pub fn qmp_socket(run_dir: &std::path::Path) -> PathBuf {
    run_dir.join("qmp.sock")
}

/// A full VM's QEMU, and the VM user it runs as (held until it has been reaped).
pub struct FullVm {
    pub child: Child,
    pub confinement: Option<Confinement>,
}

/// Starts QEMU for `spec`, its sockets bound and its files opened by cabin; it dies
/// with the calling process.
pub fn spawn(binary: &std::path::Path, spec: &FullVmSpec) -> io::Result<FullVm> {
    let confinement = Confinement::for_vm(
        &crate::qemu::run_dir_name(&spec.run_dir),
        Needs {
            shares: ShareAccess::of(&spec.shares),
            low_port: crate::qemu::low_port(Some(&spec.nic)),
            kvm: spec.accel == Accel::Kvm,
        },
    )?;
    let confined = confinement.is_some();
    let mut fds = Handoff::default();
    if let Some(fd) = crate::qemu::tap_fd(&spec.nic)? {
        fds.lend(fd, TAP_FD);
    }
    fds.give(
        crate::qemu::listen(&serial_socket(&spec.run_dir))?.into(),
        SERIAL_FD,
    );
    fds.give(
        crate::qemu::listen(&qmp_socket(&spec.run_dir))?.into(),
        QMP_FD,
    );
    fds.give(
        crate::qemu::listen(&monitor_socket(&spec.run_dir))?.into(),
        MONITOR_FD,
    );
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&spec.console_log)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("opening {}: {e}", spec.console_log.display()),
            )
        })?;
    fds.give(log.into(), CONSOLE_FD);
    match &spec.boot {
        Boot::Uefi { code, nvram } => {
            fds.open(code, false, CODE_FD)?;
            fds.open(nvram, true, NVRAM_FD)?;
        }
        Boot::Kernel { kernel, .. } => fds.open_for_path(kernel, KERNEL_FD, confined)?,
    }
    if let Some(iso) = &spec.iso {
        fds.open(iso, false, ISO_FD)?;
    }
    for (i, d) in std::iter::once(&spec.disk)
        .chain(spec.extra_disks.iter())
        .enumerate()
    {
        fds.open(d, true, DISK_FD + i as i32)?;
    }
    let child = crate::qemu::spawn_qemu(binary, command_line(spec), &fds, confinement.as_ref())?;
    Ok(FullVm { child, confinement })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_vm_is_a_uefi_pc_with_a_display_and_vnc() {
        let spec = FullVmSpec {
            name: "web".into(),
            cpus: 2,
            memory_mib: 2048,
            uuid: Some("00000000-0000-0000-0000-000000000001".into()),
            mac: "52:54:00:12:34:56".into(),
            boot: Boot::Uefi {
                code: "/usr/share/OVMF/OVMF_CODE_4M.fd".into(),
                nvram: "/vms/web/nvram.bin".into(),
            },
            disk: "/vms/web/disk.img".into(),
            extra_disks: vec!["/data/extra.img".into()],
            iso: Some("/isos/install.iso".into()),
            display: (1280, 800),
            vnc: Vnc::Auto,
            nic: NetBackend::User { forwards: vec![] },
            shares: vec![],
            accel: Accel::Tcg,
            run_dir: "/run/x".into(),
            console_log: "/vms/web/console.log".into(),
            incoming: false,
        };
        let a = command_line(&spec).join(" ");
        assert!(a.contains("-machine q35"));
        // Every file is a descriptor cabin opened: no path of the VM's reaches QEMU.
        assert!(
            !a.contains("/vms/") && !a.contains("/data/") && !a.contains("/isos/"),
            "{a}"
        );
        assert!(a.contains("q35,smm=off,vmport=off,pflash0=code,pflash1=vars"));
        assert!(a.contains(&format!(
            "driver=file,node-name=code-file,filename=/dev/fdset/{CODE_FD},read-only=on"
        )));
        assert!(a.contains(&format!(
            "driver=file,node-name=vars-file,filename=/dev/fdset/{NVRAM_FD},read-only=off"
        )));
        assert!(a.contains("ide-cd,drive=cd0,bus=ide.0,bootindex=0"));
        assert!(a.contains("virtio-blk-pci,drive=disk0,write-cache=on,bootindex=1"));
        assert!(a.contains(&format!("filename=/dev/fdset/{}", DISK_FD + 1)));
        assert!(a.contains("virtio-vga,xres=1280,yres=800"));
        assert!(a.contains("usb-tablet"));
        assert!(a.contains("-vnc 127.0.0.1:0,to=99,password=on"));
        assert!(a.contains("virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"));
        assert!(a.contains("-uuid 00000000-0000-0000-0000-000000000001"));
        assert!(a.contains(&format!(
            "socket,id=serial,fd={SERIAL_FD},server=on,wait=off,logfile=/dev/fdset/{CONSOLE_FD},logappend=on"
        )));
        assert!(a.contains(&format!(
            "socket,id=monitor,fd={MONITOR_FD},server=on,wait=off"
        )));

        let direct = FullVmSpec {
            boot: Boot::Kernel {
                kernel: "/vms/web/vmlinuz".into(),
                command_line: "root=/dev/vda ro".into(),
            },
            iso: None,
            vnc: Vnc::Port(5905),
            ..spec
        };
        let a = command_line(&direct);
        let joined = a.join(" ");
        assert!(!joined.contains("pflash"), "{joined}");
        let at = a.iter().position(|x| x == "-append").unwrap();
        assert_eq!(
            a[at + 1],
            "root=/dev/vda ro",
            "the command line is one argument"
        );
        assert!(joined.contains(&format!("-kernel /proc/self/fd/{KERNEL_FD}")));
        assert!(joined.contains("-vnc 127.0.0.1:5,password=on"), "{joined}");
        assert!(joined.contains("vmgenid,guid=auto"), "{joined}");
        assert!(joined.contains("virtio-balloon-pci,free-page-reporting=on"));
        assert!(!joined.contains("-incoming"), "{joined}");

        // A resumption waits for its state, and has the shape of the run it resumes
        // whatever its VNC, its kernel command line or its network's host side.
        let resumed = FullVmSpec {
            incoming: true,
            vnc: Vnc::Off,
            boot: Boot::Kernel {
                kernel: "/vms/web/vmlinuz".into(),
                command_line: "root=/dev/vda ro ip=10.0.0.9".into(),
            },
            nic: NetBackend::User {
                forwards: vec![crate::PortForward {
                    protocol: crate::Protocol::Tcp,
                    host_ip: std::net::Ipv4Addr::LOCALHOST,
                    host_port: 2222,
                    guest_port: 22,
                }],
            },
            ..direct.clone()
        };
        assert!(command_line(&resumed)
            .join(" ")
            .ends_with("-incoming defer"));
        assert_eq!(shape(&resumed), shape(&direct));
        let bigger = FullVmSpec {
            memory_mib: 4096,
            ..direct.clone()
        };
        assert_ne!(shape(&bigger), shape(&direct));
        // Pulled elsewhere: another name, directory and MAC, the same shape; another
        // machine identity is not.
        let elsewhere = FullVmSpec {
            name: "copy".into(),
            mac: "02:11:22:33:44:55".into(),
            disk: "/other/vms/copy/disk.img".into(),
            boot: Boot::Kernel {
                kernel: "/other/vms/copy/vmlinuz".into(),
                command_line: "root=/dev/vda ro".into(),
            },
            ..direct.clone()
        };
        assert_eq!(shape(&elsewhere), shape(&direct));
        let other_uuid = FullVmSpec {
            uuid: Some("6f0b7a1e-0000-4000-8000-000000000001".into()),
            ..direct.clone()
        };
        assert_ne!(shape(&other_uuid), shape(&direct));
    }
}
