//! Full VMs on QEMU: a `q35` PC with UEFI firmware (OVMF, its variable store per VM),
//! PCI virtio devices, a graphics adapter with USB keyboard and tablet, and a VNC
//! server on the host's loopback. What Lume gives a Linux guest, on Linux.

use std::io;
use std::path::PathBuf;
use std::process::Child;

use crate::{Accel, NetBackend, ShareSpec};

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

const TAP_FD: i32 = 3;

use crate::qemu::qemu_escape as escape;

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
    push(&["-machine", "q35,smm=off,vmport=off"]);
    let machine = crate::qemu::machine_args(spec.accel, spec.cpus, spec.memory_mib);
    push(&machine.iter().map(String::as_str).collect::<Vec<_>>());
    if let Some(uuid) = &spec.uuid {
        push(&["-uuid", uuid]);
    }
    match &spec.boot {
        Boot::Uefi { code, nvram } => push(&[
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,readonly=on,file={}",
                escape(&code.to_string_lossy())
            ),
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=1,file={}",
                escape(&nvram.to_string_lossy())
            ),
        ]),
        Boot::Kernel {
            kernel,
            command_line,
        } => push(&[
            "-kernel",
            &kernel.to_string_lossy(),
            "-append",
            command_line,
        ]),
    }
    // The installer first, then the VM's own disk.
    if let Some(iso) = &spec.iso {
        push(&[
            "-drive",
            &format!(
                "if=none,id=cd0,media=cdrom,readonly=on,file={}",
                escape(&iso.to_string_lossy())
            ),
            "-device",
            "ide-cd,drive=cd0,bus=ide.0,bootindex=0",
        ]);
    }
    for (i, d) in std::iter::once(&spec.disk)
        .chain(spec.extra_disks.iter())
        .enumerate()
    {
        push(&[
            "-drive",
            &format!(
                "if=none,id=disk{i},format=raw,cache=writeback,discard=unmap,file={}",
                escape(&d.to_string_lossy())
            ),
            "-device",
            &if i == 0 {
                format!("virtio-blk-pci,drive=disk{i},bootindex=1")
            } else {
                format!("virtio-blk-pci,drive=disk{i}")
            },
        ]);
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
    push(&["-device", "virtio-rng-pci", "-device", "virtio-balloon-pci"]);
    let shares = crate::qemu::share_args(&spec.shares, "virtio-9p-pci");
    push(&shares.iter().map(String::as_str).collect::<Vec<_>>());
    // The serial console is a socket a terminal attaches to (the web console), and
    // everything the guest writes is also appended to the console log (`vm logs`),
    // whether or not a terminal is attached.
    push(&[
        "-chardev",
        &format!(
            "socket,id=serial,path={},server=on,wait=off,logfile={},logappend=on",
            escape(&serial_socket(&spec.run_dir).to_string_lossy()),
            escape(&spec.console_log.to_string_lossy())
        ),
        "-serial",
        "chardev:serial",
    ]);
    let qmp = spec.run_dir.join("qmp.sock");
    push(&[
        "-chardev",
        &format!(
            "socket,id=qmp,path={},server=on,wait=off",
            escape(&qmp.to_string_lossy())
        ),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    // A second QMP monitor, which the runner leaves free: for other processes that ask
    // the VM something while it runs (a screendump of what it shows, its status).
    let monitor = monitor_socket(&spec.run_dir);
    push(&[
        "-chardev",
        &format!(
            "socket,id=monitor,path={},server=on,wait=off",
            escape(&monitor.to_string_lossy())
        ),
        "-mon",
        "chardev=monitor,mode=control",
    ]);
    a
}

/// Starts QEMU for `spec`; it dies with the calling process.
pub fn spawn(binary: &std::path::Path, spec: &FullVmSpec) -> io::Result<Child> {
    let fds: Vec<(i32, i32)> = crate::qemu::tap_fd(&spec.nic)?
        .map(|fd| (fd, TAP_FD))
        .into_iter()
        .collect();
    crate::qemu::spawn_qemu(binary, command_line(spec), &fds)
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
        };
        let a = command_line(&spec).join(" ");
        assert!(a.contains("-machine q35"));
        assert!(a.contains(
            "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
        ));
        assert!(a.contains("if=pflash,format=raw,unit=1,file=/vms/web/nvram.bin"));
        assert!(a.contains("ide-cd,drive=cd0,bus=ide.0,bootindex=0"));
        assert!(a.contains("virtio-blk-pci,drive=disk0,bootindex=1"));
        assert!(a.contains("file=/data/extra.img"));
        assert!(a.contains("virtio-vga,xres=1280,yres=800"));
        assert!(a.contains("usb-tablet"));
        assert!(a.contains("-vnc 127.0.0.1:0,to=99,password=on"));
        assert!(a.contains("virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56"));
        assert!(a.contains("-uuid 00000000-0000-0000-0000-000000000001"));
        assert!(a.contains(
            "socket,id=serial,path=/run/x/serial.sock,server=on,wait=off,\
             logfile=/vms/web/console.log,logappend=on"
        ));
        assert!(a.contains("socket,id=monitor,path=/run/x/monitor.sock,server=on,wait=off"));

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
        assert!(joined.contains("-kernel /vms/web/vmlinuz"));
        assert!(joined.contains("-vnc 127.0.0.1:5,password=on"), "{joined}");
    }
}
